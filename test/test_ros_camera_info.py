"""CameraInfo: REP-104 sizes (binning, ROI) and pairing with images by exact stamp, or latest."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.ros
pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")

from sensor_msgs.msg import CameraInfo, RegionOfInterest  # noqa: E402

from gct_stream_ros.ros import messages  # noqa: E402
from gct_stream_ros.ros.camera_info import CameraInfoSync, expected_image_size, size_mismatch  # noqa: E402


def _info(stamp_ns: int = 0, width: int = 256, height: int = 192, binning: int = 0,
          roi: tuple[int, int] = (0, 0)) -> CameraInfo:
    return CameraInfo(header=messages.header(stamp_ns, "cam"), width=width, height=height, binning_x=binning,
                      binning_y=binning, roi=RegionOfInterest(x_offset=8, y_offset=4, width=roi[0],
                                                              height=roi[1]))


def _stamp(stamp_ns: int):
    return messages.to_time(stamp_ns)


def test_binning_divides_the_calibrated_size():
    info = _info(binning=2)
    assert expected_image_size(info) == (128, 96)
    assert size_mismatch(info, 128, 96) is None
    assert "binning 2x2" in size_mismatch(info, 256, 192)


def test_roi_then_binning():
    info = _info(binning=2, roi=(160, 120))
    assert expected_image_size(info) == (80, 60)
    assert size_mismatch(info, 80, 60) is None
    assert "ROI 160x120" in size_mismatch(info, 128, 96)


def test_binning_one_and_zero_both_mean_none_and_an_empty_info_fits_anything():
    assert expected_image_size(_info(binning=1)) == expected_image_size(_info(binning=0)) == (256, 192)
    assert size_mismatch(_info(width=0, height=0), 640, 480) is None


def test_images_pass_alone_until_an_info_arrives():
    sync: CameraInfoSync[str] = CameraInfoSync()
    [paired] = sync.add_image("a", _stamp(1))
    assert (paired.item, paired.info, sync.latest_stamp_ns) == ("a", None, None)


def test_exact_sync_pairs_by_stamp_whichever_comes_first():
    sync: CameraInfoSync[str] = CameraInfoSync()
    first = _info(100)
    assert sync.add_info(first) == [] and sync.latest_stamp_ns == 100
    assert [(p.item, p.info) for p in sync.add_image("a", _stamp(100))] == [("a", first)]
    assert sync.add_image("b", _stamp(200)) == [] and sync.waiting == 1  # its info is late
    assert sync.add_image("c", _stamp(300)) == []
    late = _info(200, width=512, height=384)  # a resolution change: the new info goes with its own image
    assert [(p.item, p.info) for p in sync.add_info(late)] == [("b", late)]
    assert sync.waiting == 1


def test_an_image_whose_info_never_comes_is_given_up_when_the_queue_is_full():
    sync: CameraInfoSync[int] = CameraInfoSync(queue_size=2)
    sync.add_info(_info(0))
    for stamp in (1, 2, 3):
        assert sync.add_image(stamp, _stamp(stamp)) == []
    assert (sync.waiting, sync.unmatched) == (2, 1)


def test_latest_pairs_with_the_newest_info_whatever_its_stamp():
    sync: CameraInfoSync[str] = CameraInfoSync("latest")
    sync.add_info(_info(1))
    newest = _info(2)
    sync.add_info(newest)
    assert sync.add_image("a", _stamp(99))[0].info is newest


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="exact, latest"):
        CameraInfoSync("approximate")

"""gct_stream_offline loses no frame: on a recording whose camera clock jumps back and whose image size
changes half-way, every input frame appears once in the output bag, the stats file and the trajectory, in
order.

The bag is recorded in order (monotonic recording times) while the header stamps regress, as with a camera
driver whose clock was reset during the recording; the tool processes frames in recording order and keeps
their header stamps. The tiny random model runs (geometry is irrelevant here).
"""

from __future__ import annotations

import json
from collections import Counter

import pytest

pytest.importorskip("rclpy", reason="rclpy not importable (the offline tool builds ROS messages)")

from rosbags.highlevel import AnyReader  # noqa: E402

from gct_stream_ros.mapping.tum import read_tum  # noqa: E402
from gct_stream_ros.stamps import NS_PER_S  # noqa: E402
from gct_stream_ros.stream.synthetic import SyntheticScene  # noqa: E402
from gct_stream_ros.tools.camera_bag import image_cdr  # noqa: E402
from gct_stream_ros.tools.frame_source import IMAGE_TYPE, TYPESTORE  # noqa: E402
from gct_stream_ros.tools.offline import main  # noqa: E402
from gct_stream_ros.tools.output_bag import OutputBag  # noqa: E402

TOPIC = "/camera/image_raw"
PER_FRAME_TOPICS = ("/tf", "/depth/image", "/depth/confidence", "/depth/camera_info", "/points", "/odometry",
                    "/path")
WIDE = SyntheticScene(seed=8).render_sequence(6, 64, 48)
SQUARE = SyntheticScene(seed=8).render_sequence(6, 32, 32)
STAMPS = [5 * NS_PER_S + 100_000_000 * i for i in range(5)] + [NS_PER_S + 100_000_000 * i for i in range(7)]
"""Five frames, the clock jumps 4 s back, seven more (the size changes after the sixth frame)."""
TINY = ["--quiet", "-p", "model.preset:=tiny", "-p", "model.device:=cpu", "-p", "model.image_width:=42"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "bag"
    images = [f.image for f in WIDE] + [f.image for f in SQUARE]
    with OutputBag(path) as bag:
        for index, (image, stamp_ns) in enumerate(zip(images, STAMPS)):
            recorded_ns = 10 * NS_PER_S + index * 50_000_000
            bag.write(TOPIC, IMAGE_TYPE, recorded_ns, image_cdr(image, stamp_ns, "cam"))
    return path


def test_every_frame_is_written_once_in_order(recording, tmp_path):
    output = tmp_path / "out"
    status = main([str(recording), "-o", str(output), "--stats", str(output / "stats.jsonl"), *TINY,
                   "-p", "model.checkpoint:=", "-p", "model.num_scale_frames:=4", "-p", "window.overlap:=2"])
    assert status == 0

    records = [json.loads(line) for line in (output / "stats.jsonl").read_text().splitlines()]
    assert [r["index"] for r in records] == list(range(len(STAMPS)))
    assert [round(r["stamp"] * NS_PER_S) for r in records] == STAMPS

    stamps, _ = read_tum(output / "trajectory.tum")
    assert stamps == STAMPS

    per_topic: dict[str, list] = {}
    with AnyReader([output / "bag"], default_typestore=TYPESTORE) as reader:
        for connection, _recorded, raw in reader.messages():
            per_topic.setdefault(connection.topic, []).append(reader.deserialize(raw, connection.msgtype))
    for topic in PER_FRAME_TOPICS:
        headers = [m.transforms[0].header if topic == "/tf" else m.header for m in per_topic[topic]]
        assert Counter(h.stamp.sec * NS_PER_S + h.stamp.nanosec for h in headers) == Counter(STAMPS), topic
    sizes = Counter((m.width, m.height) for m in per_topic["/depth/image"])
    assert sizes == {(42, 28): len(WIDE), (42, 42): len(SQUARE)}  # a new sequence, never a mixed one
    assert len(per_topic["/map/points"]) == 1


def test_a_missing_checkpoint_is_reported_with_its_path(recording, tmp_path, capsys):
    missing = tmp_path / "weights.safetensors"
    arguments = [str(recording), "-o", str(tmp_path / "out"), *TINY, "-p", f"model.checkpoint:={missing}"]
    assert main(arguments) == 2
    assert f"error: model.checkpoint='{missing}': checkpoint file not found" in capsys.readouterr().err

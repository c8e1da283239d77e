"""Bad input never kills the node: hundreds of generated malformed or odd image messages, interleaved with
good frames, handed to the node's image callback (stand-in session, so every outcome is predictable); the
results go out on real topics.

The messages do not travel over DDS: a single delayed delivery (seconds, when a reliable sample needs a
repair on a loaded machine) would dominate a run of hundreds of round trips, and the transport itself is
covered by ``test_ros_node``. Serialised messages are typed, so DDS cannot hand the node anything
these objects cannot express.

Each generated message says what the node must do with it: ``REJECT`` (one rate-limited log line, the
diagnostics counter) or ``PROCESS`` (the frame reaches the session, odd as it may be: 1x1, huge,
a zero or backwards stamp). The session must then have seen exactly the PROCESS stamps, in order.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
from ros_fixtures import FakeSession, RosHarness

from gct_stream_ros.ros import messages, topics

pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from gct_stream_ros.ros.image_decode import BYTES_PER_PIXEL  # noqa: E402
from gct_stream_ros.ros.node import REJECTION_LOG_PERIOD_S, GctStreamNode  # noqa: E402

FRAME = "fuzz_camera"
WIDTH, HEIGHT = 32, 24
TIMEOUT_S = 20.0
WORKER_TIMEOUT_S = 90.0
"""Upper bound for the worker to get through the stream (about 1 s here; a loaded 2-core CI machine once
took over 20 s)."""
REJECT, PROCESS = "reject", "process"
TRAILING_GOOD = 5
"""Good frames that end every stream: they must all come out, whatever came before."""


@dataclass
class Case:
    message: Image | CompressedImage
    expect: str
    what: str


class Generator:
    """Seeded messages; stamps rise by 1 ms per message unless a case sets its own."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.stamp_ns = 1_000_000_000

    def next_stamp(self) -> int:
        self.stamp_ns += 1_000_000
        return self.stamp_ns

    def raw(self, encoding: str, width: int, height: int, step: int | None = None, data: bytes | None = None,
            stamp_ns: int | None = None, frame_id: str = FRAME, bigendian: int = 0) -> Image:
        row = width * BYTES_PER_PIXEL.get(encoding, 3)
        step = row if step is None else step
        if data is None:
            data = self.rng.integers(0, 256, step * height, dtype=np.uint8).tobytes()
        message = Image(header=messages.header(self.next_stamp() if stamp_ns is None else stamp_ns, frame_id),
                        height=height, width=width, encoding=encoding, is_bigendian=bigendian, step=step)
        message.data = data
        return message

    def good(self, width: int = WIDTH, height: int = HEIGHT) -> Case:
        return Case(self.raw("rgb8", width, height), PROCESS, f"good rgb8 {width}x{height}")

    def compressed(self, data: bytes, image_format: str = "png") -> CompressedImage:
        header = messages.header(self.next_stamp(), FRAME)
        return CompressedImage(header=header, format=image_format, data=data)

    def encoded(self, extension: str, width: int = WIDTH, height: int = HEIGHT, channels: int = 3) -> bytes:
        pixels = self.rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
        ok, data = cv2.imencode(extension, pixels)
        assert ok
        return data.tobytes()


def raw_cases(seed: int) -> list[Case]:
    """Every claimed encoding valid and broken, unknown and float encodings (NaN/Inf), empty and huge
    sizes, 1x1, padded rows, odd stamps and frame ids, and a size change, with good frames in between."""
    g = Generator(seed)
    odd: list[Case] = []
    for encoding, size in BYTES_PER_PIXEL.items():
        row = WIDTH * size
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT), PROCESS, f"valid {encoding}"))
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, step=row + 8), PROCESS, f"{encoding} padded rows"))
        short = int(g.rng.integers(1, row * HEIGHT))
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, data=bytes(row * HEIGHT - short)), REJECT,
                        f"{encoding} data {short} bytes short"))
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, data=bytes(row * HEIGHT + 1)), REJECT,
                        f"{encoding} one byte too many"))
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, step=row - 1, data=bytes((row - 1) * HEIGHT)), REJECT,
                        f"{encoding} step below the row size"))
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, step=row + 8, data=bytes(row * HEIGHT)), REJECT,
                        f"{encoding} step and data disagree"))
        odd.append(Case(g.raw(encoding, 0, HEIGHT, data=b""), REJECT, f"{encoding} zero width"))
        odd.append(Case(g.raw(encoding, WIDTH, 0, data=b""), REJECT, f"{encoding} zero height"))
    for encoding in ("yuv422", "uyvy", "yuyv", "yuv422_yuy2"):
        odd.append(Case(g.raw(encoding, WIDTH + 1, HEIGHT), REJECT, f"{encoding} odd width"))
    for encoding in ("32FC1", "32FC3", "64FC1"):
        channels = 3 if encoding == "32FC3" else 1
        dtype = np.float64 if encoding == "64FC1" else np.float32
        values = g.rng.choice(np.array([np.nan, np.inf, -np.inf, 0.5], dtype), HEIGHT * WIDTH * channels)
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, step=WIDTH * channels * values.itemsize,
                              data=values.tobytes()), REJECT, f"{encoding} with NaN/Inf"))
    for _ in range(20):
        name = "".join(g.rng.choice(list("abcxyzRGB0123_ "), int(g.rng.integers(0, 9))))
        if name not in BYTES_PER_PIXEL:
            odd.append(Case(g.raw(name, WIDTH, HEIGHT, step=WIDTH * 3), REJECT, f"unknown encoding {name!r}"))
    for encoding in ("8UC3", "16UC3", "RGB8", "rgb8 ", "jpeg", "bayer_rggb32", "nv12"):
        odd.append(Case(g.raw(encoding, WIDTH, HEIGHT, step=WIDTH * 3), REJECT, f"unknown {encoding!r}"))
    for width, height in ((100_000, 100_000), (2**32 - 1, 1), (1, 2**32 - 1), (65_536, 65_536)):
        odd.append(Case(g.raw("rgb8", width, height, step=3 * width, data=bytes(64)), REJECT,
                        f"declared {width}x{height}, 64 bytes"))
    odd.append(Case(g.raw("rgb8", 1, 1), PROCESS, "1x1 rgb8"))
    odd.append(Case(g.raw("mono8", 1, 1), PROCESS, "1x1 mono8"))
    odd.append(Case(g.raw("rgb8", 2048, 1536), PROCESS, "huge 2048x1536 rgb8"))
    odd.append(Case(g.raw("mono8", 1, 16), PROCESS, "1x16 mono8, the tallest aspect taken"))
    odd.append(Case(g.raw("mono16", 1, 4000), REJECT, "1x4000 mono16, too tall"))
    odd.append(Case(g.raw("rgb8", 4000, 1), REJECT, "4000x1 rgb8, too wide"))
    odd.append(Case(g.raw("rgb8", WIDTH, HEIGHT, stamp_ns=0), PROCESS, "zero stamp"))
    odd.append(Case(g.raw("rgb8", WIDTH, HEIGHT, stamp_ns=500_000_000), PROCESS, "stamp backwards"))
    odd.append(Case(g.raw("rgb8", WIDTH, HEIGHT), PROCESS, "stamp repeated"))
    odd.append(Case(g.raw("mono16", WIDTH, HEIGHT, bigendian=1), PROCESS, "big-endian mono16"))
    odd.extend(Case(g.raw("rgb8", WIDTH, HEIGHT, frame_id=""), REJECT, "empty frame_id") for _ in range(5))
    odd.extend(g.good(WIDTH * 2, HEIGHT) for _ in range(3))  # size change mid-stream
    return _interleave(g, odd)


def compressed_cases(seed: int) -> list[Case]:
    """Valid PNG/JPEG (colour, grey, 1x1), empty, random and truncated data, odd format strings."""
    g = Generator(seed)
    odd: list[Case] = []
    for extension in (".png", ".jpg"):
        odd.append(Case(g.compressed(g.encoded(extension), extension[1:]), PROCESS, f"valid {extension}"))
        odd.append(Case(g.compressed(g.encoded(extension, channels=1)), PROCESS, f"grey {extension}"))
        odd.append(Case(g.compressed(g.encoded(extension, 1, 1)), PROCESS, f"1x1 {extension}"))
        odd.append(Case(g.compressed(g.encoded(extension), "gibberish"), PROCESS, f"{extension}, odd format"))
        for cut in (8, 16, 24, 40):
            odd.append(Case(g.compressed(g.encoded(extension)[:cut]), REJECT, f"{extension} cut at {cut}"))
    for _ in range(40):
        data = g.rng.integers(0, 256, int(g.rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        odd.append(Case(g.compressed(data, str(g.rng.choice(["png", "jpeg", ""]))), REJECT, "random bytes"))
    odd.extend(Case(g.compressed(b""), REJECT, "no data") for _ in range(5))
    return _interleave(g, odd, good=lambda: Case(g.compressed(g.encoded(".png")), PROCESS, "good png"))


def _interleave(g: Generator, odd: list[Case], good=None) -> list[Case]:
    """The odd cases in a seeded order, a good frame after every third one, good frames at the end."""
    good = good or g.good
    cases: list[Case] = []
    for position, index in enumerate(g.rng.permutation(len(odd))):
        case = odd[index]
        # Stamps follow the stream order, so only the cases meant to go back in time do.
        if case.what == "stamp repeated":
            case.message.header.stamp = messages.to_time(g.stamp_ns)
        elif case.what not in ("zero stamp", "stamp backwards"):
            case.message.header.stamp = messages.to_time(g.next_stamp())
        cases.append(case)
        if position % 3 == 2:
            cases.append(good())
    cases.extend(good() for _ in range(TRAILING_GOOD))
    return cases


@pytest.fixture(scope="module")
def ros():
    harness = RosHarness(domain_id=181)
    yield harness
    harness.close()


def _stamp_of(message: object) -> int:
    return messages.to_nanoseconds(message.header.stamp)


def _stamp(case: Case) -> int:
    return _stamp_of(case.message)


@pytest.mark.parametrize(("transport", "topic", "make_cases"), [
    ("raw", "/image", raw_cases), ("compressed", "/image/compressed", compressed_cases)])
def test_fuzzed_messages_are_rejected_or_processed_and_the_node_keeps_going(ros, capfd, transport, topic,
                                                                            make_cases):
    cases = make_cases(seed=2026)
    session = FakeSession(num_scale_frames=1)  # one result per processed frame
    name = f"fuzz_{transport}"
    node = ros.add_node(functools.partial(GctStreamNode, name, session_factory=lambda _: session),
                        {"input.qos": "reliable", "input.transport": transport, "queue.policy": "all",
                         "diagnostics.period": 0.2})
    try:
        odometry = ros.listen(Odometry, "/odometry")
        reports = ros.listen(DiagnosticArray, "/diagnostics")
        odometry_publisher = node.outputs[topics.ODOMETRY]
        ros.wait_for(lambda: odometry_publisher.get_subscription_count() > 0, TIMEOUT_S, "odometry matched")
        started = time.monotonic()
        for case in cases:
            node._on_image(case.message)
        processed = [_stamp(c) for c in cases if c.expect == PROCESS]
        rejected = [c for c in cases if c.expect == REJECT]
        ros.wait_for(lambda: node.worker.processed == len(processed) and node.idle, WORKER_TIMEOUT_S,
                     "the worker and its publisher done")
        elapsed = time.monotonic() - started

        assert len(rejected) >= 50 and node.diagnostics.rejected == len(rejected)
        assert node.diagnostics.received == len(cases) and node.diagnostics.errors == 0
        assert session.pushed == processed
        assert node.diagnostics.processed == len(processed)  # one published result per processed frame
        assert session.resets == sum(b < a for a, b in zip(processed, processed[1:]))  # stamps going back
        ros.wait_for(lambda: odometry and _stamp_of(odometry[-1]) == processed[-1], TIMEOUT_S,
                     "the last frame's odometry")
        remaining = iter(processed)  # in order; a subscriber keeping the last few may skip some
        assert all(_stamp_of(m) in remaining for m in odometry)

        def reported_rejections() -> bool:
            return any(kv.key == "messages rejected" and kv.value == str(len(rejected))
                       for r in reports for s in r.status if s.name == f"{name}: stream" for kv in s.values)

        ros.wait_for(reported_rejections, TIMEOUT_S, "the rejections on /diagnostics")
        log_lines = re.findall(r"rejected image message", capfd.readouterr().err)
        assert 1 <= len(log_lines) <= 1 + elapsed / REJECTION_LOG_PERIOD_S
    finally:
        ros.remove_node(node)


def test_the_generator_is_deterministic_and_large_enough():
    raw, compressed = raw_cases(seed=7), compressed_cases(seed=7)
    odd = [c for c in raw + compressed if not c.what.startswith("good")]
    assert len(odd) >= 200 and sum(c.expect == REJECT for c in odd) >= 150
    again = raw_cases(seed=7)
    assert [(c.what, bytes(c.message.data)) for c in raw] == [(c.what, bytes(c.message.data)) for c in again]

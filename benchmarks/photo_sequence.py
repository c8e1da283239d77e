"""A folder of real photographs for the end-to-end run: a real video, seen by a panning camera.

Source: ``vtest.avi`` of OpenCV's sample data, as Debian ships it in the package ``opencv-doc``
(version pinned below; 795 frames of 768x576 at 10 frames/s, a real outdoor scene filmed from a
fixed camera, people walking). A fixed camera gives the model no motion to track, so ``render``
adds one: each frame is seen by a virtual camera that pans and tilts smoothly around the real
camera's centre and images 640x480 pixels. For a pure rotation ``R`` the image of the rotated
camera is exactly the homography ``K_out R K_in^-1`` of the recorded one (no parallax, nothing
invented), so every output pixel is a resampled real pixel; the path stays inside the recorded
frame (checked for every frame). The focal length is an assumption (``FOCAL_PX``, ~58 degrees
across the recorded width): it only shapes the path.

    # here (the Debian registry): download the package, extract and check the video
    python benchmarks/photo_sequence.py fetch .photos
    # anywhere with numpy + OpenCV (the GPU machine too): JPEG frames 000000.jpg, 000001.jpg, ...
    python benchmarks/photo_sequence.py render .photos/vtest.avi /tmp/photos --frames 320
"""

from __future__ import annotations

import argparse
import hashlib
import io
import math
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import cv2
import numpy as np

PACKAGE = "opencv-doc"
PACKAGE_VERSION = "4.6.0+dfsg-12"
"""Debian 12 (bookworm)."""
MEMBER = "./usr/share/doc/opencv-doc/examples/data/vtest.avi"
VIDEO_SHA256 = "45cddc9490be69345cbdab64ca583be65987e864ca408038e648db99e10516cf"
VIDEO_FRAMES = 795
OUTPUT_WIDTH, OUTPUT_HEIGHT = 640, 480
FOCAL_PX = 700.0
"""Assumed focal length of the recorded 768x576 camera, in pixels; the virtual camera's too."""
PAN_DEG, PAN_PERIOD = 3.5, 240
"""Yaw amplitude (degrees) and period (frames): left and right across the scene."""
TILT_DEG, TILT_PERIOD = 2.0, 400
JPEG_QUALITY = 92


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(destination: Path) -> Path:
    """Download the pinned package with apt, extract the video into ``destination``, check its hash."""
    destination.mkdir(parents=True, exist_ok=True)
    video = destination / Path(MEMBER).name
    if not (video.is_file() and sha256(video) == VIDEO_SHA256):
        with tempfile.TemporaryDirectory() as folder:
            subprocess.run(["apt-get", "download", f"{PACKAGE}={PACKAGE_VERSION}"], cwd=folder, check=True)
            deb = next(Path(folder).glob(f"{PACKAGE}_*.deb"))
            archive = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                                     capture_output=True).stdout
            with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
                video.write_bytes(tar.extractfile(MEMBER).read())
    if sha256(video) != VIDEO_SHA256:
        raise SystemExit(f"{video}: sha256 {sha256(video)} is not the pinned {VIDEO_SHA256}")
    return video


def camera_matrix(width: int, height: int) -> np.ndarray:
    return np.array([[FOCAL_PX, 0.0, width / 2], [0.0, FOCAL_PX, height / 2], [0.0, 0.0, 1.0]])


def rotation(index: int) -> np.ndarray:
    """Camera rotation of output frame ``index``: yaw, then pitch, smooth sinusoids (starts at rest)."""
    yaw = math.radians(PAN_DEG) * math.sin(2 * math.pi * index / PAN_PERIOD)
    pitch = math.radians(TILT_DEG) * math.sin(2 * math.pi * index / TILT_PERIOD)
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    yaw_matrix = np.array([[cy, 0.0, sy], [0.0, 1.0, 0.0], [-sy, 0.0, cy]])
    pitch_matrix = np.array([[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]])
    return yaw_matrix @ pitch_matrix


def output_to_recorded(index: int, recorded_hw: tuple[int, int]) -> np.ndarray:
    """Homography from output pixels to recorded pixels: a ray of the rotated camera, seen by the real one."""
    recorded = camera_matrix(recorded_hw[1], recorded_hw[0])
    output = camera_matrix(OUTPUT_WIDTH, OUTPUT_HEIGHT)
    return recorded @ rotation(index) @ np.linalg.inv(output)


def check_inside(homography: np.ndarray, recorded_hw: tuple[int, int], index: int) -> None:
    corners = np.array([[0, 0, 1], [OUTPUT_WIDTH - 1, 0, 1], [0, OUTPUT_HEIGHT - 1, 1],
                        [OUTPUT_WIDTH - 1, OUTPUT_HEIGHT - 1, 1]], dtype=np.float64).T
    mapped = homography @ corners
    x, y = mapped[0] / mapped[2], mapped[1] / mapped[2]
    if x.min() < 0 or y.min() < 0 or x.max() > recorded_hw[1] - 1 or y.max() > recorded_hw[0] - 1:
        raise SystemExit(f"frame {index}: the virtual camera sees outside the recorded frame")


def render(video: Path, output: Path, frames: int) -> int:
    """Write ``frames`` JPEGs of ``video`` seen by the panning camera; return how many were written."""
    output.mkdir(parents=True, exist_ok=True)
    capture = cv2.VideoCapture(str(video))
    written = 0
    try:
        while written < frames:
            ok, bgr = capture.read()
            if not ok:
                break
            homography = output_to_recorded(written, bgr.shape[:2])
            check_inside(homography, bgr.shape[:2], written)
            view = cv2.warpPerspective(bgr, homography, (OUTPUT_WIDTH, OUTPUT_HEIGHT),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            cv2.imwrite(str(output / f"{written:06d}.jpg"), view, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            written += 1
    finally:
        capture.release()
    if written < frames:
        raise SystemExit(f"{video} gave {written} frames, {frames} asked")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetch_parser = commands.add_parser("fetch", help="download and check the video (apt, Debian's registry)")
    fetch_parser.add_argument("destination", type=Path)
    render_parser = commands.add_parser("render", help="write the panning camera's JPEG frames")
    render_parser.add_argument("video", type=Path)
    render_parser.add_argument("output", type=Path)
    render_parser.add_argument("--frames", type=int, default=320,
                               help=f"frames to write (at most {VIDEO_FRAMES}; default 320)")
    args = parser.parse_args(argv)
    if args.command == "fetch":
        print(f"{fetch(args.destination)}: sha256 {VIDEO_SHA256} ok")
    else:
        if sha256(args.video) != VIDEO_SHA256:
            raise SystemExit(f"{args.video} is not the pinned video (sha256 {VIDEO_SHA256})")
        count = render(args.video, args.output, args.frames)
        print(f"wrote {count} frames of {OUTPUT_WIDTH}x{OUTPUT_HEIGHT} to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ament_python build of gct_stream_ros (also an ordinary pip-installable package)."""

import os
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "gct_stream_ros"
VERSION = "0.1.0"  # keep equal to package.xml <version> (test/test_packaging.py checks it)


def data_files():
    files = [
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (os.path.join("share", PACKAGE, "launch"), glob("launch/*.launch.py")),
        (os.path.join("share", PACKAGE, "config"), glob("config/*.yaml") + glob("config/*.rviz")),
    ]
    return [(dest, srcs) for dest, srcs in files if srcs]


setup(
    name=PACKAGE,
    version=VERSION,
    description="Streaming GCT (lingbot-map) 3D reconstruction as a ROS 2 node",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(exclude=["test", "test.*", "benchmarks"]),
    data_files=data_files(),
    install_requires=[
        "numpy",
        "torch",
        "opencv-python-headless",
        "pillow",
        "pyyaml",
        "rosbags",
        "rosbags-image",
        "safetensors",
        "huggingface_hub",
        "tqdm",
    ],
    extras_require={
        "ros": [
            "ros-rclpy",
            "ros-rmw-fastrtps-cpp",
            "ros-std-msgs",
            "ros-std-srvs",
            "ros-sensor-msgs",
            "ros-geometry-msgs",
            "ros-nav-msgs",
            "ros-diagnostic-msgs",
            "ros-visualization-msgs",
        ],
        "gpu": ["flashinfer-python"],
        # triton: the CPU tests run the fused CUDA kernels through its interpreter (test/conftest.py)
        "dev": ["pytest", "pytest-timeout", "ruff", "colcon-core", "colcon-ros", "triton==3.5.0"],
    },
    tests_require=["pytest"],
    zip_safe=True,
    entry_points={
        "console_scripts": [
            "gct_stream_node = gct_stream_ros.ros.node:main",
            "gct_stream_offline = gct_stream_ros.tools.offline:main",
            "gct_stream_play = gct_stream_ros.tools.play:main",
            "gct_stream_echo = gct_stream_ros.tools.echo:main",
            "gct_stream_demo = gct_stream_ros.tools.demo:main",
            "gct_stream_parity = gct_stream_ros.tools.parity:main",
            "gct_stream_convert = gct_stream_ros.tools.convert_checkpoint:main",
        ],
    },
)

"""One-way imports: ros -> stream -> model -> cache; only ROS code imports ROS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "gct_stream_ros"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs", "nav_msgs", "diagnostic_msgs",
               "tf2_ros", "tf2_msgs", "cv_bridge", "sensor_msgs_py", "builtin_interfaces", "rosgraph_msgs",
               "launch", "launch_ros", "visualization_msgs")
# What each layer may import from the project (besides itself).
ALLOWED = {
    "cache": set(),
    "model": {"cache"},
    "stream": {"model", "cache"},
    "mapping": set(),
    "settings": {"stream"},
    "ros": {"stream", "model", "cache", "mapping", "settings"},
}
ROS_TOOLS = {"play", "echo", "demo", "offline"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE_DIR)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def _sources():
    return sorted(p for p in PACKAGE_DIR.rglob("*.py"))


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(PACKAGE_DIR)))
def test_imports_follow_the_layers(path):
    layer = _layer_of(path)
    if layer not in ALLOWED:
        return  # tools and the package root may use any layer
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "gct_stream_ros" and len(parts) > 1:
            target = parts[1]
            assert target == layer or target in ALLOWED[layer], f"{layer} must not import {name}"
        if layer != "ros":
            assert parts[0] not in ROS_MODULES, f"{path.name}: ROS import {name} outside the ROS adapters"


@pytest.mark.parametrize("path", sorted((PACKAGE_DIR / "tools").glob("*.py")), ids=lambda p: p.name)
def test_only_ros_tools_import_ros(path):
    if path.stem in ROS_TOOLS:
        return
    assert not {n.split(".")[0] for n in _imports(path)} & set(ROS_MODULES), path.name

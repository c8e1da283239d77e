"""One-way imports: ros -> stream -> model -> cache; only ROS code imports ROS."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "gct_stream_ros"
ROS_MODULES = ("rclpy", "sensor_msgs", "std_msgs", "std_srvs", "geometry_msgs", "nav_msgs", "diagnostic_msgs",
               "tf2_ros", "tf2_msgs", "cv_bridge", "sensor_msgs_py", "builtin_interfaces", "rosgraph_msgs",
               "launch", "launch_ros", "visualization_msgs")
LEAVES = {"stamps", "optional_packages"}
"""Modules of plain definitions every layer may import (they import nothing from the project)."""
# What each layer may import from the project (besides itself).
ALLOWED = {
    "stamps": set(),
    "optional_packages": set(),
    "cache": LEAVES,
    "model": {"cache"} | LEAVES,
    "stream": {"model", "cache"} | LEAVES,
    "mapping": LEAVES,
    "settings": {"stream", "cache"} | LEAVES,
    "ros": {"stream", "model", "cache", "mapping", "settings"} | LEAVES,
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


def _entry_point_modules() -> set[str]:
    """Modules named by the console scripts of ``setup.py`` (``gct_stream_ros.tools.demo`` ...)."""
    tree = ast.parse((PACKAGE_DIR.parent / "setup.py").read_text())
    scripts = [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
               and isinstance(node.value, str) and node.value.count("=") == 1 and ":" in node.value]
    return {script.split("=")[1].strip().split(":")[0] for script in scripts}


def _module_name(path: Path) -> str:
    return ".".join(("gct_stream_ros", *path.relative_to(PACKAGE_DIR).with_suffix("").parts))


def test_only_entry_points_import_the_node_module():
    """The node module is wiring; what others need of it lives in the modules it wires."""
    entry_points = _entry_point_modules()
    assert "gct_stream_ros.ros.node" in entry_points and "gct_stream_ros.tools.demo" in entry_points
    importers = {_module_name(path) for path in _sources() if "gct_stream_ros.ros.node" in _imports(path)}
    assert importers <= entry_points, importers - entry_points


def _imported_names(path: Path) -> set[str]:
    """Imported modules and, for ``from m import n``, ``m.n`` too (a module or a name in it)."""
    names = _imports(path)
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("module", ["ros/frame_processor.py", "tools/offline.py"])
def test_node_and_offline_tool_build_their_messages_through_one_module(module):
    names = _imported_names(PACKAGE_DIR / module)
    assert {"gct_stream_ros.ros.frame_messages.frame_messages",
            "gct_stream_ros.ros.map_state.MapState"} <= names
    # Neither converts results, chooses poses or fuses points itself: the builder and the map state do it.
    assert not names & {"gct_stream_ros.ros.messages", "gct_stream_ros.ros.world_frame.tracked_pose",
                        "gct_stream_ros.ros.tf.frame_transforms", "gct_stream_ros.mapping.fused_map"}

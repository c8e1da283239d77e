"""The package installs like an ament_python package: metadata, data files, entry points."""

from __future__ import annotations

import ast
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "gct_stream_ros"

ROS_EXEC_DEPENDS = {
    "rclpy", "std_msgs", "std_srvs", "sensor_msgs", "geometry_msgs", "nav_msgs", "diagnostic_msgs",
    "tf2_ros_py", "cv_bridge", "sensor_msgs_py", "launch", "launch_ros", "python3-numpy", "python3-opencv",
}
TEST_DEPENDS = {"launch_pytest", "launch_testing", "python3-pytest"}


def _package_xml() -> ET.Element:
    return ET.parse(ROOT / "package.xml").getroot()


def _setup_py_keywords() -> dict[str, ast.expr]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    call = next(node for node in ast.walk(tree)
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "setup")
    return {kw.arg: kw.value for kw in call.keywords}


def _setup_py_version() -> str:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "VERSION":
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py defines no VERSION")


def test_package_xml_is_format_3_with_the_ros_dependencies():
    root = _package_xml()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == PACKAGE
    exec_depends = {e.text for e in root.findall("exec_depend")}
    assert exec_depends >= ROS_EXEC_DEPENDS, ROS_EXEC_DEPENDS - exec_depends
    assert {e.text for e in root.findall("test_depend")} >= TEST_DEPENDS
    assert root.find("export/build_type").text == "ament_python"


def test_versions_agree():
    import gct_stream_ros

    assert _package_xml().findtext("version") == _setup_py_version() == gct_stream_ros.__version__


def test_setup_cfg_puts_scripts_where_ros2_run_looks():
    text = (ROOT / "setup.cfg").read_text()
    assert f"script_dir=$base/lib/{PACKAGE}" in text
    assert f"install_scripts=$base/lib/{PACKAGE}" in text


def test_every_console_script_resolves_to_a_callable():
    import importlib

    scripts = ast.literal_eval(_setup_py_keywords()["entry_points"])["console_scripts"]
    assert any(s.startswith("gct_stream_node =") for s in scripts)
    for script in scripts:
        name, target = (part.strip() for part in script.split("="))
        module_name, func_name = target.split(":")
        module = importlib.import_module(module_name)
        assert callable(getattr(module, func_name)), script


@pytest.mark.timeout(300)
def test_install_to_a_prefix_gives_the_colcon_layout(tmp_path):
    """What `colcon build` installs: share/<pkg>/{package.xml,launch,config} and the ament index."""
    prefix = tmp_path / "install"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--ignore-installed", "--prefix", str(prefix), str(ROOT)],
        check=True, cwd=tmp_path,
    )
    share = prefix / "share" / PACKAGE
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert sorted(p.name for p in (share / "launch").glob("*.launch.py")) == sorted(
        p.name for p in (ROOT / "launch").glob("*.launch.py"))
    assert (share / "config" / "gct_stream.yaml").is_file()
    assert (share / "config" / "gct_stream.rviz").is_file()
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    executables = (prefix / "bin" / "gct_stream_node", prefix / "lib" / PACKAGE / "gct_stream_node")
    assert any(path.is_file() for path in executables)

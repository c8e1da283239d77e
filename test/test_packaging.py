"""An ament_python package: metadata and entry points; colcon builds it and the installed node runs."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
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


COLCON_SOURCES = ("setup.py", "setup.cfg", "package.xml", "resource", "launch", "config", PACKAGE)
"""What the ament_python build reads: a copy of these is the colcon workspace's package."""
COLCON_DOMAIN_ID = 196
NODE_TIMEOUT_S = 60.0


def _console_script_names() -> set[str]:
    scripts = ast.literal_eval(_setup_py_keywords()["entry_points"])["console_scripts"]
    return {script.split("=")[0].strip() for script in scripts}


def _colcon_build(workspace: Path) -> Path:
    """``colcon build`` of a copy of the package in ``workspace``; returns the install base."""
    source = workspace / "src" / PACKAGE
    for name in COLCON_SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    colcon = Path(sys.executable).with_name("colcon")
    done = subprocess.run([str(colcon), "--log-base", "log", "build", "--base-paths", "src"], cwd=workspace,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return workspace / "install"


def _sourced_environment(install: Path) -> dict[str, str]:
    """The environment after ``. install/setup.sh``, as a ROS user's shell has it."""
    done = subprocess.run(["sh", "-c", '. "$1/setup.sh" && env -0', "sh", str(install)], capture_output=True,
                          check=True)
    return dict(entry.split("=", 1) for entry in done.stdout.decode().split("\0") if "=" in entry)


@pytest.mark.ros
@pytest.mark.timeout(300)
def test_colcon_build_installs_what_ros2_run_and_launch_need_and_the_node_answers(tmp_path):
    pytest.importorskip("colcon_ros", reason="colcon-ros is not installed (the 'dev' extra has it)")
    pytest.importorskip("rclpy", reason="rclpy (ROS 2 Kilted wheels or a ROS install) is not importable")
    install = _colcon_build(tmp_path)
    prefix = install / PACKAGE
    share = prefix / "share" / PACKAGE
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    assert (share / "package.xml").read_text() == (ROOT / "package.xml").read_text()
    assert {p.name for p in (share / "launch").iterdir()} == {p.name for p in (ROOT / "launch").glob("*.py")}
    for config in ("gct_stream.yaml", "gct_stream.rviz"):
        assert (share / "config" / config).read_text() == (ROOT / "config" / config).read_text()
    executables = {p.name for p in (prefix / "lib" / PACKAGE).iterdir() if os.access(p, os.X_OK)}
    assert executables == _console_script_names()

    # What `ros2 run` does: the package prefix from the ament index, then lib/<package>/<executable>.
    environment = {**_sourced_environment(install), "ROS_DOMAIN_ID": str(COLCON_DOMAIN_ID)}
    script = ("import gct_stream_ros\nfrom ament_index_python.packages import get_package_prefix\n"
              f"print(get_package_prefix('{PACKAGE}'))\nprint(gct_stream_ros.__file__)")
    # From the workspace, as a user would: here the source checkout would shadow the install.
    located = subprocess.run([sys.executable, "-c", script], env=environment, cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout.split()
    assert located[0] == str(prefix) and Path(located[1]).is_relative_to(prefix)
    _installed_node_answers_a_frame(Path(located[0]) / "lib" / PACKAGE / "gct_stream_node", environment,
                                    tmp_path)


def _installed_node_answers_a_frame(executable: Path, environment: dict[str, str], workspace: Path) -> None:
    from nav_msgs.msg import Odometry
    from ros_fixtures import RosHarness
    from sensor_msgs.msg import Image

    from gct_stream_ros.ros import messages

    parameters = ["model.preset:=tiny", "model.checkpoint:=''", "model.device:=cpu", "model.image_width:=56",
                  "model.num_scale_frames:=1", "window.overlap:=1", "input.qos:=reliable"]
    command = [str(executable), "--ros-args", *(part for p in parameters for part in ("-p", p))]
    process = subprocess.Popen(command, env=environment, cwd=workspace, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    ros = RosHarness(domain_id=COLCON_DOMAIN_ID)
    try:
        ros.wait_for(lambda: ros.probe.count_subscribers("/image") > 0 or process.poll() is not None,
                     NODE_TIMEOUT_S, "the installed node's image subscription")
        assert process.poll() is None, process.stdout.read()
        odometry = ros.listen(Odometry, "/odometry")
        images = ros.publisher(Image, "/image")
        stamps: list[int] = []
        deadline = time.monotonic() + NODE_TIMEOUT_S
        # One frame a second until one is answered: its lazy outputs may see our subscriber late.
        while not odometry and time.monotonic() < deadline and process.poll() is None:
            stamps.append(1_000_000_000 * (len(stamps) + 1))
            images.publish(Image(header=messages.header(stamps[-1], "cam"), height=42, width=56,
                                 encoding="rgb8", step=56 * 3, data=bytes(42 * 56 * 3)))
            answer_by = time.monotonic() + 1.0
            while not odometry and time.monotonic() < answer_by:
                ros.executor.spin_once(timeout_sec=0.05)
        assert odometry, "the installed node answered no frame"
        assert messages.to_nanoseconds(odometry[0].header.stamp) in stamps
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        ros.close()
    assert process.returncode == 0, output

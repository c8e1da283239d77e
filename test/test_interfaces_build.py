"""interfaces/build.py, the set-up's build of tf2_msgs: what it skips, refuses and reports (the build itself
runs in every `make setup`; test_ros_tf_wire.py uses its result)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "interfaces" / "build.py"


@pytest.fixture(scope="module")
def build():
    spec = importlib.util.spec_from_file_location("interfaces_build", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_project_carries_tf2_msgs_with_ros_2s_definition(build):
    (package,) = build.packages()
    assert package.name == "tf2_msgs" and build.message_names(package) == ["TFMessage"]
    assert (package / "msg" / "TFMessage.msg").read_text().split() == [
        "geometry_msgs/TransformStamped[]", "transforms"]


def test_an_importable_package_is_not_built_again():
    pytest.importorskip("tf2_msgs", reason="tf2_msgs is not importable here (`make setup` builds it)")
    if sys.prefix == sys.base_prefix:
        pytest.skip("the tests do not run in a virtual environment")
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "interfaces: tf2_msgs is importable already, not built\n"


def test_outside_a_virtual_environment_it_refuses_to_install(tmp_path):
    base_python = Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    done = subprocess.run([str(base_python), str(SCRIPT)], capture_output=True, text=True, cwd=tmp_path,
                          timeout=60)
    assert done.returncode == 2 and "virtual environment" in done.stderr


def test_a_package_that_does_not_import_is_wanted(build, tmp_path):
    package = tmp_path / "no_such_msgs"
    (package / "msg").mkdir(parents=True)
    (package / "msg" / "Nothing.msg").write_text("int32 value\n")
    assert not build.importable(package, sys.executable)


def test_a_failing_step_names_itself_and_shows_the_end_of_its_log(build, tmp_path):
    with pytest.raises(build.BuildError, match=r"compiling x failed \(exit 3\)") as raised:
        build.run_step(["sh", "-c", "echo first; echo the compiler said no; exit 3"], tmp_path / "log", {},
                   "compiling x")
    assert str(raised.value).endswith("first\nthe compiler said no")


def test_missing_machine_tools_are_named_with_how_to_get_them(build, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(build.BuildError, match="missing cmake, cc, c\\+\\+.*apt install cmake g\\+\\+"):
        build.check_tools()

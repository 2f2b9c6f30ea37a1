"""`ros2 launch endoarss_ros perception.launch.py` as users run it: the real ros2 CLI in a child process, on a
ROS 2 install (or workspace) that has built this package. Runs under `colcon test` (CMakeLists.txt) or plain
pytest there; skipped where the ROS 2 command-line tools are not installed (the pip-wheel venv has none).
The pure checks behind the launch file are tested everywhere in test/test_launch_checks.py."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

pytest.importorskip("launch", reason="the ROS 2 launch tools are not installed (pip-wheel venv): this test runs "
                                     "under `colcon test` on a ROS 2 install")
ROS2 = shutil.which("ros2") or str(Path(sys.executable).with_name("ros2"))
if not os.access(ROS2, os.X_OK):
    pytest.skip("the ros2 command is not installed", allow_module_level=True)
try:
    from ament_index_python.packages import get_package_prefix

    get_package_prefix("endoarss_ros")
except Exception:  # noqa: BLE001
    pytest.skip("endoarss_ros is not installed in a ROS workspace here (colcon build, then source it)",
                allow_module_level=True)

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def launch_env(tmp_path, monkeypatch):
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env.update(ROS_HOME=str(tmp_path / "ros_home"), PYTHONUNBUFFERED="1")
    return env


class Launch:
    """`ros2 launch endoarss_ros perception.launch.py ARGS` in a session of its own (so a signal can go to the
    whole group, as Ctrl-C in a terminal does)."""

    def __init__(self, env, tmp_path, *args: str):
        self.namespace = "l" + uuid.uuid4().hex[:8]
        self.log_path = tmp_path / f"launch_{self.namespace}.log"
        self.log = open(self.log_path, "w")
        cmd = [ROS2, "launch", "endoarss_ros", "perception.launch.py", f"namespace:={self.namespace}",
               "device:=cpu", *args]
        self.proc = subprocess.Popen(cmd, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def wait(self, timeout: float = 180) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            self.log.close()

    def wait_for(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output():
            assert self.proc.poll() is None, self.output()[-3000:]
            assert time.monotonic() < deadline, f"no {text!r}:\n{self.output()[-3000:]}"
            time.sleep(0.1)


def test_a_node_that_fails_to_configure_fails_the_launch(launch_env, tmp_path):
    missing = tmp_path / "no" / "weights.safetensors"
    launch = Launch(launch_env, tmp_path, f"model:={missing}")
    code = launch.wait()
    log = launch.output()
    assert code != 0, f"ros2 launch exited 0 although the node failed:\n{log[-3000:]}"
    assert "configure failed: cannot load the model file" in log and str(missing) in log
    assert "exited with code 1 (see its log above); ending the launch with a failure" in log


def test_rviz_without_rviz2_starts_nothing_and_says_what_to_install(launch_env, tmp_path, tiny_model):
    from endoarss_ros.ros.launch_checks import rviz_problem

    if rviz_problem() is None:
        pytest.skip("rviz2 is installed here: the launch would start it")
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "rviz:=true")
    code = launch.wait()
    log = launch.output()
    assert code != 0
    assert "rviz:=true needs RViz 2" in log and "apt install ros-jazzy-rviz2" in log
    assert "process started" not in log, "something was started before the check"


def test_an_invalid_topic_argument_starts_nothing(launch_env, tmp_path, tiny_model):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "image:=/robot/1left/image_raw")
    assert launch.wait() != 0
    log = launch.output()
    assert "image:='/robot/1left/image_raw' is not a valid topic name: topic name token must not start with a " \
           "number" in log
    assert "process started" not in log


def test_a_trailing_slash_is_normalised_and_a_double_ctrl_c_ends_it_cleanly(launch_env, tmp_path, tiny_model):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "image:=/robot/left/image_raw/")
    launch.wait_for("active: listening on /robot/left/image_raw ")
    for _ in range(2):  # Ctrl-C twice in a terminal: SIGINT to every process of the group
        os.killpg(launch.proc.pid, signal.SIGINT)
        time.sleep(0.2)
    code = launch.wait(60)
    log = launch.output()
    assert code == 0, log[-3000:]
    assert "process has finished cleanly" in log, log[-3000:]
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]


@pytest.mark.parametrize("spelling", ["true", "True"])
def test_use_sim_time_reaches_the_node(launch_env, tmp_path, tiny_model, spelling):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", f"use_sim_time:={spelling}")
    launch.wait_for("clock: sim time (/clock)")
    os.killpg(launch.proc.pid, signal.SIGINT)
    assert launch.wait(60) == 0, launch.output()[-3000:]


def test_cameras_on_the_launch_line_reach_the_node(launch_env, tmp_path, tiny_model):
    """The README sets `cameras` on the launch line: it must not be ignored."""
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "cameras:=['left', 'right']")
    launch.wait_for(f"active: listening on /{launch.namespace}/left/image, /{launch.namespace}/right/image ")
    os.killpg(launch.proc.pid, signal.SIGINT)
    assert launch.wait(60) == 0, launch.output()[-3000:]


def test_stereo_pairs_and_camera_info_on_the_launch_line_reach_the_node(launch_env, tmp_path, tiny_model):
    """The README's dVRK-style line: both cameras, their camera_info beside each image, one stereo pair."""
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "image_name:=image_raw",
                    "cameras:=['/dvrk/left:left', '/dvrk/right:right']", "stereo_pairs:=['left:right']",
                    "stereo.tolerance_ms:=5.0")
    launch.wait_for("active: listening on /dvrk/left/image_raw, /dvrk/right/image_raw ")
    launch.wait_for("camera_info on /dvrk/left/camera_info, /dvrk/right/camera_info; stereo pairs left:right;")
    os.killpg(launch.proc.pid, signal.SIGINT)
    assert launch.wait(60) == 0, launch.output()[-3000:]


def test_the_single_cameras_camera_info_follows_the_image_argument(launch_env, tmp_path, tiny_model):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "image:=/robot/left/image_raw")
    launch.wait_for("camera_info on /robot/left/camera_info;")
    os.killpg(launch.proc.pid, signal.SIGINT)
    assert launch.wait(60) == 0, launch.output()[-3000:]


def test_a_misspelt_argument_starts_nothing(launch_env, tmp_path, tiny_model):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}", "camera:=['left']")
    assert launch.wait() != 0
    log = launch.output()
    assert "unknown launch argument 'camera': did you mean 'cameras'?" in log and "process started" not in log


def test_lifecycle_shutdown_ends_the_node_and_the_launch(launch_env, tmp_path, tiny_model):
    launch = Launch(launch_env, tmp_path, f"model:={tiny_model}")
    launch.wait_for("active: listening on")
    done = subprocess.run([ROS2, "lifecycle", "set", f"/{launch.namespace}/endoarss_perception", "shutdown"],
                          env=launch_env, capture_output=True, text=True, timeout=60)
    assert "Transitioning successful" in done.stdout, done.stdout + done.stderr
    assert launch.wait(60) == 0, launch.output()[-3000:]
    assert "shut down from active" in launch.output()

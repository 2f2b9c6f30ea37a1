"""What the real `ros2` CLI does to a running node (issue 29), done over ROS the way the CLI does it: a real node
process driven by the probe (test/node_probe.py). `ros2 param set ... "[1, 2]"` sends an integer array;
`ros2 param load` of a dump sends every parameter, the read-only ones too, one SetParameters call for all;
a recorded bag played into a node on system time has stamps far in the past; a Ctrl-C may come while the node
is still importing. test/launch/test_launch_file.py drives the same with the real CLI where it is installed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test.conftest import REPO, requires_ros
from test.test_node_ros import probe, start_node, tiny_model  # noqa: F401 (fixtures)

pytestmark = [requires_ros, pytest.mark.ros]

STRING_ARRAY = 9  # rcl_interfaces ParameterType
READY = {"op": "wait_ready", "timeout": 120}
THREE_YEARS_MS = 3 * 365 * 86400 * 1000.0


def test_ids_as_integers_unchanged_read_only_values_and_a_recording_s_stamps(start_node, probe,  # noqa: F811
                                                                               tiny_model):  # noqa: F811
    node = start_node("instruments.classes:=[1, 2]")  # -p reads integers, as a params file would
    steps = probe(node, [
        READY,
        {"op": "get_params", "names": ["instruments.classes"]},
        {"op": "set_params", "params": {"instruments.classes": [2]}},  # `ros2 param set ... "[2]"`
        {"op": "get_params", "names": ["instruments.classes"]},
        # a dump loaded back: read-only values as they are (cameras' [] typed as the client guesses)
        {"op": "set_params", "params": {"model": tiny_model, "max_batch": 2, "device": "cpu",
                                        "cameras": {"type": "bool_array", "value": []}, "overlay_alpha": 0.5}},
        {"op": "set_params", "params": {"max_batch": 3}},  # a read-only value changed: still refused
        {"op": "frames", "lockstep": True, "rate": 5,
         "frames": [{"seed": i, "stamp_offset_ms": THREE_YEARS_MS} for i in range(2)]},
    ])["steps"]
    assert steps[1]["values"] == {"instruments.classes": ["1", "2"]}
    assert steps[1]["types"]["instruments.classes"] == STRING_ARRAY
    assert steps[2]["results"] == [{"successful": True, "reason": ""}]
    assert steps[3]["values"] == {"instruments.classes": ["2"]}
    unchanged = {"successful": True, "reason": "read-only, unchanged"}
    assert steps[4]["results"] == [unchanged] * 4 + [{"successful": True, "reason": ""}]
    assert steps[5]["results"] == [{"successful": False, "reason": "Trying to set a read-only parameter: "
                                                                   "max_batch."}]
    log = node.output()
    assert "results are STALE: image stamps are 1095.0 days behind this node's system clock, so they come from a " \
           "recording; play the bag with `endoarss play --clock`" in log, log[-3000:]
    assert "-p use_sim_time:=true` with `ros2 run`" in log


def _importing(pid: int) -> bool:
    """Whether process ``pid`` has loaded rclpy's extension but is not up yet: it is importing the node."""
    try:
        return "_rclpy_pybind11" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.parametrize("delay", [0.0, 0.3])
def test_a_ctrl_c_while_the_node_is_still_importing_ends_it_quietly(child_env, tmp_path, tiny_model,  # noqa: F811
                                                                    delay):
    """`ros2 launch` then Ctrl-C within a second (issue 29 item 8): the terminal's SIGINT and launch's own reach
    the node while its Python imports rclpy and torch. It must exit 0 without a traceback, not die by the
    signal (exit code -2)."""
    cmd = [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args", "-r", "__ns:=/early",
           "-p", f"model:={tiny_model}", "-p", "device:=cpu"]
    proc = subprocess.Popen(cmd, env=child_env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not _importing(proc.pid):
            assert proc.poll() is None and time.monotonic() < deadline, "the node never imported rclpy"
            time.sleep(0.005)
        time.sleep(delay)
        for _ in range(2):  # the terminal's Ctrl-C to the group, then launch's SIGINT to the node
            os.killpg(proc.pid, signal.SIGINT)
            time.sleep(0.02)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 0, out[-3000:]
    assert "Traceback" not in out and "KeyboardInterrupt" not in out, out[-3000:]


def test_a_ctrl_c_as_the_installed_node_starts_waits_for_its_handler(child_env, tiny_model):  # noqa: F811
    """`scripts/perception_node` (what `ros2 launch` and `ros2 run` start) runs Python with SIGINT blocked until
    ``main`` has its handler: a Ctrl-C while the interpreter itself starts (site, the ROS wheels' re-exec) ends it
    with exit 0, not with "Fatal Python error: init_import_site" (exit 1) or by the signal (exit code -2)."""
    env = dict(child_env, PYTHONPATH=str(REPO),  # this tree's code; python3 is this interpreter
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{child_env.get('PATH', '')}")
    for _ in range(3):
        proc = subprocess.Popen([str(REPO / "scripts" / "perception_node"), "--ros-args", "-r", "__ns:=/early",
                                 "-p", f"model:={tiny_model}", "-p", "device:=cpu"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            time.sleep(0.05)  # env has blocked the signals and started Python
            for _ in range(2):
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(0.02)
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        assert proc.returncode == 0, out[-3000:]
        assert "Traceback" not in out and "Fatal Python error" not in out, out[-3000:]

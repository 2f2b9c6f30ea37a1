"""What a client, the user or the operating system can do to a running perception node: invalid lifecycle
transitions, repeated interrupts, bad or misspelt parameters, bursts faster than the node. Real node processes
driven by real rclpy client processes (test/node_probe.py)."""
from __future__ import annotations

import pytest

from test.conftest import requires_ros
from test.test_node_ros import READY, NodeProcess, probe, start_node, tiny_model  # noqa: F401 - fixtures

pytestmark = [requires_ros, pytest.mark.ros]


def test_frames_lost_before_the_callback_are_counted(start_node, probe):  # noqa: F811
    """Best effort, depth 1 (the defaults): a burst faster than the node loses frames in the subscription's
    queue; the publisher's sequence numbers count every one of them."""
    node = start_node()
    burst = 400
    steps = [READY,
             {"op": "frames", "lockstep": True, "frames": [{"seed": 1}]},  # primer: counting starts here
             {"op": "frames", "rate": 2000, "frames": [{"seed": 2, "repeat": burst}],
              "settle": 1, "tail_timeout": 2},
             {"op": "sleep", "seconds": 1},
             {"op": "frames", "lockstep": True, "frames": [{"seed": 3}]},  # closer: gaps are seen on arrival
             {"op": "diagnostics", "wait": 2.5}]
    result = probe(node, steps)
    diag = result["diagnostics"]
    received, lost = int(diag["frames.received"]), int(diag["dropped.lost_before_callback"])
    print(f"burst of {burst}: received {received - 2}, lost before the callback {lost}")
    assert received + lost == burst + 2, diag
    assert lost > 0, f"the burst lost nothing ({diag}): the test shows nothing"
    assert "input.loss_not_countable" not in diag, "one publisher: every gap is countable"


def test_invalid_lifecycle_transitions_are_refused_and_the_node_stays_up(start_node, probe):  # noqa: F811
    """Transitions a client may send in the wrong state (by id or by label): each is answered with success
    false and logged, the node keeps its state and keeps serving."""
    node = start_node()
    invalid_while_active = [{"id": 3}, {"label": "activate"}, {"label": "configure"}, {"id": 2}, {"id": 99},
                            {"label": "no_such_transition"}]
    steps = [READY, *({"op": "transition", **t, "timeout": 30} for t in invalid_while_active),
             {"op": "get_state"},
             {"op": "frames", "lockstep": True, "frames": [{"seed": 1}]},
             {"op": "transition", "transition": "deactivate"},
             {"op": "transition", "id": 4, "timeout": 30},  # deactivate again, while inactive
             {"op": "transition", "transition": "activate"},
             READY,
             {"op": "frames", "lockstep": True, "frames": [{"seed": 2}]},
             {"op": "diagnostics", "wait": 2.5}]
    result = probe(node, steps)
    s = result["steps"]
    refused = s[1:7] + [s[10]]
    assert all(r["answered"] and not r["success"] for r in refused), refused
    assert s[7]["state"] == "active" and s[8]["unanswered"] == 0
    assert s[9]["success"] and s[11]["success"] and s[13]["unanswered"] == 0
    assert result["diagnostics"]["lifecycle.refused_transitions"] == "7"
    log = node.output()
    assert log.count("refused lifecycle transition") == 7
    assert "refused lifecycle transition 3: not available in state 'active' (available: deactivate [4], " \
           "shutdown [7])" in log
    assert node.alive() and "Traceback" not in log


def _wait_for_line(node: NodeProcess, text: str, timeout: float = 120.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while text not in node.output():
        assert node.alive(), node.output()[-3000:]
        assert time.monotonic() < deadline, f"no {text!r} in the node's log:\n{node.output()[-3000:]}"
        time.sleep(0.05)


@pytest.mark.parametrize("phase", ["active", "configuring"])
def test_repeated_interrupts_end_the_node_cleanly(start_node, phase):  # noqa: F811
    """A second Ctrl-C, or `timeout` and `ros2 launch` both signalling, arrives while the node cleans up: it
    still exits 0 without a traceback, whatever the phase."""
    import signal
    import time

    if phase == "active":
        node = start_node()
        _wait_for_line(node, "active: listening on")
    else:  # while the model loads and warms up
        node = start_node("warmup_size:=[1080, 1920]")
        _wait_for_line(node, "engine:")
    for _ in range(6):
        node.proc.send_signal(signal.SIGINT)
        time.sleep(0.03)
    code = node.proc.wait(60)
    log = node.output()
    assert code == 0, f"exit code {code}:\n{log[-3000:]}"
    assert "Traceback" not in log and "KeyboardInterrupt" not in log, log[-3000:]


@pytest.mark.parametrize("content,expected", [
    ("/**/endoarss_perception:\n  ros__parameters:\n    model: [unclosed\n", "is not valid YAML at line 4, column 1"),
    ("/**/endoarss_perception:\n\tros__parameters: {}\n", "is not valid YAML at line 2, column 1"),
    ("- just\n- a list\n", "must be a mapping of node names to ros__parameters"),
])
def test_a_broken_params_file_is_one_clear_line(tmp_path, child_env, python, content, expected):
    import subprocess

    params = tmp_path / "params.yaml"
    params.write_text(content)
    done = subprocess.run([python, "-m", "endoarss_ros.ros.perception_node", "--ros-args", "--params-file",
                           str(params)], env=child_env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"endoarss-perception: the parameters file {params} ") and expected in lines[0]


def test_an_unreadable_params_file_or_bad_ros_argument_is_one_clear_line(tmp_path, child_env, python):
    import subprocess

    for args, expected in (
            (["--params-file", str(tmp_path / "missing.yaml")], "cannot read the parameters file"),
            (["-p", "overlay_alpha:=[unclosed"], "RCLError: failed to initialize rcl")):
        done = subprocess.run([python, "-m", "endoarss_ros.ros.perception_node", "--ros-args", *args],
                              env=child_env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1
        ours = [line for line in done.stderr.splitlines() if line.startswith("endoarss-perception:")]
        assert len(ours) == 1 and expected in ours[0], done.stderr
        assert "Traceback" not in done.stderr, done.stderr


def test_unknown_parameters_are_named_with_the_known_ones(start_node, probe, tmp_path):  # noqa: F811
    """rclpy ignores a value for a name that is never declared: a typo in a params file or a -p."""
    params = tmp_path / "params.yaml"
    params.write_text("/**/endoarss_perception:\n  ros__parameters:\n    modle: other.safetensors\n")
    node = start_node("smoothing.alhpa:=0.5", "totally_new:=1", ros_args=["--params-file", str(params)])
    result = probe(node, [READY, {"op": "diagnostics", "wait": 2.5}])
    assert result["diagnostics"]["unknown_parameters"] == "modle, smoothing.alhpa, totally_new"
    warnings = [line for line in node.output().splitlines() if "unknown parameter" in line]
    assert len(warnings) == 1, warnings
    assert ("unknown parameters 'modle' (did you mean 'model'?), 'smoothing.alhpa' (did you mean "
            "'smoothing.alpha'?), 'totally_new' ignored; the parameters of endoarss_perception are: autostart, "
            "backend, batch_window_ms") in warnings[0]
    assert result["steps"][0]["ok"], "the node still comes up"


def test_half_precision_on_a_cpu_is_one_clear_line(start_node, probe):  # noqa: F811
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: fp16 is valid here")
    node = start_node("precision:=fp16")
    assert node.proc.wait(120) == 1, "autostart with fp16 on a CPU must exit with an error"
    errors = [line for line in node.output().splitlines() if "ERROR" in line]
    assert len(errors) == 1, errors
    assert "configure failed: precision fp16 needs a CUDA device, and device:=cpu (it would run on cpu); set " \
           "precision:=fp32" in errors[0]

    node = start_node("precision:=bf16", "device:=auto", autostart=False)
    result = probe(node, [{"op": "transition", "transition": "configure"},
                          {"op": "diagnostics", "wait": 2.5}])
    assert result["steps"][0]["success"] is False
    diag = result["diagnostics"]
    assert diag["_level"] == 2 and "precision bf16 needs a CUDA device" in diag["_message"]
    assert "device:=auto found none here" in diag["configure_error"] and diag["errors.configure"] == "1"
    assert node.alive()


def test_an_unknown_instrument_class_fails_configure_with_the_reason_in_diagnostics(start_node, probe):  # noqa: F811
    node = start_node("instruments.classes:=[scalpel]", autostart=False)
    result = probe(node, [{"op": "transition", "transition": "configure"},
                          {"op": "diagnostics", "wait": 2.5}])
    assert result["steps"][0]["success"] is False
    diag = result["diagnostics"]
    assert "instruments.classes: instrument class 'scalpel' is not one of the model's classes" in \
        diag["configure_error"], diag
    assert diag["errors.configure"] == "1" and node.alive()

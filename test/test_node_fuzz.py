"""Fuzz over real DDS: thousands of malformed raw and compressed frames (size bombs included) interleaved with
valid ones, from a client process (test/ros_fuzz_client.py) into a real perception node process. Every valid
frame is answered, every malformed one is counted by its reason in /diagnostics, the node stays up and its log
holds only its own (throttled) lines."""
from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from test.conftest import REPO, requires_ros
from test.test_node_ros import NodeProcess, start_node, tiny_model  # noqa: F401 - fixtures

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]

ROS_LOG_LINE = re.compile(r"^(\x1b\[\d+m)?\[(DEBUG|INFO|WARN|ERROR|FATAL)\] \[\d+\.\d+\] \[")
FAST_NODE = ("input_size:=[56, 56]", "warmup_size:=[48, 64]", "smoothing.enabled:=false",
             # reliable and deep enough for a burst: nothing is lost in transport, so counts are exact
             "input_qos.reliability:=reliable", "input_qos.depth:=100")


def _fuzz(node: NodeProcess, child_env, transport: str, rounds: int, before: int, after: int) -> dict:
    plan = {"node": node.name, "input": f"{node.ns}/image", "output": node.ns, "transport": transport,
            "rounds": rounds, "before": before, "after": after, "seed": 13}
    done = subprocess.run([sys.executable, "-m", "test.ros_fuzz_client", json.dumps(plan)], cwd=REPO,
                          env=child_env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"fuzz client failed:\n{done.stderr[-3000:]}\nnode log:\n{node.output()[-3000:]}"
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("transport", ["raw", "compressed"])
def test_malformed_frames_are_counted_by_reason_and_every_valid_frame_is_answered(
        start_node, child_env, transport):  # noqa: F811 - the fixture imported above
    node = start_node(*FAST_NODE, f"image_transport:={transport}")
    result = _fuzz(node, child_env, transport, rounds=50, before=20, after=20)
    assert result["ready"], node.output()[-2000:]
    diag, sent = result["diagnostics"], result["sent"]
    bad = sum(sent.values())
    assert bad == 50 * 40 and result["total"] == bad + 50
    assert result["unanswered"] == 0, f"{result['unanswered']} of 50 valid frames never answered; {diag}"

    worker = {k: n for k, n in sent.items() if k in result["worker_kinds"]}
    expected: dict[str, int] = {}
    for kind, n in sent.items():
        if kind not in worker:
            expected[result["reasons"][kind]] = expected.get(result["reasons"][kind], 0) + n
    assert len(expected) >= 4, f"the fuzz covered too few reasons: {expected}"
    assert diag["frames.received"] == str(result["total"]), "frames were lost in transport: counts not exact"
    assert diag["frames.published"] == "50" and diag["errors.inference"] == "0"
    assert diag["dropped.lost_before_callback"] == "0"
    for reason, n in expected.items():
        got = int(diag[f"rejected.{reason}"])
        if reason == "corrupt_compressed" and worker:
            # Frames that look valid until decoded: rejected by the worker, or replaced by a newer frame first.
            decoded_bad = got - n
            assert 0 < decoded_bad <= sum(worker.values()), (got, n, worker)
            assert decoded_bad + int(diag["dropped.replaced"]) == sum(worker.values()), diag
        else:
            assert got == n, f"rejected.{reason}: {got} counted, {n} sent ({diag})"
    if not worker:
        assert diag["dropped.replaced"] == "0", "a malformed frame displaced a valid pending one"
    accounted = sum(int(diag[k]) for k in ("frames.published", "rejected.total", "dropped.replaced"))
    assert accounted == result["total"], f"frames unaccounted for: {diag}"

    assert node.alive()
    log = node.output()
    foreign = [line for line in log.splitlines() if line.strip() and not ROS_LOG_LINE.match(line)]
    assert not foreign, f"lines from outside the node's log (OpenCV, libpng, libjpeg, tracebacks): {foreign[:5]}"
    assert log.count("rejected a frame") < 60, "rejections are not throttled"
    print(f"{transport}: {bad} malformed + 50 valid frames; counted {expected}; "
          f"replaced {diag['dropped.replaced']}")

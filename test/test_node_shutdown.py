"""Ctrl-C with real processes, where it used to go wrong: nodes serving two cameras at full rate (fed by two
`endoarss play --loop`), a node in the middle of configure, and the players themselves. Every process must
end with its conventional status, without an abort or a traceback, and leave no Fast DDS shared memory behind."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest

from endoarss_ros.bag.synth_bag import write_synth_bag
from test.conftest import requires_ros
from test.test_bag_play import Collector
from test.test_node_robustness import _wait_for_line
from test.test_node_ros import NodeProcess, start_node, tiny_model  # noqa: F401 (fixtures)

pytestmark = [requires_ros, pytest.mark.ros]

NODES = 10  # interrupted at once: ten runs of the race for the price of one start-up
SHM = "/dev/shm"
CRASH_TEXT = ("terminate called", "Traceback", "Exception ignored", "RCLError", "Aborted", "core dumped")


def _held_inodes() -> set[int]:
    """Inodes of the files some live process holds a lock on (Fast DDS holds one on each segment's ``_el``)."""
    with open("/proc/locks") as f:
        return {int(m.group(1)) for m in re.finditer(r" [0-9a-f]+:[0-9a-f]+:(\d+) ", f.read())}


def orphaned_segments(before: set[str]) -> list[str]:
    """Fast DDS shared-memory segments created since ``before`` that no live process holds any more: what a
    process that died without closing its participant leaves (~17 MB each)."""
    held = _held_inodes()
    orphans = []
    for name in sorted(set(os.listdir(SHM)) - before):
        if not re.fullmatch(r"fastrtps_[0-9a-f]{16}", name):  # a participant's segment (ports are shared)
            continue
        try:
            inode = os.stat(os.path.join(SHM, name + "_el")).st_ino
        except FileNotFoundError:
            continue  # removed meanwhile, or not a segment with a lock file
        if inode not in held:
            orphans.append(name)
    return orphans


def _player(bag, camera: str, env) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "endoarss_ros.cli", "play", str(bag), "--loop", "--qos", "best_effort",
         "--topics", "/endoscope/image_raw", "--remap", f"/endoscope/image_raw:=/feed/{camera}/image"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture
def collector():
    """Subscriptions in the test process, open until the test has checked /dev/shm (so its own segments are held)."""
    collector = Collector().start()
    yield collector
    collector.close()


def _wait_until_every_camera_is_served(collector, nodes, cameras=("left", "right"), timeout=180.0) -> None:
    """Until each node has published activities for each camera: every worker is busy publishing."""
    from endoarss_ros.msg import Activity

    topics = [f"{node.ns}/{camera}/activity" for node in nodes for camera in cameras]
    for topic in topics:
        collector.subscribe(Activity, topic)
    served = collector.wait(lambda r: all(len(r[topic]) >= 2 for topic in topics), timeout)
    with collector.lock:
        silent = [topic for topic in topics if len(collector.received[topic]) < 2]
    assert served, f"no activities within {timeout:g} s on {silent}"


def _assert_clean(name: str, code: int, log: str, expected: int = 0) -> None:
    assert code == expected, f"{name} exited {code}, not {expected}:\n{log[-3000:]}"
    assert not any(t in log for t in CRASH_TEXT), f"{name}:\n{log[-3000:]}"


def test_interrupt_while_two_cameras_stream_ends_every_node_and_player_cleanly(tmp_path, child_env, tiny_model,  # noqa: F811
                                                                                collector):
    """The abort this guards against came from a thread still publishing when the context went away:
    `terminate called without an active exception`, exit -6, segments left in /dev/shm."""
    bag = tmp_path / "feed"
    write_synth_bag(bag, seconds=1, fps=30, size=(240, 320), seed=3, checksums=False)
    shm_before = set(os.listdir(SHM))
    players = [_player(bag, camera, child_env) for camera in ("left", "right")]
    nodes = [NodeProcess(tmp_path, child_env, tiny_model, "cameras:=['/feed/left:left', '/feed/right:right']",
                         "batch_window_ms:=0.0", "warmup_size:=[]") for _ in range(NODES)]
    try:
        for node in nodes:
            _wait_for_line(node, "active: listening on", timeout=300)
        _wait_until_every_camera_is_served(collector, nodes)
        for node in nodes:
            node.proc.send_signal(signal.SIGINT)
        codes = [node.proc.wait(90) for node in nodes]
        for player in players:
            player.send_signal(signal.SIGINT)
        played = [player.communicate(timeout=60) for player in players]
    finally:
        for process in [n.proc for n in nodes] + players:
            if process.poll() is None:
                process.kill()
    for node, code in zip(nodes, codes):
        log = node.output()
        _assert_clean(node.name, code, log)
        published = re.search(r"closed: (\d+) frames received, (\d+) published", log)
        assert published and int(published.group(2)) > 0, f"{node.name} served nothing:\n{log[-3000:]}"
    for player, (out, err) in zip(players, played):
        _assert_clean("endoarss play", player.returncode, out + err, expected=130)  # 128 + SIGINT
        assert re.search(r"published \d+ messages in .* - interrupted", out) and "/feed/" in out, out + err
    assert orphaned_segments(shm_before) == []


def test_interrupt_during_configure_abandons_the_transition_and_exits_0(start_node):  # noqa: F811
    # 16 cameras' 4K frames in one warm-up batch: seconds of work after the model is loaded
    cameras = ", ".join(f"'c{i}'" for i in range(16))
    node = start_node("warmup_size:=[2160, 3840]", "max_batch:=16", f"cameras:=[{cameras}]")
    _wait_for_line(node, "engine:")
    node.proc.send_signal(signal.SIGINT)
    code = node.proc.wait(90)
    log = node.output()
    _assert_clean(node.name, code, log)
    assert "interrupted (while configuring: the transition is abandoned)" in log, log[-3000:]
    assert "configured:" not in log and "configure failed" not in log, log[-3000:]

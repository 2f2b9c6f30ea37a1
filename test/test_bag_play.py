"""`endoarss play` with real processes: a bag played into a running perception node gives one output per bag
frame, with the frame's stamp and the same mask as the offline replay of that bag."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest

from endoarss_ros.bag.synth_bag import write_synth_bag
from test.conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.ros]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def domain(monkeypatch, child_env):
    """A ROS domain of its own, so other ROS processes on the machine do not interfere."""
    domain_id = str(random.randint(100, 200))
    monkeypatch.setenv("ROS_DOMAIN_ID", domain_id)
    child_env["ROS_DOMAIN_ID"] = domain_id
    return child_env


class Collector:
    """Subscriptions in the test process (own rclpy context), spun in a thread."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from endoarss_ros.ros import fastdds

        fastdds.apply_profile()
        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("test_collector_" + uuid.uuid4().hex[:6], context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)

    def subscribe(self, msg_type, topic, *, latched=False, reliable=True):
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        reliability = ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT
        qos = QoSProfile(depth=100, reliability=reliability,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        self.received[topic] = []

        def callback(msg):
            with self.lock:
                self.received[topic].append(msg)
        self.node.create_subscription(msg_type, topic, callback, qos)

    def start(self):
        self.thread.start()
        return self

    def wait(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(self.received):
                    return True
            time.sleep(0.05)
        return False

    def close(self):
        import rclpy

        self.executor.shutdown(timeout_sec=2)
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(5)


def _stamp(msg) -> int:
    return msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec


def _start_node(tmp_path, env, model: str, temporal) -> tuple[str, subprocess.Popen, object]:
    """A perception node in a namespace of its own (per-frame activity, the temporal model); its log file."""
    ns = "/p" + uuid.uuid4().hex[:8]
    log = open(tmp_path / "node.log", "w")
    node = subprocess.Popen(
        [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args", "-r", f"__ns:={ns}",
         "-p", f"model:={model}", "-p", "device:=cpu", "-p", "warmup_size:=[64, 80]",
         "-p", "smoothing.enabled:=false", "-p", f"temporal_model:={temporal}"], env=env, stdout=log,
        stderr=subprocess.STDOUT)
    return ns, node, log


def _stop(node: subprocess.Popen, log) -> None:
    node.send_signal(signal.SIGINT)
    try:
        node.wait(30)
    except subprocess.TimeoutExpired:
        node.kill()
    log.close()


def _play_into(tmp_path, bag, env, model: str, temporal) -> tuple[list, list]:
    """``endoarss play`` of the bag's images into a running node: the node's (activities, masks)."""
    from endoarss_ros.msg import Activity, SegmentationInfo
    from sensor_msgs.msg import Image

    ns, node, log = _start_node(tmp_path, env, model, temporal)
    collector = Collector()
    try:
        collector.subscribe(SegmentationInfo, f"{ns}/segmentation/info", latched=True)
        collector.subscribe(Activity, f"{ns}/activity")
        collector.subscribe(Image, f"{ns}/segmentation/mask")
        collector.start()
        ready = collector.wait(lambda r: r[f"{ns}/segmentation/info"], 180)
        assert ready, f"node not active:\n{(tmp_path / 'node.log').read_text()[-3000:]}"

        play = subprocess.run(
            [sys.executable, "-m", "endoarss_ros.cli", "play", str(bag), "--topics", "/endoscope/image_raw",
             "--remap", f"/endoscope/image_raw:={ns}/image", "--wait-subscribers", "30", "--json"],
            env=env, capture_output=True, text=True, timeout=120)
        assert play.returncode == 0, play.stderr
        summary = json.loads(play.stdout.strip().splitlines()[-1])
        assert summary["published"] == {f"{ns}/image": 6}
        assert summary["without_subscribers"] == []
        assert 2.0 < summary["seconds"] < 10.0  # 6 frames 0.5 s apart: the recorded timing

        done = collector.wait(lambda r: len(r[f"{ns}/activity"]) >= 6 and len(r[f"{ns}/segmentation/mask"]) >= 6,
                              60)
        with collector.lock:
            activities = list(collector.received[f"{ns}/activity"])
            masks = list(collector.received[f"{ns}/segmentation/mask"])
        assert done, f"got {len(activities)} activities, {len(masks)} masks of 6"
    finally:
        collector.close()
        _stop(node, log)
    return activities, masks


def _offline(tmp_path, bag, model: str, temporal) -> dict[str, dict[int, object]]:
    """The same bag through ``endoarss replay`` (batch 1, as the node runs one camera): topic -> stamp -> msg."""
    from rosbags.highlevel import AnyReader

    from endoarss_ros.bag.msgtypes import typestore
    from endoarss_ros.bag.replay import ReplayOptions, replay

    replay(ReplayOptions(input=bag, output=tmp_path / "offline", model=model, device="cpu", progress=False,
                         smoothing=False, timeline="", batch=1, temporal_model=temporal))
    offline: dict[str, dict[int, object]] = {}
    with AnyReader([tmp_path / "offline"], default_typestore=typestore()) as r:
        for conn, _, raw in r.messages():
            msg = r.deserialize(raw, conn.msgtype)
            offline.setdefault(conn.topic, {})[_stamp(msg)] = msg
    return offline


def test_play_into_a_running_node_outputs_match_the_bag(tmp_path, domain, tiny_model):
    from endoarss_ros.bag.reader import BagReader
    from test.test_node_temporal import _save_temporal

    bag = tmp_path / "rec"
    info = write_synth_bag(bag, seconds=3, fps=2, size=(64, 80), encoding="rgb8", storage="mcap", seed=11)
    with BagReader(bag) as reader:
        frame_stamps = [f.stamp for f in reader.frames(["/endoscope/image_raw"])]
    assert len(frame_stamps) == info.frames == 6
    temporal = _save_temporal(tmp_path / "temporal.safetensors", tiny_model, warmup_ticks=2)

    activities, masks = _play_into(tmp_path, bag, domain, tiny_model, temporal)
    assert [_stamp(m) for m in activities] == frame_stamps
    assert [_stamp(m) for m in masks] == frame_stamps
    assert {m.header.frame_id for m in masks} == {"endoscope"}

    # The same frames offline: the live masks and per-frame activities match the replay's, the temporal model's
    # too (its clock is the images' header stamps, whenever they arrive); the same engine on the same frames
    # gives the same bytes.
    offline = _offline(tmp_path, bag, tiny_model, temporal)
    for live in masks:
        ref = offline["/endoarss/segmentation/mask"][_stamp(live)]
        assert (live.height, live.width) == (ref.height, ref.width) == (64, 80)
        np.testing.assert_array_equal(np.asarray(live.data, np.uint8), np.asarray(ref.data, np.uint8))
    for live in activities:
        ref = offline["/endoarss/activity"][_stamp(live)]
        np.testing.assert_allclose(live.raw_probabilities, ref.raw_probabilities, atol=1e-6)
        assert (live.source, live.class_id) == (ref.source, ref.class_id)
        np.testing.assert_allclose(live.probabilities, ref.probabilities, atol=1e-5)
        assert live.duration_s == pytest.approx(ref.duration_s, abs=1e-6)
    # 6 frames 0.5 s apart, 2 ticks of warm-up: the frame's own activity first, then the temporal model's
    assert [m.source for m in activities] == ["frame"] * 2 + ["temporal"] * 4


def test_play_loop_rate_and_errors(tmp_path, domain):
    from sensor_msgs.msg import Image

    bag = tmp_path / "rec"
    write_synth_bag(bag, seconds=1, fps=10, size=(16, 20), encoding="rgb8", seed=1)
    cmd = [sys.executable, "-m", "endoarss_ros.cli", "play", str(bag), "--rate", "4", "--loop", "--json",
           "--topics", "/endoscope/image_raw", "/endoscope/ground_truth/activity", "--qos", "best_effort"]
    collector = Collector()
    collector.subscribe(Image, "/endoscope/image_raw", reliable=False)
    collector.start()
    proc = subprocess.Popen(cmd, env=domain, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:  # 10 images a loop, 0.25 s per loop: 25 received means the third loop has begun
        looped = collector.wait(lambda r: len(r["/endoscope/image_raw"]) >= 25, 120)
    finally:
        collector.close()
        proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert looped, f"{len(collector.received['/endoscope/image_raw'])} images received in 120 s:\n{err}"
    assert proc.returncode == 130, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["interrupted"] and summary["loops"] >= 2
    # A synthetic bag is stamped in 2023: without --clock, say what a node on system time will make of it.
    assert "note: this bag was recorded" in err and "play the bag with `endoarss play --clock`" in err, err
    published = summary["published"]
    assert set(published) == {"/endoscope/image_raw", "/endoscope/ground_truth/activity"}
    assert published["/endoscope/image_raw"] >= 20

    missing = subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "play", str(tmp_path / "nope")],
                             env=domain, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "no such file" in missing.stderr
    bad = subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "play", str(bag), "--topics", "/x"],
                         env=domain, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "no topic(s) /x" in bad.stderr


def test_the_player_hints_at_clock_only_for_an_old_bag_played_without_it():
    from endoarss_ros.ros.stale_hint import player_stale_hint

    now = 1_800_000_000.0
    old = int((now - 3 * 86400) * 1e9)
    assert "recorded 3.0 days ago and is played without --clock" in player_stale_hint(old, False, now)
    assert player_stale_hint(old, True, now) is None  # --clock: a node with use_sim_time follows it
    assert player_stale_hint(int((now - 5) * 1e9), False, now) is None  # recorded just now

"""The demo's live part: the perception node and the bag player as real processes, and a listener that scores
what the node publishes against the recording's ground truth, matched by header stamp."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

from endoarss_ros.inference.message_fields import OUTPUT_BY_KEY
from endoarss_ros.inference.status import FLAGS
from endoarss_ros.inference.tallies import StatusTally, TrackTally, percentile

NAMESPACE = "/endoarss"
IMAGE_TOPIC = "/endoscope/image_raw"


def child_env() -> dict:
    """Environment of our ROS child processes: our Fast DDS profile, no bootstrap guard, unbuffered output."""
    from endoarss_ros.ros import fastdds

    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env["PYTHONUNBUFFERED"] = "1"
    fastdds.apply_profile(env)
    return env


def _stamp_ns(header) -> int:
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def _topic(key: str) -> str:
    return f"{NAMESPACE}/{OUTPUT_BY_KEY[key].topic}"


class Listener:
    """The demo's own subscriptions. Scores masks and activities as they arrive, from the moment the node's
    latched ``segmentation/info`` says how many classes there are."""

    def __init__(self, node, gt, *, quiet: bool, t0: float):
        from diagnostic_msgs.msg import DiagnosticArray

        from endoarss_ros.ros import conversions, qos

        self.gt, self.quiet, self.t0 = gt, quiet, t0
        self.lock = threading.Lock()
        self.info = None
        self.evaluator = None
        self.activities: list[dict] = []
        self.masks = 0
        self.last_output = time.monotonic()
        self.diagnostics: dict | None = None
        self.diagnostics_time = 0.0
        self.statuses = StatusTally()
        self.tracks: TrackTally | None = None
        self.ages_ms: list[float] = []
        reliable = qos.stream_qos("reliable", 100)
        for key, callback in (("info", self.on_info), ("activity", self.on_activity), ("mask", self.on_mask),
                              ("status", self.on_status), ("instruments", self.on_instruments)):
            output = OUTPUT_BY_KEY[key]
            node.create_subscription(conversions.message_class(output.msgtype), _topic(key), callback,
                                     qos.latched_qos() if output.latched else reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_info(self, msg) -> None:
        from endoarss_ros.metrics.frames import GroundTruthEvaluator

        act_names = self.gt.activity_names or [str(i) for i in range(3)]
        with self.lock:
            if self.evaluator is None:
                self.evaluator = GroundTruthEvaluator(len(msg.class_names), len(act_names),
                                                      seg_names=list(msg.class_names), activity_names=act_names)
            self.info = msg
            self.tracks = self.tracks or TrackTally(list(msg.class_names))

    def on_status(self, msg) -> None:
        flags = [name for name in FLAGS if msg.flags & getattr(msg, name)]
        with self.lock:
            self.statuses.add(msg.usable, flags, msg.processed)
            if msg.processed:
                self.ages_ms.append(float(msg.age_ms))

    def on_instruments(self, msg) -> None:
        with self.lock:
            if self.tracks is not None:
                self.tracks.add(_stamp_ns(msg.header), [(i.id, i.class_id) for i in msg.instruments])

    def on_activity(self, msg) -> None:
        stamp = _stamp_ns(msg.header)
        truth = self.gt.activities.get(stamp)
        with self.lock:
            self.activities.append({"stamp": stamp, "class_id": int(msg.class_id), "label": msg.label,
                                    "confidence": float(msg.confidence), "source": msg.source,
                                    "received_unix": time.time()})
            if truth is not None and self.evaluator is not None:
                self.evaluator.add_activity(int(msg.class_id), truth)
            self.last_output = time.monotonic()
        if not self.quiet:
            self._echo(msg, truth)

    def _echo(self, msg, truth) -> None:
        """One line per activity message, like ``ros2 topic echo`` would print it, compactly."""
        names = self.gt.activity_names
        if truth is None:
            mark = ""
        elif truth == msg.class_id:
            mark = "  ok"
        else:
            mark = f"  (truth: {names[truth] if truth < len(names) else truth})"
        print(f"[{time.monotonic() - self.t0:6.2f} s] {_topic('activity')}  stamp "
              f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}  {msg.label:<26} "
              f"{msg.confidence:.2f}{mark}", flush=True)

    def on_mask(self, msg) -> None:
        import numpy as np

        truth = self.gt.masks.get(_stamp_ns(msg.header))
        mask = None
        if msg.encoding == "mono8" and len(msg.data) >= msg.step * msg.height:
            mask = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
            mask = mask[:, : msg.width]
        with self.lock:
            self.masks += 1
            if truth is not None and mask is not None and self.evaluator is not None:
                self.evaluator.add_mask(mask, truth)
            self.last_output = time.monotonic()

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("endoarss_perception") and NAMESPACE + "/" in status.name:
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics["_message"] = status.message
                    self.diagnostics_time = time.monotonic()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _round(v):
    return None if v is None else round(v, 1)


def _count(diag: dict, key: str) -> int | None:
    return int(diag[key]) if key in diag else None


class LiveRun:
    """Node process + listener + player process, then the results; everything is stopped in ``stop``."""

    def __init__(self, out: Path, recording: Path, record: dict, *, model: str, device: str, rate: float, size,
                 node_timeout: float, quiet: bool, log=print, temporal_model: str = ""):
        self.out, self.recording, self.record = out, recording, record
        self.temporal_model = temporal_model
        self.model, self.device, self.rate, self.size = model, device, rate, size
        self.node_timeout, self.quiet, self.log = node_timeout, quiet, log
        self.env = child_env()
        self.node_log_path = out / "node.log"
        self.t0 = time.monotonic()
        self.node_proc = self.player = self.executor = self.spin_thread = self.listener = None
        self.node_log = None
        self.context = None

    def node_command(self) -> list[str]:
        h, w = self.size
        return [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args",
                "-r", f"__ns:={NAMESPACE}", "-r", f"image:={IMAGE_TOPIC}", "-p", f"model:={self.model}",
                "-p", f"device:={self.device}", "-p", f"warmup_size:=[{h}, {w}]", "-p", "max_batch:=1",
                "-p", "use_sim_time:=true",  # the player's /clock: results' ages in the recording's time
                *(["-p", f"temporal_model:={self.temporal_model}"] if self.temporal_model else [])]

    def run(self) -> dict:
        try:
            result = {"node_command": " ".join(self.node_command()[2:])}
            self._start_node()
            self._start_listener()
            result["node_ready_s"] = self._wait_active()
            played = self._play()
            self._settle()
            result.update(self._results(played))
        finally:
            self.stop()
        result["node_log"] = str(self.node_log_path)
        result["live_s"] = round(time.monotonic() - self.t0, 2)
        return result

    def _start_node(self) -> None:
        self.node_log = open(self.node_log_path, "w")
        self.log(f"starting the perception node ({self.model}) ...")
        self.node_proc = subprocess.Popen(self.node_command(), env=self.env, stdout=self.node_log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def _start_listener(self) -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        from endoarss_ros.bag.reader import read_ground_truth

        gt = read_ground_truth(self.recording)
        self.context = rclpy.context.Context()
        rclpy.init(args=["endoarss-demo"], context=self.context)
        node = rclpy.create_node("endoarss_demo_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(node)
        self.listener = Listener(node, gt, quiet=self.quiet, t0=self.t0)
        self.spin_thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.spin_thread.start()

    def _wait_active(self) -> float:
        """Until the node's latched segmentation/info arrives (it is published on activation)."""
        deadline = time.monotonic() + self.node_timeout
        while self.listener.info is None:
            if self.node_proc.poll() is not None:
                raise RuntimeError(f"the perception node exited (status {self.node_proc.returncode}) before "
                                   f"becoming active; its log ({self.node_log_path}):\n{_tail(self.node_log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the perception node did not become active within {self.node_timeout:.0f} s; "
                                   f"its log ({self.node_log_path}):\n{_tail(self.node_log_path)}")
            time.sleep(0.1)
        ready = round(time.monotonic() - self.t0, 2)
        info = self.listener.info
        self.log(f"node active after {ready} s (model {info.model}, {len(info.class_names)} classes); "
                 f"playing {self.recording} at rate {self.rate:g} ...")
        return ready

    def _play(self) -> dict:
        cmd = [sys.executable, "-m", "endoarss_ros.tools.play", str(self.recording), "--topics", IMAGE_TOPIC,
               "--qos", "best_effort", "--rate", str(self.rate), "--wait-subscribers", "30", "--json", "--quiet",
               "--clock", "50"]
        duration = self.record["frames"] / self.record["params"]["fps"] / self.rate
        self.player = subprocess.Popen(cmd, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                       text=True, start_new_session=True)
        try:
            pout, perr = self.player.communicate(timeout=duration + 90)
        except subprocess.TimeoutExpired:
            self.player.kill()
            pout, perr = self.player.communicate()
            raise RuntimeError(f"the bag player did not finish in time:\n{perr[-2000:]}") from None
        if self.player.returncode != 0:
            raise RuntimeError(f"the bag player failed (status {self.player.returncode}):\n{perr[-2000:]}")
        return json.loads(pout.strip().splitlines()[-1])

    def _settle(self) -> None:
        """The node may still be working on the newest frame: wait for its outputs to go quiet, then for a
        diagnostics message newer than that."""
        listener, t_end = self.listener, time.monotonic()
        while time.monotonic() - t_end < 30:
            with listener.lock:
                quiet_for = time.monotonic() - listener.last_output
            if quiet_for > 1.5:
                break
            time.sleep(0.1)
        settled = time.monotonic()
        while listener.diagnostics_time < settled and time.monotonic() - settled < 3.0:
            time.sleep(0.1)

    def _end_to_end_ms(self, activities: list[dict], played: dict) -> list[float]:
        """Player publish time (its start + bag time offset) -> activity received here, per frame."""
        start_unix = played.get("wall_start_unix")
        if not start_unix:
            return []
        start_ns, rate = self.record["start_ns"], self.rate
        return [(a["received_unix"] - (start_unix + (a["stamp"] - start_ns) / 1e9 / rate)) * 1000.0
                for a in activities]

    def _results(self, played: dict) -> dict:
        listener = self.listener
        with listener.lock:
            activities, masks = list(listener.activities), listener.masks
            diag = dict(listener.diagnostics or {})
            metrics = listener.evaluator.result()
            status, ages = listener.statuses.summary(), list(listener.ages_ms)
            tracks = listener.tracks.summary() if listener.tracks is not None else None
        e2e = self._end_to_end_ms(activities, played)
        p50, p95 = percentile(e2e, 0.5), percentile(e2e, 0.95)
        return {
            "player": {k: played.get(k) for k in ("published", "seconds", "rate", "without_subscribers")},
            "frames_published": int(sum(played["published"].values())),
            "frames_received_by_node": _count(diag, "frames.received"),
            "frames_processed_by_node": _count(diag, "frames.published"),
            "frames_dropped_by_node": _count(diag, "dropped.replaced"),
            "frames_rejected_by_node": _count(diag, "rejected.total"),
            "activity_messages_received": len(activities),
            "activity_sources": dict(Counter(a["source"] for a in activities)),
            "mask_messages_received": masks,
            "node_latency_ms": {"p50": _float(diag.get("latency_p50_ms")), "p95": _float(diag.get("latency_p95_ms")),
                                "source": "/diagnostics (frame receipt in the node -> results published)"},
            "end_to_end_latency_ms": {"p50": None if p50 is None else round(p50, 1),
                                      "p95": None if p95 is None else round(p95, 1),
                                      "source": "player publish time -> activity received by the demo"},
            "inference_p50_ms": _float(diag.get("inference_p50_ms")),
            "status": status,
            "result_age_ms": {"p50": _round(percentile(ages, 0.5)), "p95": _round(percentile(ages, 0.95)),
                              "source": "PerceptionStatus.age_ms of the processed frames (node clock - stamp)"},
            "instruments": tracks,
            "activity_accuracy": metrics.get("activity_accuracy"),
            "miou_foreground": metrics.get("miou_foreground"),
            "frames_evaluated": metrics.get("frames_with_activity", 0),
            "masks_evaluated": metrics.get("frames_with_mask", 0),
            "diagnostics": {k: v for k, v in diag.items() if not k.startswith("_")},
        }

    def stop(self) -> None:
        """SIGINT to the processes (SIGKILL after a grace period), then the listener's executor and context."""
        for proc in (self.player, self.node_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        if self.node_proc is not None:
            try:
                self.node_proc.wait(20)
            except subprocess.TimeoutExpired:
                self.node_proc.kill()
                self.node_proc.wait()
        if self.player is not None and self.player.poll() is None:
            self.player.kill()
            self.player.wait()
        if self.node_log is not None:
            self.node_log.close()
        if self.executor is not None:
            self.executor.shutdown(timeout_sec=2)
        if self.context is not None and self.context.ok():
            import rclpy

            rclpy.shutdown(context=self.context)
        if self.spin_thread is not None:
            self.spin_thread.join(5)

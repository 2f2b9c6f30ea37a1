"""Counters, rates and latency percentiles of the perception node, and their ``DiagnosticArray`` form.

Thread-safe: the subscription callbacks, the worker thread and the 1 Hz diagnostics timer all touch it.
"""
from __future__ import annotations

import collections
import threading
import time

from endoarss_ros.inference.frames import FRAME_ERROR_REASONS
from endoarss_ros.inference.status import FLAGS
from endoarss_ros.inference.tallies import percentile

LOW_USABLE_FRACTION = 0.5  # WARN when fewer of the recent frames than this were usable


class RateMeter:
    """Events per second over a sliding window."""

    def __init__(self, window_s: float = 5.0):
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float) -> None:
        self._times.append(now)
        self._trim(now)

    def rate(self, now: float) -> float:
        self._trim(now)
        if not self._times:
            return 0.0
        # Counting from the oldest event in the window to now: decays to 0 when the stream stops; the first
        # second is measured over a full second so two quick events do not read as a huge rate.
        return len(self._times) / max(now - self._times[0], 1.0)

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()


# The node's cost per frame, stage by stage: the image callback (validation, no copy), waiting in the frame slot
# for the worker, the engine (a batch: ``InferenceEngine.infer``), status + instruments (``CameraStream.update``),
# the output fields (``frame_fields``), and converting them to messages + publishing.
NODE_STAGES = ("receive_convert", "queue_wait", "pipeline", "status_instruments", "message_build", "publish")


class NodeStats:
    """What /diagnostics reports: frames in/out, rejections and drops by reason, errors, latency."""

    def __init__(self, latency_window: int = 300):
        self._lock = threading.Lock()
        self.counters: collections.Counter[str] = collections.Counter()
        self._in = RateMeter()
        self._out = RateMeter()
        self._latency_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._inference_ms: collections.deque[float] = collections.deque(maxlen=latency_window)
        self._usable: collections.deque[bool] = collections.deque(maxlen=latency_window)
        self._stage_ms: dict[str, collections.deque[float]] = {}
        self._window = latency_window
        self.last_error = ""

    def received(self) -> None:
        with self._lock:
            self.counters["frames.received"] += 1
            self._in.tick(time.monotonic())

    def rejected(self, reason: str) -> None:
        with self._lock:
            self.counters[f"rejected.{reason}"] += 1

    def dropped(self, reason: str = "replaced", count: int = 1) -> None:
        with self._lock:
            self.counters[f"dropped.{reason}"] += count

    def error(self, kind: str, message: str) -> None:
        with self._lock:
            self.counters[f"errors.{kind}"] += 1
            self.last_error = message

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.counters[key] += n

    def published(self, latency_ms: float, inference_ms: float | None = None) -> None:
        with self._lock:
            self.counters["frames.published"] += 1
            self._out.tick(time.monotonic())
            self._latency_ms.append(latency_ms)
            if inference_ms is not None:
                self._inference_ms.append(inference_ms)

    def stages(self, **ms: float) -> None:
        """One frame's cost per node stage, in ms (see ``NODE_STAGES``): reported as p50 per stage."""
        with self._lock:
            for name, value in ms.items():
                self._stage_ms.setdefault(name, collections.deque(maxlen=self._window)).append(value)

    def status(self, usable: bool, flags: list[str]) -> None:
        """One PerceptionStatus published: usable or not, and which flags it carried."""
        with self._lock:
            self.counters["status.published"] += 1
            self.counters["status.usable"] += usable
            for flag in flags:
                self.counters[f"status.flag.{flag}"] += 1
            self._usable.append(usable)

    def snapshot(self) -> dict:
        now = time.monotonic()
        with self._lock:
            lat = list(self._latency_ms)
            inf = list(self._inference_ms)
            usable = list(self._usable)
            snap = {
                "input_rate_hz": self._in.rate(now),
                "output_rate_hz": self._out.rate(now),
                "latency_p50_ms": percentile(lat, 0.5),
                "latency_p95_ms": percentile(lat, 0.95),
                "inference_p50_ms": percentile(inf, 0.5),
                "usable_fraction_recent": sum(usable) / len(usable) if usable else None,
                "stage_p50_ms": {k: percentile(list(v), 0.5) for k, v in self._stage_ms.items()},
                "counters": dict(self.counters),
                "last_error": self.last_error,
            }
        return snap


def to_diagnostic_array(stats: NodeStats, *, name: str, hardware_id: str, stamp, info: dict[str, str],
                        active: bool, warnings=()):
    """One ``DiagnosticStatus`` for the node: OK while serving, WARN for recent rejections/errors/idle and for
    each of ``warnings`` (e.g. an invalid camera_info), which are added to the message."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

    snap = stats.snapshot()
    counters = snap["counters"]
    values = dict(info)

    def fmt(v):
        return "" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    for key in ("input_rate_hz", "output_rate_hz", "latency_p50_ms", "latency_p95_ms", "inference_p50_ms",
                "usable_fraction_recent"):
        values[key] = fmt(snap[key])
    for stage, p50 in snap["stage_p50_ms"].items():
        values[f"stage_p50_ms.{stage}"] = fmt(p50)
    published = counters.get("status.published", 0)
    values["status.usable_fraction"] = fmt(counters.get("status.usable", 0) / published if published else None)
    for key in ("status.published", "status.usable", *(f"status.flag.{f}" for f in FLAGS)):
        values[key] = str(counters.get(key, 0))
    for key in ("frames.received", "frames.published", "dropped.replaced", "dropped.lost_before_callback",
                "errors.inference"):
        values[key] = str(counters.get(key, 0))
    for reason in FRAME_ERROR_REASONS:
        values[f"rejected.{reason}"] = str(counters.get(f"rejected.{reason}", 0))
    for key, count in sorted(counters.items()):
        values.setdefault(key, str(count))
    values["rejected.total"] = str(sum(v for k, v in counters.items() if k.startswith("rejected.")))
    values["last_error"] = snap["last_error"]

    status = DiagnosticStatus(name=name, hardware_id=hardware_id)
    if not active and info.get("configure_error"):
        status.level, status.message = DiagnosticStatus.ERROR, "configure failed: " + info["configure_error"]
    elif not active:
        status.level, status.message = DiagnosticStatus.OK, f"not active ({info.get('lifecycle_state', '?')})"
    elif counters.get("errors.inference", 0) and snap["output_rate_hz"] == 0.0:
        status.level, status.message = DiagnosticStatus.ERROR, "inference failing: " + snap["last_error"]
    elif snap["input_rate_hz"] == 0.0:
        status.level, status.message = DiagnosticStatus.WARN, "no input images (check the topic and QoS)"
    else:
        status.level = DiagnosticStatus.OK
        status.message = f"{snap['output_rate_hz']:.1f} Hz out of {snap['input_rate_hz']:.1f} Hz in"
        recent = snap["usable_fraction_recent"]
        if recent is not None and recent < LOW_USABLE_FRACTION:
            status.level = DiagnosticStatus.WARN
            status.message += f"; only {recent:.0%} of the recent frames usable (see <ns>/status)"
        stalled = [f"{k.split('.')[1]}: {v}" for k, v in info.items() if k.endswith(".stamps_warning") and v]
        if stalled:  # the temporal model cannot run (zero or constant stamps): never silently frame + EMA
            status.level = DiagnosticStatus.WARN
            status.message += "; temporal " + "; ".join(stalled)
        if warnings:
            status.level = DiagnosticStatus.WARN
            status.message += "; " + "; ".join(warnings)
    status.values = [KeyValue(key=k, value=v) for k, v in values.items()]
    array = DiagnosticArray(status=[status])
    array.header.stamp = stamp
    return array

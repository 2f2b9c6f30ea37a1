"""The temporal activity model's cost per camera, for ``endoarss bench``: one tick of the streaming session
(``TemporalSession``: tick mean, model step, evidence gate) timed on one CPU core, the per-frame feature tap on a
1080p mask, and the state each camera holds.

The process is pinned to one core while it measures (``os.sched_setaffinity``, where the OS has it), so numpy's
BLAS threads cannot spread a step over several cores. Each time is taken twice: wall clock (``*_ms``: what a
camera waits, including time the core spent on other processes) and the thread's CPU time (``*_cpu_ms``: what
the step costs, whatever else runs on the machine).
"""
from __future__ import annotations

import contextlib
import os
import time

import numpy as np

from endoarss_ros.inference.engine import FrameResult
from endoarss_ros.inference.tallies import percentile
from endoarss_ros.inference.temporal_activity import TemporalSession, TemporalSettings
from endoarss_ros.inference.temporal_features import feature_names, frame_features
from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES
from endoarss_ros.model.temporal_tcn import CausalTCN, TemporalBinding, TemporalConfig, load_temporal


@contextlib.contextmanager
def one_core():
    """Run the block on one CPU core (yields its id, or None where affinity cannot be set)."""
    get, set_ = getattr(os, "sched_getaffinity", None), getattr(os, "sched_setaffinity", None)
    if get is None or set_ is None:
        yield None
        return
    before = get(0)
    core = min(before)
    set_(0, {core})
    try:
        yield core
    finally:
        set_(0, before)


def _default_model():
    names = feature_names(MTLESD_SEG_CLASSES, MTLESD_ACTIVITY_CLASSES)
    cfg = TemporalConfig(feature_dim=len(names), num_classes=len(MTLESD_ACTIVITY_CLASSES))
    return CausalTCN(cfg).eval(), TemporalBinding("bench", tuple(MTLESD_ACTIVITY_CLASSES), tuple(names), 0.5, cfg)


def _ms(times: list[float]) -> dict:
    return {"p50": round(percentile(times, 0.5) * 1e3, 4), "p95": round(percentile(times, 0.95) * 1e3, 4)}


def measure(path: str | None = None, ticks: int = 2000, cameras: int = 1, frames_per_tick: int = 15) -> dict:
    """Step cost and state of ``path``'s temporal model (default: the default ``TemporalConfig`` with random
    weights: the cost does not depend on the values). ``ticks`` per camera, ``frames_per_tick`` frames averaged
    into each tick (30 fps at 0.5 s ticks); the time of a tick is that of the frame that closes it."""
    model, binding = load_temporal(path) if path else _default_model()
    settings = TemporalSettings.from_binding(binding)
    sessions = [TemporalSession(model, binding, settings) for _ in range(cameras)]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, len(binding.feature_names))).astype(np.float32)
    dt = settings.tick_s / frames_per_tick
    step_times, step_cpu, frame_times = [], [], []
    with one_core() as core:
        for t in range(ticks + 20):
            for session in sessions:
                for f in range(frames_per_tick):
                    c0, t0 = time.thread_time(), time.perf_counter()
                    session.update(t * settings.tick_s + f * dt, x[(t + f) % 64], True)
                    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
                    if t >= 20 and f == 0:  # after a warm-up; frame 0 of a tick closes the previous one
                        step_times.append(elapsed)
                        step_cpu.append(cpu)
                    elif t >= 20:
                        frame_times.append(elapsed)
        mask = rng.integers(0, len(MTLESD_SEG_CLASSES), (1080, 1920), dtype=np.uint8)
        result = FrameResult(mask=mask, activity_probs=np.full(3, 1 / 3, np.float32),
                             confidence=rng.uniform(0.5, 1.0, (224, 224)).astype(np.float32))
        tap = []
        for _ in range(100):
            t0 = time.perf_counter()
            frame_features(result, len(MTLESD_SEG_CLASSES), {"sharpness": 2.0})
            tap.append(time.perf_counter() - t0)
    cfg = binding.config
    return {"model": path or "default TemporalConfig (random weights)", "config": cfg.to_dict(),
            "parameters": sum(p.numel() for p in model.parameters()), "feature_dim": cfg.feature_dim,
            "tick_s": settings.tick_s, "receptive_field_ticks": cfg.receptive_field, "cameras": cameras,
            "ticks_per_camera": ticks, "cpu_core": core, "step_ms": _ms(step_times),
            "step_cpu_ms": _ms(step_cpu),
            "frame_in_tick_ms": _ms(frame_times), "feature_tap_1080p_ms": _ms(tap),
            "state_bytes_per_camera": sessions[0].state.nbytes}


def summary_line(row: dict) -> str:
    step, cpu, state_mb = row["step_ms"], row["step_cpu_ms"], row["state_bytes_per_camera"] / 1e6
    return (f"temporal model ({row['cameras']} camera(s), core {row['cpu_core']}): step p50 {step['p50']:.3f} ms, "
            f"p95 {step['p95']:.3f} ms per tick per camera (CPU time p50 {cpu['p50']:.3f}, p95 {cpu['p95']:.3f} ms); "
            f"state {state_mb:.2f} MB per camera; "
            f"feature tap {row['feature_tap_1080p_ms']['p50']:.3f} ms per 1080p frame")

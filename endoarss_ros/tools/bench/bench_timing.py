"""``endoarss bench``'s timing: percentiles, the run's time budget, one configuration's timed batches and its
result row, and the status + instruments stage timed alone."""
from __future__ import annotations

import time

import numpy as np
import torch

from endoarss_ros.inference import instruments, quality
from endoarss_ros.inference.engine import FrameResult
from endoarss_ros.inference.frames import frame_from_array, frame_from_image_fields
from endoarss_ros.inference.stream import CameraStream
from endoarss_ros.inference.tallies import percentile
from endoarss_ros.model.config import MTLESD_SEG_CLASSES
from endoarss_ros.tools.bench.bench_frames import BenchFrames, SceneFn, instrument_mask


def pct(seconds, q: float) -> float:
    """The q-th percentile (0-100) of ``seconds`` in milliseconds; NaN when there are none."""
    value = percentile(seconds, q / 100.0)
    return float("nan") if value is None else value * 1000.0


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Budget:
    """Wall-clock budget of the whole run (0 = none)."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds if seconds > 0 else None

    def spent(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def time_batches(eng, W, H, batch, args, budget: Budget, data) -> tuple[list[float], dict, float]:
    """End-to-end seconds per batch, per-stage seconds, and the timed run's wall time."""

    enc = args.encoding
    stages: dict[str, list[float]] = {}
    e2e: list[float] = []

    def one(i):
        ts = time.perf_counter()
        frames = [frame_from_image_fields(enc, W, H, data[(i + k) % len(data)][1], data[(i + k) % len(data)][0])
                  for k in range(batch)]
        td = time.perf_counter()
        res = eng.infer(frames)
        tm = time.perf_counter()
        _ = [(r.mask.tobytes(), [float(p) for p in r.activity_probs]) for r in res]  # message build
        te = time.perf_counter()
        return te - ts, [("decode", td - ts), *res[0].timings.items(), ("message", te - tm)]

    for i in range(args.warmup):
        one(i)
    t_run = time.perf_counter()
    for i in range(args.frames):
        if i >= min(5, args.frames) and budget.spent():
            break
        total, parts = one(i)
        e2e.append(total)
        for k, v in parts:
            stages.setdefault(k, []).append(v)
    return e2e, stages, time.perf_counter() - t_run


def measure_row(eng, cfg: dict, W, H, batch, args, budget, base: dict, setup_s: float, source: BenchFrames
                ) -> dict:
    """One configuration x size x batch: timed batches, stages, the speed-up over ``base`` (the baseline)."""
    device = eng._device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = source.get(W, H, args.encoding)
    e2e, stages, run_s = time_batches(eng, W, H, batch, args, budget, data)
    d0, s0 = data[0]
    agree = float((eng.infer([frame_from_image_fields(args.encoding, W, H, s0, d0)])[0].mask == base["mask"]).mean())
    p50 = pct(e2e, 50)
    fwd = pct(stages.get("forward", []), 50)
    return {
        **cfg, "input": f"{W}x{H}", "encoding": args.encoding, "scene": source.scene, "batch": batch,
        "device": eng.device,
        "backend": eng.backend, "upsample": eng.upsample, "preprocess": eng._pre,
        "frames": len(e2e), "setup_s": round(setup_s, 2),
        "e2e_ms": {"p50": p50, "p95": pct(e2e, 95), "p99": pct(e2e, 99), "mean": float(np.mean(e2e) * 1000)},
        "stages_p50_ms": {k: pct(v, 50) for k, v in stages.items()},
        "e2e_over_forward": p50 / fwd if fwd > 0 else float("nan"),
        "throughput_fps": len(e2e) * batch / run_s if run_s > 0 else float("nan"),
        "peak_gpu_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "baseline": {k: v for k, v in base.items() if k != "mask"},
        "speedup": base["p50_ms"] * batch / p50 if p50 > 0 else float("nan"),
        "mask_agreement_with_baseline": agree,
        "notes": list(eng.notes),
    }


def robot_outputs_stage(sizes: list[tuple[int, int]], frames: int = 100, scene_fn: SceneFn | None = None
                        ) -> list[dict]:
    """Cost of the per-frame status and instrument computations (``stream.CameraStream.update``: image quality,
    model uncertainty, flags, instrument regions and tracking; no overlay), per size (W, H), on a frame of
    ``scene_fn`` (flat tissue colour without one) and a mask with two crossing instruments; ms p50 / p95, with the
    image-quality and instrument parts timed alone."""

    rows = []
    for W, H in sizes:
        rgb = scene_fn(7, H, W) if scene_fn is not None else np.full((H, W, 3), (180, 90, 80), np.uint8)
        frame, mask = frame_from_array(rgb, "rgb8"), instrument_mask(H, W)
        result = FrameResult(mask=mask, activity_probs=np.array([0.1, 0.2, 0.7], np.float32),
                             confidence=np.random.default_rng(0).uniform(0.5, 1.0, (42, 42)).astype(np.float32))
        stream = CameraStream(MTLESD_SEG_CLASSES, ["a", "b", "c"], np.zeros((len(MTLESD_SEG_CLASSES), 3), np.uint8))
        parts = {"total": (stream.update, frame, result), "image_quality": (quality.measure, frame),
                 "instruments": (instruments.extract, mask, stream.instrument_classes)}
        row = {"input": f"{W}x{H}", "frames": frames}
        for name, (fn, *fn_args) in parts.items():
            for _ in range(5):
                fn(*fn_args)
            times = []
            for _ in range(frames):
                t = time.perf_counter()
                fn(*fn_args)
                times.append(time.perf_counter() - t)
            row[f"{name}_ms"] = {"p50": pct(times, 50), "p95": pct(times, 95)}
        rows.append(row)
    return rows

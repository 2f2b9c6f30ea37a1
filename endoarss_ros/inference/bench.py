"""``endoarss bench``: per-stage and end-to-end latency of the inference engine vs the naive released pipeline.

For each model x size x backend x precision: frames arrive as ``sensor_msgs/Image``-style bytes; a frame's
end-to-end time is decode/validate (``frame_from_image_fields``) + ``InferenceEngine.infer`` + message build
(mask bytes + activity list). The same frames go through the naive baseline (the released code's way: full
frame to float on the CPU, CPU resize, fp32 eager model with unmerged adapters, logits upsampled to full
resolution and argmax on the CPU) in the same run, so every row carries its speed-up (baseline p50 / engine
p50). Random-init weights: speed does not depend on the values.

The ROS measurement (publisher -> node -> subscriber, and a no-model image round-trip for the transport's own
cost) lives in ``endoarss_ros.ros.bench_ros`` (real processes, the node running ``--ros-model``, default the demo
weights); where rclpy is importable it fills the JSON's ``ros`` section, otherwise ``ros`` is null with the reason
in ``ros_note``.
"""
from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

MODEL_PRESETS = ("official", "endoarss-tiny", "endoarss-small", "endoarss-base")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="official,endoarss-base,endoarss-tiny",
                   help=f"comma list of presets ({', '.join(MODEL_PRESETS)}) or weights paths")
    p.add_argument("--backends", default="eager", help="comma list: eager, compile, onnxruntime, tensorrt")
    p.add_argument("--precisions", default="fp32", help="comma list: fp32, fp16, bf16")
    p.add_argument("--sizes", default="1920x1080,1280x1024", help="input frames WxH, comma list")
    p.add_argument("--encoding", default="rgb8", help="input encoding of the synthetic frames")
    p.add_argument("--frames", type=int, default=200, help="timed frames per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=20, help="untimed frames first")
    p.add_argument("--baseline-frames", type=int, default=50, help="timed frames through the naive baseline")
    p.add_argument("--batch", type=int, default=1, help="frames per infer call (cameras)")
    p.add_argument("--device", default="auto")
    p.add_argument("--upsample", default="logits", choices=("logits", "mask"))
    p.add_argument("--profile", action="store_true", help="synchronise the device per stage (exact stages)")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", dest="json_path", default=None, help="write results as JSON here")
    p.add_argument("--markdown", nargs="?", const="-", default=None, help="write a markdown table (- = stdout)")
    p.add_argument("--ros-model", default=None,
                   help="weights the node runs for the over-ROS measurement (default: the demo weights)")
    p.add_argument("--ros-frames", type=int, default=60, help="frames published to the node over ROS")
    p.add_argument("--ros-rate", type=float, default=10.0, help="publishing rate (Hz) for the over-ROS measurement")
    p.add_argument("--no-ros", action="store_true", help="skip the measurement over ROS")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: endoarss-tiny, one small size, ~20 frames, eager + onnxruntime")


def _model(name: str):
    from endoarss_ros.model import ModelConfig, build_model, load_model

    torch.manual_seed(0)
    presets = {
        "official": ModelConfig.official_mtlesd,
        "endoarss-tiny": ModelConfig.endoarss_tiny,
        "endoarss-small": ModelConfig.endoarss_small,
        "endoarss-base": ModelConfig.endoarss_base,
    }
    if name in presets:
        return build_model(presets[name]()).eval()
    return load_model(name, device="cpu")


def _frames_bytes(W: int, H: int, encoding: str, n: int = 4):
    from .frames import ENCODINGS

    C = ENCODINGS[encoding]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    out = []
    for k in range(n):
        img = np.empty((H, W, C), np.uint8)
        for c in range(C):
            img[:, :, c] = ((xx * (c + 1) + yy * (k + 1)) / (W + H) * 255).astype(np.uint8)
        img[rng.integers(0, H, 500), rng.integers(0, W, 500)] = 255
        out.append((img.tobytes(), W * C))
    return out


class NaiveBaseline:
    """The released pipeline: CPU float of the full frame, CPU resize, fp32 eager, CPU upsample + argmax."""

    def __init__(self, model, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.size = tuple(model.config.input_size)
        self.ac = bool(model.config.resize_align_corners)

    @torch.no_grad()
    def infer(self, frame):
        from .preprocess import cv2_full_rgb

        rgb = cv2_full_rgb(frame)  # colour conversion as the released code does it (cv2 on the CPU)
        x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0  # full-resolution float on the CPU
        x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=self.ac)
        x = x.to(self.device)
        out = self.model(x, output_size=None)
        seg = out.segmentation.float().cpu()
        seg = F.interpolate(seg, size=frame.size, mode="bilinear", align_corners=self.ac)
        mask = seg.argmax(dim=1)[0].to(torch.uint8).numpy()
        probs = torch.softmax(out.activity.float().cpu(), dim=-1)[0].numpy()
        return mask, probs


def _pct(v, q):
    return float(np.percentile(np.asarray(v) * 1000.0, q)) if len(v) else float("nan")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bench_one(model, mname, W, H, backend, precision, args, device, baseline_cache) -> dict:
    from .engine import InferenceEngine
    from .frames import frame_from_image_fields

    enc = args.encoding
    data = _frames_bytes(W, H, enc)
    batch = max(1, args.batch)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    eng = InferenceEngine(model, device=str(device), precision=precision, backend=backend, max_batch=batch,
                          cache_dir=args.cache_dir, upsample=args.upsample, profile=args.profile)
    eng.warmup(sizes=[(H, W)], batch=batch, encoding=enc, iterations=1)
    setup_s = time.perf_counter() - t0
    stages: dict[str, list[float]] = {}
    e2e: list[float] = []

    def one(i, record):
        ts = time.perf_counter()
        frames = [frame_from_image_fields(enc, W, H, data[(i + k) % len(data)][1], data[(i + k) % len(data)][0])
                  for k in range(batch)]
        td = time.perf_counter()
        res = eng.infer(frames)
        tm = time.perf_counter()
        msgs = [(r.mask.tobytes(), [float(p) for p in r.activity_probs]) for r in res]  # message build
        te = time.perf_counter()
        if record:
            e2e.append(te - ts)
            for k, v in [("decode", td - ts), *res[0].timings.items(), ("message", te - tm)]:
                stages.setdefault(k, []).append(v)
        return res, msgs

    for i in range(args.warmup):
        one(i, False)
    t_run = time.perf_counter()
    for i in range(args.frames):
        res, _ = one(i, True)
    run_s = time.perf_counter() - t_run
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None

    # naive baseline on the same frames (cached per model x size: it does not depend on backend/precision)
    key = (mname, W, H)
    if key not in baseline_cache:
        import copy

        base = NaiveBaseline(copy.deepcopy(model), device)
        bl: list[float] = []
        frames0 = [frame_from_image_fields(enc, W, H, s, d) for d, s in data]
        base.infer(frames0[0])
        for i in range(max(1, args.baseline_frames)):
            ts = time.perf_counter()
            f = frame_from_image_fields(enc, W, H, data[i % len(data)][1], data[i % len(data)][0])
            mask, probs = base.infer(f)
            _ = (mask.tobytes(), [float(p) for p in probs])
            _sync(device)
            bl.append(time.perf_counter() - ts)
        baseline_cache[key] = {"p50_ms": _pct(bl, 50), "p95_ms": _pct(bl, 95), "frames": len(bl),
                               "masks": [base.infer(f)[0] for f in frames0[:1]]}
        del base
    b = baseline_cache[key]
    f0 = frame_from_image_fields(enc, W, H, data[0][1], data[0][0])
    agree = float((eng.infer([f0])[0].mask == b["masks"][0]).mean())
    p50 = _pct(e2e, 50)
    row = {
        "model": mname, "input": f"{W}x{H}", "encoding": enc, "batch": batch, "device": eng.device,
        "backend_requested": backend, "backend": eng.backend, "precision": precision, "upsample": args.upsample,
        "frames": len(e2e), "setup_s": round(setup_s, 2),
        "e2e_ms": {"p50": p50, "p95": _pct(e2e, 95), "p99": _pct(e2e, 99), "mean": float(np.mean(e2e) * 1000)},
        "stages_p50_ms": {k: _pct(v, 50) for k, v in stages.items()},
        "throughput_fps": len(e2e) * batch / run_s if run_s > 0 else float("nan"),
        "peak_gpu_mem_mib": peak,
        "baseline": {k: v for k, v in b.items() if k != "masks"},
        "speedup": b["p50_ms"] / p50 if p50 > 0 else float("nan"),
        "mask_agreement_with_baseline": agree,
        "notes": list(eng.notes),
    }
    eng.close()
    return row


def _meta(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu, "cpu_threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "command": "endoarss bench " + " ".join(sys.argv[2:]),
    }
    for mod in ("onnxruntime", "torch_tensorrt", "cv2"):
        try:
            meta[mod] = importlib.import_module(mod).__version__
        except Exception:
            meta[mod] = None
    return meta


def _ros_section(args, size: tuple[int, int]) -> tuple[dict | None, str | None]:
    """Node end to end over ROS and the transport alone, for the first input size (real processes)."""
    from .weights_path import DEFAULT_MODEL, resolve_model_path

    if args.no_ros:
        return None, "not measured (--no-ros)"
    try:
        mod = importlib.import_module("endoarss_ros.ros.bench_ros")
    except ImportError as e:
        return None, f"not measured: ROS 2 (rclpy) is not available here ({e})"
    model = resolve_model_path(args.ros_model or DEFAULT_MODEL)
    if not model.is_file():
        return None, f"not measured: no weights file {model} for the node (give --ros-model PATH)"
    width, height = size
    try:
        return mod.measure(str(model), frames=args.ros_frames, width=width, height=height, rate=args.ros_rate,
                           device=args.device, timeout=120.0), None
    except Exception as e:  # the in-process results stay valid
        return None, f"ROS measurement failed: {type(e).__name__}: {e}"


def robot_outputs_stage(sizes: list[tuple[int, int]], frames: int = 100) -> list[dict]:
    """Cost of the per-frame status and instrument computations (``stream.CameraStream.update``: image quality,
    model uncertainty, flags, instrument regions and tracking; no overlay) on a synthetic endoscope frame and its
    true mask, per size (W, H); ms p50 / p95, with the image-quality and instrument parts timed alone."""
    from endoarss_ros.data.synth import generate_frame

    from . import instruments, quality
    from .engine import FrameResult
    from .frames import frame_from_array
    from .stream import CameraStream

    rows = []
    for W, H in sizes:
        rgb, mask = generate_frame(np.random.default_rng(7), 2, (H, W))  # dissection: two instruments
        frame = frame_from_array(rgb, "rgb8")
        result = FrameResult(mask=mask, activity_probs=np.array([0.1, 0.2, 0.7], np.float32),
                             confidence=np.random.default_rng(0).uniform(0.5, 1.0, (42, 42)).astype(np.float32))
        stream = CameraStream(["Background", "FPCW Forceps", "Mucosal Flaps", "FPCW Knife", "Electric Knife",
                               "Incision Area", "Marking Area"], ["a", "b", "c"], np.zeros((7, 3), np.uint8))
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
            row[f"{name}_ms"] = {"p50": _pct(times, 50), "p95": _pct(times, 95)}
        rows.append(row)
    return rows


def markdown_table(results: list[dict]) -> str:
    head = ("| model | input | backend | prec | batch | e2e p50 | p95 | p99 | fps | decode | upload | pre | "
            "forward | post | download | msg | baseline p50 | speed-up | agree | peak MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r["stages_p50_ms"]
        be = r["backend"] + ("" if r["backend"] == r["backend_requested"] else f" (asked {r['backend_requested']})")
        peak = "-" if r["peak_gpu_mem_mib"] is None else f"{r['peak_gpu_mem_mib']:.0f}"
        lines.append(
            f"| {r['model']} | {r['input']} {r['encoding']} | {be} | {r['precision']} | {r['batch']} | "
            f"{r['e2e_ms']['p50']:.2f} | {r['e2e_ms']['p95']:.2f} | {r['e2e_ms']['p99']:.2f} | "
            f"{r['throughput_fps']:.1f} | "
            + " | ".join(f"{s.get(k, float('nan')):.2f}" for k in
                         ("decode", "upload", "preprocess", "forward", "postprocess", "download", "message"))
            + f" | {r['baseline']['p50_ms']:.2f} | {r['speedup']:.1f}x | "
            f"{100 * r['mask_agreement_with_baseline']:.1f}% | {peak} |"
        )
    return "\n".join(lines) + "\n\nTimes in ms (p50 per stage; stage times on CUDA are exact only with --profile).\n"


def run(args) -> int:
    from .engine import resolve_device

    if args.quick:
        args.models, args.sizes, args.backends = "endoarss-tiny", "640x360", "eager,onnxruntime"
        args.frames, args.warmup, args.baseline_frames = min(args.frames, 20), min(args.warmup, 2), 3
        args.ros_frames = min(args.ros_frames, 20)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    sizes = []
    for s in args.sizes.split(","):
        w, h = s.lower().split("x")
        sizes.append((int(w), int(h)))
    results, baseline_cache = [], {}
    for mname in [m.strip() for m in args.models.split(",") if m.strip()]:
        model = _model(mname)
        for W, H in sizes:
            for backend in [b.strip() for b in args.backends.split(",") if b.strip()]:
                for prec in [p.strip() for p in args.precisions.split(",") if p.strip()]:
                    row = _bench_one(model, mname, W, H, backend, prec, args, device, baseline_cache)
                    results.append(row)
                    print(f"{mname} {W}x{H} {row['backend']}/{prec}: e2e p50 {row['e2e_ms']['p50']:.2f} ms, "
                          f"{row['throughput_fps']:.1f} fps, baseline {row['baseline']['p50_ms']:.2f} ms, "
                          f"speed-up {row['speedup']:.1f}x", flush=True)
        del model
    ros, ros_note = _ros_section(args, sizes[0])
    out = {"meta": _meta(device), "results": results, "ros": ros, "ros_note": ros_note,
           "robot_outputs": robot_outputs_stage(sizes, frames=max(10, args.frames // 2))}
    for row in out["robot_outputs"]:
        print(f"status + instruments {row['input']}: p50 {row['total_ms']['p50']:.2f} ms "
              f"(image quality {row['image_quality_ms']['p50']:.2f}, instruments {row['instruments_ms']['p50']:.2f})")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(out, indent=2))
    if args.markdown:
        table = markdown_table(results)
        if args.markdown == "-":
            print(table)
        else:
            Path(args.markdown).write_text(table)
    return 0

"""``endoarss bench``: per-stage and end-to-end latency of the inference engine vs the naive released pipeline.

For each precision x model x backend (x method, see ``METHODS``) one engine is built, then every input size x
batch size is measured with it (frames are resized before the backend, so the sizes share the engine). Frames
arrive as ``sensor_msgs/Image``-style bytes; a batch's end-to-end time is decode/validate
(``frame_from_image_fields``) + ``InferenceEngine.infer`` + message build (mask bytes + activity list). The same
frames go through the naive baseline (the released code's way: full frame to float on the CPU, CPU resize, fp32
eager model with unmerged adapters, logits upsampled to full resolution and argmax on the CPU) in the same run,
so every row carries its speed-up (baseline p50 x batch / engine p50). Random-init weights for the presets:
speed does not depend on the values.

A backend that cannot run here (the engine fell back to another one) or a precision the device refuses is
listed under ``unavailable`` with the reason, not measured twice. ``--time-budget`` stops starting new
configurations once it is spent; those are listed under ``skipped``.

The ROS measurement (publisher -> node -> subscriber, and the transport alone; ``bench_ros``) runs where ROS 2
(rclpy) is installed, and says why not elsewhere.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import importlib
import importlib.util
import itertools
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from endoarss_ros.data.synth import generate_frame
from endoarss_ros.inference import instruments, quality
from endoarss_ros.inference.backends import BackendUnavailable
from endoarss_ros.inference.engine import FrameResult, InferenceEngine, resolve_device
from endoarss_ros.inference.frames import ENCODINGS, frame_from_array, frame_from_image_fields
from endoarss_ros.inference.options import UPSAMPLE_MODES
from endoarss_ros.inference.preprocess import cv2_full_rgb
from endoarss_ros.inference.stream import CameraStream
from endoarss_ros.inference.tallies import percentile
from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path
from endoarss_ros.model import ModelConfig, build_model, load_model
from endoarss_ros.model.config import MTLESD_SEG_CLASSES
from endoarss_ros.tools import bench_temporal
from endoarss_ros.tools.bench_ros import measure

MODEL_PRESETS = ("official", "endoarss-tiny", "endoarss-small", "endoarss-base")
# engine options per method: 'previous' is the CPU pipeline before the fast paths (one INTER_AREA resize of
# the full frame, every class upsampled at full resolution), kept to measure the two side by side
METHODS = {"fast": {}, "previous": {"preprocess": "cv2-direct", "upsample": "logits-dense"}}
RosMeasure = Callable[..., dict]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="official,endoarss-base,endoarss-tiny",
                   help=f"comma list of presets ({', '.join(MODEL_PRESETS)}) or weights paths")
    p.add_argument("--backends", default="eager", help="comma list: eager, compile, onnxruntime, tensorrt")
    p.add_argument("--precisions", default="fp32", help="comma list: fp32, fp16, bf16")
    p.add_argument("--methods", default="fast", help="comma list: fast, previous (the CPU method before)")
    p.add_argument("--sizes", default="1920x1080,1280x1024", help="input frames WxH, comma list")
    p.add_argument("--batches", default="1", help="frames per infer call (cameras), comma list")
    p.add_argument("--encoding", default="rgb8", help="input encoding of the synthetic frames")
    p.add_argument("--scene", default="esd",
                   help="frame content, comma list: esd (synthetic endoscope scenes), bands (a pattern with many "
                        "class boundaries)")
    p.add_argument("--frames", type=int, default=200, help="timed batches per configuration (after warm-up)")
    p.add_argument("--warmup", type=int, default=20, help="untimed batches first")
    p.add_argument("--baseline-frames", type=int, default=50, help="timed frames through the naive baseline")
    p.add_argument("--time-budget", type=float, default=0.0,
                   help="seconds: start no new configuration after this (0 = no limit); see 'skipped'")
    p.add_argument("--device", default="auto")
    p.add_argument("--upsample", default="logits", choices=UPSAMPLE_MODES)
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
    p.add_argument("--temporal-model", default=None, metavar="PATH",
                   help="temporal model whose step cost to measure (default: the default config, random weights)")
    p.add_argument("--temporal-ticks", type=int, default=2000, help="timed temporal ticks per camera")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: endoarss-tiny, one small size, ~20 frames, eager + onnxruntime")


def _model(name: str):

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


SceneFn = Callable[[int, int, int], np.ndarray]  # (seed, H, W) -> uint8 RGB


def ros_measure() -> RosMeasure | str:
    """The over-ROS measurement (``bench_ros.measure``) where ROS 2 (rclpy) is installed, else why not."""
    if importlib.util.find_spec("rclpy") is None:
        return "ROS 2 (rclpy) is not available here"
    return measure  # imports rclpy when it runs


def esd_scene(seed: int, H: int, W: int) -> np.ndarray:
    """A synthetic endoscope frame (uint8 RGB), for ``--scene esd``."""
    return generate_frame(seed, seed % 3, (H, W))[0]


class _Frames:
    """The benchmark's input frames as message bytes ``(data, step)``, made once per size and encoding.

    ``esd``: synthetic endoscope scenes (tissue, instruments, marks; ``esd_scene``); ``bands``: an analytic
    pattern of colour bands and salt noise, far more class boundaries than a surgical scene (a stress case for
    the ``logits`` upsample, whose cost follows them)."""

    def __init__(self, scene: str, scene_fn: SceneFn = esd_scene, n: int = 4):
        if scene not in ("esd", "bands"):
            raise ValueError(f"--scene: unknown scene {scene!r} (esd, bands)")
        self.scene, self.scene_fn, self.n = scene, scene_fn, n
        self._cache: dict = {}

    def get(self, W: int, H: int, encoding: str) -> list[tuple[bytes, int]]:
        key = (W, H, encoding)
        if key not in self._cache:
            self._cache[key] = [self._one(W, H, encoding, k) for k in range(self.n)]
        return self._cache[key]

    def _one(self, W, H, encoding, k) -> tuple[bytes, int]:


        C = ENCODINGS[encoding]
        if self.scene == "bands":
            rng = np.random.default_rng(k)
            yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
            img = np.empty((H, W, C), np.uint8)
            for c in range(C):
                img[:, :, c] = ((xx * (c + 1) + yy * (k + 1)) / (W + H) * 255).astype(np.uint8)
            img[rng.integers(0, H, 500), rng.integers(0, W, 500)] = 255
            return img.tobytes(), W * C
        rgb = self.scene_fn(k, H, W)
        codes = {"rgb8": None, "bgr8": cv2.COLOR_RGB2BGR, "rgba8": cv2.COLOR_RGB2RGBA, "bgra8": cv2.COLOR_RGB2BGRA,
                 "mono8": cv2.COLOR_RGB2GRAY}
        if encoding not in codes:
            raise ValueError(f"--scene esd has no {encoding} frames: use --scene bands for YUV encodings")
        img = rgb if codes[encoding] is None else cv2.cvtColor(rgb, codes[encoding])
        return np.ascontiguousarray(img).tobytes(), W * C


class NaiveBaseline:
    """The released pipeline: CPU float of the full frame, CPU resize, fp32 eager, CPU upsample + argmax."""

    def __init__(self, model, device: torch.device):
        self.model = model.to(device).eval()
        self.device = device
        self.size = tuple(model.config.input_size)
        self.ac = bool(model.config.resize_align_corners)

    @torch.no_grad()
    def infer(self, frame):

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


def _pct(seconds, q: float) -> float:
    """The q-th percentile (0-100) of ``seconds`` in milliseconds; NaN when there are none."""
    value = percentile(seconds, q / 100.0)
    return float("nan") if value is None else value * 1000.0


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Budget:
    """Wall-clock budget of the whole run (0 = none)."""

    def __init__(self, seconds: float):
        self.deadline = time.perf_counter() + seconds if seconds > 0 else None

    def spent(self) -> bool:
        return self.deadline is not None and time.perf_counter() > self.deadline


def _baseline(model, mname, W, H, args, device, cache: dict, source: _Frames) -> dict:
    """Naive pipeline p50/p95 per frame and its mask of the first frame, once per model x size."""

    key = (mname, W, H, source.scene)
    if key not in cache:
        data = source.get(W, H, args.encoding)
        base = NaiveBaseline(copy.deepcopy(model), device)
        frames = [frame_from_image_fields(args.encoding, W, H, s, d) for d, s in data]
        base.infer(frames[0])
        times = []
        for i in range(max(1, args.baseline_frames)):
            ts = time.perf_counter()
            d, s = data[i % len(data)]
            mask, probs = base.infer(frame_from_image_fields(args.encoding, W, H, s, d))
            _ = (mask.tobytes(), [float(p) for p in probs])
            _sync(device)
            times.append(time.perf_counter() - ts)
        cache[key] = {"p50_ms": _pct(times, 50), "p95_ms": _pct(times, 95), "frames": len(times),
                      "mask": base.infer(frames[0])[0]}
    return cache[key]


def _time_batches(eng, W, H, batch, args, budget: _Budget, data) -> tuple[list[float], dict, float]:
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


def _row(eng, cfg: dict, W, H, batch, args, budget, base: dict, setup_s: float, source: _Frames) -> dict:

    device = eng._device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    data = source.get(W, H, args.encoding)
    e2e, stages, run_s = _time_batches(eng, W, H, batch, args, budget, data)
    d0, s0 = data[0]
    agree = float((eng.infer([frame_from_image_fields(args.encoding, W, H, s0, d0)])[0].mask == base["mask"]).mean())
    p50 = _pct(e2e, 50)
    fwd = _pct(stages.get("forward", []), 50)
    return {
        **cfg, "input": f"{W}x{H}", "encoding": args.encoding, "scene": source.scene, "batch": batch,
        "device": eng.device,
        "backend": eng.backend, "upsample": eng.upsample, "preprocess": eng._pre,
        "frames": len(e2e), "setup_s": round(setup_s, 2),
        "e2e_ms": {"p50": p50, "p95": _pct(e2e, 95), "p99": _pct(e2e, 99), "mean": float(np.mean(e2e) * 1000)},
        "stages_p50_ms": {k: _pct(v, 50) for k, v in stages.items()},
        "e2e_over_forward": p50 / fwd if fwd > 0 else float("nan"),
        "throughput_fps": len(e2e) * batch / run_s if run_s > 0 else float("nan"),
        "peak_gpu_mem_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "baseline": {k: v for k, v in base.items() if k != "mask"},
        "speedup": base["p50_ms"] * batch / p50 if p50 > 0 else float("nan"),
        "mask_agreement_with_baseline": agree,
        "notes": list(eng.notes),
    }


def _engine(model, cfg: dict, args, device, max_batch: int):
    """(engine, setup seconds, None), or (None, 0, why this configuration cannot run here)."""

    opts = {"upsample": args.upsample, **METHODS[cfg["method"]]}
    if device.type == "cuda" and cfg["method"] != "fast":
        return None, 0.0, f"method {cfg['method']!r} is the CPU pipeline"
    t0 = time.perf_counter()
    try:  # no fallback: another backend's row would be measured twice
        eng = InferenceEngine(model, device=str(device), precision=cfg["precision"], backend=cfg["backend_requested"],
                              max_batch=max_batch, cache_dir=args.cache_dir, profile=args.profile, fallback=False,
                              **opts)
    except (ValueError, BackendUnavailable) as e:  # e.g. fp16 on a CPU, tensorrt not installed
        return None, 0.0, str(e)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory building it: reported, the run goes on
        return None, 0.0, f"{type(e).__name__}: {e}"
    return eng, time.perf_counter() - t0, None


def _configs(args):
    """(precision, backend, model, method) in the order measured: all models of the first precision and backend
    first (put the rows that matter most first when a time budget may cut the run short)."""
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()]  # noqa: E731
    for prec in split(args.precisions):
        for backend in split(args.backends):
            for mname in split(args.models):
                for method in split(args.methods):
                    yield {"model": mname, "backend_requested": backend, "precision": prec, "method": method}


def _sizes(text: str) -> list[tuple[int, int]]:
    out = []
    for s in text.split(","):
        w, h = s.lower().split("x")
        out.append((int(w), int(h)))
    return out


def _meta(device: torch.device) -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in __import__("os").getloadavg()]
    except OSError:
        load = None
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu, "cpu_threads": torch.get_num_threads(), "load_average_at_start": load,
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "command": "endoarss bench " + " ".join(sys.argv[2:]),
    }
    for mod in ("onnxruntime", "torch_tensorrt", "cv2"):
        try:
            meta[mod] = importlib.import_module(mod).__version__
        except Exception:
            meta[mod] = None
    return meta


def _ros_section(args, size: tuple[int, int], ros: RosMeasure | str | None) -> tuple[dict | None, str | None]:
    """Node end to end over ROS and the transport alone, for the first input size (real processes).

    ``ros``: the measurement function, or why there is none."""

    if args.no_ros:
        return None, "not measured (--no-ros)"
    if not callable(ros):
        return None, f"not measured: {ros or 'no ROS measurement was wired in'}"
    model = resolve_model_path(args.ros_model or DEFAULT_MODEL)
    if not model.is_file():
        return None, f"not measured: no weights file {model} for the node (give --ros-model PATH)"
    width, height = size
    try:
        return ros(str(model), frames=args.ros_frames, width=width, height=height, rate=args.ros_rate,
                   device=args.device, timeout=120.0), None
    except Exception as e:  # the in-process results stay valid
        return None, f"ROS measurement failed: {type(e).__name__}: {e}"


def _instrument_mask(H: int, W: int) -> np.ndarray:
    """A class mask with two instruments crossing near the centre (MTLESD ids: forceps 1, knife 3) and a flap."""

    mask = np.zeros((H, W), np.uint8)
    u = min(H, W)
    cv2.ellipse(mask, (W // 2, H // 2 - u // 6), (u // 5, u // 10), 0, 0, 360, 2, -1)
    cv2.line(mask, (W // 2 - u // 2, H), (W // 2 + u // 10, H // 2), 1, max(1, u // 12))
    cv2.line(mask, (W // 2 + u // 2, H), (W // 2 - u // 8, H // 2 - u // 20), 3, max(1, u // 14))
    return mask


def robot_outputs_stage(sizes: list[tuple[int, int]], frames: int = 100, scene_fn: SceneFn | None = None
                        ) -> list[dict]:
    """Cost of the per-frame status and instrument computations (``stream.CameraStream.update``: image quality,
    model uncertainty, flags, instrument regions and tracking; no overlay), per size (W, H), on a frame of
    ``scene_fn`` (flat tissue colour without one) and a mask with two crossing instruments; ms p50 / p95, with the
    image-quality and instrument parts timed alone."""

    rows = []
    for W, H in sizes:
        rgb = scene_fn(7, H, W) if scene_fn is not None else np.full((H, W, 3), (180, 90, 80), np.uint8)
        frame, mask = frame_from_array(rgb, "rgb8"), _instrument_mask(H, W)
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
            row[f"{name}_ms"] = {"p50": _pct(times, 50), "p95": _pct(times, 95)}
        rows.append(row)
    return rows


def markdown_table(results: list[dict], unavailable: list[dict] = (), skipped: list[dict] = ()) -> str:
    head = ("| model | input | method | backend | prec | batch | e2e p50 | p95 | p99 | fps | decode | upload | "
            "pre | forward | post | download | msg | e2e/fwd | baseline p50 | speed-up | agree | peak MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r["stages_p50_ms"]
        peak = "-" if r["peak_gpu_mem_mib"] is None else f"{r['peak_gpu_mem_mib']:.0f}"
        lines.append(
            f"| {r['model']} | {r['input']} {r['encoding']} {r['scene']} | {r['method']} | {r['backend']} | "
            f"{r['precision']} | {r['batch']} | {r['e2e_ms']['p50']:.2f} | {r['e2e_ms']['p95']:.2f} | "
            f"{r['e2e_ms']['p99']:.2f} | {r['throughput_fps']:.1f} | "
            + " | ".join(f"{s.get(k, float('nan')):.2f}" for k in
                         ("decode", "upload", "preprocess", "forward", "postprocess", "download", "message"))
            + f" | {r['e2e_over_forward']:.2f} | {r['baseline']['p50_ms']:.2f} | {r['speedup']:.1f}x | "
            f"{100 * r['mask_agreement_with_baseline']:.1f}% | {peak} |"
        )
    text = "\n".join(lines) + ("\n\nTimes in ms (p50 per stage; stage times on CUDA are exact only with --profile; "
                               "a batch's e2e covers all its frames).\n")
    for title, rows in (("Unavailable here", unavailable), ("Not measured (time budget)", skipped)):
        if rows:
            text += f"\n{title}:\n\n" + "".join(
                f"* {r['model']} {r['backend_requested']} {r['precision']} {r['method']}"
                + (f" {r['input']} batch {r['batch']}" if "input" in r else "") + f": {r['reason']}\n" for r in rows)
    return text


def _apply_quick(args) -> None:
    if args.quick:
        args.models, args.sizes, args.backends = "endoarss-tiny", "640x360", "eager,onnxruntime"
        args.frames, args.warmup, args.baseline_frames = min(args.frames, 20), min(args.warmup, 2), 3
        args.ros_frames = min(args.ros_frames, 20)
        args.temporal_ticks = min(args.temporal_ticks, 200)


def _measure_all(args, device, budget: _Budget, save: Callable, sources: list[_Frames]) -> tuple[list, list, list]:
    """Every configuration; ``save(results, unavailable, skipped)`` after each one (a killed run keeps what it
    measured)."""
    sizes = _sizes(args.sizes)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    results, unavailable, skipped, models, baselines = [], [], [], {}, {}
    for cfg in _configs(args):
        if budget.spent():
            skipped += [{**cfg, "input": f"{W}x{H}", "batch": b, "reason": "time budget spent"}
                        for W, H in sizes for _ in sources for b in batches]
            continue
        model = models.setdefault(cfg["model"], _model(cfg["model"]))
        eng, setup_s, reason = _engine(model, cfg, args, device, max(batches))
        if eng is None:
            unavailable.append({**cfg, "reason": reason})
            print(f"{cfg['model']} {cfg['backend_requested']}/{cfg['precision']}: unavailable: {reason}", flush=True)
            continue
        for (W, H), source in itertools.product(sizes, sources):
            base = _baseline(model, cfg["model"], W, H, args, device, baselines, source)
            for b in batches:
                if budget.spent():
                    skipped.append({**cfg, "input": f"{W}x{H}", "batch": b, "reason": "time budget spent"})
                    continue
                try:
                    row = _row(eng, cfg, W, H, b, args, budget, base, setup_s, source)
                except Exception as e:  # noqa: BLE001 - one failing configuration must not end the run
                    unavailable.append({**cfg, "input": f"{W}x{H}", "batch": b, "reason": f"{type(e).__name__}: {e}"})
                    print(f"{cfg['model']} {W}x{H} b{b}: failed: {type(e).__name__}: {e}", flush=True)
                    continue
                results.append(row)
                save(results, unavailable, skipped)
                print(f"{cfg['model']} {W}x{H} b{b} {row['method']} {row['backend']}/{cfg['precision']}: e2e p50 "
                      f"{row['e2e_ms']['p50']:.2f} ms ({row['e2e_over_forward']:.2f}x forward), "
                      f"{row['throughput_fps']:.1f} fps, speed-up {row['speedup']:.1f}x", flush=True)
        eng.close()
    return results, unavailable, skipped


def run(args, ros: RosMeasure | str | None = None, scene_fn: SceneFn = esd_scene) -> int:
    """``ros``: the over-ROS measurement (``measure(model_path, frames=, width=, height=, rate=, device=,
    timeout=) -> dict``), or the reason there is none (default: ``ros_measure()``); ``scene_fn``: the ``esd``
    scene generator."""
    if ros is None:
        ros = ros_measure()

    _apply_quick(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = _meta(device)
    budget = _Budget(args.time_budget)

    robot_outputs: list[dict] = []
    temporal: dict = {}

    def save(results, unavailable, skipped, ros_result=None, ros_note="not measured yet (run in progress)"):
        out = {"meta": meta, "results": results, "unavailable": unavailable, "skipped": skipped,
               "ros": ros_result, "ros_note": ros_note, "robot_outputs": robot_outputs, "temporal": temporal or None}
        if args.json_path:
            Path(args.json_path).write_text(json.dumps(out, indent=2))

    sources = [_Frames(scene.strip(), scene_fn) for scene in args.scene.split(",") if scene.strip()]
    results, unavailable, skipped = _measure_all(args, device, budget, save, sources)
    robot_outputs.extend(robot_outputs_stage(_sizes(args.sizes), max(10, args.frames // 2), scene_fn))
    for row in robot_outputs:
        print(f"status + instruments {row['input']}: p50 {row['total_ms']['p50']:.2f} ms (image quality "
              f"{row['image_quality_ms']['p50']:.2f}, instruments {row['instruments_ms']['p50']:.2f})", flush=True)
    temporal.update(bench_temporal.measure(args.temporal_model, ticks=args.temporal_ticks))
    print(bench_temporal.summary_line(temporal), flush=True)
    ros_result, ros_note = _ros_section(args, _sizes(args.sizes)[0], ros)
    save(results, unavailable, skipped, ros_result, ros_note)
    if args.markdown:
        table = markdown_table(results, unavailable, skipped)
        if args.markdown == "-":
            print(table)
        else:
            Path(args.markdown).write_text(table)
    return 0

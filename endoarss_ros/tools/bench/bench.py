"""``endoarss bench``: per-stage and end-to-end latency of the inference engine vs the naive released pipeline.

For each precision x model x backend (x method, see ``METHODS``) one engine is built, then every input size x
batch size is measured with it (frames are resized before the backend, so the sizes share the engine). Frames
arrive as ``sensor_msgs/Image``-style bytes; a batch's end-to-end time is decode/validate
(``frame_from_image_fields``) + ``InferenceEngine.infer`` + message build (mask bytes + activity list). The same
frames go through the naive baseline (``bench_baseline``) in the same run, so every row carries its speed-up
(baseline p50 x batch / engine p50). Random-init weights for the presets (each model is built once per run):
speed does not depend on the values.

Every backend x precision is probed first, in seconds and without a model (``backends.probe``): one that cannot
run here is listed under ``unavailable`` with the reason before anything is measured, as is one that fails to
build or falls back. ``--time-budget`` stops starting new configurations once it is spent; those are listed
under ``skipped``. The JSON file is rewritten after every measured row (a killed run keeps what it measured).

The ROS measurement (publisher -> node -> subscriber, and the transport alone; ``bench_ros``) runs where ROS 2
(rclpy) is installed, and says why not elsewhere. Modules: ``bench_frames`` (input frames), ``bench_timing``
(timing, rows), ``bench_baseline`` (the naive pipeline), ``bench_report`` (meta, table), ``bench_ros``.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from endoarss_ros.files import write_atomic
from endoarss_ros.inference.backends import BackendUnavailable, default_cache_dir, probe
from endoarss_ros.inference.engine import InferenceEngine, resolve_device
from endoarss_ros.inference.options import UPSAMPLE_MODES
from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path
from endoarss_ros.model import ModelConfig, build_model, load_model
from endoarss_ros.tools.bench import bench_stereo, bench_temporal
from endoarss_ros.tools.bench.bench_baseline import measure_baseline
from endoarss_ros.tools.bench.bench_frames import SCENES, BenchFrames, esd_scene
from endoarss_ros.tools.bench.bench_report import machine_meta, markdown_table, progress_line
from endoarss_ros.tools.bench.bench_ros import measure
from endoarss_ros.tools.bench.bench_timing import Budget, measure_row, robot_outputs_stage

__all__ = ["add_arguments", "run", "markdown_table", "esd_scene", "ros_measure", "robot_outputs_stage"]

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
                   help=f"frame content, comma list of {', '.join(SCENES)}: esd (synthetic endoscope scenes), bands "
                        "(a pattern with many class boundaries), noise (uniform noise; stress cases)")
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
    p.add_argument("--stereo-pairs", type=int, default=None,
                   help="rendered stereo pairs for the 3D stage row (1280x1024, one core; default: 24 with "
                        "--stereo-only, 2 with --quick, else not measured)")
    p.add_argument("--stereo-only", action="store_true", help="measure the 3D stage row only")
    p.add_argument("--quick", action="store_true",
                   help="CI smoke run: endoarss-tiny, one small size, ~20 frames, eager + onnxruntime")


def _model(name: str):
    """A preset with random-init weights (seeded), or a weights file."""
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


def ros_measure() -> RosMeasure | str:
    """The over-ROS measurement (``bench_ros.measure``) where ROS 2 (rclpy) is installed, else why not."""
    if importlib.util.find_spec("rclpy") is None:
        return "ROS 2 (rclpy) is not available here"
    return measure  # imports rclpy when it runs


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


def ros_target(ros_result: dict, results: list[dict]) -> dict | None:
    """The over-ROS target: node p50 <= transport p50 + 1.2 x the in-process end to end (the first measured row
    of the same size, batch 1), all from this run."""
    size = f"{ros_result['width']}x{ros_result['height']}"
    rows = [r for r in results if r["input"] == size and r["batch"] == 1]
    transport = (ros_result.get("transport") or {}).get("latency_ms", {}).get("p50")
    node = ros_result["node"]["latency_ms"]["p50"]
    if not rows or transport is None or node is None:
        return None
    bound = transport + 1.2 * rows[0]["e2e_ms"]["p50"]
    return {"node_p50_ms": node, "transport_p50_ms": transport, "in_process_e2e_p50_ms": rows[0]["e2e_ms"]["p50"],
            "bound_ms": bound, "met": node <= bound}


def _apply_quick(args) -> None:
    if args.quick:
        args.models, args.sizes, args.backends = "endoarss-tiny", "640x360", "eager,onnxruntime"
        args.frames, args.warmup, args.baseline_frames = min(args.frames, 20), min(args.warmup, 2), 3
        args.ros_frames = min(args.ros_frames, 20)
        args.temporal_ticks = min(args.temporal_ticks, 200)
        args.stereo_pairs = 2 if args.stereo_pairs is None else min(args.stereo_pairs, 2)


def _probe_all(args, device) -> dict[tuple[str, str], str | None]:
    """Per (backend, precision) of the matrix: why it cannot run here, or None (seconds, before any model)."""
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    reasons = {}
    for cfg in _configs(args):
        key = (cfg["backend_requested"], cfg["precision"])
        if key not in reasons:
            try:
                InferenceEngine.check_options(cfg["precision"], key[0], args.upsample, "auto", 1,
                                              device.type == "cuda")
                reasons[key] = probe(key[0], device, cfg["precision"], cache)
            except (ValueError, BackendUnavailable) as e:
                reasons[key] = str(e)
            print(f"probe {key[0]}/{key[1]} on {device}: {reasons[key] or 'available'}", flush=True)
    return reasons


def _measure_all(args, device, budget: Budget, save: Callable, sources: list[BenchFrames]) -> tuple[list, list, list]:
    """Every configuration; ``save(results, unavailable, skipped)`` after each row (a killed run keeps what it
    measured). Unavailable backends are reported first (probed); each model is built once."""
    sizes = _sizes(args.sizes)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]
    results, unavailable, skipped, models, baselines = [], [], [], {}, {}
    reasons = _probe_all(args, device)
    runnable = []
    for cfg in _configs(args):
        reason = reasons[cfg["backend_requested"], cfg["precision"]]
        if reason is None:
            runnable.append(cfg)
        else:
            unavailable.append({**cfg, "reason": reason})
    save(results, unavailable, skipped)
    for cfg in runnable:
        if budget.spent():
            for (W, H), source in itertools.product(sizes, sources):
                for b in batches:
                    _skip(skipped, cfg, W, H, source, b)
            continue
        if cfg["model"] not in models:
            models[cfg["model"]] = _model(cfg["model"])
        model = models[cfg["model"]]
        eng, setup_s, reason = _engine(model, cfg, args, device, max(batches))
        if eng is None:
            unavailable.append({**cfg, "reason": reason})
            print(f"{cfg['model']} {cfg['backend_requested']}/{cfg['precision']}: unavailable: {reason}", flush=True)
            continue
        for (W, H), source in itertools.product(sizes, sources):
            base = measure_baseline(model, cfg["model"], W, H, args, device, baselines, source)
            for b in batches:
                if budget.spent():
                    _skip(skipped, cfg, W, H, source, b)
                    continue
                try:
                    row = measure_row(eng, cfg, W, H, b, args, budget, base, setup_s, source)
                except Exception as e:  # noqa: BLE001 - one failing configuration must not end the run
                    unavailable.append({**cfg, "input": f"{W}x{H}", "batch": b, "reason": f"{type(e).__name__}: {e}"})
                    print(f"{cfg['model']} {W}x{H} b{b}: failed: {type(e).__name__}: {e}", flush=True)
                    continue
                results.append(row)
                save(results, unavailable, skipped)
                print(progress_line(row), flush=True)
        eng.close()
    return results, unavailable, skipped


def _skip(skipped: list, cfg: dict, W: int, H: int, source: BenchFrames, batch: int) -> None:
    """A row the time budget left out: in the JSON and on the console, with its scene."""
    row = {**cfg, "input": f"{W}x{H}", "scene": source.scene, "batch": batch, "reason": "time budget spent"}
    skipped.append(row)
    print(f"{cfg['model']} {W}x{H} {source.scene} b{batch} {cfg['method']} {cfg['backend_requested']}/"
          f"{cfg['precision']}: skipped (time budget spent)", flush=True)


def run(args, ros: RosMeasure | str | None = None) -> int:
    """``ros``: the over-ROS measurement (``measure(model_path, frames=, width=, height=, rate=, device=,
    timeout=) -> dict``), or the reason there is none (default: ``ros_measure()``)."""
    if ros is None:
        ros = ros_measure()

    _apply_quick(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    meta = machine_meta(device)
    budget = Budget(args.time_budget)

    robot_outputs: list[dict] = []
    temporal: dict = {}
    stereo: dict = {}

    def save(results, unavailable, skipped, ros_result=None, ros_note="not measured yet (run in progress)"):
        out = {"meta": meta, "results": results, "unavailable": unavailable, "skipped": skipped,
               "ros": ros_result, "ros_note": ros_note, "robot_outputs": robot_outputs, "temporal": temporal or None,
               "stereo_3d": stereo or None}
        if args.json_path:  # atomically: a run killed mid-write leaves the previous rows readable
            write_atomic(args.json_path, json.dumps(out, indent=2))

    pairs = args.stereo_pairs if args.stereo_pairs is not None else (24 if args.stereo_only else 0)
    if pairs > 0:
        stereo.update(bench_stereo.measure(pairs))
        print(bench_stereo.summary_line(stereo), flush=True)
    if args.stereo_only:
        save([], [], [], None, "not measured (--stereo-only)")
        return 0
    sources = [BenchFrames(scene.strip()) for scene in args.scene.split(",") if scene.strip()]
    results, unavailable, skipped = _measure_all(args, device, budget, save, sources)
    robot_outputs.extend(robot_outputs_stage(_sizes(args.sizes), max(10, args.frames // 2), esd_scene))
    for row in robot_outputs:
        print(f"status + instruments {row['input']}: p50 {row['total_ms']['p50']:.2f} ms (image quality "
              f"{row['image_quality_ms']['p50']:.2f}, instruments {row['instruments_ms']['p50']:.2f})", flush=True)
    temporal.update(bench_temporal.measure(args.temporal_model, ticks=args.temporal_ticks))
    print(bench_temporal.summary_line(temporal), flush=True)
    ros_result, ros_note = _ros_section(args, _sizes(args.sizes)[0], ros)
    if ros_result is not None:
        ros_result["target"] = ros_target(ros_result, results)
    save(results, unavailable, skipped, ros_result, ros_note)
    if args.markdown:
        table = markdown_table(results, unavailable, skipped)
        if args.markdown == "-":
            print(table)
        else:
            Path(args.markdown).write_text(table)
    return 0

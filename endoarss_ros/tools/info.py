"""``endoarss info WEIGHTS``: architecture, classes, parameter counts and FLOPs of a weights file."""
from __future__ import annotations

import argparse
import sys


def _size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 224x224, got {text!r}") from e
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="weights file: ours (.safetensors), a released EndoARSS checkpoint, "
                                        "DINOv2 / Depth-Anything / Hugging Face Dinov2 weights")
    parser.add_argument("--input-size", type=_size, default=None, metavar="HxW",
                        help="frame size for the FLOPs count (default: the model's working resolution)")
    parser.add_argument("--ignore-key", action="append", default=[], metavar="PATTERN",
                        help="file key (or fnmatch pattern) to ignore on purpose; repeatable")


def run(args: argparse.Namespace) -> int:
    import torch

    from endoarss_ros.model import count_parameters, estimate_flops, load_model
    from endoarss_ros.model.finetune import format_parameter_summary
    from endoarss_ros.model.weights import WeightsError, describe_report

    torch.set_num_threads(min(torch.get_num_threads(), 4))
    try:
        model, report = load_model(args.weights, ignore_keys=tuple(args.ignore_key), return_report=True)
    except (WeightsError, FileNotFoundError) as e:  # damaged, foreign or missing: the reason, no traceback
        print(f"endoarss info: error: {e}", file=sys.stderr)
        return 2
    cfg = model.config
    a, s, h = cfg.adapter, cfg.sma, cfg.head
    print(describe_report(report))
    print(f"family: {cfg.family}")
    bb = model.backbone
    print(f"backbone: DINOv2 ViT-{cfg.backbone}/14 ({bb.embed_dim}-dim, {len(bb.blocks)} blocks, "
          f"{cfg.num_register_tokens} register tokens)")
    adapter = "none"
    if a.kind != "none":
        adapter = f"{a.kind} r={a.rank} alpha={a.alpha:g} on {','.join(a.targets)}"
    if a.kind == "tesla":
        adapter += f"; task paths r={a.task_rank} in the last {a.task_blocks} blocks"
    if a.merged:
        adapter += " (merged)"
    print(f"adapters: {adapter}")
    print(f"SMA: {s.placement}")
    print(f"working resolution: {cfg.input_size[0]}x{cfg.input_size[1]}, "
          f"normalisation: {'ImageNet mean/std' if cfg.normalize else 'none'}")
    print(f"feature blocks: {list(model.feature_blocks)}; high-res seg branch: "
          f"{'yes' if (h.high_res and cfg.family == 'endoarss') else 'no'}")
    print(f"segmentation classes ({cfg.num_seg_classes}): " + ", ".join(
        f"{i}={n}" for i, n in enumerate(cfg.seg_classes)))
    print(f"activity classes ({cfg.num_activity_classes}): " + ", ".join(
        f"{i}={n}" for i, n in enumerate(cfg.activity_classes)))
    counts = count_parameters(model)
    print(format_parameter_summary(model))
    print(f"parameters: total {counts['total']:,} trainable {counts['trainable']:,}")
    size = args.input_size or tuple(cfg.input_size)
    flops = estimate_flops(model, size)
    print(f"FLOPs per frame at {size[0]}x{size[1]}: {flops:,} ({flops / 1e9:.2f} GFLOP)")
    return 0

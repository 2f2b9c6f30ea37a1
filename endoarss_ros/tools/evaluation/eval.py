"""``endoarss eval``: evaluate weights on a dataset split; a readable table and a JSON report.

Examples::

    endoarss eval models/demo/endoarss_demo.safetensors --data /data/mtlesd --split test --json report.json
    endoarss eval WEIGHTS --synthetic-seed 1000 --count 150 --render-size 336 --robustness
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("weights", help="weights file (our safetensors, or anything load_model reads)")
    parser.add_argument("--data", help="dataset root (omit for generated synthetic frames)")
    parser.add_argument("--layout", choices=("released", "generic", "videos"), default="released",
                        help="videos: phase-labelled videos (Cholec80, AutoLaparo, M2CAI16, ours), activity only")
    parser.add_argument("--split", default="test", help="split folder (default test; '.': --data itself)")
    parser.add_argument("--sample-fps", type=float, default=1.0, help="videos: frames read per second (default 1)")
    parser.add_argument("--label-fps", type=float, help="videos: the label files' rate (default: the layout's)")
    parser.add_argument("--size", type=int, nargs="+", metavar="N",
                        help="working size H [W] of the evaluated frames (default: the model's input size)")
    parser.add_argument("--synthetic-seed", type=int, default=1000,
                        help="synthetic frames: seed of the split's seed stream (default 1000)")
    parser.add_argument("--count", type=int, default=150, help="synthetic frames: how many (default 150)")
    parser.add_argument("--render-size", type=int, default=336,
                        help="synthetic frames: rendered at this size, then area-downscaled (default 336)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--robustness", action="store_true",
                        help="also evaluate under noise, blur, JPEG, smoke and blood; report the drop per corruption")
    parser.add_argument("--json", help="write the full report here")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")


def build_eval_dataset(args: argparse.Namespace, input_size: tuple[int, int], class_set=None):
    from endoarss_ros.training.config import DataConfig, SyntheticConfig
    from endoarss_ros.training.data import build_split

    size = tuple(args.size * 2 if args.size and len(args.size) == 1 else args.size or input_size)
    if args.data:
        cfg = DataConfig(layout=args.layout, root=args.data, sample_fps=args.sample_fps, label_fps=args.label_fps)
        source = {"layout": args.layout, "root": str(args.data), "split": args.split}
    else:
        syn = SyntheticConfig(seed=args.synthetic_seed, test_seed=args.synthetic_seed, test=args.count,
                              render_size=args.render_size, wide_every=0)
        cfg = DataConfig(layout="synthetic", synthetic=syn)
        source = {"layout": "synthetic", "seed": args.synthetic_seed, "split": "test", "count": args.count,
                  "render_size": args.render_size}
        args.split = "test"
    ds = build_split(cfg, args.split, size, class_set=class_set)
    source["size"] = list(size)
    source["frames"] = len(ds)
    return ds, source


def run(args: argparse.Namespace) -> int:

    import torch

    from endoarss_ros.metrics.tracker import format_table, summary
    from endoarss_ros.model import load_model
    from endoarss_ros.training.evaluation import evaluate

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = load_model(args.weights, device=device)
    class_set = None
    if args.data and args.layout == "videos":  # the labels' phase names are matched to the model's classes
        from endoarss_ros.data.classes import ClassSet, default_colors

        cfg = model.config
        class_set = ClassSet(cfg.seg_classes, default_colors(len(cfg.seg_classes)), cfg.activity_classes)
    ds, source = build_eval_dataset(args, tuple(model.config.input_size), class_set)
    t0 = time.time()
    result = evaluate(model, ds, batch_size=args.batch_size, device=device)
    report = {"weights": str(args.weights), "data": source, "summary": summary(result), "metrics": result,
              "background_included": {"miou_fg": False, "miou_all": True}, "eval_time_s": round(time.time() - t0, 2)}
    print(format_table(result))
    if args.robustness:
        from endoarss_ros.training.robustness import evaluate_robustness, format_robustness

        report["robustness"] = evaluate_robustness(model, ds, clean=result, batch_size=args.batch_size, device=device)
        print(format_robustness(report["robustness"]))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1))
        print(f"report: {args.json}")
    return 0

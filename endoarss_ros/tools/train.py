"""``endoarss train``: train EndoARSS from a config file with dotted overrides.

Examples::

    endoarss train --config models/demo/train_demo.yaml
    endoarss train --config cfg.yaml --set optim.lr=3e-4 --set weighting.method=dbmtl --name dbmtl_run
    endoarss train --layout videos --data data/cholec80 --sample-fps 1 --name cholec80   # phases only, no masks
    torchrun --nproc_per_node=8 -m endoarss_ros.cli train --config cfg.yaml     # the same, on 8 GPUs
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TrainConfig YAML (default: built-in defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set optim.lr=1e-3 (repeatable)")
    parser.add_argument("--name", help="run name (the run folder is out_dir/name)")
    parser.add_argument("--out-dir", help="parent folder of the run (default runs)")
    parser.add_argument("--data", help="dataset root (sets data.root)")
    parser.add_argument("--layout", choices=("released", "generic", "synthetic", "videos"),
                        help="sets data.layout (videos: phase-labelled videos without masks, e.g. a Cholec80 "
                             "folder; the segmentation loss is off)")
    parser.add_argument("--sample-fps", type=float, help="videos: frames read per second (sets data.sample_fps)")
    parser.add_argument("--label-fps", type=float,
                        help="videos: the rate the label indices count (sets data.label_fps; default the layout's)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--weighting", choices=("equal", "dbmtl", "stch"))
    parser.add_argument("--freeze", choices=("adapters", "full"))
    parser.add_argument("--init", help="weights to start from (ours, released, or a DINOv2 backbone)")
    parser.add_argument("--resume", action="store_true", help="continue the run in its folder from last.safetensors")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bars (logs only)")


def config_from_args(args: argparse.Namespace):
    from endoarss_ros.training.config import TrainConfig

    overrides = list(args.overrides)
    for key, attr in (("name", "name"), ("out_dir", "out_dir"), ("data.root", "data"), ("data.layout", "layout"),
                      ("epochs", "epochs"), ("weighting.method", "weighting"), ("freeze", "freeze"),
                      ("model.init", "init"), ("data.sample_fps", "sample_fps"), ("data.label_fps", "label_fps")):
        value = getattr(args, attr, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    if args.no_progress:
        overrides.append("progress=false")
    return TrainConfig.load(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    import sys

    from endoarss_ros.data.phase_layout import PhaseLayoutError
    from endoarss_ros.training.loop import train

    cfg = config_from_args(args)
    try:
        result = train(cfg, resume=args.resume)
    except PhaseLayoutError as e:  # --layout videos: a label file or video that does not fit, named
        print(f"endoarss train: {e}", file=sys.stderr)
        return 2
    if "test" in result:
        t = result["test"]
        print(f"{cfg.run_dir}: best epoch {result['best']['epoch']}; test activity accuracy "
              f"{t['activity_accuracy']:.4f}, mIoU foreground {t['miou_fg']:.4f}")
    return 0

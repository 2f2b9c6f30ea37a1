"""The `endoarss` command.

One module per subcommand in ``endoarss_ros/tools/``, imported only when it runs, so `endoarss --help` stays
fast and works without ROS. A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("endoarss_ros.tools.check.check",
              "Check the ROS 2 set-up: our messages and 1080p images between two processes"),
    "synth": ("endoarss_ros.tools.synth",
              "Write synthetic ESD frames: a dataset in the released layout, or a rosbag2 with ground truth"),
    "replay": ("endoarss_ros.tools.replay",
               "Offline inference over a rosbag2 (MCAP/sqlite3): masks, activity, summary, timeline, video"),
    "replay-many": ("endoarss_ros.tools.replay_many.replay_many",
                    "`endoarss replay` over an archive of recordings on Ray (embedded or a cluster), resumable, "
                    "with an aggregate"),
    "play": ("endoarss_ros.tools.play",
             "Publish a bag's messages live with their original timing (for machines without `ros2 bag`)"),
    "demo": ("endoarss_ros.tools.demo.demo",
             "The one-command demo: synthetic recording -> perception node -> live activity, metrics, outputs"),
    "info": ("endoarss_ros.tools.info",
             "Describe a weights file: architecture, classes, parameter counts and FLOPs per frame"),
    "train": ("endoarss_ros.tools.train",
              "Train EndoARSS (config file + overrides; DB-MTL/STCH/equal weighting; torchrun for many GPUs)"),
    "eval": ("endoarss_ros.tools.evaluation.eval",
             "Evaluate weights: activity accuracy/F1, segmentation IoU/Dice, optional robustness to corruptions"),
    "train-temporal": ("endoarss_ros.tools.train_temporal",
                       "Train the causal temporal activity model on labelled videos (cached frame features)"),
    "eval-temporal": ("endoarss_ros.tools.evaluation.eval_temporal",
                      "Score a temporal model vs frame-wise + EMA on test videos, streamed as the node runs"),
    "eval-status": ("endoarss_ros.tools.evaluation.eval_status",
                    "Measure the status and instrument outputs on held-out synthetic frames (see docs/)"),
    "bench": ("endoarss_ros.tools.bench.bench",
              "Benchmark the inference engine (per stage, end to end) against the naive released pipeline"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; only ``command``'s module is imported (all of them when None).

    Importing just the chosen subcommand keeps ``endoarss --help`` fast and lets one subcommand run
    while another one's dependencies (e.g. ROS for ``check``) are missing.
    """
    parser = argparse.ArgumentParser(
        prog="endoarss",
        description="EndoARSS surgical activity recognition and segmentation: tools around the ROS 2 node.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def _command(argv: list[str]) -> str | None:
    """The subcommand named in ``argv``: the first word that is one (options before it take no value)."""
    return next((a for a in argv if a in SUBCOMMANDS), None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = _command(argv)
    parser = build_parser(command) if command else build_parser("")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

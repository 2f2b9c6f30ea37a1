"""The `endoarss` command.

Each subcommand lives in the layer that owns its work and is imported only when it runs, so
`endoarss --help` stays fast and works without ROS. A subcommand module provides
``add_arguments(parser)`` and ``run(args) -> int``.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "check": ("endoarss_ros.ros.check",
              "Check the ROS 2 set-up: our messages and 1080p images between two processes"),
    "synth": ("endoarss_ros.bag.synth_cli",
              "Write synthetic ESD frames: a dataset in the released layout, or a rosbag2 with ground truth"),
    "replay": ("endoarss_ros.bag.replay_cli",
               "Offline inference over a rosbag2 (MCAP/sqlite3): masks, activity, summary, timeline, video"),
    "play": ("endoarss_ros.ros.bag_player",
             "Publish a bag's messages live with their original timing (for machines without `ros2 bag`)"),
    "demo": ("endoarss_ros.ros.demo",
             "The one-command demo: synthetic recording -> perception node -> live activity, metrics, outputs"),
    "info": ("endoarss_ros.model.info",
             "Describe a weights file: architecture, classes, parameter counts and FLOPs per frame"),
    "train": ("endoarss_ros.training.cli_train",
              "Train EndoARSS (config file + overrides; DB-MTL/STCH/equal weighting; torchrun for many GPUs)"),
    "eval": ("endoarss_ros.training.cli_eval",
             "Evaluate weights: activity accuracy/F1, segmentation IoU/Dice, optional robustness to corruptions"),
    "eval-status": ("endoarss_ros.inference.status_eval",
                    "Measure the status and instrument outputs on held-out synthetic frames (see docs/)"),
    "bench": ("endoarss_ros.inference.bench",
              "Benchmark the inference engine (per stage, end to end) against the naive released pipeline"),
}


def _ros_bench_measure():
    """What ``endoarss bench`` gets for its over-ROS measurement: the function where ROS 2 (rclpy) is
    installed, else the reason it is not (the inference layer never imports the ROS layer itself)."""
    import importlib.util

    if importlib.util.find_spec("rclpy") is None:
        return "ROS 2 (rclpy) is not available here"
    from endoarss_ros.ros.bench_ros import measure

    return measure


def _esd_scene(seed: int, H: int, W: int):
    """A synthetic endoscope frame (uint8 RGB) from the data layer, for ``endoarss bench --scene esd``."""
    from endoarss_ros.data.synth import generate_frame

    return generate_frame(seed, seed % 3, (H, W))[0]


# subcommand -> extra keyword arguments for its run(), wired here across layers
WIRING = {"bench": lambda: {"ros": _ros_bench_measure(), "scene_fn": _esd_scene}}


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
    extra = WIRING[args.command]() if args.command in WIRING else {}
    return int(importlib.import_module(args._module).run(args, **extra) or 0)


if __name__ == "__main__":
    sys.exit(main())

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
    "check": ("endoarss_ros.ros.check", "Check the ROS 2 set-up: our messages and 1080p images between two processes"),
    "info": (
        "endoarss_ros.model.info",
        "Describe a weights file: architecture, classes, parameter counts and FLOPs per frame",
    ),
    "bench": (
        "endoarss_ros.inference.bench",
        "Benchmark the inference engine (per stage, end to end) against the naive released pipeline",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="endoarss",
        description="EndoARSS surgical activity recognition and segmentation: tools around the ROS 2 node.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        importlib.import_module(module_name).add_arguments(p)
        p.set_defaults(_module=module_name)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())

"""`endoarss replay IN_BAG -o OUT_BAG`: offline inference over a rosbag2 recording (see ``replay.py``)."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from endoarss_ros.bag.replay import DEFAULT_MODEL, DEFAULT_NAMESPACE
from endoarss_ros.bag.replay_report import temporal_lines
from endoarss_ros.inference.smoother import DEFAULT_SMOOTHING


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN_BAG", help="rosbag2 folder (MCAP or sqlite3)")
    parser.add_argument("-o", "--output", metavar="OUT_BAG", required=True,
                        help="output bag folder (must not exist unless --overwrite)")
    add_recording_arguments(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_BAG (only once the new one is complete)")
    parser.add_argument("--video", type=Path, metavar="OUT.mp4", help="render the overlay video (mp4v)")
    parser.add_argument("--timeline", type=Path, metavar="PNG",
                        help="activity timeline plot (default OUT_BAG.timeline.png)")
    parser.add_argument("--summary", type=Path, metavar="JSON", help="summary file (default OUT_BAG.summary.json)")
    parser.add_argument("--json", action="store_true", help="print the summary JSON on stdout")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def add_recording_arguments(parser) -> None:
    """The options that mean the same for one recording or many (shared with `endoarss replay-many`)."""
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"weights file (default {DEFAULT_MODEL})")
    parser.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                        help="image topic to run on (repeatable); default: every Image/CompressedImage topic "
                             "except ground truth")
    parser.add_argument("--namespace", default=DEFAULT_NAMESPACE,
                        help=f"namespace of the output topics (default {DEFAULT_NAMESPACE})")
    parser.add_argument("--overlay", action="store_true", help="also write segmentation/overlay (rgb8)")
    parser.add_argument("--no-info", dest="info", action="store_false", help="do not write segmentation/info")
    parser.add_argument("--copy-input", action="store_true", help="copy the input images into the output bag")
    parser.add_argument("--batch", type=int, default=4, help="frames per forward pass (default 4)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "bf16"])
    parser.add_argument("--backend", default="eager")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for torch (default: torch's choice; 1 is faster on a busy machine)")
    parser.add_argument("--no-smoothing", dest="smoothing", action="store_false",
                        help="report each frame's own activity (no EMA / hysteresis)")
    parser.add_argument("--smoothing-alpha", type=float, default=DEFAULT_SMOOTHING.alpha,
                        help=f"EMA weight of the newest frame (default {DEFAULT_SMOOTHING.alpha})")
    parser.add_argument("--smoothing-hysteresis", type=float, default=DEFAULT_SMOOTHING.hysteresis,
                        help=f"margin a new activity needs to take over (default {DEFAULT_SMOOTHING.hysteresis})")
    parser.add_argument("--temporal-model", default="", metavar="PATH",
                        help="temporal activity model bound to --model (from `endoarss train-temporal`); "
                             "default: frame-wise activity with EMA smoothing")
    parser.add_argument("--overlay-alpha", type=float, default=0.5)
    parser.add_argument("--no-annotations", dest="annotate", action="store_false",
                        help="overlay and video without the instruments, activity, status and legend drawn on")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], help="output storage (default: the input's)")
    parser.add_argument("--no-timeline", action="store_true", help="no timeline plot")
    parser.add_argument("--stereo", metavar="LEFT:RIGHT", default=None, type=_stereo,
                        help="image topics of a stereo pair: paired by stamp, both views through the model, the "
                             "pair published once with the left camera's outputs, instruments in 3D (camera_info "
                             "from the sibling topics), markers on <ns>/instruments/markers")
    parser.add_argument("--stereo-tolerance-ms", type=float, default=0.0,
                        help="pair left/right frames whose stamps differ by at most this (default 0: exact)")


def recording_options(args) -> dict:
    """The ReplayOptions fields set by ``add_recording_arguments`` (plain values: they travel to other
    processes and into a summary's record of what it was made from)."""
    return dict(model=args.model, topics=args.topics, namespace=args.namespace, overlay=args.overlay,
                info=args.info, copy_input=args.copy_input, batch=args.batch, device=args.device,
                precision=args.precision, backend=args.backend, smoothing=args.smoothing,
                smoothing_alpha=args.smoothing_alpha, smoothing_hysteresis=args.smoothing_hysteresis,
                temporal_model=args.temporal_model, overlay_alpha=args.overlay_alpha, annotate=args.annotate,
                storage=args.storage, threads=args.threads, timeline="" if args.no_timeline else None,
                stereo=list(args.stereo) if args.stereo else None, stereo_tolerance_ms=args.stereo_tolerance_ms)


def _stereo(text: str):
    """``LEFT:RIGHT`` -> (left, right) topics (argparse's error on a malformed value)."""
    import argparse

    from endoarss_ros.bag.stereo_replay import parse_stereo

    try:
        return parse_stereo(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from e


def options_from_args(args):
    from endoarss_ros.bag.replay import ReplayOptions

    shared = recording_options(args)
    if args.timeline is not None and not args.no_timeline:
        shared["timeline"] = args.timeline
    return ReplayOptions(input=Path(args.input), output=Path(args.output), **shared, overwrite=args.overwrite,
                         video=args.video, summary=args.summary, progress=args.progress and sys.stderr.isatty())


def print_summary(summary: dict, file=None) -> None:
    file = sys.stdout if file is None else file  # looked up now: sys.stdout may have been replaced
    p = lambda *a: print(*a, file=file)  # noqa: E731
    tp = summary["throughput"]
    same = "==" if summary["frames_in_equals_out"] else "!="
    p(f"frames in {summary['frames_in']} {same} frames out {summary['frames_out']}"
      + (f" ({summary['frames_failed']} failed: could not be read or decoded)" if summary["frames_failed"] else ""))
    for f in summary["failed_frames"][:20]:
        p(f"  failed: {f['topic']} #{f['index']} stamp {f['stamp_ns']}: {f['reason']}: {f['error']}")
    if len(summary["failed_frames"]) > 20:
        p(f"  ... and {len(summary['failed_frames']) - 20} more (see the summary file)")
    p(f"throughput: {tp['frames_per_s']} frames/s overall, {tp['inference_frames_per_s']} frames/s in the model "
      f"({summary['device']}, {summary['backend']}); {tp['wall_s']} s incl. {tp['model_load_s']} s loading")
    for topic, segments in summary["activity_timeline"].items():
        p(f"activity timeline of {topic}:")
        for s in segments[:12]:
            p(f"  {s['start_s']:8.2f} - {s['end_s']:8.2f} s  {s['label']} ({s['frames']} frames)")
        if len(segments) > 12:
            p(f"  ... {len(segments) - 12} more segments")
    for topic, st in summary.get("status", {}).items():
        flags = ", ".join(f"{name.lower()} {n}" for name, n in st["flags"].items() if n)
        p(f"status of {topic}: {st['usable']} of {st['frames']} frames usable"
          + (f" ({st['usable_fraction']:.1%})" if st["usable_fraction"] is not None else "")
          + (f"; flags: {flags}" if flags else ""))
    for topic, tr in summary.get("instruments", {}).items():
        per_class = ", ".join(f"{label} {c['tracks']}" for label, c in tr["per_class"].items())
        p(f"instruments of {topic}: {tr['tracks']} tracks" + (f" ({per_class})" if per_class else "")
          + f", {tr['instances_per_frame']} per frame")
    for line in temporal_lines(summary.get("temporal")):
        p(line)
    gt = summary.get("ground_truth")
    if gt:
        parts = []
        if gt.get("activity_accuracy") is not None:
            parts.append(f"activity accuracy {gt['activity_accuracy']:.1%} ({gt['frames_with_activity']} frames)")
        if gt.get("miou_foreground") is not None:
            parts.append(f"foreground mIoU {gt['miou_foreground']:.1%} ({gt['frames_with_mask']} masks)")
        p("against ground truth: " + ", ".join(parts))
        for key, r in (gt.get("by_status") or {}).items():
            if r.get("frames_with_activity"):
                miou = r.get("miou_foreground")
                p(f"  {key} frames: activity accuracy {r['activity_accuracy']:.1%} ({r['frames_with_activity']} frames)"
                  + (f", foreground mIoU {miou:.1%}" if miou is not None else ""))
    files = summary["files"]
    p(f"wrote {files['bag']} ({summary['storage']}), summary {files['summary']}"
      + (f", timeline {files['timeline']}" if files.get("timeline") else "")
      + (f", video {files['video']}" if files.get("video") else ""))


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def run(args) -> int:
    from endoarss_ros.bag.partials import InterruptedAfterCommit
    from endoarss_ros.bag.reader import BagError
    from endoarss_ros.bag.replay import replay
    from endoarss_ros.bag.writer import OutputError
    from endoarss_ros.inference.temporal_activity import TemporalModelError

    previous = signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # so a kill cleans up like Ctrl-C
    try:
        summary = replay(options_from_args(args))
    except (BagError, OutputError, OSError, TemporalModelError) as e:
        print(f"endoarss replay: error: {e}", file=sys.stderr)
        return 2
    except InterruptedAfterCommit as e:  # the signal came while the finished outputs were being put in place
        print(f"endoarss replay: interrupted after the outputs were complete; kept {', '.join(map(str, e.files))}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("endoarss replay: interrupted; nothing was written (no output bag, summary, timeline or video)",
              file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_summary(summary)
    return 0 if summary["frames_out"] > 0 else 1

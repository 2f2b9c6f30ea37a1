"""`endoarss demo`: the whole system in one command, no robot or GPU needed.

1. generate (or reuse) a synthetic surgical recording with ground truth: ``<out>/recording/`` (MCAP);
2. start the perception node (``endoarss-perception``, namespace ``/endoarss``) with the demo weights and wait
   until it is active;
3. listen to ``/endoarss/activity`` (printed as it arrives), ``/endoarss/segmentation/mask`` and ``/diagnostics``;
4. play the recording into the node with ``endoarss play`` (a separate process, best-effort like a camera);
5. score what came back against the recording's ground truth, matched by stamp;
6. run the offline replay over the whole recording: ``<out>/endoarss_output_bag/``, ``timeline.png``,
   ``overlay.mp4``;
   the node and the replay use the committed demo temporal model (``--temporal-model``; ``--no-temporal``:
   frame-wise + EMA); the summary compares its published labels with frame-wise + EMA on the same frames;
7. print a summary and write ``<out>/summary.json``. Exit status 1 when the node produced nothing.

Live, the node keeps only the newest frame: on a CPU it processes fewer frames than the recording has; the
summary reports frames published, received, processed and dropped. The offline replay processes every frame.
"""
from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path
from endoarss_ros.tools.demo.demo_live import LiveRun
from endoarss_ros.tools.demo.demo_recording import ensure_recording
from endoarss_ros.tools.demo.demo_report import output_files, print_summary

DEFAULT_TEMPORAL_MODEL = "models/demo/endoarss_demo_temporal.safetensors"  # bound to DEFAULT_MODEL
QUICK = {"seconds": 30.0, "fps": 2.0, "size": "320x256"}


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=120.0,
                        help="length of the synthetic procedure (default 120 s: all three activities)")
    parser.add_argument("--fps", type=float, default=4.0, help="frame rate of the recording (default 4)")
    parser.add_argument("--size", default="320x256", metavar="WxH", help="frame size (default 320x256)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"weights (default {DEFAULT_MODEL})")
    parser.add_argument("--temporal-model", default=DEFAULT_TEMPORAL_MODEL, metavar="PATH",
                        help=f"temporal activity model bound to --model, used by the node and the replay "
                             f"(default {DEFAULT_TEMPORAL_MODEL})")
    parser.add_argument("--no-temporal", action="store_true",
                        help="no temporal model: frame-wise activity + EMA only")
    parser.add_argument("--device", default="auto", help="inference device of the node and the replay")
    parser.add_argument("--rate", type=float, default=4.0,
                        help="playback speed of the recording (default 4: its time runs 4x faster; the node runs "
                             "on the recording's clock)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a few seconds for CI: {QUICK['seconds']:g} s at {QUICK['fps']:g} fps, {QUICK['size']}")
    parser.add_argument("--no-video", action="store_true", help="skip the overlay video")
    parser.add_argument("--node-timeout", type=float, default=180.0,
                        help="seconds to wait for the node to become active (model loading)")
    parser.add_argument("--quiet", action="store_true", help="do not print each activity message")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of the offline replay (default 1: OpenMP threads fighting for "
                             "busy cores are many times slower; 0: torch's default)")


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' (W x H) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size expects WIDTHxHEIGHT, e.g. 640x512, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--size must be positive, got {text!r}")
    return h, w


def run_offline(out: Path, recording: Path, *, model: str, device: str, video: bool, threads: int = 1,
                temporal_model: str = "", log=print) -> dict:
    from endoarss_ros.bag.replay import ReplayOptions, replay

    log("offline replay of every frame (writes the output bag, timeline and overlay video) ...")
    opts = ReplayOptions(input=recording, output=out / "endoarss_output_bag", model=model, device=device,
                         overwrite=True, timeline=out / "timeline.png", summary=out / "replay_summary.json",
                         video=(out / "overlay.mp4") if video else None, progress=sys.stderr.isatty(),
                         threads=threads, temporal_model=temporal_model)
    return replay(opts)


def _settings(args) -> tuple[float, float, tuple[int, int]]:
    """(seconds, fps, (H, W)) of the recording; ``--quick`` overrides the three."""
    if args.quick:
        return QUICK["seconds"], QUICK["fps"], parse_size(QUICK["size"])
    return args.seconds, args.fps, parse_size(args.size)


def _run_steps(args, out: Path, model: Path, temporal: str, summary: dict, log) -> None:
    seconds, fps, size = _settings(args)
    recording, record, reused = ensure_recording(out, seconds=seconds, fps=fps, size=size, log=log)
    if reused:
        log(f"reusing the recording {recording} ({record['frames']} frames)")
    summary["recording"] = dict(record, path=str(recording), reused=reused)
    summary["temporal_model"] = temporal or None
    summary["live"] = LiveRun(out, recording, record, model=str(model), device=args.device, rate=args.rate,
                              size=size, node_timeout=args.node_timeout, quiet=args.quiet, log=log,
                              temporal_model=temporal).run()
    summary["ok"] = summary["live"]["activity_messages_received"] > 0
    offline = run_offline(out, recording, model=str(model), device=args.device, video=not args.no_video,
                          threads=args.threads, temporal_model=temporal, log=log)
    summary["offline"] = {k: offline[k] for k in ("frames_in", "frames_out", "frames_in_equals_out",
                                                    "frames_failed", "throughput", "ground_truth",
                                                    "activity_timeline", "pixel_fractions", "device",
                                                    "temporal")}
    summary["offline"]["status"] = next(iter(offline["status"].values()), None)
    summary["offline"]["instruments"] = next(iter(offline["instruments"].values()), None)


def run(args) -> int:
    """``endoarss demo``: exit 0 when the node answered, 1 when it produced nothing or a step failed,
    2 for bad arguments, 130 when interrupted."""
    t0 = time.monotonic()
    from endoarss_ros.ros import fastdds

    fastdds.apply_profile()  # before rclpy.init (in the live run)
    try:
        _settings(args)
    except ValueError as e:
        print(f"endoarss demo: error: {e}", file=sys.stderr)
        return 2
    model = resolve_model_path(args.model)  # the committed weights also when run from elsewhere
    if not model.is_file():
        print(f"endoarss demo: error: model {model} not found (the demo weights are committed as "
              f"{DEFAULT_MODEL}; give --model PATH)", file=sys.stderr)
        return 2
    temporal = "" if args.no_temporal else str(resolve_model_path(args.temporal_model))
    if temporal and not Path(temporal).is_file():
        print(f"endoarss demo: error: temporal model {temporal} not found (the demo's is committed as "
              f"{DEFAULT_TEMPORAL_MODEL}; give --temporal-model PATH or --no-temporal)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(*a):
        print("demo:", *a, flush=True)

    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    summary: dict = {"ok": False}
    try:
        _run_steps(args, out, model, temporal, summary, log)
    except KeyboardInterrupt:
        print("endoarss demo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the demo reports what went wrong and fails
        print(f"endoarss demo: error: {type(e).__name__}: {e}", file=sys.stderr)
        summary["error"] = f"{type(e).__name__}: {e}"
        summary["ok"] = False
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary["runtime_s"] = round(time.monotonic() - t0, 2)
    summary["files"] = output_files(out, offline="offline" in summary, video=not args.no_video)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if "live" in summary:
        print_summary(summary)
    return 0 if summary["ok"] and "error" not in summary else 1

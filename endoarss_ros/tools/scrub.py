"""`endoarss scrub IN_BAG -o OUT_BAG`: a de-identified copy of a recording (see ``bag/scrub.py``)."""
from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

from endoarss_ros.inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL, OutOfBodySettings


def add_arguments(parser) -> None:
    parser.add_argument("input", metavar="IN_BAG", help="rosbag2 folder (MCAP or sqlite3)")
    parser.add_argument("-o", "--output", metavar="OUT_BAG", required=True,
                        help="output bag folder (must not exist unless --overwrite)")
    parser.add_argument("--topic", action="append", dest="topics", metavar="TOPIC",
                        help="camera topic to gate (repeatable); default: every Image/CompressedImage topic "
                             "except ground truth and our own outputs")
    parser.add_argument("--drop", action="store_true", help="leave out-of-body frames out instead of blanking them")
    parser.add_argument("--model", default=DEFAULT_OUT_OF_BODY_MODEL,
                        help=f"out-of-body detector weights (default {DEFAULT_OUT_OF_BODY_MODEL})")
    parser.add_argument("--threshold", type=float, default=OutOfBodySettings.threshold,
                        help="P(out of body) at or over which a frame enters the state (default %(default)s)")
    parser.add_argument("--exit-frames", type=int, default=OutOfBodySettings.exit_frames,
                        help="in-body frames in a row needed to leave (default %(default)s)")
    parser.add_argument("--storage", choices=["mcap", "sqlite3"], help="output storage (default: the input's)")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT_BAG (only once the new one is complete)")
    parser.add_argument("--report", type=Path, metavar="JSON", help="report file (default OUT_BAG.scrub.json)")
    parser.add_argument("--json", action="store_true", help="print the report JSON on stdout")


def print_report(report: dict, file=None) -> None:
    file = sys.stdout if file is None else file
    verb = "dropped" if report["mode"] == "drop" else "blanked"
    for topic, t in report["camera_topics"].items():
        gone = t["dropped"] + t["blanked"]
        print(f"{topic}: {t['frames']} frames, {t['passed']} passed, {gone} {verb}"
              f" ({t['out_of_body_frames']} out of body, {t['undecided_undecodable']} undecodable)"
              + (f", {t['damaged_left_out']} damaged left out" if t["damaged_left_out"] else ""), file=file)
        for i in t["removed_intervals"]:
            print(f"  removed {i['start_s']:.3f} - {i['end_s']:.3f} s ({i['frames']} frames)", file=file)
    copied = sum(report["copied_topics"].values())
    print(f"other messages copied byte for byte: {copied} on {len(report['copied_topics'])} topics", file=file)
    if report["image_topics_not_gated"]:
        print(f"warning: image topics copied WITHOUT gating: {', '.join(report['image_topics_not_gated'])}",
              file=file)
    print(f"wrote {report['files']['bag']} ({report['storage']}), report {report['files']['report']}", file=file)


def run(args) -> int:
    from endoarss_ros.bag.partials import InterruptedAfterCommit
    from endoarss_ros.bag.reader import BagError
    from endoarss_ros.bag.scrub import ScrubOptions, scrub
    from endoarss_ros.bag.writer import OutputError
    from endoarss_ros.inference.out_of_body import OutOfBodyModelError

    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        opts = ScrubOptions(input=Path(args.input), output=Path(args.output), topics=args.topics, drop=args.drop,
                            model=args.model, threshold=args.threshold, exit_frames=args.exit_frames,
                            storage=args.storage, overwrite=args.overwrite, report=args.report)
        report = scrub(opts)
    except (BagError, OutputError, OSError, OutOfBodyModelError, ValueError) as e:
        print(f"endoarss scrub: error: {e}", file=sys.stderr)
        return 2
    except InterruptedAfterCommit as e:
        print(f"endoarss scrub: interrupted after the outputs were complete; kept {', '.join(map(str, e.files))}",
              file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("endoarss scrub: interrupted; nothing was written", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report)
    return 0

"""``endoarss synth``: write a synthetic dataset (released layout, the data layer) or a synthetic rosbag2.

In the bag layer because the bag mode needs it; the bag layer may use the data layer, not the other way round.
"""
from __future__ import annotations

import argparse
import sys


def _size_wh(text: str) -> tuple[int, int]:
    """'224' or 'WxH' -> (H, W)."""
    try:
        if "x" in text.lower():
            w, h = (int(v) for v in text.lower().split("x"))
        else:
            w = h = int(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"size must be N or WxH, got {text!r}") from e
    if w < 16 or h < 16:
        raise argparse.ArgumentTypeError("size must be at least 16 pixels")
    return h, w


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="synth_mode", metavar="MODE", required=True)

    ds = sub.add_parser("dataset", help="Frames with masks and activity labels in the released MTLESD layout")
    ds.add_argument("out_dir", help="dataset root to create (root/{train,val,test}/{k}/{image,mask}/*.png)")
    ds.add_argument("--train", type=int, default=300, help="training frames (default 300)")
    ds.add_argument("--val", type=int, default=60, help="validation frames (default 60)")
    ds.add_argument("--test", type=int, default=60, help="test frames (default 60)")
    ds.add_argument("--size", type=_size_wh, default=(224, 224), help="N or WxH (default 224)")
    ds.add_argument("--seed", type=int, default=0)
    ds.add_argument("--layout", choices=("released", "generic"), default="released",
                    help="released: root/split/k/{image,mask}; generic: root/split/{images,masks,labels.csv}")

    bag = sub.add_parser("bag", help="A temporally coherent sequence as a rosbag2 with ground-truth topics")
    bag.add_argument("out_bag", help="bag directory to create (must not exist)")
    bag.add_argument("--seconds", type=float, default=10.0)
    bag.add_argument("--fps", type=float, default=30.0)
    bag.add_argument("--size", type=_size_wh, default=(1024, 1280), help="WxH (default 1280x1024)")
    bag.add_argument("--encoding", choices=("rgb8", "bgr8", "jpeg", "png"), default="rgb8")
    bag.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    bag.add_argument("--seed", type=int, default=0)

    _add_stereo_arguments(sub.add_parser(
        "stereo", help="A stereo endoscope recording (left/right images, camera_info, masks) with 3D ground truth"))
    _add_procedure_arguments(sub.add_parser(
        "procedures", help="Whole ESD procedures (minutes, one scene, recurrences, ambiguous intervals): "
                           "videos with NAME-phase.txt, or bags"))


def _pair(text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"expected LO,HI, got {text!r}") from e
    if not 0 < lo <= hi:
        raise argparse.ArgumentTypeError(f"expected 0 < LO <= HI, got {text!r}")
    return lo, hi


def _add_procedure_arguments(p: argparse.ArgumentParser) -> None:
    from endoarss_ros.data.procedures import AMBIGUITY_KINDS, ProcedureSettings

    d = ProcedureSettings()
    p.add_argument("out_dir", help="folder to write (video: NAME.mp4 + NAME-phase.txt; bag: one bag per procedure)")
    p.add_argument("--count", type=int, default=4, help="procedures (default 4)")
    p.add_argument("--minutes", type=float, default=d.minutes, help=f"length of each (default {d.minutes:g})")
    p.add_argument("--fps", type=float, default=d.fps, help=f"frames per second (default {d.fps:g})")
    p.add_argument("--size", type=_size_wh, default=d.size, help="WxH (default 224x180)")
    p.add_argument("--seed", type=int, default=0, help="procedure k uses seed (SEED, k): other seeds, other sets")
    p.add_argument("--format", choices=("video", "bag"), default="video")
    p.add_argument("--shares", type=lambda t: tuple(float(v) for v in t.split(",")), default=d.shares,
                   help="time shares of marking,incision,dissection (default %(default)s)")
    p.add_argument("--returns", type=float, default=d.returns,
                   help="expected returns to incision during dissection (at least one; default %(default)s)")
    p.add_argument("--return-seconds", type=_pair, default=d.return_seconds, help="LO,HI (default %(default)s)")
    p.add_argument("--ambiguity-rate", type=float, default=d.ambiguity_rate,
                   help="fraction of the time in ambiguous intervals (default %(default)s)")
    p.add_argument("--ambiguity-seconds", type=_pair, default=d.ambiguity_seconds,
                   help="LO,HI length of one ambiguous interval (default %(default)s)")
    p.add_argument("--ambiguity-kinds", nargs="+", choices=AMBIGUITY_KINDS, default=list(AMBIGUITY_KINDS))


def _add_stereo_arguments(p: argparse.ArgumentParser) -> None:
    from endoarss_ros.data.stereo_scene import StereoRigSpec, StereoSceneSettings

    rig, scene = StereoRigSpec(), StereoSceneSettings()
    p.add_argument("out_bag", help="bag directory to create (must not exist); 3D truth in its stereo_ground_truth.json")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--fps", type=float, default=15.0)
    p.add_argument("--size", type=_size_wh, default=(rig.height, rig.width), help="WxH (default 1280x1024)")
    p.add_argument("--focal", type=float, default=rig.focal_px, help="focal length, pixels at the full size "
                                                                     "(default %(default)g, scaled with --size)")
    p.add_argument("--baseline-mm", type=float, default=rig.baseline_m * 1000, help="default %(default)g")
    p.add_argument("--depth-mm", type=_pair, default=tuple(d * 1000 for d in scene.depth_range_m),
                   help="LO,HI tissue depth (default 50,120)")
    p.add_argument("--encoding", choices=("rgb8", "bgr8", "jpeg", "png"), default="rgb8")
    p.add_argument("--storage", choices=("mcap", "sqlite3"), default="mcap")
    p.add_argument("--seed", type=int, default=0)


def _write_stereo(args: argparse.Namespace) -> int:
    from endoarss_ros.bag.stereo_bag import write_stereo_bag
    from endoarss_ros.data.stereo_scene import StereoRigSpec, StereoSceneSettings

    h, w = args.size
    focal = args.focal * w / StereoRigSpec().width
    settings = StereoSceneSettings(rig=StereoRigSpec(w, h, focal, args.baseline_mm / 1000),
                                   depth_range_m=(args.depth_mm[0] / 1000, args.depth_mm[1] / 1000))
    info = write_stereo_bag(args.out_bag, seconds=args.seconds, fps=args.fps, settings=settings,
                            encoding=args.encoding, storage=args.storage, seed=args.seed,
                            progress=sys.stderr.isatty())
    print(f"wrote {info.path}: {info.frames} stereo pairs, {w}x{h}, f {focal:.1f} px, baseline "
          f"{info.baseline_m * 1000:g} mm, tissue at {args.depth_mm[0]:g}-{args.depth_mm[1]:g} mm")
    for topic, n in info.topics.items():
        print(f"  {topic}: {n} messages")
    print(f"  3D ground truth: {info.truth}")
    return 0


def _write_procedures(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure, write_procedure_videos

    try:
        settings = ProcedureSettings(
            minutes=args.minutes, fps=args.fps, size=args.size, shares=args.shares, returns=args.returns,
            return_seconds=args.return_seconds, ambiguity_rate=args.ambiguity_rate,
            ambiguity_seconds=args.ambiguity_seconds, ambiguity_kinds=tuple(args.ambiguity_kinds))
    except ValueError as e:
        print(f"endoarss synth procedures: {e}", file=sys.stderr)
        return 2
    bar = None if sys.stderr.isatty() else False
    progress = (lambda it, **kw: tqdm(it, unit="frame", leave=False, **kw)) if bar is None else None
    if args.format == "video":
        paths = write_procedure_videos(args.out_dir, args.count, settings, args.seed, progress=progress)
    else:
        from endoarss_ros.bag.synth_bag import write_procedure_bag

        Path(args.out_dir).mkdir(parents=True, exist_ok=True)
        paths = []
        for k in range(args.count):
            name, proc = numbered_procedure(args.seed, k, settings)
            paths.append(write_procedure_bag(Path(args.out_dir) / name, proc, progress=bar is None).path)
    h, w = settings.size
    print(f"{args.out_dir}: {len(paths)} procedures of {settings.minutes:g} min, {w}x{h} at {settings.fps:g} fps"
          f" ({args.format})")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.synth_mode == "procedures":
        return _write_procedures(args)
    if args.synth_mode == "stereo":
        return _write_stereo(args)
    if args.synth_mode == "dataset":
        from endoarss_ros.data.layout import write_synthetic_dataset

        counts = {"train": args.train, "val": args.val, "test": args.test}
        written = write_synthetic_dataset(args.out_dir, counts, size=args.size, seed=args.seed,
                                          layout=args.layout, progress=sys.stderr.isatty())
        h, w = args.size
        for split, n in written.items():
            print(f"{args.out_dir}/{split}: {n} frames ({w}x{h}, {args.layout} layout)")
        print(f"{args.out_dir}/classes.yaml")
        return 0

    from endoarss_ros.bag.synth_bag import write_synth_bag

    info = write_synth_bag(args.out_bag, seconds=args.seconds, fps=args.fps, size=args.size,
                           encoding=args.encoding, storage=args.storage, seed=args.seed,
                           progress=sys.stderr.isatty())  # tqdm's \r updates only on a terminal, not into logs
    h, w = info.size
    print(f"wrote {info.path} ({info.storage}): {info.frames} frames, {w}x{h} {info.encoding}"
          f" at {info.fps:g} fps")
    for topic, n in info.topics.items():
        print(f"  {topic}: {n} messages")
    return 0

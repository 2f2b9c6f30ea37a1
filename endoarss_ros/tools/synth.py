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


def run(args: argparse.Namespace) -> int:
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

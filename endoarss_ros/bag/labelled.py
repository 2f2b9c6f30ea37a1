"""Recordings with a ground-truth activity topic (``endoarss synth bag`` / ``synth procedures --format bag``) as
labelled videos for the temporal model's feature extraction (``temporal_features``)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from ..data.phase_layout import UNLABELLED, PhaseLayoutError
from .feature_cache import FailedFrame, LabelledVideo
from .reader import BagError, BagReader, GroundTruthCollector, resolve_bag_path


def is_bag(path: str | Path) -> bool:
    return (Path(path) / "metadata.yaml").is_file()


def bag_activity_labels(path: Path, activity_classes: Sequence[str]) -> tuple[str, dict[int, int]]:
    """(image topic, header stamp ns -> model class id) of a bag; its class names must be the model's."""
    with BagReader(path) as bag:
        topic = bag.image_topics()[0]
        _, activity_topic = bag.ground_truth_topics()
        if activity_topic is None:
            raise BagError(f"bag {path}: no ground-truth activity topic (a topic with 'ground_truth' in its name "
                           "of type endoarss_ros/msg/Activity)")
        collector = GroundTruthCollector(bag, None, activity_topic)
        for conn, timestamp, rawdata in bag.messages([activity_topic], damaged="skip"):
            collector(conn, timestamp, rawdata)
    gt = collector.gt
    index = {}
    for i, name in enumerate(gt.activity_names):
        if name not in activity_classes:
            raise PhaseLayoutError(f"bag {path}: ground-truth activity {name!r} is not one of the model's "
                                   f"activity classes ({', '.join(activity_classes)})")
        index[i] = list(activity_classes).index(name)
    return topic, {stamp: index.get(c, UNLABELLED) for stamp, c in gt.activities.items()}


def labelled_bag(path: str | Path, activity_classes: Sequence[str]) -> LabelledVideo:
    path = resolve_bag_path(path)
    topic, labels = bag_activity_labels(path, activity_classes)

    def frames() -> Iterator:
        first = None
        with BagReader(path) as bag:
            for f in bag.frames([topic]):
                first = f.stamp if first is None else first
                if f.frame is None:  # undecodable: counted by reason; the stamp's tick gets no frame (a gap)
                    yield (f.stamp - first) / 1e9, FailedFrame(f.reason), labels.get(f.stamp, UNLABELLED)
                    continue
                yield (f.stamp - first) / 1e9, f.frame, labels.get(f.stamp, UNLABELLED)

    files = tuple(sorted(p for p in path.iterdir() if p.is_file()))
    return LabelledVideo(path.name, files, frames, len(labels) or None)


def labelled_sources(root: str | Path, activity_classes: Sequence[str]) -> list[LabelledVideo]:
    """A bag, a folder of bags, or a video + phase layout folder."""
    from .feature_cache import layout_videos

    root = Path(root)
    if is_bag(root):
        return [labelled_bag(root, activity_classes)]
    if root.is_dir():
        bags = sorted(p for p in root.iterdir() if p.is_dir() and is_bag(p))
        if bags:
            return [labelled_bag(b, activity_classes) for b in bags]
    return layout_videos(root, activity_classes)

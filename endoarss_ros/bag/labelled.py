"""Labelled videos for the temporal model's feature extraction (``feature_cache``): the types (``LabelledVideo``,
``FailedFrame``) and their sources: recordings with a ground-truth activity topic (``endoarss synth bag`` /
``synth procedures --format bag``) and video + phase layout folders."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.phase_layout import UNLABELLED, PhaseLayoutError, VideoEntry, find_videos, read_phase_file, read_video
from ..inference.frames import RawFrame
from .reader import BagError, BagReader, GroundTruthCollector, resolve_bag_path


@dataclass(frozen=True)
class LabelledVideo:
    """A video with per-frame labels. ``frames()`` yields (stamp seconds, ``RawFrame``, label or UNLABELLED), or
    (stamp, ``FailedFrame``, label) for a frame that could not be decoded (counted, not extracted);
    ``files`` define its content (fingerprint); ``count``: frames, when known (progress)."""

    name: str
    files: tuple[Path, ...]
    frames: Callable[[], Iterator[tuple[float, RawFrame, int]]]
    count: int | None = None


@dataclass(frozen=True)
class FailedFrame:
    """A frame the source could not decode; ``reason`` as ``endoarss replay`` reports it (``BagFrame.reason``)."""

    reason: str


def layout_videos(root: str | Path, activity_classes: Sequence[str]) -> list[LabelledVideo]:
    """The videos of a video + phase layout folder (labels read and checked now, so errors come first)."""
    out = []
    for entry in find_videos(root):
        labels = read_phase_file(entry.phases, activity_classes)
        out.append(LabelledVideo(entry.name, (entry.video, entry.phases), _video_frames(entry, labels),
                                 max(labels) + 1 if labels else None))
    return out


def _video_frames(entry: VideoEntry, labels: dict[int, int]):
    def frames() -> Iterator[tuple[float, RawFrame, int]]:
        for index, stamp, rgb in read_video(entry.video):
            yield stamp, RawFrame(rgb, "rgb8"), labels.get(index, UNLABELLED)
    return frames


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
    root = Path(root)
    if is_bag(root):
        return [labelled_bag(root, activity_classes)]
    if root.is_dir():
        bags = sorted(p for p in root.iterdir() if p.is_dir() and is_bag(p))
        if bags:
            return [labelled_bag(b, activity_classes) for b in bags]
    return layout_videos(root, activity_classes)

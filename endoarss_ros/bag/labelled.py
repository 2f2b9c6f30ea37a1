"""Labelled videos for the temporal model's feature extraction (``feature_cache``): the types (``LabelledVideo``,
``FailedFrame``) and their sources: recordings with a ground-truth activity topic (``endoarss synth bag`` /
``synth procedures --format bag``) and folders of labelled videos in the layouts of ``data.video_layouts``
(Cholec80, AutoLaparo, M2CAI16, ours)."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.phase_layout import UNLABELLED, PhaseLayoutError
from ..data.video_layouts import find_labelled_videos, read_frames
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
    variant: str = ""  # what else decides the frames and labels (label and sample rates): part of the cache key


@dataclass(frozen=True)
class FailedFrame:
    """A frame the source could not decode; ``reason`` as ``endoarss replay`` reports it (``BagFrame.reason``)."""

    reason: str


def layout_videos(root: str | Path, activity_classes: Sequence[str], *, label_fps: float | None = None,
                  sample_fps: float | None = None) -> list[LabelledVideo]:
    """The videos of a labelled-video folder in any layout of ``data.video_layouts`` (Cholec80, AutoLaparo,
    M2CAI16, ours), labels aligned by time (``label_fps``: None for the layout's rate), read at ``sample_fps``
    (None: every frame). Labels are read and checked now, so errors come first."""
    out = []
    for video in find_labelled_videos(root, activity_classes, label_fps):
        count = video.frame_count or None
        if count and sample_fps:
            count = math.ceil(count / video.fps * sample_fps)
        variant = f"label_fps={video.labels.label_fps:g};sample_fps={sample_fps or 0:g}"
        out.append(LabelledVideo(video.name, video.files, _video_frames(video, sample_fps), count, variant))
    return out


def _video_frames(video, sample_fps: float | None):
    def frames() -> Iterator[tuple[float, RawFrame, int]]:
        for stamp, rgb, label in read_frames(video, sample_fps):
            yield stamp, (RawFrame(rgb, "rgb8") if rgb is not None else FailedFrame("undecodable_video_frame")), label
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


def labelled_bag(path: str | Path, activity_classes: Sequence[str], sample_fps: float | None = None) -> LabelledVideo:
    """A bag's frames, labelled by stamp; ``sample_fps``: only the first frame at or after each 1 / sample_fps
    step of stamp time goes on (the others are never given to the frame model)."""
    path = resolve_bag_path(path)
    topic, labels = bag_activity_labels(path, activity_classes)
    step_ns = round(1e9 / sample_fps) if sample_fps else 0

    def frames() -> Iterator:
        first, next_ns = None, 0
        with BagReader(path) as bag:
            for f in bag.frames([topic]):
                first = f.stamp if first is None else first
                if step_ns:
                    if f.stamp - first < next_ns:
                        continue
                    next_ns = ((f.stamp - first) // step_ns + 1) * step_ns
                if f.frame is None:  # undecodable: counted by reason; the stamp's tick gets no frame (a gap)
                    yield (f.stamp - first) / 1e9, FailedFrame(f.reason), labels.get(f.stamp, UNLABELLED)
                    continue
                yield (f.stamp - first) / 1e9, f.frame, labels.get(f.stamp, UNLABELLED)

    files = tuple(sorted(p for p in path.iterdir() if p.is_file()))
    return LabelledVideo(path.name, files, frames, len(labels) or None, f"sample_fps={sample_fps or 0:g}"
                         if sample_fps else "")


def labelled_sources(root: str | Path, activity_classes: Sequence[str], *, label_fps: float | None = None,
                     sample_fps: float | None = None) -> list[LabelledVideo]:
    """A bag, a folder of bags, or a folder of labelled videos in one of ``data.video_layouts``' layouts
    (Cholec80, AutoLaparo, M2CAI16 or ours). ``label_fps`` (videos only: bags are labelled by stamp) and
    ``sample_fps`` as ``layout_videos`` takes them."""
    root = Path(root)
    bags = [root] if is_bag(root) else (sorted(p for p in root.iterdir() if p.is_dir() and is_bag(p))
                                        if root.is_dir() else [])
    if bags:
        if label_fps is not None:
            raise PhaseLayoutError(f"{root}: --label-fps is for video layouts; a bag's labels are matched to its "
                                   "frames by stamp")
        return [labelled_bag(b, activity_classes, sample_fps) for b in bags]
    return layout_videos(root, activity_classes, label_fps=label_fps, sample_fps=sample_fps)

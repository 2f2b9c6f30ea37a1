"""The video + phase layout (the Cholec80 convention): a folder of ``NAME.mp4`` (any video OpenCV reads) with
``NAME-phase.txt`` beside each, a header line ``Frame<TAB>Phase`` and then ``FRAME_INDEX<TAB>PHASE_NAME`` lines,
for every frame or a subset (frames not listed are unlabelled).

Phase names are the model's activity class names; matching ignores case, spaces, ``_`` and ``-``
(``CircumferentialIncision`` names ``Circumferential Incision``). An unknown name, a malformed line, a video
without its phase file (or the other way round) is a ``PhaseLayoutError`` naming the file and the line.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

PHASE_SUFFIX = "-phase.txt"
PHASE_HEADER = ("Frame", "Phase")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".mov", ".m4v", ".mpg", ".mpeg", ".webm")
UNLABELLED = -1


class PhaseLayoutError(ValueError):
    """A folder, video or phase file that does not follow the layout; the message names the file (and line)."""


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def read_phase_file(path: str | Path, activity_classes: Sequence[str]) -> dict[int, int]:
    """Frame index -> activity class id, from a ``NAME-phase.txt``."""
    path = Path(path)
    known = {_key(n): i for i, n in enumerate(activity_classes)}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PhaseLayoutError(f"{path}: cannot read the phase file ({e})") from e
    if not lines or tuple(c.strip() for c in lines[0].split("\t")) != PHASE_HEADER:
        raise PhaseLayoutError(f"{path}:1: the header must be 'Frame<TAB>Phase', got {lines[0] if lines else ''!r}")
    labels: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0].strip().isdigit():
            raise PhaseLayoutError(f"{path}:{number}: expected FRAME_INDEX<TAB>PHASE_NAME, got {line!r}")
        index, phase = int(parts[0]), parts[1].strip()
        if _key(phase) not in known:
            raise PhaseLayoutError(f"{path}:{number}: unknown phase {phase!r}; the model's activity classes are "
                                   f"{', '.join(activity_classes)}")
        if index in labels:
            raise PhaseLayoutError(f"{path}:{number}: frame {index} is listed twice")
        labels[index] = known[_key(phase)]
    return labels


def write_phase_file(path: str | Path, labels: Sequence[int], activity_classes: Sequence[str]) -> Path:
    """Write one line per labelled frame (``UNLABELLED`` entries are left out)."""
    path = Path(path)
    rows = ["\t".join(PHASE_HEADER)]
    rows += [f"{i}\t{activity_classes[a]}" for i, a in enumerate(labels) if a != UNLABELLED]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@dataclass(frozen=True)
class VideoEntry:
    name: str
    video: Path
    phases: Path


def find_videos(root: str | Path) -> list[VideoEntry]:
    """Every video of a layout folder with its phase file, by name."""
    root = Path(root)
    if not root.is_dir():
        raise PhaseLayoutError(f"{root}: not a folder of videos with phase files")
    videos = sorted(p for p in root.iterdir() if p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file())
    entries = []
    for video in videos:
        phases = video.with_name(video.stem + PHASE_SUFFIX)
        if not phases.is_file():
            raise PhaseLayoutError(f"{video}: no phase file {phases.name} beside it")
        entries.append(VideoEntry(video.stem, video, phases))
    stems = {v.stem for v in videos}
    for phases in sorted(root.glob("*" + PHASE_SUFFIX)):
        if phases.name[: -len(PHASE_SUFFIX)] not in stems:
            raise PhaseLayoutError(f"{phases}: no video {phases.name[: -len(PHASE_SUFFIX)]}.mp4 (or another "
                                   f"{'/'.join(VIDEO_EXTENSIONS)}) beside it")
    if not entries:
        raise PhaseLayoutError(f"{root}: no videos ({'/'.join(VIDEO_EXTENSIONS)}) in this folder")
    return entries


def video_fps(path: str | Path) -> float:
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise PhaseLayoutError(f"{path}: OpenCV cannot open this video")
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    finally:
        cap.release()
    if not fps > 0:
        raise PhaseLayoutError(f"{path}: the video states no frame rate")
    return fps


def read_video(path: str | Path) -> Iterator[tuple[int, float, np.ndarray]]:
    """(frame index, seconds from the start = index / fps, RGB uint8) of every frame."""
    fps = video_fps(path)
    cap = cv2.VideoCapture(str(path))
    try:
        index = 0
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield index, index / fps, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
            index += 1
    finally:
        cap.release()


def write_video(path: str | Path, frames: Iterable[np.ndarray], fps: float) -> int:
    """RGB uint8 frames (all one size) -> an mp4 (``mp4v``); returns the number of frames written."""
    path = Path(path)
    writer = None
    count = 0
    try:
        for rgb in frames:
            if writer is None:
                h, w = rgb.shape[:2]
                writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (w, h))
                if not writer.isOpened():
                    raise OSError(f"{path}: OpenCV cannot write an mp4 here")
            writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            count += 1
    finally:
        if writer is not None:
            writer.release()
    return count

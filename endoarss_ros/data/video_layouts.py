"""Phase-labelled surgical videos in the layouts the public data sets are released in, with labels aligned to the
video by *time*.

Layouts (``detect_layout`` tells them apart by their folders and file names):

* ``cholec80``: ``ROOT/videos/videoNN.mp4`` and ``ROOT/phase_annotations/videoNN-phase.txt``: a header
  ``Frame<TAB>Phase``, then one line per frame of the 25 fps original, frame indices from 0, phase names as
  released (``CHOLEC80_PHASES``).
* ``autolaparo`` (task 1, workflow): ``ROOT/videos/NN.mp4`` and ``ROOT/labels/label_NN.txt``: a header line, then
  ``INDEX<TAB>PHASE_ID`` at 1 fps, indices from 1, phase ids 1..7 (``AUTOLAPARO_PHASES``, the release README's
  names).
* ``m2cai16`` (workflow challenge): ``workflow_video_NN.mp4`` + ``workflow_video_NN.txt`` (``train_dataset/``)
  or ``test_workflow_video_NN.mp4`` + ``test_workflow_video_NN.txt`` (``test_dataset/``) in one folder; the
  ``.txt`` has ``FRAME<TAB>PHASE_NAME`` lines at 25 fps from frame 0 (a ``Frame<TAB>Phase`` header is skipped
  when present), the 8 names of ``M2CAI16_PHASES``. The ``*_timestamp.txt`` files beside them are not read.
* ``phase`` (ours, ``data.phase_layout``): ``NAME.mp4`` with ``NAME-phase.txt`` beside it, indices counting the
  video's own frames (any subset of them labelled).

Alignment: label index ``i`` at the label rate ``f`` is the time ``(i - first_index) / f`` seconds and covers
``[t, t + 1/f)``; a decoded frame at ``k / video_fps`` gets the label whose interval holds it. So a video
re-encoded at another rate keeps its labels, as long as the label rate is the one the indices were counted at
(``label_fps``: the layout's own by default, for ``phase`` the video's). A label past the video's end, or (for
the released layouts, which label every frame or second) labels ending long before it, means the rate cannot be
right: a ``PhaseLayoutError`` naming both files.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .phase_layout import (
    PHASE_SUFFIX,
    UNLABELLED,
    VIDEO_EXTENSIONS,
    PhaseLayoutError,
    find_videos,
    read_phase_file,
)

CHOLEC80_PHASES = ("Preparation", "CalotTriangleDissection", "ClippingCutting", "GallbladderDissection",
                   "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction")
AUTOLAPARO_PHASES = ("Preparation", "Dividing Ligament and Peritoneum", "Dividing Uterine Vessels and Ligament",
                     "Transecting the Vagina", "Specimen Removal", "Suturing", "Washing")  # ids 1..7
M2CAI16_PHASES = ("TrocarPlacement", "Preparation", "CalotTriangleDissection", "ClippingCutting",
                  "GallbladderDissection", "GallbladderPackaging", "CleaningCoagulation", "GallbladderRetraction")
MAX_LABEL_FPS = 1000.0
# Released layouts label the whole video: labels ending before this share of it mean a wrong label rate.
MIN_COVERAGE = 0.5


@dataclass(frozen=True)
class Layout:
    name: str
    label_fps: float | None  # None: the video's own rate
    first_index: int  # the index of the label at t = 0
    phases: tuple[str, ...] | None  # the released names (None: ours, the names are in the files)
    dense: bool  # the release labels the whole video


LAYOUTS = {
    "cholec80": Layout("cholec80", 25.0, 0, CHOLEC80_PHASES, True),
    "autolaparo": Layout("autolaparo", 1.0, 1, AUTOLAPARO_PHASES, True),
    "m2cai16": Layout("m2cai16", 25.0, 0, M2CAI16_PHASES, True),
    "phase": Layout("phase", None, 0, None, False),
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name).lower()


def _videos_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)


def detect_layout(root: str | Path) -> str:
    """``cholec80``, ``autolaparo``, ``m2cai16`` or ``phase`` (ours), from what the folder holds."""
    root = Path(root)
    if not root.is_dir():
        raise PhaseLayoutError(f"{root}: not a folder of labelled videos")
    if (root / "videos").is_dir() and (root / "phase_annotations").is_dir():
        return "cholec80"
    if (root / "videos").is_dir() and (root / "labels").is_dir():
        return "autolaparo"
    if any(re.fullmatch(r"(test_)?workflow_video_\d+", p.stem) for p in _videos_in(root)):
        return "m2cai16"
    splits = [d for d in ("train_dataset", "test_dataset") if (root / d).is_dir()]
    if splits:
        raise PhaseLayoutError(f"{root}: an M2CAI16 workflow root; give one split, "
                               f"{' or '.join(str(root / d) for d in splits)}")
    return "phase"


@dataclass(frozen=True)
class LabelTrack:
    """The labels of one file: ``indices`` as written (int64, increasing), model class ids, the label file."""

    path: Path
    indices: np.ndarray
    classes: np.ndarray


def _class_lookup(activity_classes: Sequence[str]) -> dict[str, int]:
    return {_key(n): i for i, n in enumerate(activity_classes)}


def _class_of(name: str, known: dict[str, int], path: Path, number: int, activity_classes) -> int:
    if _key(name) not in known:
        raise PhaseLayoutError(f"{path}:{number}: phase {name!r} is not one of the model's activity classes "
                               f"({', '.join(activity_classes)})")
    return known[_key(name)]


def read_label_file(path: Path, layout: Layout, activity_classes: Sequence[str]) -> LabelTrack:
    """``INDEX<TAB>PHASE`` lines after an optional header (a first line whose first field is not a number);
    PHASE is a name, or for AutoLaparo an id 1..7."""
    if layout.name == "phase":
        labels = read_phase_file(path, activity_classes)
        idx = np.array(sorted(labels), np.int64)
        return LabelTrack(path, idx, np.array([labels[i] for i in idx], np.int64))
    known = _class_lookup(activity_classes)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise PhaseLayoutError(f"{path}: cannot read the label file ({e})") from e
    rows: list[tuple[int, int]] = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or (number == 1 and not parts[0].isdigit()):
            continue  # blank, or the header
        if len(parts) < 2 or not parts[0].isdigit():
            raise PhaseLayoutError(f"{path}:{number}: expected INDEX<TAB>PHASE, got {line!r}")
        phase = " ".join(parts[1:])
        if layout.name == "autolaparo":
            if not phase.isdigit() or not 1 <= int(phase) <= len(AUTOLAPARO_PHASES):
                raise PhaseLayoutError(f"{path}:{number}: AutoLaparo phase ids are 1..{len(AUTOLAPARO_PHASES)}, "
                                       f"got {phase!r}")
            phase = AUTOLAPARO_PHASES[int(phase) - 1]
        rows.append((int(parts[0]), _class_of(phase, known, path, number, activity_classes)))
    if not rows:
        raise PhaseLayoutError(f"{path}: no labels in this file")
    idx = np.array([r[0] for r in rows], np.int64)
    if np.any(np.diff(idx) <= 0):
        at = int(np.argmax(np.diff(idx) <= 0)) + 1
        raise PhaseLayoutError(f"{path}: index {idx[at]} does not follow {idx[at - 1]} (indices must increase)")
    if idx[0] < layout.first_index:
        raise PhaseLayoutError(f"{path}: index {idx[0]} is before the first ({layout.first_index}) of this layout")
    return LabelTrack(path, idx, np.array([r[1] for r in rows], np.int64))


def video_info(path: str | Path) -> tuple[float, int]:
    """(frame rate, frame count; 0 when the container does not say) of a video."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise PhaseLayoutError(f"{path}: OpenCV cannot open this video")
        fps, count = float(cap.get(cv2.CAP_PROP_FPS)), int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    finally:
        cap.release()
    if not (math.isfinite(fps) and fps > 0):
        raise PhaseLayoutError(f"{path}: the video states no frame rate")
    return fps, max(count, 0)


class TimedLabels:
    """A ``LabelTrack`` at a label rate: the label of any time (``at``)."""

    def __init__(self, track: LabelTrack, label_fps: float, first_index: int):
        if not (math.isfinite(label_fps) and 0 < label_fps <= MAX_LABEL_FPS):
            raise PhaseLayoutError(f"{track.path}: a label rate of {label_fps} fps cannot be right "
                                   f"(give --label-fps in (0, {MAX_LABEL_FPS:g}])")
        self.track, self.label_fps, self.first_index = track, float(label_fps), int(first_index)
        self._by_index = dict(zip(track.indices.tolist(), track.classes.tolist()))

    def at(self, t_s: float) -> int:
        """The label covering time ``t_s`` (seconds from the video's start), UNLABELLED where there is none."""
        return self._by_index.get(self.first_index + math.floor(t_s * self.label_fps + 1e-6), UNLABELLED)

    @property
    def end_s(self) -> float:
        """Where the last label's interval ends."""
        return (int(self.track.indices[-1]) - self.first_index + 1) / self.label_fps

    def check_span(self, video: Path, fps: float, count: int, dense: bool) -> None:
        """A label past the video's end (or, for a layout labelling the whole video, labels ending long before
        it) is a ``PhaseLayoutError`` naming both files and the rates."""
        if count <= 0:
            return  # the container does not say: checked when the frames run out (``LabelledFrames``)
        duration = count / fps
        tolerance = max(1.0, 2.0 / self.label_fps)
        last = int(self.track.indices[-1])
        if self.end_s - 1.0 / self.label_fps > duration + tolerance:
            raise PhaseLayoutError(
                f"{self.track.path}: label {last} is at {self.end_s - 1 / self.label_fps:.1f} s, past the end of "
                f"{video} ({count} frames at {fps:g} fps = {duration:.1f} s); the labels were read at "
                f"{self.label_fps:g} fps: is that the rate they count (--label-fps)?")
        if dense and self.end_s < MIN_COVERAGE * duration - tolerance:
            raise PhaseLayoutError(
                f"{self.track.path}: the labels end at {self.end_s:.1f} s of the {duration:.1f} s video {video}; "
                f"a label rate of {self.label_fps:g} fps cannot be right for this layout (--label-fps)")


@dataclass(frozen=True)
class LabelledVideoFile:
    """One video of a layout with its labels at the chosen rate."""

    name: str
    video: Path
    labels: TimedLabels
    fps: float
    frame_count: int

    @property
    def files(self) -> tuple[Path, Path]:
        return self.video, self.labels.track.path


# Per released layout: (video folder, label folder, label file of a video stem, glob of label files, the video
# stem a label file belongs to).
_NAMING = {
    "cholec80": ("videos", "phase_annotations", "{}" + PHASE_SUFFIX, "*" + PHASE_SUFFIX,
                 lambda f: f.name[: -len(PHASE_SUFFIX)]),
    "autolaparo": ("videos", "labels", "label_{}.txt", "label_*.txt", lambda f: f.stem[len("label_"):]),
    "m2cai16": (".", ".", "{}.txt", "*workflow_video_*.txt", lambda f: f.stem),
}


def _pairs(root: Path, layout: str) -> list[tuple[str, Path, Path]]:
    """(name, video, label file) of every video, each video with its label file and the other way round."""
    if layout == "phase":
        return [(e.name, e.video, e.phases) for e in find_videos(root)]
    video_dir, label_dir, label_name, label_glob, video_of = _NAMING[layout]
    vdir, ldir = root / video_dir, root / label_dir
    videos = _videos_in(vdir)
    out = []
    for v in videos:
        lf = ldir / label_name.format(v.stem)
        if not lf.is_file():
            raise PhaseLayoutError(f"{v}: no label file {lf} for it ({layout} layout)")
        out.append((v.stem, v, lf))
    stems = {v.stem for v in videos}
    for lf in sorted(ldir.glob(label_glob)):
        if lf.stem.endswith("_timestamp"):
            continue
        if video_of(lf) not in stems:
            raise PhaseLayoutError(f"{lf}: no video {video_of(lf)} ({'/'.join(VIDEO_EXTENSIONS)}) in {vdir}")
    if not out:
        raise PhaseLayoutError(f"{vdir}: no videos ({'/'.join(VIDEO_EXTENSIONS)}) in this {layout} folder")
    return out


def find_labelled_videos(root: str | Path, activity_classes: Sequence[str],
                         label_fps: float | None = None) -> list[LabelledVideoFile]:
    """Every video of the layout folder ``root`` with its labels read, checked and put on the time axis
    (``label_fps``: None for the layout's rate). Errors (a missing file, a bad line, an unknown phase, a rate
    that cannot be right) come now, before any frame is decoded."""
    root = Path(root)
    layout = LAYOUTS[detect_layout(root)]
    out = []
    for name, video, label_file in _pairs(root, layout.name):
        track = read_label_file(label_file, layout, activity_classes)
        fps, count = video_info(video)
        rate = label_fps if label_fps is not None else (layout.label_fps or fps)
        labels = TimedLabels(track, rate, layout.first_index)
        labels.check_span(video, fps, count, layout.dense)
        out.append(LabelledVideoFile(name, video, labels, fps, count))
    return out


def layout_phase_names(root: str | Path) -> list[str]:
    """The activity classes a frame model trained on this layout has: the released phase names; for ours, a
    ``classes.yaml`` beside the videos or else the names in the phase files, in order of first appearance."""
    root = Path(root)
    layout = LAYOUTS[detect_layout(root)]
    if layout.phases is not None:
        return list(layout.phases)
    from .classes import CLASSES_YAML, ClassSet

    if (root / CLASSES_YAML).is_file():
        return list(ClassSet.load_yaml(root / CLASSES_YAML).activity_classes)
    names: dict[str, str] = {}
    for entry in find_videos(root):
        for line in entry.phases.read_text(encoding="utf-8-sig").splitlines()[1:]:
            parts = line.split("\t")
            if len(parts) == 2 and parts[1].strip():
                names.setdefault(_key(parts[1]), parts[1].strip())
    return list(names.values())


def read_frames(video: LabelledVideoFile, sample_fps: float | None = None
                ) -> Iterator[tuple[float, np.ndarray, int]]:
    """(seconds from the start, RGB uint8, label) of the video's frames, or with ``sample_fps`` of the first
    frame at or after each ``1 / sample_fps`` step: the others are only grabbed (FFmpeg still decodes them; they
    are not converted) and never reach the frame model. A frame that cannot be decoded comes as None (the caller
    counts it). A video that ends before its labels do is a ``PhaseLayoutError``."""
    if sample_fps is not None and not (math.isfinite(sample_fps) and sample_fps > 0):
        raise PhaseLayoutError(f"--sample-fps must be > 0, got {sample_fps}")
    cap = cv2.VideoCapture(str(video.video))
    if not cap.isOpened():
        raise PhaseLayoutError(f"{video.video}: OpenCV cannot open this video")
    step = 1.0 / sample_fps if sample_fps else 0.0
    index, next_t = 0, 0.0
    try:
        while cap.grab():
            t = index / video.fps
            index += 1
            if t + 1e-9 < next_t:
                continue
            ok, bgr = cap.retrieve()
            if step:
                next_t = (math.floor(t / step + 1e-9) + 1) * step
            yield t, (cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if ok else None), video.labels.at(t)
    finally:
        cap.release()
    last_label_t = video.labels.end_s - 1.0 / video.labels.label_fps
    if video.frame_count <= 0 and last_label_t > index / video.fps + max(1.0, 2.0 / video.labels.label_fps):
        raise PhaseLayoutError(f"{video.labels.track.path}: labels go on to {last_label_t:.1f} s, past the end of "
                               f"{video.video} ({index} frames at {video.fps:g} fps)")

"""Frames of phase-labelled videos (``video_layouts``: Cholec80, AutoLaparo, M2CAI16, ours) as a training set for
the frame model when there are no masks: frames sampled at ``sample_fps``, labels aligned by time, every mask pixel
``ignore_index`` so the segmentation loss and scores skip them and only the activity head learns.

The sampled frames are kept in memory JPEG-encoded (quality 95) at the working size: about 10-20 kB a frame, so
Cholec80's 40 training videos at 1 fps (~86 k frames) take ~1.5 GB rather than ~13 GB as raw pixels.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from .classes import ClassSet
from .datasets import make_sample, resize_pair
from .phase_layout import UNLABELLED
from .video_layouts import LabelledVideoFile, find_labelled_videos, layout_phase_names, read_frames

JPEG_QUALITY = 95
# No masks: the segmentation head (the model needs two classes) learns nothing, its loss is off; the second name
# says so wherever the mask is published.
NO_MASK_SEG_CLASSES = ("background", "untrained")


def phase_class_set(root: str | Path) -> ClassSet:
    """The class set of a frame model trained on the videos in ``root``: its phases, no segmentation classes."""
    return ClassSet(NO_MASK_SEG_CLASSES, ((0, 0, 0), (128, 128, 128)), tuple(layout_phase_names(root)))


class PhaseVideoFrames(Dataset):
    """Labelled frames of ``videos`` at ``sample_fps`` (unlabelled ones left out), resized to ``size`` (H, W)."""

    def __init__(self, videos: Sequence[LabelledVideoFile], class_set: ClassSet, size: tuple[int, int],
                 sample_fps: float = 1.0, transform=None, ignore_index: int = 255, progress: bool = False):
        self.class_set, self.size, self.transform = class_set, tuple(size), transform
        self.ignore_index = int(ignore_index)
        self.video_names = [v.name for v in videos]
        self._jpeg: list[bytes] = []
        self._activities: list[int] = []
        self._paths: list[str] = []
        it = videos
        if progress:
            from tqdm import tqdm

            it = tqdm(videos, desc="decode videos", unit="video", leave=False)
        blank = np.zeros(self.size, np.uint8)
        self.undecodable: dict[str, int] = {}  # frames OpenCV could not decode, per video (reported)
        for video in it:
            for t, rgb, label in read_frames(video, sample_fps):
                if rgb is None:
                    self.undecodable[video.name] = self.undecodable.get(video.name, 0) + 1
                    continue
                if label == UNLABELLED:
                    continue
                small, _ = resize_pair(rgb, blank, self.size)
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                                       [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                if not ok:
                    raise OSError(f"{video.video}: cannot JPEG-encode the frame at {t:.2f} s")
                self._jpeg.append(buf.tobytes())
                self._activities.append(int(label))
                self._paths.append(f"{video.video}@{t:.2f}s")
        if self.undecodable:
            print("frames that could not be decoded (left out): " + ", ".join(
                f"{name}: {n}" for name, n in sorted(self.undecodable.items())), file=sys.stderr)

    @property
    def activities(self) -> list[int]:
        return list(self._activities)

    def __len__(self) -> int:
        return len(self._jpeg)

    def __getitem__(self, index: int) -> dict:
        bgr = cv2.imdecode(np.frombuffer(self._jpeg[index], np.uint8), cv2.IMREAD_COLOR)
        mask = np.full(self.size, self.ignore_index, np.uint8)
        sample = make_sample(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), mask, self._activities[index],
                             self._paths[index], self.transform)
        sample["mask"].fill_(self.ignore_index)  # no geometric transform may invent a labelled pixel
        return sample


def split_videos(root: str | Path, val_fraction: float, seed: int, activity_classes: Sequence[str],
                 label_fps: float | None = None) -> tuple[list[LabelledVideoFile], list[LabelledVideoFile]]:
    """(training, validation) videos of ``root``, split by whole videos (frames of one video are never on both
    sides), ``val_fraction`` of them (at least one) for validation, chosen with ``seed``."""
    videos = find_labelled_videos(root, activity_classes, label_fps)
    if len(videos) < 2:
        raise ValueError(f"{root}: one video cannot be split into training and validation; add videos or a "
                         f"{Path(root) / 'val'} folder")
    order = np.random.default_rng(seed).permutation(len(videos))
    n_val = min(len(videos) - 1, max(1, round(val_fraction * len(videos))))
    val = sorted(order[:n_val].tolist())
    return ([v for i, v in enumerate(videos) if i not in val], [videos[i] for i in val])

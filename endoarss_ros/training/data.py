"""Datasets for training and evaluation: on-disk layouts or in-memory synthetic frames."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from torch.utils.data import Dataset

from endoarss_ros.data.classes import MTLESD, ClassSet
from endoarss_ros.data.datasets import (
    GenericLayoutDataset,
    ReleasedLayoutDataset,
    make_sample,
    resize_pair,
    split_train_val,
)
from endoarss_ros.data.layout import split_seed
from endoarss_ros.data.transforms import BlurNoise, ColorJitter, Compose, RandomFlip, RandomScaleCrop

from .config import DataConfig


class _RenderedFrames(Dataset):
    """Frames rendered into memory (``images``, ``masks``, ``_activities``), served as training samples."""

    transform = None

    @property
    def activities(self) -> list[int]:
        return list(self._activities)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return make_sample(self.images[index], self.masks[index], self._activities[index], self._sample_id(index),
                           self.transform)

    def _sample_id(self, index: int) -> str:
        raise NotImplementedError


class SyntheticFrames(_RenderedFrames):
    """``count`` generated frames of one split, held in memory at the working size.

    Frame i uses the i-th child of ``split_seed(seed, split)`` and activity ``i % 3``: the same seed
    streams as ``write_synthetic_dataset`` (``endoarss synth dataset``), so a frame rendered at
    ``render_size`` here equals the one that command writes at that size, before the downscale.
    Each frame is rendered at ``render_size`` (one scene triple in ``wide_every`` at 5:4, W = 1.25 H; all
    activities alike) and shrunk with
    INTER_AREA (mask: nearest) to ``size``, as the ROS node shrinks camera frames.
    """

    def __init__(self, seed: int, split: str, count: int, size: tuple[int, int], render_size: int = 336,
                 wide_every: int = 0, transform=None, class_set: ClassSet = MTLESD, progress: bool = False):
        from endoarss_ros.data.synth import generate_frame

        self.size = tuple(size)
        self.transform = transform
        self.class_set = class_set
        self.seed, self.split = seed, split
        n_act = class_set.num_activities
        self.images = np.empty((count, *self.size, 3), np.uint8)
        self.masks = np.empty((count, *self.size), np.uint8)
        self._activities = [i % n_act for i in range(count)]
        self.rendered_hw: list[tuple[int, int]] = []
        children = split_seed(seed, split).spawn(count)
        it = enumerate(children)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, total=count, desc=f"render {split}", unit="frame", leave=False)
        for i, ss in it:
            h = render_size
            # 5:4 frames cycle through all activities: frame i shows activity i % n_act, so the choice must
            # not depend on i % n_act alone (aspect ratio would then predict the label)
            wide = wide_every and (i // n_act) % wide_every == wide_every - 1
            w = round(render_size * 1.25) if wide else render_size
            rgb, mask = generate_frame(np.random.default_rng(ss), self._activities[i], (h, w))
            self.rendered_hw.append((h, w))
            self.images[i], self.masks[i] = resize_pair(rgb, mask, self.size)

    def _sample_id(self, index: int) -> str:
        return f"synthetic:{self.seed}:{self.split}:{index}"


# Procedure sets the frame model must never train on: the demo recording's own seed (``tools.demo.demo_recording``,
# a procedure seed) and the temporal model's training / validation / test sets (``numbered_procedure`` set seeds,
# docs/temporal.md): its features must come from videos the frame model has not seen.
DEMO_PROCEDURE_SEED = 7
TEMPORAL_PROCEDURE_SETS = (100, 110, 200, 210, 300)
PROCEDURE_SIZES = ((256, 320), (180, 224), (336, 336))  # (H, W) rendered, in turn: the demo's 5:4, smaller, square


class ProcedureFrames(_RenderedFrames):
    """``per_procedure`` frames at random times of each of ``count`` synthetic procedures (procedure k of set
    ``seed``: ``data.procedures.numbered_procedure(seed, k)``), the continuous scenes the demo plays, ambiguous
    intervals (withdrawn instruments, lens cleaning, smoke, bleeding) included and labelled with the ongoing
    activity. Procedure k is rendered at ``PROCEDURE_SIZES[k % 3]`` and shrunk to ``size`` like the node does."""

    def __init__(self, seed: int, count: int, per_procedure: int, size: tuple[int, int], transform=None,
                 progress: bool = False):
        from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure

        if seed in TEMPORAL_PROCEDURE_SETS:
            raise ValueError(f"procedure set {seed} is held out for the temporal model (sets "
                             f"{TEMPORAL_PROCEDURE_SETS}): train the frame model on another set")
        self.size, self.transform, self.seed = tuple(size), transform, seed
        n = count * per_procedure
        self.images = np.empty((n, *self.size, 3), np.uint8)
        self.masks = np.empty((n, *self.size), np.uint8)
        self._activities: list[int] = []
        it = range(count)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"render procedures {seed}", unit="procedure", leave=False)
        for k in it:
            settings = ProcedureSettings(size=PROCEDURE_SIZES[k % len(PROCEDURE_SIZES)], ambiguity_rate=0.2)
            _, proc = numbered_procedure(seed, k, settings)
            if proc.seed == DEMO_PROCEDURE_SEED:
                raise ValueError(f"procedure {k} of set {seed} is the demo recording's procedure")
            scene, light = proc.scene()
            rng = np.random.default_rng([seed, k, 3])
            for t in np.sort(rng.uniform(0, proc.segments[-1].end, per_procedure)):
                f = proc.frame_at(float(t), scene, light, rng)
                i = len(self._activities)
                self.images[i], self.masks[i] = resize_pair(f.rgb, f.mask, self.size)
                self._activities.append(int(f.activity))

    def _sample_id(self, index: int) -> str:
        return f"procedure:{self.seed}:{index}"


class _Joined(Dataset):
    """Datasets one after the other, sharing one ``transform`` (set on all parts)."""

    def __init__(self, parts: list[Dataset]):
        self.parts = [p for p in parts if len(p)]
        self.class_set = getattr(self.parts[0], "class_set", None)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @property
    def transform(self):
        return self.parts[0].transform

    @transform.setter
    def transform(self, value) -> None:
        for p in self.parts:
            p.transform = value

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, i: int) -> dict:
        k = int(np.searchsorted(self.offsets, i, side="right") - 1)
        return self.parts[k][i - int(self.offsets[k])]

    @property
    def activities(self) -> list[int]:
        return [a for p in self.parts for a in p.activities]


def train_transform(cfg: DataConfig):
    if not cfg.augment:
        return None
    ts = [RandomFlip(0.5, cfg.vertical_flip)]
    if cfg.scale_crop:
        ts.append(RandomScaleCrop(scale=(1.0, 1.3), p=0.3))
    ts += [ColorJitter(0.15, 0.15, 0.15, 4.0), BlurNoise(blur_p=0.2, max_sigma=1.0, noise_p=0.2, max_noise=4.0)]
    return Compose(ts)


VIDEO_VAL_FRACTION = 0.2  # of the training videos, when a video root has no val folder


def _video_root(cfg: DataConfig, split: str) -> Path | None:
    """root/split when the video root has split folders, else the root itself for the training split."""
    root = Path(cfg.root)
    if (root / split).is_dir():
        return root / split
    return root if split == cfg.train_split else None


def _video_dataset(cfg: DataConfig, videos, size, transform, class_set: ClassSet, progress: bool):
    from endoarss_ros.data.video_frames import PhaseVideoFrames

    return PhaseVideoFrames(videos, class_set, size, cfg.sample_fps, transform, progress=progress)


def _video_split(cfg: DataConfig, split: str, size, transform, class_set: ClassSet | None, progress: bool):
    from endoarss_ros.data.video_frames import phase_class_set
    from endoarss_ros.data.video_layouts import find_labelled_videos

    root = _video_root(cfg, split)
    if root is None:
        raise FileNotFoundError(f"no {Path(cfg.root) / split} folder of labelled videos")
    class_set = class_set or phase_class_set(root)
    videos = find_labelled_videos(root, class_set.activity_classes, cfg.label_fps)
    return _video_dataset(cfg, videos, size, transform, class_set, progress)


def _video_train_val(cfg: DataConfig, size, seed: int, class_set: ClassSet | None, progress: bool):
    """Training and validation frames of a video root: root/val when it exists, else whole videos held out."""
    from endoarss_ros.data.video_frames import phase_class_set, split_videos

    tf = train_transform(cfg)
    train_root = _video_root(cfg, cfg.train_split)
    class_set = class_set or phase_class_set(train_root)
    if isinstance(cfg.val, str) and _video_root(cfg, cfg.val) not in (None, train_root):
        return (_video_split(cfg, cfg.train_split, size, tf, class_set, progress),
                _video_split(cfg, cfg.val, size, None, class_set, progress))
    fraction = float(cfg.val) if not isinstance(cfg.val, str) else VIDEO_VAL_FRACTION
    train, val = split_videos(train_root, fraction, seed, class_set.activity_classes, cfg.label_fps)
    return (_video_dataset(cfg, train, size, tf, class_set, progress),
            _video_dataset(cfg, val, size, None, class_set, progress))


def _disk_dataset(cfg: DataConfig, split: str, size, transform, class_set: ClassSet | None):
    if cfg.layout == "released":
        return ReleasedLayoutDataset(cfg.root, split, size=size, transform=transform, class_set=class_set)

    return GenericLayoutDataset(Path(cfg.root) / split, size=size, transform=transform, class_set=class_set)


def build_split(cfg: DataConfig, split: str, size: tuple[int, int], *, transform=None,
                class_set: ClassSet | None = None, progress: bool = False) -> Dataset:
    """One split (``train``/``val``/``test`` or any folder name) without a held-out fraction."""
    if cfg.layout == "synthetic":
        s = cfg.synthetic
        counts = {"train": s.train, "val": s.val, "test": s.test}
        seed = s.seed if split != "test" else (s.test_seed if s.test_seed is not None else s.seed + 1000)
        frames = SyntheticFrames(seed, split, counts[split], size, s.render_size,
                                 s.wide_every if split != "test" else 0, transform,
                                 class_set or MTLESD, progress)
        procedures = {"train": s.procedures, "val": s.val_procedures}.get(split, 0)
        if not procedures:
            return frames
        proc_seed = s.procedure_seed + (split == "val")
        return _Joined([frames, ProcedureFrames(proc_seed, procedures, s.per_procedure, size, transform, progress)])
    if cfg.layout == "videos":
        return _video_split(cfg, split, size, transform, class_set, progress)
    return _disk_dataset(cfg, split, size, transform, class_set)


class _Subset(Dataset):
    """A subset that keeps its own transform (train and val views of one split)."""

    def __init__(self, base: Dataset, indices: list[int], transform):
        self.base, self.indices, self.transform = base, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict:
        old = self.base.transform
        self.base.transform = self.transform
        try:
            return self.base[self.indices[i]]
        finally:
            self.base.transform = old

    @property
    def activities(self) -> list[int]:
        acts = self.base.activities
        return [acts[i] for i in self.indices]


def build_train_val(cfg: DataConfig, size: tuple[int, int], *, seed: int = 0,
                    class_set: ClassSet | None = None, progress: bool = False) -> tuple[Dataset, Dataset]:
    """Training and validation sets; model selection only ever sees these (never the test split)."""
    if cfg.layout == "videos":
        return _video_train_val(cfg, size, seed, class_set, progress)
    tf = train_transform(cfg)
    if isinstance(cfg.val, str):
        train = build_split(cfg, cfg.train_split, size, transform=tf, class_set=class_set, progress=progress)
        val = build_split(cfg, cfg.val, size, transform=None, class_set=class_set, progress=progress)
        return train, val
    base = build_split(cfg, cfg.train_split, size, transform=None, class_set=class_set, progress=progress)
    tr, va = split_train_val(base, float(cfg.val), seed=seed)
    return _Subset(base, list(tr.indices), tf), _Subset(base, list(va.indices), None)


def dataset_class_set(ds: Dataset) -> ClassSet | None:
    while ds is not None:
        if hasattr(ds, "class_set"):
            return ds.class_set
        ds = getattr(ds, "base", None) or getattr(ds, "dataset", None)
    return None

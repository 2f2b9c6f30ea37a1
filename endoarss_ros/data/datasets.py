"""Torch datasets over the released MTLESD/MTLEndovis layout and the generic layout.

Items are dicts: ``image`` float32 (3, H, W) in [0, 1], ``mask`` int64 (H, W) class ids,
``activity`` int64 scalar, ``path`` str (the image file).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from .classes import CLASSES_YAML, ClassSet, generic_class_set
from .layout import raw_to_class, read_generic_labels, read_mask_png, read_rgb

Transform = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


def _hw(size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    return None if size is None else ((size, size) if isinstance(size, int) else (int(size[0]), int(size[1])))


def resize_pair(image: np.ndarray, mask: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Resize to (H, W): image area-averaged when shrinking (bilinear when growing), mask nearest."""
    h, w = size
    if image.shape[:2] != (h, w):
        shrink = h * w < image.shape[0] * image.shape[1]
        image = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if mask.shape[:2] != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST_EXACT)
    return image, mask


def make_sample(image: np.ndarray, mask: np.ndarray, activity: int, path: str, transform=None) -> dict:
    """A training sample from uint8 arrays: augmented (``transform``), then image float (3, H, W) in [0, 1],
    mask int64 (H, W), activity int64."""
    if transform is not None:
        # Draw from torch's RNG so torch.manual_seed and DataLoader worker seeding govern augmentation.
        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        image, mask = transform(image, mask, rng)
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0),
        "mask": torch.from_numpy(np.ascontiguousarray(mask)).long(),
        "activity": torch.tensor(activity, dtype=torch.int64),
        "path": path,
    }

class _PairDataset(Dataset):
    """Shared item pipeline: read, resize, augment, to tensors."""

    def __init__(self, size, transform: Transform | None):
        self.size = _hw(size)
        self.transform = transform
        self.items: list[tuple[Path, Path, int]] = []  # image path, mask path, activity

    @property
    def activities(self) -> list[int]:
        return [a for _, _, a in self.items]

    def __len__(self) -> int:
        return len(self.items)

    def _read_mask(self, path: Path) -> np.ndarray:
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict:
        img_path, mask_path, activity = self.items[index]
        image, mask = read_rgb(img_path), self._read_mask(mask_path)
        if image.shape[:2] != mask.shape[:2]:
            # Annotation tools sometimes save masks at another resolution: follow the image.
            mask = cv2.resize(mask, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST_EXACT)
        if self.size is not None:
            image, mask = resize_pair(image, mask, self.size)
        return make_sample(image, mask, activity, str(img_path), self.transform)


class ReleasedLayoutDataset(_PairDataset):
    """``root/split/{k}/image/*.png`` with masks in ``.../mask/`` (same name); activity = k - 1.

    Masks hold raw ids and are shifted like the released loader (raw > 0 -> raw - 1). Class names
    come from ``class_set``, else ``root/classes.yaml``, else generic names with
    ``num_seg_classes`` segmentation classes (default 7, MTLESD's count).
    """

    def __init__(self, root: str | Path, split: str = "train", size: int | tuple[int, int] | None = 224,
                 transform: Transform | None = None, class_set: ClassSet | None = None,
                 num_seg_classes: int = 7):
        super().__init__(size, transform)
        self.root = Path(root)
        split_dir = self.root / split
        if not split_dir.is_dir():
            raise FileNotFoundError(f"no split folder {split_dir}")
        folders = sorted((p for p in split_dir.iterdir() if p.is_dir() and p.name.isdigit()),
                         key=lambda p: int(p.name))
        if not folders:
            raise FileNotFoundError(f"no activity folders (1, 2, ...) in {split_dir}")
        for folder in folders:
            for img in sorted((folder / "image").glob("*.png")):
                mask = folder / "mask" / img.name
                if not mask.is_file():
                    raise FileNotFoundError(f"mask missing for {img}")
                self.items.append((img, mask, int(folder.name) - 1))
        if class_set is None:
            yaml_path = self.root / CLASSES_YAML
            if yaml_path.is_file():
                class_set = ClassSet.load_yaml(yaml_path)
            else:
                # Activities: as many as the largest folder number (folders may be missing in a split).
                class_set = generic_class_set(num_seg_classes, max(int(f.name) for f in folders))
        self.class_set = class_set

    def _read_mask(self, path: Path) -> np.ndarray:
        return raw_to_class(read_mask_png(path))


class GenericLayoutDataset(_PairDataset):
    """``root/images``, ``root/masks`` (class ids), ``root/labels.csv`` (filename,activity)."""

    def __init__(self, root: str | Path, size: int | tuple[int, int] | None = 224,
                 transform: Transform | None = None, class_set: ClassSet | None = None):
        super().__init__(size, transform)
        self.root = Path(root)
        for name, activity in read_generic_labels(self.root):
            self.items.append((self.root / "images" / name, self.root / "masks" / name, activity))
        if class_set is None:
            yaml_path = self.root / CLASSES_YAML
            if yaml_path.is_file():
                class_set = ClassSet.load_yaml(yaml_path)
            else:
                class_set = generic_class_set(7, max(self.activities, default=0) + 1)
        self.class_set = class_set

    def _read_mask(self, path: Path) -> np.ndarray:
        return read_mask_png(path)


def split_train_val(dataset: Dataset, val_fraction: float = 0.2, seed: int = 0) -> tuple[Subset, Subset]:
    """Random train/val split, stratified by activity when the dataset lists ``activities``.

    For layouts that only ship train/test: select models on this val split, never on test.
    """
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be in (0, 1)")
    rng = np.random.default_rng(seed)
    n = len(dataset)
    labels = np.asarray(getattr(dataset, "activities", np.zeros(n, int)))
    val: list[int] = []
    for a in np.unique(labels):
        idx = np.flatnonzero(labels == a)
        rng.shuffle(idx)
        k = int(round(len(idx) * val_fraction))
        if len(idx) > 1:
            k = min(max(k, 1), len(idx) - 1)  # every activity on both sides when possible
        val.extend(idx[:k].tolist())
    val_set = set(val)
    train = [i for i in range(n) if i not in val_set]
    return Subset(dataset, train), Subset(dataset, sorted(val))

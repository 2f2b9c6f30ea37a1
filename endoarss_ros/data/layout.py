"""Dataset layouts on disk.

Released (MTLESD / MTLEndovis) layout::

    root/{train,test}/{k}/image/NAME.png   k = activity + 1
    root/{train,test}/{k}/mask/NAME.png    raw ids: 0 background, class id + 1 for class ids >= 1
    root/classes.yaml                      (ours; the release has none)

The released loader does ``mask[mask > 0] -= 1``, so raw id 1 also reads as background and raw
ids {0, 2..7} become class ids {0, 1..6}. Our synthetic writer adds an optional ``val`` split.

Generic layout (any label set, class ids stored directly)::

    root/images/NAME.png  root/masks/NAME.png  root/labels.csv (filename,activity)  root/classes.yaml
"""
from __future__ import annotations

import csv
import zlib
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from .classes import CLASSES_YAML, MTLESD, ClassSet

LABELS_CSV = "labels.csv"
SPLITS = ("train", "val", "test")


def class_to_raw(mask: np.ndarray) -> np.ndarray:
    """Class ids -> released raw mask ids (class id + 1 except background)."""
    mask = np.asarray(mask)
    if mask.max(initial=0) >= 255:
        raise ValueError("class id 254 is the largest a uint8 raw mask can hold")
    raw = mask.astype(np.uint8, copy=True)
    raw[mask > 0] += 1
    return raw


def raw_to_class(raw: np.ndarray) -> np.ndarray:
    """Released raw mask ids -> class ids, exactly as the released loader shifts them."""
    mask = np.asarray(raw).astype(np.uint8, copy=True)
    mask[mask > 0] -= 1
    return mask


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def read_rgb(path: str | Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise OSError(f"could not read image {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_mask_png(path: str | Path) -> np.ndarray:
    """A label PNG as a 2-D uint8 array (first channel if it was saved as colour)."""
    m = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if m is None:
        raise OSError(f"could not read mask {path}")
    return m[..., 0] if m.ndim == 3 else m


def write_released_sample(root: str | Path, split: str, name: str, rgb: np.ndarray, mask: np.ndarray,
                          activity: int) -> tuple[Path, Path]:
    """One frame in the released layout; ``mask`` holds class ids (encoded to raw ids here)."""
    folder = Path(root) / split / str(int(activity) + 1)
    name = name if name.endswith(".png") else f"{name}.png"
    img_path, mask_path = folder / "image" / name, folder / "mask" / name
    _write_png(img_path, rgb)
    _write_png(mask_path, class_to_raw(mask))
    return img_path, mask_path


class GenericLayoutWriter:
    """Writes root/images, root/masks (class ids), root/labels.csv; use as a context manager."""

    def __init__(self, root: str | Path, class_set: ClassSet | None = None):
        self.root = Path(root)
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "masks").mkdir(parents=True, exist_ok=True)
        if class_set is not None:
            class_set.save_yaml(self.root / CLASSES_YAML)
        self._rows: list[tuple[str, int]] = []

    def add(self, name: str, rgb: np.ndarray, mask: np.ndarray, activity: int) -> None:
        name = name if name.endswith(".png") else f"{name}.png"
        _write_png(self.root / "images" / name, rgb)
        _write_png(self.root / "masks" / name, np.asarray(mask, np.uint8))
        self._rows.append((name, int(activity)))

    def close(self) -> Path:
        path = self.root / LABELS_CSV
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["filename", "activity"])
            w.writerows(self._rows)
        return path

    def __enter__(self) -> GenericLayoutWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_generic_labels(root: str | Path) -> list[tuple[str, int]]:
    with (Path(root) / LABELS_CSV).open(newline="") as f:
        return [(row["filename"], int(row["activity"])) for row in csv.DictReader(f)]


def split_seed(seed: int, split: str) -> np.random.SeedSequence:
    """Independent seed streams per split, so train/val/test never share a generated frame."""
    key = SPLITS.index(split) if split in SPLITS else zlib.crc32(split.encode())  # stable across runs
    return np.random.SeedSequence([int(seed), key])


def synthetic_samples(seed: int, split: str, count: int, size: tuple[int, int], num_activities: int = 3,
                      **options) -> Iterable[tuple[str, np.ndarray, np.ndarray, int]]:
    """(name, rgb, mask, activity) for ``count`` generated frames, activities balanced round-robin."""
    from .synth import generate_frame

    children = split_seed(seed, split).spawn(count)
    for i, ss in enumerate(children):
        activity = i % num_activities
        rgb, mask = generate_frame(np.random.default_rng(ss), activity, size, **options)
        yield f"{split}_{i:06d}.png", rgb, mask, activity


def write_synthetic_dataset(root: str | Path, counts: dict[str, int], size: int | tuple[int, int] = 224,
                            seed: int = 0, layout: str = "released", class_set: ClassSet = MTLESD,
                            progress: bool = False, **options) -> dict[str, int]:
    """Generate frames for each split in ``counts`` (e.g. {"train": 300, "val": 60, "test": 60}).

    ``layout`` "released" writes root/{split}/{k}/{image,mask}; "generic" writes root/{split}/
    {images,masks,labels.csv}. Returns frames written per split.
    """
    root = Path(root)
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if layout not in ("released", "generic"):
        raise ValueError(f"unknown layout {layout!r}")
    root.mkdir(parents=True, exist_ok=True)
    class_set.save_yaml(root / CLASSES_YAML)
    written: dict[str, int] = {}
    for split, count in counts.items():
        if count <= 0:
            continue
        samples = synthetic_samples(seed, split, count, hw, class_set.num_activities, **options)
        if progress:
            from tqdm import tqdm

            samples = tqdm(samples, total=count, desc=split, unit="frame")
        if layout == "released":
            for name, rgb, mask, activity in samples:
                write_released_sample(root, split, name, rgb, mask, activity)
        else:
            with GenericLayoutWriter(root / split, class_set) as writer:
                for name, rgb, mask, activity in samples:
                    writer.add(name, rgb, mask, activity)
        written[split] = count
    return written

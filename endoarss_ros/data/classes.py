"""Class definitions (segmentation classes, colours, activities) as data.

Every layer (data, model, training, ROS node) reads class names and overlay colours from a
``ClassSet``, so a model trained on another label set only needs another ``classes.yaml``.
"""
from __future__ import annotations

import colorsys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES, instrument_class_ids

CLASSES_YAML = "classes.yaml"

# MTLESD segmentation class ids, in the released order after the loader's shift (raw id - 1).
BACKGROUND = 0
FPCW_FORCEPS = 1
MUCOSAL_FLAPS = 2
FPCW_KNIFE = 3
ELECTRIC_KNIFE = 4
INCISION_AREA = 5
MARKING_AREA = 6

# MTLESD activity ids (folder number - 1 in the released layout).
MARKING = 0
CIRCUMFERENTIAL_INCISION = 1
SUBMUCOSAL_DISSECTION = 2

INSTRUMENT_CLASSES = frozenset(instrument_class_ids(MTLESD_SEG_CLASSES))  # forceps and the two knives
TISSUE_CLASSES = frozenset({MUCOSAL_FLAPS, INCISION_AREA, MARKING_AREA})

Color = tuple[int, int, int]


@dataclass(frozen=True)
class ClassSet:
    """Names and colours of the segmentation classes and names of the activities.

    ``activity_objects[a]`` lists the segmentation class ids that activity ``a`` shows; it is
    empty (unknown) for data sets that do not document it.
    """

    seg_classes: tuple[str, ...]
    seg_colors: tuple[Color, ...]
    activity_classes: tuple[str, ...]
    activity_objects: tuple[frozenset[int], ...] = field(default=())

    def __post_init__(self) -> None:
        # Accept lists (e.g. from YAML) but store tuples so the set stays hashable and immutable.
        object.__setattr__(self, "seg_classes", tuple(str(n) for n in self.seg_classes))
        object.__setattr__(self, "seg_colors", tuple(_color(c) for c in self.seg_colors))
        object.__setattr__(self, "activity_classes", tuple(str(n) for n in self.activity_classes))
        object.__setattr__(self, "activity_objects", tuple(frozenset(int(i) for i in o)
                                                           for o in self.activity_objects))
        if len(self.seg_colors) != len(self.seg_classes):
            raise ValueError(f"{len(self.seg_classes)} segmentation classes, {len(self.seg_colors)} colours")
        if self.activity_objects and len(self.activity_objects) != len(self.activity_classes):
            raise ValueError("activity_objects needs one entry per activity")
        for objs in self.activity_objects:
            if any(not 0 <= i < self.num_seg_classes for i in objs):
                raise ValueError(f"activity_objects holds an unknown class id: {sorted(objs)}")

    @property
    def num_seg_classes(self) -> int:
        return len(self.seg_classes)

    @property
    def num_activities(self) -> int:
        return len(self.activity_classes)

    def palette(self) -> list[int]:
        """Colours flattened as [r0, g0, b0, r1, ...] (the SegmentationInfo.colors layout)."""
        return [v for c in self.seg_colors for v in c]

    def to_dict(self) -> dict:
        d: dict = {
            "seg_classes": [{"name": n, "color": list(c)} for n, c in zip(self.seg_classes, self.seg_colors)],
            "activity_classes": list(self.activity_classes),
        }
        if self.activity_objects:
            d["activity_objects"] = {self.activity_classes[a]: [self.seg_classes[i] for i in sorted(objs)]
                                     for a, objs in enumerate(self.activity_objects)}
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> ClassSet:
        seg = d["seg_classes"]
        names = [s["name"] if isinstance(s, Mapping) else s for s in seg]
        colors = [s["color"] if isinstance(s, Mapping) and "color" in s else None for s in seg]
        defaults = default_colors(len(names))
        colors = [c if c is not None else defaults[i] for i, c in enumerate(colors)]
        activities = list(d["activity_classes"])
        objects: tuple = ()
        if d.get("activity_objects"):
            by_name = {n: i for i, n in enumerate(names)}
            shown = d["activity_objects"]
            objects = tuple(frozenset(by_name[n] for n in shown.get(a, [])) for a in activities)
        return cls(tuple(names), tuple(colors), tuple(activities), objects)

    def save_yaml(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path

    @classmethod
    def load_yaml(cls, path: str | Path) -> ClassSet:
        return cls.from_dict(yaml.safe_load(Path(path).read_text()))


def _color(c: Sequence[int]) -> Color:
    r, g, b = (int(v) for v in c)
    if not all(0 <= v <= 255 for v in (r, g, b)):
        raise ValueError(f"colour out of range: {c}")
    return (r, g, b)


def default_colors(n: int) -> list[Color]:
    """Distinct overlay colours: black background, then evenly spaced saturated hues."""

    cols: list[Color] = [(0, 0, 0)]
    for i in range(1, n):
        r, g, b = colorsys.hsv_to_rgb(((i - 1) * 0.618034) % 1.0, 0.85, 1.0)
        cols.append((round(r * 255), round(g * 255), round(b * 255)))
    return cols[:n]


def generic_class_set(num_seg_classes: int, num_activities: int) -> ClassSet:
    """Placeholder names for data sets without a classes.yaml."""
    return ClassSet(
        seg_classes=("background",) + tuple(f"class_{i}" for i in range(1, num_seg_classes)),
        seg_colors=tuple(default_colors(num_seg_classes)),
        activity_classes=tuple(f"activity_{i}" for i in range(num_activities)),
    )


# Colours follow the paper's figure (forceps red, flaps green, FPCW knife blue, electric knife
# purple, incision magenta, marking yellow-orange), nudged apart so overlays stay distinguishable.
MTLESD = ClassSet(
    seg_classes=tuple(MTLESD_SEG_CLASSES),
    seg_colors=((0, 0, 0), (230, 25, 25), (40, 200, 60), (30, 90, 235), (150, 60, 220),
                (240, 40, 200), (255, 170, 0)),
    activity_classes=tuple(MTLESD_ACTIVITY_CLASSES),
    activity_objects=(
        frozenset({MARKING_AREA, ELECTRIC_KNIFE}),
        frozenset({INCISION_AREA, MARKING_AREA, ELECTRIC_KNIFE}),
        frozenset({MUCOSAL_FLAPS, FPCW_FORCEPS, FPCW_KNIFE}),
    ),
)


def load_class_set(path: str | Path | None, default: ClassSet = MTLESD) -> ClassSet:
    """The class set in ``path`` (a YAML file or a directory holding classes.yaml), else ``default``."""
    if path is None:
        return default
    p = Path(path)
    if p.is_dir():
        p = p / CLASSES_YAML
    return ClassSet.load_yaml(p) if p.is_file() else default

"""Scores of 3D instrument geometry against stereo ground truth: tip and entry error (mm), tip-to-tissue error,
the fraction of visible instruments that got 3D, by depth.

A prediction is matched to the ground-truth instrument whose left-image tip is nearest to its tip (within
``match_radius_px``), each used once, whatever the two classes (the geometry is scored here; the segmentation's
classes elsewhere): ``class_mismatch`` counts the matches whose classes differ. A visible instrument (tip inside
both views) counts as "with 3D" when its match has 3D. Predictions with 3D that match no visible instrument are
counted as ``spurious_3d``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

DEFAULT_DEPTH_BINS_MM = (0.0, 50.0, 70.0, 90.0, 110.0, 1000.0)


class Predicted3D(NamedTuple):
    """One published instrument: class, left-image tip (px) and its 3D fields (metres, NaN when unknown)."""

    class_id: int
    tip_px: tuple[float, float]
    has_3d: bool
    tip_3d: tuple[float, float, float]
    entry_3d: tuple[float, float, float]
    tip_to_tissue_m: float


def _stats(values: Sequence[float]) -> dict:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if not len(v):
        return {"n": 0, "median": None, "p90": None, "mean": None, "max": None}
    return {"n": int(len(v)), "median": float(np.median(v)), "p90": float(np.percentile(v, 90)),
            "mean": float(v.mean()), "max": float(v.max())}


@dataclass
class _Bin:
    visible: int = 0
    with_3d: int = 0
    tip_mm: list[float] = field(default_factory=list)
    entry_mm: list[float] = field(default_factory=list)
    tissue_mm: list[float] = field(default_factory=list)


class StereoEvaluator:
    """Accumulates frames (``add``) and reports (``result``). ``focal_px`` and ``baseline_m`` give the physics
    floor: the depth of one pixel of disparity at each bin's centre, Z^2 / (f B). ``match_radius_px``: use about
    5 % of the image diagonal (``for_image``)."""

    @classmethod
    def for_image(cls, width: int, height: int, focal_px: float, baseline_m: float) -> StereoEvaluator:
        return cls(focal_px, baseline_m, match_radius_px=0.05 * math.hypot(width, height))

    def __init__(self, focal_px: float, baseline_m: float, *, depth_bins_mm=DEFAULT_DEPTH_BINS_MM,
                 match_radius_px: float = 80.0):
        self.focal_px, self.baseline_m = float(focal_px), float(baseline_m)
        self.edges = tuple(float(e) for e in depth_bins_mm)
        self.match_radius_px = match_radius_px
        self.bins = [_Bin() for _ in self.edges[:-1]]
        self.frames = 0
        self.spurious_3d = 0
        self.tissue_unknown = 0
        self.class_mismatch = 0

    def _bin(self, depth_mm: float) -> _Bin:
        i = int(np.searchsorted(self.edges, depth_mm, side="right")) - 1
        return self.bins[min(max(i, 0), len(self.bins) - 1)]

    def add(self, truth: Sequence[dict], predicted: Sequence[Predicted3D]) -> None:
        """One frame: ``truth`` as ``bag.stereo_bag`` writes it (``class_id``, ``tip_left_px``, ``tip_3d``,
        ``entry_3d``, ``tip_to_tissue_m``, ``visible``), ``predicted`` the published instruments."""
        self.frames += 1
        pairs = []
        for ti, t in enumerate(truth):
            for pi, p in enumerate(predicted):
                d = math.hypot(p.tip_px[0] - t["tip_left_px"][0], p.tip_px[1] - t["tip_left_px"][1])
                if d <= self.match_radius_px:
                    pairs.append((d + (p.class_id != t["class_id"]) * self.match_radius_px, ti, pi))
        match, used = {}, set()
        for _, ti, pi in sorted(pairs):
            if ti not in match and pi not in used:
                match[ti] = pi
                used.add(pi)
        for ti, t in enumerate(truth):
            if not t["visible"]:
                continue
            b = self._bin(t["tip_3d"][2] * 1000)
            b.visible += 1
            p = predicted[match[ti]] if ti in match else None
            if p is not None and p.class_id != t["class_id"]:
                self.class_mismatch += 1
            if p is None or not p.has_3d:
                continue
            b.with_3d += 1
            b.tip_mm.append(1000 * float(np.linalg.norm(np.subtract(p.tip_3d, t["tip_3d"]))))
            b.entry_mm.append(1000 * float(np.linalg.norm(np.subtract(p.entry_3d, t["entry_3d"]))))
            if math.isfinite(p.tip_to_tissue_m):
                b.tissue_mm.append(1000 * abs(p.tip_to_tissue_m - t["tip_to_tissue_m"]))
            else:
                self.tissue_unknown += 1
        matched_visible = {match[ti] for ti, t in enumerate(truth) if ti in match and t["visible"]}
        self.spurious_3d += sum(1 for pi, p in enumerate(predicted) if p.has_3d and pi not in matched_visible)

    def floor_mm(self, depth_mm: float) -> float:
        """Depth error of one pixel of disparity at ``depth_mm``."""
        z = depth_mm / 1000
        return 1000 * z * z / (self.focal_px * self.baseline_m)

    def result(self) -> dict:
        visible = sum(b.visible for b in self.bins)
        with_3d = sum(b.with_3d for b in self.bins)
        join = lambda name: [x for b in self.bins for x in getattr(b, name)]  # noqa: E731
        by_depth = []
        for lo, hi, b in zip(self.edges[:-1], self.edges[1:], self.bins):
            if not b.visible:
                continue
            tip = _stats(b.tip_mm)
            centre = float(np.median([lo, hi])) if hi < 1000 else lo + 10
            by_depth.append({"depth_mm": [lo, hi], "visible": b.visible, "with_3d": b.with_3d,
                             "fraction_3d": b.with_3d / b.visible, "tip_error_mm": tip,
                             "entry_error_mm": _stats(b.entry_mm), "tip_to_tissue_error_mm": _stats(b.tissue_mm),
                             "one_px_disparity_mm": self.floor_mm(centre)})
        return {"frames": self.frames, "visible": visible, "with_3d": with_3d,
                "fraction_3d": with_3d / visible if visible else None, "spurious_3d": self.spurious_3d,
                "class_mismatch": self.class_mismatch, "match_radius_px": self.match_radius_px,
                "tip_to_tissue_unknown": self.tissue_unknown, "tip_error_mm": _stats(join("tip_mm")),
                "entry_error_mm": _stats(join("entry_mm")), "tip_to_tissue_error_mm": _stats(join("tissue_mm")),
                "one_px_disparity_mm_at_100mm": self.floor_mm(100.0), "by_depth": by_depth}

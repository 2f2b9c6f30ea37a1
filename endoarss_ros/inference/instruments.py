"""Instrument instances from a class mask: regions, geometry (box, axis, tip, entry point) and stable ids.

An instrument is a connected region (8-connectivity) of an instrument class covering at least
``min_area_fraction`` of the frame. The geometry is computed on the mask shrunk by an integer factor ``f`` to a
long side of ``quality.ANALYSIS_SIDE`` pixels (every f-th pixel: the mask is an upsampled network output, so
little is lost), then given in input-image pixels. Per region:

* principal axis: the first eigenvector of the covariance of its pixel coordinates; ``elongation`` is the ratio of
  the standard deviations along and across it;
* entry end: the end of the axis farther from the image centre (instruments come in from the edge of the
  endoscope's view); the axis is oriented from there towards the other end;
* ``tip``: the mean of the region's pixels within ``TIP_BAND`` of its far end along the axis (the point between
  a grasper's jaw tips, the end of a knife);
* ``entry``: walking from the centroid along the axis towards the entry end, the last pixel inside the region:
  where the instrument's axis crosses into the view (the region is cut there by the view's edge);
* ``entry_at_view_edge``: the entry point has a pixel outside the view (dark in the analysis image, or off the
  frame) within ``EDGE_RADIUS``.

``InstrumentTracker`` gives each instrument an id that stays the same from frame to frame (see its docstring).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import cv2
import numpy as np

from .quality import DARK_LUMA, shrink_factor

TIP_BAND = 0.03  # of the region's length along its axis (at least 1 analysis pixel)
EDGE_RADIUS = 2  # analysis pixels


@dataclass(frozen=True)
class InstrumentSettings:
    """``classes``: names or ids of the instrument classes, () = from the model's class names
    (``model.config.instrument_class_ids``)."""

    classes: tuple[str, ...] = ()
    min_area_fraction: float = 0.002
    max_match_distance: float = 0.15  # of the image diagonal
    max_missed_frames: int = 5


@dataclass(frozen=True)
class Instrument:
    """One instrument instance; coordinates (x, y) in input-image pixels. ``id`` and ``seen_frames`` are 0 until
    ``InstrumentTracker.update`` sets them."""

    class_id: int
    confidence: float
    area_px: int
    area_fraction: float
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]  # x_offset, y_offset, width, height
    orientation: float  # radians, entry -> tip, 0 = +x, pi/2 = +y (down)
    elongation: float
    tip: tuple[float, float]
    entry: tuple[float, float]
    entry_at_view_edge: bool
    id: int = 0
    seen_frames: int = 0


def resolve_classes(spec, seg_classes: list[str]) -> list[int]:
    """Instrument class ids from names or ids (``spec``: an ``InstrumentSettings.classes``), or from the model's
    class names when ``spec`` is empty. Raises ValueError naming an unknown class."""
    from endoarss_ros.model.config import instrument_class_ids

    if not spec:
        return instrument_class_ids(seg_classes)
    ids = []
    for item in spec:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(seg_classes):
            ids.append(int(text))
            continue
        match = instrument_class_ids(seg_classes, [text])
        if not match:
            raise ValueError(f"instrument class {text!r} is not one of the model's classes {seg_classes}")
        ids.extend(match)
    return sorted(set(ids))


def shrink_mask(mask: np.ndarray, f: int) -> np.ndarray:
    """Every ``f``-th pixel (the centre one of each f x f block), ``(H // f, W // f)`` like the analysis image."""
    H, W = mask.shape
    if f == 1:
        return mask
    return np.ascontiguousarray(mask[f // 2::f, f // 2::f][: H // f, : W // f])


def extract(mask: np.ndarray, class_ids, *, confidence: np.ndarray | None = None, image: np.ndarray | None = None,
            min_area_fraction: float = InstrumentSettings.min_area_fraction) -> list[Instrument]:
    """The instrument regions of ``mask`` (uint8 class ids at the input resolution).

    ``confidence``: the model's top-class probability map (any resolution, resized here); ``image``: the frame's
    ``quality.analysis_rgb`` (the same shrunk size), for ``entry_at_view_edge`` (without it only the frame border
    counts as the view's edge). A region cut in two by another instrument lying across it is one instrument
    (see ``_join_occluded``).
    """
    H, W = mask.shape
    f = shrink_factor(H, W)
    small = shrink_mask(mask, f)
    h, w = small.shape
    min_area = max(1, math.ceil(min_area_fraction * h * w))
    counts = cv2.calcHist([small], [0], None, [256], [0, 256]).ravel()
    present = [int(c) for c in class_ids if counts[c] >= min_area]
    if not present:
        return []
    conf = None
    if confidence is not None:
        conf = cv2.resize(np.asarray(confidence, np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    lut = np.zeros(256, np.uint8)
    lut[list(class_ids)] = 1
    instrument_pixels = _Lazy(lambda: cv2.LUT(small, lut))  # only needed to join parts
    out = []
    for c in present:
        binary = (small == c).view(np.uint8)
        n, labels = cv2.connectedComponents(binary, connectivity=8)
        for part in _join_occluded(_components(binary, labels, n), instrument_pixels):
            if len(part.pts) < min_area:
                continue
            score = float(conf[part.pts[:, 1], part.pts[:, 0]].mean()) if conf is not None else float("nan")
            out.append(_geometry(part, labels, f, (H, W), image, c, score))
    return out


class _Lazy:
    """A value computed on first use."""

    def __init__(self, make):
        self._make, self._value = make, None

    def get(self):
        if self._value is None:
            self._value = self._make()
        return self._value


def _principal_axis(pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(centre, unit direction of the largest spread, variance along it, variance across it) of (n, 2) points."""
    centre = pts.mean(axis=0)
    c = pts - centre
    sxx, syy, sxy = float(c[:, 0] @ c[:, 0]), float(c[:, 1] @ c[:, 1]), float(c[:, 0] @ c[:, 1])
    n = max(1, len(pts))
    mean, root = (sxx + syy) / 2, math.hypot((sxx - syy) / 2, sxy)
    angle = 0.5 * math.atan2(2 * sxy, sxx - syy)
    return centre, np.array([math.cos(angle), math.sin(angle)]), (mean + root) / n, max(mean - root, 0.0) / n


class _Part:
    """Pixels (shrunk coordinates, (n, 2) int32 x, y) of one instrument: one component, or several joined across
    an occluder; the first (largest) component's pixels come first, the entry walk starts in it."""

    def __init__(self, pts: np.ndarray, label: int):
        self.pts, self.labels, self.first_size = pts, [label], len(pts)
        self._axis = None

    @property
    def axis(self) -> tuple[np.ndarray, np.ndarray, float, float, np.ndarray]:
        """``_principal_axis`` of the pixels, and each pixel's position along the axis (cached)."""
        if self._axis is None:
            xy = self.pts.astype(np.float64)
            centre, d, along_var, across_var = _principal_axis(xy)
            self._axis = (centre, d, along_var, across_var, (xy - centre) @ d)
        return self._axis

    def join(self, pts: np.ndarray, label: int) -> None:
        self.pts = np.concatenate([self.pts, pts])
        self.labels.append(label)
        self._axis = None


def _components(binary, labels, n) -> list[tuple[int, np.ndarray]]:
    """(label, (k, 2) int32 pixel coordinates x, y) of each component, largest first."""
    pts = cv2.findNonZero(binary).reshape(-1, 2)
    if n == 2:
        return [(1, pts)]
    lbl = labels[pts[:, 1], pts[:, 0]]
    parts = [(k, pts[lbl == k]) for k in range(1, n)]  # few components: one mask each beats a sort
    return sorted(parts, key=lambda p: -len(p[1]))


def _join_occluded(components, instrument_pixels: _Lazy) -> list[_Part]:
    """Components of one class, largest first; a smaller one lying on a larger one's axis beyond its end, with
    only instrument pixels (another instrument across it) between them, is joined to it."""
    parts: list[_Part] = []
    for k, pts in components:
        for part in parts:
            if _continues(part, pts, instrument_pixels):
                part.join(pts, k)
                break
        else:
            parts.append(_Part(pts, k))
    return parts


def _continues(part: _Part, pts: np.ndarray, instrument_pixels: _Lazy) -> bool:
    if len(part.pts) < 8:
        return False
    centre, d, _, across_var, proj = part.axis
    half_width = 2.0 * math.sqrt(max(across_var, 0.25))
    other = pts.mean(axis=0) - centre
    along, across = float(other @ d), abs(float(other @ np.array([-d[1], d[0]])))
    end = proj.max() if along > 0 else proj.min()
    if across > 2 * half_width or abs(along) <= abs(end):
        return False
    # between the part's end and the other component's nearest pixel, along the axis: instrument pixels only
    gap_to = min(((pts - centre) @ d) * np.sign(along))
    steps = np.arange(abs(end), gap_to, 0.5) * np.sign(along)
    ij = np.rint(centre[None, :] + steps[:, None] * d[None, :]).astype(np.int64)
    is_instrument = instrument_pixels.get()
    h, w = is_instrument.shape
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    return bool(ok.all() and is_instrument[ij[:, 1], ij[:, 0]].all())


def _geometry(part: _Part, labels, f, full_hw, image, class_id, score) -> Instrument:
    """One instrument's geometry (see the module docstring), in input pixels."""
    centre, d, along_var, across_var, proj = part.axis
    lo, hi = float(proj.min()), float(proj.max())
    h, w = labels.shape
    image_centre = np.array([(w - 1) / 2, (h - 1) / 2])
    if np.hypot(*(centre + d * hi - image_centre)) > np.hypot(*(centre + d * lo - image_centre)):
        d, proj, lo, hi = -d, -proj, -hi, -lo  # orient entry -> tip
    tip = part.pts[proj >= hi - max(1.0, TIP_BAND * (hi - lo))].mean(axis=0)
    start = centre if len(part.labels) == 1 else part.pts[: part.first_size].mean(axis=0)
    entry = _walk_to_entry(labels, part.labels[0], start, -d, hi - lo)
    if entry is None:
        entry = centre + d * lo
    H, W = full_hw
    x0, y0, bw, bh = cv2.boundingRect(part.pts)
    area = len(part.pts)

    def full(p):  # shrunk pixel -> input pixel (centre of the sampled pixel)
        return (float(min(W - 1, p[0] * f + f // 2)), float(min(H - 1, p[1] * f + f // 2)))

    return Instrument(
        class_id=class_id, confidence=score, area_px=int(area * f * f), area_fraction=area / (h * w),
        centroid=full(centre), bbox=(x0 * f, y0 * f, min(W, (x0 + bw) * f) - x0 * f, min(H, (y0 + bh) * f) - y0 * f),
        orientation=float(math.atan2(d[1], d[0])),
        elongation=math.sqrt(max(along_var, 1e-9) / max(across_var, 1e-9)),
        tip=full(tip), entry=full(entry), entry_at_view_edge=_at_view_edge(entry, image, labels.shape))


def _walk_to_entry(labels, k, start, direction, length) -> np.ndarray | None:
    """The last point of component ``k`` on the ray from ``start`` along ``direction`` (None if ``start`` is
    outside it)."""
    h, w = labels.shape
    steps = np.arange(0.0, length + 2.0, 0.5)
    x = np.rint(start[0] + steps * direction[0]).astype(np.int64)
    y = np.rint(start[1] + steps * direction[1]).astype(np.int64)
    inside = (x >= 0) & (x < w) & (y >= 0) & (y < h)
    inside[inside] = labels[y[inside], x[inside]] == k
    if not inside[0]:
        return None
    last = len(inside) - 1 if inside.all() else int(np.argmin(inside)) - 1
    return start + steps[last] * direction


def _at_view_edge(p, image, shape) -> bool:
    """Off the frame, or a dark pixel (every channel under quality.DARK_LUMA) of ``image``, within EDGE_RADIUS."""
    h, w = shape
    x, y = int(round(p[0])), int(round(p[1]))
    r = EDGE_RADIUS
    if x - r < 0 or y - r < 0 or x + r >= w or y + r >= h:
        return True
    if image is None or image.shape[:2] != shape:
        return False
    return bool((image[y - r:y + r + 1, x - r:x + r + 1].max(axis=2) < DARK_LUMA * 255).any())


@dataclass
class _Track:
    id: int
    class_id: int
    centroid: tuple[float, float]
    seen: int
    missed: int = 0


class InstrumentTracker:
    """Stable ids by frame-to-frame association.

    Each frame, every (track, instrument) pair of the same class whose centroids are closer than
    ``max_match_distance`` x the image diagonal is a candidate; pairs are taken greedily, nearest first, each
    track and instrument at most once. An unmatched instrument starts a new track with a new id (ids count up
    from 1 and are never reused); a track unmatched for more than ``max_missed_frames`` frames is dropped, so
    an instrument hidden for a few frames keeps its id.
    """

    def __init__(self, max_match_distance: float = InstrumentSettings.max_match_distance,
                 max_missed_frames: int = InstrumentSettings.max_missed_frames):
        self.max_match_distance = float(max_match_distance)
        self.max_missed_frames = int(max_missed_frames)
        self._tracks: list[_Track] = []
        self._next_id = 1

    def update(self, instruments: list[Instrument], image_hw: tuple[int, int]) -> list[Instrument]:
        """``instruments`` of one frame with their ``id`` and ``seen_frames`` set."""
        gate = self.max_match_distance * math.hypot(*image_hw)
        pairs = sorted((math.dist(t.centroid, inst.centroid), ti, ii)
                       for ti, t in enumerate(self._tracks) for ii, inst in enumerate(instruments)
                       if t.class_id == inst.class_id)
        assigned: dict[int, _Track] = {}
        used: set[int] = set()
        for dist, ti, ii in pairs:
            if dist >= gate:
                break
            if ti in used or ii in assigned:
                continue
            used.add(ti)
            assigned[ii] = self._tracks[ti]
        for i, inst in enumerate(instruments):
            track = assigned.get(i)
            if track is None:
                track = _Track(self._next_id, inst.class_id, inst.centroid, 0)
                self._next_id += 1
                self._tracks.append(track)
                used.add(len(self._tracks) - 1)
            track.centroid, track.seen, track.missed = inst.centroid, track.seen + 1, 0
            assigned[i] = track
        for ti, t in enumerate(self._tracks):
            if ti not in used:
                t.missed += 1
        self._tracks = [t for t in self._tracks if t.missed <= self.max_missed_frames]
        return [replace(inst, id=assigned[i].id, seen_frames=assigned[i].seen) for i, inst in enumerate(instruments)]

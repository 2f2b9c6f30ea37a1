"""Instruments in 3D: viewing rays from one camera, triangulated tips and entry points from a stereo pair, and the
distance from each tip to the tissue behind it.

Frames: every returned vector and point is in the LEFT camera's raw optical frame (REP 103: z forward, x right,
y down; the frame of the left camera_info's ``frame_id``): the geometry is computed in the rectified frame and
rotated back by ``R1``^T, because the raw frame is the one a robot's hand-eye calibration is made in. Units: metres.

``StereoGeometry.process`` per pair (each step timed in ``StereoResult.stage_ms``):

* ``match``: each view's instrument tips and entry points go to rectified pixels; a left instrument is paired
  with a right instrument of the same class whose axis (entry to tip, extended a little past the tip: the two
  views' masks may end a thin working end at different lengths) reaches the left tip's row at a disparity the
  rig's working range allows (greedy, best row agreement first; each used once).
* ``refine``: the disparity of the tip and of the entry point is measured on the image, to sub-pixel, within 30 %
  of the masks' disparity: a small window of the rectified left image, restricted to THIS instrument's own mask
  pixels (so the tissue seen between a forceps' jaws or beside a thin shaft does not pull the match), is compared
  along the same rows of the right image (masked sum of squared differences, plus a cost where the two views'
  masks of the instrument disagree; parabola through the minimum; no minimum inside the range, or one the
  other view's mask contradicts: not measured). The entry's disparity comes from a line fitted to disparities
  measured along the shaft (the entry often lies where the other camera cannot see it), and so does the tip's
  when its own window was not measured (hidden in the other view, or a thin working end segmented differently
  there; ``tip_depth_sigma`` is then larger). Windows are rectified on the fly from cached maps: raw
  (distorted) input costs no full-image remap.
* ``triangulate``: ``Z = fx' B / d``; the reprojection error is the distance in the right rectified image from
  the triangulated tip to the matched right instrument's (extended) axis; above ``max_reprojection_px`` (scaled
  with the image) the match is refused (``rejected``) and nothing 3D is published for it: a wrong match puts the
  tip on another instrument. The tip is the left mask's, moved along its axis to the right mask's tip when that
  one reaches further (the longer of the two segmentations of the working end).
* ``tissue_disparity``: the pair is reduced by an image pyramid (``tissue_downscale``) and rectified at that size;
  OpenCV's StereoSGBM runs on a window around each 3D tip (the whole reduced pair only when the disparity image
  is asked for); instrument pixels (left mask, dilated) are invalid. The tissue behind a tip is a plane fitted
  to the valid tissue disparities around the tip's pixel (the tip hides the tissue right behind it), read at the
  tip's pixel; ``tip_to_tissue`` = that point's depth minus the tip's depth, along the tip's ray, left frame.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from .camera_model import CameraInfoError, CameraModel, pixel_scale
from .frames import UYVY_ENCODINGS, YUYV_ENCODINGS
from .instruments import Instrument

_P_TOLERANCE = 1e-3  # relative agreement of the two rectified projections


class StereoRig:
    """Two calibrated cameras of a horizontal stereo pair, rectified to a common image (ROS convention)."""

    def __init__(self, left: CameraModel, right: CameraModel):
        self.left, self.right = left, right
        self.focal = left.focal_rectified
        self.baseline_m = -float(right.p[0, 3]) / self.focal
        self.frame_id = left.frame_id

    @classmethod
    def from_models(cls, left: CameraModel, right: CameraModel) -> StereoRig:
        """A validated rig; ``CameraInfoError`` when the two camera_infos cannot be a rectified pair."""
        if (left.width, left.height) != (right.width, right.height):
            raise CameraInfoError(f"left image {left.width}x{left.height} and right image "
                                  f"{right.width}x{right.height} differ in size")
        if left.frame_id and left.frame_id == right.frame_id:
            raise CameraInfoError(f"left and right camera_info have the same frame_id {left.frame_id!r}: the same "
                                  "camera's info on both sides?")
        lp, rp = left.p, right.p
        if abs(lp[0, 3]) > 1e-9 * lp[0, 0] and rp[0, 3] >= 0:
            raise CameraInfoError(f"P of the left camera has Tx = {lp[0, 3]:g} != 0 and the right Tx = {rp[0, 3]:g}"
                                  " >= 0 (baseline sign): left and right swapped?")
        if rp[0, 3] >= 0:
            raise CameraInfoError(f"P of the right camera has Tx = {rp[0, 3]:g} >= 0 (baseline sign): left and "
                                  "right swapped?")
        if abs(lp[0, 3]) > 1e-6 * abs(rp[0, 3]) or abs(lp[1, 3]) > 1e-9 or abs(rp[1, 3]) > 1e-9:
            raise CameraInfoError(f"P of the left camera has Tx = {lp[0, 3]:g}, Ty = {lp[1, 3]:g} (must be 0) or the "
                                  f"right Ty = {rp[1, 3]:g} != 0: not a horizontal pair rectified to the left camera")
        if np.abs(lp[:, :3] - rp[:, :3]).max() > _P_TOLERANCE * lp[0, 0]:
            raise CameraInfoError("left and right P differ beyond Tx (fx', fy', cx', cy'): the pair was not "
                                  "rectified together, or their ROIs/binning differ")
        rig = cls(left, right)
        if rig.baseline_m > 1.0:
            raise CameraInfoError(f"P of the right camera gives a baseline of {rig.baseline_m:.3g} m: Tx in "
                                  "pixel*millimetres? ROS expects Tx = -fx' * B with B in metres")
        return rig

    def for_image(self, width: int, height: int) -> StereoRig:
        """The rig for images of ``width`` x ``height`` (binning, ROI, scale of each camera folded in)."""
        return StereoRig.from_models(self.left.for_image(width, height), self.right.for_image(width, height))

    def depth_sigma(self, depth_m: float, disparity_sigma_px: float) -> float:
        """One standard deviation of depth from one of disparity: Z^2 / (f B) * sigma_d."""
        return depth_m * depth_m / (self.focal * self.baseline_m) * disparity_sigma_px

    def rectified_to_left(self, points_rect: np.ndarray) -> np.ndarray:
        """(N, 3) points of the left rectified frame -> the left raw optical frame (R1^T)."""
        return np.asarray(points_rect, np.float64) @ self.left.r


@dataclass(frozen=True, eq=False)
class Instrument3D:
    """The 3D fields of one instrument (see ``msg/Instrument.msg``). Metres, left raw optical frame."""

    tip_ray: np.ndarray
    has_3d: bool
    tip_3d: np.ndarray
    entry_3d: np.ndarray
    tip_depth_sigma: float
    tip_to_tissue: float
    reprojection_error_px: float

    @classmethod
    def absent(cls) -> Instrument3D:
        """The value of an instrument with no camera_info (2D only): zero ray and points, NaN unknowns."""
        return cls.ray_only(np.zeros(3))

    @classmethod
    def ray_only(cls, tip_ray) -> Instrument3D:
        """The value with a known viewing ray and no 3D point (mono, or unmatched in stereo)."""
        z = np.zeros(3)
        return cls(np.asarray(tip_ray, np.float64), False, z, z, math.nan, math.nan, math.nan)


def mono_geometry(camera: CameraModel, instruments: list[Instrument], *, rectified: bool = False
                  ) -> list[Instrument3D]:
    """Viewing rays of the instruments' tips (one camera: no depth). ``camera`` must be ``for_image`` of the
    image the instruments were found in."""
    if not instruments:
        return []
    rays = camera.rays(np.array([i.tip for i in instruments], np.float64), rectified=rectified)
    return [Instrument3D.ray_only(r) for r in rays]


@dataclass(frozen=True)
class StereoSettings:
    """Thresholds in pixels are for a 1000-px image diagonal and scale with the image (``pixel_scale``)."""

    min_depth_m: float = 0.03  # working range of the pair: bounds the disparities searched
    max_depth_m: float = 0.30
    max_row_error_px: float = 12.0  # rectified rows of a matched pair's tips (the masks' tips are coarse)
    max_reprojection_px: float = 10.0  # triangulated tip vs the right instrument's axis (rectified pixels)
    tip_extension: float = 0.15  # of an instrument's length: how far the two views' mask tips may disagree
    shaft_samples: tuple[float, ...] = (0.25, 0.6, 1.0)  # tip (0) -> entry (1): disparities along the shaft
    refine_window_px: int = 14  # half size of the matched window around a tip or entry point
    disparity_slack_px: float = 12.0  # the masks' disparity may lie this far outside the working range
    min_window_pixels: int = 40  # of the instrument inside the window, to trust its match
    silhouette_weight: float = 400.0  # cost of one pixel where the views' instrument masks disagree (grey^2)
    max_silhouette_mismatch: float = 0.75  # at the best match, pixels where the views' masks of the instrument
    # disagree, over its pixels in the window: above it the point is not measured (occluded in the other view);
    max_shaft_mismatch: float = 0.2  # the same along a shaft (wide windows: a wrong shift still overlaps a lot)
    disparity_sigma_px: float = 0.5  # disparity uncertainty of a refined match (for tip_depth_sigma)
    extrapolated_disparity_sigma_px: float = 1.5  # of a tip disparity extrapolated along the shaft
    tissue_downscale: int = 4
    tissue_block_size: int = 5  # SGBM
    tissue_uniqueness: int = 5
    tissue_mask_dilate_px: int = 2  # instrument mask dilation in the downscaled image
    tissue_fit_radius: float = 0.06  # tissue plane fit window half size, fraction of the image width (the
    # tip's own neighbourhood: close enough that the tissue is near-planar there)
    tissue_min_pixels: int = 30


@dataclass
class StereoResult:
    """One pair's geometry. ``disparity``: tissue disparity of the rectified left image downscaled by
    ``disparity_scale`` (float32, in pixels of that downscaled image; NaN = invalid or an instrument), or None;
    full-resolution disparity = value * ``disparity_scale``."""

    instruments: list[Instrument3D]
    disparity: np.ndarray | None = None
    disparity_scale: float = 1.0
    stage_ms: dict[str, float] = field(default_factory=dict)
    matched: int = 0
    rejected: int = 0
    reprojection_errors_px: list[float] = field(default_factory=list)


class _SmallPair(NamedTuple):
    left: np.ndarray  # reduced, rectified gray
    right: np.ndarray
    instrument: np.ndarray  # bool: instrument pixels (dilated) of the reduced rectified left view


@dataclass
class _View:
    instruments: list[Instrument]
    tips: np.ndarray  # (N, 2) rectified
    entries: np.ndarray


class StereoGeometry:
    """The 3D stage of a stereo pair (see the module docstring). One instance per rig and image size; not
    thread-safe (it caches rectification maps)."""

    STAGES = ("match", "refine", "triangulate", "tissue_disparity")

    def __init__(self, rig: StereoRig, settings: StereoSettings = StereoSettings(), *, rectified_input: bool = False,
                 instrument_classes=()):
        """``instrument_classes``: the mask's instrument class ids (masked out of the tissue disparity); empty =
        the classes of the pair's instruments."""
        self.rig, self.settings, self.rectified_input = rig, settings, rectified_input
        self.instrument_classes = {int(c) for c in instrument_classes}
        self.scale = pixel_scale(rig.left)
        f, b = rig.focal, rig.baseline_m
        self.d_min = f * b / settings.max_depth_m
        self.d_max = f * b / settings.min_depth_m
        self._maps: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._small_maps: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        if settings.tissue_downscale < 1 or settings.tissue_downscale & (settings.tissue_downscale - 1):
            raise ValueError(f"tissue_downscale must be a power of two, got {settings.tissue_downscale}")
        self._sgbm = None

    # --- public -------------------------------------------------------------------------------------------
    def process(self, left_image: np.ndarray, right_image: np.ndarray, left_mask: np.ndarray,
                right_mask: np.ndarray, left_instruments: list[Instrument], right_instruments: list[Instrument],
                *, want_disparity: bool = False) -> StereoResult:
        """The 3D fields of ``left_instruments`` (aligned), from the pair's images (RGB uint8), class masks and
        each view's instruments (``inference.instruments.extract`` of each view)."""
        self._check_sizes(left_image, right_image, left_mask, right_mask)
        stage = _Stopwatch()
        left = self._view(self.rig.left, left_instruments)
        right = self._view(self.rig.right, right_instruments)
        pairs = self._match(left, right)
        stage.lap("match")
        images = (left_image, right_image, left_mask, right_mask)
        refined = {li: self._refine_pair(images, left, right, li, ri) for li, ri in pairs.items()}
        stage.lap("refine")
        out, errors, rejected = self._triangulate(left, right, pairs, refined)
        stage.lap("triangulate")
        disparity = None
        if any(o.has_3d for o in out) or want_disparity:
            classes = self.instrument_classes or {i.class_id for i in (*left_instruments, *right_instruments)}
            lut = np.zeros(256, np.uint8)
            lut[list(classes)] = 255
            views = (left_image, right_image, left_mask, lut)
            out = [self._with_tissue(o, left.tips[i], views) for i, o in enumerate(out)]
            if want_disparity:
                disparity = self._full_disparity(self._small_pair(left_image, right_image, left_mask, classes))
        stage.lap("tissue_disparity")
        return StereoResult(out, disparity, float(self.settings.tissue_downscale), stage.ms,
                            len(pairs) - rejected, rejected, errors)

    def tissue_disparity(self, left_image: np.ndarray, right_image: np.ndarray, left_mask: np.ndarray,
                         classes) -> np.ndarray:
        """Tissue-only disparity of the whole pair (float32, pixels of the rectified left image downscaled by
        ``tissue_downscale``; NaN where invalid and on the pixels of the instrument ``classes``)."""
        return self._full_disparity(self._small_pair(left_image, right_image, left_mask, classes))

    # --- match --------------------------------------------------------------------------------------------
    def _view(self, camera: CameraModel, instruments: list[Instrument]) -> _View:
        if not instruments:
            return _View([], np.zeros((0, 2)), np.zeros((0, 2)))
        tips = camera.rectify_points(np.array([i.tip for i in instruments]), rectified=self.rectified_input)
        entries = camera.rectify_points(np.array([i.entry for i in instruments]), rectified=self.rectified_input)
        return _View(list(instruments), tips, entries)

    def _match(self, left: _View, right: _View) -> dict[int, int]:
        """left index -> right index: same class, and the right instrument's axis (extended past its tip, see
        ``_axis``) reaches the left tip's rectified row at a disparity of the working range; greedily, best
        row agreement first, each used once."""
        gate = self.settings.max_row_error_px * self.scale
        slack = self.settings.disparity_slack_px * self.scale
        candidates = []
        for li, a in enumerate(left.instruments):
            u, v = left.tips[li]
            for ri, b in enumerate(right.instruments):
                if a.class_id != b.class_id:
                    continue
                start, end = self._axis(right, ri)
                if abs(end[1] - start[1]) > gate:  # the axis crosses rows: its point on the tip's row
                    t = min(1.0, max(0.0, (v - start[1]) / (end[1] - start[1])))
                    point = start + t * (end - start)
                else:  # along the rows: the tip
                    point = right.tips[ri]
                row, d = abs(v - point[1]), u - point[0]
                if row <= gate and self.d_min - slack <= d <= self.d_max + slack:
                    candidates.append((row + 0.1 * abs(v - right.tips[ri, 1]), li, ri))
        pairs, used = {}, set()
        for _, li, ri in sorted(candidates):
            if li not in pairs and ri not in used:
                pairs[li] = ri
                used.add(ri)
        return pairs

    def _axis(self, view: _View, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(entry, tip extended by ``tip_extension`` of the length) of instrument ``i``, rectified pixels: the
        two views' masks may end a thin working end at different lengths (a model cuts it short in one)."""
        entry, tip = view.entries[i], view.tips[i]
        length = float(np.linalg.norm(tip - entry))
        extend = max(self.settings.max_reprojection_px * self.scale, self.settings.tip_extension * length)
        return entry, tip + (tip - entry) / max(length, 1e-9) * extend

    # --- refine -------------------------------------------------------------------------------------------
    def _refine_pair(self, images, left: _View, right: _View, li: int, ri: int):
        """(tip disparity or None, entry disparity or None, the tip's measured on its own window), on the images.

        The entry point often lies where the other camera cannot see it (at the edge of one view) and inside a
        wide shaft a window finds nothing to match: the entry's disparity comes from a line fitted along the
        shaft instead. For a straight 3D shaft the disparity is an affine function of the position along its
        image (inverse depth is affine along a projected line), so disparities measured at a few points from
        the tip to the entry (windows spanning the shaft's width) give the entry's by least squares."""
        instrument = left.instruments[li]
        class_id = instrument.class_id
        width = math.sqrt(instrument.area_px / max(instrument.elongation, 1.0))
        d_masks = float(left.tips[li, 0] - right.tips[ri, 0])
        tip = self._refine_point(images, class_id, left.tips[li], near=max(d_masks, self.d_min))
        samples = [(0.0, tip)] if tip is not None else []
        for t in self.settings.shaft_samples:
            point = left.tips[li] + t * (left.entries[li] - left.tips[li])
            near = _extrapolate(samples, t) or max(d_masks, self.d_min)
            d = self._refine_point(images, class_id, point, 0.75 * width, near=near,
                                   max_mismatch=self.settings.max_shaft_mismatch)
            if d is not None:
                samples.append((t, d))
        if len(samples) < 2:
            return tip, samples[0][1] if samples else None, tip is not None
        t, d = np.array(samples).T
        slope, intercept = np.polyfit(t, d, 1)
        # A working end the other view's mask contradicts (thin, segmented differently there): the shaft's line
        # extrapolated to the tip, with a larger uncertainty.
        return (tip if tip is not None else float(intercept)), float(slope + intercept), tip is not None

    def _refine_point(self, images, class_id: int, uv_rect, span_px: float = 0.0, near: float | None = None,
                      max_mismatch: float | None = None):
        """Sub-pixel disparity of the instrument's own pixels in a window around ``uv_rect`` (rectified left),
        or None (too few of its pixels there, or no clear minimum inside the working range).

        The cost is the squared image difference over the instrument's own pixels of the left window (never
        the tissue around or between its parts) plus ``silhouette_weight`` per pixel where the two views' masks
        of the instrument disagree: a thin, uniform electrode lying along the rows matches itself anywhere
        along its length, its silhouette's end does not."""
        left_image, right_image, left_mask, right_mask = images
        s = self.settings
        base = max(4, round(s.refine_window_px * self.scale))
        half = min(round(1.5 * base), max(base, round(span_px)))
        w, h = self.rig.left.width, self.rig.left.height
        u, v = round(float(uv_rect[0])), round(float(uv_rect[1]))
        x0, x1 = max(0, u - half), min(w, u + half + 1)
        y0, y1 = max(0, v - half), min(h, v + half + 1)
        lo, hi = self.d_min, self.d_max
        if near is not None:  # around the masks' disparity, or along a shaft from the disparities measured so far
            span = max(s.disparity_slack_px * self.scale, 0.3 * near)
            lo, hi = max(lo, near - span), min(hi, near + span)
        d_lo = max(math.floor(lo) - 2, x1 - w)
        d_hi = min(math.ceil(hi) + 2, x0)
        if x1 - x0 < 5 or y1 - y0 < 5 or d_hi - d_lo < 3:
            return None
        own = self._rectified_patch("left", left_mask, x0, x1, y0, y1, nearest=True) == class_id
        if int(own.sum()) < s.min_window_pixels * min(1.0, self.scale ** 2):
            return None
        template = _gray_float(self._rectified_patch("left", left_image, x0, x1, y0, y1))
        strip = _gray_float(self._rectified_patch("right", right_image, x0 - d_hi, x1 - d_lo, y0, y1))
        cost = cv2.matchTemplate(strip, template, cv2.TM_SQDIFF, mask=own.astype(np.float32)).ravel()
        right_own = self._rectified_patch("right", right_mask, x0 - d_hi, x1 - d_lo, y0, y1, nearest=True)
        xor = cv2.matchTemplate((right_own == class_id).astype(np.float32), own.astype(np.float32),
                                cv2.TM_SQDIFF).ravel()
        cost = cost + s.silhouette_weight * xor
        j = int(np.argmin(cost))  # column j of the strip = disparity d_hi - j
        if j == 0 or j == len(cost) - 1 or not np.isfinite(cost[j]):
            return None
        limit = s.max_silhouette_mismatch if max_mismatch is None else max_mismatch
        if xor[j] > limit * float(own.sum()):  # the other view's mask says it is not there
            return None  # (occluded there, or a wrong minimum)
        c0, c1, c2 = float(cost[j - 1]), float(cost[j]), float(cost[j + 1])
        curvature = c0 - 2 * c1 + c2
        offset = 0.5 * (c0 - c2) / curvature if curvature > 0 else 0.0
        return float(d_hi - (j + offset))

    def _rectified_patch(self, side: str, image: np.ndarray, x0, x1, y0, y1, *, nearest: bool = False):
        """Rows y0:y1, columns x0:x1 of ``image`` rectified (a view when the input is rectified already)."""
        if self.rectified_input:
            return image[y0:y1, x0:x1]
        m1, m2 = self._map(side)
        return cv2.remap(image, m1[y0:y1, x0:x1], m2[y0:y1, x0:x1],
                         cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    def _map(self, side: str):
        if side not in self._maps:
            cam = self.rig.left if side == "left" else self.rig.right
            self._maps[side] = _rectify_maps(cam, cam.p[:, :3], (cam.width, cam.height))
        return self._maps[side]

    # --- triangulate --------------------------------------------------------------------------------------
    def _triangulate(self, left: _View, right: _View, pairs: dict[int, int], refined: dict):
        rig, s = self.rig, self.settings
        cam = rig.left
        out = [Instrument3D.ray_only(r) for r in cam.rectified_rays(left.tips) @ cam.r] if len(left.tips) else []
        errors, rejected = [], 0
        limit = s.max_reprojection_px * self.scale
        for li, ri in pairs.items():
            d_tip, d_entry, tip_measured = refined[li]
            if d_tip is None or d_tip <= 0 or d_entry is None or d_entry <= 0:
                rejected += 1  # the image does not confirm the match: nothing to check it with
                errors.append(math.nan)
                continue
            # The triangulated tip seen by the right camera must lie on the right instrument (its axis): a
            # wrong match puts it on another one. Across the axis this is the reprojection error; along it the
            # masks may disagree by how much of a thin working end each view's segmentation kept.
            projected = np.array([left.tips[li, 0] - d_tip, left.tips[li, 1]])
            error = _distance_to_segment(projected, *self._axis(right, ri))
            errors.append(error)
            if error > limit:
                rejected += 1
                continue
            tip_px = self._farther_tip(left, right, li, ri, d_tip)
            tip_rect = self._point_rect(tip_px, d_tip)
            entry_rect = self._point_rect(left.entries[li], d_entry)
            tip = rig.rectified_to_left(tip_rect[None])[0]
            entry = rig.rectified_to_left(entry_rect[None])[0]
            sigma_px = s.disparity_sigma_px if tip_measured else s.extrapolated_disparity_sigma_px
            sigma = rig.depth_sigma(float(tip_rect[2]), sigma_px)
            out[li] = Instrument3D(tip / np.linalg.norm(tip), True, tip, entry, sigma, math.nan, error)
        return out, errors, rejected

    def _farther_tip(self, left: _View, right: _View, li: int, ri: int, d: float) -> np.ndarray:
        """The left tip, moved along the left axis to the right view's tip (seen with disparity ``d``) when that
        one reaches further (within the axis extension): the longer of the two masks' working ends."""
        tip, entry = left.tips[li], left.entries[li]
        axis = tip - entry
        length = float(np.linalg.norm(axis))
        if length < 1e-9:
            return tip
        axis /= length
        beyond = float((right.tips[ri] + (d, 0.0) - tip) @ axis)
        extend = max(self.settings.max_reprojection_px * self.scale, self.settings.tip_extension * length)
        if beyond <= 2.0 * self.scale:
            return tip
        return tip + axis * min(beyond, extend)

    def _point_rect(self, uv_rect, d: float) -> np.ndarray:
        """The left rectified frame's point seen at rectified left pixel ``uv_rect`` with disparity ``d``."""
        z = self.rig.focal * self.rig.baseline_m / d
        ray = np.linalg.solve(self.rig.left.p[:, :3], np.array([uv_rect[0], uv_rect[1], 1.0]))
        return ray / ray[2] * z

    # --- tissue -------------------------------------------------------------------------------------------
    # The pair is reduced with an image pyramid (pixel u of level f is pixel f*u of the image) and rectified
    # at that size; SGBM runs on a window around each tip (the whole reduced pair only for ``want_disparity``).
    def _sgbm_range(self) -> tuple[int, int]:
        """(minDisparity, numDisparities) of the working range at the reduced size."""
        f = self.settings.tissue_downscale
        lo = max(0, math.floor(self.d_min / f) - 1)
        return lo, max(16, math.ceil((self.d_max / f - lo + 2) / 16) * 16)

    def _matcher(self):
        if self._sgbm is None:
            s = self.settings
            lo, n = self._sgbm_range()
            b = s.tissue_block_size
            self._sgbm = cv2.StereoSGBM.create(minDisparity=lo, numDisparities=n, blockSize=b, P1=8 * b * b,
                                               P2=32 * b * b, uniquenessRatio=s.tissue_uniqueness,
                                               mode=cv2.STEREO_SGBM_MODE_SGBM)
        return self._sgbm

    def _small_pair(self, left_image, right_image, left_mask, classes) -> _SmallPair:
        f = self.settings.tissue_downscale
        lut = np.zeros(256, np.uint8)
        lut[list(classes)] = 255
        instrument = cv2.LUT(np.ascontiguousarray(left_mask[::f, ::f]), lut)
        small_l = self._small_rectified("left", _pyramid(_gray(left_image), f))
        small_r = self._small_rectified("right", _pyramid(_gray(right_image), f))
        instrument = self._small_rectified("left", instrument[: small_l.shape[0], : small_l.shape[1]], nearest=True)
        k = 2 * self.settings.tissue_mask_dilate_px + 1
        if k > 1:
            instrument = cv2.dilate(instrument, np.ones((k, k), np.uint8))
        return _SmallPair(small_l, small_r, instrument > 0)

    def _small_rectified(self, side: str, image: np.ndarray, *, nearest: bool = False) -> np.ndarray:
        """A pyramid level of the raw image, rectified at its size (as is for rectified input)."""
        if self.rectified_input:
            return image
        m1, m2 = self._small_map(side, image.shape[:2])
        return cv2.remap(image, m1, m2, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR)

    def _full_disparity(self, pair: _SmallPair) -> np.ndarray:
        lo, _ = self._sgbm_range()
        raw = self._matcher().compute(pair.left, pair.right)
        disparity = np.where(raw >= lo * 16, raw.astype(np.float32) / 16.0, np.nan).astype(np.float32)
        disparity[pair.instrument] = np.nan
        return disparity

    def _with_tissue(self, geometry: Instrument3D, tip_rect: np.ndarray, views) -> Instrument3D:
        if not geometry.has_3d:
            return geometry
        d = self._tissue_disparity_near(views, tip_rect)
        if not np.isfinite(d) or d <= 0:
            return geometry
        z_rect = self.rig.focal * self.rig.baseline_m / (d * self.settings.tissue_downscale)
        ray_rect = np.linalg.solve(self.rig.left.p[:, :3], np.array([tip_rect[0], tip_rect[1], 1.0]))
        tissue = self.rig.rectified_to_left((ray_rect / ray_rect[2] * z_rect)[None])[0]
        return Instrument3D(geometry.tip_ray, True, geometry.tip_3d, geometry.entry_3d, geometry.tip_depth_sigma,
                            float(tissue[2] - geometry.tip_3d[2]), geometry.reprojection_error_px)

    def _tissue_disparity_near(self, views, tip_rect) -> float:
        """Disparity (reduced pixels) of the tissue plane fitted around the tip, read at the tip; NaN when too
        few tissue pixels there have a valid disparity. Only the window around the tip is reduced, rectified
        and matched (SGBM)."""
        left_image, right_image, left_mask, lut = views
        s = self.settings
        f = s.tissue_downscale
        w, h = self.rig.left.width // f, self.rig.left.height // f
        u, v = float(tip_rect[0]) / f, float(tip_rect[1]) / f
        r = max(4, round(s.tissue_fit_radius * w))
        pad = s.tissue_block_size // 2 + 2
        x0, x1 = max(0, round(u) - r), min(w, round(u) + r + 1)
        y0, y1 = max(0, round(v) - r - pad), min(h, round(v) + r + pad + 1)
        lo, n = self._sgbm_range()
        cx0 = max(0, x0 - lo - n - pad)
        if x1 - x0 < 3 or y1 - y0 < 2 * pad + 3:
            return math.nan
        region = (cx0, x1, y0, y1)
        small_l = self._reduced_crop("left", left_image, region, _gray)
        small_r = self._reduced_crop("right", right_image, region, _gray)
        raw = self._matcher().compute(small_l, small_r)[:, x0 - cx0:]
        instrument = self._reduced_crop("left", left_mask, (x0, x1, y0, y1), lambda m: cv2.LUT(m, lut), nearest=True)
        k = 2 * s.tissue_mask_dilate_px + 1
        if k > 1:
            instrument = cv2.dilate(instrument, np.ones((k, k), np.uint8))
        valid = (raw >= lo * 16) & (instrument == 0)
        ys, xs = np.nonzero(valid)
        if len(xs) < s.tissue_min_pixels:
            return math.nan
        values = raw[ys, xs].astype(np.float64) / 16.0
        a = np.c_[xs + x0 - u, ys + y0 - v, np.ones(len(xs))]
        coef, *_ = np.linalg.lstsq(a, values, rcond=None)
        residual = np.abs(values - a @ coef)
        keep = residual <= max(0.5, 2.5 * 1.4826 * float(np.median(residual)))
        if keep.sum() >= s.tissue_min_pixels and not keep.all():
            coef, *_ = np.linalg.lstsq(a[keep], values[keep], rcond=None)
        return float(coef[2])

    def _reduced_crop(self, side: str, image: np.ndarray, region, convert, *, nearest: bool = False) -> np.ndarray:
        """Columns x0:x1, rows y0:y1 of the reduced rectified image of ``convert(image)`` (``image``: the
        full-resolution raw or rectified image): only the part of ``image`` the region needs is converted,
        reduced and rectified."""
        x0, x1, y0, y1 = region
        f = self.settings.tissue_downscale
        cam = self.rig.left if side == "left" else self.rig.right
        small_size = (cam.height // f, cam.width // f)
        if self.rectified_input:
            sx0, sx1, sy0, sy1 = x0, x1, y0, y1
        else:
            m1, m2 = self._small_map(side, small_size)
            sub1, sub2 = m1[y0:y1, x0:x1], m2[y0:y1, x0:x1]
            sx0, sy0 = (int(v) for v in sub1.reshape(-1, 2).min(axis=0))
            sx1, sy1 = (int(v) + 2 for v in sub1.reshape(-1, 2).max(axis=0))
        margin = 2  # reduced pixels: the pyramid's kernel support
        ox, oy = max(0, sx0 - margin), max(0, sy0 - margin)
        ex, ey = min(small_size[1], max(sx1 + margin, ox + 1)), min(small_size[0], max(sy1 + margin, oy + 1))
        part = convert(np.ascontiguousarray(image[oy * f: ey * f, ox * f: ex * f]))
        reduced = np.ascontiguousarray(part[::f, ::f]) if nearest else _pyramid(part, f)
        if self.rectified_input:
            out = reduced[y0 - oy: y1 - oy, x0 - ox: x1 - ox]
            return np.pad(out, ((0, y1 - y0 - out.shape[0]), (0, x1 - x0 - out.shape[1])), mode="edge")
        shift = np.array([ox, oy], np.int16)
        return cv2.remap(reduced, sub1 - shift, sub2, cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REPLICATE)

    def _small_map(self, side: str, small_size: tuple[int, int]):
        """Fixed-point maps from the reduced raw image (pyramid convention: u / f) to the reduced rectified one."""
        key = (side, small_size)
        if key not in self._small_maps:
            f = self.settings.tissue_downscale
            cam = self.rig.left if side == "left" else self.rig.right
            a = np.diag([1.0 / f, 1.0 / f, 1.0])
            small = CameraModel(cam.frame_id, small_size[1], small_size[0], cam.distortion_model, cam.d,
                                a @ cam.k, cam.r, a @ cam.p)
            self._small_maps[key] = _rectify_maps(small, small.p[:, :3], (small_size[1], small_size[0]))
        return self._small_maps[key]

    # --- checks -------------------------------------------------------------------------------------------
    def _check_sizes(self, *arrays) -> None:
        w, h = self.rig.left.width, self.rig.left.height
        for a in arrays:
            if a.shape[:2] != (h, w):
                raise CameraInfoError(f"image {a.shape[1]}x{a.shape[0]} does not match the stereo rig's "
                                      f"{w}x{h} (use StereoRig.for_image)")


def _extrapolate(samples: list[tuple[float, float]], t: float) -> float | None:
    """The disparity at ``t`` along a shaft from (t, disparity) samples: the line through the last two (one:
    itself; none: None). Disparity is affine along the image of a straight 3D shaft."""
    if not samples:
        return None
    if len(samples) == 1:
        return samples[0][1]
    (t0, d0), (t1, d1) = samples[-2:]
    return d1 + (d1 - d0) / (t1 - t0) * (t - t1)


def _distance_to_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip((p - a) @ ab / max(float(ab @ ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


class _Stopwatch:
    def __init__(self):
        self.ms: dict[str, float] = {}
        self._t = time.perf_counter()

    def lap(self, name: str) -> None:
        t = time.perf_counter()
        self.ms[name] = (t - self._t) * 1000.0
        self._t = t


def _rectify_maps(camera: CameraModel, new_k: np.ndarray, size: tuple[int, int]):
    """Fixed-point remap tables from the raw image to the rectified image of ``new_k`` at ``size``."""
    if camera.distortion_model == "equidistant":
        return cv2.fisheye.initUndistortRectifyMap(camera.k, camera.d, camera.r, new_k, size, cv2.CV_16SC2)
    return cv2.initUndistortRectifyMap(camera.k, camera.d, camera.r, new_k, size, cv2.CV_16SC2)


def frame_gray(frame) -> np.ndarray:
    """Full-resolution uint8 grey (luma) of a ``frames.RawFrame``: the 3D stage matches grey values."""
    p, e = frame.pixels, frame.encoding
    if e in YUYV_ENCODINGS or e in UYVY_ENCODINGS or e == "mono8":  # the Y bytes are the grey image
        return np.ascontiguousarray(p[:, :, 1 if e in UYVY_ENCODINGS else 0])
    if e.startswith("bgr"):
        code = cv2.COLOR_BGRA2GRAY if p.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    else:
        code = cv2.COLOR_RGBA2GRAY if p.shape[2] == 4 else cv2.COLOR_RGB2GRAY
    return cv2.cvtColor(np.ascontiguousarray(p), code)


def _pyramid(image: np.ndarray, factor: int) -> np.ndarray:
    """``image`` reduced ``factor`` (a power of two) times by Gaussian pyramid steps."""
    while factor > 1:
        image = cv2.pyrDown(image)
        factor //= 2
    return image


def _gray(image: np.ndarray) -> np.ndarray:
    return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _gray_float(image: np.ndarray) -> np.ndarray:
    return _gray(image).astype(np.float32)

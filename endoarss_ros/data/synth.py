"""Procedural endoscopic submucosal dissection (ESD) scenes with pixel masks and activity labels.

A ``Scene`` is the persistent part: mucosa texture (a canvas in scene coordinates, lesion at the
origin, 1 unit = the frame's shorter side at zoom 1), the marking ring, the incision path, the flap
and the optics (field of view, vignetting). A ``FrameState`` is what changes: activity, its
progress, camera pose, time. ``render`` draws a state of a scene; single frames draw a random
state of a random scene, sequences animate one scene.

Everything the activity does not decide (tissue colour, lighting, FOV, smoke, blood, camera) is
drawn from the same distributions for every activity, so a classifier has to look at the objects.
Images are drawn anti-aliased, masks with the same geometry without anti-aliasing; instruments are
drawn last and occlude tissue classes; pixels outside the FOV are background.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import cv2
import numpy as np

from .classes import (
    CIRCUMFERENTIAL_INCISION,
    ELECTRIC_KNIFE,
    FPCW_FORCEPS,
    FPCW_KNIFE,
    INCISION_AREA,
    MARKING,
    MARKING_AREA,
    MUCOSAL_FLAPS,
    SUBMUCOSAL_DISSECTION,
)

ACTIVITIES = (MARKING, CIRCUMFERENTIAL_INCISION, SUBMUCOSAL_DISSECTION)
CANVAS_HALF = 0.8  # the texture canvas covers [-0.8, 0.8]^2 scene units: enough for any allowed pose
ZOOM_RANGE = (0.85, 1.15)
CAM_OFFSET = 0.05  # max camera centre offset from the lesion (scene units), drift included
INCISION_SCALE = 1.25  # incision path = marking ring scaled up: ESD cuts just outside the marks
_SHIFT = 4  # cv2 sub-pixel bits: coordinates are passed as round(x * 16)
_ONE = 1 << _SHIFT

Rng = np.random.Generator


def _rng(rng_or_seed: Rng | int | None) -> Rng:
    return rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)


def _size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 16 or w < 16:
        raise ValueError(f"size too small: {size}")
    return int(h), int(w)


def _smooth_noise(rng: Rng, lo: int, shape: tuple[int, int]) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with ``lo`` blobs across: a low-res grid resized bicubic."""
    grid = rng.standard_normal((lo, lo)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _fix(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 sub-pixel coordinates for cv2 drawing with shift=_SHIFT."""
    return np.round(np.asarray(pts, np.float64) * _ONE).astype(np.int32)


def _rot(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


# --------------------------------------------------------------------------------------------
# Scene: what persists over a sequence
# --------------------------------------------------------------------------------------------


@dataclass
class Optics:
    """Endoscope field of view and lighting, in frame units (fractions of the shorter side)."""

    fov_radius: float  # circle radius; > 0.5 crops the circle at the frame border, as many scopes do
    fov_offset: tuple[float, float]
    vignette: float  # brightness lost at the FOV edge (quadratic falloff)
    light_dir: tuple[float, float]
    light_tilt: float
    gain: float


@dataclass
class Scene:
    canvas: np.ndarray  # float32 RGB in [0, 1], covers [-CANVAS_HALF, CANVAS_HALF]^2 scene units
    ppu: float  # canvas pixels per scene unit
    optics: Optics
    ring_axes: tuple[float, float]  # marking ring ellipse semi-axes (scene units)
    ring_angle: float
    dot_params: np.ndarray  # (N, 2): ellipse parameter angle, radial factor of each marking dot
    dot_radius: float
    incision_start: float  # ellipse parameter where the circumferential incision begins
    incision_dir: float  # +1 / -1
    incision_width: float
    flap_center: float  # ellipse parameter of the flap centre
    flap_half_width: float
    flap_wobble: np.ndarray  # (K,) harmonics that make the flap edge irregular
    flap_fibers: np.ndarray  # (F, 2): fibre positions along / across the flap, in [0, 1]
    single_entry: float  # angle (rad) at which the electric knife enters the FOV
    dual_entries: tuple[float, float]  # entry angles of the FPCW forceps and the FPCW knife
    knife_color: np.ndarray
    metal_color: np.ndarray
    shaft_color: np.ndarray
    smoke_level: float  # 0 = no smoke
    smoke_fields: np.ndarray  # (2, 6, 6) low-res fields blended over time
    camera_base: tuple[float, float, float, float]  # cx, cy, angle, zoom
    camera_drift: np.ndarray  # (4, 3, 3): per pose component, 3 sinusoids (amplitude, freq, phase)
    tremor: np.ndarray  # (2, 3, 3): instrument tip tremor sinusoids
    phase: float = field(default=0.0)

    def ring_point(self, theta: np.ndarray | float, scale: np.ndarray | float = 1.0) -> np.ndarray:
        """Points on the marking ring ellipse (scale 1) or a scaled copy, in scene units, (..., 2)."""
        theta = np.asarray(theta, np.float64)
        a, b = self.ring_axes
        local = np.stack([a * np.cos(theta) * scale, b * np.sin(theta) * scale], axis=-1)
        return local @ _rot(self.ring_angle).T


def _tissue_canvas(rng: Rng, n: int, ppu: float, lesion_r: float, blood: bool) -> np.ndarray:
    """Pink-red mucosa: colour drift, folds (shaded height field), fine grain, vessels, lesion,
    optional blood, specular highlights.

    Everything smooth is composed on a small grid and resized once, so the cost is a handful of
    full-resolution passes whatever the frame size.
    """
    lo = 64
    lo_ppu = lo / (2 * CANVAS_HALF)
    base = np.array([rng.uniform(0.70, 0.86), rng.uniform(0.26, 0.40), rng.uniform(0.24, 0.36)], np.float32)
    pale = np.array([0.88, 0.60, 0.54], np.float32)
    bright = _smooth_noise(rng, 5, (lo, lo))
    hue = _smooth_noise(rng, 4, (lo, lo))
    w_pale = np.clip(0.18 + 0.16 * hue, 0.0, 0.55)[..., None]
    color = base + w_pale * (pale - base)
    # Folds: shade a smooth height field by a light direction (cheap bump mapping).
    height = _smooth_noise(rng, 7, (lo, lo))
    gy, gx = np.gradient(height)
    la = rng.uniform(0, 2 * math.pi)
    shade = 1.0 + 0.10 * bright + 1.0 * (gx * math.cos(la) + gy * math.sin(la))
    # Lesion: a slightly paler, irregular patch at the origin (background class).
    k = np.arange(1, 4)
    amp, ph = rng.uniform(0.03, 0.10, 3), rng.uniform(0, 2 * math.pi, 3)
    th = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    rad = lesion_r * (1 + (amp[:, None] * np.cos(k[:, None] * th + ph[:, None])).sum(0))
    lesion = np.zeros((lo, lo), np.float32)
    blob = (np.stack([rad * np.cos(th), rad * np.sin(th)], -1) + CANVAS_HALF) * lo_ppu
    cv2.fillPoly(lesion, [_fix(blob)], 1.0, cv2.LINE_AA, _SHIFT)
    lesion = cv2.GaussianBlur(lesion, (0, 0), 0.8)[..., None]
    color = color * shade[..., None] * (1 + lesion * np.array([0.04, 0.12, 0.11], np.float32))
    tissue = cv2.resize(color, (n, n), interpolation=cv2.INTER_CUBIC)
    grain = (1.0 + 0.045 * _smooth_noise(rng, max(8, n // 6), (n, n))
             + 0.03 * _smooth_noise(rng, max(8, n // 2), (n, n)))
    tissue *= grain[..., None]

    def to_px(p: np.ndarray) -> np.ndarray:
        return (np.asarray(p) + CANVAS_HALF) * ppu

    # Vessels: thin dark-red random walks.
    thick = max(1, round(0.004 * ppu))
    for _ in range(int(rng.integers(4, 9))):
        k = int(rng.integers(20, 45))  # many short steps: smooth curves even at 1080p
        ang = rng.uniform(0, 2 * math.pi) + np.cumsum(rng.normal(0, 0.2, k))
        steps = rng.uniform(0.01, 0.025, k)[:, None] * np.stack([np.cos(ang), np.sin(ang)], -1)
        pts = rng.uniform(-0.7, 0.7, 2) + np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])
        a = rng.uniform(0.3, 0.6)
        col = base * (1 - a) + a * np.array([0.45, 0.06, 0.10], np.float32)
        cv2.polylines(tissue, [_fix(to_px(pts))], False, tuple(float(c) for c in col), thick,
                      cv2.LINE_AA, _SHIFT)

    if blood:
        # Dark red pools (background class: blood is not a segmentation class).
        for _ in range(int(rng.integers(1, 5))):
            c = _fix(to_px(rng.uniform(-0.45, 0.45, 2)))
            ax = rng.uniform(0.015, 0.07, 2) * ppu * _ONE
            cv2.ellipse(tissue, (c[0].item(), c[1].item()), (int(ax[0]), int(ax[1])), rng.uniform(0, 180),
                        0, 360, (0.30, 0.03, 0.04), -1, cv2.LINE_AA, _SHIFT)

    # Specular highlights: clusters of soft, elongated reflections (wet mucosa), on a half-res layer.
    hn = max(16, n // 2)
    hp = hn / (2 * CANVAS_HALF)
    spec = np.zeros((hn, hn), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        c0 = rng.uniform(-0.5, 0.5, 2)
        ang = rng.uniform(0, 180)
        for _ in range(int(rng.integers(2, 6))):
            c = _fix((c0 + rng.normal(0, 0.03, 2) + CANVAS_HALF) * hp)
            major = rng.uniform(0.006, 0.02) * hp
            ax = (int(major * _ONE), int(max(0.5, major * rng.uniform(0.25, 0.5)) * _ONE))
            cv2.ellipse(spec, (c[0].item(), c[1].item()), ax, ang + rng.normal(0, 20), 0, 360, 1.0, -1,
                        cv2.LINE_AA, _SHIFT)
    spec = cv2.GaussianBlur(spec, (0, 0), 0.004 * hp + 0.5)
    spec = np.clip(cv2.resize(spec, (n, n), interpolation=cv2.INTER_LINEAR) * 1.5, 0, 1)[..., None]
    tissue += spec * (1.0 - tissue)
    return np.clip(tissue, 0.0, 1.0, out=tissue)


def make_scene(rng_or_seed: Rng | int | None, size: int | tuple[int, int] = (224, 224), *,
               smoke: bool | None = None, blood: bool | None = None,
               smoke_prob: float = 0.3, blood_prob: float = 0.3) -> Scene:
    """A random scene for frames of ``size`` (H, W); smoke/blood None = random with the given probability."""
    rng = _rng(rng_or_seed)
    h, w = _size(size)
    unit = min(h, w)
    ppu = 0.75 * unit  # texture slightly coarser than the frame (warp upsamples ~1.1-1.5x): it is soft anyway
    n = int(2 * CANVAS_HALF * ppu)
    lesion_r = rng.uniform(0.10, 0.15)
    has_blood = rng.random() < blood_prob if blood is None else blood
    has_smoke = rng.random() < smoke_prob if smoke is None else smoke
    canvas = _tissue_canvas(rng, n, ppu, lesion_r, has_blood)

    ring_r = lesion_r * rng.uniform(1.3, 1.45)
    ring_axes = (ring_r * rng.uniform(0.92, 1.08), ring_r * rng.uniform(0.85, 1.0))
    n_dots = int(rng.integers(8, 15))
    start = rng.uniform(0, 2 * math.pi)
    spacing = 2 * math.pi / n_dots
    dot_theta = start + spacing * (np.arange(n_dots) + rng.uniform(-0.15, 0.15, n_dots))
    dot_params = np.stack([dot_theta, 1 + rng.uniform(-0.04, 0.04, n_dots)], -1)

    optics = Optics(
        fov_radius=rng.uniform(0.46, 0.56),
        fov_offset=(rng.uniform(-0.02, 0.02), rng.uniform(-0.02, 0.02)),
        vignette=rng.uniform(0.30, 0.55),
        light_dir=tuple(_rot(rng.uniform(0, 2 * math.pi)) @ np.array([1.0, 0.0])),
        light_tilt=rng.uniform(0.0, 0.18),
        gain=rng.uniform(0.95, 1.12),
    )
    left = rng.uniform(math.radians(110), math.radians(160))
    right = rng.uniform(math.radians(20), math.radians(70))
    dual = (left, right) if rng.random() < 0.5 else (right, left)
    drift = np.stack([
        np.stack([rng.uniform(0, a, 3), rng.uniform(0.03, 0.25, 3), rng.uniform(0, 2 * math.pi, 3)], -1)
        for a in (0.01, 0.01, 0.03, 0.02)
    ])
    tremor = np.stack([
        np.stack([rng.uniform(0, 0.004, 3), rng.uniform(0.4, 1.8, 3), rng.uniform(0, 2 * math.pi, 3)], -1)
        for _ in range(2)
    ])
    grey = rng.uniform(0.85, 1.1)
    return Scene(
        canvas=canvas, ppu=ppu, optics=optics, ring_axes=ring_axes, ring_angle=rng.uniform(0, math.pi),
        dot_params=dot_params, dot_radius=rng.uniform(0.013, 0.018),
        incision_start=rng.uniform(0, 2 * math.pi), incision_dir=float(rng.choice([-1.0, 1.0])),
        incision_width=rng.uniform(0.014, 0.02),
        flap_center=rng.uniform(0, 2 * math.pi), flap_half_width=rng.uniform(1.0, 1.6),
        flap_wobble=rng.uniform(-0.06, 0.06, 4), flap_fibers=rng.uniform(0, 1, (int(rng.integers(3, 7)), 2)),
        single_entry=rng.uniform(math.radians(25), math.radians(155)), dual_entries=dual,
        knife_color=np.array([0.55, 0.63, 0.72], np.float32) * grey,
        metal_color=np.array([0.72, 0.72, 0.74], np.float32) * grey,
        shaft_color=np.array([0.30, 0.31, 0.33], np.float32) * grey,
        smoke_level=rng.uniform(0.15, 0.45) if has_smoke else 0.0,
        smoke_fields=rng.standard_normal((2, 6, 6)).astype(np.float32),
        camera_base=(rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(-0.3, 0.3),
                     rng.uniform(ZOOM_RANGE[0] + 0.03, ZOOM_RANGE[1] - 0.03)),
        camera_drift=drift, tremor=tremor, phase=rng.uniform(0, 100),
    )


# --------------------------------------------------------------------------------------------
# Frame state: what changes from frame to frame
# --------------------------------------------------------------------------------------------


@dataclass
class FrameState:
    activity: int
    progress: float  # 0..1 through the activity (dots placed, incision length, flap lift)
    camera: tuple[float, float, float, float]  # cx, cy (scene units), angle (rad), zoom
    t: float = 0.0  # seconds, drives tremor, jaw opening, smoke and dissection strokes


def camera_at(scene: Scene, t: float) -> tuple[float, float, float, float]:
    """Slowly drifting camera: the base pose plus a few low-frequency sinusoids per component."""
    d = scene.camera_drift
    wave = (d[..., 0] * np.sin(2 * math.pi * d[..., 1] * t + d[..., 2])).sum(-1)
    cx, cy, ang, zoom = scene.camera_base
    off = np.clip(np.array([cx, cy]) + wave[:2], -CAM_OFFSET, CAM_OFFSET)
    return (float(off[0]), float(off[1]), float(ang + wave[2]),
            float(np.clip(zoom * (1 + wave[3]), *ZOOM_RANGE)))


def random_state(rng: Rng, scene: Scene, activity: int, progress: float | None = None) -> FrameState:
    t = rng.uniform(0, 60)
    p = rng.uniform(0, 1) if progress is None else float(progress)
    return FrameState(activity, p, camera_at(scene, t), t)


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


class _Frame:
    """Frame geometry: FOV centre/radius in pixels and the scene -> pixel affine map."""

    def __init__(self, scene: Scene, camera: tuple[float, float, float, float], h: int, w: int):
        self.h, self.w = h, w
        self.unit = float(min(h, w))
        o = scene.optics
        self.center = np.array([w / 2 + o.fov_offset[0] * self.unit, h / 2 + o.fov_offset[1] * self.unit])
        self.fov_r = o.fov_radius * self.unit
        cx, cy, ang, zoom = camera
        self.scale = self.unit * zoom  # pixels per scene unit
        lin = self.scale * _rot(ang)
        self.affine = np.concatenate([lin, (self.center - lin @ np.array([cx, cy]))[:, None]], 1)

    def px(self, pts: np.ndarray) -> np.ndarray:
        pts = np.asarray(pts, np.float64)
        return pts @ self.affine[:, :2].T + self.affine[:, 2]

    def canvas_affine(self, scene: Scene) -> np.ndarray:
        # canvas pixel c -> scene point c / ppu - half -> frame pixel
        lin = self.affine[:, :2] / scene.ppu
        offset = self.affine[:, 2] - self.affine[:, :2] @ np.full(2, CANVAS_HALF)
        return np.concatenate([lin, offset[:, None]], 1)


def _poly(img: np.ndarray, mask: np.ndarray | None, pts: np.ndarray, color, cls: int | None = None) -> None:
    p = [_fix(pts)]
    cv2.fillPoly(img, p, tuple(float(c) for c in color), cv2.LINE_AA, _SHIFT)
    if mask is not None:
        cv2.fillPoly(mask, p, int(cls), cv2.LINE_8, _SHIFT)


def _line(img, mask, a, b, color, width: float, cls: int | None = None) -> None:
    t = max(1, round(width))
    pa, pb = tuple(_fix(a).tolist()), tuple(_fix(b).tolist())
    cv2.line(img, pa, pb, tuple(float(c) for c in color), t, cv2.LINE_AA, _SHIFT)
    if mask is not None:
        cv2.line(mask, pa, pb, int(cls), t, cv2.LINE_8, _SHIFT)


def _circle(img, mask, c, r: float, color, cls: int | None = None) -> None:
    pc, rr = tuple(_fix(c).tolist()), max(_ONE // 2, int(round(r * _ONE)))
    cv2.circle(img, pc, rr, tuple(float(v) for v in color), -1, cv2.LINE_AA, _SHIFT)
    if mask is not None:
        cv2.circle(mask, pc, rr, int(cls), -1, cv2.LINE_8, _SHIFT)


def _dots_placed(scene: Scene, state: FrameState) -> int:
    n = len(scene.dot_params)
    if state.activity == MARKING:
        return min(n, 2 + int(state.progress * (n - 2)))  # at least two marks: the activity shows them
    return n if state.activity == CIRCUMFERENTIAL_INCISION else 0


def _dot_scene(scene: Scene, i: int) -> np.ndarray:
    theta, f = scene.dot_params[i]
    return scene.ring_point(theta, f)


def _draw_marks(img, mask, scene: Scene, fr: _Frame, n: int) -> None:
    r = scene.dot_radius * fr.scale
    centers = fr.px(scene.ring_point(scene.dot_params[:n, 0], scene.dot_params[:n, 1]))
    for c in centers:
        # Cauterised mark: charred brown rim, whitish coagulated centre.
        _circle(img, mask, c, r, (0.33, 0.18, 0.12), MARKING_AREA)
        _circle(img, None, c, 0.55 * r, (0.93, 0.87, 0.76))


def _incision_theta(scene: Scene, progress: float) -> np.ndarray:
    span = 2 * math.pi * (0.12 + 0.88 * progress)  # a visible cut from the first frame on
    k = max(4, int(span / 0.05))
    return scene.incision_start + scene.incision_dir * np.linspace(0, span, k)


def _draw_incision(img, mask, scene: Scene, fr: _Frame, progress: float) -> np.ndarray:
    pts = fr.px(scene.ring_point(_incision_theta(scene, progress), INCISION_SCALE))
    wid = max(1, round(scene.incision_width * fr.scale))
    closed = progress >= 0.999
    p = [_fix(pts)]
    # Charred edges, then the whitish-blue submucosa exposed in the cut.
    cv2.polylines(img, p, closed, (0.22, 0.08, 0.07), wid, cv2.LINE_AA, _SHIFT)
    cv2.polylines(img, p, closed, (0.80, 0.84, 0.93), max(1, round(wid * 0.45)), cv2.LINE_AA, _SHIFT)
    cv2.polylines(mask, p, closed, INCISION_AREA, wid, cv2.LINE_8, _SHIFT)
    return pts[-1]


def _flap_geometry(scene: Scene, progress: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outer arc (along the incision) and inner edge (lifted mucosa edge) of the flap, scene units."""
    th = scene.flap_center + np.linspace(-scene.flap_half_width, scene.flap_half_width, 24)
    u = np.linspace(-1, 1, 24)
    k = np.arange(1, len(scene.flap_wobble) + 1)
    wobble = (scene.flap_wobble[:, None] * np.sin(k[:, None] * (u + 1) * math.pi)).sum(0)
    depth = (0.40 + 0.45 * progress) * (0.35 + 0.65 * np.cos(u * math.pi / 2)) + wobble
    outer = scene.ring_point(th, INCISION_SCALE * 1.03)
    inner = scene.ring_point(th, np.clip(INCISION_SCALE - depth, 0.3, INCISION_SCALE))
    return outer, inner, th


def _draw_flap(img, mask, scene: Scene, fr: _Frame, progress: float):
    outer, inner, _ = _flap_geometry(scene, progress)
    po, pi = fr.px(outer), fr.px(inner)
    _poly(img, mask, np.concatenate([po, pi[::-1]]), (0.46, 0.56, 0.80), MUCOSAL_FLAPS)
    # Blue (indigo-stained submucosa) at the cut, whiter towards the lifted edge: nested bands.
    for f, col in ((0.3, (0.62, 0.70, 0.88)), (0.6, (0.78, 0.82, 0.92)), (0.85, (0.90, 0.90, 0.94))):
        band = po + f * (pi - po)
        _poly(img, None, np.concatenate([band, pi[::-1]]), col)
    for a, b in scene.flap_fibers:  # white connective fibres across the submucosa
        i = int(a * (len(po) - 1))
        _line(img, None, po[i], po[i] + (0.4 + 0.5 * b) * (pi[i] - po[i]), (0.96, 0.96, 0.97),
              max(1.0, 0.004 * fr.scale))
    # The lifted mucosa edge: a pink rim with a dark crease underneath.
    for col, wid in (((0.35, 0.15, 0.15), 0.012), ((0.86, 0.52, 0.50), 0.006)):
        cv2.polylines(img, [_fix(pi)], False, col, max(1, round(wid * fr.scale)), cv2.LINE_AA, _SHIFT)
    return po, pi


def _draw_shaft(img, mask, entry, base, w0, w1, color, cls) -> tuple[np.ndarray, np.ndarray]:
    """Tapered instrument shaft from the FOV edge to ``base``, with a specular streak and a dark edge."""
    d = base - entry
    d = d / (np.linalg.norm(d) + 1e-9)
    n = np.array([-d[1], d[0]])
    _poly(img, mask, np.array([entry + n * w0 / 2, base + n * w1 / 2, base - n * w1 / 2, entry - n * w0 / 2]),
          color, cls)
    hi = np.minimum(np.asarray(color) * 1.7 + 0.25, 1.0)
    _line(img, None, entry + n * w0 * 0.18, base + n * w1 * 0.18, hi, max(1.0, w1 * 0.16))
    dark = np.asarray(color) * 0.45
    _line(img, None, entry - n * w0 * 0.38, base - n * w1 * 0.38, dark, max(1.0, w1 * 0.1))
    return d, n


def _draw_electric_knife(img, mask, scene: Scene, fr: _Frame, entry, tip) -> None:
    s = fr.scale
    d = tip - entry
    d = d / (np.linalg.norm(d) + 1e-9)
    base = tip - d * 0.06 * s
    _draw_shaft(img, mask, entry, base, 0.085 * s, 0.05 * s, scene.knife_color, ELECTRIC_KNIFE)
    # Metal electrode needle with a bright ball tip.
    _line(img, mask, base, tip, scene.metal_color, 0.013 * s, ELECTRIC_KNIFE)
    _circle(img, mask, tip, 0.011 * s, (0.95, 0.95, 0.92), ELECTRIC_KNIFE)


def _draw_forceps(img, mask, scene: Scene, fr: _Frame, entry, tip, opening: float) -> None:
    s = fr.scale
    jaw = 0.07 * s
    d = tip - entry
    d = d / (np.linalg.norm(d) + 1e-9)
    joint = tip - d * jaw * math.cos(opening)
    base = joint - d * 0.03 * s
    w1 = 0.065 * s
    _, n = _draw_shaft(img, mask, entry, base, 0.11 * s, w1, scene.shaft_color, FPCW_FORCEPS)
    # Black wrist joint, then two jaws opening symmetrically.
    _poly(img, mask, np.array([base + n * w1 * 0.5, joint + n * w1 * 0.45, joint - n * w1 * 0.45,
                               base - n * w1 * 0.5]), (0.08, 0.08, 0.09), FPCW_FORCEPS)
    for sgn in (1.0, -1.0):
        jt = joint + jaw * (d * math.cos(opening) + sgn * n * math.sin(opening))
        _poly(img, mask, np.array([joint + sgn * n * w1 * 0.42, joint + sgn * n * w1 * 0.02, jt]),
              scene.metal_color, FPCW_FORCEPS)
        shine = np.minimum(scene.metal_color * 1.3, 1)
        _line(img, None, joint + sgn * n * w1 * 0.25, jt, shine, max(1.0, 0.004 * s))


def _draw_hook_knife(img, mask, scene: Scene, fr: _Frame, entry, tip) -> None:
    s = fr.scale
    d = tip - entry
    d = d / (np.linalg.norm(d) + 1e-9)
    n = np.array([-d[1], d[0]])
    rod = 0.06 * s
    joint = tip - d * rod
    base = joint - d * 0.03 * s
    w1 = 0.058 * s
    _draw_shaft(img, mask, entry, base, 0.10 * s, w1, scene.shaft_color, FPCW_KNIFE)
    _poly(img, mask, np.array([base + n * w1 * 0.5, joint + n * w1 * 0.4, joint - n * w1 * 0.4,
                               base - n * w1 * 0.5]), (0.08, 0.08, 0.09), FPCW_KNIFE)
    # Straight electrode and a short hook bent sideways at its end.
    _line(img, mask, joint, tip, scene.metal_color, 0.016 * s, FPCW_KNIFE)
    _line(img, mask, tip, tip + n * 0.03 * s - d * 0.006 * s, scene.metal_color, 0.016 * s, FPCW_KNIFE)
    _circle(img, None, tip - d * 0.02 * s, 0.004 * s, (0.98, 0.98, 0.98))


def _entry_px(fr: _Frame, angle: float) -> np.ndarray:
    return fr.center + 1.12 * fr.fov_r * np.array([math.cos(angle), math.sin(angle)])


def _tremor(scene: Scene, t: float, which: int, fr: _Frame) -> np.ndarray:
    tr = scene.tremor[which]
    return fr.scale * (tr[:, 0] * np.sin(2 * math.pi * tr[:, 1] * t + tr[:, 2])).sum() * np.array([1.0, 0.6])


def _light_map(scene: Scene, fr: _Frame) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel illumination (vignetting, tilted light, soft FOV edge) and the hard FOV disc."""
    o = scene.optics
    ys = np.arange(fr.h, dtype=np.float32)[:, None] - np.float32(fr.center[1])
    xs = np.arange(fr.w, dtype=np.float32)[None, :] - np.float32(fr.center[0])
    r = np.sqrt(xs * xs + ys * ys)
    rn = r / np.float32(fr.fov_r)
    tilt = (xs * np.float32(o.light_dir[0]) + ys * np.float32(o.light_dir[1])) / np.float32(fr.fov_r)
    light = (np.float32(o.gain) * (1 - np.float32(o.vignette) * rn * rn)
             * (1 + np.float32(o.light_tilt) * tilt))
    edge = np.clip(np.float32(fr.fov_r) - r + 0.5, 0, 1)  # 1-pixel anti-aliased rim
    return (light * edge)[..., None], r <= fr.fov_r


class InstrumentPose(NamedTuple):
    """Where the renderer puts one instrument, in pixels of the frame: the shaft is drawn from ``entry``
    (outside the field of view) to ``tip``; ``opening`` is the forceps' jaw angle (rad)."""

    class_id: int
    entry: np.ndarray
    tip: np.ndarray
    opening: float = 0.0


def _instrument_poses(scene: Scene, state: FrameState, fr: _Frame) -> list[InstrumentPose]:
    """The instruments of ``state`` in drawing order (a later one occludes an earlier one)."""
    a, t = state.activity, state.t
    if a == SUBMUCOSAL_DISSECTION:
        outer, inner, _ = _flap_geometry(scene, state.progress)
        po, pi = fr.px(outer), fr.px(inner)
        k = len(po)
        stroke = 0.5 + 0.35 * math.sin(2 * math.pi * 0.25 * t + scene.phase)  # knife sweeps along the base
        knife_tip = po[int(stroke * (k - 1))] + 0.3 * (pi[int(stroke * (k - 1))] - po[int(stroke * (k - 1))])
        grip = pi[k // 2 + int(0.15 * k * math.sin(2 * math.pi * 0.1 * t + scene.phase))]
        opening = 0.12 + 0.16 * (0.5 + 0.5 * math.sin(2 * math.pi * 0.35 * t + scene.phase))
        e_forceps, e_knife = (_entry_px(fr, ang) for ang in scene.dual_entries)
        return [InstrumentPose(FPCW_KNIFE, e_knife, knife_tip + _tremor(scene, t, 1, fr)),
                InstrumentPose(FPCW_FORCEPS, e_forceps, grip + _tremor(scene, t, 0, fr), opening)]
    if a == MARKING:
        # The knife travels from the last mark to the next one.
        n, n_dots = len(scene.dot_params), _dots_placed(scene, state)
        frac = state.progress * (n - 2) - int(state.progress * (n - 2)) if n_dots < n else 0.0
        frac = frac * frac * (3 - 2 * frac)
        p0 = _dot_scene(scene, n_dots - 1)
        p1 = _dot_scene(scene, min(n_dots, n - 1))
        tip = fr.px(p0 + frac * (p1 - p0)) + 0.006 * fr.scale * np.array([1.0, -1.0])
    elif a == CIRCUMFERENTIAL_INCISION:
        tip = fr.px(scene.ring_point(_incision_theta(scene, state.progress), INCISION_SCALE))[-1]  # the cut's end
    else:
        raise ValueError(f"unknown activity {a}")
    return [InstrumentPose(ELECTRIC_KNIFE, _entry_px(fr, scene.single_entry), tip + _tremor(scene, t, 0, fr))]


_DRAW_INSTRUMENT = {FPCW_KNIFE: lambda img, mask, scene, fr, p: _draw_hook_knife(img, mask, scene, fr, p.entry, p.tip),
                    FPCW_FORCEPS: lambda img, mask, scene, fr, p: _draw_forceps(img, mask, scene, fr, p.entry, p.tip,
                                                                                p.opening),
                    ELECTRIC_KNIFE: lambda img, mask, scene, fr, p: _draw_electric_knife(img, mask, scene, fr,
                                                                                         p.entry, p.tip)}


class InstrumentTruth(NamedTuple):
    """Ground truth of one rendered instrument, in pixels (x, y) of the frame.

    ``tip``: the instrument's working end (electrode ball or hook, or the point between the forceps' jaw tips);
    ``entry``: where its axis crosses into the visible view (the field-of-view circle, cropped by the frame
    border); ``tip_visible``: the tip lies inside the view.
    """

    class_id: int
    tip: tuple[float, float]
    entry: tuple[float, float]
    tip_visible: bool


def _view_exit(fr: _Frame, inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    """The point where the segment from ``inside`` (in the view) towards ``outside`` leaves the view (the FOV
    disc intersected with the frame rectangle)."""
    d = outside - inside
    f = inside - fr.center
    a, b, c = d @ d, 2 * f @ d, f @ f - fr.fov_r ** 2
    s = (-b + math.sqrt(max(b * b - 4 * a * c, 0.0))) / (2 * a)  # the disc: the larger root
    for k, size in ((0, fr.w), (1, fr.h)):  # the frame border
        if d[k] > 0:
            s = min(s, (size - inside[k]) / d[k])
        elif d[k] < 0:
            s = min(s, -inside[k] / d[k])
    return inside + max(0.0, min(1.0, s)) * d


def instrument_truth(scene: Scene, state: FrameState, size: int | tuple[int, int]) -> list[InstrumentTruth]:
    """Tip and entry point of every instrument ``render`` draws for ``state`` at ``size``."""
    h, w = _size(size)
    fr = _Frame(scene, state.camera, h, w)
    out = []
    for pose in _instrument_poses(scene, state, fr):
        visible = bool(np.hypot(*(pose.tip - fr.center)) <= fr.fov_r and 0 <= pose.tip[0] < w and 0 <= pose.tip[1] < h)
        entry = _view_exit(fr, pose.tip, pose.entry)
        out.append(InstrumentTruth(int(pose.class_id), (float(pose.tip[0]), float(pose.tip[1])),
                                   (float(entry[0]), float(entry[1])), visible))
    return out


def render(scene: Scene, state: FrameState, size: int | tuple[int, int], rng: Rng | None = None, *,
           sensor_noise: float = 1.5, light: tuple[np.ndarray, np.ndarray] | None = None
           ) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``state`` of ``scene``: (rgb uint8 HxWx3, mask uint8 HxW of class ids).

    ``light`` is a cached ``_light_map`` (it only depends on the scene's optics and the size). Where the
    instruments are: ``instrument_truth``.
    """
    h, w = _size(size)
    fr = _Frame(scene, state.camera, h, w)
    img = cv2.warpAffine(scene.canvas, fr.canvas_affine(scene), (w, h), flags=cv2.INTER_LINEAR,
                         borderMode=cv2.BORDER_REFLECT)
    mask = np.zeros((h, w), np.uint8)
    a, t = state.activity, state.t
    if a == SUBMUCOSAL_DISSECTION:
        _draw_flap(img, mask, scene, fr, state.progress)
    else:
        _draw_marks(img, mask, scene, fr, _dots_placed(scene, state))
        if a == CIRCUMFERENTIAL_INCISION:
            _draw_incision(img, mask, scene, fr, state.progress)
    for pose in _instrument_poses(scene, state, fr):
        _DRAW_INSTRUMENT[pose.class_id](img, mask, scene, fr, pose)

    if scene.smoke_level > 0:
        # Haze: a slowly changing low-frequency field blended towards grey-white.
        f = scene.smoke_fields
        c = math.cos(0.3 * t + scene.phase)
        field_lo = c * f[0] + math.sqrt(max(0.0, 1 - c * c)) * f[1]
        haze = cv2.resize(field_lo, (w, h), interpolation=cv2.INTER_CUBIC)
        alpha = np.clip(scene.smoke_level * (0.6 + 0.4 * haze), 0, 0.8)[..., None]
        img = img * (1 - alpha) + alpha * np.array([0.84, 0.80, 0.80], np.float32)

    light_map, inside = light if light is not None else _light_map(scene, fr)
    img = img * light_map
    if sensor_noise > 0 and rng is not None:
        img = img + rng.standard_normal((h, w, 1), dtype=np.float32) * np.float32(sensor_noise / 255.0)
    rgb = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    mask[~inside] = 0
    return rgb, mask


# --------------------------------------------------------------------------------------------
# Public generators
# --------------------------------------------------------------------------------------------


def generate_frame(rng_or_seed: Rng | int | None, activity: int, size: int | tuple[int, int] = (224, 224), *,
                   progress: float | None = None, smoke: bool | None = None, blood: bool | None = None,
                   smoke_prob: float = 0.3, blood_prob: float = 0.3, sensor_noise: float = 1.5,
                   with_truth: bool = False) -> tuple:
    """One random frame of ``activity`` (0 Marking, 1 Circumferential Incision, 2 Submucosal Dissection).

    Returns (rgb uint8 HxWx3, mask uint8 HxW with MTLESD class ids 0..6), and with ``with_truth`` a third
    element, the instruments' ``InstrumentTruth`` list. Same seed -> same bytes.
    """
    if activity not in ACTIVITIES:
        raise ValueError(f"activity must be one of {ACTIVITIES}, got {activity}")
    rng = _rng(rng_or_seed)
    scene = make_scene(rng, size, smoke=smoke, blood=blood, smoke_prob=smoke_prob, blood_prob=blood_prob)
    state = random_state(rng, scene, activity, progress)
    rgb, mask = render(scene, state, size, rng, sensor_noise=sensor_noise)
    return (rgb, mask, instrument_truth(scene, state, size)) if with_truth else (rgb, mask)


class SequenceFrame(NamedTuple):
    t: float  # seconds since the start of the sequence
    rgb: np.ndarray
    mask: np.ndarray
    activity: int
    instruments: tuple[InstrumentTruth, ...] = ()  # where each instrument's tip and entry point are


@dataclass(frozen=True)
class Segment:
    activity: int
    start: float
    end: float
    cycle: int  # index of the Marking -> Incision -> Dissection cycle (one lesion each)


def activity_timeline(rng_or_seed: Rng | int | None, duration: float, *,
                      segment_seconds: tuple[float, float] = (2.0, 6.0), start_activity: int = MARKING
                      ) -> list[Segment]:
    """Activity segments covering ``duration`` s, in surgical order, cycling (a new lesion per cycle)."""
    rng = _rng(rng_or_seed)
    segs: list[Segment] = []
    t, a, cycle = 0.0, start_activity, 0
    while t < duration or not segs:
        d = rng.uniform(*segment_seconds)
        segs.append(Segment(a, t, t + d, cycle))
        t += d
        a = (a + 1) % len(ACTIVITIES)
        cycle += a == MARKING
    return segs


def generate_sequence(seed: int, num_frames: int, fps: float = 30.0,
                      size: int | tuple[int, int] = (224, 224), *,
                      segment_seconds: tuple[float, float] = (2.0, 6.0), start_activity: int = MARKING,
                      smoke: bool | None = None, blood: bool | None = None, sensor_noise: float = 1.5
                      ) -> Iterator[SequenceFrame]:
    """Temporally coherent frames: one scene per activity cycle, drifting camera, moving instruments.

    Marks persist into the incision; a new cycle (after dissection) moves to a new lesion.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    h, w = _size(size)
    rng = np.random.default_rng(seed)
    segments = activity_timeline(rng, num_frames / fps, segment_seconds=segment_seconds,
                                 start_activity=start_activity)
    scene_seeds = rng.integers(0, 2**63, len(segments) + 1)
    noise_rng = np.random.default_rng([seed, 1])
    cache: dict[int, tuple[Scene, tuple[np.ndarray, np.ndarray]]] = {}
    si = 0
    for i in range(num_frames):
        t = i / fps
        while si + 1 < len(segments) and t >= segments[si].end:
            si += 1
        seg = segments[si]
        if seg.cycle not in cache:
            cache.clear()
            scene = make_scene(int(scene_seeds[seg.cycle]), (h, w), smoke=smoke, blood=blood)
            cache[seg.cycle] = (scene, _light_map(scene, _Frame(scene, scene.camera_base, h, w)))
        scene, light = cache[seg.cycle]
        progress = min(1.0, (t - seg.start) / (seg.end - seg.start))
        state = FrameState(seg.activity, progress, camera_at(scene, t), t)
        rgb, mask = render(scene, state, (h, w), noise_rng, sensor_noise=sensor_noise, light=light)
        yield SequenceFrame(t, rgb, mask, seg.activity, tuple(instrument_truth(scene, state, (h, w))))

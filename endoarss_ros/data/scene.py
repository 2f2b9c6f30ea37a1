"""Synthetic ESD scenes: what persists over a sequence (``Scene``: mucosa texture, marking ring, incision path,
flap, optics) and what changes from frame to frame (``FrameState``: activity, progress, camera pose, time).

Coordinates: a canvas in scene units, lesion at the origin, 1 unit = the frame's shorter side at zoom 1.
Everything the activity does not decide (tissue colour, lighting, FOV, smoke, blood, camera) is drawn from the
same distributions for every activity, so a classifier has to look at the objects. Drawn by ``render``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from .classes import (
    CIRCUMFERENTIAL_INCISION,
    MARKING,
    SUBMUCOSAL_DISSECTION,
)

ACTIVITIES = (MARKING, CIRCUMFERENTIAL_INCISION, SUBMUCOSAL_DISSECTION)
CANVAS_HALF = 0.8  # the texture canvas covers [-0.8, 0.8]^2 scene units: enough for any allowed pose
ZOOM_RANGE = (0.85, 1.15)
CAM_OFFSET = 0.05  # max camera centre offset from the lesion (scene units), drift included
INCISION_SCALE = 1.25  # incision path = marking ring scaled up: ESD cuts just outside the marks
SUBPIXEL_BITS = 4  # cv2 sub-pixel bits: coordinates are passed as round(x * 16)
SUBPIXEL_ONE = 1 << SUBPIXEL_BITS

Rng = np.random.Generator


def as_rng(rng_or_seed: Rng | int | None) -> Rng:
    return rng_or_seed if isinstance(rng_or_seed, np.random.Generator) else np.random.default_rng(rng_or_seed)


def frame_size(size: int | tuple[int, int]) -> tuple[int, int]:
    h, w = (size, size) if isinstance(size, int) else size
    if h < 16 or w < 16:
        raise ValueError(f"size too small: {size}")
    return int(h), int(w)


def _smooth_noise(rng: Rng, lo: int, shape: tuple[int, int]) -> np.ndarray:
    """Zero-mean, roughly unit-variance noise with ``lo`` blobs across: a low-res grid resized bicubic."""
    grid = rng.standard_normal((lo, lo)).astype(np.float32)
    return cv2.resize(grid, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def subpixel(pts: np.ndarray) -> np.ndarray:
    """Float pixel coordinates -> int32 sub-pixel coordinates for cv2 drawing with shift=SUBPIXEL_BITS."""
    return np.round(np.asarray(pts, np.float64) * SUBPIXEL_ONE).astype(np.int32)


def rotation(a: float) -> np.ndarray:
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
        return local @ rotation(self.ring_angle).T


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
    cv2.fillPoly(lesion, [subpixel(blob)], 1.0, cv2.LINE_AA, SUBPIXEL_BITS)
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
        cv2.polylines(tissue, [subpixel(to_px(pts))], False, tuple(float(c) for c in col), thick,
                      cv2.LINE_AA, SUBPIXEL_BITS)

    if blood:
        # Dark red pools (background class: blood is not a segmentation class).
        for _ in range(int(rng.integers(1, 5))):
            c = subpixel(to_px(rng.uniform(-0.45, 0.45, 2)))
            ax = rng.uniform(0.015, 0.07, 2) * ppu * SUBPIXEL_ONE
            cv2.ellipse(tissue, (c[0].item(), c[1].item()), (int(ax[0]), int(ax[1])), rng.uniform(0, 180),
                        0, 360, (0.30, 0.03, 0.04), -1, cv2.LINE_AA, SUBPIXEL_BITS)

    # Specular highlights: clusters of soft, elongated reflections (wet mucosa), on a half-res layer.
    hn = max(16, n // 2)
    hp = hn / (2 * CANVAS_HALF)
    spec = np.zeros((hn, hn), np.float32)
    for _ in range(int(rng.integers(2, 6))):
        c0 = rng.uniform(-0.5, 0.5, 2)
        ang = rng.uniform(0, 180)
        for _ in range(int(rng.integers(2, 6))):
            c = subpixel((c0 + rng.normal(0, 0.03, 2) + CANVAS_HALF) * hp)
            major = rng.uniform(0.006, 0.02) * hp
            ax = (int(major * SUBPIXEL_ONE), int(max(0.5, major * rng.uniform(0.25, 0.5)) * SUBPIXEL_ONE))
            cv2.ellipse(spec, (c[0].item(), c[1].item()), ax, ang + rng.normal(0, 20), 0, 360, 1.0, -1,
                        cv2.LINE_AA, SUBPIXEL_BITS)
    spec = cv2.GaussianBlur(spec, (0, 0), 0.004 * hp + 0.5)
    spec = np.clip(cv2.resize(spec, (n, n), interpolation=cv2.INTER_LINEAR) * 1.5, 0, 1)[..., None]
    tissue += spec * (1.0 - tissue)
    return np.clip(tissue, 0.0, 1.0, out=tissue)


def make_scene(rng_or_seed: Rng | int | None, size: int | tuple[int, int] = (224, 224), *,
               smoke: bool | None = None, blood: bool | None = None,
               smoke_prob: float = 0.3, blood_prob: float = 0.3) -> Scene:
    """A random scene for frames of ``size`` (H, W); smoke/blood None = random with the given probability."""
    rng = as_rng(rng_or_seed)
    h, w = frame_size(size)
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
        light_dir=tuple(rotation(rng.uniform(0, 2 * math.pi)) @ np.array([1.0, 0.0])),
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


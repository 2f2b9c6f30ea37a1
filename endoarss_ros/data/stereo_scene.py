"""A synthetic stereo endoscope: the ESD scenes of ``scene``/``render`` seen by a calibrated, rectified pinhole
pair, with ground truth in millimetres.

Geometry (metres, the LEFT camera's optical frame: z forward, x right, y down; the right camera sits at
x = +baseline, same orientation, so the pair is rectified by construction and ``P_right[0, 3] = -f * B``):

* tissue: a smooth height field ``Z(X, Y)`` (a tilted plane plus broad bumps) kept within the working range;
  each view ray-casts it (fixed-point iteration on the ray's depth) and looks up the scene's mucosa texture,
  with the activity's marks, incision and flap painted on it, so both views see the same surface;
* instruments: 3D shafts. A tip sits ``gap`` metres in front of the tissue along its left viewing ray (so the
  true tip-to-tissue distance is exactly the gap in depth), the shaft goes back towards the camera and out of
  the view; each view draws it with ``render``'s instrument painters at its own projection (same widths in
  both views: equal depth in a rectified pair), so the masks of the two views agree.

Defaults are those of a clinical 3D endoscope: 1280x1024, f = 1100 px, 5 mm baseline, tissue at 50-120 mm.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import NamedTuple

import cv2
import numpy as np

from . import render as _render
from .classes import MARKING
from .scene import CANVAS_HALF, FrameState, Rng, Scene, as_rng, camera_at, make_scene
from .synth import activity_timeline

INSTRUMENT_UNIT_M = 0.05  # ``render``'s instrument widths are fractions of this (shaft about 3-5 mm)
MIN_SHAFT_DEPTH_M = 0.012  # the drawn shaft stops this close to the lens


@dataclass(frozen=True)
class StereoRigSpec:
    """An ideal rectified pinhole pair (no distortion, R = I); the principal point is the image centre."""

    width: int = 1280
    height: int = 1024
    focal_px: float = 1100.0
    baseline_m: float = 0.005

    @property
    def cx(self) -> float:
        return (self.width - 1) / 2.0

    @property
    def cy(self) -> float:
        return (self.height - 1) / 2.0

    def project(self, points: np.ndarray, side: str = "left") -> np.ndarray:
        """(N, 3) left-frame points -> (N, 2) pixels of the ``side`` view."""
        p = np.asarray(points, np.float64).reshape(-1, 3)
        x = p[:, 0] - (self.baseline_m if side == "right" else 0.0)
        return np.c_[self.focal_px * x / p[:, 2] + self.cx, self.focal_px * p[:, 1] / p[:, 2] + self.cy]

    def camera_info_fields(self, side: str, frame_id: str) -> dict:
        """``sensor_msgs/CameraInfo`` field values (header: frame_id only) of one camera of the pair."""
        f, cx, cy = self.focal_px, self.cx, self.cy
        tx = -f * self.baseline_m if side == "right" else 0.0
        return {"header": {"frame_id": frame_id}, "height": self.height, "width": self.width,
                "distortion_model": "plumb_bob", "d": [0.0] * 5, "k": [f, 0.0, cx, 0.0, f, cy, 0.0, 0.0, 1.0],
                "r": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
                "p": [f, 0.0, cx, tx, 0.0, f, cy, 0.0, 0.0, 0.0, 1.0, 0.0], "binning_x": 0, "binning_y": 0,
                "roi": {"x_offset": 0, "y_offset": 0, "height": 0, "width": 0, "do_rectify": False}}


@dataclass(frozen=True)
class StereoSceneSettings:
    rig: StereoRigSpec = StereoRigSpec()
    depth_range_m: tuple[float, float] = (0.05, 0.12)  # tissue depth, clipped to this
    tip_gap_m: tuple[float, float] = (0.0, 0.025)  # tip in front of the tissue, per instrument
    scene_unit_m: float = 0.085  # one scene unit of ``scene`` (texture, activity drawings) on the tissue
    fov_radius: float | None = None  # of the shorter side; None: the scene's own (0.46-0.56, as ``render``'s:
    # the demo model knows that view)
    sensor_noise: float = 1.5


class Instrument3DTruth(NamedTuple):
    """One instrument's ground truth. Pixels of each view; metres in the left optical frame.
    ``tip_to_tissue_m``: depth of the tissue on the tip's left ray minus the tip's depth."""

    class_id: int
    tip_left_px: tuple[float, float]
    tip_right_px: tuple[float, float]
    entry_left_px: tuple[float, float]
    tip_3d: tuple[float, float, float]
    entry_3d: tuple[float, float, float]
    tip_to_tissue_m: float
    visible: bool  # the tip is inside the view of both cameras


class StereoFrame(NamedTuple):
    t: float
    left: np.ndarray  # rgb uint8
    right: np.ndarray
    left_mask: np.ndarray  # class ids uint8
    right_mask: np.ndarray
    left_depth: np.ndarray  # float32 metres: z of the TISSUE seen (or hidden by an instrument) at each left pixel
    activity: int
    instruments: tuple[Instrument3DTruth, ...]


class _TextureFrame:
    """``render``'s frame interface for painting on the texture canvas (pixels = canvas pixels)."""

    def __init__(self, scene: Scene):
        self.scale = scene.ppu

    def px(self, pts):
        return (np.asarray(pts, np.float64) + CANVAS_HALF) * self.scale


class _ViewFrame:
    """``render``'s frame interface for painting instruments in one view: ``scale`` sets the widths."""

    def __init__(self, center, fov_r: float, scale: float, h: int, w: int):
        self.center, self.fov_r, self.scale, self.h, self.w = np.asarray(center, float), fov_r, scale, h, w


@dataclass
class StereoScene:
    scene: Scene
    settings: StereoSceneSettings
    height_grid: np.ndarray  # float32 Z over the grid of (X, Y)
    grid_half_m: float
    gap_m: tuple[float, float]  # tip gaps of the (up to two) instruments
    lift: np.ndarray  # (2,) how steeply each shaft rises towards the camera

    def tissue_depth_at(self, x, y) -> np.ndarray:
        """Z of the tissue at left-frame (X, Y) (bilinear in the height grid)."""
        n = self.height_grid.shape[0]
        gx = (np.asarray(x, np.float32) + self.grid_half_m) / (2 * self.grid_half_m) * (n - 1)
        gy = (np.asarray(y, np.float32) + self.grid_half_m) / (2 * self.grid_half_m) * (n - 1)
        shape = np.shape(gx)
        out = cv2.remap(self.height_grid, np.atleast_2d(gx).astype(np.float32), np.atleast_2d(gy).astype(np.float32),
                        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        return out.reshape(shape)

    def ray_cast(self, u: np.ndarray, v: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Left-frame (X, Y, Z) of the tissue seen at pixels (u, v) of ``side``."""
        rig = self.settings.rig
        xn = (u - rig.cx) / rig.focal_px
        yn = (v - rig.cy) / rig.focal_px
        x0 = rig.baseline_m if side == "right" else 0.0
        z = np.full(np.shape(xn), float(np.mean(self.settings.depth_range_m)), np.float32)
        for _ in range(8):
            z = self.tissue_depth_at(x0 + xn * z, yn * z)
        return x0 + xn * z, yn * z, z


def make_stereo_scene(rng_or_seed: Rng | int | None, settings: StereoSceneSettings = StereoSceneSettings()
                      ) -> StereoScene:
    rng = as_rng(rng_or_seed)
    rig = settings.rig
    scene = make_scene(rng, (rig.height, rig.width), smoke=False)
    radius = scene.optics.fov_radius if settings.fov_radius is None else settings.fov_radius
    scene.optics = replace(scene.optics, fov_radius=radius, fov_offset=(0.0, 0.0))
    lo, hi = settings.depth_range_m
    n, half = 96, 0.12
    xs = np.linspace(-half, half, n)
    gx, gy = np.meshgrid(xs, xs)
    z0 = rng.uniform(lo + 0.15 * (hi - lo), lo + 0.75 * (hi - lo))  # then tilted +- about 17 mm over the view
    tilt = rng.uniform(-0.35, 0.35, 2)
    bumps = cv2.resize(rng.standard_normal((5, 5)).astype(np.float32), (n, n), interpolation=cv2.INTER_CUBIC)
    height = z0 + tilt[0] * gx + tilt[1] * gy + rng.uniform(0.002, 0.006) * bumps
    gaps = (float(rng.uniform(*settings.tip_gap_m)), float(rng.uniform(*settings.tip_gap_m)))
    return StereoScene(scene, settings, np.clip(height, lo, hi).astype(np.float32), half, gaps,
                       rng.uniform(0.25, 0.6, 2))


def _texture(ss: StereoScene, state: FrameState) -> tuple[np.ndarray, np.ndarray]:
    """The mucosa canvas with the activity's drawings painted on (float32 RGB, uint8 class mask)."""
    scene = ss.scene
    img = scene.canvas.copy()
    mask = np.zeros(img.shape[:2], np.uint8)
    fr = _TextureFrame(scene)
    if state.activity == _render.SUBMUCOSAL_DISSECTION:
        _render._draw_flap(img, mask, scene, fr, state.progress)
    else:
        _render._draw_marks(img, mask, scene, fr, _render._dots_placed(scene, state))
        if state.activity == _render.CIRCUMFERENTIAL_INCISION:
            _render._draw_incision(img, mask, scene, fr, state.progress)
    return img, mask


def _scene_to_metres(ss: StereoScene, state: FrameState, pts: np.ndarray) -> np.ndarray:
    """Scene units -> left-frame (X, Y) on the tissue (the camera pose of ``state`` pans and turns the view)."""
    cx, cy, ang, _ = state.camera
    return ((np.asarray(pts, np.float64) - (cx, cy)) @ _rotation(ang)) * ss.settings.scene_unit_m


def _metres_to_canvas(ss: StereoScene, state: FrameState, x, y):
    cx, cy, ang, _ = state.camera
    u = np.stack([x, y], -1) / ss.settings.scene_unit_m
    pts = u @ _rotation(ang).T + (cx, cy)
    return ((pts + CANVAS_HALF) * ss.scene.ppu).astype(np.float32)


def _rotation(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _view_tissue(ss: StereoScene, state: FrameState, texture, tex_mask, side: str):
    rig = ss.settings.rig
    v, u = np.mgrid[0:rig.height, 0:rig.width].astype(np.float32)
    x, y, z = ss.ray_cast(u, v, side)
    canvas = _metres_to_canvas(ss, state, x, y)
    img = cv2.remap(texture, canvas[..., 0], canvas[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mask = cv2.remap(tex_mask, canvas[..., 0], canvas[..., 1], cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT)
    return img, mask, z.astype(np.float32)


class _Pose3D(NamedTuple):
    class_id: int
    tip: np.ndarray  # left frame, metres
    far: np.ndarray  # the shaft's other drawn end (out of view)
    opening: float


def _instrument_poses_3d(ss: StereoScene, state: FrameState) -> list[_Pose3D]:
    """``render``'s instrument poses (from the activity), lifted into 3D above the tissue."""
    rig, scene = ss.settings.rig, ss.scene
    fr = _TextureFrame(scene)
    fr.center = np.full(2, CANVAS_HALF * scene.ppu)
    fr.fov_r = 0.5 * scene.ppu
    out = []
    for k, pose in enumerate(_render._instrument_poses(scene, state, fr)):
        xy = _scene_to_metres(ss, state, pose.tip / scene.ppu - CANVAS_HALF)
        surface = np.array([xy[0], xy[1], float(ss.tissue_depth_at(xy[0], xy[1]))])
        gap = ss.gap_m[min(k, 1)]
        tip = surface * (surface[2] - gap) / surface[2]
        d2 = pose.entry - pose.tip  # image direction from the tip towards the entry
        d2 = _scene_to_metres(ss, state, d2 / scene.ppu) - _scene_to_metres(ss, state, np.zeros(2))
        d2 = d2 / (np.linalg.norm(d2) + 1e-12)
        direction = np.array([d2[0], d2[1], -ss.lift[min(k, 1)]])
        direction /= np.linalg.norm(direction)
        far = _shaft_end(rig, tip, direction)
        out.append(_Pose3D(int(pose.class_id), tip, far, float(pose.opening)))
    return out


def _shaft_end(rig: StereoRigSpec, tip: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """Where the shaft from ``tip`` along ``direction`` leaves both views (well outside) or nears the lens."""
    s = np.linspace(0.0, 0.3, 601)[1:]
    pts = tip + s[:, None] * direction
    ok = pts[:, 2] > MIN_SHAFT_DEPTH_M
    margin = 0.15 * max(rig.width, rig.height)
    for side in ("left", "right"):
        uv = rig.project(np.where(ok[:, None], pts, (0, 0, 1)), side)
        ok &= (uv[:, 0] > -margin) & (uv[:, 0] < rig.width + margin) & (uv[:, 1] > -margin) & \
              (uv[:, 1] < rig.height + margin)
    last = int(np.argmin(ok)) if not ok.all() else len(s)
    return pts[max(0, last - 1)] if last > 0 else pts[0]


# The shaft width where ``render``'s painters start (their entry point), in units of their scale.
_PAINTER_SHAFT_WIDTH = {_render.ELECTRIC_KNIFE: 0.085, _render.FPCW_FORCEPS: 0.11, _render.FPCW_KNIFE: 0.10}
WORKING_END_M = 0.010  # ``render``'s painter draws this last part of the shaft and the working end


def _draw_instruments(ss: StereoScene, poses: list[_Pose3D], img, mask, side: str) -> None:
    """Each instrument in perspective: the shaft from out of view to ``WORKING_END_M`` before the tip with a
    width of 1/depth at every 3D point (so both views see the same silhouette), then ``render``'s painter for
    the working end, anchored at that 3D point."""
    rig, scene = ss.settings.rig, ss.scene
    for pose in poses:
        axis = (pose.far - pose.tip) / np.linalg.norm(pose.far - pose.tip)
        join = pose.tip + axis * WORKING_END_M
        tip, join_px, far = rig.project(np.stack([pose.tip, join, pose.far]), side)
        scale = rig.focal_px * INSTRUMENT_UNIT_M / pose.tip[2]
        w_join = _PAINTER_SHAFT_WIDTH[pose.class_id] * scale
        color = scene.knife_color if pose.class_id == _render.ELECTRIC_KNIFE else scene.shaft_color
        _render._draw_shaft(img, mask, far, join_px, w_join * join[2] / pose.far[2], w_join, color, pose.class_id)
        fr = _ViewFrame((rig.cx, rig.cy), ss.scene.optics.fov_radius * min(rig.width, rig.height), scale,
                        rig.height, rig.width)
        p = _render.InstrumentPose(pose.class_id, join_px, tip, pose.opening)
        _render._DRAW_INSTRUMENT[pose.class_id](img, mask, scene, fr, p)


def _entry_truth(ss: StereoScene, pose: _Pose3D) -> tuple[tuple[float, float], np.ndarray]:
    """The left view's entry point (the axis crossing into the view) and the 3D point of the axis there."""
    rig = ss.settings.rig
    fr = _ViewFrame((rig.cx, rig.cy), ss.scene.optics.fov_radius * min(rig.width, rig.height), 1.0,
                    rig.height, rig.width)
    tip_px, far_px = rig.project(np.stack([pose.tip, pose.far]))
    entry_px = _render._view_exit(fr, tip_px, far_px)
    s = np.linspace(0.0, 1.0, 2001)
    pts = pose.tip + s[:, None] * (pose.far - pose.tip)
    i = int(np.argmin(np.linalg.norm(rig.project(pts) - entry_px, axis=1)))
    return (float(entry_px[0]), float(entry_px[1])), pts[i]


def _inside(ss: StereoScene, uv) -> bool:
    rig = ss.settings.rig
    r = ss.scene.optics.fov_radius * min(rig.width, rig.height)
    return bool(0 <= uv[0] < rig.width and 0 <= uv[1] < rig.height and math.hypot(uv[0] - rig.cx, uv[1] - rig.cy) <= r)


def render_stereo(ss: StereoScene, state: FrameState, rng: Rng | None = None) -> StereoFrame:
    """Both views of ``state``, their masks, the left view's tissue depth and the instruments' 3D truth."""
    settings, rig = ss.settings, ss.settings.rig
    texture, tex_mask = _texture(ss, state)
    poses = _instrument_poses_3d(ss, state)
    light = _render._light_map(ss.scene, _render._Frame(ss.scene, ss.scene.camera_base, rig.height, rig.width))
    views, depth = {}, None
    for side in ("left", "right"):
        img, mask, z = _view_tissue(ss, state, texture, tex_mask, side)
        if side == "left":
            depth = z
        _draw_instruments(ss, poses, img, mask, side)
        light_map, inside = light
        img = img * light_map
        if settings.sensor_noise > 0 and rng is not None:
            img = img + rng.standard_normal((rig.height, rig.width, 1), dtype=np.float32) * np.float32(
                settings.sensor_noise / 255.0)
        mask[~inside] = 0
        views[side] = (np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8), mask)
    truths = []
    for pose in poses:
        tip_l, tip_r = rig.project(pose.tip[None], "left")[0], rig.project(pose.tip[None], "right")[0]
        entry_px, entry_3d = _entry_truth(ss, pose)
        tissue_z = float(ss.ray_cast(np.array([tip_l[0]]), np.array([tip_l[1]]), "left")[2][0])
        truths.append(Instrument3DTruth(pose.class_id, (float(tip_l[0]), float(tip_l[1])),
                                        (float(tip_r[0]), float(tip_r[1])), entry_px,
                                        tuple(float(c) for c in pose.tip), tuple(float(c) for c in entry_3d),
                                        tissue_z - float(pose.tip[2]),
                                        _inside(ss, tip_l) and _inside(ss, tip_r)))
    return StereoFrame(state.t, views["left"][0], views["right"][0], views["left"][1], views["right"][1], depth,
                       state.activity, tuple(truths))


def generate_stereo_sequence(seed: int, num_frames: int, fps: float = 30.0,
                             settings: StereoSceneSettings = StereoSceneSettings(), *,
                             segment_seconds: tuple[float, float] = (2.0, 6.0), start_activity: int = MARKING):
    """Stereo frames of a procedure: activity segments in surgical order (one tissue surface and instrument
    depth set per segment, so depths vary over the sequence), drifting camera, moving instruments."""
    if fps <= 0:
        raise ValueError("fps must be positive")
    rng = np.random.default_rng(seed)
    segments = activity_timeline(rng, num_frames / fps, segment_seconds=segment_seconds,
                                 start_activity=start_activity)
    seeds = rng.integers(0, 2**63, len(segments))
    noise = np.random.default_rng([seed, 2])
    si, current = 0, None
    for i in range(num_frames):
        t = i / fps
        while si + 1 < len(segments) and t >= segments[si].end:
            si += 1
        seg = segments[si]
        if current is None or current[0] != si:
            current = (si, make_stereo_scene(int(seeds[si]), settings))
        ss = current[1]
        progress = min(1.0, (t - seg.start) / (seg.end - seg.start))
        yield render_stereo(ss, FrameState(seg.activity, progress, camera_at(ss.scene, t), t), noise)

"""Rendering a ``FrameState`` of a ``Scene``: rgb image and class mask, and where the instruments are.

Images are drawn anti-aliased, masks with the same geometry without anti-aliasing; instruments are drawn last
and occlude tissue classes; pixels outside the FOV are background.
"""
from __future__ import annotations

import math
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
from .scene import (
    CANVAS_HALF,
    INCISION_SCALE,
    SUBPIXEL_BITS,
    SUBPIXEL_ONE,
    FrameState,
    Rng,
    Scene,
    frame_size,
    rotation,
    subpixel,
)


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
        lin = self.scale * rotation(ang)
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
    p = [subpixel(pts)]
    cv2.fillPoly(img, p, tuple(float(c) for c in color), cv2.LINE_AA, SUBPIXEL_BITS)
    if mask is not None:
        cv2.fillPoly(mask, p, int(cls), cv2.LINE_8, SUBPIXEL_BITS)


def _line(img, mask, a, b, color, width: float, cls: int | None = None) -> None:
    t = max(1, round(width))
    pa, pb = tuple(subpixel(a).tolist()), tuple(subpixel(b).tolist())
    cv2.line(img, pa, pb, tuple(float(c) for c in color), t, cv2.LINE_AA, SUBPIXEL_BITS)
    if mask is not None:
        cv2.line(mask, pa, pb, int(cls), t, cv2.LINE_8, SUBPIXEL_BITS)


def _circle(img, mask, c, r: float, color, cls: int | None = None) -> None:
    pc, rr = tuple(subpixel(c).tolist()), max(SUBPIXEL_ONE // 2, int(round(r * SUBPIXEL_ONE)))
    cv2.circle(img, pc, rr, tuple(float(v) for v in color), -1, cv2.LINE_AA, SUBPIXEL_BITS)
    if mask is not None:
        cv2.circle(mask, pc, rr, int(cls), -1, cv2.LINE_8, SUBPIXEL_BITS)


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
    p = [subpixel(pts)]
    # Charred edges, then the whitish-blue submucosa exposed in the cut.
    cv2.polylines(img, p, closed, (0.22, 0.08, 0.07), wid, cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.polylines(img, p, closed, (0.80, 0.84, 0.93), max(1, round(wid * 0.45)), cv2.LINE_AA, SUBPIXEL_BITS)
    cv2.polylines(mask, p, closed, INCISION_AREA, wid, cv2.LINE_8, SUBPIXEL_BITS)
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
        cv2.polylines(img, [subpixel(pi)], False, col, max(1, round(wid * fr.scale)), cv2.LINE_AA, SUBPIXEL_BITS)
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
    h, w = frame_size(size)
    fr = _Frame(scene, state.camera, h, w)
    out = []
    for pose in _instrument_poses(scene, state, fr):
        visible = bool(np.hypot(*(pose.tip - fr.center)) <= fr.fov_r and 0 <= pose.tip[0] < w and 0 <= pose.tip[1] < h)
        entry = _view_exit(fr, pose.tip, pose.entry)
        out.append(InstrumentTruth(int(pose.class_id), (float(pose.tip[0]), float(pose.tip[1])),
                                   (float(entry[0]), float(entry[1])), visible))
    return out


def render(scene: Scene, state: FrameState, size: int | tuple[int, int], rng: Rng | None = None, *,
           sensor_noise: float = 1.5, light: tuple[np.ndarray, np.ndarray] | None = None,
           instruments: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``state`` of ``scene``: (rgb uint8 HxWx3, mask uint8 HxW of class ids).

    ``light`` is a cached ``_light_map`` (it only depends on the scene's optics and the size). Where the
    instruments are: ``instrument_truth``; ``instruments=False``: withdrawn out of view (not drawn).
    """
    h, w = frame_size(size)
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
    for pose in _instrument_poses(scene, state, fr) if instruments else ():
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



def scene_light(scene: Scene, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """The light map and FOV mask of ``scene`` at ``h`` x ``w`` (fixed per scene and size: cache it for sequences)."""
    return _light_map(scene, _Frame(scene, scene.camera_base, h, w))

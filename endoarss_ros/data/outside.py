"""Frames from outside the patient, for the out-of-body detector: real photographs that scikit-image ships with an
open licence (``skimage.data``; each licence is recorded in ``outside_photos_LICENCES.md`` next to this file) and
synthetic operating-room-like scenes drawn here (walls, lamps, screens, whiteboards with writing, staff in scrubs
with faces, drapes, instrument tables).

The photographs are split once, by name: ``TRAIN_PHOTOS`` train the detector, ``HELD_OUT_PHOTOS`` are only for
tests and the reported precision / recall. ``photo_views`` turns one photograph into many camera-like views
(crop, zoom, flip, exposure, colour cast, blur, noise) at a given frame size.
"""
from __future__ import annotations

import cv2
import numpy as np

# name -> skimage.data function; all with an explicit open licence (see outside_photos_LICENCES.md).
PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "camera": "camera", "brick": "brick", "chelsea": "chelsea",
          "rocket": "rocket", "hubble": "hubble_deep_field", "clock": "clock", "coins": "coins", "text": "text",
          "grass": "grass", "gravel": "gravel"}
HELD_OUT_PHOTOS = ("astronaut", "coffee", "camera", "brick")
TRAIN_PHOTOS = tuple(n for n in PHOTOS if n not in HELD_OUT_PHOTOS)


def photo(name: str) -> np.ndarray:
    """The photograph ``name`` (``PHOTOS``) as uint8 RGB."""
    from skimage import data

    img = np.asarray(getattr(data, PHOTOS[name])())
    if img.dtype != np.uint8:
        img = (img > 0).astype(np.uint8) * 255 if img.dtype == bool else np.clip(img, 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img[:, :, :3])


def _fit(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize-and-crop to (H, W) keeping the aspect ratio."""
    h, w = size
    ih, iw = img.shape[:2]
    f = max(h / ih, w / iw)
    r = cv2.resize(img, (max(w, round(iw * f)), max(h, round(ih * f))), interpolation=cv2.INTER_AREA)
    y0, x0 = (r.shape[0] - h) // 2, (r.shape[1] - w) // 2
    return np.ascontiguousarray(r[y0:y0 + h, x0:x0 + w])


def camera_like(img: np.ndarray, rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One camera-like view of ``img`` at (H, W): random crop and zoom, flip, exposure, colour cast, blur, noise."""
    ih, iw = img.shape[:2]
    scale = rng.uniform(0.45, 1.0)
    ch, cw = max(8, int(ih * scale)), max(8, int(iw * scale))
    y0, x0 = rng.integers(0, ih - ch + 1), rng.integers(0, iw - cw + 1)
    view = _fit(img[y0:y0 + ch, x0:x0 + cw], size).astype(np.float32)
    if rng.random() < 0.5:
        view = view[:, ::-1]
    view = view * rng.uniform(0.55, 1.35) * rng.uniform(0.85, 1.15, size=3)
    if rng.random() < 0.4:
        k = int(rng.choice([3, 5, 7]))
        view = cv2.GaussianBlur(view, (k, k), 0)
    view = view + rng.normal(0, rng.uniform(0.5, 5.0), view.shape)
    return np.clip(view, 0, 255).astype(np.uint8)


def photo_views(name: str, count: int, seed: int, size: tuple[int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, sum(map(ord, name))])
    img = photo(name)
    return [camera_like(img, rng, size) for _ in range(count)]


def _colour(rng, base, spread=25):
    return tuple(int(np.clip(c + rng.normal(0, spread), 0, 255)) for c in base)


WALLS = ((200, 205, 200), (170, 190, 185), (215, 210, 195), (120, 150, 160), (90, 110, 120), (225, 225, 230))
SCRUBS = ((60, 120, 110), (70, 110, 160), (90, 150, 140), (40, 80, 120), (120, 160, 190))
SKIN = ((225, 180, 150), (200, 150, 120), (160, 110, 80), (110, 75, 55), (240, 200, 175))


def _person(img, rng, cx, cy, s):
    """Staff: scrubs (torso), a face, hair, sometimes a mask and a cap."""
    h, w = img.shape[:2]
    cv2.ellipse(img, (cx, cy + int(1.6 * s)), (int(1.3 * s), int(1.4 * s)), 0, 0, 360,
                _colour(rng, SCRUBS[rng.integers(len(SCRUBS))], 15), -1)
    skin = _colour(rng, SKIN[rng.integers(len(SKIN))], 10)
    cv2.ellipse(img, (cx, cy), (int(0.6 * s), int(0.8 * s)), 0, 0, 360, skin, -1)
    for ex in (-1, 1):  # eyes
        cv2.circle(img, (cx + ex * int(0.25 * s), cy - int(0.1 * s)), max(1, int(0.07 * s)), (30, 25, 20), -1)
    if rng.random() < 0.5:  # surgical mask
        cv2.ellipse(img, (cx, cy + int(0.35 * s)), (int(0.55 * s), int(0.35 * s)), 0, 0, 360,
                    _colour(rng, (150, 190, 210), 10), -1)
    else:
        cv2.ellipse(img, (cx, cy + int(0.4 * s)), (int(0.2 * s), int(0.06 * s)), 0, 0, 360, (150, 70, 70), -1)
    cap = (70, 110, 150) if rng.random() < 0.6 else _colour(rng, (60, 40, 30), 20)
    cv2.ellipse(img, (cx, cy - int(0.5 * s)), (int(0.62 * s), int(0.4 * s)), 0, 180, 360, cap, -1)
    del h, w


def _screen(img, rng, x, y, w, h):
    cv2.rectangle(img, (x, y), (x + w, y + h), (25, 25, 28), -1)
    inner = (x + 3, y + 3, x + w - 3, y + h - 3)
    base = _colour(rng, (20, 40, 70), 20)
    cv2.rectangle(img, inner[:2], inner[2:], base, -1)
    for _ in range(rng.integers(2, 8)):  # traces and numbers on a monitor
        y0 = int(rng.integers(inner[1], max(inner[1] + 1, inner[3])))
        pts = np.stack([np.linspace(inner[0], inner[2], 20), y0 + rng.normal(0, h / 12, 20)], 1).astype(np.int32)
        cv2.polylines(img, [pts], False, _colour(rng, (80, 230, 120), 60), 1)


def _whiteboard(img, rng, x, y, w, h):
    cv2.rectangle(img, (x, y), (x + w, y + h), _colour(rng, (240, 240, 235), 8), -1)
    cv2.rectangle(img, (x, y), (x + w, y + h), (120, 120, 120), 2)
    for i in range(int(rng.integers(2, 6))):
        text = "".join(rng.choice(list("ABCDEFGHKLMNOPRSTUVW0123456789 :/-"), int(rng.integers(4, 12))))
        cv2.putText(img, text, (x + 6, y + 16 + i * 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    _colour(rng, (30, 40, 140) if rng.random() < 0.5 else (30, 30, 30), 20), 1, cv2.LINE_AA)


def room_scene(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """One synthetic operating-room-like view (uint8 RGB, (H, W))."""
    h, w = size
    img = np.zeros((h, w, 3), np.float32)
    wall = np.array(_colour(rng, WALLS[rng.integers(len(WALLS))], 15), np.float32)
    floor_y = int(h * rng.uniform(0.55, 1.1))
    ramp = np.linspace(rng.uniform(0.7, 1.0), rng.uniform(0.8, 1.15), h)[:, None, None]
    img[:] = wall * ramp
    img[floor_y:] = np.array(_colour(rng, (150, 150, 145), 30), np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(1, 6))):
        kind = rng.choice(["screen", "board", "person", "lamp", "drape", "table", "cabinet"])
        x, y = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
        s = int(rng.integers(max(8, h // 10), max(9, h // 2)))
        if kind == "screen":
            _screen(img, rng, x, y, int(1.6 * s), s)
        elif kind == "board":
            _whiteboard(img, rng, x, y, int(2 * s), int(1.2 * s))
        elif kind == "person":
            _person(img, rng, x, y, max(6, s // 2))
        elif kind == "lamp":
            cv2.circle(img, (x, y), s // 2, (250, 250, 245), -1)
            cv2.circle(img, (x, y), s // 2 + 4, (180, 180, 185), 3)
        elif kind == "drape":
            pts = rng.integers(0, max(w, h), size=(5, 2)).astype(np.int32)
            cv2.fillPoly(img, [pts], _colour(rng, (60, 110, 150) if rng.random() < 0.5 else (70, 140, 120), 20))
        elif kind == "table":
            cv2.rectangle(img, (x, y), (x + 2 * s, y + s // 2), _colour(rng, (180, 185, 190), 20), -1)
            for _ in range(4):
                a = (int(rng.integers(x, x + 2 * s)), int(rng.integers(y, y + s // 2)))
                cv2.line(img, a, (a[0] + int(rng.integers(-s, s)), a[1] + 3), (90, 95, 100), 2)
        else:
            cv2.rectangle(img, (x, y), (x + s, y + 2 * s), _colour(rng, (140, 120, 90), 40), -1)
    out = img.astype(np.float32) * rng.uniform(0.5, 1.3) * rng.uniform(0.85, 1.15, size=3)
    if rng.random() < 0.3:
        out = cv2.GaussianBlur(out, (5, 5), 0)
    out += rng.normal(0, rng.uniform(0.5, 4.0), out.shape)
    return np.clip(out, 0, 255).astype(np.uint8)


__all__ = ["HELD_OUT_PHOTOS", "PHOTOS", "TRAIN_PHOTOS", "camera_like", "photo", "photo_views", "room_scene"]

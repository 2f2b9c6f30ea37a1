"""Image-quality measures of one camera frame, cheap enough to run on every frame (1-1.5 ms per 1080p frame on the
2-core CPU the project is tested on; numbers in docs/perception_status.md).

Two views of the frame:

* the *analysis image*: the frame shrunk (``INTER_LINEAR``) so its long side is ``ANALYSIS_SIDE`` pixels, so
  the measures mean the same at any input resolution; colour measures, exposure, sharpness and haze are taken
  over its *central disc* (radius 0.4 of the shorter side, centred: inside an endoscope's circular view, clear
  of the black border);
* full-resolution *windows* (64x64 pixels near the centre, aligned to the 8-pixel JPEG grid): sensor noise and
  JPEG block artefacts live at the pixel scale and vanish when the frame is shrunk.

Units: fractions and levels in [0, 1] unless stated; ``noise_sigma`` in grey levels (0-255);
``sharpness`` and ``blockiness`` are ratios (see ``ImageQuality``).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from .frames import UYVY_ENCODINGS, YUYV_ENCODINGS, RawFrame

ANALYSIS_SIDE = 320  # long side of the analysis image (px)
CENTRAL_RADIUS = 0.4  # of the analysis image's shorter side
WINDOW = 64  # full-resolution windows for noise and block artefacts (px); a multiple of 8
WINDOW_CENTRES = ((0.5, 0.5), (0.4, 0.4), (0.4, 0.6), (0.6, 0.4), (0.6, 0.6), (0.5, 0.35), (0.5, 0.65))
DARK_LUMA = 0.1  # a pixel darker than this is under-exposed
BRIGHT_LUMA = 240 / 255  # a pixel at least this bright is blown out
# Immerkaer (1996) noise estimator: this kernel cancels a locally linear image, leaving the noise.
_NOISE_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
_SQUARE3 = np.ones((3, 3), np.uint8)


@dataclass(frozen=True)
class ImageQuality:
    """What ``measure`` returns; every field is documented in ``msg/PerceptionStatus.msg``."""

    brightness: float  # mean luma of the central disc, 0-1
    dark_fraction: float  # central-disc pixels with luma < DARK_LUMA
    overexposed_fraction: float  # central-disc pixels with luma >= BRIGHT_LUMA
    sharpness: float  # variance of the Laplacian of luma / variance of luma (central disc, analysis image)
    haze: float  # median of the dark channel (min over R, G, B; 3x3 minimum filter) of the central disc, 0-1
    blood_fraction: float  # central-disc pixels of dark saturated red (R >= 0.2, G < 0.22 R, B < 0.3 R)
    tissue_fraction: float  # central-disc pixels of tissue colour (R > 1.15 G, R > 1.1 B, luma >= DARK_LUMA)
    noise_sigma: float  # sensor noise, grey levels (median over the windows)
    blockiness: float  # luma steps across 8-px block boundaries / elsewhere (median over the windows); 1 = none

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)  # dataclasses.asdict deep-copies: ten times slower


def shrink_factor(height: int, width: int, side: int = ANALYSIS_SIDE) -> int:
    """The integer factor that brings the long side to at most ``side``: the analysis image is ``(H // f, W // f)``
    (the instrument geometry samples the mask by the same factor)."""
    return max(1, -(-max(height, width) // side))


def analysis_rgb(frame: RawFrame, side: int = ANALYSIS_SIDE) -> np.ndarray:
    """The frame as uint8 RGB with its long side at most ``side`` pixels (any supported encoding)."""
    p, e = frame.pixels, frame.encoding
    H, W = p.shape[:2]
    f = shrink_factor(H, W, side)
    size = (max(1, W // f), max(1, H // f))
    if e in YUYV_ENCODINGS or e in UYVY_ENCODINGS:
        # Keep whole macro-pixels (2 px sharing one U, V): every f-th row, every (f // 2)-th macro-pixel.
        step = max(1, f // 2)
        macro = p.reshape(H, W // 2, 4)[::f, ::step]
        small = np.ascontiguousarray(macro).reshape(macro.shape[0], -1, 2)
        code = cv2.COLOR_YUV2RGB_YUYV if e in YUYV_ENCODINGS else cv2.COLOR_YUV2RGB_UYVY
        return cv2.resize(cv2.cvtColor(small, code), size, interpolation=cv2.INTER_LINEAR)
    if e == "mono8":
        grey = cv2.resize(p[:, :, 0], size, interpolation=cv2.INTER_LINEAR) if f > 1 else p[:, :, 0]
        return np.repeat(grey[:, :, None], 3, axis=2)
    src = p if p.strides[1] == p.shape[2] and p.strides[2] == 1 else np.ascontiguousarray(p)
    small = cv2.resize(src, size, interpolation=cv2.INTER_LINEAR) if f > 1 else np.ascontiguousarray(src)
    if e in ("bgr8", "bgra8"):
        return cv2.cvtColor(small, cv2.COLOR_BGRA2RGB if e == "bgra8" else cv2.COLOR_BGR2RGB)
    return np.ascontiguousarray(small[:, :, :3]) if e == "rgba8" else small


@lru_cache(maxsize=16)
def central_disc(h: int, w: int) -> tuple[tuple[slice, slice], np.ndarray, np.ndarray, int]:
    """The central disc of an ``h`` x ``w`` analysis image: its bounding box (slices), a uint8 mask (255
    inside) and a boolean mask of that box, and its pixel count."""
    r = max(1, round(CENTRAL_RADIUS * min(h, w)))
    y0, x0 = max(0, h // 2 - r), max(0, w // 2 - r)
    box = (slice(y0, min(h, h // 2 + r)), slice(x0, min(w, w // 2 + r)))
    mask = np.zeros((box[0].stop - y0, box[1].stop - x0), np.uint8)
    cv2.circle(mask, (w // 2 - x0, h // 2 - y0), r, 255, -1)
    mask.setflags(write=False)
    return box, mask, mask > 0, max(1, int(np.count_nonzero(mask)))


def full_res_luma_windows(frame: RawFrame) -> list[np.ndarray]:
    """uint8 luma of the full-resolution windows that fit in the frame (YUV: the Y channel)."""
    p, e = frame.pixels, frame.encoding
    H, W = p.shape[:2]
    if H < WINDOW or W < WINDOW:
        return []
    channel = 0 if e in YUYV_ENCODINGS or e == "mono8" else 1 if e in UYVY_ENCODINGS else None
    code = {"rgb8": cv2.COLOR_RGB2GRAY, "bgr8": cv2.COLOR_BGR2GRAY, "rgba8": cv2.COLOR_RGBA2GRAY,
            "bgra8": cv2.COLOR_BGRA2GRAY}.get(e)
    out = []
    for cy, cx in WINDOW_CENTRES:
        y0 = min(H - WINDOW, max(0, int(cy * H) - WINDOW // 2)) // 8 * 8
        x0 = min(W - WINDOW, max(0, int(cx * W) - WINDOW // 2)) // 8 * 8
        win = p[y0:y0 + WINDOW, x0:x0 + WINDOW]
        out.append(np.ascontiguousarray(win[:, :, channel]) if channel is not None
                   else cv2.cvtColor(np.ascontiguousarray(win), code))
    return out


def _column_steps(stack: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per window: summed |luma step| between columns, across the 8-px block boundaries and elsewhere."""
    steps = cv2.absdiff(stack[:, 1:], stack[:, :-1]).reshape(n, WINDOW, WINDOW - 1).sum(axis=1, dtype=np.int64)
    edges = steps[:, 7::8].sum(axis=1)
    return edges, steps.sum(axis=1) - edges


def noise_and_blockiness(windows: list[np.ndarray]) -> tuple[float, float]:
    """(noise sigma in grey levels, blockiness ratio), medians over the windows; (0, 1) without windows."""
    n = len(windows)
    if not n:
        return 0.0, 1.0
    stack = np.concatenate(windows)  # one filter pass; each window's own border rows are dropped below
    response = np.abs(cv2.filter2D(stack, cv2.CV_16S, _NOISE_KERNEL)).reshape(n, WINDOW, WINDOW)
    sigmas = np.sqrt(np.pi / 2) / 6.0 * response[:, 1:-1, 1:-1].mean(axis=(1, 2))
    ex, ix = _column_steps(stack, n)
    ey, iy = _column_steps(np.concatenate([w.T for w in windows]), n)  # rows, as the transposed columns
    n_edges, n_inside = len(range(7, WINDOW - 1, 8)), WINDOW - 1 - len(range(7, WINDOW - 1, 8))
    blocks = ((ex + ey) / n_edges) / np.maximum((ix + iy) / n_inside, 1e-3 * WINDOW)
    return float(np.median(sigmas)), float(np.median(blocks))


def _fraction(condition: np.ndarray, inside: np.ndarray, n: int) -> float:
    return float(np.count_nonzero(condition & inside)) / n


def measure(frame: RawFrame, rgb: np.ndarray | None = None) -> ImageQuality:
    """The quality measures of ``frame``; ``rgb``: its ``analysis_rgb`` when the caller has it already."""
    a = analysis_rgb(frame) if rgb is None else rgb
    box, disc, inside, n = central_disc(*a.shape[:2])
    a = a[box]
    luma = cv2.cvtColor(a, cv2.COLOR_RGB2GRAY)
    mean, std = cv2.meanStdDev(luma, mask=disc)
    lap_std = cv2.meanStdDev(cv2.Laplacian(luma, cv2.CV_16S, ksize=3), mask=disc)[1]
    r8, g8, b8 = cv2.split(a)
    dark = cv2.erode(cv2.min(cv2.min(r8, g8), b8), _SQUARE3)
    hist = cv2.calcHist([dark], [0], disc, [256], [0, 256]).ravel()
    haze = float(np.searchsorted(np.cumsum(hist), n / 2)) / 255.0
    r, g, b = (c.astype(np.int16) for c in (r8, g8, b8))
    noise, blocks = noise_and_blockiness(full_res_luma_windows(frame))
    return ImageQuality(
        brightness=float(mean[0, 0]) / 255.0,
        dark_fraction=_fraction(luma < DARK_LUMA * 255, inside, n),
        overexposed_fraction=_fraction(luma >= BRIGHT_LUMA * 255, inside, n),
        sharpness=float(lap_std[0, 0] ** 2) / max(float(std[0, 0] ** 2), 1.0),
        haze=haze,
        blood_fraction=_fraction((r >= 51) & (g * 100 < 22 * r) & (b * 10 < 3 * r), inside, n),
        tissue_fraction=_fraction((r * 100 > 115 * g) & (r * 10 > 11 * b) & (luma >= DARK_LUMA * 255), inside, n),
        noise_sigma=noise,
        blockiness=blocks,
    )

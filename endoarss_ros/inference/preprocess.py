"""Colour conversion + resize to the model's working size, two implementations of one contract.

* ``cv2`` (CPU devices): resize the uint8 view to the working size (exact 2x2 halvings while much shrinking is
  left, then ``INTER_AREA``; ``prescale=False``: one ``INTER_AREA``) and convert colours at that small size;
  YUV 4:2:2 is converted to RGB first with ``cv2.cvtColor`` (uint8 -> uint8). No full-resolution float array
  is ever made on the CPU.
* ``torch`` (CUDA, and any torch device): the uint8 frame is uploaded as is (pinned host buffer,
  non-blocking copy), then colour conversion in float on the device, box-filter downscale (``area``,
  i.e. adaptive average pooling; bilinear when upscaling), scale to ``[0, 1]``.

Both return RGB in ``[0, 1]``; the model applies its own normalisation (ImageNet mean/std for the
``endoarss`` family, none for ``official``), so it is part of the compiled / exported graph.

YUV 4:2:2 (``yuyv`` / ``yuv422_yuy2``: Y0 U Y1 V; ``uyvy`` / ``yuv422``: U Y0 V Y1) uses BT.601 **limited
range** ("video" levels, Y in [16, 235], chroma in [16, 240]), exactly what ``cv2.COLOR_YUV2RGB_YUYV`` /
``_UYVY`` use::

    R = 1.164 (Y - 16)                   + 1.596 (V - 128)
    G = 1.164 (Y - 16) - 0.391 (U - 128) - 0.813 (V - 128)
    B = 1.164 (Y - 16) + 2.018 (U - 128)

Each chroma pair is shared by the two pixels of its macro-pixel (no chroma interpolation), as in OpenCV.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .frames import UYVY_ENCODINGS, YUYV_ENCODINGS, RawFrame

# OpenCV's fixed-point BT.601 coefficients (modules/imgproc/src/color_yuv.simd.hpp), as floats.
_CY = 1220542 / (1 << 20)
_CVR = 1673527 / (1 << 20)
_CVG = -852492 / (1 << 20)
_CUG = -409993 / (1 << 20)
_CUB = 2116026 / (1 << 20)


# -- float64 reference (tests) ------------------------------------------------------------------
def reference_rgb(frame: RawFrame) -> np.ndarray:
    """Full-resolution RGB float64 in ``[0, 255]`` (the numerical reference for both paths)."""
    p = frame.pixels.astype(np.float64)
    e = frame.encoding
    if e == "rgb8" or e == "rgba8":
        return p[:, :, :3].copy()
    if e == "bgr8" or e == "bgra8":
        return p[:, :, 2::-1].copy()
    if e == "mono8":
        return np.repeat(p[:, :, :1], 3, axis=2)
    if e in YUYV_ENCODINGS:
        y, c = p[:, :, 0], p[:, :, 1]
    elif e in UYVY_ENCODINGS:
        c, y = p[:, :, 0], p[:, :, 1]
    else:
        raise ValueError(e)
    u = np.repeat(c[:, 0::2], 2, axis=1)
    v = np.repeat(c[:, 1::2], 2, axis=1)
    yy = _CY * np.maximum(y - 16.0, 0.0)
    r = yy + _CVR * (v - 128)
    g = yy + _CVG * (v - 128) + _CUG * (u - 128)
    b = yy + _CUB * (u - 128)
    return np.clip(np.stack([r, g, b], axis=2), 0.0, 255.0)


def reference_area_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float64 adaptive average pooling (the ``torch`` path's downscale), ``(H, W, 3)`` -> ``(h, w, 3)``."""
    H, W = rgb.shape[:2]
    h, w = size
    out = np.empty((h, w, rgb.shape[2]), np.float64)
    for i in range(h):
        r0, r1 = (i * H) // h, -((-(i + 1) * H) // h)
        for j in range(w):
            c0, c1 = (j * W) // w, -((-(j + 1) * W) // w)
            out[i, j] = rgb[r0:r1, c0:c1].mean(axis=(0, 1))
    return out


# -- cv2 path (CPU) -----------------------------------------------------------------------------
# cv2's INTER_AREA at a non-integer factor is a scalar loop (~10 ms for 1080p -> 168 px on 2 cores); its exact
# 2x2 case is vectorised (~1 ms). So ``cv2_preprocess`` halves the frame first while the rest of the way stays a
# real downscale, then finishes with INTER_AREA. Each halving moves a box edge by at most one source pixel of
# that stage (measured against one INTER_AREA resize in BENCHMARKS.md; bounded in test_inference_preprocess).
MIN_REMAINING_SCALE = 1.5  # halve only while at least this much downscaling is left for INTER_AREA


def halvings(H: int, W: int, h: int, w: int) -> int:
    """How many exact 2x2 halvings ``cv2_preprocess`` applies to an ``(H, W)`` frame bound for ``(h, w)``."""
    n = 0
    while H % 2 == 0 and W % 2 == 0 and H / 2 >= MIN_REMAINING_SCALE * h and W / 2 >= MIN_REMAINING_SCALE * w:
        H, W, n = H // 2, W // 2, n + 1
    return n


def _area_resize(img: np.ndarray, size: tuple[int, int], prescale: bool) -> np.ndarray:
    """uint8 ``img`` (H, W[, C]) -> ``size`` = (h, w): INTER_AREA when shrinking (after the halvings when
    ``prescale``), INTER_LINEAR when growing."""

    h, w = size
    H, W = img.shape[:2]
    if not (H >= h and W >= w):
        return cv2.resize(img, (w, h), interpolation=cv2.INTER_LINEAR)
    for _ in range(halvings(H, W, h, w) if prescale else 0):
        H, W = H // 2, W // 2
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_AREA)
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def cv2_preprocess(frame: RawFrame, size: tuple[int, int], out: np.ndarray | None = None, *,
                   prescale: bool = True) -> np.ndarray:
    """uint8 RGB ``(h, w, 3)`` at ``size`` = (h, w) from any supported frame; writes into ``out`` if given.

    ``prescale=False`` is one INTER_AREA resize of the whole frame (slower; the previous method).
    """

    p, e = frame.pixels, frame.encoding
    if e in YUYV_ENCODINGS or e in UYVY_ENCODINGS:
        code = cv2.COLOR_YUV2RGB_YUYV if e in YUYV_ENCODINGS else cv2.COLOR_YUV2RGB_UYVY
        rgb = cv2.cvtColor(np.ascontiguousarray(p), code)  # uint8 -> uint8, full resolution
        small = _area_resize(rgb, size, prescale)
    elif e == "mono8":
        small = _area_resize(p[:, :, 0], size, prescale)[:, :, None]
    else:  # rgb8 / bgr8 / rgba8 / bgra8: resize all channels (alpha too: cheaper than a dense copy without it)
        small = _area_resize(p if _cv2_ok(p) else np.ascontiguousarray(p), size, prescale)[:, :, :3]
        if e in ("bgr8", "bgra8"):
            small = small[:, :, ::-1]
    if out is None:
        out = np.empty((*size, 3), np.uint8)
    out[...] = small  # broadcasts mono8's single channel
    return out


def _cv2_ok(a: np.ndarray) -> bool:
    """cv2 takes row-padded arrays, but the pixel and channel strides must be dense."""
    return a.strides[2] == 1 and a.strides[1] == a.shape[2]


def cv2_full_rgb(frame: RawFrame) -> np.ndarray:
    """Full-resolution uint8 RGB (for the CPU overlay only)."""

    p, e = frame.pixels, frame.encoding
    if e in YUYV_ENCODINGS:
        return cv2.cvtColor(np.ascontiguousarray(p), cv2.COLOR_YUV2RGB_YUYV)
    if e in UYVY_ENCODINGS:
        return cv2.cvtColor(np.ascontiguousarray(p), cv2.COLOR_YUV2RGB_UYVY)
    if e == "mono8":
        return np.repeat(p[:, :, :1], 3, axis=2)
    if e == "rgb8":
        return np.ascontiguousarray(p)
    if e == "rgba8":
        return np.ascontiguousarray(p[:, :, :3])
    return cv2.cvtColor(np.ascontiguousarray(p[:, :, :3]), cv2.COLOR_BGR2RGB)


# -- torch path (device) ------------------------------------------------------------------------
def torch_to_rgb(u8: torch.Tensor, encoding: str) -> torch.Tensor:
    """``(B, H, W, C)`` uint8 on any device -> ``(B, 3, H, W)`` float32 RGB in ``[0, 255]``."""
    e = encoding
    if e in YUYV_ENCODINGS or e in UYVY_ENCODINGS:
        x = u8.float()
        if e in YUYV_ENCODINGS:
            y, c = x[..., 0], x[..., 1]
        else:
            c, y = x[..., 0], x[..., 1]
        u = _pairs(c[:, :, 0::2]) - 128.0
        v = _pairs(c[:, :, 1::2]) - 128.0
        yy = (y - 16.0).clamp_(min=0.0).mul_(_CY)
        r = yy + _CVR * v
        g = yy + _CVG * v + _CUG * u
        b = yy + _CUB * u
        return torch.stack([r, g, b], dim=1).clamp_(0.0, 255.0)
    x = u8.permute(0, 3, 1, 2)  # (B, C, H, W) view
    if e == "mono8":
        return x.float().expand(-1, 3, -1, -1)
    if e in ("bgr8", "bgra8"):
        # slice + flip, not ``x[:, [2, 1, 0]]``: a list index becomes an index tensor made on the host and copied
        # to the device per call (a blocking copy from pageable memory on CUDA); torch has no negative-step slices
        return x[:, :3].flip(1).float()
    return x[:, :3].float()


def _pairs(x: torch.Tensor) -> torch.Tensor:
    """(B, H, W/2) -> (B, H, W): each value twice (a view expanded then copied; never a host sync)."""
    B, H, half = x.shape
    return x.unsqueeze(-1).expand(B, H, half, 2).reshape(B, H, 2 * half)


def torch_resize(rgb: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Box-filter downscale (adaptive average pooling) or bilinear upscale to ``size`` = (h, w)."""
    H, W = rgb.shape[-2:]
    h, w = size
    if (H, W) == (h, w):
        return rgb
    if H >= h and W >= w:
        return F.adaptive_avg_pool2d(rgb, (h, w))
    return F.interpolate(rgb, size=(h, w), mode="bilinear", align_corners=False)


def torch_preprocess(u8: torch.Tensor, encoding: str, size: tuple[int, int]) -> torch.Tensor:
    """``(B, H, W, C)`` uint8 -> ``(B, 3, h, w)`` float32 RGB in ``[0, 1]``, all on ``u8``'s device."""
    return torch_resize(torch_to_rgb(u8, encoding), size) * (1.0 / 255.0)

"""Raw frames: validate ``sensor_msgs/Image`` / ``CompressedImage`` fields and wrap them without copying.

``frame_from_image_fields`` never converts: the pixels stay uint8 in the caller's buffer (a strided view when
``step`` has row padding); colour conversion and resizing happen later, on the engine's device.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# encoding -> bytes per pixel in the stored array (YUV 4:2:2 is stored as (H, W, 2): Y plus alternating U/V)
ENCODINGS: dict[str, int] = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "yuv422_yuy2": 2,  # YUYV: Y0 U Y1 V
    "yuyv": 2,
    "uyvy": 2,  # UYVY: U Y0 V Y1
    "yuv422": 2,  # ROS' "yuv422" is UYVY
}
YUYV_ENCODINGS = ("yuv422_yuy2", "yuyv")
UYVY_ENCODINGS = ("uyvy", "yuv422")

FRAME_ERROR_REASONS = (
    "unsupported_encoding", "truncated_data", "zero_size", "bad_step", "corrupt_compressed", "too_large",
)


class FrameError(ValueError):
    """A frame that cannot be used. ``reason`` is a short stable code (one of ``FRAME_ERROR_REASONS``)."""

    def __init__(self, reason: str, message: str):
        if reason not in FRAME_ERROR_REASONS:
            raise ValueError(f"unknown FrameError reason {reason!r}")
        self.reason = reason
        super().__init__(message)


@dataclass
class RawFrame:
    """uint8 pixels ``(H, W, C)`` (zero-copy view of the message buffer, strided when the step is padded)."""

    pixels: np.ndarray
    encoding: str

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)"""
        return self.height, self.width


def _norm_encoding(encoding: str) -> str:
    e = str(encoding).strip().lower()
    if e not in ENCODINGS:
        raise FrameError(
            "unsupported_encoding",
            f"encoding {encoding!r} is not supported (supported: {', '.join(sorted(ENCODINGS))})",
        )
    return e


def frame_from_image_fields(
    encoding: str, width: int, height: int, step: int, data, *, max_pixels: int | None = None
) -> RawFrame:
    """Validate ``sensor_msgs/Image`` fields and wrap ``data`` as a zero-copy ``RawFrame``.

    ``data`` may be ``bytes``, ``bytearray``, ``array.array('B')`` (what rclpy gives), ``memoryview`` or a
    uint8 numpy array. Rows may be padded (``step > width * bytes_per_pixel``). YUV 4:2:2 needs an even
    width (a row is whole 4-byte macro-pixels): an odd width is a ``bad_step`` error.
    """
    enc = _norm_encoding(encoding)
    bpp = ENCODINGS[enc]
    width, height, step = int(width), int(height), int(step)
    if width <= 0 or height <= 0:
        raise FrameError("zero_size", f"image is {width}x{height}: width and height must be positive")
    if max_pixels is not None and width * height > max_pixels:
        raise FrameError("too_large", f"image is {width}x{height} = {width * height} pixels, limit {max_pixels}")
    row = width * bpp
    if step < row:
        raise FrameError("bad_step", f"step {step} is less than width*bytes_per_pixel = {width}*{bpp} = {row}")
    if bpp == 2 and width % 2:
        raise FrameError("bad_step", f"{enc} needs an even width (4-byte macro-pixels), got width {width}")
    try:
        buf = np.frombuffer(data, dtype=np.uint8)
    except (TypeError, ValueError) as e:  # a memoryview of another item size, etc.
        try:
            buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
        except Exception:
            raise FrameError("truncated_data", f"data is not a byte buffer: {e}") from e
    need = step * height
    if buf.size < need:
        raise FrameError("truncated_data", f"data has {buf.size} bytes, step*height needs {need}")
    rows = buf[:need].reshape(height, step)
    pixels = np.lib.stride_tricks.as_strided(
        rows, shape=(height, width, bpp), strides=(step, bpp, 1), writeable=False
    )
    return RawFrame(pixels=pixels, encoding=enc)


def frame_from_array(pixels: np.ndarray, encoding: str) -> RawFrame:
    """Wrap an existing ``(H, W[, C])`` uint8 array (tests, replay from video files)."""
    enc = _norm_encoding(encoding)
    a = np.asarray(pixels)
    if a.dtype != np.uint8:
        raise FrameError("unsupported_encoding", f"pixels must be uint8, got {a.dtype}")
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] != ENCODINGS[enc]:
        raise FrameError("bad_step", f"{enc} needs (H, W, {ENCODINGS[enc]}) pixels, got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise FrameError("zero_size", f"image is {a.shape[1]}x{a.shape[0]}")
    return RawFrame(pixels=a, encoding=enc)


def frame_from_compressed(format: str, data, *, max_pixels: int | None = None) -> RawFrame:  # noqa: A002
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg / png) to ``bgr8`` (colour), ``bgra8`` or ``mono8``."""
    import cv2

    fmt = str(format).lower()
    if not any(k in fmt for k in ("jpeg", "jpg", "png")):
        raise FrameError("unsupported_encoding", f"compressed format {format!r} is not supported (jpeg, png)")
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    if buf.size == 0:
        raise FrameError("zero_size", "compressed image has no data")
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise FrameError("corrupt_compressed", f"cannot decode {buf.size} bytes of {format!r} data")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FrameError("unsupported_encoding", f"decoded image has dtype {img.dtype}")
    h, w = img.shape[:2]
    if max_pixels is not None and h * w > max_pixels:
        raise FrameError("too_large", f"image is {w}x{h} = {w * h} pixels, limit {max_pixels}")
    if img.ndim == 2:
        return RawFrame(pixels=img[:, :, None], encoding="mono8")
    c = img.shape[2]
    if c == 1:
        return RawFrame(pixels=img, encoding="mono8")
    if c == 3:
        return RawFrame(pixels=img, encoding="bgr8")
    if c == 4:
        return RawFrame(pixels=img, encoding="bgra8")
    raise FrameError("unsupported_encoding", f"decoded image has {c} channels")

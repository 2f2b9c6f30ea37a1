"""Raw frames: validate ``sensor_msgs/Image`` / ``CompressedImage`` fields and wrap them without copying.

``frame_from_image_fields`` never converts: the pixels stay uint8 in the caller's buffer (a strided view when
``step`` has row padding); colour conversion and resizing happen later, on the engine's device.

Compressed frames are checked from their header bytes (PNG IHDR, JPEG SOFn) before anything is decoded, so a
small file that claims a huge image is rejected without allocating it (``check_compressed``, cheap enough for a
subscription callback). OpenCV's own decoder limit is capped too (``OPENCV_IO_MAX_IMAGE_PIXELS``, which OpenCV
reads once, when ``cv2`` is first imported: this module sets it at import unless the environment already does).
"""
from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
import tempfile
import threading
import zlib
from dataclasses import dataclass

import numpy as np

# The most pixels any frame may have (the upper bound of the node's max_input_pixels): OpenCV never allocates
# more for one decoded image, whatever a header check might miss.
MAX_DECODE_PIXELS = 1 << 28
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_DECODE_PIXELS))

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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_HEADER_BYTES = 8 + 4 + 4 + 13 + 4  # signature, IHDR length and type, IHDR data, CRC
_PNG_BIT_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}  # by colour type
_PNG_MAX_SIDE = (1 << 31) - 1
# JPEG start-of-frame markers (SOF0-3, 5-7, 9-11, 13-15; C4, C8 and CC are other segments).
_JPEG_SOF = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))
_JPEG_STANDALONE = frozenset((0x01, *range(0xD0, 0xD8)))  # TEM, RST0-7: no length field
_JPEG_MAX_SEGMENTS = 1000  # real files have a few dozen before the frame header; bounds the scan
_NOT_FILL = re.compile(rb"[^\xff]")


@dataclass(frozen=True)
class CompressedHeader:
    """What a compressed frame's header says: the codec and the size of the image it decodes to."""

    codec: str  # "png" or "jpeg"
    width: int
    height: int


def compressed_codec(format: str) -> str:  # noqa: A002 - the CompressedImage field's name
    """The codec a ``CompressedImage.format`` names: ``"png"`` or ``"jpeg"``.

    image_transport writes e.g. ``"bgr8; jpeg compressed bgr8"``; plain ``"jpeg"`` / ``"png"`` is common too.
    Depth images (``compressedDepth``) carry an extra header and are not supported.
    """
    fmt = str(format).lower()
    if "compresseddepth" in fmt:
        raise FrameError("unsupported_encoding", f"compressed format {format!r}: compressedDepth is not supported")
    if "png" in fmt:
        return "png"
    if "jpeg" in fmt or "jpg" in fmt:
        return "jpeg"
    raise FrameError("unsupported_encoding", f"compressed format {format!r} is not supported (jpeg, png)")


def _corrupt(codec: str, what: str) -> FrameError:
    return FrameError("corrupt_compressed", f"not a valid {codec.upper()} header: {what}")


def png_header(buf: bytes) -> CompressedHeader:
    """Size from a PNG's IHDR chunk (which must come first), with its CRC and field values checked."""
    if len(buf) < _PNG_HEADER_BYTES:
        raise _corrupt("png", f"{len(buf)} bytes, the signature and IHDR chunk alone take {_PNG_HEADER_BYTES}")
    if buf[:8] != PNG_SIGNATURE:
        raise _corrupt("png", f"the data does not start with the PNG signature (starts {buf[:8].hex()})")
    length, chunk = struct.unpack(">I4s", buf[8:16])
    if chunk != b"IHDR" or length != 13:
        raise _corrupt("png", f"the first chunk is {chunk!r} of {length} bytes, not the 13-byte IHDR")
    if zlib.crc32(buf[12:29]) != int.from_bytes(buf[29:33], "big"):
        raise _corrupt("png", "the IHDR chunk's CRC does not match its content")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", buf[16:29])
    if width == 0 or height == 0:
        raise FrameError("zero_size", f"the PNG header says {width}x{height}")
    if width > _PNG_MAX_SIDE or height > _PNG_MAX_SIDE:
        raise _corrupt("png", f"{width}x{height}: PNG sides are at most 2^31-1")
    if depth not in _PNG_BIT_DEPTHS.get(colour, ()):
        raise _corrupt("png", f"bit depth {depth} with colour type {colour} is not a valid combination")
    if compression or filtering or interlace > 1:
        raise _corrupt("png", f"compression {compression}, filter {filtering}, interlace {interlace}")
    return CompressedHeader("png", width, height)


def jpeg_header(buf: bytes) -> CompressedHeader:
    """Size from a JPEG's first start-of-frame (SOFn) segment, walking the segments before it by length."""
    n = len(buf)
    if n < 4 or buf[:2] != b"\xff\xd8":
        raise _corrupt("jpeg", f"the data does not start with the SOI marker FFD8 (starts {buf[:4].hex()})")
    pos = 2
    for _ in range(_JPEG_MAX_SEGMENTS):
        if pos >= n:
            break
        if buf[pos] != 0xFF:
            raise _corrupt("jpeg", f"expected a marker at byte {pos}, found 0x{buf[pos]:02x}")
        found = _NOT_FILL.search(buf, pos)  # markers may be preceded by any number of 0xFF fill bytes
        if found is None:
            break
        pos = found.start()
        marker = buf[pos]
        pos += 1
        if marker in _JPEG_STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise _corrupt("jpeg", f"{'end of image' if marker == 0xD9 else 'scan data'} before a frame header")
        if pos + 2 > n:
            break
        length = int.from_bytes(buf[pos:pos + 2], "big")
        if length < 2:
            raise _corrupt("jpeg", f"segment 0xFF{marker:02X} at byte {pos - 2} has length {length}")
        if marker in _JPEG_SOF:
            if length < 8 or pos + length > n:
                break
            height, width = struct.unpack(">HH", buf[pos + 3:pos + 7])
            components = buf[pos + 7]
            if length != 8 + 3 * components:
                raise _corrupt("jpeg", f"frame header of {length} bytes for {components} components")
            if width == 0 or height == 0:
                raise FrameError("zero_size", f"the JPEG frame header says {width}x{height}")
            if components not in (1, 3, 4):
                raise _corrupt("jpeg", f"{components} colour components (1, 3 or 4 are decodable)")
            return CompressedHeader("jpeg", width, height)
        pos += length
    else:
        raise _corrupt("jpeg", f"no frame header (SOFn) within the first {_JPEG_MAX_SEGMENTS} segments")
    raise _corrupt("jpeg", f"the data ends ({n} bytes) before a complete frame header (SOFn)")


def check_compressed(format: str, data, *, max_pixels: int | None = None) -> CompressedHeader:  # noqa: A002
    """Everything about a compressed frame that can be checked without decoding it: the format, that the data
    is of that codec, and the image size from its header (``too_large`` above ``max_pixels``). Raises
    ``FrameError``; costs microseconds, whatever size the image claims."""
    codec = compressed_codec(format)
    buf = memoryview(data).cast("B")  # a view, not a copy: the callback runs this on every frame
    if not buf:
        raise FrameError("zero_size", "compressed image has no data")
    header = png_header(buf) if codec == "png" else jpeg_header(buf)
    pixels = header.width * header.height
    if max_pixels is not None and pixels > max_pixels:
        raise FrameError("too_large", f"the {codec.upper()} header says {header.width}x{header.height} = {pixels} "
                                      f"pixels, limit {max_pixels} (not decoded)")
    if pixels > MAX_DECODE_PIXELS:
        raise FrameError("too_large", f"the {codec.upper()} header says {header.width}x{header.height} = {pixels} "
                                      f"pixels, more than any frame may have ({MAX_DECODE_PIXELS})")
    return header


# What libpng and libjpeg print straight to file descriptor 2 (OpenCV does not route it): harmless notes that
# are dropped (a colour profile, a JFIF revision, padding before the end-of-image marker, which many webcams'
# MJPEG frames have), and the messages that mean the pixels are damaged.
_CODEC_NOTE = re.compile(r"^(libpng warning|Warning: unknown JFIF revision|Warning: thumbnail image size"
                         r"|Corrupt JPEG data: \d+ extraneous bytes before marker 0xd9)")
_CODEC_DAMAGE = re.compile(r"^(libpng error|Corrupt JPEG data|Premature end of JPEG file|Invalid SOS parameters"
                           r"|Inconsistent progression sequence|Unsupported marker|Bogus marker)")
_capture = threading.local()


@contextlib.contextmanager
def _codec_messages():
    """Collect what the C codecs print to stderr during a decode; anything else printed meanwhile (another
    thread's log line) is written back after it. Yields the list that receives the codec's damage messages.
    libpng writes a message and its newline separately: a line another thread writes in between is glued to
    the codec's message and goes with it (measured: 1-4 of 420-520 lines written every 0.5 ms while 100
    damaged PNGs and 100 JPEGs were decoded, idle or with both cores busy; libjpeg writes each line at once)."""
    damage: list[str] = []
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to capture
        yield damage
        return
    sink = getattr(_capture, "fd", None)
    if sink is None:  # one unnamed file per thread, reused (os-level: the offset is shared with fd 2)
        sink, path = tempfile.mkstemp(prefix="endoarss-codec-")
        os.unlink(path)
        _capture.fd = sink
    os.ftruncate(sink, 0)
    os.lseek(sink, 0, os.SEEK_SET)
    sys.stderr.flush()
    os.dup2(sink, 2)
    try:
        yield damage
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        size = os.lseek(sink, 0, os.SEEK_CUR)
        text = os.pread(sink, size, 0).decode(errors="replace") if size else ""
        other = []
        for line in text.splitlines():
            if _CODEC_NOTE.match(line):
                continue
            if _CODEC_DAMAGE.match(line):
                damage.append(line.strip())
            elif line:
                other.append(line + "\n")
        if other:
            os.write(2, "".join(other).encode())


def quiet_opencv_log() -> None:
    """Keep OpenCV's own log lines (e.g. ``grfmt_png.cpp ... IHDR chunk shall be first`` for every bad image)
    off stderr, below fatal errors: callers report a ``FrameError`` that says what is wrong, at their own
    rate. Process-wide: the node calls it; a library user decides for themselves."""
    import cv2

    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_FATAL)


def frame_from_compressed(format: str, data, *, max_pixels: int | None = None) -> RawFrame:  # noqa: A002
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg / png) to ``bgr8`` (colour), ``bgra8`` or ``mono8``.

    The header is checked first (``check_compressed``): nothing is decoded for a frame that is too large or
    not of its format."""
    import cv2

    header = check_compressed(format, data, max_pixels=max_pixels)
    buf = np.frombuffer(data, dtype=np.uint8) if not isinstance(data, np.ndarray) else data.reshape(-1)
    with _codec_messages() as damage:
        try:
            img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
        except cv2.error as e:  # e.g. OpenCV's own pixel limit
            raise FrameError("corrupt_compressed", f"cannot decode {buf.size} bytes of {header.codec} data: "
                                                   f"{str(e).strip().splitlines()[-1]}") from e
    if img is None or img.size == 0 or damage:
        # A damaged JPEG still "decodes", partly grey or garbled: its pixels are not used either.
        said = f": the decoder says {'; '.join(damage)}" if damage else ""
        raise FrameError("corrupt_compressed", f"cannot decode {buf.size} bytes of {header.codec} data "
                                               f"({header.width}x{header.height} by its header){said}")
    if img.shape[:2] != (header.height, header.width):
        raise FrameError("corrupt_compressed", f"decoded to {img.shape[1]}x{img.shape[0]}, its header says "
                                               f"{header.width}x{header.height}")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise FrameError("unsupported_encoding", f"decoded image has dtype {img.dtype}")
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

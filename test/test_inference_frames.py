"""Frame validation and colour conversion / resize against a float64 reference, for every encoding."""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest
import torch

from endoarss_ros.inference import ENCODINGS, FrameError, frame_from_compressed, frame_from_image_fields
from endoarss_ros.inference.preprocess import (
    cv2_preprocess,
    reference_area_resize,
    reference_rgb,
    torch_preprocess,
    torch_to_rgb,
)

RNG = np.random.default_rng(1234)


def _image_bytes(encoding: str, H: int, W: int, pad: int = 0) -> tuple[np.ndarray, bytes, int]:
    C = ENCODINGS[encoding]
    px = RNG.integers(0, 256, (H, W, C), dtype=np.uint8)
    if encoding in ("yuyv", "yuv422_yuy2", "uyvy", "yuv422"):
        px = RNG.integers(16, 236, (H, W, C), dtype=np.uint8)  # video levels
    step = W * C + pad
    rows = np.full((H, step), 0xAB, np.uint8)
    rows[:, : W * C] = px.reshape(H, W * C)
    return px, rows.tobytes(), step


def _cv2_reference_rgb(frame) -> np.ndarray:
    """Independent conversion with OpenCV (uint8), to anchor the float64 reference's conventions."""
    p = np.ascontiguousarray(frame.pixels)
    codes = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
             "mono8": cv2.COLOR_GRAY2RGB, "yuyv": cv2.COLOR_YUV2RGB_YUYV, "yuv422_yuy2": cv2.COLOR_YUV2RGB_YUYV,
             "uyvy": cv2.COLOR_YUV2RGB_UYVY, "yuv422": cv2.COLOR_YUV2RGB_UYVY}
    code = codes[frame.encoding]
    return p if code is None else cv2.cvtColor(p, code)


# YUV 4:2:2 frames have an even width by construction (an odd one is tested as an error below).
_CONVERSION_CASES = [(enc, width, pad) for enc in sorted(ENCODINGS) for width, pad in [(32, 0), (31, 5), (46, 3)]
                     if not (ENCODINGS[enc] == 2 and width % 2)]


@pytest.mark.parametrize("encoding,width,pad", _CONVERSION_CASES)
def test_colour_conversion_matches_float64_reference(encoding, width, pad):
    H = 21
    px, data, step = _image_bytes(encoding, H, width, pad)
    frame = frame_from_image_fields(encoding, width, H, step, data)
    assert frame.pixels.shape == (H, width, ENCODINGS[encoding])
    np.testing.assert_array_equal(frame.pixels, px)  # zero-copy view skips the row padding
    ref = reference_rgb(frame)
    # the float64 reference agrees with OpenCV's own uint8 conversion to rounding
    assert np.abs(ref - _cv2_reference_rgb(frame).astype(np.float64)).max() <= 0.51
    # device path, same size (no resize): float conversion, exact to float32 precision
    u8 = torch.from_numpy(frame.pixels.copy())[None]
    got = torch_to_rgb(u8, encoding)[0].permute(1, 2, 0).numpy().astype(np.float64)
    assert np.abs(got - ref).max() < 1e-3


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_device_and_cpu_resize_match_reference(encoding):
    H, W, h, w = 48, 70, 14, 28  # 70 -> 28 non-integer factor; odd-ish sizes
    px, data, step = _image_bytes(encoding, H, W, pad=4)
    frame = frame_from_image_fields(encoding, W, H, step, data)
    ref = reference_area_resize(reference_rgb(frame), (h, w)) / 255.0
    u8 = torch.from_numpy(frame.pixels.copy())[None]
    dev = torch_preprocess(u8, encoding, (h, w))[0].permute(1, 2, 0).numpy()
    assert dev.shape == (h, w, 3)
    assert np.abs(dev - ref).max() < 1e-5  # the torch (CUDA) path: exact box filter in float
    # cv2 path (CPU): uint8 INTER_AREA (fractional box weights at non-integer factors); reference: the same
    # filter applied in float64 to the float64 RGB
    cpu = cv2_preprocess(frame, (h, w)).astype(np.float64)
    assert cpu.shape == (h, w, 3)
    ref_area = cv2.resize(reference_rgb(frame), (w, h), interpolation=cv2.INTER_AREA)
    assert np.abs(cpu - ref_area).max() <= 1.6  # uint8 rounding (+ the uint8 YUV conversion before resizing)
    # integer factor: INTER_AREA is exactly the device path's box filter
    ref2 = reference_area_resize(reference_rgb(frame), (24, 35))
    cpu2 = cv2_preprocess(frame, (24, 35)).astype(np.float64)
    assert np.abs(cpu2 - ref2).max() <= 1.6


@pytest.mark.parametrize("kind", ["bytes", "bytearray", "array", "memoryview"])
def test_buffer_types_are_wrapped_without_copy(kind):
    px, data, step = _image_bytes("rgb8", 4, 6, pad=2)
    buf = {"bytes": data, "bytearray": bytearray(data), "array": array.array("B", data),
           "memoryview": memoryview(bytearray(data))}[kind]
    f = frame_from_image_fields("rgb8", 6, 4, step, buf)
    np.testing.assert_array_equal(f.pixels, px)
    assert f.pixels.strides == (step, 3, 1)
    if kind != "bytes":
        assert np.shares_memory(f.pixels, np.frombuffer(buf, np.uint8))


@pytest.mark.parametrize("args,reason,text", [
    (("bgr9", 4, 4, 12, bytes(48)), "unsupported_encoding", "bgr9"),
    (("rgb8", 4, 4, 12, bytes(47)), "truncated_data", "data has 47 bytes, step*height needs 48"),
    (("rgb8", 0, 4, 12, bytes(48)), "zero_size", "0x4"),
    (("rgb8", 4, 0, 12, b""), "zero_size", "4x0"),
    (("rgb8", 4, 4, 11, bytes(48)), "bad_step", "step 11"),
    (("yuyv", 5, 2, 10, bytes(20)), "bad_step", "even width"),
    (("rgb8", 100, 100, 300, bytes(30000)), "too_large", "limit 9999"),
])
def test_frame_errors(args, reason, text):
    with pytest.raises(FrameError) as ei:
        frame_from_image_fields(*args, max_pixels=9999)
    assert ei.value.reason == reason
    assert isinstance(ei.value, ValueError)
    assert text in str(ei.value)


def test_compressed_frames():
    img = RNG.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    ok, png = cv2.imencode(".png", img)
    f = frame_from_compressed("png", png.tobytes())
    assert f.encoding == "bgr8"
    np.testing.assert_array_equal(f.pixels, img)
    ok, jpg = cv2.imencode(".jpg", img[:, :, 0])
    f = frame_from_compressed("mono8; jpeg compressed mono8", array.array("B", jpg.tobytes()))
    assert f.encoding == "mono8" and f.pixels.shape == (20, 30, 1)
    for fmt, data, reason in [("jpeg", b"\xff\xd8 not really a jpeg", "corrupt_compressed"),
                              ("tiff", png.tobytes(), "unsupported_encoding"),
                              ("png", b"", "zero_size")]:
        with pytest.raises(FrameError) as ei:
            frame_from_compressed(fmt, data)
        assert ei.value.reason == reason
    with pytest.raises(FrameError) as ei:
        frame_from_compressed("png", png.tobytes(), max_pixels=100)
    assert ei.value.reason == "too_large"

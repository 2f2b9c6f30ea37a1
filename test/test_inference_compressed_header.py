"""Compressed frames are checked from their header bytes (PNG IHDR, JPEG SOFn) before anything is decoded:
real encoder output of every kind reads back its true size, and damaged or lying headers are refused with
their reason, without decoding."""
from __future__ import annotations

import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from endoarss_ros.inference.frames import (
    MAX_DECODE_PIXELS,
    CompressedHeader,
    FrameError,
    check_compressed,
    compressed_codec,
    frame_from_compressed,
    jpeg_header,
    png_header,
)

RNG = np.random.default_rng(7)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_claiming(width: int, height: int, idat: bytes = b"garbage", *, depth=8, colour=2) -> bytes:
    """A PNG whose IHDR (valid CRC) claims width x height, followed by ``idat`` as its image data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def jpeg_claiming(width: int, height: int, components: int = 3, *, marker: int = 0xC0) -> bytes:
    """SOI, a comment, a SOFn segment claiming width x height, then no scan data."""
    sof = struct.pack(">BHHB", 8, height, width, components) + bytes(3 * components)
    com = b"made by a test"
    return (b"\xff\xd8" + b"\xff\xfe" + struct.pack(">H", len(com) + 2) + com
            + bytes((0xFF, marker)) + struct.pack(">H", len(sof) + 2) + sof)


def _encode(ext: str, img: np.ndarray, *params: int) -> bytes:
    ok, buf = cv2.imencode(ext, img, list(params))
    assert ok
    return buf.tobytes()


@pytest.mark.parametrize("shape,dtype", [((37, 53), np.uint8), ((37, 53), np.uint16), ((37, 53, 3), np.uint8),
                                         ((37, 53, 4), np.uint8), ((37, 53, 3), np.uint16), ((1, 1), np.uint8)])
def test_png_header_of_real_encoder_output(shape, dtype):
    img = RNG.integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    data = _encode(".png", img)
    assert png_header(data) == CompressedHeader("png", shape[1], shape[0])
    frame = frame_from_compressed("png", data)
    assert frame.size == shape[:2]


@pytest.mark.parametrize("params", [(), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_OPTIMIZE, 1),
                                    (cv2.IMWRITE_JPEG_RST_INTERVAL, 4)])
@pytest.mark.parametrize("shape", [(480, 640, 3), (31, 17), (1, 1, 3), (1080, 1920, 3)])
def test_jpeg_header_of_real_encoder_output(params, shape):
    img = RNG.integers(0, 255, shape, dtype=np.uint8)
    data = _encode(".jpg", img, *params)
    assert jpeg_header(data) == CompressedHeader("jpeg", shape[1], shape[0])
    assert frame_from_compressed("bgr8; jpeg compressed bgr8", data).size == shape[:2]


def test_jpeg_header_after_large_app_segments_and_fill_bytes():
    real = _encode(".jpg", RNG.integers(0, 255, (24, 40, 3), dtype=np.uint8))
    app = b"\xff\xe1" + struct.pack(">H", 65535) + bytes(65533)  # a full-size APP1 (EXIF-like) segment
    padded = real[:2] + app * 3 + b"\xff\xff\xff" + real[2:]  # fill bytes before the next marker are allowed
    assert jpeg_header(padded) == CompressedHeader("jpeg", 40, 24)
    assert frame_from_compressed("jpeg", padded).size == (24, 40)  # and OpenCV agrees it is a valid JPEG


@pytest.mark.parametrize("marker", [0xC1, 0xC2, 0xC3, 0xC9, 0xCA, 0xCB])
def test_every_start_of_frame_marker_gives_the_size(marker):
    assert jpeg_header(jpeg_claiming(300, 200, marker=marker)) == CompressedHeader("jpeg", 300, 200)


def test_define_huffman_table_is_not_taken_for_a_frame_header():
    dht = b"\xff\xc4" + struct.pack(">H", 8) + struct.pack(">BHHB", 8, 9999, 9999, 3)  # looks like SOF data
    data = b"\xff\xd8" + dht + jpeg_claiming(64, 48)[2:]
    assert jpeg_header(data) == CompressedHeader("jpeg", 64, 48)


@pytest.mark.parametrize("data,reason,text", [
    (b"\x89PNG\r\n\x1a\n" + bytes(10), "corrupt_compressed", "the signature and IHDR chunk alone"),
    (b"GIF89a" + bytes(40), "corrupt_compressed", "PNG signature"),
    (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IDAT", bytes(13)) + bytes(8), "corrupt_compressed", "not the 13-byte IHDR"),
    (png_claiming(64, 48)[:29] + b"\0\0\0\0" + png_claiming(64, 48)[33:], "corrupt_compressed", "CRC"),
    (png_claiming(0, 48), "zero_size", "0x48"),
    (png_claiming(64, 48, depth=16, colour=3), "corrupt_compressed", "bit depth 16 with colour type 3"),
    (png_claiming(64, 48, colour=5), "corrupt_compressed", "colour type 5"),
    (png_claiming(1 << 31, 8), "corrupt_compressed", "2^31-1"),
])
def test_bad_png_headers(data, reason, text):
    with pytest.raises(FrameError) as ei:
        check_compressed("png", data)
    assert ei.value.reason == reason and text in str(ei.value), str(ei.value)


@pytest.mark.parametrize("data,reason,text", [
    (b"\x89PNG\r\n\x1a\n" + bytes(40), "corrupt_compressed", "SOI marker"),
    (b"\xff\xd8\xff\xda\x00\x04ab", "corrupt_compressed", "scan data before a frame header"),
    (b"\xff\xd8\xff\xd9", "corrupt_compressed", "end of image before a frame header"),
    (b"\xff\xd8\x00\x01", "corrupt_compressed", "expected a marker at byte 2"),
    (b"\xff\xd8\xff\xe0\x00\x01", "corrupt_compressed", "length 1"),
    (jpeg_claiming(64, 48)[:-8], "corrupt_compressed", "before a complete frame header"),
    (b"\xff\xd8" + b"\xff\xfe\x00\x02" * 2000, "corrupt_compressed", "within the first 1000 segments"),
    (b"\xff\xd8" + b"\xff" * 100_000, "corrupt_compressed", "before a complete frame header"),
    (jpeg_claiming(64, 0), "zero_size", "64x0"),
    (jpeg_claiming(64, 48, components=2), "corrupt_compressed", "2 colour components"),
])
def test_bad_jpeg_headers(data, reason, text):
    with pytest.raises(FrameError) as ei:
        check_compressed("jpeg", data)
    assert ei.value.reason == reason and text in str(ei.value), str(ei.value)


def test_format_field():
    assert compressed_codec("bgr8; jpeg compressed bgr8") == "jpeg"
    assert compressed_codec("rgb8; png compressed rgb8") == "png"
    assert compressed_codec("JPG") == "jpeg"
    for fmt in ("16UC1; compressedDepth png", "tiff", "", "theora"):
        with pytest.raises(FrameError) as ei:
            compressed_codec(fmt)
        assert ei.value.reason == "unsupported_encoding"
    png = _encode(".png", np.zeros((4, 4), np.uint8))
    with pytest.raises(FrameError) as ei:  # a PNG under a jpeg format field is not taken on trust
        check_compressed("jpeg", png)
    assert ei.value.reason == "corrupt_compressed"


def test_size_bombs_are_refused_from_the_header():
    for data, fmt in ((png_claiming(20000, 20000), "png"), (jpeg_claiming(65535, 65535), "jpeg")):
        with pytest.raises(FrameError) as ei:
            frame_from_compressed(fmt, data, max_pixels=3840 * 2160)
        assert ei.value.reason == "too_large" and "not decoded" in str(ei.value)
        with pytest.raises(FrameError) as ei:  # no caller limit: still never more than MAX_DECODE_PIXELS
            check_compressed(fmt, data)
        assert ei.value.reason == "too_large" and str(MAX_DECODE_PIXELS) in str(ei.value)
    assert check_compressed("png", png_claiming(16000, 16000)) == CompressedHeader("png", 16000, 16000)


def test_header_that_passes_but_data_that_does_not_decode_is_corrupt():
    with pytest.raises(FrameError) as ei:
        frame_from_compressed("png", png_claiming(64, 48, idat=b"not zlib data"))
    assert ei.value.reason == "corrupt_compressed" and "64x48 by its header" in str(ei.value)


def test_a_real_png_bomb_is_refused_without_allocating_the_image():
    """6000x6000 rgb8 decodes to 108 MB; its file is 0.1 MB. Refused from the header, the process does not
    grow by the decoded size: peak RSS of a fresh process, first refusing it, then decoding it for comparison."""
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux /proc for the peak RSS")
    prog = textwrap.dedent("""
        import struct, zlib
        from endoarss_ros.inference.frames import FrameError, frame_from_compressed
        def chunk(k, d):
            return struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d))
        w = h = 6000
        c = zlib.compressobj(1)
        idat = b"".join(c.compress(bytes(1 + 3 * w)) for _ in range(h)) + c.flush()
        bomb = (b"\\x89PNG\\r\\n\\x1a\\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
        def peak():  # VmHWM: this process image's peak RSS (ru_maxrss would carry the parent's over exec)
            with open("/proc/self/status") as f:
                return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
        start = peak()
        try:
            frame_from_compressed("png", bomb, max_pixels=3840 * 2160)
            raise SystemExit("not refused")
        except FrameError as e:
            assert e.reason == "too_large", e
        refused = peak()
        assert frame_from_compressed("png", bomb).size == (h, w)
        print(refused - start, peak() - refused)
    """)
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    refused, decoded = (float(x) for x in done.stdout.split())
    assert refused < 20, f"refusing the bomb grew the process by {refused:.0f} MB"
    assert decoded > 90, f"the decode did not show in peak RSS ({decoded:.0f} MB): the measurement is blind"


def _jpeg_with_damaged_scan(seed: int = 3) -> bytes:
    """Garbage between the frame header and the scan: the header check passes, libjpeg complains."""
    real = _encode(".jpg", np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    scan = real.index(b"\xff\xda")
    return real[:scan] + b"\x12\x34" * 10 + real[scan:]


def test_a_jpeg_the_decoder_calls_damaged_is_refused_with_its_words():
    with pytest.raises(FrameError) as ei:
        frame_from_compressed("jpeg", _jpeg_with_damaged_scan())
    assert ei.value.reason == "corrupt_compressed" and "the decoder says Corrupt JPEG data" in str(ei.value)


def test_padding_before_the_end_of_image_marker_is_accepted():
    """Many webcams' MJPEG frames have a few bytes before EOI; libjpeg notes it, the image is intact."""
    img = RNG.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    real = _encode(".jpg", img)
    padded = real[:-2] + b"\x00\x00" + real[-2:]
    decoded = frame_from_compressed("jpeg", padded).pixels
    np.testing.assert_array_equal(decoded, frame_from_compressed("jpeg", real).pixels)


def test_codec_messages_stay_off_stderr_and_other_output_is_kept():
    """libpng / libjpeg print to file descriptor 2 themselves: in a fresh process, decoding damaged frames
    while another thread writes its own lines leaves only that thread's lines on stderr, all of them."""
    prog = textwrap.dedent(f"""
        import os, threading, time
        from endoarss_ros.inference.frames import FrameError, frame_from_compressed, quiet_opencv_log
        quiet_opencv_log()
        bad_jpeg = {_jpeg_with_damaged_scan()!r}
        bad_png = {png_claiming(64, 48, idat=b"not a zlib stream")!r}
        stop = threading.Event()
        written = [0]
        def chatter():
            while not stop.is_set():
                os.write(2, f"other line {{written[0]}}\\n".encode()); written[0] += 1; time.sleep(0.0005)
            os.write(2, f"lines {{written[0]}}\\n".encode())
        t = threading.Thread(target=chatter); t.start()
        reasons = set()
        k = 0
        # A stream, not a tight loop: frames come with gaps, and enough lines are written (on a loaded machine
        # the other thread runs seldom) that the share kept is measured, not one or two lines' luck.
        while k < 200 or written[0] < 400:
            try:
                frame_from_compressed("jpeg" if k % 2 else "png", bad_jpeg if k % 2 else bad_png)
            except FrameError as e:
                reasons.add(e.reason)
            k += 1
            time.sleep(0.001)
        stop.set(); t.join()
        print(sorted(reasons))
    """)
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['corrupt_compressed']"
    lines = done.stderr.splitlines()
    total = int(lines[-1].split()[1])
    assert total > 10, "the other thread hardly ran: the test shows nothing"
    chatter = [f"other line {i}" for i in range(total)]
    assert set(lines[:-1]) <= set(chatter), [x for x in lines[:-1] if x not in chatter][:5]  # no codec lines
    assert len(lines[:-1]) == len(set(lines[:-1])), "a line was written twice"
    # A line written between libpng's message and its newline goes with the message (see _codec_messages).
    assert len(lines) - 1 >= 0.95 * total, f"only {len(lines) - 1} of the other thread's {total} lines kept"

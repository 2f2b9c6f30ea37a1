"""Fuzz client for the perception node, in its own process: malformed frames (size bombs included) interleaved
with valid ones over real DDS; prints one JSON line with what was sent, what was answered and the node's final
/diagnostics values. test/test_node_fuzz.py runs it.

    python -m test.ros_fuzz_client '{"node": "/ns/endoarss_perception", "input": "/ns/image", ...}'

Each round publishes ``before`` bad frames, one valid frame, ``after`` bad frames, then waits until the valid
frame's activity and mask arrive. Every bad frame's kind has a known reject reason; the kinds that pass the header
check and fail only when decoded (``WORKER_KINDS``) go before the valid frame (a newer frame that looks valid may
legitimately replace an older pending one; the valid frame must then replace them, and nothing after it may).
"""
from __future__ import annotations

import json
import struct
import sys
import time
import zlib

import numpy as np

from test.node_probe import run_client, synthetic_image

WIDTH, HEIGHT = 64, 48


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, idat: bytes, *, crc_ok: bool = True) -> bytes:
    ihdr = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
    if not crc_ok:
        ihdr = ihdr[:-4] + bytes(4)
    return b"\x89PNG\r\n\x1a\n" + ihdr + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _jpeg_sof(width: int, height: int) -> bytes:
    sof = struct.pack(">BHHB", 8, height, width, 3) + bytes(9)
    return b"\xff\xd8\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof


def _garbage(rng, first_not: int) -> bytes:
    data = bytearray(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8).tobytes())
    if data[0] == first_not:
        data[0] ^= 0x01
    return bytes(data)


def _real_jpeg(rng) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _real_png(rng) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def _cut(data: bytes, rng) -> bytes:
    """The header intact (33 bytes), the rest cut short."""
    return data[:int(rng.integers(40, len(data) // 2))]


def _damaged_jpeg(rng) -> bytes:
    real = _real_jpeg(rng)
    scan = real.index(b"\xff\xda")
    return real[:scan] + b"\x12\x34" * int(rng.integers(2, 20)) + real[scan:]


# kind -> (reason, fields builder(rng) -> (format, data))
COMPRESSED_KINDS = {
    "format_tiff": ("unsupported_encoding", lambda rng: ("tiff", _real_jpeg(rng))),
    "format_depth": ("unsupported_encoding", lambda rng: ("16UC1; compressedDepth png", _png(8, 8, b"x"))),
    "empty": ("zero_size", lambda rng: ("png", b"")),
    "png_zero_width": ("zero_size", lambda rng: ("png", _png(0, HEIGHT, b"x"))),
    "png_bomb": ("too_large", lambda rng: ("png", _png(20000, int(rng.integers(20000, 60000)), b"x" * 100))),
    "jpeg_bomb": ("too_large", lambda rng: ("jpeg", _jpeg_sof(int(rng.integers(30000, 65536)), 65535))),
    "png_garbage": ("corrupt_compressed", lambda rng: ("png", _garbage(rng, 0x89))),
    "jpeg_garbage": ("corrupt_compressed", lambda rng: ("jpeg", _garbage(rng, 0xFF))),
    "png_bad_crc": ("corrupt_compressed", lambda rng: ("png", _png(WIDTH, HEIGHT, b"x", crc_ok=False))),
    "png_under_jpeg": ("corrupt_compressed", lambda rng: ("bgr8; jpeg compressed bgr8", _png(WIDTH, HEIGHT, b"x"))),
    "jpeg_cut_header": ("corrupt_compressed",
                        lambda rng: ("jpeg", _jpeg_sof(WIDTH, HEIGHT)[:int(rng.integers(2, 10))])),
}
# Pass the header check, fail when the worker decodes them (reason corrupt_compressed).
WORKER_KINDS = {
    "png_bad_idat": ("corrupt_compressed", lambda rng: ("png", _png(WIDTH, HEIGHT, _garbage(rng, 0x78)))),
    "png_truncated": ("corrupt_compressed", lambda rng: ("png", _cut(_real_png(rng), rng))),
    "jpeg_damaged_scan": ("corrupt_compressed", lambda rng: ("jpeg", _damaged_jpeg(rng))),
}
# kind -> (reason, fields builder(rng) -> dict of Image fields)
RAW_KINDS = {
    "truncated": ("truncated_data", lambda rng: dict(width=WIDTH, height=HEIGHT, step=WIDTH * 3, encoding="rgb8",
                                                     data=bytes(int(rng.integers(0, WIDTH * HEIGHT * 3))))),
    "zero_size": ("zero_size", lambda rng: dict(width=0, height=int(rng.integers(0, 100)), step=0,
                                                encoding="rgb8", data=b"")),
    "bad_step": ("bad_step", lambda rng: dict(width=WIDTH, height=HEIGHT, step=int(rng.integers(0, WIDTH * 3)),
                                              encoding="rgb8", data=bytes(WIDTH * HEIGHT * 3))),
    "odd_yuyv": ("bad_step", lambda rng: dict(width=WIDTH + 1, height=HEIGHT, step=(WIDTH + 1) * 2,
                                              encoding="yuyv", data=bytes((WIDTH + 1) * 2 * HEIGHT))),
    "encoding": ("unsupported_encoding", lambda rng: dict(width=WIDTH, height=HEIGHT, step=WIDTH * 4,
                                                          encoding=str(rng.choice(["32FC1", "16UC1", "bayer_rggb8",
                                                                                   "", "RGB 8"])),
                                                          data=bytes(WIDTH * HEIGHT * 4))),
    "bomb": ("too_large", lambda rng: dict(width=int(rng.integers(20000, 1 << 16)), height=20000, step=60000,
                                           encoding="rgb8", data=bytes(64))),
}


def _valid(transport: str, rng, stamp):
    from sensor_msgs.msg import CompressedImage, Image

    rgb = synthetic_image(int(rng.integers(0, 1000)), WIDTH, HEIGHT)
    if transport == "compressed":
        import cv2

        ext = str(rng.choice([".jpg", ".png"]))
        ok, buf = cv2.imencode(ext, np.ascontiguousarray(rgb[..., ::-1]))
        assert ok
        msg = CompressedImage(format="jpeg" if ext == ".jpg" else "png", data=buf.tobytes())
    else:
        msg = Image(width=WIDTH, height=HEIGHT, encoding="rgb8", step=WIDTH * 3)
        msg.data = rgb.tobytes()
    msg.header.stamp = stamp
    return msg


def _bad(transport: str, kinds: dict, kind: str, rng, stamp):
    from sensor_msgs.msg import CompressedImage, Image

    if transport == "compressed":
        fmt, data = kinds[kind][1](rng)
        msg = CompressedImage(format=fmt, data=data)
    else:
        msg = Image(**kinds[kind][1](rng))
    msg.header.stamp = stamp
    return msg


class Fuzzer:
    def __init__(self, node, plan: dict):
        from diagnostic_msgs.msg import DiagnosticArray
        from endoarss_ros.msg import Activity
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.node, self.plan = node, plan
        self.transport = plan["transport"]
        self.rng = np.random.default_rng(plan.get("seed", 0))
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        compressed = self.transport == "compressed"
        self.pub = node.create_publisher(CompressedImage if compressed else Image,
                                         plan["input"] + ("/compressed" if compressed else ""), reliable)
        self.answers: dict[str, set[int]] = {"activity": set(), "mask": set()}
        self.subs = [node.create_subscription(Activity, f"{plan['output']}/activity", self._on("activity"), reliable),
                     node.create_subscription(Image, f"{plan['output']}/segmentation/mask", self._on("mask"), reliable)]
        self.diagnostics: dict[str, str] = {}
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.sequence = 0
        self.sent: dict[str, int] = {}

    def _on(self, kind):
        def callback(msg):
            self.answers[kind].add(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
        return callback

    def _on_diagnostics(self, msg):
        for status in msg.status:
            if status.name.endswith(self.plan["node"]):
                self.diagnostics = {kv.key: kv.value for kv in status.values}

    def spin_until(self, seconds: float, done) -> bool:
        import rclpy

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if done():
                return True
            rclpy.spin_once(self.node, timeout_sec=0.01)
        return done()

    def publish(self, msg_for_stamp) -> int:
        from builtin_interfaces.msg import Time

        self.sequence += 1
        stamp = Time(sec=1000 + self.sequence, nanosec=0)  # unique per message
        self.pub.publish(msg_for_stamp(stamp))
        return (1000 + self.sequence) * 1_000_000_000

    def send_bad(self, kinds: dict, count: int) -> None:
        names = sorted(kinds)
        for _ in range(count):
            kind = names[int(self.rng.integers(0, len(names)))]
            self.publish(lambda stamp, k=kind: _bad(self.transport, kinds, k, self.rng, stamp))
            self.sent[kind] = self.sent.get(kind, 0) + 1

    def run(self) -> dict:
        plan = self.plan
        ready = self.spin_until(120, lambda: self.pub.get_subscription_count() > 0 and all(
            s.get_publisher_count() > 0 for s in self.subs))
        self.spin_until(0.5, lambda: False)
        header_kinds = COMPRESSED_KINDS if self.transport == "compressed" else RAW_KINDS
        before_kinds = {**header_kinds, **WORKER_KINDS} if self.transport == "compressed" else header_kinds
        unanswered = []
        for _ in range(plan["rounds"]):
            self.send_bad(before_kinds, plan["before"])
            stamp = self.publish(lambda s: _valid(self.transport, self.rng, s))
            self.send_bad(header_kinds, plan["after"])
            if not self.spin_until(30, lambda s=stamp: all(s in got for got in self.answers.values())):
                unanswered.append(stamp)
        total = self.sequence

        def settled():
            d = self.diagnostics
            accounted = sum(int(d.get(k, 0)) for k in ("frames.published", "rejected.total", "dropped.replaced"))
            return int(d.get("frames.received", -1)) == total and accounted == total
        self.spin_until(20, settled)
        return {"ready": ready, "sent": self.sent, "valid": plan["rounds"], "total": total,
                "unanswered": len(unanswered), "diagnostics": self.diagnostics,
                "reasons": {k: v[0] for k, v in {**COMPRESSED_KINDS, **WORKER_KINDS, **RAW_KINDS}.items()},
                "worker_kinds": sorted(WORKER_KINDS)}


def main(argv: list[str]) -> int:
    plan = json.loads(argv[0])
    return run_client("endoarss_fuzz_client", lambda node: Fuzzer(node, plan).run())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""A publisher / subscriber pair of our messages, one role per process, for set-up checks and tests.

    python -m endoarss_ros.tools.check.check_pubsub sub --expect 90 --timeout 30
    python -m endoarss_ros.tools.check.check_pubsub pub --rate 30 --seconds 3 --width 1920 --height 1080

The publisher sends ``endoarss_ros/msg/Activity`` and an rgb8 ``sensor_msgs/Image`` per tick, both stamped
with the same time; the subscriber counts what arrives and prints one JSON line with counts, latencies
and the Fast DDS shared-memory segment its process mapped.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES
from endoarss_ros.ros import fastdds


def _qos(reliability: str, depth: int):
    from endoarss_ros.ros import qos  # imports rclpy: only once ROS is needed (--help works without it)

    return qos.stream_qos(reliability, depth)


def run_publisher(args) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    from endoarss_ros.msg import Activity

    node = rclpy.create_node("endoarss_check_publisher")
    qos = _qos(args.qos, args.depth)
    image_pub = node.create_publisher(Image, args.image_topic, qos)
    activity_pub = node.create_publisher(Activity, args.activity_topic, qos)
    deadline = time.monotonic() + args.match_timeout
    while image_pub.get_subscription_count() == 0 or activity_pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no subscriber matched within {args.match_timeout} s")
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(0.5)  # let discovery settle on both sides before the first sample

    names = MTLESD_ACTIVITY_CLASSES
    step = args.width * 3
    pixels = bytes(range(256)) * (step * args.height // 256) + bytes(step * args.height % 256)
    total = int(round(args.rate * args.seconds))
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(total):
        # Absolute schedule: publishing time does not accumulate into drift.
        delay = start + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamp = node.get_clock().now().to_msg()
        image = Image(height=args.height, width=args.width, encoding="rgb8", is_bigendian=0, step=step)
        image.header.stamp = stamp
        image.header.frame_id = "endoscope"
        image.data = pixels
        k = i % len(names)
        probs = [0.1] * len(names)
        probs[k] = 0.8
        activity = Activity(label=names[k], class_id=k, confidence=0.8, class_names=names,
                            probabilities=probs, raw_probabilities=probs)
        activity.header = image.header
        image_pub.publish(image)
        activity_pub.publish(activity)
    elapsed = time.monotonic() - start
    time.sleep(0.5)  # best-effort: give the last samples time to leave before the participant goes away
    node.destroy_node()
    return {"role": "pub", "sent": total, "seconds": round(elapsed, 3), "rate_hz": round(total / elapsed, 2)}


def run_subscriber(args) -> dict:
    import rclpy
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    from endoarss_ros.msg import Activity

    node = rclpy.create_node("endoarss_check_subscriber")
    qos = _qos(args.qos, args.depth)
    counts = {"image": 0, "activity": 0}
    latencies: dict[str, list[float]] = {"image": [], "activity": []}
    bad_images = 0
    last_rx = [time.monotonic()]

    def on_message(kind):
        def callback(msg):
            nonlocal bad_images
            now = node.get_clock().now()
            latencies[kind].append((now - Time.from_msg(msg.header.stamp)).nanoseconds / 1e6)
            counts[kind] += 1
            if kind == "image" and len(msg.data) != msg.step * msg.height:
                bad_images += 1
            last_rx[0] = time.monotonic()
        return callback

    node.create_subscription(Image, args.image_topic, on_message("image"), qos)
    node.create_subscription(Activity, args.activity_topic, on_message("activity"), qos)
    print(json.dumps({"role": "sub", "ready": True}), flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
        if min(counts.values()) >= args.expect:
            break
        if max(counts.values()) > 0 and time.monotonic() - last_rx[0] > args.idle_timeout:
            break
    segment = fastdds.largest_shm_segment()
    node.destroy_node()

    def pct(values, q):
        values = sorted(values)
        return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    return {
        "role": "sub",
        "received": counts,
        "bad_images": bad_images,
        "latency_ms": {k: {"p50": pct(v, 0.5), "p95": pct(v, 0.95)} for k, v in latencies.items()},
        "shm_segment_bytes": segment,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", choices=["pub", "sub"])
    parser.add_argument("--qos", choices=["best_effort", "reliable"], default="best_effort")
    parser.add_argument("--depth", type=int, default=10)
    parser.add_argument("--image-topic", default="check/image")
    parser.add_argument("--activity-topic", default="check/activity")
    parser.add_argument("--rate", type=float, default=30.0, help="publisher: messages per second")
    parser.add_argument("--seconds", type=float, default=3.0, help="publisher: how long to publish")
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--match-timeout", type=float, default=20.0, help="publisher: wait for subscribers")
    parser.add_argument("--expect", type=int, default=90, help="subscriber: stop after this many of each")
    parser.add_argument("--timeout", type=float, default=40.0, help="subscriber: give up after this long")
    parser.add_argument("--idle-timeout", type=float, default=3.0,
                        help="subscriber: stop this long after the last message")
    parser.add_argument("--no-profile", action="store_true",
                        help="do not load the shipped Fast DDS profile (to compare with Fast DDS defaults)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.no_profile:  # Fast DDS defaults, even when the parent process had chosen a profile
        for name in fastdds.PROFILE_ENV_VARS:
            os.environ.pop(name, None)
    else:
        fastdds.apply_profile()
    import rclpy

    rclpy.init()
    try:
        result = run_publisher(args) if args.role == "pub" else run_subscriber(args)
    finally:
        rclpy.try_shutdown()
    result["profile"] = os.environ.get(fastdds.PROFILE_ENV_VARS[0])
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

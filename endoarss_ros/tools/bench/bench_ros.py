"""End-to-end latency of the perception node over ROS, and the transport's own share of it.

* node: publisher process -> perception node process -> subscriber process; rgb8 frames at a fixed rate,
  latency = mask received - image stamp (the publisher stamps at publish time; one machine, one clock); the
  frames are the in-process bench's endoscope scenes (``bench_frames.esd_scene``), and uniform noise as the
  named stress case (``stress``); the node's own cost per stage (``diagnostics.NODE_STAGES``, p50 over the
  run) is read from its last /diagnostics message;
* transport: the same publisher and subscriber with a trivial relay (no model) in place of the node.

    python -m endoarss_ros.tools.bench.bench_ros --model tiny.safetensors --frames 60 --rate 10

``measure(model_path, ...)`` returns a dict; ``endoarss bench`` calls it when this module is importable.
Roles (one per process): ``pub``, ``sub``, ``relay``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from endoarss_ros.inference.tallies import percentile
from endoarss_ros.ros import fastdds
from endoarss_ros.tools.bench.bench_frames import esd_scene, noise_scene


def _qos(reliability: str, depth: int):
    from endoarss_ros.ros import qos  # imports rclpy: only once ROS is needed (--help works without it)

    return qos.stream_qos(reliability, depth)


def _pct(values, q):
    value = percentile(values, q)
    return None if value is None else round(value, 2)


def run_pub(args) -> dict:
    import numpy as np
    import rclpy
    from sensor_msgs.msg import Image

    node = rclpy.create_node("endoarss_bench_pub")
    pub = node.create_publisher(Image, args.topic, _qos("reliable", 5))
    deadline = time.monotonic() + args.match_timeout
    while pub.get_subscription_count() == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing subscribed to {args.topic} within {args.match_timeout} s")
        rclpy.spin_once(node, timeout_sec=0.05)
    time.sleep(1.0)  # discovery settles on both sides
    scene = noise_scene if args.scene == "noise" else esd_scene
    images = [np.ascontiguousarray(scene(k, args.height, args.width)).tobytes() for k in range(4)]
    period = 1.0 / args.rate
    start = time.monotonic()
    for i in range(args.frames):
        delay = start + i * period - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg = Image(height=args.height, width=args.width, encoding="rgb8", step=args.width * 3)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.header.frame_id = "endoscope"
        msg.data = images[i % len(images)]
        pub.publish(msg)
    elapsed = time.monotonic() - start
    time.sleep(0.5)
    node.destroy_node()
    return {"sent": args.frames, "rate_hz": round(args.frames / elapsed, 2)}


def run_sub(args) -> dict:
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.time import Time
    from sensor_msgs.msg import Image

    node = rclpy.create_node("endoarss_bench_sub")
    latencies = []
    last = [time.monotonic()]
    stages: dict[str, float] = {}

    def on_diagnostics(msg):  # the node's last report: p50 per stage over the run
        for status in msg.status:
            if args.node_name and status.name.endswith(args.node_name):
                stages.update({kv.key.split(".", 1)[1]: float(kv.value) for kv in status.values
                               if kv.key.startswith("stage_p50_ms.") and kv.value})

    def on_msg(msg):
        latencies.append((node.get_clock().now() - Time.from_msg(msg.header.stamp)).nanoseconds / 1e6)
        last[0] = time.monotonic()

    node.create_subscription(Image, args.topic, on_msg, _qos("reliable", 10))
    node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and len(latencies) < args.frames:
        rclpy.spin_once(node, timeout_sec=0.05)
        if latencies and time.monotonic() - last[0] > args.idle_timeout:
            break
    if args.node_name:  # one more diagnostics period, for a report covering the last frames
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            rclpy.spin_once(node, timeout_sec=0.05)
    node.destroy_node()
    return {"received": len(latencies), "latency_ms": {"p50": _pct(latencies, 0.5), "p95": _pct(latencies, 0.95),
                                                       "mean": round(sum(latencies) / len(latencies), 2)
                                                       if latencies else None},
            "node_stage_p50_ms": stages or None}


def run_relay(args) -> dict:
    import rclpy
    from sensor_msgs.msg import Image

    node = rclpy.create_node("endoarss_bench_relay")
    # The node's own defaults: best effort in (newest frame only), reliable out.
    out = node.create_publisher(Image, args.output, _qos("reliable", 5))
    node.create_subscription(Image, args.topic, out.publish, _qos("best_effort", 1))
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    return {}


def _python_env() -> dict:
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)  # the children bootstrap the ROS wheels themselves
    env["PYTHONUNBUFFERED"] = "1"
    fastdds.apply_profile(env)
    return env


def _run_chain(middle: list[str], in_topic: str, out_topic: str, *, frames: int, width: int, height: int,
               rate: float, timeout: float, scene: str = "esd", node_name: str = "") -> dict:
    env = _python_env()
    me = [sys.executable, "-m", "endoarss_ros.tools.bench.bench_ros"]
    size = ["--width", str(width), "--height", str(height), "--frames", str(frames), "--scene", scene]
    procs = []
    try:
        procs.append(subprocess.Popen(middle, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        sub = subprocess.Popen(me + ["sub", "--topic", out_topic, "--timeout", str(timeout),
                                     "--node-name", node_name] + size, env=env,
                               stdout=subprocess.PIPE, text=True)
        procs.append(sub)
        if not sub.stdout.readline():
            raise RuntimeError("the bench subscriber exited before it was ready")
        pub = subprocess.run(me + ["pub", "--topic", in_topic, "--rate", str(rate), "--match-timeout", str(timeout)]
                             + size, env=env, capture_output=True, text=True, timeout=timeout + frames / rate + 30)
        if pub.returncode != 0:
            middle_err = procs[0].stderr.read() if procs[0].poll() is not None else ""
            raise RuntimeError(f"bench publisher failed:\n{pub.stderr[-2000:]}\n{middle_err[-2000:]}")
        out, _ = sub.communicate(timeout=timeout + 30)
        sub_result = json.loads(out.strip().splitlines()[-1])
        pub_result = json.loads(pub.stdout.strip().splitlines()[-1])
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
    return {"frames_in": pub_result["sent"], "frames_out": sub_result["received"], "rate_hz": pub_result["rate_hz"],
            "latency_ms": sub_result["latency_ms"], "scene": scene,
            **({"node_stage_p50_ms": sub_result["node_stage_p50_ms"]} if node_name else {})}


def measure(model_path, *, frames: int = 60, width: int = 1920, height: int = 1080, rate: float = 10.0,
            device: str = "auto", transport: bool = True, timeout: float = 180.0,
            stress: tuple[str, ...] = ("noise",)) -> dict:
    """Node end-to-end (publisher -> node -> subscriber) on endoscope scenes and, with ``transport``, relay-only
    numbers; then the node again on each ``stress`` scene.

    Returns ``{"node": {...}, "transport": {...}, "stress": {scene: {...}}, "width", "height", "rate_hz"}``; each
    part has frames_in, frames_out (the node drops frames it cannot keep up with: newest frame wins), latency_ms
    p50/p95/mean and the scene; the node's parts also ``node_stage_p50_ms`` (its own cost per stage).
    """
    ns = f"/endoarss_bench_{os.getpid()}"
    node_cmd = [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args", "-r", f"__ns:={ns}",
                "-p", f"model:={model_path}", "-p", f"device:={device}", "-p", f"warmup_size:=[{height}, {width}]",
                "-p", f"max_input_pixels:={max(width * height, 1)}"]
    chain = {"frames": frames, "width": width, "height": height, "rate": rate, "timeout": timeout}
    node_args = (node_cmd, f"{ns}/image", f"{ns}/segmentation/mask")
    result = {"width": width, "height": height, "rate_hz": rate,
              "node": _run_chain(*node_args, **chain, node_name=f"{ns}/endoarss_perception")}
    if transport:
        relay = [sys.executable, "-m", "endoarss_ros.tools.bench.bench_ros", "relay", "--topic", f"{ns}/relay_in",
                 "--output", f"{ns}/relay_out"]
        result["transport"] = _run_chain(relay, f"{ns}/relay_in", f"{ns}/relay_out", **chain)
    result["stress"] = {scene: _run_chain(*node_args, **chain, scene=scene, node_name=f"{ns}/endoarss_perception")
                        for scene in stress}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("role", nargs="?", choices=["measure", "pub", "sub", "relay"], default="measure")
    parser.add_argument("--model", help="measure: weights file")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--topic", default="image")
    parser.add_argument("--output", default="relayed")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--rate", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--match-timeout", type=float, default=180.0)
    parser.add_argument("--idle-timeout", type=float, default=5.0)
    parser.add_argument("--scene", default="esd", choices=["esd", "noise"], help="pub: the frames published")
    parser.add_argument("--node-name", default="", help="sub: read this node's per-stage costs from /diagnostics")
    args = parser.parse_args(argv)
    if args.role == "measure":
        if not args.model:
            parser.error("measure needs --model")
        result = measure(args.model, frames=args.frames, width=args.width, height=args.height, rate=args.rate,
                         device=args.device, timeout=args.timeout)
        print(json.dumps(result, indent=2))
        return 0
    fastdds.apply_profile()
    import rclpy

    rclpy.init()
    try:
        result = {"pub": run_pub, "sub": run_sub, "relay": run_relay}[args.role](args)
    finally:
        rclpy.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`endoarss demo`: the whole system in one command, no robot or GPU needed.

1. generate (or reuse) a synthetic surgical recording with ground truth: ``<out>/recording/`` (MCAP);
2. start the perception node (``endoarss-perception``, namespace ``/endoarss``) with the demo weights and wait
   until it is active;
3. listen to ``/endoarss/activity`` (printed as it arrives), ``/endoarss/segmentation/mask`` and ``/diagnostics``;
4. play the recording into the node with ``endoarss play`` (a separate process, best-effort like a camera);
5. score what came back against the recording's ground truth, matched by stamp;
6. run the offline replay over the whole recording: ``<out>/endoarss_output_bag/``, ``timeline.png``,
   ``overlay.mp4``;
7. print a summary and write ``<out>/summary.json``. Exit status 1 when the node produced nothing.

Live, the node keeps only the newest frame: on a CPU it processes fewer frames than the recording has; the
summary reports frames published, received, processed and dropped. The offline replay processes every frame.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path

NAMESPACE = "/endoarss"
IMAGE_TOPIC = "/endoscope/image_raw"
SEED = 7
QUICK = {"seconds": 3.0, "fps": 10.0, "size": "320x256"}


def add_arguments(parser) -> None:
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="length of the recording (default 15 s: all three activities)")
    parser.add_argument("--fps", type=float, default=15.0, help="frame rate of the recording (default 15)")
    parser.add_argument("--size", default="640x512", metavar="WxH", help="frame size (default 640x512)")
    parser.add_argument("--out", type=Path, default=Path("demo_output"), help="output folder (default demo_output)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"weights (default {DEFAULT_MODEL})")
    parser.add_argument("--device", default="auto", help="inference device of the node and the replay")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed of the recording (default 1.0)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a few seconds for CI: {QUICK['seconds']:g} s at {QUICK['fps']:g} fps, {QUICK['size']}")
    parser.add_argument("--no-video", action="store_true", help="skip the overlay video")
    parser.add_argument("--node-timeout", type=float, default=180.0,
                        help="seconds to wait for the node to become active (model loading)")
    parser.add_argument("--quiet", action="store_true", help="do not print each activity message")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads of the offline replay (default 1: OpenMP threads fighting for "
                             "busy cores are many times slower; 0: torch's default)")


def parse_size(text: str) -> tuple[int, int]:
    """'640x512' (W x H) -> (H, W)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--size expects WIDTHxHEIGHT, e.g. 640x512, got {text!r}") from None
    if w <= 0 or h <= 0:
        raise ValueError(f"--size must be positive, got {text!r}")
    return h, w


def child_env() -> dict:
    """Environment of our ROS child processes: our Fast DDS profile, no bootstrap guard, unbuffered output."""
    from endoarss_ros.ros import fastdds

    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env["PYTHONUNBUFFERED"] = "1"
    fastdds.apply_profile(env)
    return env


# ---- 1. the recording ---------------------------------------------------------------------------------
def ensure_recording(out: Path, *, seconds: float, fps: float, size: tuple[int, int], seed: int = SEED,
                     log=print) -> tuple[Path, dict, bool]:
    """``out/recording`` with these parameters: reused when its ``recording.json`` matches, else regenerated
    (into a temporary folder renamed into place)."""
    from endoarss_ros.bag.synth_bag import write_synth_bag

    path = out / "recording"
    params_path = out / "recording.json"
    params = {"seconds": seconds, "fps": fps, "size": list(size), "encoding": "rgb8", "storage": "mcap",
              "seed": seed, "format": 1}
    if (path / "metadata.yaml").is_file() and params_path.is_file():
        try:
            if json.loads(params_path.read_text()).get("params") == params:
                return path, json.loads(params_path.read_text()), True
        except (OSError, ValueError):
            pass
    out.mkdir(parents=True, exist_ok=True)
    log(f"generating the synthetic recording {path} ({seconds:g} s at {fps:g} fps, {size[1]}x{size[0]}) ...")
    tmp = out / f".recording.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        info = write_synth_bag(tmp, seconds=seconds, fps=fps, size=size, encoding="rgb8", storage="mcap",
                               seed=seed)
        # rosbags names the storage file after the folder: rename it so the finished bag is self-consistent.
        _rename_bag(tmp, "recording")
        shutil.rmtree(path, ignore_errors=True)
        params_path.unlink(missing_ok=True)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    record = {"params": params, "frames": info.frames, "start_ns": info.start_ns, "topics": info.topics}
    params_path.write_text(json.dumps(record, indent=2) + "\n")
    return path, record, False


def _rename_bag(folder: Path, name: str) -> None:
    """Rename a rosbags-written bag's storage file to ``name.<ext>`` and fix its metadata.yaml."""
    meta_path = folder / "metadata.yaml"
    text = meta_path.read_text()
    for f in folder.iterdir():
        if f.suffix in (".mcap", ".db3") and f.stem != name:
            f.rename(folder / f"{name}{f.suffix}")
            text = text.replace(f.name, f"{name}{f.suffix}")
    meta_path.write_text(text)


# ---- 2.-5. live -------------------------------------------------------------------------------------------
class Listener:
    """The demo's own subscriptions; scores masks and activities against the ground truth as they arrive."""

    def __init__(self, node, gt, evaluator, *, quiet: bool, start_ns: int, t0: float):
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        from endoarss_ros.msg import Activity, SegmentationInfo

        self.gt, self.evaluator, self.quiet, self.start_ns, self.t0 = gt, evaluator, quiet, start_ns, t0
        self.lock = threading.Lock()
        self.info = None
        self.activities: list[dict] = []
        self.masks = 0
        self.last_output = time.monotonic()
        self.diagnostics: dict | None = None
        self.diagnostics_time = 0.0
        reliable = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(SegmentationInfo, f"{NAMESPACE}/segmentation/info", self.on_info, latched)
        node.create_subscription(Activity, f"{NAMESPACE}/activity", self.on_activity, reliable)
        node.create_subscription(Image, f"{NAMESPACE}/segmentation/mask", self.on_mask, reliable)
        node.create_subscription(DiagnosticArray, "/diagnostics", self.on_diagnostics, 10)

    def on_info(self, msg) -> None:
        self.info = msg

    def on_activity(self, msg) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        received = time.time()
        truth = self.gt.activities.get(stamp)
        with self.lock:
            self.activities.append({"stamp": stamp, "class_id": int(msg.class_id), "label": msg.label,
                                    "confidence": float(msg.confidence), "received_unix": received})
            if truth is not None:
                self.evaluator.add_activity(int(msg.class_id), truth)
            self.last_output = time.monotonic()
        if not self.quiet:
            names = self.gt.activity_names
            if truth is None:
                mark = ""
            elif truth == msg.class_id:
                mark = "  ok"
            else:
                mark = f"  (truth: {names[truth] if truth < len(names) else truth})"
            print(f"[{time.monotonic() - self.t0:6.2f} s] {NAMESPACE}/activity  stamp "
                  f"{msg.header.stamp.sec}.{msg.header.stamp.nanosec:09d}  {msg.label:<26} "
                  f"{msg.confidence:.2f}{mark}", flush=True)

    def on_mask(self, msg) -> None:
        import numpy as np

        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        truth = self.gt.masks.get(stamp)
        mask = None
        if msg.encoding == "mono8" and len(msg.data) >= msg.step * msg.height:
            mask = np.frombuffer(msg.data, np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
            mask = mask[:, : msg.width]
        with self.lock:
            self.masks += 1
            if truth is not None and mask is not None:
                self.evaluator.add_mask(mask, truth)
            self.last_output = time.monotonic()

    def on_diagnostics(self, msg) -> None:
        for status in msg.status:
            if status.name.startswith("endoarss_perception") and NAMESPACE + "/" in status.name:
                with self.lock:
                    self.diagnostics = {kv.key: kv.value for kv in status.values}
                    self.diagnostics["_message"] = status.message
                    self.diagnostics_time = time.monotonic()


def _tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _float(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def _percentiles(values):
    if not values:
        return None, None
    s = sorted(values)
    return s[min(len(s) - 1, int(0.5 * len(s)))], s[min(len(s) - 1, int(0.95 * len(s)))]


def run_live(out: Path, recording: Path, record: dict, *, model: str, device: str, rate: float, size,
             node_timeout: float, quiet: bool, log=print) -> dict:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from endoarss_ros.bag.evaluation import GroundTruthEvaluator
    from endoarss_ros.bag.reader import read_ground_truth

    gt = read_ground_truth(recording)
    env = child_env()
    node_log_path = out / "node.log"
    node_cmd = [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args",
                "-r", f"__ns:={NAMESPACE}", "-r", f"image:={IMAGE_TOPIC}", "-p", f"model:={model}",
                "-p", f"device:={device}", "-p", f"warmup_size:=[{size[0]}, {size[1]}]", "-p", "max_batch:=1"]
    result: dict = {"node_command": " ".join(node_cmd[2:])}
    t0 = time.monotonic()
    node_log = open(node_log_path, "w")
    log(f"starting the perception node ({model}) ...")
    node_proc = subprocess.Popen(node_cmd, env=env, stdout=node_log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
    player = None
    executor = None
    spin_thread = None
    context = rclpy.context.Context()
    rclpy.init(args=["endoarss-demo"], context=context)
    try:
        node = rclpy.create_node("endoarss_demo_listener", context=context)
        evaluator = None
        listener = None
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        # The class names come from the node's segmentation/info; the evaluator is created on it.
        holder: dict = {}

        class _Eval:  # forwards to the real evaluator once the class counts are known
            def add_mask(self, *a):
                if "e" in holder:
                    holder["e"].add_mask(*a)

            def add_activity(self, *a):
                if "e" in holder:
                    holder["e"].add_activity(*a)

        listener = Listener(node, gt, _Eval(), quiet=quiet, start_ns=record["start_ns"], t0=t0)
        spin_thread = threading.Thread(target=executor.spin, daemon=True)
        spin_thread.start()

        deadline = time.monotonic() + node_timeout
        while listener.info is None:
            if node_proc.poll() is not None:
                raise RuntimeError(f"the perception node exited (status {node_proc.returncode}) before becoming "
                                   f"active; its log ({node_log_path}):\n{_tail(node_log_path)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the perception node did not become active within {node_timeout:.0f} s; "
                                   f"its log ({node_log_path}):\n{_tail(node_log_path)}")
            time.sleep(0.1)
        info = listener.info
        result["node_ready_s"] = round(time.monotonic() - t0, 2)
        log(f"node active after {result['node_ready_s']} s (model {info.model}, {len(info.class_names)} classes); "
            f"playing {recording} at rate {rate:g} ...")
        act_names = gt.activity_names or [str(i) for i in range(3)]
        evaluator = GroundTruthEvaluator(len(info.class_names), len(act_names), seg_names=list(info.class_names),
                                         activity_names=act_names)
        holder["e"] = evaluator

        player_cmd = [sys.executable, "-m", "endoarss_ros.ros.bag_player", str(recording), "--topics", IMAGE_TOPIC,
                      "--qos", "best_effort", "--rate", str(rate), "--wait-subscribers", "30", "--json", "--quiet"]
        duration = record["frames"] / record["params"]["fps"] / rate
        player = subprocess.Popen(player_cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
        try:
            pout, perr = player.communicate(timeout=duration + 90)
        except subprocess.TimeoutExpired:
            player.kill()
            pout, perr = player.communicate()
            raise RuntimeError(f"the bag player did not finish in time:\n{perr[-2000:]}") from None
        if player.returncode != 0:
            raise RuntimeError(f"the bag player failed (status {player.returncode}):\n{perr[-2000:]}")
        played = json.loads(pout.strip().splitlines()[-1])
        result["player"] = {k: played.get(k) for k in ("published", "seconds", "rate", "without_subscribers")}
        published = int(sum(played["published"].values()))

        # The node may still be working on the newest frame: wait for its outputs to go quiet, then for a
        # diagnostics message newer than that.
        t_end = time.monotonic()
        while time.monotonic() - t_end < 30:
            with listener.lock:
                quiet_for = time.monotonic() - listener.last_output
            if quiet_for > 1.5:
                break
            time.sleep(0.1)
        settled = time.monotonic()
        while listener.diagnostics_time < settled and time.monotonic() - settled < 3.0:
            time.sleep(0.1)

        with listener.lock:
            activities = list(listener.activities)
            masks = listener.masks
            diag = dict(listener.diagnostics or {})
        # Receipt timing: when each frame was published is known from the player's start and the bag times.
        start_unix = played.get("wall_start_unix")
        e2e = []
        if start_unix:
            for a in activities:
                sent = start_unix + (a["stamp"] - record["start_ns"]) / 1e9 / rate
                e2e.append((a["received_unix"] - sent) * 1000.0)
        p50, p95 = _percentiles(e2e)
        metrics = evaluator.result()
        result.update({
            "frames_published": published,
            "frames_received_by_node": int(diag["frames.received"]) if "frames.received" in diag else None,
            "frames_processed_by_node": int(diag["frames.published"]) if "frames.published" in diag else None,
            "frames_dropped_by_node": int(diag["dropped.replaced"]) if "dropped.replaced" in diag else None,
            "frames_rejected_by_node": int(diag["rejected.total"]) if "rejected.total" in diag else None,
            "activity_messages_received": len(activities),
            "mask_messages_received": masks,
            "node_latency_ms": {"p50": _float(diag.get("latency_p50_ms")), "p95": _float(diag.get("latency_p95_ms")),
                                "source": "/diagnostics (frame receipt in the node -> results published)"},
            "end_to_end_latency_ms": {"p50": None if p50 is None else round(p50, 1),
                                      "p95": None if p95 is None else round(p95, 1),
                                      "source": "player publish time -> activity received by the demo"},
            "inference_p50_ms": _float(diag.get("inference_p50_ms")),
            "activity_accuracy": metrics.get("activity_accuracy"),
            "miou_foreground": metrics.get("miou_foreground"),
            "frames_evaluated": metrics.get("frames_with_activity", 0),
            "masks_evaluated": metrics.get("frames_with_mask", 0),
            "diagnostics": {k: v for k, v in diag.items() if not k.startswith("_")},
        })
    finally:
        for proc in (player, node_proc):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        try:
            node_proc.wait(20)
        except subprocess.TimeoutExpired:
            node_proc.kill()
            node_proc.wait()
        if player is not None and player.poll() is None:
            player.kill()
            player.wait()
        node_log.close()
        if executor is not None:
            executor.shutdown(timeout_sec=2)
        if context.ok():
            rclpy.shutdown(context=context)
        if spin_thread is not None:
            spin_thread.join(5)
    result["node_log"] = str(node_log_path)
    result["live_s"] = round(time.monotonic() - t0, 2)
    return result


# ---- 6. offline -----------------------------------------------------------------------------------------
def run_offline(out: Path, recording: Path, *, model: str, device: str, video: bool, threads: int = 1,
                log=print) -> dict:
    from endoarss_ros.bag.replay import ReplayOptions, replay

    log("offline replay of every frame (writes the output bag, timeline and overlay video) ...")
    opts = ReplayOptions(input=recording, output=out / "endoarss_output_bag", model=model, device=device,
                         overwrite=True, timeline=out / "timeline.png", summary=out / "replay_summary.json",
                         video=(out / "overlay.mp4") if video else None, progress=sys.stderr.isatty(),
                         threads=threads)
    return replay(opts)


# ---- 7. summary -----------------------------------------------------------------------------------------
def _pct(v):
    return "n/a" if v is None else f"{v:.1%}"


def _ms(v):
    return "n/a" if v is None else f"{v:.0f} ms"


def print_summary(s: dict) -> None:
    live, off, files = s["live"], s.get("offline") or {}, s["files"]
    gt = off.get("ground_truth") or {}
    rec = s["recording"]
    w = 78
    print("=" * w)
    print(f"EndoARSS demo summary ({s['runtime_s']:.0f} s)")
    print(f"  recording          {rec['frames']} frames, {rec['params']['size'][1]}x{rec['params']['size'][0]} "
          f"at {rec['params']['fps']:g} fps ({'reused' if rec['reused'] else 'generated'})")
    print(f"  live (node)        published {live.get('frames_published')}, received by the node "
          f"{live.get('frames_received_by_node')}, processed {live.get('frames_processed_by_node')}, dropped "
          f"{live.get('frames_dropped_by_node')} (newest-frame policy); activity messages received "
          f"{live.get('activity_messages_received')}")
    lat, e2e = live.get("node_latency_ms", {}), live.get("end_to_end_latency_ms", {})
    print(f"  node latency       p50 {_ms(lat.get('p50'))}, p95 {_ms(lat.get('p95'))} (diagnostics); end to end "
          f"p50 {_ms(e2e.get('p50'))}, p95 {_ms(e2e.get('p95'))}")
    print(f"  live vs truth      activity accuracy {_pct(live.get('activity_accuracy'))} over "
          f"{live.get('frames_evaluated')} frames, foreground mIoU {_pct(live.get('miou_foreground'))}")
    if off:
        print(f"  offline (all)      frames in {off['frames_in']} {'==' if off['frames_in_equals_out'] else '!='} "
              f"out {off['frames_out']}, {off['throughput']['inference_frames_per_s']} frames/s; activity accuracy "
              f"{_pct(gt.get('activity_accuracy'))}, foreground mIoU {_pct(gt.get('miou_foreground'))}")
    print(f"  output bag         {files.get('output_bag')}")
    print(f"  timeline plot      {files.get('timeline')}")
    print(f"  overlay video      {files.get('video')}")
    print(f"  summary            {files.get('summary')}")
    print(f"  node log           {files.get('node_log')}")
    print("=" * w)
    if not s["ok"]:
        print("FAILED: the perception node produced no activity messages")


def run(args) -> int:
    t0 = time.monotonic()
    from endoarss_ros.ros import fastdds

    fastdds.apply_profile()  # before rclpy.init (in run_live)
    seconds, fps, size_text = args.seconds, args.fps, args.size
    if args.quick:
        seconds, fps, size_text = QUICK["seconds"], QUICK["fps"], QUICK["size"]
    try:
        size = parse_size(size_text)
    except ValueError as e:
        print(f"endoarss demo: error: {e}", file=sys.stderr)
        return 2
    model = resolve_model_path(args.model)  # the committed weights also when run from elsewhere
    if not model.is_file():
        print(f"endoarss demo: error: model {model} not found (the demo weights are committed as "
              f"{DEFAULT_MODEL}; give --model PATH)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def log(*a):
        print("demo:", *a, flush=True)

    previous = signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    summary: dict = {"ok": False}
    try:
        recording, record, reused = ensure_recording(out, seconds=seconds, fps=fps, size=size, log=log)
        if reused:
            log(f"reusing the recording {recording} ({record['frames']} frames)")
        summary["recording"] = dict(record, path=str(recording), reused=reused)
        summary["live"] = run_live(out, recording, record, model=str(model), device=args.device, rate=args.rate,
                                   size=size, node_timeout=args.node_timeout, quiet=args.quiet, log=log)
        summary["ok"] = summary["live"]["activity_messages_received"] > 0
        offline = run_offline(out, recording, model=str(model), device=args.device, video=not args.no_video,
                              threads=args.threads, log=log)
        summary["offline"] = {k: offline[k] for k in ("frames_in", "frames_out", "frames_in_equals_out",
                                                        "frames_failed", "throughput", "ground_truth",
                                                        "activity_timeline", "pixel_fractions", "device")}
    except KeyboardInterrupt:
        print("endoarss demo: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the demo reports what went wrong and fails
        print(f"endoarss demo: error: {type(e).__name__}: {e}", file=sys.stderr)
        summary["error"] = f"{type(e).__name__}: {e}"
        summary["ok"] = False
    finally:
        signal.signal(signal.SIGTERM, previous)
    summary["runtime_s"] = round(time.monotonic() - t0, 2)
    summary["files"] = {
        "recording": str(out / "recording"),
        "output_bag": str(out / "endoarss_output_bag") if "offline" in summary else None,
        "timeline": str(out / "timeline.png") if "offline" in summary else None,
        "video": str(out / "overlay.mp4") if "offline" in summary and not args.no_video else None,
        "summary": str(out / "summary.json"),
        "replay_summary": str(out / "replay_summary.json") if "offline" in summary else None,
        "node_log": str(out / "node.log"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if "live" in summary:
        print_summary(summary)
    return 0 if summary["ok"] and "error" not in summary else 1

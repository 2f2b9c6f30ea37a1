"""A scripted client of the perception node, in its own process: publishes frames, drives the lifecycle and the
parameters, records every output. Tests and the launch test use it; it prints one JSON line.

    python -m test.node_probe plan.json   (from the repository root) [--save-masks masks.npz]

A plan is JSON: ``{"node": "/endoarss/endoarss_perception", "cameras": [{"input": "/endoarss/image",
"output": "/endoarss"}], "transport": "raw", "overlay": false, "steps": [...]}``. Steps (run in order):

* ``{"op": "wait_ready", "timeout": 60}``: until the node subscribes to every input and publishes every output;
* ``{"op": "frames", "frames": [...], "rate": 30, "lockstep": false, "answer_timeout": 30, "settle": 3}``
  (a frame spec's ``"zero_stamp": true`` sends it with header.stamp 0):
  publish frames (see ``make_frame``); lockstep waits for each good frame's activity, mask and status before
  the next (for a bad frame: its status);
* ``{"op": "transition", "transition": "configure"}`` (or a raw ``"id"`` / ``"label"``) / ``{"op": "get_state"}``;
* ``{"op": "set_params", "params": {"overlay_alpha": 0.2}}`` (a value ``{"type": "bool_array", "value": []}``
  is sent with that type, as ``ros2 param set`` types ``"[]"``) / ``{"op": "get_params", "names": [...]}``;
* ``{"op": "dump_params"}``: every parameter the node lists, with its value and type, as ``ros2 param dump``
  fetches them;
* ``{"op": "diagnostics", "wait": 2.5}``: the node's newest ``/diagnostics`` values after waiting;
* ``{"op": "trigger", "service": "reset_temporal"}``: call a std_srvs/Trigger service of the node;
* ``{"op": "sleep", "seconds": 1}``.

3D (issue 25): a camera entry may carry ``"camera_info": {CameraInfo fields}`` (``k``, ``d``, ``r``, ``p`` as
lists, ``frame_id``, ...): it is published on ``"camera_info_topic"`` (default: the image topic's sibling
``camera_info``) with each frame's stamp, unless the frame spec says ``"camera_info": false`` or gives its own
fields dict; ``"info_stamp_offset_ms"`` shifts its stamp. A frame spec ``"silent": true`` expects no answer (the
right camera of a stereo pair). Plan keys ``"markers": true`` / ``"disparity": true`` record
``<out>/instruments/markers`` / ``<out>/disparity``.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np

from endoarss_ros.ros import fastdds

RAW_BAD_KINDS = ("truncated", "zero_size", "bad_step", "unsupported_encoding", "too_large")


def synthetic_image(seed: int, width: int, height: int) -> np.ndarray:
    """Deterministic smooth RGB content (blobs, so masks are not uniform)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)


def rgb_to_yuyv(rgb: np.ndarray) -> np.ndarray:
    """RGB (H, W, 3) -> packed YUYV bytes (H, W, 2): Y per pixel, U and V averaged over pixel pairs."""
    import cv2

    yuv = cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV).astype(np.float32)
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 2), np.uint8)
    out[..., 0] = yuv[..., 0].round().astype(np.uint8)
    u = (yuv[:, 0::2, 1] + yuv[:, 1::2, 1]) / 2
    v = (yuv[:, 0::2, 2] + yuv[:, 1::2, 2]) / 2
    out[:, 0::2, 1] = u.round().astype(np.uint8)
    out[:, 1::2, 1] = v.round().astype(np.uint8)
    return out


def yuyv_to_rgb(yuyv: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(yuyv, cv2.COLOR_YUV2RGB_YUYV)


def encode_pixels(rgb: np.ndarray, encoding: str) -> np.ndarray:
    """The (H, W, C) pixel array of ``rgb`` in a ROS encoding."""
    import cv2

    if encoding == "rgb8":
        return rgb
    if encoding == "bgr8":
        return rgb[..., ::-1]
    if encoding == "rgba8":
        return np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if encoding == "bgra8":
        return np.concatenate([rgb[..., ::-1], np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
    if encoding == "mono8":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[..., None]
    if encoding in ("yuyv", "yuv422_yuy2"):
        return rgb_to_yuyv(rgb)
    raise ValueError(f"probe cannot encode {encoding}")


def make_frame(spec: dict, stamp, *, compressed: bool):
    """A ``sensor_msgs/Image`` or ``CompressedImage`` from a frame spec:
    ``{"seed": 1, "width": 320, "height": 240, "encoding": "rgb8", "pad": 0, "bad": null, "format": "jpeg",
    "decoded_yuyv": false}``. ``bad`` makes a faulty frame (see RAW_BAD_KINDS, or "corrupt" for compressed);
    ``decoded_yuyv`` sends the rgb8 frame that the yuyv encoding of the content decodes to; ``image_file`` +
    ``key``: the RGB content is array ``key`` of that .npz file (its size wins)."""
    import cv2
    from sensor_msgs.msg import CompressedImage, Image

    if spec.get("image_file"):
        rgb = _npz(spec["image_file"])[spec["key"]]
        height, width = rgb.shape[:2]
    else:
        width, height = spec.get("width", 320), spec.get("height", 240)
        rgb = synthetic_image(spec.get("seed", 0), width, height)
    if spec.get("decoded_yuyv"):
        rgb = yuyv_to_rgb(rgb_to_yuyv(rgb))
    bad = spec.get("bad")
    if compressed:
        fmt = spec.get("format", "jpeg")
        if bad == "corrupt":
            data = b"\xff\xd8\xff\xe0" + np.random.default_rng(7).integers(0, 256, 4000, dtype=np.uint8).tobytes()
        else:
            ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", np.ascontiguousarray(rgb[..., ::-1]))
            assert ok
            data = buf.tobytes()
        msg = CompressedImage(format=fmt, data=data)
        msg.header.stamp, msg.header.frame_id = stamp, spec.get("frame_id", "endoscope")
        return msg
    encoding = spec.get("encoding", "rgb8")
    pixels = encode_pixels(rgb, encoding)
    row = pixels.shape[1] * pixels.shape[2]
    step = row + spec.get("pad", 0)
    buf = np.zeros((height, step), np.uint8)
    buf[:, :row] = pixels.reshape(height, row)
    data = buf.tobytes()
    if bad == "truncated":
        data = data[: len(data) - step // 2]
    elif bad == "zero_size":
        width = height = step = 0
        data = b""
    elif bad == "bad_step":
        step = row - 1
    elif bad == "unsupported_encoding":
        encoding = "32FC1"
        step = width * 4
        data = bytes(step * height)
    msg = Image(height=height, width=width, encoding=encoding, is_bigendian=0, step=step)
    msg.data = data
    msg.header.stamp, msg.header.frame_id = stamp, spec.get("frame_id", "endoscope")
    return msg


_NPZ: dict[str, dict] = {}


def _npz(path: str) -> dict:
    if path not in _NPZ:
        with np.load(path) as data:
            _NPZ[path] = {k: data[k] for k in data.files}
    return _NPZ[path]


def stamp_ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def rclpy_time(stamp):
    from rclpy.time import Time

    return Time(seconds=stamp.sec, nanoseconds=stamp.nanosec)


def _plain(value):
    """A message field as JSON: nested messages as dicts, arrays as lists."""
    if hasattr(value, "get_fields_and_field_types"):
        return {f: _plain(getattr(value, f)) for f in value.get_fields_and_field_types()}
    if isinstance(value, (list, tuple)) or hasattr(value, "tolist"):
        return [_plain(v) for v in value]
    return value


class Probe:
    def __init__(self, node, plan: dict):
        from diagnostic_msgs.msg import DiagnosticArray
        from endoarss_ros.msg import Activity, InstrumentArray, PerceptionStatus, SegmentationInfo
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CompressedImage, Image

        self.node = node
        self.plan = plan
        self.node_name = plan.get("node", "/endoarss/endoarss_perception")
        self.compressed = plan.get("transport", "raw") == "compressed"
        self.sent: list[dict] = []
        self.received: dict[str, list[dict]] = {"activity": [], "mask": [], "overlay": [], "info": [], "status": [],
                                                "instruments": [], "markers": [], "disparity": []}
        self.masks: dict[str, np.ndarray] = {}
        self.overlays: dict[str, np.ndarray] = {}
        self.diagnostics: dict[str, str] | None = None
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.inputs, self.outputs, self.info_publishers = [], [], []
        for cam_index, cam in enumerate(plan["cameras"]):
            topic = cam["input"] + ("/compressed" if self.compressed else "")
            self.info_publishers.append(self._info_publisher(cam))
            in_reliability = ReliabilityPolicy.BEST_EFFORT if plan.get("input_qos") == "best_effort" \
                else ReliabilityPolicy.RELIABLE
            self.inputs.append(node.create_publisher(CompressedImage if self.compressed else Image, topic,
                                                     QoSProfile(depth=10, reliability=in_reliability)))
            out = cam["output"].rstrip("/")
            subs = [node.create_subscription(Activity, f"{out}/activity", self._on("activity", cam_index), reliable),
                    node.create_subscription(Image, f"{out}/segmentation/mask", self._on("mask", cam_index), reliable),
                    node.create_subscription(SegmentationInfo, f"{out}/segmentation/info", self._on("info", cam_index),
                                             latched),
                    node.create_subscription(PerceptionStatus, f"{out}/status", self._on("status", cam_index),
                                             reliable),
                    node.create_subscription(InstrumentArray, f"{out}/instruments", self._on("instruments", cam_index),
                                             reliable)]
            if plan.get("overlay"):
                subs.append(node.create_subscription(Image, f"{out}/segmentation/overlay",
                                                     self._on("overlay", cam_index), reliable))
            if plan.get("markers") and not cam.get("silent"):
                from visualization_msgs.msg import MarkerArray

                subs.append(node.create_subscription(MarkerArray, f"{out}/instruments/markers",
                                                     self._on_markers(cam_index), reliable))
            if plan.get("disparity") and cam.get("disparity", True) and not cam.get("silent"):
                from stereo_msgs.msg import DisparityImage

                subs.append(node.create_subscription(DisparityImage, f"{out}/disparity",
                                                     self._on_disparity(cam_index), reliable))
            self.outputs.append(subs)
        node.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _info_publisher(self, cam: dict):
        if not cam.get("camera_info"):
            return None
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import CameraInfo

        topic = cam.get("camera_info_topic") or cam["input"].rsplit("/", 1)[0] + "/camera_info"
        return self.node.create_publisher(CameraInfo, topic, QoSProfile(depth=10,
                                                                       reliability=ReliabilityPolicy.RELIABLE))

    def _publish_camera_info(self, cam: int, spec: dict, stamp) -> None:
        from rclpy.duration import Duration
        from sensor_msgs.msg import CameraInfo

        fields = spec.get("camera_info", self.plan["cameras"][cam].get("camera_info"))
        publisher = self.info_publishers[cam]
        if not fields or publisher is None:
            return
        msg = CameraInfo()
        for name, value in fields.items():
            if name == "frame_id":
                msg.header.frame_id = value
            elif name == "roi":
                for k, v in value.items():
                    setattr(msg.roi, k, v)
            else:
                setattr(msg, name, [float(v) for v in value] if isinstance(value, list) else value)
        offset = spec.get("info_stamp_offset_ms", 0)
        msg.header.stamp = (rclpy_time(stamp) + Duration(nanoseconds=int(offset * 1e6))).to_msg() if offset \
            else stamp
        publisher.publish(msg)

    def _on_markers(self, camera: int):
        def callback(msg):
            markers = [{"ns": m.ns, "id": m.id, "type": m.type, "action": m.action, "frame_id": m.header.frame_id,
                        "stamp": stamp_ns(m.header.stamp), "text": m.text,
                        "points": [[p.x, p.y, p.z] for p in m.points],
                        "position": [m.pose.position.x, m.pose.position.y, m.pose.position.z]} for m in msg.markers]
            self.received["markers"].append({"camera": camera, "t": time.monotonic(), "markers": markers,
                                             "stamp": markers[0]["stamp"] if markers else None})
        return callback

    def _on_disparity(self, camera: int):
        def callback(msg):
            image = np.frombuffer(msg.image.data, np.float32).reshape(msg.image.height, msg.image.width)
            valid = image >= msg.min_disparity
            self.received["disparity"].append({
                "camera": camera, "stamp": stamp_ns(msg.header.stamp), "frame_id": msg.header.frame_id,
                "width": msg.image.width, "height": msg.image.height, "encoding": msg.image.encoding, "f": msg.f,
                "t": msg.t, "min_disparity": msg.min_disparity, "max_disparity": msg.max_disparity,
                "valid_fraction": float(valid.mean()),
                "median_disparity": float(np.median(image[valid])) if valid.any() else None})
        return callback

    # ---- recording ---------------------------------------------------------------------------------------
    def _on(self, kind: str, camera: int):
        def callback(msg):
            rec = {"camera": camera, "stamp": stamp_ns(msg.header.stamp), "frame_id": msg.header.frame_id,
                   "t": time.monotonic()}
            if kind in ("mask", "overlay"):
                rec.update(width=msg.width, height=msg.height, encoding=msg.encoding, step=msg.step)
                channels = 1 if msg.encoding == "mono8" else 3
                pixels = np.frombuffer(msg.data, np.uint8).reshape(msg.height, msg.width, channels)
                rec["digest"] = hashlib.sha1(pixels.tobytes()).hexdigest()[:16]
                if self.plan.get("keep_images"):
                    store = self.masks if kind == "mask" else self.overlays
                    store[f"{camera}_{rec['stamp']}"] = pixels.copy()
                if kind == "mask":
                    rec["classes"] = sorted(int(c) for c in np.unique(pixels))
            elif kind == "activity":
                rec.update(class_id=msg.class_id, label=msg.label, confidence=msg.confidence,
                           class_names=list(msg.class_names), probabilities=[float(p) for p in msg.probabilities],
                           raw_probabilities=[float(p) for p in msg.raw_probabilities], source=msg.source,
                           duration_s=float(msg.duration_s))
            elif kind == "info":
                rec.update(class_names=list(msg.class_names), colors=list(bytes(msg.colors)),
                           mask_encoding=msg.mask_encoding, model=msg.model)
            elif kind == "status":
                rec.update({f: _plain(getattr(msg, f)) for f in msg.get_fields_and_field_types() if f != "header"})
            elif kind == "instruments":
                rec.update(width=msg.width, height=msg.height, instruments=[
                    {f: _plain(getattr(i, f)) for f in i.get_fields_and_field_types()} for i in msg.instruments])
            self.received[kind].append(rec)
        return callback

    def _on_diagnostics(self, msg):
        short = self.node_name.rsplit("/", 1)[-1]
        for status in msg.status:
            if short in status.name and self.node_name in status.name:
                values = {kv.key: kv.value for kv in status.values}
                values["_level"] = int.from_bytes(status.level, "little") if isinstance(status.level, bytes) \
                    else int(status.level)
                values["_message"] = status.message
                self.diagnostics = values

    def spin_for(self, seconds: float, until=None) -> bool:
        import rclpy

        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            rclpy.spin_once(self.node, timeout_sec=min(0.02, max(0.0, deadline - time.monotonic())))
        return until() if until is not None else True

    def answered(self, camera: int, stamp: int, kinds=("activity", "mask", "status")) -> bool:
        return all(any(r["stamp"] == stamp and r["camera"] == camera for r in self.received[k]) for k in kinds)

    # ---- steps ---------------------------------------------------------------------------------------------
    def run(self) -> list:
        results = []
        for step in self.plan.get("steps", []):
            results.append(getattr(self, "op_" + step["op"])(step))
        return results

    def op_sleep(self, step):
        self.spin_for(step.get("seconds", 1.0))
        return {"op": "sleep"}

    def op_wait_ready(self, step):
        def ready():
            return all(p.get_subscription_count() > 0 for p in self.inputs) and all(
                s.get_publisher_count() > 0 for subs in self.outputs for s in subs)
        ok = self.spin_for(step.get("timeout", 60.0), ready)
        if ok:
            self.spin_for(0.5)  # let discovery settle on the node's side too
        return {"op": "wait_ready", "ok": ok}

    def op_frames(self, step):
        from rclpy.duration import Duration

        frames = []
        for spec in step["frames"]:
            frames.extend([spec] * spec.get("repeat", 1))
        period = 1.0 / step.get("rate", 30.0)
        lockstep = step.get("lockstep", False)
        timeout = step.get("answer_timeout", 30.0)
        unanswered = 0
        group: list[tuple[int, int]] = []  # frames published together (with_previous), answered together
        start = time.monotonic()
        stamp = None
        for i, spec in enumerate(frames):
            together = spec.get("with_previous", False) and stamp is not None
            if not together:
                self.spin_for(start + i * period - time.monotonic())  # absolute schedule, no drift
                now = self.node.get_clock().now()  # a stereo pair shares its stamp
                stamp = (now - Duration(nanoseconds=int(spec.get("stamp_offset_ms", 0) * 1e6))).to_msg()
                if spec.get("zero_stamp"):  # a driver that never fills header.stamp
                    stamp = type(stamp)()
            cam = spec.get("camera", 0)
            frame_stamp = stamp
            if spec.get("own_offset_ms"):  # this frame only (a stereo pair's right frame off the left's stamp)
                frame_stamp = (rclpy_time(stamp) + Duration(nanoseconds=int(spec["own_offset_ms"] * 1e6))).to_msg()
            msg = make_frame(spec, frame_stamp, compressed=self.compressed)
            good = not spec.get("bad")
            silent = bool(spec.get("silent"))
            self.sent.append({"camera": cam, "stamp": stamp_ns(frame_stamp), "good": good and not silent,
                              "silent": silent, "bad": spec.get("bad"),
                              "tag": spec.get("tag"), "width": spec.get("width", 320),
                              "height": spec.get("height", 240), "encoding": spec.get("encoding", "rgb8"),
                              "t": time.monotonic()})
            self._publish_camera_info(cam, spec, frame_stamp)
            self.inputs[cam].publish(msg)
            if silent:
                pass
            elif good:
                group.append((cam, stamp_ns(frame_stamp)))
            elif lockstep:  # its status says it was rejected
                rejected = stamp_ns(stamp)
                self.spin_for(timeout, lambda c=cam, s=rejected: self.answered(c, s, ("status",)))
            next_together = i + 1 < len(frames) and frames[i + 1].get("with_previous", False)
            if lockstep and group and not next_together:
                pending = list(group)
                if not self.spin_for(timeout, lambda p=pending: all(self.answered(c, s) for c, s in p)):
                    unanswered += sum(not self.answered(c, s) for c, s in pending)
                start = time.monotonic() - (i + 1) * period  # the next frame goes out now
            if not next_together:
                group = []
        elapsed = time.monotonic() - start
        # Wait for the tail: until every good frame is answered or nothing new arrives for `settle` seconds.
        settle = step.get("settle", 3.0)
        last = [time.monotonic(), sum(len(v) for v in self.received.values())]

        def done():
            n = sum(len(v) for v in self.received.values())
            if n != last[1]:
                last[:] = [time.monotonic(), n]
            all_answered = all(self.answered(f["camera"], f["stamp"]) for f in self.sent if f["good"])
            return all_answered or time.monotonic() - last[0] > settle
        self.spin_for(step.get("tail_timeout", 60.0), done)
        return {"op": "frames", "sent": len(frames), "seconds": round(elapsed, 3), "unanswered": unanswered}

    def _service(self, srv_type, name: str, request, timeout: float = 60.0):
        import rclpy

        client = self.node.create_client(srv_type, f"{self.node_name}/{name}")
        try:
            if not client.wait_for_service(timeout_sec=timeout):
                return None
            future = client.call_async(request)
            rclpy.spin_until_future_complete(self.node, future, timeout_sec=timeout)
            return future.result()
        finally:
            self.node.destroy_client(client)

    def op_transition(self, step):
        from lifecycle_msgs.msg import Transition
        from lifecycle_msgs.srv import ChangeState

        ids = {"configure": Transition.TRANSITION_CONFIGURE, "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE, "cleanup": Transition.TRANSITION_CLEANUP}
        request = ChangeState.Request()
        if "transition" in step:
            request.transition.id = ids[step["transition"]]
        else:  # raw, as any client may send it: {"id": 3} and/or {"label": "activate"}
            request.transition.id = step.get("id", 0)
            request.transition.label = step.get("label", "")
        response = self._service(ChangeState, "change_state", request, step.get("timeout", 120.0))
        return {"op": "transition", "transition": step.get("transition") or step.get("label") or step.get("id"),
                "answered": response is not None, "success": bool(response and response.success)}

    def op_get_state(self, step):
        from lifecycle_msgs.srv import GetState

        response = self._service(GetState, "get_state", GetState.Request())
        return {"op": "get_state", "state": response.current_state.label if response else None}

    def op_set_params(self, step):
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        def message(name, value):
            if isinstance(value, dict):
                return Parameter(name, Parameter.Type[value["type"].upper()], value["value"]).to_parameter_msg()
            return Parameter(name, value=value).to_parameter_msg()

        request = SetParameters.Request(parameters=[message(k, v) for k, v in step["params"].items()])
        response = self._service(SetParameters, "set_parameters", request)
        return {"op": "set_params", "results": [{"successful": r.successful, "reason": r.reason}
                                                for r in (response.results if response else [])]}

    def op_get_params(self, step):
        values, types = self._get_params(step["names"])
        return {"op": "get_params", "values": values, "types": types}

    def op_dump_params(self, step):
        from rcl_interfaces.srv import ListParameters

        listed = self._service(ListParameters, "list_parameters", ListParameters.Request())
        names = sorted(listed.result.names) if listed else []
        values, types = self._get_params(names)
        return {"op": "dump_params", "names": names, "values": values, "types": types}

    def _get_params(self, names: list[str]) -> tuple[dict, dict]:
        """Values and ParameterType numbers of ``names`` (a name rclpy leaves out of the reply is missing)."""
        from rcl_interfaces.srv import GetParameters
        from rclpy.parameter import parameter_value_to_python

        response = self._service(GetParameters, "get_parameters", GetParameters.Request(names=names))
        replies = list(response.values) if response else []
        values = {n: _plain(parameter_value_to_python(v)) for n, v in zip(names, replies)}
        return values, {n: int(v.type) for n, v in zip(names, replies)}

    def op_trigger(self, step):
        from std_srvs.srv import Trigger

        response = self._service(Trigger, step["service"], Trigger.Request(), step.get("timeout", 60.0))
        return {"op": "trigger", "answered": response is not None, "success": bool(response and response.success),
                "message": response.message if response else None, "t": time.monotonic()}

    def op_diagnostics(self, step):
        self.diagnostics = None
        self.spin_for(step.get("wait", 2.5), lambda: self.diagnostics is not None and step.get("first", False))
        return {"op": "diagnostics", "values": self.diagnostics}


def run_client(node_name: str, work) -> int:
    """A client process: ``work(node)`` with a fresh rclpy node (our Fast DDS profile), its result printed as one
    JSON line."""
    fastdds.apply_profile()
    import rclpy

    rclpy.init()
    try:
        node = rclpy.create_node(node_name)
        result = work(node)
        node.destroy_node()
    finally:
        rclpy.try_shutdown()
    print(json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("plan", help="plan JSON file")
    parser.add_argument("--save-images", help="write the received masks / overlays (keep_images) to this .npz")
    args = parser.parse_args(argv)
    with open(args.plan) as f:
        plan = json.load(f)

    def work(node):
        probe = Probe(node, plan)
        steps = probe.run()
        if args.save_images:
            np.savez_compressed(args.save_images, **{f"mask_{k}": v for k, v in probe.masks.items()},
                                **{f"overlay_{k}": v for k, v in probe.overlays.items()})
        return {"steps": steps, "sent": probe.sent, "received": probe.received, "diagnostics": probe.diagnostics}
    return run_client("endoarss_probe", work)


if __name__ == "__main__":
    sys.exit(main())

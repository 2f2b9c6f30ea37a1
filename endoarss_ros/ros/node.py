"""The EndoARSS perception node: a managed (lifecycle) node around the shared inference pipeline.

* configure: read the parameters, load the model and warm it up, create the (lifecycle) publishers;
* activate: publish ``segmentation/info``, subscribe to the images, start the inference worker;
* deactivate: stop the subscriptions and the worker; publishers go quiet;
* cleanup: free the model (and the GPU memory it held).

Subscription callbacks only validate and park the newest frame per camera (compressed frames by their header:
a bad frame never displaces a good pending one); one worker thread runs the shared pipeline
(``endoarss_ros.inference``) and publishes every result with its input image's header. Every frame is accounted
for in /diagnostics: published, rejected by reason, replaced by a newer one, or lost before the callback.

A lifecycle transition that is not available in the current state is refused (the ChangeState reply says
``success: false``) and logged; rclpy itself would raise out of the executor and end the process.
"""
from __future__ import annotations

import ctypes
import difflib
import functools
import gc
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from sensor_msgs.msg import CompressedImage, Image

from endoarss_ros.inference.frames import FrameError, check_compressed, quiet_opencv_log
from endoarss_ros.inference.message_fields import (
    OUTPUT_BY_KEY,
    OUTPUTS,
    frame_fields,
    segmentation_info_fields,
    status_fields,
)
from endoarss_ros.inference.status import lost_frame_status
from endoarss_ros.ros import conversions, params, qos
from endoarss_ros.ros.diagnostics import NodeStats, to_diagnostic_array
from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame, Worker
from endoarss_ros.ros.input_loss import SequenceGaps
from endoarss_ros.ros.temporal_sessions import TemporalSessions, stamp_seconds

NODE_NAME = "endoarss_perception"
LOG_THROTTLE_S = 2.0


@dataclass
class CameraOutputs:
    publishers: dict[str, Any]  # message_fields.OUTPUTS key -> lifecycle publisher
    info_frame_id: str | None = None  # frame_id of the last published SegmentationInfo

    def publish(self, key: str, fields: dict) -> None:
        self.publishers[key].publish(conversions.to_ros(OUTPUT_BY_KEY[key].msgtype, fields))


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _return_freed_heap_to_os() -> None:
    """glibc keeps freed heap pages mapped; trimming gives the model's CPU memory back to the system."""
    try:

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _logged(transition):
    """rclpy turns an exception in a transition callback into ERROR without a word: log it first."""

    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as e:
            self.get_logger().error(f"{transition.__name__} raised {type(e).__name__}: {e}\n"
                                    + traceback.format_exc())
            raise
    return wrapper


class PerceptionNode(LifecycleNode):
    """Images in, masks and activity out; see the module docstring for the lifecycle."""

    def __init__(self, **kwargs):
        self._engine = None
        self._outputs: list[CameraOutputs] = []
        self._subscriptions_in: list = []
        self._gaps: list[SequenceGaps] = []
        self._slots = None
        self._worker = None
        self._streams: list = []  # one inference.stream.CameraStream per camera while active
        self._seg_names: list[str] = []
        self._activity_names: list[str] = []
        self._model_label = ""
        self._state_label = "unconfigured"
        self._last_log: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}
        self._configure_error = ""
        super().__init__(NODE_NAME, **kwargs)
        self.stats = NodeStats()
        params.declare_all(self)
        self._unknown_parameters = self._warn_unknown_parameters()
        self.settings = params.Settings.from_node(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._guard_change_state_service()
        self._temporal = TemporalSessions(self)  # ~/reset_temporal; the model itself is loaded at configure
        quiet_opencv_log()  # undecodable frames are reported by the node's own (throttled) log
        # Not a lifecycle publisher: diagnostics report the node in every state.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # On the steady clock: with use_sim_time the node's clock stops when a bag does, diagnostics must not.
        from rclpy.clock import Clock, ClockType

        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    # ---- parameters ------------------------------------------------------------------------------
    def _warn_unknown_parameters(self) -> list[str]:
        """rclpy silently ignores a -p or params-file value for a name that is never declared (a typo like
        ``modle``): say so once, naming it and the parameters there are."""

        known = sorted(self._parameters)
        unknown = sorted(set(self._parameter_overrides) - set(known))
        if unknown:
            hints = [f"{name!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
                name, known, n=1)) else "") for name in unknown]
            self.get_logger().warning(
                f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)} ignored; "
                f"the parameters of {NODE_NAME} are: {', '.join(known)}")
        return unknown

    def _on_set_parameters(self, changed):
        for p in changed:
            reason = params.validate(p.name, p.value)
            if reason is not None:
                return SetParametersResult(successful=False, reason=reason)
        values = {s.name: params.current_value(self, s.name) for s in params.SPECS}
        values.update({p.name: p.value for p in changed})
        new = params.Settings.from_values(values)
        if self._engine is not None:
            from endoarss_ros.inference.instruments import resolve_classes

            try:
                resolve_classes(new.instruments.classes, self._seg_names)
            except ValueError as e:
                return SetParametersResult(successful=False, reason=str(e))
        self.settings = new
        for stream in self._streams:
            stream.reconfigure(new.stream)  # smoothing, thresholds, tracking: from the next frame on
        for p in changed:
            self.get_logger().info(f"parameter {p.name} set to {p.value!r}")
        return SetParametersResult(successful=True)

    def _make_streams(self):
        from endoarss_ros.inference.stream import CameraStream

        s = self.settings
        return [CameraStream(self._seg_names, self._activity_names, self._engine.colors, s.stream,
                             temporal=self._temporal.session(i)) for i in range(len(s.cameras))]

    # ---- lifecycle -------------------------------------------------------------------------------
    def _guard_change_state_service(self) -> None:
        service = getattr(self, "_service_change_state", None)  # absent without the communication interface
        if service is not None:
            service.callback = self._refuse_unavailable_transition(service.callback)

    def _refuse_unavailable_transition(self, change_state):
        """Wrap rclpy's ChangeState handler: an unavailable transition gets ``success: false`` and a warning."""
        def on_change_state(request, response):
            transition = request.transition
            available = {tid: label for tid, label, *_ in self._state_machine.available_transitions}
            wanted = transition.label or transition.id
            allowed = transition.label in available.values() if transition.label else transition.id in available
            if not allowed:
                state = self._state_machine.current_state[1]
                self.stats.count("lifecycle.refused_transitions")
                self.get_logger().warning(
                    f"refused lifecycle transition {wanted!r}: not available in state {state!r} (available: "
                    + ", ".join(f"{label} [{tid}]" for tid, label in sorted(available.items())) + ")")
                response.success = False
                return response
            return change_state(request, response)
        return on_change_state

    def _configure_failed(self, text: str):
        """One error line, the reason in /diagnostics (published now: with autostart the process exits)."""
        self.get_logger().error(f"configure failed: {text}")
        self._configure_error = text
        self.stats.error("configure", text)
        self._release_engine()
        self._publish_diagnostics()
        return TransitionCallbackReturn.FAILURE

    def _settings_problem(self) -> str | None:
        """Why the parameters cannot be configured (None when they can): values, device and precision."""
        for spec in params.SPECS:
            reason = params.validate(spec.name, params.current_value(self, spec.name))
            if reason is not None:
                return f"invalid parameter: {reason}"
        s = params.Settings.from_node(self)
        from endoarss_ros.inference.engine import resolve_device

        try:
            device = resolve_device(s.device)
        except (RuntimeError, ValueError) as e:
            return f"device {s.device!r}: {e}"
        if s.precision != "fp32" and device.type != "cuda":
            where = "device:=auto found none here" if s.device == "auto" else f"device:={s.device}"
            return (f"precision {s.precision} needs a CUDA device, and {where} (it would run on {device}); "
                    "set precision:=fp32, or device:=cuda on a machine with a GPU")
        return None

    @_logged
    def on_configure(self, state):
        log = self.get_logger()
        problem = self._settings_problem()
        if problem is not None:
            return self._configure_failed(problem)
        self.settings = s = params.Settings.from_node(self)
        path = params.resolve_model_path(s.model)
        if not path.is_file():
            why = "it is a directory" if path.is_dir() else "no such file"
            return self._configure_failed(f"cannot load the model file {path.absolute()} ({why}; parameter "
                                          f"model={s.model!r}). Set -p model:=/path/to/weights.safetensors")
        try:
            self._engine = self._create_engine(path, s)
        except Exception as e:  # noqa: BLE001 - any load failure is reported, the node stays up
            return self._configure_failed(f"cannot load the model file {path}: {type(e).__name__}: {e}")
        engine = self._engine
        self._seg_names, self._activity_names = list(engine.seg_classes), list(engine.activity_classes)
        if s.class_names_file:
            try:
                seg, act = params.load_class_names(s.class_names_file, len(self._seg_names),
                                                   len(self._activity_names))
            except ValueError as e:
                return self._configure_failed(str(e))
            self._seg_names = seg or self._seg_names
            self._activity_names = act or self._activity_names
        try:
            from endoarss_ros.inference.instruments import resolve_classes

            resolve_classes(s.instruments.classes, self._seg_names)
        except ValueError as e:
            return self._configure_failed(f"instruments.classes: {e}")
        problem = self._temporal.configure(s.temporal_model, path, engine.seg_classes, engine.activity_classes,
                                           [c.label for c in s.cameras])
        if problem is not None:
            return self._configure_failed(problem)
        self._model_label = path.name
        if s.warmup_size:
            try:
                t0 = time.monotonic()
                engine.warmup(sizes=[s.warmup_size], batch=min(len(s.cameras), s.max_batch))
                log.info(f"warm-up at {s.warmup_size[1]}x{s.warmup_size[0]}: {time.monotonic() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001
                return self._configure_failed(f"warm-up of {path} on {engine.device} failed: "
                                              f"{type(e).__name__}: {e}")
        self._outputs = [self._create_outputs(cam) for cam in s.cameras]
        log.info(f"configured: model {path} on {engine.device} ({s.precision}, {engine.backend}); "
                 f"{len(self._seg_names)} segmentation classes, {len(self._activity_names)} activities; "
                 f"{len(s.cameras)} camera(s), {s.image_transport} input")
        self._configure_error = ""
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _create_outputs(self, cam) -> CameraOutputs:
        s, log = self.settings, self.get_logger()
        stream = qos.stream_qos(s.output_reliability, s.output_depth)
        publishers = {}
        for output in OUTPUTS:
            topic = cam.output_topic(output.topic)
            publishers[output.key] = self.create_lifecycle_publisher(
                conversions.message_class(output.msgtype), topic, qos.latched_qos() if output.latched else stream,
                event_callbacks=qos.publisher_events(log, topic))
        return CameraOutputs(publishers)

    def _create_engine(self, path, s):
        from endoarss_ros.inference import InferenceEngine

        model: Any = str(path)
        if s.input_size is not None:
            from endoarss_ros.model import load_model

            model = load_model(path)
            if tuple(model.config.input_size) != s.input_size:
                model = load_model(path, config=model.config.replace(input_size=s.input_size))
        engine = InferenceEngine(model, device=s.device, precision=s.precision, backend=s.backend,
                                 max_batch=s.max_batch, cache_dir=s.engine_cache_dir or None)
        for note in engine.notes:
            self.get_logger().info(f"engine: {note}")
        return engine

    @_logged
    def on_activate(self, state):
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        s = self.settings
        self._streams = self._make_streams()  # instruments.classes was checked at configure
        for out in self._outputs:
            self._publish_info(out, frame_id="")
        self._gaps = [SequenceGaps() for _ in s.cameras]
        self._slots = LatestFrameSlots(len(s.cameras), on_replaced=self._on_replaced)
        self._worker = Worker(self._slots, self._process, self._on_worker_error,
                              batch_window=lambda: self.settings.batch_window_ms / 1000.0)
        self._worker.start()
        in_qos = qos.stream_qos(s.input_reliability, s.input_depth)
        log = self.get_logger()
        for cam in s.cameras:
            if s.image_transport == "compressed":
                topic = cam.input_topic("image/compressed")
                msg_type, callback = CompressedImage, self._compressed_callback(cam.index)
            else:
                topic = cam.input_topic("image")
                msg_type, callback = Image, self._image_callback(cam.index)
            events = qos.subscription_events(log, topic, on_lost=self._count_dds_lost)
            self._subscriptions_in.append(self.create_subscription(msg_type, topic, callback, in_qos,
                                                                   event_callbacks=events))
        names = ", ".join(sub.topic_name for sub in self._subscriptions_in)
        # The clock decides what `age_ms` and the stale flag mean, so say which one it is.
        clock = "sim time (/clock)" if self.get_parameter("use_sim_time").value else "system time"
        log.info(f"active: listening on {names} ({s.input_reliability}, depth {s.input_depth}); clock: {clock}")
        self._state_label = "active"
        return TransitionCallbackReturn.SUCCESS

    @_logged
    def on_deactivate(self, state):
        self._stop_streaming()
        self._temporal.reset_all("lifecycle deactivate")  # activate starts over
        self._state_label = "inactive"
        return super().on_deactivate(state)

    @_logged
    def on_cleanup(self, state):
        self._stop_streaming()
        self._destroy_outputs()
        self._release_engine()
        self._state_label = "unconfigured"
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    @_logged
    def on_shutdown(self, state):
        self._stop_streaming()
        self._destroy_outputs()
        self._release_engine()
        self._state_label = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        self.get_logger().error("error during a transition: releasing everything (back to unconfigured)")
        return self.on_cleanup(state)

    def _stop_streaming(self):
        for sub in self._subscriptions_in:
            self.destroy_subscription(sub)
        self._subscriptions_in = []
        if self._worker is not None:
            if not self._worker.stop():
                self.get_logger().warning("the inference worker did not stop within 30 s")
            self._worker = None
        if self._slots is not None:
            self._slots = None

    def _destroy_outputs(self):
        for out in self._outputs:
            for pub in out.publishers.values():
                self.destroy_lifecycle_publisher(pub)
        self._outputs = []

    def _release_engine(self):
        engine, self._engine = self._engine, None
        self._streams = []
        self._temporal.release()
        if engine is not None:
            try:
                engine.close()
            except Exception as e:  # noqa: BLE001
                self.get_logger().warning(f"closing the inference engine: {e}")
            del engine
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            torch.cuda.empty_cache()
        _return_freed_heap_to_os()

    # ---- input -----------------------------------------------------------------------------------
    def _image_callback(self, camera: int):
        def on_image(msg, info):
            received = self._count_input(camera, info)
            try:
                # Validation only (no copy): a bad frame never displaces a good pending one.
                frame = conversions.frame_from_image(msg, max_pixels=self.settings.max_input_pixels)
            except ValueError as e:
                self._reject(camera, msg, e)
                return
            slots = self._slots
            if slots is not None:
                self.stats.stages(receive_convert=(time.monotonic() - received) * 1000.0)
                slots.put(PendingFrame(camera, msg, frame, received))
        return on_image

    def _compressed_callback(self, camera: int):
        def on_compressed(msg, info):
            received = self._count_input(camera, info)
            try:
                # The header only (microseconds, whatever size it claims): decoding is the worker's job.
                check_compressed(msg.format, msg.data, max_pixels=self.settings.max_input_pixels)
            except FrameError as e:
                self._reject(camera, msg, e)
                return
            slots = self._slots
            if slots is not None:
                slots.put(PendingFrame(camera, msg, None, received))
        return on_compressed

    def _count_input(self, camera: int, info) -> float:
        """Count a received frame and the frames its publisher sent since the previous one that never arrived
        (sequence gaps, see ``input_loss``). Returns the receipt time."""
        received = time.monotonic()
        self.stats.received()
        subs = self._subscriptions_in
        publishers = subs[camera].get_publisher_count() if camera < len(subs) else 1
        lost = self._gaps[camera].lost(info.get("publication_sequence_number"), publishers)
        if lost is None:
            self.stats.count("input.loss_not_countable")
        elif lost:
            self.stats.dropped("lost_before_callback", lost)
        return received

    def _count_dds_lost(self, samples: int) -> None:
        self.stats.count("input.dds_samples_lost", samples)

    def report_callback_error(self, error: Exception) -> None:
        """A callback raised out of the executor: log it (throttled) and count it; the node goes on."""

        text = f"{type(error).__name__}: {error}"
        self.stats.error("callback", text)
        self._log_throttled(("callback", type(error).__name__), "error",
                            f"a callback raised {text}; the node goes on\n" + traceback.format_exc())

    def _reject(self, camera: int, msg, error: Exception):
        reason = getattr(error, "reason", "invalid")
        self.stats.rejected(reason)
        self._publish_lost(camera, msg.header, "INPUT_REJECTED", f"{reason}: {error}", time.monotonic())
        stamp = msg.header.stamp
        self._log_throttled(("reject", camera, reason), "error",
                            f"rejected a frame from {self.settings.cameras[camera].label} "
                            f"(stamp {stamp.sec}.{stamp.nanosec:09d}, {reason}): {error}")

    def _log_throttled(self, key, level: str, text: str):
        """One log line per key every LOG_THROTTLE_S, saying how many were suppressed in between."""
        now = time.monotonic()
        if now - self._last_log.get(key, -1e9) < LOG_THROTTLE_S:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last_log[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            text += f" [{suppressed} more like this since the last message]"
        getattr(self.get_logger(), level)(text)

    # ---- worker ----------------------------------------------------------------------------------
    def _process(self, batch):
        engine = self._engine
        if engine is None:
            return
        s = self.settings
        items, frames = [], []
        for item in batch:
            frame = item.frame
            if frame is None:
                try:
                    frame = conversions.frame_from_compressed_image(item.message, max_pixels=s.max_input_pixels)
                except ValueError as e:
                    self._reject(item.camera, item.message, e)
                    continue
            items.append(item)
            frames.append(frame)
        if not frames:
            return
        if len(frames) > 1:
            self.stats.count("batches.multi_camera")
        outputs = self._outputs
        want_overlay = [outputs[i.camera].publishers["overlay"].get_subscription_count() > 0 for i in items]
        t0 = time.monotonic()
        results = engine.infer(frames, overlay_alpha=s.overlay_alpha if any(want_overlay) else None)
        inference_ms = (time.monotonic() - t0) * 1000.0
        for item, frame, result, overlay in zip(items, frames, results, want_overlay):
            out = outputs[item.camera]
            header = item.message.header
            t1 = time.monotonic()
            stream = self._streams[item.camera].update(frame, result, stamp_seconds(header))
            t2 = time.monotonic()
            fields = frame_fields(header, result, stream, self._activity_names, self._seg_names, overlay=overlay)
            t3 = time.monotonic()
            for key, value in fields.items():
                out.publish(key, value)
            if out.info_frame_id != header.frame_id:
                self._publish_info(out, header.frame_id)
            self._publish_status(item.camera, header, stream.status, item.received)
            t4 = time.monotonic()
            self.stats.stages(queue_wait=(t0 - item.received) * 1000.0, pipeline=inference_ms,
                              status_instruments=(t2 - t1) * 1000.0, message_build=(t3 - t2) * 1000.0,
                              publish=(t4 - t3) * 1000.0)
            self.stats.published((t4 - item.received) * 1000.0, inference_ms)

    def _on_worker_error(self, error: BaseException, batch):
        text = f"{type(error).__name__}: {error}"
        self.stats.error("inference", text)
        for item in batch:
            self._publish_lost(item.camera, item.message.header, "INFERENCE_FAILED", text, item.received)
        self._log_throttled(("inference",), "error",
                            f"inference failed on {len(batch)} frame(s), skipping them: {text}")
        torch = sys.modules.get("torch")
        if torch is not None and "out of memory" in str(error).lower() and torch.cuda.is_available():
            torch.cuda.empty_cache()

    # ---- status ----------------------------------------------------------------------------------
    def _on_replaced(self, item) -> None:
        """A frame replaced by a newer one before the worker took it: counted, and its status says so."""
        self.stats.dropped("replaced")
        self._publish_lost(item.camera, item.message.header, "DROPPED", "replaced by a newer frame before it was "
                           "processed (the node keeps the newest frame per camera)", item.received)

    def _publish_lost(self, camera: int, header, flag: str, reason: str, received: float) -> None:
        self._publish_status(camera, header, lost_frame_status(flag, reason), received)

    def _publish_status(self, camera: int, header, status, received: float) -> None:
        """The frame's PerceptionStatus with its timing (age = the node's clock - the image stamp), counted."""
        outputs = self._outputs
        if camera >= len(outputs):
            return
        stamp = header.stamp
        age_ms = (self.get_clock().now().nanoseconds - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6
        status = status.with_timing(age_ms, (time.monotonic() - received) * 1000.0, self.settings.thresholds)
        outputs[camera].publish("status", status_fields(header, status))
        self.stats.status(status.usable, status.flag_names)

    def _publish_info(self, out: CameraOutputs, frame_id: str):
        engine = self._engine
        if engine is None:
            return
        header = {"stamp": self.get_clock().now().to_msg(), "frame_id": frame_id}
        out.publish("info", segmentation_info_fields(header, self._seg_names, engine.colors, self._model_label))
        out.info_frame_id = frame_id

    # ---- diagnostics -----------------------------------------------------------------------------
    def _publish_diagnostics(self):
        s, engine = self.settings, self._engine
        info = {
            "lifecycle_state": self._state_label,
            "model": str(params.resolve_model_path(s.model)),
            "model_loaded": str(engine is not None).lower(),
            "device": str(engine.device) if engine is not None else s.device,
            "backend": str(engine.backend) if engine is not None else s.backend,
            "precision": s.precision,
            "cameras": ", ".join(c.label for c in s.cameras),
            "image_transport": s.image_transport,
            "process_rss_mb": f"{_rss_mb() or 0:.1f}",
            "configure_error": self._configure_error,
            "unknown_parameters": ", ".join(self._unknown_parameters),
            **self._temporal.diagnostics(s.smoothing_enabled),
        }
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available():
            info["cuda_memory_allocated_mb"] = f"{torch.cuda.memory_allocated() / 2**20:.1f}"
            info["cuda_memory_reserved_mb"] = f"{torch.cuda.memory_reserved() / 2**20:.1f}"
        self._diag_pub.publish(to_diagnostic_array(
            self.stats, name=f"{NODE_NAME}: {self.get_fully_qualified_name()}", hardware_id=info["device"],
            stamp=self.get_clock().now().to_msg(), info=info, active=self._state_label == "active"))


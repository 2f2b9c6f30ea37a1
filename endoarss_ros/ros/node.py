"""The EndoARSS perception node: a managed (lifecycle) node around the shared inference pipeline.

* configure: read the parameters, load the model and warm it up, create the (lifecycle) publishers;
* activate: publish ``segmentation/info``, subscribe to the images, start the inference worker;
* deactivate: stop the subscriptions and the worker; publishers go quiet;
* cleanup: free the model (and the GPU memory it held);
* shutdown: as cleanup; the process then exits (``perception_node``).

Subscription callbacks only validate and park the newest frame per camera (compressed frames by their header:
a bad frame never displaces a good pending one); one worker thread runs the shared pipeline
(``endoarss_ros.inference``) and publishes every result with its input image's header. Every frame is accounted
for in /diagnostics: published, rejected by reason, replaced by a newer one, or lost before the callback.

Tear-down always goes in one order (``close``): intake stops (subscriptions, timer), the worker is stopped and
joined, then the publishers and the node are destroyed; the entry point shuts the context down last. No thread
is in the middle of a publish when anything it uses goes away.

Module layout: ``inputs`` (subscriptions, validation, counting), ``outputs`` (per-camera publishers and what goes
out on them), ``param_changes`` (live parameter
changes, unknown names, configure checks), ``params`` (the parameter table), ``transitions`` (lifecycle plumbing),
``frame_slot`` (newest-frame slots and the worker), ``engine_memory`` (releasing the model).
"""
from __future__ import annotations

import time
import traceback
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from endoarss_ros.inference.frames import quiet_opencv_log
from endoarss_ros.inference.weights_path import resolve_model_path
from endoarss_ros.ros import conversions, engine_memory, launch_checks, param_changes, params, qos
from endoarss_ros.ros.diagnostics import NodeStats, to_diagnostic_array
from endoarss_ros.ros.frame_slot import LatestFrameSlots, Worker
from endoarss_ros.ros.geometry import CameraInfoInputs, Geometry
from endoarss_ros.ros.inputs import Inputs
from endoarss_ros.ros.outputs import Labels, Outputs
from endoarss_ros.ros.stale_hint import node_stale_hint
from endoarss_ros.ros.stereo_intake import StereoIntake
from endoarss_ros.ros.temporal_sessions import TemporalSessions, stamp_seconds
from endoarss_ros.ros.transitions import guard_change_state_service, logged

NODE_NAME = "endoarss_perception"
# Where the docs, the launch file and config/perception.yaml expect the node; `-r __ns:=/other` moves it.
DEFAULT_NAMESPACE = "/endoarss"
LOG_THROTTLE_S = 2.0
WORKER_STOP_TIMEOUT_S = 30.0


class PerceptionNode(LifecycleNode):
    """Images in, masks and activity out; see the module docstring for the lifecycle."""

    def __init__(self, **kwargs):
        self._engine = None
        self._outputs: Outputs | None = None
        self._labels: Labels | None = None
        self._inputs: Inputs | None = None
        self._camera_infos: CameraInfoInputs | None = None
        self._geometry: Geometry | None = None  # the 3D side (camera_info, rays, stereo) while active
        self._stereo: StereoIntake | None = None  # pairing of the stereo pairs' frames while active
        self._slots = None
        self._worker = None
        self._streams: list = []  # one inference.stream.CameraStream per camera while active
        self._out_of_body_detector = None  # inference.out_of_body.OutOfBodyDetector, loaded at configure
        self._state_label = "unconfigured"
        self._last_log: dict[tuple, float] = {}
        self._suppressed: dict[tuple, int] = {}
        self._configure_error = ""
        self._closed = False
        kwargs.setdefault("namespace", DEFAULT_NAMESPACE)
        super().__init__(NODE_NAME, **kwargs)
        self.stats = NodeStats()
        params.declare_all(self)
        self._unknown_parameters = param_changes.warn_unknown_parameters(self, NODE_NAME)
        self.settings = params.Settings.from_node(self)
        self.add_pre_set_parameters_callback(params.typed_lists)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        guard_change_state_service(self, self.stats)
        self._temporal = TemporalSessions(self)  # ~/reset_temporal; the model itself is loaded at configure
        quiet_opencv_log()  # undecodable frames are reported by the node's own (throttled) log
        # Not a lifecycle publisher: diagnostics report the node in every state.
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        # On the steady clock: with use_sim_time the node's clock stops when a bag does, diagnostics must not.
        from rclpy.clock import Clock, ClockType

        self._diag_timer = self.create_timer(1.0, self._publish_diagnostics,
                                             clock=Clock(clock_type=ClockType.STEADY_TIME))

    @property
    def finalized(self) -> bool:
        return self._state_label == "finalized"

    def set_parameters_atomically(self, parameter_list):
        """As rclpy's, except that read-only parameters sent with the values they have succeed (``ros2 param load``
        of a dump onto the running node): nothing changes, and the reason says so."""
        if parameter_list and all(param_changes.unchanged_read_only(self, p) for p in parameter_list):
            return SetParametersResult(successful=True, reason="read-only, unchanged")
        return super().set_parameters_atomically(parameter_list)

    def _on_set_parameters(self, changed):
        seg_names = self._labels.seg_names if self._engine is not None and self._labels is not None else None
        new, reason = param_changes.changed_settings(self, changed, seg_names)
        if new is None:
            return SetParametersResult(successful=False, reason=reason)
        self.settings = new
        for stream in self._streams:
            stream.reconfigure(new.stream)  # smoothing, thresholds, tracking: from the next frame on
            stream.reconfigure_out_of_body(new.out_of_body)
        for p in changed:
            self.get_logger().info(f"parameter {p.name} set to {p.value!r}")
        return SetParametersResult(successful=True)

    # ---- lifecycle -------------------------------------------------------------------------------
    def _configure_failed(self, text: str):
        """One error line, the reason in /diagnostics (published now: with autostart the process exits)."""
        self.get_logger().error(f"configure failed: {text}")
        self._configure_error = text
        self.stats.error("configure", text)
        self._release_engine()
        self._publish_diagnostics()
        return TransitionCallbackReturn.FAILURE

    @logged
    def on_configure(self, state):
        problem = param_changes.configure_problem(self)
        if problem is not None:
            return self._configure_failed(problem)
        self.settings = s = params.Settings.from_node(self)
        path = resolve_model_path(s.model)
        if not path.is_file():
            why = "it is a directory" if path.is_dir() else "no such file"
            return self._configure_failed(f"cannot load the model file {path.absolute()} ({why}; parameter "
                                          f"model={s.model!r}). Set "
                                          f"{launch_checks.parameter_hint('model', '/path/to/weights.safetensors')}")
        try:
            self._engine = self._create_engine(path, s)
        except Exception as e:  # noqa: BLE001 - any load failure is reported, the node stays up
            return self._configure_failed(f"cannot load the model file {path}: {type(e).__name__}: {e}")
        problem = self._load_labels(path.name) or self._load_out_of_body(s)
        if problem is None:
            engine = self._engine
            problem = self._temporal.configure(s.temporal_model, path, engine.seg_classes, engine.activity_classes,
                                               [c.label for c in s.cameras], self._input_size_override)
        if problem is not None:
            return self._configure_failed(problem)
        if s.warmup_size:
            try:
                t0 = time.monotonic()
                self._engine.warmup(sizes=[s.warmup_size], batch=min(len(s.cameras), s.max_batch))
                self.get_logger().info(f"warm-up at {s.warmup_size[1]}x{s.warmup_size[0]}: "
                                       f"{time.monotonic() - t0:.1f} s")
            except Exception as e:  # noqa: BLE001
                return self._configure_failed(f"warm-up of {path} on {self._engine.device} failed: "
                                              f"{type(e).__name__}: {e}")
        self._outputs = Outputs(self, s, self.stats)
        engine, labels = self._engine, self._labels
        self.get_logger().info(
            f"configured: model {path} on {engine.device} ({s.precision}, {engine.backend}); "
            f"{len(labels.seg_names)} segmentation classes, {len(labels.activity_names)} activities; "
            f"{len(s.cameras)} camera(s), {s.image_transport} input")
        self._configure_error = ""
        self._state_label = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def _load_labels(self, model_label: str) -> str | None:
        """The class names the messages carry (the model's, or the class names file's); why not, or None."""
        s, engine = self.settings, self._engine
        seg, act = list(engine.seg_classes), list(engine.activity_classes)
        if s.class_names_file:
            try:
                seg_file, act_file = params.load_class_names(s.class_names_file, len(seg), len(act))
            except ValueError as e:
                return str(e)
            seg, act = seg_file or seg, act_file or act
        from endoarss_ros.inference.instruments import resolve_classes

        try:
            resolve_classes(s.instruments.classes, seg)
        except ValueError as e:
            return f"instruments.classes: {e}"
        self._labels = Labels(seg, act, engine.colors, model_label)
        return None

    def _load_out_of_body(self, s) -> str | None:
        """The out-of-body detector (the privacy gate and PerceptionStatus.out_of_body); why not, or None."""
        from endoarss_ros.inference.out_of_body import OutOfBodyDetector, OutOfBodyModelError

        self._out_of_body_detector = None
        if not s.out_of_body_model:
            if s.out_of_body.privacy_gate:  # fail closed: a gate that cannot decide would pass every frame
                return ("out_of_body.model is '' (no out-of-body detector) while privacy_gate is true: the gate "
                        "cannot decide; give the detector, or set privacy_gate:=false knowingly")
            self.get_logger().warn("no out-of-body detector (out_of_body.model ''): out_of_body is never set")
            return None
        try:
            self._out_of_body_detector = OutOfBodyDetector.load(resolve_model_path(s.out_of_body_model))
        except OutOfBodyModelError as e:
            return f"{e} (parameter out_of_body.model={s.out_of_body_model!r})"
        if not s.out_of_body.privacy_gate:
            self.get_logger().warn("privacy_gate is false: out-of-body frames are published on "
                                   "segmentation/overlay as they came")
        return None

    def _create_engine(self, path, s):
        from endoarss_ros.inference import InferenceEngine

        model: Any = str(path)
        self._input_size_override = None  # the temporal model's binding covers it (frame_model_identity)
        if s.input_size is not None:
            from endoarss_ros.model import load_model

            model = load_model(path)
            if tuple(model.config.input_size) != s.input_size:
                model = load_model(path, config=model.config.replace(input_size=s.input_size))
                self._input_size_override = tuple(s.input_size)
        engine = InferenceEngine(model, device=s.device, precision=s.precision, backend=s.backend,
                                 max_batch=s.max_batch, cache_dir=s.engine_cache_dir or None)
        for note in engine.notes:
            self.get_logger().info(f"engine: {note}")
        return engine

    @logged
    def on_activate(self, state):
        ret = super().on_activate(state)  # enables the lifecycle publishers
        if ret != TransitionCallbackReturn.SUCCESS:
            return ret
        from endoarss_ros.inference.out_of_body import OutOfBody
        from endoarss_ros.inference.stream import CameraStream

        s, labels = self.settings, self._labels
        # instruments.classes was checked at configure
        self._streams = [CameraStream(labels.seg_names, labels.activity_names, labels.colors, s.stream,
                                      temporal=self._temporal.session(i),
                                      out_of_body=OutOfBody(self._out_of_body_detector, s.out_of_body)
                                      if self._out_of_body_detector is not None else None)
                         for i in range(len(s.cameras))]
        for camera in range(len(s.cameras)):
            self._outputs.publish_info(camera, "", labels)
        pairs = params.parse_stereo_pairs(list(s.stereo_pairs), s.cameras)  # checked at configure
        self._slots = LatestFrameSlots(len(s.cameras), on_replaced=self._on_replaced,
                                       unused=tuple(right for _, right in pairs))
        self._stereo = StereoIntake(pairs, s.stereo_tolerance_ms, s.stereo_max_wait_ms, self._slots, self.stats,
                                    self._log_throttled, {c.index: c.label for c in s.cameras}) if pairs else None
        self._camera_infos = CameraInfoInputs(self, s.cameras, qos.stream_qos("best_effort", 10))
        self._inputs = Inputs(self, self._slots, self._reject, stereo=self._stereo)
        self._geometry = Geometry(s, self.stats, self._camera_infos, pairs, self._log_throttled,
                                  self._inputs.topic_names())
        self._worker = Worker(self._slots, self._process, self._on_worker_error,
                              batch_window=lambda: self.settings.batch_window_ms / 1000.0)
        self._worker.start()
        names = ", ".join(self._inputs.topic_names())
        geometry = "camera_info on " + ", ".join(self._camera_infos.topic_names())
        if pairs:
            geometry += "; stereo pairs " + ", ".join(f"{s.cameras[l].label}:{s.cameras[r].label}"
                                                      for l, r in pairs)
        # The clock decides what `age_ms` and the stale flag mean, so say which one it is.
        clock = "sim time (/clock)" if self.get_parameter("use_sim_time").value else "system time"
        self.get_logger().info(f"active: listening on {names} ({s.input_reliability}, depth {s.input_depth}); "
                               f"{geometry}; clock: {clock}")
        self._state_label = "active"
        return TransitionCallbackReturn.SUCCESS

    @logged
    def on_deactivate(self, state):
        self._stop_streaming()
        self._temporal.reset_all("lifecycle deactivate")  # activate starts over
        self._state_label = "inactive"
        self.get_logger().info("deactivated: inputs unsubscribed, worker stopped; the model stays loaded")
        return super().on_deactivate(state)

    @logged
    def on_cleanup(self, state):
        self._stop_streaming()
        self._destroy_outputs()
        self._release_engine()
        self._state_label = "unconfigured"
        self.get_logger().info("cleaned up: model released")
        return TransitionCallbackReturn.SUCCESS

    @logged
    def on_shutdown(self, state):
        self._stop_streaming()
        self._destroy_outputs()
        self._release_engine()
        self._state_label = "finalized"
        self.get_logger().info(f"shut down from {state.label}: model released; the process exits")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state):
        self.get_logger().error("error during a transition: releasing everything (back to unconfigured)")
        return self.on_cleanup(state)

    def close(self) -> None:
        """Tear everything down in the one safe order (idempotent; the entry point calls it on any exit):
        intake first (subscriptions, timer), then the worker (stopped and joined), then the publishers, the
        model and the node itself. The caller shuts the context down afterwards."""
        if self._closed:
            return
        self._closed = True
        self.destroy_timer(self._diag_timer)
        if not self._stop_streaming():
            return  # a worker still in native code: destroying what it publishes with would crash the process
        self._destroy_outputs()
        self._release_engine()
        self.destroy_publisher(self._diag_pub)
        counters = self.stats.snapshot()["counters"]
        self.get_logger().info(
            f"closed: {counters.get('frames.received', 0)} frames received, "
            f"{counters.get('frames.published', 0)} published, "
            f"{sum(n for k, n in counters.items() if k.startswith(('dropped.', 'rejected.')))} dropped or rejected")
        self.destroy_node()

    def _stop_streaming(self) -> bool:
        """Unsubscribe the inputs, then stop and join the worker; False when the worker did not stop."""
        inputs, self._inputs = self._inputs, None
        if inputs is not None:
            inputs.destroy()
        infos, self._camera_infos = self._camera_infos, None
        if infos is not None:
            infos.destroy()
        if self._worker is not None:
            if not self._worker.stop(WORKER_STOP_TIMEOUT_S):
                self.get_logger().error(f"the inference worker did not stop within {WORKER_STOP_TIMEOUT_S:.0f} s")
                return False
            self._worker = None
        self._slots = None
        self._stereo = None
        self._geometry = None
        return True

    def _destroy_outputs(self):
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            outputs.destroy()

    def _release_engine(self):
        engine, self._engine = self._engine, None
        self._streams = []
        self._temporal.release()
        engine_memory.close_engine(engine, self.get_logger())
        del engine
        engine_memory.return_memory()

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
        # One call site per severity: rclpy refuses a call site whose severity changes between calls.
        logger = self.get_logger()
        if level == "error":
            logger.error(text)
        elif level == "warning":
            logger.warning(text)
        else:
            logger.info(text)

    # ---- worker ----------------------------------------------------------------------------------
    def _process(self, batch):
        engine, outputs, labels = self._engine, self._outputs, self._labels
        if engine is None or outputs is None:
            return
        entries = []  # (item, frame, right frame or None): a stereo pair's two views go into the same batch
        for item in batch:
            frame = self._decoded(item)
            if frame is None:
                continue
            partner = self._decoded(item.partner) if item.partner is not None else None
            entries.append((item, frame, partner))
        if not entries:
            return
        frames = [f for _, frame, partner in entries for f in (frame, partner) if f is not None]
        if len(frames) > 1:
            self.stats.count("batches.multi_camera")
        want_overlay = [outputs.cameras[item.camera].wants_overlay() for item, _, _ in entries]
        t0 = time.monotonic()
        results = iter(engine.infer(frames, overlay_alpha=self.settings.overlay_alpha if any(want_overlay)
                                    else None))
        inference_ms = (time.monotonic() - t0) * 1000.0
        for (item, frame, partner), overlay in zip(entries, want_overlay):
            result = next(results)
            partner_result = next(results) if partner is not None else None
            header = item.message.header
            t1 = time.monotonic()
            stream = self._streams[item.camera].update(frame, result, stamp_seconds(header))
            self._count_out_of_body(stream.out_of_body)
            t2 = time.monotonic()
            geometry = self._frame_geometry(item, frame, result, stream, partner, partner_result)
            t3 = time.monotonic()
            build_s = outputs.publish_results(item.camera, header, result, stream, labels, overlay, geometry)
            status = outputs.publish_status(item.camera, header, stream.status, item.received,
                                            self.settings.thresholds)
            t4 = time.monotonic()
            self._hint_if_stale(status)
            self.stats.stages(queue_wait=(t0 - item.received) * 1000.0, pipeline=inference_ms,
                              status_instruments=(t2 - t1) * 1000.0, message_build=build_s * 1000.0,
                              publish=(t4 - t3 - build_s) * 1000.0)
            if geometry is not None:
                self.stats.stages(geometry=(t3 - t2) * 1000.0)
            self.stats.published((t4 - item.received) * 1000.0, inference_ms)

    def _decoded(self, item):
        """The item's frame, decoding a compressed one here (None when it is rejected: status and count)."""
        if item.frame is not None:
            return item.frame
        try:
            return conversions.frame_from_compressed_image(item.message, max_pixels=self.settings.max_input_pixels)
        except ValueError as e:
            self._reject(item.camera, item.message, e)
            return None

    def _frame_geometry(self, item, frame, result, stream, partner, partner_result):
        """The frame's 3D side (``geometry.FrameGeometry``) or None: 2D, as without camera_info."""
        geometry, outputs = self._geometry, self._outputs
        if geometry is None:
            return None
        camera = item.camera
        if partner is None:
            out = geometry.mono(camera, item.message.header, frame, stream.instruments)
        else:
            from endoarss_ros.inference import instruments as inst
            from endoarss_ros.inference.quality import analysis_rgb

            cam_stream = self._streams[camera]
            right_found = inst.extract(partner_result.mask, cam_stream.instrument_classes,
                                       confidence=partner_result.confidence, image=analysis_rgb(partner),
                                       min_area_fraction=cam_stream.settings.instruments.min_area_fraction)
            out = geometry.stereo(camera, item.message.header, frame, result, stream.instruments,
                                  item.partner.message.header, partner, partner_result, right_found,
                                  instrument_classes=cam_stream.instrument_classes,
                                  want_disparity=outputs.cameras[camera].wants("disparity"))
        if out is not None and outputs.cameras[camera].wants("markers"):
            labels = self._labels
            out.markers = geometry.markers(camera, out, stream.instruments, labels.seg_names, labels.colors)
        return out

    def _count_out_of_body(self, decision) -> None:
        """/diagnostics: frames out of body, entries into the state, frames the privacy gate blanked."""
        if decision is None:
            return
        if decision.out_of_body:
            self.stats.count("out_of_body.frames")
        if not decision.decided:
            self.stats.count("out_of_body.undecided_frames")
        if decision.gated:
            self.stats.count("privacy_gate.gated_frames")

    def _hint_if_stale(self, status) -> None:
        """A STALE result from a recording's old stamps (not a slow machine): say why and what to do."""
        if status is not None and "STALE" in status.flag_names:
            hint = node_stale_hint(status.age_ms, self.get_parameter("use_sim_time").value)
            if hint:
                self._log_throttled(("stale",), "warning", hint)

    def _on_worker_error(self, error: BaseException, batch):
        text = f"{type(error).__name__}: {error}"
        self.stats.error("inference", text)
        for item in batch:
            self._publish_lost(item.camera, item.message.header, "INFERENCE_FAILED", text, item.received)
        self._log_throttled(("inference",), "error",
                            f"inference failed on {len(batch)} frame(s), skipping them: {text}")
        engine_memory.empty_cuda_cache_after_oom(error)

    # ---- status ----------------------------------------------------------------------------------
    def _on_replaced(self, item) -> None:
        """A frame replaced by a newer one before the worker took it: counted, and its status says so."""
        self.stats.dropped("replaced")  # a pair's right frame is counted in stereo.matched
        self._publish_lost(item.camera, item.message.header, "DROPPED", "replaced by a newer frame before it was "
                           "processed (the node keeps the newest frame per camera)", item.received)

    def _publish_lost(self, camera: int, header, flag: str, reason: str, received: float) -> None:
        outputs, streams = self._outputs, self._streams
        if outputs is not None:
            gate = streams[camera].out_of_body if camera < len(streams) else None
            outputs.publish_lost(camera, header, flag, reason, received, self.settings.thresholds,
                                 out_of_body=gate is not None and gate.state.out_of_body)

    # ---- diagnostics -----------------------------------------------------------------------------
    def _out_of_body_info(self) -> dict[str, str]:
        s = self.settings
        info = {"privacy_gate": "on" if s.out_of_body.privacy_gate else "off",
                "out_of_body.model": str(resolve_model_path(s.out_of_body_model))}
        for camera, stream in zip(s.cameras, list(self._streams)):
            state = stream.out_of_body.state if stream.out_of_body is not None else None
            if state is not None:
                info[f"out_of_body.state.{camera.label}"] = "out" if state.out_of_body else "in"
                info[f"out_of_body.entries.{camera.label}"] = str(state.entries)
        return info

    def _publish_diagnostics(self):
        s, engine = self.settings, self._engine
        info = {
            "lifecycle_state": self._state_label,
            "model": str(resolve_model_path(s.model)),
            "model_loaded": str(engine is not None).lower(),
            "device": str(engine.device) if engine is not None else s.device,
            "backend": str(engine.backend) if engine is not None else s.backend,
            "precision": s.precision,
            "cameras": ", ".join(c.label for c in s.cameras),
            "image_transport": s.image_transport,
            "process_rss_mb": f"{engine_memory.rss_mb() or 0:.1f}",
            "configure_error": self._configure_error,
            "unknown_parameters": ", ".join(self._unknown_parameters),
            **engine_memory.cuda_memory_info(),
            **self._temporal.diagnostics(s.smoothing_enabled),
            **self._out_of_body_info(),
        }
        warnings = []
        geometry, stereo = self._geometry, self._stereo
        if geometry is not None:
            values, warnings = geometry.diagnostics(stereo.summary() if stereo is not None else None)
            info.update(values)
        self._diag_pub.publish(to_diagnostic_array(
            self.stats, name=f"{NODE_NAME}: {self.get_fully_qualified_name()}", hardware_id=info["device"],
            stamp=self.get_clock().now().to_msg(), info=info, active=self._state_label == "active",
            warnings=warnings))

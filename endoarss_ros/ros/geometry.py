"""The node's 3D side: camera_info beside every image, viewing rays, stereo triangulation, markers, disparity.

``CameraInfoInputs`` subscribes ``<camera's input namespace>/camera_info`` for every camera (``camera_info`` in
the node's namespace for the single camera: remap it like ``image``) and keeps the recent ones by stamp; the
callback only stores the message. ``Geometry`` runs in the worker: it finds each frame's camera_info by the
frame's stamp (``stereo_pairing.CameraInfoCache``: the same stamp, else the latest one received within
``INFO_FALLBACK_S``), turns it into a ``camera_model.CameraModel`` for the frame's size (cached per distinct
camera_info and size) and computes

* no camera_info (or an invalid one): nothing (None): the frame is published in 2D exactly as without this module;
* a single camera: the tips' viewing rays (``stereo.mono_geometry``);
* a stereo pair with both camera_infos valid and forming a rig: ``stereo.StereoGeometry`` (match, refine,
  triangulate, tissue disparity), markers, and the tissue disparity while someone subscribes to it.

Anything wrong with a camera_info is counted, shown per camera in /diagnostics (``camera_info.<camera>``) and
logged (throttled), and the frame goes out with what can still be trusted (2D, or rays of a valid left camera),
never with 3D from a camera_info that failed a check.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np

from endoarss_ros.inference.stereo_pairing import CameraInfoCache, InfoMatch
from endoarss_ros.inference.tallies import percentile

INFO_FALLBACK_S = 1.0  # the latest camera_info stands in for a frame whose own has not come, if this recent
INFO_CACHE = 32  # camera_infos kept per camera, by stamp
_MODEL_CACHE = 8  # distinct (camera_info, image size) models kept per camera
SWAP_WARNING_S = 10.0  # how long /diagnostics keeps warning after instruments matched at negative disparities
MISSING = "missing: none received with the frames' stamps (2D only)"
NO_INFO = InfoMatch(None, "missing", None)
DISPARITY_TOPIC = "disparity"  # stereo_msgs/DisparityImage, in the LEFT camera's output namespace
DISPARITY_TYPE = "stereo_msgs/msg/DisparityImage"


def _stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class CameraInfoInputs:
    """One ``sensor_msgs/CameraInfo`` subscription per camera (best effort: matches every publisher)."""

    def __init__(self, node, cameras, qos_profile):
        from sensor_msgs.msg import CameraInfo

        self._node = node
        self._lock = threading.Lock()
        self._caches = [CameraInfoCache(INFO_CACHE, int(INFO_FALLBACK_S * 1e9)) for _ in cameras]
        self.received_any = [False] * len(cameras)  # read without the lock: the 2D path's one check
        self._subscriptions = [node.create_subscription(CameraInfo, cam.input_topic("camera_info"),
                                                        self._callback(cam.index), qos_profile)
                               for cam in cameras]
        self._topics = [sub.topic_name for sub in self._subscriptions]

    def _callback(self, camera: int):
        def on_camera_info(msg):
            with self._lock:
                self._caches[camera].add(_stamp_ns(msg.header), msg, time.monotonic_ns())
            self.received_any[camera] = True
        return on_camera_info

    def topic_names(self) -> list[str]:
        return list(self._topics)

    def lookup(self, camera: int, stamp_ns: int):
        with self._lock:
            return self._caches[camera].lookup(stamp_ns, time.monotonic_ns())

    def summary(self, camera: int) -> dict:
        with self._lock:
            return self._caches[camera].summary()

    def destroy(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            self._node.destroy_subscription(sub)


@dataclass
class FrameGeometry:
    """What one frame publishes beyond 2D: its instruments' ``Instrument3D`` (aligned with the published
    instruments), the header of the 3D outputs (the camera_info's frame_id), markers and disparity fields."""
    header: Any
    instruments: list
    markers: dict | None = None
    disparity: dict | None = None


def _info_signature(msg, width: int, height: int) -> tuple:
    roi = msg.roi
    return (msg.header.frame_id, msg.width, msg.height, msg.distortion_model, tuple(msg.d), tuple(msg.k),
            tuple(msg.r), tuple(msg.p), msg.binning_x, msg.binning_y, roi.x_offset, roi.y_offset, roi.width,
            roi.height, roi.do_rectify, width, height)


class Geometry:
    """Worker-side 3D computation and its bookkeeping for every camera (see the module docstring)."""

    def __init__(self, settings, stats, infos: CameraInfoInputs, pairs: list[tuple[int, int]], log_throttled,
                 image_topics: list[str]):
        """``log_throttled(key, level, text)``: the node's throttled log; ``image_topics``: each camera's image
        topic as subscribed (remapped): an ``image_rect*`` topic is rectified input, as is every camera with
        ``rectified_input``."""
        from endoarss_ros.inference.camera_model import is_rectified_topic

        self._log, self._stats, self._infos = log_throttled, stats, infos
        self._settings = settings
        self._rectified = [settings.rectified_input or is_rectified_topic(t) for t in image_topics]
        self._cameras = settings.cameras
        self._right_of = dict(pairs)
        self._models: list[dict] = [{} for _ in settings.cameras]
        self._rigs: dict[tuple, Any] = {}
        self._state = ["no frame yet"] * len(settings.cameras)
        self._stereo_state = {left: "no pair yet" for left, _ in pairs}
        self._shown_ids: list[set[int]] = [set() for _ in settings.cameras]
        self._reprojection = deque(maxlen=300)
        self._swapped: dict[int, tuple[float, str]] = {}  # left camera -> (monotonic time, hint) of the last one
        self._lock = threading.Lock()

    # ---- camera models ----------------------------------------------------------------------------------
    def camera(self, camera: int, header, width: int, height: int):
        """The ``CameraModel`` of camera ``camera``'s frame (``header``, size), or None (missing / invalid)."""
        from endoarss_ros.inference.camera_model import CameraInfoError, CameraModel, camera_info_dict

        match = self._infos.lookup(camera, _stamp_ns(header)) if self._infos.received_any[camera] else NO_INFO
        if match.info is None:
            self._state[camera] = MISSING  # one reference assignment: the 2D path stays as cheap as it was
            self._stats.count("camera_info.missing")
            return None
        self._stats.count(f"camera_info.matched_{match.kind}")
        key = _info_signature(match.info, width, height)
        cache = self._models[camera]
        model = cache.get(key)
        if model is None:
            try:
                model = CameraModel.from_fields(camera_info_dict(match.info)).for_image(width, height)
            except CameraInfoError as e:
                model = e
            if len(cache) >= _MODEL_CACHE:
                cache.clear()
            cache[key] = model
        if isinstance(model, CameraInfoError):
            self._stats.count("camera_info.invalid")
            self._set_state(camera, f"invalid: {model}")
            self._log(("camera_info", camera), "error",
                                      f"camera_info of {self._cameras[camera].label} (stamp "
                                      f"{match.stamp_ns}) refused, publishing 2D only: {model}")
            return None
        self._set_state(camera, "ok" if match.kind == "exact" else
                        "ok (no camera_info with the frame's stamp: the latest received is used)")
        return model

    def _set_state(self, camera: int, text: str) -> None:
        with self._lock:
            self._state[camera] = text

    # ---- one frame ------------------------------------------------------------------------------------------
    def mono(self, camera: int, header, frame, instruments) -> FrameGeometry | None:
        """Viewing rays of a single camera's frame (None without a valid camera_info: 2D as before)."""
        model = self.camera(camera, header, frame.width, frame.height)
        if model is None:
            return None
        from endoarss_ros.inference.stereo import mono_geometry

        t0 = time.perf_counter()
        geometry = mono_geometry(model, instruments, rectified=self._rectified[camera])
        self._stats.stages(geometry_rays=(time.perf_counter() - t0) * 1000.0)
        return FrameGeometry(self._header(header, model.frame_id), geometry)

    def stereo(self, left: int, header, frame, result, instruments, right_header, right_frame, right_result,
               right_instruments, *, instrument_classes, want_disparity: bool) -> FrameGeometry | None:
        """A pair's 3D fields for the left frame's instruments (rays only, or None, when the pair cannot be
        trusted: each reason counted as ``stereo.no_3d.<reason>``). ``instrument_classes``: the mask's
        instrument class ids (kept out of the tissue disparity)."""
        from endoarss_ros.inference.camera_model import CameraInfoError
        from endoarss_ros.inference.stereo import StereoGeometry, StereoRig, frame_gray

        right = self._right_of[left]
        left_model = self.camera(left, header, frame.width, frame.height)
        right_model = self.camera(right, right_header, right_frame.width, right_frame.height)
        if left_model is None or right_model is None:
            side = "left" if left_model is None else "right"
            return self._no_3d(left, header, frame, instruments, f"{side}_camera_info",
                               f"no valid camera_info for the {side} camera (see camera_info.*): 2D")
        if (frame.width, frame.height) != (right_frame.width, right_frame.height):
            return self._no_3d(left, header, frame, instruments, "size_mismatch",
                               f"left {frame.width}x{frame.height} and right {right_frame.width}x"
                               f"{right_frame.height} images differ in size")
        key = (id(left_model), id(right_model))  # the models are cached objects: one per camera_info and size
        cached = self._rigs.get(key)
        if cached is None:
            try:
                stereo = StereoGeometry(StereoRig.from_models(left_model, right_model),
                                        rectified_input=self._rectified[left],
                                        instrument_classes=instrument_classes)
            except CameraInfoError as e:
                stereo = e
            if len(self._rigs) >= _MODEL_CACHE:
                self._rigs.clear()
            cached = self._rigs[key] = (stereo, left_model, right_model)  # keeps the ids' objects alive
        stereo = cached[0]
        if isinstance(stereo, CameraInfoError):
            return self._no_3d(left, header, frame, instruments, "invalid_pair", f"camera_infos refused as a "
                               f"stereo pair: {stereo}")
        out = stereo.process(frame_gray(frame), frame_gray(right_frame), result.mask, right_result.mask,
                             instruments, right_instruments, want_disparity=want_disparity)
        self._account(left, out, instruments, right_instruments, stereo)
        h = self._header(header, left_model.frame_id)
        disparity = disparity_fields(h, out, stereo) if want_disparity and out.disparity is not None else None
        return FrameGeometry(h, out.instruments, disparity=disparity)

    def _no_3d(self, left: int, header, frame, instruments, reason: str, text: str) -> FrameGeometry | None:
        self._stats.count(f"stereo.no_3d.{reason}")
        with self._lock:
            self._stereo_state[left] = f"no 3D: {text}"
        self._log(("stereo", left, reason), "warning",
                                  f"stereo pair of {self._cameras[left].label}: {text}")
        if reason == "left_camera_info":
            return None
        return self.mono(left, header, frame, instruments)

    def _account(self, left: int, out, instruments, right_instruments, stereo) -> None:
        s = self._stats
        s.stages(**{f"stereo_{name}": ms for name, ms in out.stage_ms.items()},
                 stereo_total=sum(out.stage_ms.values()))
        with_3d = sum(bool(g.has_3d) for g in out.instruments)
        s.count("stereo.pairs_processed")
        s.count("stereo.instruments", len(instruments))
        s.count("stereo.instruments_3d", with_3d)
        s.count("stereo.matches_rejected", out.rejected)
        text = f"ok: {with_3d} of {len(instruments)} instruments in 3D"
        if instruments and right_instruments and not with_3d and not out.rejected:
            swapped = negative_disparity_hint(stereo, instruments, right_instruments)
            if swapped:
                s.count("stereo.negative_disparity")
                text = f"no 3D: {swapped}"
                with self._lock:
                    self._swapped[left] = (time.monotonic(), swapped)
                self._log(("stereo", left, "negative"), "warning",
                                          f"stereo pair of {self._cameras[left].label}: {swapped}")
        with self._lock:
            self._reprojection.extend(float(e) for e in out.reprojection_errors_px if np.isfinite(e))
            self._stereo_state[left] = text

    @staticmethod
    def _header(header, frame_id: str):
        from std_msgs.msg import Header

        return Header(stamp=header.stamp, frame_id=frame_id or header.frame_id)

    # ---- markers ----------------------------------------------------------------------------------------
    def markers(self, camera: int, geometry: FrameGeometry, instruments, class_names, colors) -> dict:
        from endoarss_ros.inference.markers import instrument_marker_fields

        fields, self._shown_ids[camera] = instrument_marker_fields(
            geometry.header, instruments, geometry.instruments, class_names, self._shown_ids[camera], colors=colors)
        return fields

    # ---- diagnostics ------------------------------------------------------------------------------------
    def diagnostics(self, pairing: dict | None) -> tuple[dict[str, str], list[str]]:
        """/diagnostics values and the warnings that make the node's level WARN."""
        values, warnings = {}, []
        with self._lock:
            states = list(self._state)
            stereo_states = dict(self._stereo_state)
            swapped = dict(self._swapped)
            errors = list(self._reprojection)
        for cam, state in zip(self._cameras, states):
            values[f"camera_info.{cam.label}"] = state
            values[f"camera_info.{cam.label}.topic"] = self._infos.topic_names()[cam.index]
            if state.startswith("invalid"):
                warnings.append(f"camera_info of {cam.label} {state}")
        counters = self._stats.snapshot()["counters"]
        if self._right_of:
            values["stereo.pairs"] = ", ".join(f"{self._cameras[l].label}:{self._cameras[r].label}"
                                               for l, r in self._right_of.items())
            for left, state in stereo_states.items():
                values[f"stereo.{self._cameras[left].label}"] = state
                if state.startswith("no 3D"):
                    warnings.append(f"stereo {self._cameras[left].label}: {state}")
                elif left in swapped and time.monotonic() - swapped[left][0] < SWAP_WARNING_S:
                    # a swapped pair shows only on frames whose instruments line up: keep saying it a while
                    ago = time.monotonic() - swapped[left][0]
                    warnings.append(f"stereo {self._cameras[left].label}: {ago:.0f} s ago {swapped[left][1]}")
            instruments = counters.get("stereo.instruments", 0)
            values["stereo.3d_success_rate"] = (f"{counters.get('stereo.instruments_3d', 0) / instruments:.3f}"
                                                if instruments else "")
            p50, p95 = percentile(errors, 0.5), percentile(errors, 0.95)
            values["stereo.reprojection_px_p50"] = "" if p50 is None else f"{p50:.2f}"
            values["stereo.reprojection_px_p95"] = "" if p95 is None else f"{p95:.2f}"
            for key, value in (pairing or {}).items():
                values[f"stereo.{key}"] = "" if value is None else str(value)
            if pairing and pairing["matched"] == 0 and pairing["unmatched_left"] + pairing["unmatched_right"] >= 4:
                gap = pairing.get("latest_stamp_gap_ms")
                warnings.append("stereo: no left and right frames paired yet (latest stamp difference "
                                f"{'?' if gap is None else f'{gap:.1f}'} ms; stereo.tolerance_ms "
                                f"{self._settings.stereo_tolerance_ms:g})")
        return values, warnings


def negative_disparity_hint(stereo, instruments, right_instruments) -> str | None:
    """When the pair's instruments line up on rectified rows only at negative disparities, the images (or the
    camera_infos) are swapped; say so (None otherwise). ``stereo``: the pair's ``StereoGeometry``. A few points:
    cheap."""
    left_model, right_model = stereo.rig.left, stereo.rig.right
    rectified = stereo.rectified_input
    lt = left_model.rectify_points(np.array([i.tip for i in instruments], np.float64), rectified=rectified)
    rt = right_model.rectify_points(np.array([i.tip for i in right_instruments], np.float64), rectified=rectified)
    signs = []
    for li, a in zip(instruments, lt):
        rows = [(abs(a[1] - b[1]), a[0] - b[0]) for ri, b in zip(right_instruments, rt) if ri.class_id == li.class_id]
        if rows:
            row_error, d = min(rows)
            if row_error <= stereo.settings.max_row_error_px * stereo.scale:
                signs.append(d)
    if signs and all(d < -stereo.d_min for d in signs):
        return (f"the instruments match only at negative disparities ({', '.join(f'{d:.1f}' for d in signs)} px): "
                "left and right images swapped?")
    return None


def disparity_fields(header, out, stereo) -> dict:
    """``stereo_msgs/DisparityImage`` of the tissue disparity (the downscaled rectified left image; invalid
    pixels and instruments below ``min_disparity``, as the message defines them)."""
    scale = float(out.disparity_scale)
    image = np.asarray(out.disparity, np.float32)
    d_min, d_max = stereo.d_min / scale, stereo.d_max / scale
    invalid = d_min - 1.0
    image = np.where(np.isfinite(image), image, invalid).astype(np.float32)
    h, w = image.shape
    return {"header": header,
            "image": {"header": header, "height": h, "width": w, "encoding": "32FC1", "is_bigendian": 0,
                      "step": w * 4, "data": np.ascontiguousarray(image).view(np.uint8).reshape(-1)},
            "f": float(stereo.rig.focal / scale), "t": float(stereo.rig.baseline_m),
            "valid_window": {"x_offset": 0, "y_offset": 0, "height": h, "width": w, "do_rectify": False},
            "min_disparity": float(d_min), "max_disparity": float(d_max), "delta_d": 1.0 / 16.0}

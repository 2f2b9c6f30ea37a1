"""The node's temporal activity model: loaded at configure (parameter ``temporal_model``), one session per camera,
the ``~/reset_temporal`` service (std_srvs/Trigger) and the temporal part of /diagnostics.

A temporal model the user asked for either loads and fits the frame model, or configure fails with one line
saying why: the frame-wise EMA is never a silent stand-in for it. Sessions live from configure to cleanup and are
reset on lifecycle deactivate (so deactivate -> activate starts over) and on the service; their counters carry
across resets, for /diagnostics.
"""
from __future__ import annotations

from pathlib import Path

from endoarss_ros.inference.temporal_activity import (
    SOURCE_FRAME,
    SOURCE_FRAME_EMA,
    SOURCE_TEMPORAL,
    TemporalModelError,
    TemporalSession,
    TemporalSettings,
    load_temporal_for,
)
from endoarss_ros.inference.weights_path import resolve_model_path

SERVICE = "~/reset_temporal"


def stamp_seconds(header) -> float:
    """A message header's stamp in seconds: the temporal model's clock."""
    return header.stamp.sec + header.stamp.nanosec * 1e-9


class TemporalSessions:
    """Created with the node (the service exists in every state; it answers ``success: false`` when there is
    nothing to reset)."""

    def __init__(self, node):
        from std_srvs.srv import Trigger

        self.node = node
        self.path: Path | None = None
        self.binding = None
        self.sessions: list[TemporalSession] = []
        self.labels: list[str] = []
        self.service = node.create_service(Trigger, SERVICE, self._on_reset)

    def configure(self, parameter: str, frame_weights, seg_classes, activity_classes, camera_labels,
                  input_size=None) -> str | None:
        """Load the temporal model named by the parameter ('' = none) for this frame model (run at
        ``input_size`` when that overrides the weights' own); returns why it cannot be used (None when it can, or
        when none was asked for)."""
        self.release()
        if not parameter.strip():
            return None
        path = resolve_model_path(parameter)
        try:
            model, binding = load_temporal_for(path, frame_weights, seg_classes, activity_classes, input_size)
        except TemporalModelError as e:  # missing, damaged, foreign or mismatched: one line, configure fails
            return f"cannot use the temporal model (parameter temporal_model={parameter!r}): {e}"
        settings = TemporalSettings.from_binding(binding)
        self.path, self.binding, self.labels = path, binding, list(camera_labels)
        self.sessions = [TemporalSession(model, binding, settings) for _ in self.labels]
        self.node.get_logger().info(
            f"temporal model {path}: {len(binding.feature_names)} features, tick {binding.tick_s} s, warm after "
            f"{settings.warmup_ticks} ticks, reset on gaps > {settings.max_gap_s} s; {len(self.sessions)} session(s)")
        return None

    def session(self, camera: int) -> TemporalSession | None:
        return self.sessions[camera] if camera < len(self.sessions) else None

    def reset_all(self, reason: str) -> int:
        for s in self.sessions:
            s.reset(reason)
        return len(self.sessions)

    def release(self) -> None:
        self.path, self.binding, self.sessions, self.labels = None, None, [], []

    def _on_reset(self, request, response):
        if not self.sessions:
            response.success = False
            response.message = ("no temporal model is loaded (parameter temporal_model is empty, or the node is not "
                                "configured)")
            return response
        n = self.reset_all("service request")
        response.success, response.message = True, f"reset the temporal model of {n} camera(s)"
        self.node.get_logger().info(f"{SERVICE}: {response.message}")
        return response

    def diagnostics(self, smoothing: bool = True) -> dict[str, str]:
        """``temporal_model`` and, per camera, ``temporal.<camera>.<key>`` (warm, ticks, resets, source, ...);
        ``smoothing``: whether the fallback is the EMA (else the frame's own activity)."""
        info = {"temporal_model": str(self.path) if self.path else ""}
        fallback = SOURCE_FRAME_EMA if smoothing else SOURCE_FRAME
        for label, s in zip(self.labels, self.sessions):
            d = s.diagnostics()
            d["source"] = SOURCE_TEMPORAL if d["warm"] == "true" else fallback
            info.update({f"temporal.{label}.{k}": v for k, v in d.items()})
        return info

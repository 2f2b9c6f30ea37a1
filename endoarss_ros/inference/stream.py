"""One camera's state across frames, the same in the node, the offline replay and the bench: the activity
smoother, the optional temporal model session, the instrument tracker and the status thresholds.
``CameraStream.update`` turns one engine result into everything published for the frame but the mask: the
activity (the temporal model's once it is warm, else the frame-wise EMA, which always runs so it is ready as the
fallback), status (quality, uncertainty), tracked instruments, and the annotated overlay when the engine made one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import instruments as inst
from . import quality
from .annotate import annotate
from .smoother import DEFAULT_SMOOTHING, ActivitySmoother, Smoothing
from .status import FrameStatus, StatusThresholds, frame_status, model_uncertainty
from .temporal_activity import SOURCE_FRAME, SOURCE_FRAME_EMA, SOURCE_TEMPORAL, ActivityClock, TemporalEstimate
from .temporal_features import frame_features, usable_for_temporal


@dataclass(frozen=True)
class StreamSettings:
    smoothing: Smoothing = DEFAULT_SMOOTHING
    thresholds: StatusThresholds = field(default_factory=StatusThresholds)
    instruments: inst.InstrumentSettings = field(default_factory=inst.InstrumentSettings)
    annotate: bool = True  # draw instruments, activity, status and legend on the overlay


class PublishedActivity(NamedTuple):
    probabilities: np.ndarray  # float32 (K,): the temporal posterior or the smoothed frame-wise probabilities
    class_id: int
    source: str  # temporal.SOURCE_*: which estimator produced it (Activity.source)
    duration_s: float  # how long class_id has held in stamp time (NaN when update got no stamp)


def published_activity(estimate: TemporalEstimate | None, ema, smoothing: bool = True
                       ) -> tuple[np.ndarray, int, str]:
    """What the node publishes for a frame, the one definition (the node, replay, and the offline scoring of
    ``bag.temporal_scoring`` use it): the temporal model's committed label and posterior once its session is warm
    and has a label, else the frame-wise result (``ema``: the ``ActivitySmoother``'s output; ``smoothing``:
    whether that is the EMA or the frame's own probabilities). Returns (probabilities, class id, source)."""
    if estimate is not None and estimate.warm and estimate.class_id >= 0:
        return estimate.probabilities, estimate.class_id, SOURCE_TEMPORAL
    return ema.probabilities, ema.class_id, SOURCE_FRAME_EMA if smoothing else SOURCE_FRAME


class StreamOutput(NamedTuple):
    activity: PublishedActivity
    status: FrameStatus  # without timing: ``status.with_timing`` when it is published
    instruments: list[inst.Instrument]
    overlay: np.ndarray | None  # the engine's overlay, annotated unless settings say no (None when there was none)
    compute_s: float  # time spent here
    features: np.ndarray | None = None  # the frame's temporal features (``temporal_features.frame_features``)
    temporal: TemporalEstimate | None = None  # the temporal session's estimate, when there is one
    ema_class_id: int = -1  # the frame-wise + EMA label (what is published without a warm temporal model)


class CameraStream:
    """Per camera. ``seg_classes`` / ``activity_classes``: the published names; ``colors``: the class colours
    (``engine.colors``); ``temporal``: a ``temporal.TemporalSession`` for this camera, or None (frame-wise EMA
    only). Raises ValueError when ``settings.instruments.classes`` names an unknown class."""

    def __init__(self, seg_classes, activity_classes, colors: np.ndarray, settings: StreamSettings | None = None,
                 temporal=None):
        self.seg_classes, self.activity_classes = list(seg_classes), list(activity_classes)
        self.colors = np.asarray(colors, np.uint8)
        self.settings = settings or StreamSettings()
        self.instrument_classes = inst.resolve_classes(self.settings.instruments.classes, self.seg_classes)
        self.smoother = ActivitySmoother.from_settings(len(self.activity_classes), self.settings.smoothing)
        self.tracker = inst.InstrumentTracker(self.settings.instruments.max_match_distance,
                                              self.settings.instruments.max_missed_frames)
        self.temporal = temporal
        self.clock = ActivityClock()
        self._image_format: tuple | None = None  # (H, W, encoding) of the last frame

    def reconfigure(self, settings: StreamSettings) -> None:
        """New settings (live parameters): the smoother restarts if smoothing changed, the tracker if tracking
        did; thresholds apply from the next frame."""
        old, self.settings = self.settings, settings
        if settings.instruments.classes != old.instruments.classes:
            self.instrument_classes = inst.resolve_classes(settings.instruments.classes, self.seg_classes)
        if settings.smoothing != old.smoothing:
            self.smoother = ActivitySmoother.from_settings(len(self.activity_classes), settings.smoothing)
        s, o = settings.instruments, old.instruments
        if (s.max_match_distance, s.max_missed_frames) != (o.max_match_distance, o.max_missed_frames):
            self.tracker = inst.InstrumentTracker(s.max_match_distance, s.max_missed_frames)

    def update(self, frame, result, stamp_s: float | None = None) -> StreamOutput:
        """``frame``: the ``RawFrame`` given to the engine; ``result``: its ``FrameResult``; ``stamp_s``: the
        image's header stamp in seconds (the temporal clock; needed with a temporal session)."""
        t0 = time.perf_counter()
        s = self.settings
        self._follow_image_format(frame)
        rgb = quality.analysis_rgb(frame)
        measures = quality.measure(frame, rgb).as_dict()
        measures.update(model_uncertainty(result.activity_probs, result.confidence,
                                          s.thresholds.pixel_confidence_threshold))
        status = frame_status(measures, s.thresholds)
        features = frame_features(result, len(self.seg_classes), status.measures)
        activity, estimate, ema_class_id = self._activity(result.activity_probs, features,
                                                          usable_for_temporal(status), stamp_s)
        found = inst.extract(result.mask, self.instrument_classes, confidence=result.confidence, image=rgb,
                             min_area_fraction=s.instruments.min_area_fraction)
        tracked = self.tracker.update(found, result.mask.shape)
        overlay = result.overlay
        if overlay is not None and s.annotate:
            overlay = annotate(overlay, instruments=tracked, status=status,
                               activity=self.activity_classes[activity.class_id],
                               confidence=float(activity.probabilities[activity.class_id]),
                               names=self.seg_classes, colors=self.colors)
        return StreamOutput(activity, status, tracked, overlay, time.perf_counter() - t0, features, estimate,
                            ema_class_id)

    def _follow_image_format(self, frame) -> None:
        """A change of resolution or encoding resets the temporal session: features of another image (another
        camera mode, a switched source) are not the same signal, and their tick averages would mix the two."""
        fmt = (getattr(frame, "height", None), getattr(frame, "width", None), getattr(frame, "encoding", None))
        old, self._image_format = self._image_format, fmt
        if old is not None and fmt != old and self.temporal is not None:
            self.temporal.reset(f"image format changed ({old[1]}x{old[0]} {old[2]} -> {fmt[1]}x{fmt[0]} {fmt[2]})")

    def _activity(self, probs, features, usable: bool, stamp_s: float | None):
        ema = self.smoother.update(probs)  # always: the fallback is ready when the temporal model is not
        estimate = None
        if self.temporal is not None:
            if stamp_s is None:
                raise ValueError("CameraStream.update needs the frame's stamp_s with a temporal session")
            estimate = self.temporal.update(stamp_s, features, usable)
        probabilities, class_id, source = published_activity(estimate, ema, self.smoother.enabled)
        duration = self.clock.update(stamp_s, class_id) if stamp_s is not None else float("nan")
        return PublishedActivity(probabilities, class_id, source, duration), estimate, ema.class_id

    def reset_temporal(self, reason: str) -> bool:
        """Reset the temporal session (False when there is none)."""
        if self.temporal is None:
            return False
        self.temporal.reset(reason)
        return True


"""One camera's state across frames, the same in the node, the offline replay and the bench: the activity
smoother, the instrument tracker and the status thresholds. ``CameraStream.update`` turns one engine result
into everything published for the frame but the mask: smoothed activity, status (quality, uncertainty), tracked
instruments, and the annotated overlay when the engine made one.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from . import instruments as inst
from . import quality
from .annotate import annotate
from .smoother import DEFAULT_SMOOTHING, ActivityEstimate, ActivitySmoother, Smoothing
from .status import FrameStatus, StatusThresholds, frame_status, model_uncertainty


@dataclass(frozen=True)
class StreamSettings:
    smoothing: Smoothing = DEFAULT_SMOOTHING
    thresholds: StatusThresholds = field(default_factory=StatusThresholds)
    instruments: inst.InstrumentSettings = field(default_factory=inst.InstrumentSettings)
    annotate: bool = True  # draw instruments, activity, status and legend on the overlay


class StreamOutput(NamedTuple):
    activity: ActivityEstimate
    status: FrameStatus  # without timing: ``status.with_timing`` when it is published
    instruments: list[inst.Instrument]
    overlay: np.ndarray | None  # the engine's overlay, annotated unless settings say no (None when there was none)
    compute_s: float  # time spent here


class CameraStream:
    """Per camera. ``seg_classes`` / ``activity_classes``: the published names; ``colors``: the class colours
    (``engine.colors``). Raises ValueError when ``settings.instruments.classes`` names an unknown class."""

    def __init__(self, seg_classes, activity_classes, colors: np.ndarray, settings: StreamSettings | None = None):
        self.seg_classes, self.activity_classes = list(seg_classes), list(activity_classes)
        self.colors = np.asarray(colors, np.uint8)
        self.settings = settings or StreamSettings()
        self.instrument_classes = inst.resolve_classes(self.settings.instruments.classes, self.seg_classes)
        self.smoother = ActivitySmoother.from_settings(len(self.activity_classes), self.settings.smoothing)
        self.tracker = inst.InstrumentTracker(self.settings.instruments.max_match_distance,
                                              self.settings.instruments.max_missed_frames)

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

    def update(self, frame, result) -> StreamOutput:
        """``frame``: the ``RawFrame`` given to the engine; ``result``: its ``FrameResult``."""
        t0 = time.perf_counter()
        s = self.settings
        activity = self.smoother.update(result.activity_probs)
        rgb = quality.analysis_rgb(frame)
        measures = quality.measure(frame, rgb).as_dict()
        measures.update(model_uncertainty(result.activity_probs, result.confidence,
                                          s.thresholds.pixel_confidence_threshold))
        status = frame_status(measures, s.thresholds)
        found = inst.extract(result.mask, self.instrument_classes, confidence=result.confidence, image=rgb,
                             min_area_fraction=s.instruments.min_area_fraction)
        tracked = self.tracker.update(found, result.mask.shape)
        overlay = result.overlay
        if overlay is not None and s.annotate:
            overlay = annotate(overlay, instruments=tracked, status=status,
                               activity=self.activity_classes[activity.class_id],
                               confidence=float(activity.probabilities[activity.class_id]),
                               names=self.seg_classes, colors=self.colors)
        return StreamOutput(activity, status, tracked, overlay, time.perf_counter() - t0)


"""The temporal activity estimate of one camera: the streaming session over the clock's ticks
(``model.temporal_clock``, the one definition of frames -> ticks, shared with training and evaluation).

The session (``TemporalSession``) steps the model once per closed tick: a tick closes when the first frame of a
later tick arrives, and each tick skipped over (a gap) is stepped as missing. Between ticks every frame gets the
last tick's decision. The decision is evidence-gated: the label switches only when the log-odds of a challenger
over the current label, summed over ticks (a CUSUM that forgets evidence going the other way), pass
``switch_evidence``. A frame at most ``max_backstep_s`` older than the newest one is out of order: dropped and
counted. The session resets (state, clock and decision) on a gap longer than ``max_gap_s``, on time going
further backwards (a looping bag), on request (the node's reset service, lifecycle deactivate/activate); for
``warmup_ticks`` ticks after a reset its estimate is not ``warm`` and the caller publishes the frame-wise result.
"""
from __future__ import annotations

import dataclasses
import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..model.temporal_clock import DEFAULT_SWITCH_EVIDENCE, tick_of

SOURCE_TEMPORAL = "temporal"  # Activity.source: the learned temporal model
SOURCE_FRAME_EMA = "frame_ema"  # the frame-wise probabilities with EMA + hysteresis
SOURCE_FRAME = "frame"  # the frame's own probabilities (smoothing off)
# This many frames in a row with one stamp (zero or constant header stamps; a camera never repeats a stamp): the
# clock cannot tick, the session never warms up, and the node would publish frame + EMA forever;
# ``stamps_warning`` says so.
STALLED_STAMP_FRAMES = 10


@dataclass(frozen=True)
class TemporalSettings:
    """``tick_s``: the clock (must be the model's, ``from_binding`` takes it from the weights file);
    ``max_gap_s``: a longer gap between frames resets the session, a shorter one is stepped through with missing
    ticks; ``warmup_ticks``: ticks after a reset before the estimate is ``warm``; ``switch_evidence``: summed
    log-odds (nats) a challenger needs over the current label to take over (0: argmax of every tick);
    ``max_backstep_s``: a frame older than the newest by at most this is dropped as out of order, by more it is
    time going backwards (a looping bag) and resets the session."""

    tick_s: float = 0.5
    max_gap_s: float = 60.0
    max_backstep_s: float = 1.0
    warmup_ticks: int = 6
    switch_evidence: float = DEFAULT_SWITCH_EVIDENCE

    def __post_init__(self):
        if not self.tick_s > 0:
            raise ValueError(f"tick_s must be > 0, got {self.tick_s}")
        if self.max_gap_s < self.tick_s:
            raise ValueError(f"max_gap_s ({self.max_gap_s}) must be at least tick_s ({self.tick_s})")
        if self.warmup_ticks < 0 or self.switch_evidence < 0 or self.max_backstep_s < 0:
            raise ValueError("warmup_ticks, switch_evidence and max_backstep_s must be >= 0")

    @classmethod
    def from_binding(cls, binding, **overrides) -> TemporalSettings:
        """The model's tick, the session settings saved with it, then ``overrides`` (None values ignored)."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in (binding.session_settings or {}).items() if k in known}
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["tick_s"] = binding.tick_s
        return cls(**values)


class ActivityClock:
    """How long the current label has held, in stamp time: restarts when the label changes, on ``restart`` and
    when time goes backwards."""

    def __init__(self):
        self.restart()

    def restart(self) -> None:
        self.label: int | None = None
        self.since_s = math.nan

    def update(self, stamp_s: float, label: int) -> float:
        if label != self.label or not stamp_s >= self.since_s:
            self.label, self.since_s = label, stamp_s
        return float(stamp_s - self.since_s)


class EvidenceGate:
    """The committed label of a stream of posteriors: a challenger takes over when its summed log-odds over
    the current label (CUSUM, floored at 0) pass ``threshold``; the first posterior sets the label."""

    def __init__(self, num_classes: int, threshold: float):
        self.threshold = float(threshold)
        self.evidence = np.zeros(num_classes, np.float64)
        self.label: int | None = None

    def update(self, probs: np.ndarray) -> int:
        logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-9, 1.0))
        if self.label is None:
            self.label = int(np.argmax(logp))
            return self.label
        self.evidence = np.maximum(0.0, self.evidence + logp - logp[self.label])
        best = int(np.argmax(self.evidence))
        if best != self.label and self.evidence[best] >= self.threshold and logp[best] > logp[self.label]:
            self.label = best
            self.evidence[:] = 0.0
        return self.label


class TemporalEstimate(NamedTuple):
    probabilities: np.ndarray  # float32 (K,): the last closed tick's posterior (uniform before the first)
    class_id: int  # the committed label (evidence-gated); -1 before the first tick closed
    source: str  # SOURCE_TEMPORAL when warm, else SOURCE_FRAME_EMA: publish the frame-wise result
    duration_s: float  # how long class_id has held (stamp time)
    warm: bool
    ticks: int  # ticks stepped since the last reset


@dataclass
class _Tick:
    index: int
    sum: np.ndarray
    usable: int = 0


class TemporalSession:
    """One camera's temporal model state; thread-safe (``reset`` may come from another thread)."""

    def __init__(self, model, binding, settings: TemporalSettings | None = None):
        self.model, self.binding = model, binding
        self.settings = settings = settings or TemporalSettings.from_binding(binding)
        if abs(settings.tick_s - binding.tick_s) > 1e-9:
            raise ValueError(f"the session's tick ({settings.tick_s} s) is not the model's ({binding.tick_s} s); "
                             "use TemporalSettings.from_binding")
        self.num_classes = len(binding.class_names)
        self.feature_dim = len(binding.feature_names)
        self.counts: Counter = Counter()  # totals since construction, for diagnostics
        self.resets_by_reason: Counter = Counter()
        self.last_reset_reason = "start"
        self.repeated_stamp_run = 0  # frames in a row whose stamp equals the one before (stalled stamps)
        self._lock = threading.Lock()
        self._restart()

    def _restart(self) -> None:
        self.state = self.model.init_state(1)
        self.origin_s: float | None = None
        self.last_stamp_s: float | None = None
        self.tick: _Tick | None = None
        self.gate = EvidenceGate(self.num_classes, self.settings.switch_evidence)
        self.clock = ActivityClock()
        self.probabilities = np.full(self.num_classes, 1.0 / self.num_classes, np.float32)
        self.label = -1

    @property
    def ticks(self) -> int:
        return self.state.ticks

    @property
    def warm(self) -> bool:
        return self.state.ticks >= max(1, self.settings.warmup_ticks)

    def reset(self, reason: str) -> None:
        """Start over: model state, clock and decision (counted by reason)."""
        with self._lock:
            self._reset(reason)

    def _reset(self, reason: str) -> None:
        self.counts["resets"] += 1
        self.resets_by_reason[reason.split(" (")[0]] += 1
        self.last_reset_reason = reason
        self._restart()

    def update(self, stamp_s: float, features, usable: bool) -> TemporalEstimate:
        """One frame (stamp in seconds, ``temporal_features.frame_features``, the status's usable flag)."""
        with self._lock:
            self.counts["frames"] += 1
            x = np.asarray(features, np.float32).reshape(-1)
            if x.shape[0] != self.feature_dim or not np.all(np.isfinite(x)):
                self.counts["frames_bad_features"] += 1  # counted, and the frame is not averaged in
                usable = False
            elif not usable:
                self.counts["frames_unusable"] += 1
            stamp_s, last = float(stamp_s), self.last_stamp_s
            repeated = last is not None and stamp_s == last
            self.repeated_stamp_run = self.repeated_stamp_run + 1 if repeated else 0
            self.counts["frames_repeated_stamp"] += int(repeated)
            if last is not None and last - self.settings.max_backstep_s <= stamp_s < last:
                self.counts["frames_out_of_order"] += 1  # its tick may be closed already: not averaged in
                return self._estimate(last)
            self._advance(stamp_s)
            if usable:
                self.tick.sum += x
                self.tick.usable += 1
            return self._estimate(stamp_s)

    def _advance(self, stamp_s: float) -> None:
        """Close the ticks that ``stamp_s`` has left behind (resetting first on a long gap or backwards time)."""
        last = self.last_stamp_s
        if last is not None and stamp_s < last:
            self._reset(f"time went backwards ({last:.3f} -> {stamp_s:.3f} s)")
        elif last is not None and stamp_s - last > self.settings.max_gap_s:
            self._reset(f"gap of {stamp_s - last:.1f} s > max_gap_s {self.settings.max_gap_s} s")
        self.last_stamp_s = stamp_s
        if self.origin_s is None:
            self.origin_s = stamp_s
        index = tick_of(stamp_s, self.origin_s, self.settings.tick_s)
        if self.tick is None:
            self.tick = _Tick(index, np.zeros(self.feature_dim, np.float64))
            return
        if index == self.tick.index:
            return
        self._step(self.tick)
        skipped = index - self.tick.index - 1
        if skipped > 0:
            self.counts["gaps"] += 1
            self.counts["missing_ticks_in_gaps"] += skipped
            for _ in range(skipped):
                self._step(None)
        self.tick = _Tick(index, np.zeros(self.feature_dim, np.float64))

    def _step(self, tick: _Tick | None) -> None:
        missing = tick is None or tick.usable == 0
        x = np.zeros((1, self.feature_dim), np.float32) if missing else (tick.sum / tick.usable)[None].astype(
            np.float32)
        logits = self.model.step(self.state, x, np.array([missing]))[0].astype(np.float64)
        p = np.exp(logits - logits.max())
        self.probabilities = (p / p.sum()).astype(np.float32)
        self.label = self.gate.update(self.probabilities)
        self.counts["ticks"] += 1
        self.counts["ticks_missing"] += int(missing)

    def _estimate(self, stamp_s: float) -> TemporalEstimate:
        duration = self.clock.update(stamp_s, self.label)
        warm = self.warm
        return TemporalEstimate(self.probabilities.copy(), self.label, SOURCE_TEMPORAL if warm else SOURCE_FRAME_EMA,
                                duration, warm, self.state.ticks)

    def stamps_warning(self) -> str:
        """Why the session cannot tick when frames keep coming with one stamp (zero or constant header stamps),
        '' otherwise."""
        if self.repeated_stamp_run + 1 < STALLED_STAMP_FRAMES or self.last_stamp_s is None:
            return ""
        zero = " (zero stamps)" if self.last_stamp_s == 0 else ""
        return (f"stamps not advancing: the last {self.repeated_stamp_run + 1} frames all have stamp "
                f"{self.last_stamp_s:.3f} s{zero}; the temporal model cannot tick and the published activity stays "
                "frame + EMA until the header stamps advance")

    def diagnostics(self) -> dict[str, str]:
        """Key/values for /diagnostics and summaries."""
        with self._lock:
            c = self.counts
            return {"warm": str(self.warm).lower(), "ticks_since_reset": str(self.state.ticks),
                    "ticks": str(c["ticks"]), "ticks_missing": str(c["ticks_missing"]),
                    "gaps": str(c["gaps"]), "resets": str(c["resets"]),
                    "resets_by_reason": ", ".join(f"{k} {v}" for k, v in sorted(self.resets_by_reason.items())),
                    "last_reset": self.last_reset_reason, "frames": str(c["frames"]),
                    "frames_unusable": str(c["frames_unusable"]),
                    "frames_bad_features": str(c["frames_bad_features"]),
                    "frames_out_of_order": str(c["frames_out_of_order"]),
                    "frames_repeated_stamp": str(c["frames_repeated_stamp"]),
                    "stamps_warning": self.stamps_warning(),
                    "state_bytes": str(self.state.nbytes)}


def expected_binding(frame_weights: str | Path, seg_classes: Sequence[str], activity_classes: Sequence[str],
                     input_size: Sequence[int] | None = None):
    """What a temporal model must be bound to, to run on this frame model (its own class names; ``input_size``:
    the working size when it overrides the weights' own, ``frame_model_identity``)."""
    from endoarss_ros.model.temporal_tcn import TemporalBinding

    from .temporal_features import feature_names, frame_model_identity

    return TemporalBinding(frame_model_identity(frame_weights, input_size), tuple(activity_classes),
                           tuple(feature_names(seg_classes, activity_classes)), None)


class TemporalModelError(ValueError):
    """A temporal weights file that cannot be used with this frame model; the message is one line."""


def load_temporal_for(path: str | Path, frame_weights: str | Path, seg_classes: Sequence[str],
                      activity_classes: Sequence[str], input_size: Sequence[int] | None = None):
    """``(model, binding)`` of a temporal weights file checked against the frame model it will read from.
    Raises ``TemporalModelError`` with one line (missing, damaged, not a temporal model, or bound to another
    frame model, classes, feature layout: naming both sides)."""
    from endoarss_ros.model.temporal_tcn import load_temporal

    path = Path(path)
    if not path.is_file():
        why = "it is a directory" if path.is_dir() else "no such file"
        raise TemporalModelError(f"temporal model {path.absolute()}: {why}")
    try:
        return load_temporal(path, expect=expected_binding(frame_weights, seg_classes, activity_classes,
                                                           input_size))
    except (OSError, ValueError, RuntimeError) as e:  # WeightsError, TemporalBindingError, unreadable files
        lines = str(e).strip().splitlines()
        raise TemporalModelError(lines[0] if lines else f"temporal model {path}: {type(e).__name__}") from e


__all__ = ["SOURCE_FRAME", "SOURCE_FRAME_EMA", "SOURCE_TEMPORAL", "STALLED_STAMP_FRAMES", "ActivityClock",
           "EvidenceGate", "TemporalEstimate", "TemporalModelError", "TemporalSession", "TemporalSettings",
           "expected_binding", "load_temporal_for"]

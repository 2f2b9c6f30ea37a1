"""Out of the patient: the per-frame out-of-body decision, its state with hysteresis, and the privacy gate.

One definition, shared by the node, replay, replay-many, the demo and ``endoarss scrub``:

* ``frame_features``: what the detector looks at, cheap and independent of the frame model: hue histogram,
  saturation / value statistics and a 4x4 colour thumbnail of the analysis image (``quality.analysis_rgb``), plus
  the image-quality measures the status computes anyway (tissue fraction, brightness, ...). Not the network's
  class token: the detector must run where the frame model does not (``scrub``), and must not change when the
  frame model is retrained; docs in README ("Out of the patient").
* ``OutOfBodyDetector``: a two-layer perceptron on those features (weights: safetensors, numpy inference).
* ``OutOfBodyState``: per camera. It *enters* at once, on the first frame that looks outside, and *leaves* only
  after ``exit_frames`` in-body frames in a row; a frame without a decision (undecodable, dropped, the detector
  failed) is *undecided*: it never counts towards leaving.
* The gate: while out of body or undecided, every image output of the frame is blanked (``Decision.gated``),
  unless the gate is turned off knowingly (``privacy_gate: false`` / ``--no-privacy-gate``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

DEFAULT_OUT_OF_BODY_MODEL = "models/demo/endoarss_out_of_body.safetensors"
FEATURE_VERSION = "oob-features-1"
HUE_BINS = 12
GRID = 4  # the colour thumbnail is GRID x GRID
QUALITY_MEASURES = ("brightness", "dark_fraction", "overexposed_fraction", "haze", "blood_fraction",
                    "tissue_fraction", "sharpness")
OUT_OF_BODY_LABEL = "out_of_body"  # Activity.label while out of body
SOURCE_OUT_OF_BODY = "out_of_body"  # Activity.source while out of body (msg/Activity.msg)
OUT_OF_BODY_CLASS_ID = 65535  # Activity.class_id while out of body: names no activity


def feature_names() -> list[str]:
    return ([f"hue_{i}" for i in range(HUE_BINS)] + ["sat_mean", "sat_std", "val_mean", "val_std"]
            + ["chroma_r", "chroma_g", "chroma_b"]
            + [f"grid_{y}{x}_{c}" for y in range(GRID) for x in range(GRID) for c in "rgb"]
            + [f"q_{m}" for m in QUALITY_MEASURES])


def frame_features(rgb: np.ndarray, measures: dict[str, float]) -> np.ndarray:
    """float32 features of one frame: ``rgb`` its analysis image (uint8 RGB), ``measures`` its
    ``quality.measure(...).as_dict()`` (NaN or missing -> 0)."""
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    h, s, v = (c.reshape(-1) for c in cv2.split(hsv))
    weight = (s.astype(np.float32) / 255.0) * (v > 25)
    hue = np.bincount((h.astype(np.int32) * HUE_BINS) // 180, weights=weight, minlength=HUE_BINS)[:HUE_BINS]
    hue = hue / max(float(weight.sum()), 1.0)
    s_mean, s_std = cv2.meanStdDev(s)
    v_mean, v_std = cv2.meanStdDev(v)
    total = rgb.reshape(-1, 3).astype(np.float32).sum(axis=0)
    chroma = total / max(float(total.sum()), 1.0)
    grid = cv2.resize(rgb, (GRID, GRID), interpolation=cv2.INTER_AREA).reshape(-1) / 255.0
    q = []
    for m in QUALITY_MEASURES:
        x = float(measures.get(m, 0.0))
        x = 0.0 if not math.isfinite(x) else x
        q.append(math.log1p(max(x, 0.0)) if m == "sharpness" else x)
    return np.concatenate([hue, [s_mean[0, 0] / 255, s_std[0, 0] / 255, v_mean[0, 0] / 255, v_std[0, 0] / 255],
                           chroma, grid, q]).astype(np.float32)


class OutOfBodyModelError(ValueError):
    """A detector weights file that cannot be used; the message is one line."""


TENSORS = ("mean", "std", "w1", "b1", "w2", "b2")


class OutOfBodyDetector:
    """P(out of body) of a frame's features: standardise, ``relu(x W1 + b1) W2 + b2``, sigmoid."""

    def __init__(self, tensors: dict[str, np.ndarray], metadata: dict[str, str] | None = None):
        self.t = {k: np.asarray(tensors[k], np.float32) for k in TENSORS}
        self.metadata = dict(metadata or {})
        d = len(feature_names())
        shapes = {"mean": (d,), "std": (d,), "w1": (d, self.t["b1"].shape[0]), "w2": (self.t["b1"].shape[0], 1),
                  "b2": (1,)}
        for k, shape in shapes.items():
            if self.t[k].shape != shape:
                raise OutOfBodyModelError(f"out-of-body model: tensor {k} has shape {self.t[k].shape}, expected "
                                          f"{shape} ({d} features of {FEATURE_VERSION})")

    @classmethod
    def load(cls, path: str | Path) -> OutOfBodyDetector:
        """From a safetensors file (data only, never code). Raises ``OutOfBodyModelError`` with one line."""
        from safetensors import SafetensorError, safe_open

        path = Path(path)
        if not path.is_file():
            why = "it is a directory" if path.is_dir() else "no such file"
            raise OutOfBodyModelError(f"out-of-body model {path.absolute()}: {why}")
        try:
            with safe_open(str(path), framework="numpy") as f:
                metadata = f.metadata() or {}
                if metadata.get("kind") != "endoarss_out_of_body":
                    raise OutOfBodyModelError(f"out-of-body model {path}: not an out-of-body detector "
                                              f"(metadata kind {metadata.get('kind')!r})")
                if metadata.get("features") != FEATURE_VERSION:
                    raise OutOfBodyModelError(f"out-of-body model {path}: features {metadata.get('features')!r}, "
                                              f"this code computes {FEATURE_VERSION!r}")
                missing = [k for k in TENSORS if k not in f.keys()]
                if missing:
                    raise OutOfBodyModelError(f"out-of-body model {path}: missing tensors {missing}")
                tensors = {k: f.get_tensor(k) for k in TENSORS}
        except (SafetensorError, OSError) as e:
            raise OutOfBodyModelError(f"out-of-body model {path}: unreadable ({type(e).__name__}: "
                                      f"{str(e).splitlines()[0] if str(e) else ''})") from e
        return cls(tensors, metadata)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        from safetensors.numpy import save_file

        meta = {"kind": "endoarss_out_of_body", "features": FEATURE_VERSION,
                "feature_names": json.dumps(feature_names()), **self.metadata, **(metadata or {})}
        save_file({k: np.ascontiguousarray(v) for k, v in self.t.items()}, str(path), metadata=meta)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """P(out of body) of ``features`` (N, D) or (D,)."""
        x = (np.atleast_2d(features) - self.t["mean"]) / self.t["std"]
        logits = np.maximum(x @ self.t["w1"] + self.t["b1"], 0.0) @ self.t["w2"] + self.t["b2"]
        return (1.0 / (1.0 + np.exp(-np.clip(logits[:, 0], -50, 50)))).astype(np.float64)

    def probability(self, rgb: np.ndarray, measures: dict[str, float]) -> float:
        return float(self.probabilities(frame_features(rgb, measures))[0])


@dataclass(frozen=True)
class OutOfBodySettings:
    """``threshold``: P(out of body) at or over which a frame looks outside (entering at once);
    ``exit_frames``: in-body frames in a row needed to leave; ``privacy_gate``: blank image outputs while out of
    body or undecided."""

    # Low on purpose: the gate fails closed, so a missed out-of-body frame (a face written out) costs far more
    # than a blanked in-body one. No in-body frame of our renders scores over 0.011 (1,020 held-out frames, a third
    # of them degraded); at 0.5 the first view of a held-out photograph (P 0.15) went through un-blanked.
    threshold: float = 0.05
    exit_frames: int = 3
    privacy_gate: bool = True

    def __post_init__(self):
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"out-of-body threshold must be in (0, 1), got {self.threshold}")
        if self.exit_frames < 1:
            raise ValueError(f"out-of-body exit_frames must be >= 1, got {self.exit_frames}")


class Decision(NamedTuple):
    out_of_body: bool  # the state after this frame
    probability: float  # the detector's P(out of body) (NaN: undecided)
    reason: str  # why out of body / undecided ('' when in body)
    gated: bool  # blank every image output of this frame

    @property
    def decided(self) -> bool:
        return not math.isnan(self.probability)


@dataclass
class Interval:
    """A run of gated frames (stamps in ns, as the caller gave them)."""

    start_ns: int
    end_ns: int
    frames: int = 1


@dataclass
class OutOfBodyState:
    """One camera's out-of-body state (see the module docstring); counts what it decided."""

    settings: OutOfBodySettings = field(default_factory=OutOfBodySettings)
    out_of_body: bool = False
    in_body_run: int = 0
    frames: int = 0
    out_of_body_frames: int = 0
    entries: int = 0
    gated_frames: int = 0
    undecided_frames: int = 0
    intervals: list[Interval] = field(default_factory=list)  # runs of gated frames, for reports
    _last_gated: bool = False

    def update(self, probability: float, stamp_ns: int = 0) -> Decision:
        """The decision for a frame the detector scored (NaN: undecided)."""
        s = self.settings
        self.frames += 1
        if not math.isfinite(probability):
            self.in_body_run = 0
            self.undecided_frames += 1
            return self._gate(Decision(self.out_of_body, math.nan, "out_of_body: undecided (no decision for this "
                                       "frame)", s.privacy_gate), stamp_ns)
        reason = ""
        if probability >= s.threshold:
            if not self.out_of_body:
                self.entries += 1
            self.out_of_body, self.in_body_run = True, 0
            reason = f"out_of_body: probability {probability:.3g} >= threshold {s.threshold:.3g}"
        elif self.out_of_body:
            self.in_body_run += 1
            if self.in_body_run >= s.exit_frames:
                self.out_of_body, self.in_body_run = False, 0
            else:
                reason = (f"out_of_body: leaving, {self.in_body_run} of {s.exit_frames} in-body frames "
                          f"(probability {probability:.3g})")
        self.out_of_body_frames += int(self.out_of_body)
        return self._gate(Decision(self.out_of_body, float(probability), reason,
                                   s.privacy_gate and self.out_of_body), stamp_ns)

    def undecided(self, stamp_ns: int = 0) -> Decision:
        """A frame that got no decision (undecodable, dropped, the detector failed): gated, never in body."""
        return self.update(math.nan, stamp_ns)

    def _gate(self, decision: Decision, stamp_ns: int) -> Decision:
        if decision.gated:
            self.gated_frames += 1
            if self._last_gated and self.intervals:
                last = self.intervals[-1]
                last.end_ns, last.frames = max(last.end_ns, int(stamp_ns)), last.frames + 1
            else:
                self.intervals.append(Interval(int(stamp_ns), int(stamp_ns)))
        self._last_gated = decision.gated
        return decision

    def summary(self) -> dict:
        return {"frames": self.frames, "out_of_body_frames": self.out_of_body_frames, "entries": self.entries,
                "gated_frames": self.gated_frames, "undecided_frames": self.undecided_frames,
                "privacy_gate": self.settings.privacy_gate, "threshold": self.settings.threshold,
                "exit_frames": self.settings.exit_frames,
                "gated_intervals": [{"start_ns": i.start_ns, "end_ns": i.end_ns, "frames": i.frames}
                                    for i in self.intervals]}


class OutOfBody:
    """A camera's detector (shared weights) and state: ``decide`` one frame from its analysis image and
    quality measures; a detector error makes the frame undecided (gated), never in body."""

    def __init__(self, detector: OutOfBodyDetector, settings: OutOfBodySettings | None = None):
        self.detector = detector
        self.state = OutOfBodyState(settings or OutOfBodySettings())
        self.errors = 0
        self.last_error = ""

    @property
    def settings(self) -> OutOfBodySettings:
        return self.state.settings

    def reconfigure(self, settings: OutOfBodySettings) -> None:
        self.state.settings = settings

    def decide(self, rgb: np.ndarray, measures: dict[str, float], stamp_ns: int = 0) -> Decision:
        try:
            p = self.detector.probability(rgb, measures)
        except Exception as e:  # noqa: BLE001 - fail closed: the frame is undecided and gated
            self.errors += 1
            self.last_error = f"{type(e).__name__}: {e}"
            p = math.nan
        return self.state.update(p, stamp_ns)


def blank(pixels: np.ndarray) -> np.ndarray:
    """The blanked version of an image output: same shape and type, all zero."""
    return np.zeros_like(pixels)


__all__ = ["DEFAULT_OUT_OF_BODY_MODEL", "Decision", "OUT_OF_BODY_CLASS_ID", "OUT_OF_BODY_LABEL", "OutOfBody",
           "OutOfBodyDetector", "OutOfBodyModelError", "OutOfBodySettings", "OutOfBodyState", "SOURCE_OUT_OF_BODY",
           "blank", "feature_names", "frame_features"]

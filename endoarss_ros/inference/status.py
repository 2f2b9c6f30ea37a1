"""Whether a frame's result can be acted on: the flags of ``msg/PerceptionStatus.msg``, their thresholds and the
rules that set them from the image-quality measures (``quality``), the model's uncertainty and the timing.

The thresholds' defaults come from the measurements in docs/perception_status.md (``endoarss eval-status``).
No ROS and no torch here: the node's parameters are declared from ``StatusThresholds``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace

import numpy as np

# The bits of PerceptionStatus.flags, in bit order (bit i = 1 << i); test_messages checks the .msg agrees.
FLAGS = ("LOW_CONFIDENCE", "BLUR", "TOO_DARK", "OVER_EXPOSED", "SMOKE_OR_HAZE", "BLOOD_OR_SOILING", "NOISE",
         "COMPRESSION_ARTIFACTS", "NO_TISSUE", "STALE", "INPUT_REJECTED", "DROPPED", "INFERENCE_FAILED",
         "OUT_OF_BODY")
FLAG = {name: 1 << i for i, name in enumerate(FLAGS)}
IMAGE_FLAGS = ("BLUR", "TOO_DARK", "OVER_EXPOSED", "SMOKE_OR_HAZE", "BLOOD_OR_SOILING", "NOISE",
               "COMPRESSION_ARTIFACTS")
DEGRADED_IMAGE = sum(FLAG[n] for n in IMAGE_FLAGS)
NAN = float("nan")
MEASURES = ("activity_confidence", "activity_entropy", "mean_top_class_probability", "low_confidence_fraction",
            "brightness", "dark_fraction", "overexposed_fraction", "sharpness", "haze", "blood_fraction",
            "tissue_fraction", "noise_sigma", "blockiness")


def _threshold(default: float, low: float, high: float, text: str):
    return field(default=default, metadata={"range": (low, high), "description": text})


@dataclass(frozen=True)
class StatusThresholds:
    """When a flag is set. Each field is a node parameter ``status.<name>``, live (``ros2 param set``)."""

    pixel_confidence_threshold: float = _threshold(
        0.6, 0.0, 1.0, "A mask pixel whose top-class probability is under this counts as low-confidence.")
    max_low_confidence_fraction: float = _threshold(
        0.025, 0.0, 1.0, "LOW_CONFIDENCE when more of the mask than this is low-confidence.")
    min_activity_confidence: float = _threshold(
        0.4, 0.0, 1.0, "LOW_CONFIDENCE when the frame's own top activity probability is under this.")
    min_sharpness: float = _threshold(1.2, 0.0, 1000.0, "BLUR when the sharpness ratio is under this.")
    min_brightness: float = _threshold(0.12, 0.0, 1.0, "TOO_DARK when the mean luma is under this.")
    max_dark_fraction: float = _threshold(0.5, 0.0, 1.0, "TOO_DARK when more of the view than this is dark.")
    max_overexposed_fraction: float = _threshold(
        0.2, 0.0, 1.0, "OVER_EXPOSED when more of the view than this is blown out.")
    max_haze: float = _threshold(
        0.40, 0.0, 1.0, "SMOKE_OR_HAZE when the dark-channel median is over this (and the view is soft: "
        "max_haze_sharpness).")
    max_haze_sharpness: float = _threshold(
        2.0, 0.0, 1000.0, "SMOKE_OR_HAZE only when the sharpness ratio is also under this: smoke takes the edges "
        "with the contrast; a pale but sharp view (a scene's light haze, whitish tissue) is not smoke.")
    max_blood_fraction: float = _threshold(
        0.025, 0.0, 1.0, "BLOOD_OR_SOILING when more of the view than this is dark saturated red.")
    max_noise_sigma: float = _threshold(14.0, 0.0, 255.0, "NOISE when the noise estimate (grey levels) is over this.")
    max_blockiness: float = _threshold(
        1.6, 1.0, 100.0, "COMPRESSION_ARTIFACTS when the 8x8 block-edge ratio is over this.")
    min_tissue_fraction: float = _threshold(
        0.2, 0.0, 1.0, "NO_TISSUE when less of the view than this has tissue colour.")
    max_result_age_ms: float = _threshold(
        500.0, 0.0, 1e6, "STALE when the result is older than this (now - image stamp) at publication.")

    @classmethod
    def names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def spec(cls, name: str) -> tuple[float, tuple[float, float], str]:
        """(default, range, description) of threshold ``name``."""
        f = next(f for f in fields(cls) if f.name == name)
        return f.default, f.metadata["range"], f.metadata["description"]

    def updated(self, **values: float) -> StatusThresholds:
        return replace(self, **{k: float(v) for k, v in values.items()})


# (flag, measure, "<" or ">", threshold[, (measure, op, threshold), ...]): the flag is set when the measure is
# past the threshold and every further condition holds too.
RULES = (
    ("LOW_CONFIDENCE", "low_confidence_fraction", ">", "max_low_confidence_fraction"),
    ("LOW_CONFIDENCE", "activity_confidence", "<", "min_activity_confidence"),
    ("BLUR", "sharpness", "<", "min_sharpness"),
    ("TOO_DARK", "brightness", "<", "min_brightness"),
    ("TOO_DARK", "dark_fraction", ">", "max_dark_fraction"),
    ("OVER_EXPOSED", "overexposed_fraction", ">", "max_overexposed_fraction"),
    ("SMOKE_OR_HAZE", "haze", ">", "max_haze", ("sharpness", "<", "max_haze_sharpness")),
    ("BLOOD_OR_SOILING", "blood_fraction", ">", "max_blood_fraction"),
    ("NOISE", "noise_sigma", ">", "max_noise_sigma"),
    ("COMPRESSION_ARTIFACTS", "blockiness", ">", "max_blockiness"),
    ("NO_TISSUE", "tissue_fraction", "<", "min_tissue_fraction"),
)
STALE_RULE = ("STALE", "age_ms", ">", "max_result_age_ms")


@dataclass(frozen=True)
class FrameStatus:
    """One frame's status (the ``PerceptionStatus`` fields but the header). ``measures``: ``MEASURES`` -> value
    (NaN: not measured)."""

    flags: int
    reasons: tuple[str, ...]
    processed: bool
    measures: dict[str, float]
    age_ms: float = NAN
    processing_ms: float = NAN
    out_of_body: bool = False  # the camera's out-of-body state after this frame (``out_of_body.OutOfBodyState``)

    @property
    def usable(self) -> bool:
        return self.flags == 0

    @property
    def flag_names(self) -> list[str]:
        return [n for n in FLAGS if self.flags & FLAG[n]]

    def with_timing(self, age_ms: float | None, processing_ms: float, thresholds: StatusThresholds) -> FrameStatus:
        """The status as published: its age (None: no live clock, e.g. offline) checked against the limit."""
        flags, reasons = self.flags, self.reasons
        if age_ms is not None:
            hit = _check(STALE_RULE, age_ms, thresholds)
            if hit:
                flags, reasons = flags | FLAG["STALE"], reasons + (hit,)
        return replace(self, flags=flags, reasons=reasons, age_ms=NAN if age_ms is None else float(age_ms),
                       processing_ms=float(processing_ms))


def _past(value: float, op: str, limit: float) -> bool:
    return not math.isnan(value) and (value < limit if op == "<" else value > limit)


def _check(rule, value: float, thresholds: StatusThresholds, measures: dict | None = None) -> str | None:
    flag, measure, op, name = rule[:4]
    limit = getattr(thresholds, name)
    if not _past(value, op, limit):
        return None
    text = f"{flag.lower()}: {measure} {value:.3g} {op} {name} {limit:.3g}"
    for m, o, n in rule[4:]:  # further conditions: each narrows the flag only where it was measured
        v, lim = float((measures or {}).get(m, NAN)), getattr(thresholds, n)
        if math.isnan(v):
            continue  # not measured: the main condition alone decides (flagging errs on the safe side)
        if not _past(v, o, lim):
            return None
        text += f", {m} {v:.3g} {o} {n} {lim:.3g}"
    return text


def model_uncertainty(activity_probs, confidence: np.ndarray | None, pixel_threshold: float) -> dict[str, float]:
    """The model-uncertainty measures of one frame: raw activity probabilities, top-class probability map."""
    p = np.asarray(activity_probs, np.float64).reshape(-1)
    k = len(p)
    entropy = float(-(p * np.log(np.clip(p, 1e-12, 1.0))).sum() / math.log(k)) if k > 1 else 0.0
    out = {"activity_confidence": float(p.max()), "activity_entropy": entropy,
           "mean_top_class_probability": NAN, "low_confidence_fraction": NAN}
    if confidence is not None and confidence.size:
        out["mean_top_class_probability"] = float(confidence.mean())
        out["low_confidence_fraction"] = float(np.count_nonzero(confidence < pixel_threshold)) / confidence.size
    return out


def frame_status(measures: dict[str, float], thresholds: StatusThresholds, out_of_body=None) -> FrameStatus:
    """The status of a processed frame from its measures (``MEASURES``) and its ``out_of_body.Decision`` (None:
    no detector); timing is added at publication. OUT_OF_BODY while out of body or undecided, its reason first."""
    flags, reasons = 0, []
    if out_of_body is not None and out_of_body.reason:
        flags, reasons = FLAG["OUT_OF_BODY"], [out_of_body.reason]
    for rule in RULES:
        hit = _check(rule, measures.get(rule[1], NAN), thresholds, measures)
        if hit:
            flags |= FLAG[rule[0]]
            reasons.append(hit)
    return FrameStatus(flags, tuple(reasons), True, {m: float(measures.get(m, NAN)) for m in MEASURES},
                       out_of_body=bool(out_of_body is not None and out_of_body.out_of_body))


def lost_frame_status(flag: str, reason: str, out_of_body: bool = False) -> FrameStatus:
    """The status of a frame that produced no results: INPUT_REJECTED, DROPPED or INFERENCE_FAILED;
    ``out_of_body``: the camera's state when it was lost."""
    return FrameStatus(FLAG[flag], (f"{flag.lower()}: {reason}",), False, dict.fromkeys(MEASURES, NAN),
                       out_of_body=out_of_body)

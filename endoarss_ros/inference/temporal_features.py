"""The per-frame feature vector the temporal activity model reads: what the frame network and the status already
computed for the frame, no second backbone pass.

Layout (``feature_names``), in order:

* ``activity_prob:<class>``: the activity head's probabilities (K);
* ``seg_fraction:<class>``: the fraction of the view each segmentation class covers (C), from the mask sampled
  on the analysis image's grid (``quality.shrink_factor``): which tissue is exposed and which instruments are in
  view is what tells marking, incision and dissection apart;
* ``pixel_confidence:mean`` / ``pixel_confidence:low_fraction``: the segmentation's top-class probability map
  (mean, and the share under ``LOW_PIXEL_CONFIDENCE``, a fixed value: the status threshold is a live parameter
  and must not change what a trained model reads);
* ``status:<measure>``: the image-quality measures of the frame's status (``STATUS_MEASURES``), with the
  heavy-tailed ones on a log scale. They say *why* a frame looks different (smoke, blood, blur) so the model can
  discount it rather than take it for another activity.

A value that was not measured is 0 (the model's input normalisation makes 0 a neutral value after training on
the same layout). The layout's names go into the temporal weights file, so a model trained on another layout is
refused (``model.temporal_tcn.TemporalBinding``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from ..files import file_sha256
from .quality import shrink_factor
from .status import DEGRADED_IMAGE, FLAG

LOW_PIXEL_CONFIDENCE = 0.6  # the default of status.pixel_confidence_threshold, frozen into the layout
# Measures of ``status.MEASURES`` used, and how each is scaled ("log": log1p of the value, else as is).
STATUS_MEASURES: tuple[tuple[str, str], ...] = (
    ("activity_entropy", ""), ("brightness", ""), ("dark_fraction", ""), ("overexposed_fraction", ""),
    ("sharpness", "log"), ("haze", ""), ("blood_fraction", ""), ("tissue_fraction", ""),
    ("noise_sigma", "log"), ("blockiness", "log"),
)


def feature_names(seg_classes: Sequence[str], activity_classes: Sequence[str]) -> list[str]:
    """The names of ``frame_features``' entries for a frame model with these classes (its own names, not the
    ones a ``class_names_file`` publishes)."""
    return ([f"activity_prob:{c}" for c in activity_classes] + [f"seg_fraction:{c}" for c in seg_classes]
            + ["pixel_confidence:mean", "pixel_confidence:low_fraction"]
            + [f"status:{m}" + (f":{scale}" if scale else "") for m, scale in STATUS_MEASURES])


def feature_dim(num_seg_classes: int, num_activity_classes: int) -> int:
    return num_activity_classes + num_seg_classes + 2 + len(STATUS_MEASURES)


def class_fractions(mask: np.ndarray, num_seg_classes: int) -> np.ndarray:
    """Share of the (sampled) mask per class, float32 (C,); ids >= C are not counted."""
    f = shrink_factor(*mask.shape[:2])
    sampled = mask[::f, ::f].reshape(-1)
    counts = np.bincount(sampled, minlength=num_seg_classes)[:num_seg_classes]
    return (counts / max(1, sampled.size)).astype(np.float32)


# Status flags that make a frame *missing* for the temporal model: the camera cannot see (degraded image, no tissue
# in view). LOW_CONFIDENCE is not one of them: the model reads the frame's confidence itself, and an uncertain
# frame is information, not a hole. STALE, DROPPED, ... belong to frames that are late or never reached the model.
MASKING_FLAGS = DEGRADED_IMAGE | FLAG["NO_TISSUE"]


def usable_for_temporal(status) -> bool:
    """Whether a frame's features go into its tick's mean (``status``: its ``status.FrameStatus``)."""
    return bool(status.processed) and not status.flags & MASKING_FLAGS


def _scaled(value: float, scale: str) -> float:
    if not math.isfinite(value):
        return 0.0
    return math.log1p(max(value, 0.0)) if scale == "log" else value


def frame_features(result, num_seg_classes: int, measures: Mapping[str, float] | None = None) -> np.ndarray:
    """float32 (D,) of one frame: ``result`` an engine ``FrameResult``; ``measures`` the frame status's
    ``measures`` (``stream.StreamOutput.status.measures``; None: not measured, zeros)."""
    probs = np.asarray(result.activity_probs, np.float32).reshape(-1)
    conf = result.confidence
    if conf is not None and conf.size:
        pixel = [float(conf.mean()), float(np.count_nonzero(conf < LOW_PIXEL_CONFIDENCE)) / conf.size]
    else:
        pixel = [0.0, 0.0]
    measures = measures or {}
    status = [_scaled(float(measures.get(m, math.nan)), scale) for m, scale in STATUS_MEASURES]
    out = np.concatenate([probs, class_fractions(result.mask, num_seg_classes),
                          np.asarray(pixel + status, np.float32)]).astype(np.float32)
    return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


def frame_model_identity(weights_path: str | Path, input_size: Sequence[int] | None = None) -> str:
    """``sha256:<16 hex>`` of the frame model's weights file: a temporal model is bound to the features of
    exactly these weights. ``input_size``: the (H, W) the weights are run at when that overrides their own (the
    node's ``input_size`` parameter): ``@HxW`` is appended, since features at another resolution are another
    signal. Raises FileNotFoundError / OSError when the file cannot be read."""
    size = f"@{int(input_size[0])}x{int(input_size[1])}" if input_size is not None else ""
    return f"sha256:{file_sha256(weights_path)[:16]}{size}"


__all__ = ["LOW_PIXEL_CONFIDENCE", "MASKING_FLAGS", "STATUS_MEASURES", "class_fractions", "feature_dim",
           "feature_names", "frame_features", "frame_model_identity", "usable_for_temporal"]

"""Scores against ground truth, one home: ``frames`` (confusion-matrix metrics of activities and masks, numpy;
``GroundTruthEvaluator`` for recordings), ``segments`` (activity timelines: segmental F1, edit score, false
transitions, delays), ``tracker`` (their accumulation during evaluation, torch, and the
reports). Operational counts of a stream (status flags, tracks, latency percentiles) are ``inference.tallies``;
the node's live counters ``ros.diagnostics``."""
from __future__ import annotations

from endoarss_ros.lazy import lazy_exports

_EXPORTS = {
    "GroundTruthEvaluator": "frames", "classification_metrics": "frames", "compute_metrics": "frames",
    "segmentation_metrics": "frames",
    "summarize": "segments", "video_scores": "segments",
    "MetricTracker": "tracker", "confusion_matrix": "tracker", "format_table": "tracker", "summary": "tracker",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

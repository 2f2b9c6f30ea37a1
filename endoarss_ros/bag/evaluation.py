"""Predictions against a recording's ground truth, matched by header stamp: activity accuracy and mIoU.

Accumulates the confusion matrices (rows truth, columns prediction; mask pixels of the ignore id 255 are
left out) and computes the metrics with ``endoarss_ros.training.metrics``, as ``endoarss eval`` does.
"""
from __future__ import annotations

import numpy as np


class GroundTruthEvaluator:
    def __init__(self, num_seg_classes: int, num_activities: int, *, seg_names=None, activity_names=None):
        self.num_seg = int(num_seg_classes)
        self.num_act = int(num_activities)
        self.seg_names = list(seg_names) if seg_names is not None else [str(i) for i in range(self.num_seg)]
        self.activity_names = (list(activity_names) if activity_names is not None
                               else [str(i) for i in range(self.num_act)])
        self.seg_confusion = np.zeros((self.num_seg, self.num_seg), np.int64)  # [true, predicted]
        self.act_confusion = np.zeros((self.num_act, self.num_act), np.int64)
        self.mask_frames = 0
        self.activity_frames = 0
        self.size_mismatches = 0

    def add_mask(self, predicted: np.ndarray, truth: np.ndarray) -> None:
        if predicted.shape != truth.shape:
            self.size_mismatches += 1
            return
        t = truth.reshape(-1).astype(np.int64)
        p = predicted.reshape(-1).astype(np.int64)
        valid = (t < self.num_seg) & (p < self.num_seg)  # also drops the ignore id 255
        n = self.num_seg
        self.seg_confusion += np.bincount(t[valid] * n + p[valid], minlength=n * n).reshape(n, n)
        self.mask_frames += 1

    def add_activity(self, predicted: int, truth: int) -> None:
        if 0 <= truth < self.num_act and 0 <= predicted < self.num_act:
            self.act_confusion[truth, predicted] += 1
            self.activity_frames += 1

    def result(self) -> dict:
        return compute_metrics(self.seg_confusion, self.act_confusion, self.seg_names, self.activity_names,
                               mask_frames=self.mask_frames, activity_frames=self.activity_frames)


def compute_metrics(seg_confusion: np.ndarray, act_confusion: np.ndarray, seg_names, activity_names, *,
                    mask_frames: int, activity_frames: int) -> dict:
    """The training metrics (``endoarss_ros.training.metrics``) of the accumulated confusion matrices:
    foreground mIoU (classes absent from truth and prediction left out), pixel accuracy, per-class IoU,
    activity accuracy and macro F1."""
    from ..training.metrics import classification_metrics, segmentation_metrics

    out: dict = {"frames_with_mask": int(mask_frames), "frames_with_activity": int(activity_frames)}
    if mask_frames:
        seg = segmentation_metrics(seg_confusion, list(seg_names))
        out["miou_foreground"] = None if np.isnan(seg["miou_fg"]) else float(seg["miou_fg"])
        out["miou_all"] = None if np.isnan(seg["miou_all"]) else float(seg["miou_all"])
        out["pixel_accuracy"] = seg["pixel_accuracy"]
        out["iou_per_class"] = seg["iou"]
    if activity_frames:
        act = classification_metrics(act_confusion, list(activity_names))
        out["activity_accuracy"] = act["accuracy"]
        out["activity_macro_f1"] = act["macro_f1"]
        out["activity_confusion"] = {"classes": list(activity_names), "matrix": act["confusion_matrix"]}
    return out

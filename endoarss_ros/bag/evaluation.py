"""Predictions against a recording's ground truth, matched by header stamp: activity accuracy and mIoU.

Accumulates a segmentation confusion matrix and activity pairs; the metric formulas are those of
``endoarss_ros.training.metrics`` (see ``compute_metrics``).
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
        valid = (t < self.num_seg) & (p < self.num_seg)
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
    """Segmentation IoU per class and mIoU over the foreground classes present (in truth or prediction),
    pixel accuracy, activity accuracy and macro F1. Uses ``endoarss_ros.training.metrics`` when available."""
    seg_iou, act = _training_metrics(seg_confusion, act_confusion)
    out: dict = {"frames_with_mask": int(mask_frames), "frames_with_activity": int(activity_frames)}
    if mask_frames:
        present = (seg_confusion.sum(0) + seg_confusion.sum(1)) > 0
        fg = [i for i in range(1, len(seg_iou)) if present[i]]
        out["miou_foreground"] = float(np.mean([seg_iou[i] for i in fg])) if fg else None
        out["pixel_accuracy"] = float(np.trace(seg_confusion) / max(1, seg_confusion.sum()))
        out["iou_per_class"] = {seg_names[i]: (float(seg_iou[i]) if present[i] else None)
                                for i in range(len(seg_iou))}
    if activity_frames:
        out["activity_accuracy"] = act["accuracy"]
        out["activity_macro_f1"] = act["macro_f1"]
        out["activity_confusion"] = {"classes": list(activity_names), "matrix": act_confusion.tolist()}
    return out


def _training_metrics(seg_confusion: np.ndarray, act_confusion: np.ndarray):
    """Per-class IoU and activity accuracy / macro F1 from confusion matrices.

    TODO(training merge): delegate to ``endoarss_ros.training.metrics`` once that branch lands.
    """
    tp = np.diag(seg_confusion).astype(np.float64)
    union = seg_confusion.sum(0) + seg_confusion.sum(1) - tp
    iou = np.divide(tp, union, out=np.zeros_like(tp), where=union > 0)
    atp = np.diag(act_confusion).astype(np.float64)
    total = act_confusion.sum()
    prec = np.divide(atp, act_confusion.sum(0), out=np.zeros_like(atp), where=act_confusion.sum(0) > 0)
    rec = np.divide(atp, act_confusion.sum(1), out=np.zeros_like(atp), where=act_confusion.sum(1) > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(atp), where=(prec + rec) > 0)
    present = act_confusion.sum(1) > 0
    return iou, {"accuracy": float(atp.sum() / total) if total else None,
                 "macro_f1": float(f1[present].mean()) if present.any() else None}

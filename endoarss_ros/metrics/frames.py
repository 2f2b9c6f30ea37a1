"""Confusion-matrix metrics for activity recognition and segmentation.

Conventions (``cm[i, j]`` = samples / pixels of true class i predicted as j):

* activity: accuracy = trace / total; per class precision = TP / (TP + FP), recall = TP / (TP + FN),
  F1 = 2PR / (P + R); macro-F1 = mean of the per-class F1. A zero denominator gives 0. (The released
  evaluator adds 1e-3 to denominators and calls per-class *precision* "Acc"; we do neither.)
* segmentation: IoU_c = TP / (TP + FP + FN), Dice_c = 2TP / (2TP + FP + FN). A class absent from both the
  ground truth and the prediction has no IoU (NaN, ``null`` in JSON) and is left out of the means.
  Two means are reported, clearly labelled: ``miou_fg`` / ``mdice_fg`` over the foreground classes
  (class id >= 1, background excluded) and ``miou_all`` / ``mdice_all`` over all classes including
  background (the released code's "mIoU").

Pure numpy (no torch), below both the training loop and the offline replay. ``GroundTruthEvaluator``
accumulates predictions against a recording's ground truth matched by header stamp (replay, demo).
"""
from __future__ import annotations

import math

import numpy as np


def _div(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    out = np.full(a.shape, empty, np.float64)
    np.divide(a, b, out=out, where=b > 0)
    return out


def classification_metrics(cm: np.ndarray, class_names: list[str] | None = None) -> dict:
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    precision = _div(tp, cm.sum(0), 0.0)
    recall = _div(tp, cm.sum(1), 0.0)
    f1 = _div(2 * precision * recall, precision + recall, 0.0)
    total = cm.sum()
    names = class_names or [str(i) for i in range(len(cm))]
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1.mean()) if len(f1) else 0.0,
        "macro_precision": float(precision.mean()),
        "macro_recall": float(recall.mean()),
        "per_class": {n: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                      for n, p, r, f, s in zip(names, precision, recall, f1, cm.sum(1))},
        "confusion_matrix": cm.tolist(),
        "count": int(total),
    }


def _nanmean(v: np.ndarray) -> float:
    v = v[~np.isnan(v)]
    return float(v.mean()) if len(v) else float("nan")


def segmentation_metrics(cm: np.ndarray, class_names: list[str] | None = None, background: int = 0) -> dict:
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    iou = _div(tp, tp + fp + fn, float("nan"))
    dice = _div(2 * tp, 2 * tp + fp + fn, float("nan"))
    fg = np.array([i != background for i in range(len(cm))])
    names = class_names or [str(i) for i in range(len(cm))]
    total = cm.sum()
    return {
        "miou_fg": _nanmean(iou[fg]),
        "miou_all": _nanmean(iou),
        "mdice_fg": _nanmean(dice[fg]),
        "mdice_all": _nanmean(dice),
        "pixel_accuracy": float(tp.sum() / total) if total else 0.0,
        "background_class": names[background],
        "iou": {n: _none(v) for n, v in zip(names, iou)},
        "dice": {n: _none(v) for n, v in zip(names, dice)},
        "confusion_matrix": cm.tolist(),
    }


def _none(v: float) -> float | None:
    return None if math.isnan(v) else float(v)


class GroundTruthEvaluator:
    """Confusion matrices of predictions against ground truth (ignore id 255 and unknown ids left out)."""


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
    """The metrics of accumulated confusion matrices: foreground mIoU (classes absent from truth and prediction
    left out), pixel accuracy, per-class IoU, activity accuracy and macro F1."""
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

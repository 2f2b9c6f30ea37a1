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
"""
from __future__ import annotations

import math

import numpy as np
import torch


def confusion_matrix(pred, target, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    """(num_classes, num_classes) int64 counts; rows = truth, columns = prediction."""
    pred = torch.as_tensor(pred).reshape(-1).long()
    target = torch.as_tensor(target).reshape(-1).long().to(pred.device)
    keep = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    idx = target[keep] * num_classes + pred[keep].clamp(0, num_classes - 1)
    cm = torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)
    return cm.cpu().numpy().astype(np.int64)


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


class MetricTracker:
    """Accumulates both confusion matrices over batches of model outputs."""

    def __init__(self, num_seg_classes: int, num_activities: int, ignore_index: int = 255):
        self.num_seg = num_seg_classes
        self.num_act = num_activities
        self.ignore_index = ignore_index
        self.seg_cm = np.zeros((num_seg_classes, num_seg_classes), np.int64)
        self.act_cm = np.zeros((num_activities, num_activities), np.int64)

    def update(self, seg_logits: torch.Tensor, masks: torch.Tensor, act_logits: torch.Tensor,
               labels: torch.Tensor) -> None:
        if seg_logits.shape[-2:] != masks.shape[-2:]:
            seg_logits = torch.nn.functional.interpolate(seg_logits.float(), size=masks.shape[-2:],
                                                         mode="bilinear", align_corners=False)
        self.seg_cm += confusion_matrix(seg_logits.argmax(1), masks, self.num_seg, self.ignore_index)
        self.act_cm += confusion_matrix(act_logits.argmax(1), labels, self.num_act, None)

    def merge(self, other: MetricTracker) -> None:
        self.seg_cm += other.seg_cm
        self.act_cm += other.act_cm

    def result(self, seg_names: list[str] | None = None, act_names: list[str] | None = None) -> dict:
        return {"activity": classification_metrics(self.act_cm, act_names),
                "segmentation": segmentation_metrics(self.seg_cm, seg_names)}


def summary(result: dict) -> dict[str, float]:
    """The headline numbers of a ``MetricTracker.result``."""
    a, s = result["activity"], result["segmentation"]
    return {"activity_accuracy": a["accuracy"], "activity_macro_f1": a["macro_f1"], "miou_fg": s["miou_fg"],
            "miou_all": s["miou_all"], "mdice_fg": s["mdice_fg"], "mdice_all": s["mdice_all"]}


def _cell(v: float | None) -> str:
    return f"{v:>10.4f}" if v is not None else f"{'n/a':>10}"


def format_table(result: dict) -> str:
    """A readable text table of a ``MetricTracker.result``."""
    a, s = result["activity"], result["segmentation"]
    lines = [f"Activity: accuracy {a['accuracy']:.4f}  macro-F1 {a['macro_f1']:.4f}  ({a['count']} frames)",
             f"  {'class':<28}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>9}"]
    for n, d in a["per_class"].items():
        lines.append(f"  {n:<28}{d['precision']:>10.4f}{d['recall']:>10.4f}{d['f1']:>10.4f}{d['support']:>9}")
    lines.append(f"Segmentation: mIoU foreground {s['miou_fg']:.4f} (background excluded), "
                 f"mIoU all {s['miou_all']:.4f} (background '{s['background_class']}' included)")
    lines.append(f"              mDice foreground {s['mdice_fg']:.4f}, mDice all {s['mdice_all']:.4f}, "
                 f"pixel accuracy {s['pixel_accuracy']:.4f}")
    lines.append(f"  {'class':<28}{'IoU':>10}{'Dice':>10}")
    for n in s["iou"]:
        iou, dice = s["iou"][n], s["dice"][n]
        lines.append(f"  {n:<28}{_cell(iou)}{_cell(dice)}")
    return "\n".join(lines)

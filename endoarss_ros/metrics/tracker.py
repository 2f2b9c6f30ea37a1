"""Confusion-matrix metrics for activity recognition and segmentation.

Torch-side accumulation (``confusion_matrix``, ``MetricTracker``) and reporting of the metrics defined in
``metrics.frames`` (conventions there).
"""
from __future__ import annotations

import numpy as np
import torch

from .frames import classification_metrics, segmentation_metrics


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

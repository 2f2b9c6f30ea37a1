"""Evaluation of a frame model over a dataset (metrics and mean losses), and the score that selects a run's best."""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from endoarss_ros.metrics.tracker import MetricTracker

from .losses import activity_loss, segmentation_loss


def autocast(device: torch.device, amp: bool):
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def collate(batch: list[dict]) -> dict:
    return {"image": torch.stack([b["image"] for b in batch]), "mask": torch.stack([b["mask"] for b in batch]),
            "activity": torch.stack([b["activity"] for b in batch]), "path": [b["path"] for b in batch]}


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 32, device: torch.device | str = "cpu",
             amp: bool = False, ignore_index: int = 255, workers: int = 0,
             image_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, progress: bool = False) -> dict:
    """Metrics (``MetricTracker.result``) plus mean losses over ``dataset``; ``image_fn`` corrupts inputs."""
    device = torch.device(device)
    net = getattr(model, "module", model)
    was_training = net.training
    net.eval()
    cs = net.config
    tracker = MetricTracker(cs.num_seg_classes, cs.num_activity_classes, ignore_index)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collate)
    if progress:

        loader = tqdm(loader, desc="eval", unit="batch", leave=False)
    seg_sum = act_sum = 0.0
    n = 0
    for batch in loader:
        images = batch["image"]
        if image_fn is not None:
            images = image_fn(images)
        images, masks, labels = (batch_t.to(device) for batch_t in (images, batch["mask"], batch["activity"]))
        with autocast(device, amp):
            out = net(images)
        seg = out.segmentation.float()
        tracker.update(seg, masks, out.activity.float(), labels)
        b = images.shape[0]
        seg_sum += float(segmentation_loss(seg, masks, ignore_index=ignore_index)) * b
        act_sum += float(activity_loss(out.activity, labels)) * b
        n += b
    net.train(was_training)
    result = tracker.result(list(cs.seg_classes), list(cs.activity_classes))
    result["loss"] = {"segmentation": seg_sum / max(n, 1), "activity": act_sum / max(n, 1)}
    return result


def selection_score(result: dict) -> float:
    """Validation score for best-model selection: mean of activity accuracy and foreground mIoU."""
    m = result["segmentation"]["miou_fg"]
    return 0.5 * (result["activity"]["accuracy"] + (0.0 if math.isnan(m) else m))

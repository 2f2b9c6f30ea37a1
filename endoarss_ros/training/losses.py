"""Task losses: segmentation cross-entropy (with an ignore label) and activity cross-entropy.

The released recipe (``ds_train.py`` of github.com/gkw0010/EndoARSS) uses plain cross-entropy for both tasks,
no class weights.
``segmentation_loss`` can add a soft-Dice term (``dice_weight``; 0 = released), which helps small,
thin classes when training from scratch on few frames.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(logits: torch.Tensor, mask: torch.Tensor, *, ignore_index: int = 255,
                      dice_weight: float = 0.0) -> torch.Tensor:
    """CE(logits (B,C,H,W), mask (B,H,W)); logits at another size than the mask are resized bilinearly. A batch
    whose every pixel is ``ignore_index`` gives 0 (with a graph), not cross-entropy's 0/0."""
    if logits.shape[-2:] != mask.shape[-2:]:
        logits = F.interpolate(logits, size=mask.shape[-2:], mode="bilinear", align_corners=False)
    logits = logits.float()
    if not bool((mask != ignore_index).any()):  # frames without masks (phase-labelled videos): no loss, no NaN
        return logits.sum() * 0.0
    loss = F.cross_entropy(logits, mask, ignore_index=ignore_index)
    if dice_weight > 0:
        loss = loss + dice_weight * soft_dice_loss(logits, mask, ignore_index=ignore_index)
    return loss


def soft_dice_loss(logits: torch.Tensor, mask: torch.Tensor, *, ignore_index: int = 255,
                   eps: float = 1.0) -> torch.Tensor:
    """1 - mean over foreground classes (ids >= 1) of the batch soft Dice 2|P∩G| / (|P| + |G|)."""
    C = logits.shape[1]
    valid = (mask != ignore_index).unsqueeze(1).float()
    prob = logits.softmax(1) * valid
    target = F.one_hot(mask.clamp(0, C - 1) * (mask != ignore_index), C).permute(0, 3, 1, 2).float() * valid
    dims = (0, 2, 3)
    inter = (prob * target).sum(dims)
    denom = prob.sum(dims) + target.sum(dims)
    dice = (2 * inter + eps) / (denom + eps)
    return 1 - dice[1:].mean()


def activity_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.float(), labels)

"""A trained model made ready to deploy: adapters merged, conv+BN folded, the position embedding fixed for one size.

Each step leaves the outputs unchanged (up to float rounding) and makes the forward pass cheaper or easier to
compile and export. All of them work in place on a model in eval mode.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .adapters import LoRALinear
from .config import PATCH_SIZE
from .finetune import merge_adapters
from .tesla import TeslaLinear


@torch.no_grad()
def fuse_conv_bn(root: nn.Module) -> int:
    """Fold every eval-mode ``Conv2d -> BatchNorm2d`` pair inside an ``nn.Sequential`` into the conv."""

    count = 0
    for mod in list(root.modules()):
        if not isinstance(mod, nn.Sequential):
            continue
        keys = list(mod._modules.keys())
        for a, b in zip(keys, keys[1:]):
            conv, bn = mod._modules[a], mod._modules[b]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats:
                mod._modules[a] = fuse_conv_bn_eval(conv, bn)
                mod._modules[b] = nn.Identity()
                count += 1
    return count


@torch.no_grad()
def fix_position_embedding(model: nn.Module) -> bool:
    """Resample the ViT position embedding once for the working size and reuse it on every forward.

    DINOv2 resamples (bicubic) on each call when the working grid differs from the stored one; at a fixed
    working size that is a constant, and a constant also exports/compiles cleanly.
    """
    vit = getattr(model, "backbone", None)
    cfg = getattr(model, "config", None)
    if vit is None or cfg is None or not hasattr(vit, "interpolate_pos_encoding"):
        return False
    h, w = cfg.input_size
    ps = getattr(vit, "patch_size", PATCH_SIZE)
    n = (h // ps) * (w // ps)
    original = vit.interpolate_pos_encoding
    vit.register_buffer("_fixed_pos_embed", original(n, h, w).detach().clone(), persistent=False)

    def interpolate_pos_encoding(num_patches: int, hh: int, ww: int) -> torch.Tensor:
        if (int(hh), int(ww)) == (h, w):
            return vit._fixed_pos_embed
        return original(num_patches, hh, ww)

    vit.interpolate_pos_encoding = interpolate_pos_encoding
    return True


def prepare_for_inference(model: nn.Module) -> dict[str, int]:
    """eval, gradients off, adapters merged, conv+BN folded, position embedding fixed. In place; returns
    what was done (counts)."""
    model.eval()
    n_adapters = sum(1 for m in model.modules() if isinstance(m, (LoRALinear, TeslaLinear)))
    if n_adapters:
        merge_adapters(model)
    n_bn = fuse_conv_bn(model)
    for p in model.parameters():
        p.requires_grad_(False)
    fixed = fix_position_embedding(model)
    return {"adapters_merged": n_adapters, "conv_bn_fused": n_bn, "pos_embed_fixed": int(fixed)}

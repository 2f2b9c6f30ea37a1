"""Fine-tuning helpers: freezing for adapter training, parameter counts, adapter merging."""
from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from .adapters import LoRALinear, is_adapter_param
from .tesla import TeslaLinear


def freeze_for_adapter_training(model: nn.Module, *, train_dv_vectors: bool | None = None) -> nn.Module:
    """Freeze the backbone's base weights; low-rank adapters, SMA, necks and heads stay trainable.

    DV-LoRA's U/V scale vectors stay frozen unless ``train_dv_vectors`` (default: the config's setting,
    itself False as in the released training).
    """
    cfg = getattr(model, "config", None)
    if train_dv_vectors is None:
        train_dv_vectors = bool(cfg.adapter.train_dv_vectors) if cfg is not None else False
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            leaf = name.rsplit(".", 1)[-1]
            trainable = is_adapter_param(name) and (train_dv_vectors or leaf not in ("lora_U", "lora_V"))
        else:
            trainable = True  # SMA (pixel or feature), necks, heads
        p.requires_grad_(trainable)
    return model


def count_parameters(model: nn.Module) -> dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"total": total, "trainable": trainable}


def parameter_groups(model: nn.Module) -> dict[str, dict[str, int]]:
    """Counts per part: backbone base weights, adapters, SMA, necks, heads."""
    groups: dict[str, dict[str, int]] = {}
    for name, p in model.named_parameters():
        if name.startswith("backbone."):
            g = "adapters" if is_adapter_param(name) else "backbone"
        elif "sma" in name.split(".", 1)[0]:
            g = "sma"
        elif name.startswith("necks."):
            g = "neck"
        elif name.startswith("seg_head."):
            g = "segmentation head"
        elif name.startswith("activity_head."):
            g = "activity head"
        else:
            g = "other"
        d = groups.setdefault(g, {"total": 0, "trainable": 0})
        d["total"] += p.numel()
        d["trainable"] += p.numel() if p.requires_grad else 0
    return groups


def format_parameter_summary(model: nn.Module) -> str:
    lines = [f"{'part':<20}{'total':>14}{'trainable':>14}"]
    for g, d in parameter_groups(model).items():
        lines.append(f"{g:<20}{d['total']:>14,}{d['trainable']:>14,}")
    c = count_parameters(model)
    lines.append(f"{'all':<20}{c['total']:>14,}{c['trainable']:>14,}")
    return "\n".join(lines)


def print_parameter_summary(model: nn.Module) -> dict[str, int]:
    """Print per-part parameter counts; returns ``count_parameters(model)``."""
    print(format_parameter_summary(model))
    return count_parameters(model)


@torch.no_grad()
def merge_adapters(model: nn.Module) -> nn.Module:
    """Fold all low-rank adapters into the base weights (in place) and remove the adapter modules.

    The config records ``adapter.merged = True`` so that a saved merged model rebuilds with plain layers.
    """
    merge_lora_modules(model)
    cfg = getattr(model, "config", None)
    if cfg is not None and cfg.adapter.kind != "none":
        model.config = replace(cfg, adapter=replace(cfg.adapter, merged=True))  # never mutate a shared config
    return model


def _plain_linear(layer: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    new = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    new.to(device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight.copy_(weight)
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    new.requires_grad_(layer.weight.requires_grad)
    return new


@torch.no_grad()
def merge_lora_modules(root: nn.Module) -> int:
    """Fold every LoRA / DV-LoRA layer under ``root`` into a plain ``nn.Linear``. Returns how many."""
    count = 0
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, TeslaLinear):
                setattr(parent, name, child.merged())
                count += 1
            elif isinstance(child, LoRALinear):
                setattr(parent, name, _plain_linear(child, child.weight + child.delta_weight()))
                count += 1
    return count

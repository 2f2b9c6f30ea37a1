"""Low-rank adapters on the ViT's linear layers: LoRA, DV-LoRA, and their merge into the base weights.

The adapter layers subclass ``nn.Linear`` so that the frozen base weight keeps its plain ``weight`` /
``bias`` names: DINOv2 weights load unchanged, and the released EndoARSS keys (``mlp.fc1.weight``,
``mlp.fc1.lora_A`` ...) map one to one.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# Adapter target names -> attribute paths inside a ViT block.
TARGET_PATHS: dict[str, tuple[str, str]] = {
    "qkv": ("attn", "qkv"),
    "proj": ("attn", "proj"),
    "fc1": ("mlp", "fc1"),
    "fc2": ("mlp", "fc2"),
    "w12": ("mlp", "w12"),  # SwiGLU (giant)
    "w3": ("mlp", "w3"),
}

# fc1/fc2 name the MLP's input/output projections; on SwiGLU blocks (giant) they mean w12/w3.
_SWIGLU_ALIAS = {"fc1": "w12", "fc2": "w3"}


def target_slot(block: nn.Module, target: str) -> tuple[nn.Module, str] | None:
    """(parent module, attribute) of an adapter target inside a ViT block, or None if it has none."""
    parent_name, attr = TARGET_PATHS[target]
    parent = getattr(block, parent_name)
    if not hasattr(parent, attr) and target in _SWIGLU_ALIAS:
        attr = _SWIGLU_ALIAS[target]
    return (parent, attr) if hasattr(parent, attr) else None


ADAPTER_PARAM_MARKERS = ("lora_", "task_A", "task_B")


def is_adapter_param(name: str) -> bool:
    return any(m in name.rsplit(".", 1)[-1] for m in ADAPTER_PARAM_MARKERS)


class LoRALinear(nn.Linear):
    """``y = W x + b + (alpha / r) * B A x`` with A (r, in) kaiming-uniform and B (out, r) zero at init."""

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.rank = rank
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling


class DVLoRALinear(LoRALinear):
    """EndoDAC's DV-LoRA as released: ``y = W x + b + s * x (A*U)^T (B*V)^T``.

    U (r, 1) scales the rows of A and V (out, 1) the rows of B. The released training froze U and V at their
    random init (only A and B train), yet they change the output, so they are loaded and merged like A/B.
    """

    def __init__(self, in_features: int, out_features: int, *, rank: int, alpha: float, bias: bool = True):
        super().__init__(in_features, out_features, rank=rank, alpha=alpha, bias=bias)
        self.lora_U = nn.Parameter(torch.empty(rank, 1))
        self.lora_V = nn.Parameter(torch.empty(out_features, 1))
        nn.init.kaiming_uniform_(self.lora_U, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self.lora_V, a=math.sqrt(5))

    def delta_weight(self) -> torch.Tensor:
        return ((self.lora_B * self.lora_V) @ (self.lora_A * self.lora_U)) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lora_A * self.lora_U
        b = self.lora_B * self.lora_V
        return F.linear(x, self.weight, self.bias) + (x @ a.T @ b.T) * self.scaling


def _wrap(linear: nn.Linear, cls: type[LoRALinear], **kwargs) -> LoRALinear:
    new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, **kwargs)
    new.to(device=linear.weight.device, dtype=linear.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(linear.weight)
        if linear.bias is not None:
            new.bias.copy_(linear.bias)
    return new


def apply_lora(vit: nn.Module, *, kind: str, rank: int, alpha: float, targets: tuple[str, ...]) -> None:
    """Replace the target linears of every block with LoRA (``kind='lora'``) or DV-LoRA (``'dvlora'``)."""
    cls = {"lora": LoRALinear, "dvlora": DVLoRALinear}[kind]
    for blk in vit.blocks:
        for target in targets:
            slot = target_slot(blk, target)
            if slot is not None:
                parent, attr = slot
                setattr(parent, attr, _wrap(getattr(parent, attr), cls, rank=rank, alpha=alpha))

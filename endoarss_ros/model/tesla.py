"""TESLA: task-efficient shared low-rank adapters.

Design choice (the paper's method text is not public): the released code (github.com/gkw0010/EndoARSS,
``LibMTL/architecture/MOLA.py``) shares one LoRA set between both tasks (hard parameter sharing), and stale
bytecode shipped in that repository shows an unreleased variant with per-task adapters. The abstract says
TESLA = *shared* low-rank adapters that *mitigate gradient conflicts*. We follow MTLoRA (Agiza et al., CVPR
2024), the closest published design:

* every adapted linear has one shared low-rank pair ``(A_s, B_s)`` used by all tasks;
* in the last ``task_blocks`` blocks, each task ``t`` also has its own pair ``(A_t, B_t)``, and the token
  batch is split into one stream per task: ``y_t = W x_t + b + s_s B_s A_s x_t + s_t B_t A_t x_t``.

So the early blocks (generic features) are shared, and the two heads read *task-specific token streams*
from the top blocks, where task interference is largest. The task paths cost only the extra passes through
those few blocks. Streams are stacked task-major in the batch dimension, ``(T*B, N, D)``, so attention and
LayerNorm need no change and the whole graph stays exportable (``bmm`` only).

After training, ``merged()`` folds the shared path into the base weight; in task blocks the per-task sums
``W + dW_s + dW_t`` become a stacked ``(T, out, in)`` weight (``MultiTaskLinear``): same outputs, no adapters.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import target_slot


class TeslaLinear(nn.Linear):
    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        rank: int,
        alpha: float,
        num_tasks: int = 0,
        task_rank: int = 0,
        task_alpha: float = 0.0,
        bias: bool = True,
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.scaling = alpha / rank
        self.lora_A = nn.Parameter(torch.empty(rank, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, rank))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.num_tasks = num_tasks
        if num_tasks:
            self.task_scaling = task_alpha / task_rank
            self.task_A = nn.Parameter(torch.empty(num_tasks, task_rank, in_features))
            self.task_B = nn.Parameter(torch.zeros(num_tasks, out_features, task_rank))
            for t in range(num_tasks):
                nn.init.kaiming_uniform_(self.task_A.data[t], a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias) + (x @ self.lora_A.T @ self.lora_B.T) * self.scaling
        if self.num_tasks:
            xt = x.reshape(self.num_tasks, -1, x.shape[-1])  # task-major streams
            dt = torch.bmm(torch.bmm(xt, self.task_A.transpose(1, 2)), self.task_B.transpose(1, 2))
            y = y + (dt * self.task_scaling).reshape(y.shape)
        return y

    @torch.no_grad()
    def merged(self) -> nn.Module:
        w = self.weight + (self.lora_B @ self.lora_A) * self.scaling
        if not self.num_tasks:
            new = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None)
            new.to(device=w.device, dtype=w.dtype)
            new.weight.copy_(w)
        else:
            new = MultiTaskLinear(
                self.in_features, self.out_features, self.num_tasks, bias=self.bias is not None
            )
            new.to(device=w.device, dtype=w.dtype)
            new.weight.copy_(w.unsqueeze(0) + torch.bmm(self.task_B, self.task_A) * self.task_scaling)
        if self.bias is not None:
            new.bias.copy_(self.bias)
        new.requires_grad_(False)
        return new


class MultiTaskLinear(nn.Module):
    """A linear with one weight per task stream (the merged form of a TESLA task block)."""

    def __init__(self, in_features: int, out_features: int, num_tasks: int, *, bias: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.num_tasks = in_features, out_features, num_tasks
        self.weight = nn.Parameter(torch.zeros(num_tasks, out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xt = x.reshape(self.num_tasks, -1, x.shape[-1])
        y = torch.bmm(xt, self.weight.transpose(1, 2))
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)


def apply_tesla(
    vit: nn.Module,
    *,
    rank: int,
    alpha: float,
    targets: tuple[str, ...],
    num_tasks: int,
    task_rank: int,
    task_alpha: float,
    task_blocks: int,
    merged: bool = False,
) -> None:
    """Put TESLA layers on ``targets`` of every block; the last ``task_blocks`` blocks get task paths.

    ``merged=True`` builds the post-merge structure instead (plain / multi-task linears), so that a merged
    model saved with its config can be rebuilt and loaded.
    """
    depth = len(vit.blocks)
    task_blocks = min(task_blocks, depth) if num_tasks > 1 else 0
    vit.branch_block = depth - task_blocks
    vit.num_tasks = num_tasks if task_blocks else 1
    for i, blk in enumerate(vit.blocks):
        n_tasks = num_tasks if i >= vit.branch_block else 0
        for target in targets:
            slot = target_slot(blk, target)
            if slot is None:
                continue
            parent, attr = slot
            old = getattr(parent, attr)
            has_bias = old.bias is not None
            if merged:
                new = (
                    MultiTaskLinear(old.in_features, old.out_features, n_tasks, bias=has_bias)
                    if n_tasks
                    else nn.Linear(old.in_features, old.out_features, bias=has_bias)
                )
            else:
                new = TeslaLinear(
                    old.in_features, old.out_features, rank=rank, alpha=alpha, num_tasks=n_tasks,
                    task_rank=task_rank, task_alpha=task_alpha, bias=has_bias,
                )
            with torch.no_grad():
                if n_tasks and merged:
                    new.weight.copy_(old.weight.unsqueeze(0).expand_as(new.weight))
                else:
                    new.weight.copy_(old.weight)
                if has_bias:
                    new.bias.copy_(old.bias)
            setattr(parent, attr, new)

"""FLOPs per frame, counted by ``torch.utils.flop_counter`` (matmul/conv/attention; 1 MAC = 2 FLOPs)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@torch.no_grad()
def estimate_flops(model: nn.Module, input_size: tuple[int, int] | None = None) -> int:
    """FLOPs of one forward pass on a single ``(1, 3, H, W)`` frame (default: the working resolution).

    Counts what the model runs for that input, including the internal resize and the final upsample's
    neighbours (interpolation and elementwise ops are not counted by the flop counter, as usual).
    """

    if input_size is None:
        input_size = tuple(model.config.input_size)
    p = next(model.parameters())
    x = torch.rand(1, 3, *input_size, device=p.device, dtype=p.dtype)
    was_training = model.training
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())

"""SMA: spatially-aware multi-scale attention, built on EMA (Ouyang et al., ICASSP 2023, arXiv 2305.13563).

Two placements:

* ``PixelSMA`` -- the released one: a MobileViT-style wrapper that runs on the RGB image before the patch
  embedding (local 3x3 + 1x1 lift to ``dim`` channels, unfold into ``patch x patch`` pixel positions, EMA with
  those positions as channels, fold back, 1x1 down to RGB, fuse with the input by a 3x3 conv). It keeps
  ``(B, 512, H, W)`` intermediates: ~12 GMAC per 224-px frame.
* ``FeatureSMA`` -- ours: EMA on the ViT's patch-token grid ``(B, C, H/14, W/14)``, residual, a few MMAC.

Both are trainable here (the released code leaves its SMA frozen at its random init: its trainable-parameter
filter keeps only the LoRA matrices).
"""
from __future__ import annotations

import torch
from torch import nn


class EMA(nn.Module):
    """Efficient multi-scale attention over ``(B, C, H, W)``, channels split into ``groups`` groups.

    Per group: a directional branch (pool along W and along H, shared 1x1 conv, sigmoid gates, GroupNorm)
    and a 3x3 branch; each branch's softmaxed channel descriptor weights the other branch's map
    ("cross-spatial learning"); the resulting (H, W) map gates the input.
    """

    def __init__(self, channels: int, *, groups: int = 1):
        super().__init__()
        if channels % groups:
            raise ValueError(f"EMA: {channels} channels do not split into {groups} groups")
        self.groups = groups
        c = channels // groups
        self.gn = nn.GroupNorm(c, c)
        self.conv1x1 = nn.Conv2d(c, c, kernel_size=1)
        self.conv3x3 = nn.Conv2d(c, c, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = x.reshape(b * self.groups, c // self.groups, h, w)
        pooled_h = g.mean(dim=3, keepdim=True)  # (bg, c, h, 1)
        pooled_w = g.mean(dim=2, keepdim=True).transpose(2, 3)  # (bg, c, w, 1)
        gates = self.conv1x1(torch.cat([pooled_h, pooled_w], dim=2))
        gate_h, gate_w = gates[:, :, :h], gates[:, :, h:]
        x1 = self.gn(g * gate_h.sigmoid() * gate_w.transpose(2, 3).sigmoid())
        x2 = self.conv3x3(g)
        a1 = torch.softmax(x1.mean(dim=(2, 3)), dim=-1).unsqueeze(1)  # (bg, 1, c)
        a2 = torch.softmax(x2.mean(dim=(2, 3)), dim=-1).unsqueeze(1)
        m = a1 @ x2.flatten(2) + a2 @ x1.flatten(2)  # (bg, 1, h*w)
        return (g * m.reshape(b * self.groups, 1, h, w).sigmoid()).reshape(b, c, h, w)


class PixelSMA(nn.Module):
    """The released SMA block on pixels (``in_channels`` = 3), before the patch embedding."""

    def __init__(self, *, in_channels: int = 3, dim: int = 512, kernel_size: int = 3, patch_size: int = 7):
        super().__init__()
        self.patch = patch_size
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size, padding=pad)
        self.conv2 = nn.Conv2d(in_channels, dim, 1)
        # Channels of the EMA = the patch*patch pixel positions inside each patch.
        self.ema = EMA(patch_size * patch_size, groups=1)
        self.conv3 = nn.Conv2d(dim, in_channels, 1)
        self.conv4 = nn.Conv2d(2 * in_channels, in_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(self.conv1(x))
        b, d, h, w = y.shape
        p = self.patch
        nh, nw = h // p, w // p
        # (b, d, nh*p, nw*p) -> (b, p*p, nh*nw, d): pixel position in the patch becomes the channel.
        y = y.reshape(b, d, nh, p, nw, p).permute(0, 3, 5, 2, 4, 1).reshape(b, p * p, nh * nw, d)
        y = self.ema(y)
        y = y.reshape(b, p, p, nh, nw, d).permute(0, 5, 3, 1, 4, 2).reshape(b, d, h, w)
        return self.conv4(torch.cat([x, self.conv3(y)], dim=1))


class FeatureSMA(nn.Module):
    """EMA on a spatial feature map, residual: ``x + EMA(x)`` (= x scaled by 1 + a learned spatial gate).

    The residual form keeps the identity path, so the adapted backbone's features pass through unharmed
    while the gate learns where to emphasise.
    """

    def __init__(self, channels: int, *, groups: int = 8):
        super().__init__()
        self.ema = EMA(channels, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ema(x)


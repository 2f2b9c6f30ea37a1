"""Task heads: DeepLab ASPP segmentation head, activity head, and the high-resolution fusion branch.

Module indices inside the ``nn.Sequential`` containers follow the released heads (LibMTL's DeepLab head),
so a released checkpoint's ``decoders.segmentation.*`` / ``decoders.classification.*`` keys map by prefix.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(cin: int, cout: int, k: int = 3, *, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (k // 2)
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, stride=stride, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Sequential):
    def __init__(self, cin: int, cout: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Broadcast instead of upsampling a 1x1 map: identical values, simpler exported graph.
        return super().forward(x).expand(-1, -1, x.shape[-2], x.shape[-1])


class ASPP(nn.Module):
    """1x1 branch, three atrous 3x3 branches, image pooling; concat -> 1x1 -> BN/ReLU/Dropout."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...] = (12, 24, 36), *, dropout: float = 0.5):
        super().__init__()
        branches = [conv_bn_relu(cin, cout, 1)]
        branches += [conv_bn_relu(cin, cout, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(cout * len(branches), cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([b(x) for b in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """ASPP -> 3x3 conv/BN/ReLU -> 1x1 classifier (the released segmentation head)."""

    def __init__(
        self, cin: int, num_classes: int, *, channels: int = 256, rates: tuple[int, ...] = (12, 24, 36)
    ):
        super().__init__(
            ASPP(cin, channels, rates),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, num_classes, 1),
        )


class ActivityHead(nn.Sequential):
    """3x3 conv/BN/ReLU -> global average pool -> linear (the released classification head)."""

    def __init__(self, cin: int, num_classes: int, *, channels: int = 256):
        super().__init__(
            nn.Conv2d(cin, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(1),
            nn.Linear(channels, num_classes),
        )


class HighResSegHead(nn.Module):
    """DeepLabV3+-style segmentation head: ASPP on the 1/14 ViT map, fused with a 1/4-resolution image stem.

    1/14-resolution logits cannot draw thin instruments; the stem (two stride-2 convs on the normalised
    image) restores edges at 1/4 resolution. Output logits are at 1/4 of the working resolution.
    """

    def __init__(
        self,
        cin: int,
        num_classes: int,
        *,
        channels: int = 128,
        rates: tuple[int, ...] = (2, 4, 6),
        stem_channels: int = 32,
        decoder_channels: int = 64,
    ):
        super().__init__()
        self.aspp = ASPP(cin, channels, rates, dropout=0.1)
        self.stem = nn.Sequential(
            conv_bn_relu(3, stem_channels, 3, stride=2),
            conv_bn_relu(stem_channels, stem_channels, 3, stride=2),
        )
        self.fuse = nn.Sequential(
            conv_bn_relu(channels + stem_channels, decoder_channels, 3),
            conv_bn_relu(decoder_channels, decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, 1)

    def forward(self, features: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        low = self.stem(image)
        x = F.interpolate(self.aspp(features), size=low.shape[-2:], mode="bilinear", align_corners=False)
        return self.classifier(self.fuse(torch.cat([x, low], dim=1)))


class FeatureNeck(nn.Module):
    """Fuse tapped ViT maps ``[(B, D, h, w)] * n`` into one ``(B, C, h, w)`` map: concat -> 1x1 -> BN/ReLU."""

    def __init__(self, embed_dim: int, num_maps: int, channels: int):
        super().__init__()
        self.proj = conv_bn_relu(embed_dim * num_maps, channels, 1)

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        return self.proj(torch.cat(maps, dim=1))

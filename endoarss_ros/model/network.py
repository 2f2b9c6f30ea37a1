"""The assembled EndoARSS network (both families) and its factory."""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from .adapters import apply_lora
from .config import ModelConfig
from .heads import ActivityHead, DeepLabHead, FeatureNeck, HighResSegHead
from .sma import FeatureSMA, PixelSMA
from .tesla import apply_tesla
from .vit import PATCH_SIZE, build_vit

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TASKS = ("segmentation", "activity")  # TESLA stream order


class EndoARSSOutput(NamedTuple):
    segmentation: torch.Tensor  # (B, C, H, W) logits
    activity: torch.Tensor  # (B, K) logits


_INPUT = "input"  # output_size sentinel: upsample to the caller's image size


class EndoARSS(nn.Module):
    """EndoARSS: DINOv2 ViT + low-rank adapters + SMA, with segmentation and activity heads.

    ``forward(images)`` takes float RGB ``(B, 3, H, W)`` in ``[0, 1]`` at any size. The model resizes to its
    working resolution ``config.input_size`` and returns ``EndoARSSOutput`` with segmentation logits at
    ``(H, W)``. ``forward(images, output_size=None)`` (or ``forward_low_res``) skips that final upsample and
    returns the head's native logits (endoarss: 1/4 of the working resolution, e.g. 56x56 at 224x224),
    which is what a fast argmax wants. ``output_size=(h, w)`` upsamples to any other size.

    For the ``official`` family the native map is the released ``(tokens, D/48, 48)`` pseudo-image, which has
    no spatial meaning until it is stretched to the frame; its "low-res" logits are therefore upsampled to
    the working resolution.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        self.official = c.family == "official"
        self.backbone = build_vit(
            c.backbone,
            num_register_tokens=c.num_register_tokens,
            pos_grid=c.pos_grid,
            interpolate_offset=c.pos_interpolate_offset,
            interpolate_antialias=c.pos_interpolate_antialias,
        )
        D = self.backbone.embed_dim
        depth = len(self.backbone.blocks)
        a = c.adapter
        if a.kind in ("lora", "dvlora"):
            if not a.merged:  # merged adapters are folded into plain nn.Linear layers
                apply_lora(self.backbone, kind=a.kind, rank=a.rank, alpha=a.alpha, targets=a.targets)
        elif a.kind == "tesla":
            apply_tesla(
                self.backbone, rank=a.rank, alpha=a.alpha, targets=a.targets, num_tasks=len(TASKS),
                task_rank=a.task_rank, task_alpha=a.task_alpha, task_blocks=a.task_blocks, merged=a.merged,
            )
        self.feature_blocks = tuple(b % depth for b in c.head.feature_blocks)

        self.pixel_sma = (
            PixelSMA(dim=c.sma.dim, patch_size=c.sma.patch_size) if c.sma.placement == "pixel" else None
        )
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

        h, w = c.input_size
        if self.official:
            # Released quirk: tokens become channels, each token's D-vector a (D/48, 48) "image".
            if D % c.head.token_map_width:
                raise ValueError(f"official family: embed dim {D} not divisible by {c.head.token_map_width}")
            num_tokens = (h // PATCH_SIZE) * (w // PATCH_SIZE)
            self.feature_sma = None
            self.necks = None
            self.seg_head = DeepLabHead(
                num_tokens, c.num_seg_classes, channels=c.head.aspp_channels, rates=c.head.aspp_rates
            )
            self.activity_head = ActivityHead(
                num_tokens, c.num_activity_classes, channels=c.head.activity_channels
            )
        else:
            n_maps = len(self.feature_blocks)
            C = c.head.neck_channels
            self.necks = nn.ModuleDict({t: FeatureNeck(D, n_maps, C) for t in TASKS})
            self.feature_sma = FeatureSMA(C, groups=c.sma.groups) if c.sma.placement == "feature" else None
            if c.head.high_res:
                self.seg_head = HighResSegHead(
                    C, c.num_seg_classes, channels=c.head.aspp_channels, rates=c.head.aspp_rates,
                    stem_channels=c.head.stem_channels, decoder_channels=c.head.decoder_channels,
                )
            else:
                self.seg_head = DeepLabHead(C, c.num_seg_classes, channels=c.head.aspp_channels,
                                            rates=c.head.aspp_rates)
            self.activity_head = ActivityHead(C, c.num_activity_classes, channels=c.head.activity_channels)

    # -- pieces ----------------------------------------------------------------------------------
    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the working resolution (and normalise, for the endoarss family)."""
        size = tuple(self.config.input_size)
        if tuple(images.shape[-2:]) != size:
            images = F.interpolate(images, size=size, mode="bilinear",
                                   align_corners=self.config.resize_align_corners)
        if self.config.normalize:
            images = (images - self.mean) / self.std
        return images

    def forward_features(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-task feature maps the heads read, plus the preprocessed image under ``"image"``.

        official: both tasks get the released ``(B, tokens, D/48, 48)`` map.
        endoarss: ``(B, C, H/14, W/14)`` per task, after the neck and feature SMA.
        """
        x = self.preprocess(images)
        B = x.shape[0]
        tokens_in = self.pixel_sma(x) if self.pixel_sma is not None else x
        reshape = not self.official
        taps = self.backbone.get_intermediate_layers(tokens_in, self.feature_blocks, reshape=reshape)
        if self.official:
            patches = taps[-1][0]
            fmap = patches.reshape(B, patches.shape[1], -1, self.config.head.token_map_width)
            return {"image": x, "segmentation": fmap, "activity": fmap}
        out = {"image": x}
        for t_idx, task in enumerate(TASKS):
            maps = []
            for patches, _cls in taps:
                if patches.shape[0] != B:  # a TESLA task stream: (T*B, ...) task-major
                    patches = patches[t_idx * B : (t_idx + 1) * B]
                maps.append(patches)
            f = self.necks[task](maps)
            if self.feature_sma is not None:
                f = self.feature_sma(f)
            out[task] = f
        return out

    def forward_low_res(self, images: torch.Tensor) -> EndoARSSOutput:
        """Segmentation logits at the head's native resolution (no final upsample)."""
        return self.forward(images, output_size=None)

    def forward(
        self, images: torch.Tensor, output_size: tuple[int, int] | None | str = _INPUT
    ) -> EndoARSSOutput:
        feats = self.forward_features(images)
        if self.official:
            seg = self.seg_head(feats["segmentation"])
            if output_size is None:
                output_size = tuple(self.config.input_size)  # the pseudo-map is only meaningful stretched
        elif isinstance(self.seg_head, HighResSegHead):
            seg = self.seg_head(feats["segmentation"], feats["image"])
        else:
            seg = self.seg_head(feats["segmentation"])
        if isinstance(output_size, str):
            output_size = tuple(images.shape[-2:])
        if output_size is not None and tuple(seg.shape[-2:]) != tuple(output_size):
            seg = F.interpolate(seg, size=tuple(output_size), mode="bilinear",
                                align_corners=self.config.resize_align_corners)
        return EndoARSSOutput(segmentation=seg, activity=self.activity_head(feats["activity"]))


def build_model(config: ModelConfig) -> EndoARSS:
    """A freshly initialised model for ``config`` (train mode, like any new ``nn.Module``)."""
    return EndoARSS(config)

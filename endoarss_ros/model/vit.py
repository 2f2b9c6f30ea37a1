"""DINOv2 Vision Transformer (patch 14), written to load DINOv2's published weights key-for-key.

Parameter names follow facebookresearch/dinov2 (``cls_token``, ``pos_embed``, ``register_tokens``,
``mask_token``, ``patch_embed.proj``,
``blocks.<i>.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.*,ls2.gamma}``, ``norm``)
so that a published state dict loads without renaming.

The block stack also carries TESLA task streams: from block ``branch_block`` on, the token batch holds one
copy of the tokens per task (task-major: ``(T*B, N, D)``); the low-rank layers in those blocks add each
task's own low-rank path (see ``tesla.py``). Before that block there is a single shared stream.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import PATCH_SIZE


@dataclass(frozen=True)
class ViTPreset:
    embed_dim: int
    depth: int
    num_heads: int
    ffn: str = "mlp"  # "mlp" (GELU) or "swiglu" (DINOv2 giant)
    pos_grid: int = 37  # learned position-embedding grid side (DINOv2: 518 / 14 = 37)


VIT_PRESETS: dict[str, ViTPreset] = {
    # Ours, for tests and CPU demos: trained from scratch, so its position grid is the 224-px grid.
    "tiny": ViTPreset(embed_dim=192, depth=6, num_heads=3, pos_grid=16),
    "small": ViTPreset(embed_dim=384, depth=12, num_heads=6),
    "base": ViTPreset(embed_dim=768, depth=12, num_heads=12),
    "large": ViTPreset(embed_dim=1024, depth=24, num_heads=16),
    "giant": ViTPreset(embed_dim=1536, depth=40, num_heads=24, ffn="swiglu"),
}



class PatchEmbed(nn.Module):
    def __init__(self, *, in_chans: int = 3, embed_dim: int, patch_size: int = PATCH_SIZE):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, D)


class Attention(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, qkv_bias: bool = True, proj_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim, bias=proj_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFN(nn.Module):
    """DINOv2's fused SwiGLU (``w12`` = gate and value in one matrix, ``w3`` = output)."""

    def __init__(self, *, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8  # DINOv2's rounding, needed to match its shapes
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_value: float = 1e-5):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, *, dim: int, num_heads: int, ffn: str = "mlp", mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim=dim, num_heads=num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        ffn_cls = {"mlp": Mlp, "swiglu": SwiGLUFFN}[ffn]
        self.mlp = ffn_cls(dim=dim, hidden=int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        ffn: str = "mlp",
        pos_grid: int = 37,
        num_register_tokens: int = 0,
        interpolate_offset: float = 0.1,
        interpolate_antialias: bool = False,
    ):
        super().__init__()
        self.embed_dim = embed_dim
        self.patch_size = PATCH_SIZE
        self.num_register_tokens = num_register_tokens
        # DINOv2 hub models use offset 0.1 / no antialias; the register models use offset 0 / antialias.
        self.interpolate_offset = interpolate_offset
        self.interpolate_antialias = interpolate_antialias
        self.branch_block = depth  # first block with per-task streams (depth = never); set by TESLA
        self.num_tasks = 1
        self.patch_embed = PatchEmbed(embed_dim=embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_grid * pos_grid + 1, embed_dim))
        self.register_tokens = (
            nn.Parameter(torch.zeros(1, num_register_tokens, embed_dim)) if num_register_tokens else None
        )
        # Unused at inference (masked-image training only); kept so DINOv2 / released files load 1:1.
        self.mask_token = nn.Parameter(torch.zeros(1, embed_dim))
        self.blocks = nn.ModuleList(Block(dim=embed_dim, num_heads=num_heads, ffn=ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        if self.register_tokens is not None:
            nn.init.normal_(self.register_tokens, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, num_patches: int, h: int, w: int) -> torch.Tensor:
        """Position embedding for an ``h x w``-pixel input, resampled exactly as DINOv2 does it.

        DINOv2 passes a *scale factor* of ``(grid + offset) / M`` to bicubic interpolation (not an output
        size); PyTorch then uses that factor for the sampling positions, so the result differs from a
        size-based resize. Reproducing it is what makes published weights give published features.
        """
        pos = self.pos_embed
        M2 = pos.shape[1] - 1
        if num_patches == M2 and h == w:
            return pos
        M = int(math.sqrt(M2))
        assert M * M == M2, "position embedding must be a square grid"
        gh, gw = int(h) // self.patch_size, int(w) // self.patch_size  # python ints: static grid when traced
        patch_pos = pos[:, 1:].float().reshape(1, M, M, -1).permute(0, 3, 1, 2)
        if self.interpolate_offset:
            scale = ((gh + self.interpolate_offset) / M, (gw + self.interpolate_offset) / M)
            patch_pos = F.interpolate(
                patch_pos, scale_factor=scale, mode="bicubic", antialias=self.interpolate_antialias
            )
        else:
            patch_pos = F.interpolate(
                patch_pos, size=(gh, gw), mode="bicubic", antialias=self.interpolate_antialias
            )
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, gh * gw, -1)
        return torch.cat((pos[:, :1].float(), patch_pos), dim=1).to(pos.dtype)

    def prepare_tokens(self, x: torch.Tensor) -> torch.Tensor:
        B, _, h, w = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x.shape[1] - 1, h, w)
        if self.register_tokens is not None:
            x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        return x

    def get_intermediate_layers(
        self, x: torch.Tensor, blocks: tuple[int, ...], *, norm: bool = True, reshape: bool = False
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Tokens after the given blocks: a list of ``(patch_tokens, class_token)``.

        ``patch_tokens`` is ``(S*B, N, D)`` (or ``(S*B, D, h, w)`` with ``reshape``) and ``class_token``
        ``(S*B, D)``, where S = 1 before ``branch_block`` and S = ``num_tasks`` from it on (task-major).
        Register tokens are dropped. ``norm`` applies the final LayerNorm, as DINOv2 does.
        """
        B, _, h, w = x.shape
        wanted = {i % len(self.blocks) for i in blocks}
        out = {}
        t = self.prepare_tokens(x)
        for i, blk in enumerate(self.blocks):
            if i == self.branch_block and self.num_tasks > 1:
                t = t.repeat(self.num_tasks, 1, 1)  # one stream per task from here on
            t = blk(t)
            if i in wanted:
                out[i] = t
        result = []
        for i in blocks:
            t = out[i % len(self.blocks)]
            if norm:
                t = self.norm(t)
            cls_tok, patches = t[:, 0], t[:, 1 + self.num_register_tokens :]
            if reshape:
                patches = patches.reshape(t.shape[0], h // self.patch_size, w // self.patch_size, -1)
                patches = patches.permute(0, 3, 1, 2).contiguous()
            result.append((patches, cls_tok))
        return result


def build_vit(
    preset: str,
    *,
    num_register_tokens: int = 0,
    pos_grid: int | None = None,
    interpolate_offset: float = 0.1,
    interpolate_antialias: bool = False,
) -> DinoVisionTransformer:
    p = VIT_PRESETS[preset]
    return DinoVisionTransformer(
        embed_dim=p.embed_dim,
        depth=p.depth,
        num_heads=p.num_heads,
        ffn=p.ffn,
        pos_grid=p.pos_grid if pos_grid is None else pos_grid,
        num_register_tokens=num_register_tokens,
        interpolate_offset=interpolate_offset,
        interpolate_antialias=interpolate_antialias,
    )


def preset_for(embed_dim: int, depth: int) -> str:
    """The preset name for a backbone with this width and depth (for reading foreign weights)."""
    for name, p in VIT_PRESETS.items():
        if p.embed_dim == embed_dim and p.depth == depth:
            return name
    raise ValueError(f"no ViT preset with embed_dim={embed_dim} and depth={depth}")

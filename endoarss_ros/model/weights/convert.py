"""Foreign layouts -> our key names (released EndoARSS, DINOv2, Depth-Anything, Hugging Face Dinov2), their
position-embedding conventions, and the model configs inferred from their tensor shapes."""
from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES, AdapterConfig, ModelConfig
from ..vit import preset_for
from .read import WeightsError

# -- converters: source layout -> our backbone keys ------------------------------------------------
_RELEASED_PREFIXES = (
    ("encoder.encoder.mob.", "pixel_sma."),
    ("encoder.encoder.", "backbone."),
    ("decoders.segmentation.", "seg_head."),
    ("decoders.classification.", "activity_head."),
)
# The MobileViT Transformer that the released SMA block builds but never calls.
_RELEASED_UNUSED = ("encoder.encoder.mob.trans.*",)


class Converted(NamedTuple):
    """A foreign state dict in our key names, and what of it could not be used."""

    tensors: dict[str, torch.Tensor]
    known_unused: Sequence[str] = ()  # documented dead source keys of the format
    unmapped: Sequence[str] = ()  # source keys nothing reads
    missing: Sequence[str] = ()  # source keys the layout needs but the file lacks (named in the source's terms)


def convert_released(sd: dict[str, torch.Tensor]) -> Converted:
    out, unused, unmapped = {}, [], []
    for k, v in sd.items():
        if any(fnmatch.fnmatchcase(k, p) for p in _RELEASED_UNUSED):
            unused.append(k)
            continue
        for src, dst in _RELEASED_PREFIXES:
            if k.startswith(src):
                out[dst + k[len(src):]] = v
                break
        else:
            unmapped.append(k)
    return Converted(out, unused, unmapped)


def convert_dinov2(sd: dict[str, torch.Tensor]) -> Converted:
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("backbone.")
        # chunked-FSDP checkpoints name blocks blocks.<chunk>.<i>.
        k = re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k)
        out["backbone." + k] = v
    return Converted(out)


def convert_depth_anything(sd: dict[str, torch.Tensor]) -> Converted:
    out, unused, unmapped = {}, [], []
    for k, v in sd.items():
        if k.startswith("pretrained."):
            out["backbone." + k[len("pretrained."):]] = v
        elif k.startswith("depth_head."):
            unused.append(k)  # the DPT depth decoder: not part of an encoder
        else:
            unmapped.append(k)
    return Converted(out, unused, unmapped)


_HF_LAYER = {
    "norm1": "norm1", "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    "mlp.weights_in": "mlp.w12", "mlp.weights_out": "mlp.w3",
}
_HF_EMBEDDINGS = {
    "embeddings.cls_token": "cls_token",
    "embeddings.mask_token": "mask_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_QKV = ("query", "key", "value")
# transformers' Dinov2Config(use_mask_token=False) saves no mask token; it only serves masked-image training.
HF_OPTIONAL = ("backbone.mask_token",)


def convert_hf_dinov2(sd: dict[str, torch.Tensor]) -> Converted:
    out, unmapped, qkv = {}, [], {}
    for k, v in sd.items():
        name = k.removeprefix("dinov2.")
        m = re.match(r"^encoder\.layer\.(\d+)\.(.+)$", name)
        if m:
            i, rest = m.group(1), m.group(2)
            qm = re.match(r"^attention\.attention\.(query|key|value)\.(weight|bias)$", rest)
            if qm:
                prefix = k[: len(k) - len(name)]
                qkv.setdefault((prefix, i, qm.group(2)), {})[qm.group(1)] = v
                continue
            for src, dst in _HF_LAYER.items():
                if rest == src or rest.startswith(src + "."):
                    out[f"backbone.blocks.{i}.{dst}{rest[len(src):]}"] = v
                    break
            else:
                unmapped.append(k)
        elif name in _HF_EMBEDDINGS:
            out["backbone." + _HF_EMBEDDINGS[name]] = v
        else:
            unmapped.append(k)
    missing = []
    for (prefix, i, kind), parts in qkv.items():
        absent = [p for p in _HF_QKV if p not in parts]
        if absent:  # q, k and v are fused into one tensor: without all three there is nothing to load
            missing += [f"{prefix}encoder.layer.{i}.attention.attention.{p}.{kind}" for p in absent]
            continue
        out[f"backbone.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts[p] for p in _HF_QKV], 0)
    if "backbone.mask_token" in out and out["backbone.mask_token"].dim() == 3:
        out["backbone.mask_token"] = out["backbone.mask_token"].reshape(1, -1)
    return Converted(out, [], unmapped, sorted(missing))


CONVERTERS = {
    "released": convert_released,
    "dinov2": convert_dinov2,
    "depth_anything": convert_depth_anything,
    "hf_dinov2": convert_hf_dinov2,
}

# -- position-embedding interpolation ----------------------------------------------------------------
# Name -> {has registers: (pos_interpolate_offset, pos_interpolate_antialias)}; see docs/weights.md.
POS_INTERPOLATIONS: dict[str, dict[bool, tuple[float, bool]]] = {
    # facebookresearch/dinov2 (and transformers before 4.45): hub models pass a scale factor
    # (grid + 0.1) / M to bicubic; the register models resize to the grid size, antialiased.
    "dinov2": {False: (0.1, False), True: (0.0, True)},
    # transformers >= 4.45: Dinov2Model resizes to the grid size, bicubic, no antialias;
    # Dinov2WithRegistersModel the same with antialias (as facebookresearch/dinov2's register models).
    "transformers": {False: (0.0, False), True: (0.0, True)},
}
_DEFAULT_POS = tuple(ModelConfig.__dataclass_fields__[f].default
                     for f in ("pos_interpolate_offset", "pos_interpolate_antialias"))


def pos_interpolation_fields(own: tuple[float, bool], registers: int, config: ModelConfig | None,
                       requested: str | None, path) -> dict:
    """The position-interpolation fields for a model built from a file whose own convention is ``own``.

    The file's convention wins over a ``config`` left at the defaults; ``requested`` (a POS_INTERPOLATIONS
    name) replaces it; a config that explicitly asks for a third one is an error, not a silent choice."""
    want = own
    if requested is not None:
        if requested not in POS_INTERPOLATIONS:
            raise ValueError(f"pos_interpolation must be one of {sorted(POS_INTERPOLATIONS)}, got {requested!r}")
        want = POS_INTERPOLATIONS[requested][registers > 0]
    if config is not None:
        asked = (config.pos_interpolate_offset, config.pos_interpolate_antialias)
        if asked not in (_DEFAULT_POS, want):
            raise WeightsError(
                f"weights {path}: the config asks for position interpolation offset={asked[0]} "
                f"antialias={asked[1]}, but the file's convention is offset={want[0]} antialias={want[1]}; "
                f"leave those config fields at their defaults, or pass pos_interpolation= "
                f"({' or '.join(sorted(POS_INTERPOLATIONS))})")
    return dict(pos_interpolate_offset=want[0], pos_interpolate_antialias=want[1])


# -- configs inferred from foreign weights -------------------------------------------------------
def _backbone_shape(sd: dict[str, torch.Tensor]) -> tuple[str, int, int]:
    """(preset, register tokens, pos grid side) of a converted ``backbone.*`` state dict."""
    embed_dim = sd["backbone.cls_token"].shape[-1]
    blocks = [int(m.group(1)) for k in sd if (m := re.match(r"^backbone\.blocks\.(\d+)\.", k))]
    if not blocks:
        raise KeyError("no transformer blocks (backbone.blocks.N.*)")
    depth = 1 + max(blocks)
    regs = sd["backbone.register_tokens"].shape[1] if "backbone.register_tokens" in sd else 0
    grid = int(round((sd["backbone.pos_embed"].shape[1] - 1) ** 0.5))
    return preset_for(embed_dim, depth), regs, grid


def config_for_released(sd: dict[str, torch.Tensor]) -> ModelConfig:
    """Architecture of a released checkpoint, read from its tensor shapes."""
    preset, regs, grid = _backbone_shape(sd)
    n_seg = sd["seg_head.4.weight"].shape[0]
    n_act = sd["activity_head.5.weight"].shape[0]
    seg = [f"class_{i}" for i in range(n_seg)]
    act = [f"class_{i}" for i in range(n_act)]
    if n_seg == len(MTLESD_SEG_CLASSES) and n_act == len(MTLESD_ACTIVITY_CLASSES):
        seg, act = list(MTLESD_SEG_CLASSES), list(MTLESD_ACTIVITY_CLASSES)
    cfg = ModelConfig.official(seg_classes=seg, activity_classes=act, backbone=preset, pos_grid=grid)
    fc1_a = sd.get("backbone.blocks.0.mlp.fc1.lora_A")
    if fc1_a is None:
        adapter = AdapterConfig(kind="none", task_blocks=0)
    else:
        kind = "dvlora" if any(k.endswith(".lora_U") or k.endswith(".lora_V") for k in sd) else "lora"
        r = fc1_a.shape[0]
        adapter = AdapterConfig(kind=kind, rank=r, alpha=float(r), targets=("fc1", "fc2"), task_blocks=0)
    return cfg.replace(adapter=adapter, num_register_tokens=regs)


def config_for_backbone(sd: dict[str, torch.Tensor], base: ModelConfig | None, *, path="",
                        pos_interpolation: str | None = None) -> ModelConfig:
    """A new ``endoarss`` model config around a converted backbone-only state dict (``base``: heads etc.)."""
    preset, regs, grid = _backbone_shape(sd)
    cfg = base if base is not None else ModelConfig.endoarss(backbone=preset)
    if cfg.backbone != preset:
        raise WeightsError(f"the file holds a '{preset}' backbone but the config asks for '{cfg.backbone}'")
    own = POS_INTERPOLATIONS["dinov2"][regs > 0]  # these layouts all carry DINOv2's published weights
    return cfg.replace(num_register_tokens=regs, pos_grid=grid,
                       **pos_interpolation_fields(own, regs, base, pos_interpolation, path))



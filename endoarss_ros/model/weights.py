"""Weights: safe reading, format detection, converters, our own format, and ``load_model``.

Formats read:

* ``endoarss``: ours, ``<name>.safetensors`` with the config JSON in its metadata (+ sibling ``.yaml``);
* ``released``: the paper's checkpoints, ``torch.save(model.state_dict())`` of the released trainer
  (``encoder.encoder.*``, ``decoders.segmentation.*``, ``decoders.classification.*``);
* ``dinov2``: DINOv2 backbones as published (``dinov2_vits14_pretrain.pth``, ``*_reg4_pretrain.pth``);
* ``depth_anything``: Depth-Anything V1 (encoder under ``pretrained.``, DPT decoder under ``depth_head.``);
* ``hf_dinov2``: Hugging Face ``Dinov2Model`` / ``Dinov2WithRegistersModel`` safetensors.

Backbone-only formats become the backbone of a new ``endoarss`` model (adapters, SMA and heads fresh). Their
position embeddings are resampled by the file's own convention (``POS_INTERPOLATIONS``); ``pos_interpolation=``
picks another one, and a ``config`` that asks for a different one is an error.

Every key is accounted for: a source key that nothing reads, or a model key that nothing fills, is an error
listing them, unless the caller ignores it (``ignore_keys``) or the format documents it as known-unused
(the released SMA's never-called Transformer, Depth-Anything's depth decoder).

Files are data: safetensors, or ``torch.load(weights_only=True)``. A pickle that wants to run code is
refused with ``UnsafeCheckpointError``. A truncated or damaged file is a ``WeightsError`` that names the file
and the cause in one line.
"""
from __future__ import annotations

import fnmatch
import pickle
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from .adapters import is_adapter_param
from .config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES, AdapterConfig, ModelConfig
from .network import EndoARSS, build_model
from .vit import preset_for

CONFIG_METADATA_KEY = "endoarss_config"
FORMAT_METADATA_KEY = "format"


class WeightsError(RuntimeError):
    """A weights file that cannot be read into the model."""


class UnsafeCheckpointError(WeightsError):
    """A pickle checkpoint that needs arbitrary code (or non-tensor objects) to load."""


class KeyMismatchError(WeightsError):
    def __init__(self, path, missing: list[str], unexpected: list[str], shape: list[str]):
        self.missing, self.unexpected, self.shape = missing, unexpected, shape
        parts = [f"weights {path} do not fit the model:"]
        for title, keys in (("missing (model keys not in the file)", missing),
                            ("unexpected (file keys nothing reads)", unexpected),
                            ("shape mismatch", shape)):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys) - 20} more)" if len(keys) > 20 else "")
                parts.append(f"  {len(keys)} {title}: {shown}")
        parts.append("  (pass ignore_keys=[...] to load_model to ignore file keys on purpose)")
        super().__init__("\n".join(parts))


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: int = 0
    known_unused: list[str] = field(default_factory=list)  # documented dead keys of the format
    ignored: list[str] = field(default_factory=list)  # keys the caller chose to ignore
    fresh: list[str] = field(default_factory=list)  # model keys initialised fresh (backbone-only formats)


# -- reading files ------------------------------------------------------------------------------
def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and metadata of a weights file (safetensors, or a weights-only torch pickle)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no weights file at {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    if _looks_like_safetensors(head):

        tensors, meta = {}, {}
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = dict(f.metadata() or {})
                for k in f.keys():
                    tensors[k] = f.get_tensor(k)
        except Exception as e:  # noqa: BLE001 - SafetensorError and friends: all mean "damaged file"
            raise WeightsError(f"cannot read weights file {path}: not a valid safetensors file "
                               f"({_one_line(e)}); it is truncated or damaged") from e
        return tensors, meta
    _check_zip_checksums(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(e)
        if "operand" in detail.lower():  # not a pickle opcode at all: damaged bytes, not foreign code
            raise WeightsError(f"cannot read weights file {path}: not a valid pickle ({detail}); it is "
                               "truncated, damaged or not a weights file") from e
        raise UnsafeCheckpointError(
            f"refusing to load {path}: it is a pickle that needs code or objects beyond plain tensors to "
            f"unpickle (torch.load weights_only=True said: {detail}). Weights files are "
            f"treated as data; convert it to safetensors in a trusted environment."
        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise WeightsError(f"cannot read weights file {path}: {_one_line(e)}; it is truncated, damaged or "
                           "not a weights file") from e
    return _unwrap(obj, path), {}


def _check_zip_checksums(path: Path) -> None:
    """``torch.save`` files are zip archives with a CRC-32 per entry, which torch.load does not verify:
    check them, so that bit flips in tensor data are an error instead of silently wrong weights."""

    if not zipfile.is_zipfile(path):
        return  # the legacy (pre-1.6) format: no checksums
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except Exception as e:  # noqa: BLE001 - zipfile raises several kinds for a damaged archive
        raise WeightsError(f"cannot read weights file {path}: damaged zip archive ({_one_line(e)})") from e
    if bad is not None:
        raise WeightsError(f"cannot read weights file {path}: its data is damaged (CRC-32 mismatch in {bad})")


def _unpickler_detail(error: BaseException) -> str:
    """The line of torch's weights-only refusal that says what failed (the rest is boilerplate)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return (specific or lines or ["no message"])[-1]


def _one_line(error: BaseException) -> str:
    """``Type: first line of the message`` (torch and safetensors messages can span many lines)."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else 'no message'}"


def _looks_like_safetensors(head: bytes) -> bool:
    # 8-byte little-endian header length, then a JSON object.
    return len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < 100_000_000


def _unwrap(obj, path) -> dict[str, torch.Tensor]:
    # Training checkpoints often nest the weights; accept the usual wrappers.
    for key in ("state_dict", "model", "model_state_dict", "teacher"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path} does not hold a state dict of tensors")
    return dict(obj)


# -- format detection ---------------------------------------------------------------------------
def detect_format(keys, metadata: dict[str, str] | None = None) -> str:
    keys = list(keys)
    if metadata and CONFIG_METADATA_KEY in metadata:
        return "endoarss"
    ks = set(keys)
    if any(k.startswith("encoder.encoder.") for k in ks) and any(k.startswith("decoders.") for k in ks):
        return "released"
    if any(k.startswith("pretrained.blocks.") for k in ks):
        return "depth_anything"
    if any(re.match(r"^(dinov2\.)?embeddings\.patch_embeddings\.", k) for k in ks):
        return "hf_dinov2"
    if "patch_embed.proj.weight" in ks or any(k.startswith("backbone.patch_embed.") for k in ks):
        return "dinov2"
    raise WeightsError(
        "unrecognised weights layout (expected an EndoARSS safetensors, a released EndoARSS checkpoint, "
        f"DINOv2, Depth-Anything or Hugging Face Dinov2 weights); first keys: {keys[:5]}"
    )


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


def _pos_interpolation(own: tuple[float, bool], registers: int, config: ModelConfig | None,
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
                       **_pos_interpolation(own, regs, base, pos_interpolation, path))


# -- loading into a model ------------------------------------------------------------------------
def _match_ignored(key: str, patterns) -> bool:
    return any(key == p or fnmatch.fnmatchcase(key, p) or key.startswith(p.rstrip("*")) and p.endswith("*")
               for p in patterns)


def load_state_dict_strict(
    model: nn.Module,
    sd: dict[str, torch.Tensor],
    *,
    path,
    allow_missing=lambda k: False,
) -> tuple[int, list[str]]:
    """Copy ``sd`` into ``model``; all keys on both sides must match.

    ``allow_missing(key)`` exempts model keys that the file need not fill (they keep their fresh init).
    """
    own = model.state_dict()
    missing = sorted(k for k in own if k not in sd and not allow_missing(k))
    fresh = sorted(k for k in own if k not in sd and allow_missing(k))
    unexpected = sorted(k for k in sd if k not in own)
    shape = sorted(f"{k} (file {tuple(v.shape)} vs model {tuple(own[k].shape)})"
                   for k, v in sd.items() if k in own and own[k].shape != v.shape)
    if missing or unexpected or shape:
        raise KeyMismatchError(path, missing, unexpected, shape)
    model.load_state_dict(sd, strict=False)
    return len(sd), fresh


def load_model(
    path: str | Path,
    *,
    device: str | torch.device = "cpu",
    ignore_keys=(),
    config: ModelConfig | None = None,
    dtype: torch.dtype | None = None,
    pos_interpolation: str | None = None,
    return_report: bool = False,
):
    """Load any supported weights file into a ready ``EndoARSS`` in eval mode.

    * ours (safetensors + config): the stored config (``config`` overrides it, e.g. another input size);
    * released checkpoints: ``official`` architecture inferred from the tensor shapes;
    * DINOv2 / Depth-Anything / HF Dinov2 backbones: a new ``endoarss`` model (``config`` to choose its
      heads/adapters; default ``ModelConfig.endoarss`` with the file's backbone), fresh adapters, SMA, heads.

    ``ignore_keys``: file keys (exact, or fnmatch patterns like ``"head.*"``) to drop on purpose.
    ``pos_interpolation``: a ``POS_INTERPOLATIONS`` name (``"transformers"`` for a backbone fine-tuned with
    Hugging Face transformers); default: the file's own convention.
    """
    path = _resolve(path)
    sd, meta = read_state_dict(path)
    fmt = detect_format(sd.keys(), meta)
    ignored = sorted(k for k in sd if _match_ignored(k, ignore_keys))
    sd = {k: v for k, v in sd.items() if k not in set(ignored)}
    report = LoadReport(path=str(path), format=fmt, ignored=ignored)
    try:
        model, report.loaded, report.known_unused, report.fresh = _build_and_fill(
            fmt, sd, meta, path, config, pos_interpolation)
    except (KeyError, IndexError) as e:  # a file that claims a layout it does not hold
        raise WeightsError(f"weights {path}: not a consistent {fmt} file ({_one_line(e)})") from e
    model = model.to(device=device)
    if dtype is not None:
        model = model.to(dtype=dtype)
    model.eval()
    model.load_report = report
    return (model, report) if return_report else model


def _build_and_fill(fmt: str, sd: dict, meta: dict, path: Path, config: ModelConfig | None,
                    pos_interpolation: str | None) -> tuple[EndoARSS, int, list[str], list[str]]:
    """(model, tensors loaded, known-unused file keys, freshly initialised model keys)."""
    if fmt in ("endoarss", "released"):
        if fmt == "endoarss":
            conv = Converted(sd)
            stored = _stored_config(meta, path)
            own = (stored.pos_interpolate_offset, stored.pos_interpolate_antialias)
        else:
            conv = CONVERTERS[fmt](sd)
            _check_converted(conv, path)
            stored = config_for_released(conv.tensors) if config is None else None
            own = POS_INTERPOLATIONS["dinov2"][False]  # the released code: DINOv2 hub ViT-B, no registers
        cfg = stored if config is None else config
        cfg = cfg.replace(**_pos_interpolation(own, cfg.num_register_tokens, config, pos_interpolation, path))
        model = build_model(cfg)
        loaded, _ = load_state_dict_strict(model, conv.tensors, path=path)
        return model, loaded, sorted(conv.known_unused), []
    conv = CONVERTERS[fmt](sd)
    _check_converted(conv, path)
    cfg = config_for_backbone(conv.tensors, config, path=path, pos_interpolation=pos_interpolation)
    model = build_model(cfg)
    optional = HF_OPTIONAL if fmt == "hf_dinov2" else ()
    # The file fills the backbone's base weights; adapters, SMA, necks and heads start fresh.
    loaded, fresh = load_state_dict_strict(
        model, conv.tensors, path=path,
        allow_missing=lambda k: not k.startswith("backbone.") or is_adapter_param(k) or k in optional,
    )
    return model, loaded, sorted(conv.known_unused), fresh


def _check_converted(conv: Converted, path) -> None:
    if conv.unmapped or conv.missing:
        raise KeyMismatchError(path, sorted(conv.missing), sorted(conv.unmapped), [])


def _stored_config(meta: dict[str, str], path) -> ModelConfig:
    try:
        return ModelConfig.from_json(meta[CONFIG_METADATA_KEY])
    except (ValueError, TypeError) as e:  # JSON damage, or fields a config cannot hold
        raise WeightsError(f"weights {path}: the model config stored in the file cannot be read "
                           f"({_one_line(e)}); the file is damaged") from e


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file():
        return p
    for suffix in (".safetensors",):
        q = p.with_name(p.name + suffix)
        if q.is_file():
            return q
    if p.suffix == ".yaml" and p.with_suffix(".safetensors").is_file():
        return p.with_suffix(".safetensors")
    raise FileNotFoundError(f"no weights file at {p}")


def save_model(model: EndoARSS, path: str | Path) -> Path:
    """Write ``<path>.safetensors`` (config JSON in its metadata) and the same config as ``<path>.yaml``."""

    p = Path(path)
    if p.suffix in (".safetensors", ".yaml"):
        p = p.with_suffix("")
    p.parent.mkdir(parents=True, exist_ok=True)
    target = p.with_name(p.name + ".safetensors")
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {CONFIG_METADATA_KEY: model.config.to_json(), FORMAT_METADATA_KEY: "endoarss"}
    save_file(sd, str(target), metadata=meta)
    model.config.to_yaml(p.with_name(p.name + ".yaml"))
    return target


def describe_report(report: LoadReport) -> str:
    lines = [f"{report.path}: format {report.format}, {report.loaded} tensors loaded"]
    if report.known_unused:
        lines.append(f"  {len(report.known_unused)} known-unused file keys (documented dead weights), e.g. "
                     f"{report.known_unused[0]}")
    if report.ignored:
        lines.append(f"  {len(report.ignored)} file keys ignored on request")
    if report.fresh:
        lines.append(f"  {len(report.fresh)} model tensors freshly initialised (adapters/SMA/heads)")
    return "\n".join(lines)


__all__ = [
    "POS_INTERPOLATIONS", "KeyMismatchError", "LoadReport", "UnsafeCheckpointError", "WeightsError",
    "describe_report",
    "detect_format", "load_model", "read_state_dict", "save_model",
]

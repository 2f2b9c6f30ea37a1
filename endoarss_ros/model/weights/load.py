"""Loading any supported weights file into a ready model (every key accounted for), and saving ours."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from ..adapters import is_adapter_param
from ..config import ModelConfig
from ..network import EndoARSS, build_model
from .convert import (
    CONVERTERS,
    HF_OPTIONAL,
    POS_INTERPOLATIONS,
    Converted,
    config_for_backbone,
    config_for_released,
    pos_interpolation_fields,
)
from .read import (
    CONFIG_METADATA_KEY,
    FORMAT_METADATA_KEY,
    KeyMismatchError,
    WeightsError,
    detect_format,
    one_line,
    read_state_dict,
)


@dataclass
class LoadReport:
    path: str
    format: str
    loaded: int = 0
    known_unused: list[str] = field(default_factory=list)  # documented dead keys of the format
    ignored: list[str] = field(default_factory=list)  # keys the caller chose to ignore
    fresh: list[str] = field(default_factory=list)  # model keys initialised fresh (backbone-only formats)


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
        raise WeightsError(f"weights {path}: not a consistent {fmt} file ({one_line(e)})") from e
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
        cfg = cfg.replace(**pos_interpolation_fields(own, cfg.num_register_tokens, config, pos_interpolation, path))
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
                           f"({one_line(e)}); the file is damaged") from e


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



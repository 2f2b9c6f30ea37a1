"""Reading weights files safely: safetensors, or ``torch.load(weights_only=True)`` with the zip archive's CRC-32s
checked; format detection; the errors every weights problem becomes (one line naming the file and the cause)."""
from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch
from safetensors import safe_open

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
                               f"({one_line(e)}); it is truncated or damaged") from e
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
        raise WeightsError(f"cannot read weights file {path}: {one_line(e)}; it is truncated, damaged or "
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
        raise WeightsError(f"cannot read weights file {path}: damaged zip archive ({one_line(e)})") from e
    if bad is not None:
        raise WeightsError(f"cannot read weights file {path}: its data is damaged (CRC-32 mismatch in {bad})")


def _unpickler_detail(error: BaseException) -> str:
    """The line of torch's weights-only refusal that says what failed (the rest is boilerplate)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation")
    specific = [line for line in lines if not line.startswith(boilerplate)]
    return (specific or lines or ["no message"])[-1]


def one_line(error: BaseException) -> str:
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



"""Weights: safe reading and format detection (``read``), converters (``convert``), loading and saving (``load``).

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

from .convert import POS_INTERPOLATIONS
from .load import LoadReport, describe_report, load_model, save_model
from .read import KeyMismatchError, UnsafeCheckpointError, WeightsError, detect_format, read_state_dict

__all__ = [
    "POS_INTERPOLATIONS", "KeyMismatchError", "LoadReport", "UnsafeCheckpointError", "WeightsError",
    "describe_report", "detect_format", "load_model", "read_state_dict", "save_model",
]

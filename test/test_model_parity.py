"""Parity with the released EndoARSS code, through the public loader.

The fixture (test/fixtures/endoarss_official) holds the released model's key manifest with a deterministic
init recipe, an input frame and the released code's outputs for those weights. We rebuild the weights,
save them exactly like the released trainer (``torch.save(state_dict)``), load with ``load_model``, and
compare features, segmentation and activity logits.
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from endoarss_ros.model import load_model
from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES

FIXTURES = Path(__file__).parent / "fixtures" / "endoarss_official"
TOL = 1e-4


def _tensor(entry: dict) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(entry["key"].encode()))
    shape, init = entry["shape"], entry["init"]
    if init == "normal_0.02":
        t = torch.randn(shape, generator=g) * 0.02
    elif init == "normal_0.1":
        t = torch.randn(shape, generator=g) * 0.1
    elif init == "one_plus_normal_0.1":
        t = 1 + torch.randn(shape, generator=g) * 0.1
    elif init == "uniform_0.5_1.5":
        t = 0.5 + torch.rand(shape, generator=g)
    elif init == "zeros":
        t = torch.zeros(shape)
    else:
        raise ValueError(f"unknown init rule {init!r}")
    return t.to(getattr(torch, entry["dtype"]))


@pytest.fixture(scope="module")
def released_checkpoint(tmp_path_factory) -> Path:
    manifest = json.loads((FIXTURES / "manifest_mtlesd.json").read_text())
    sd = {e["key"]: _tensor(e) for e in manifest["keys"]}  # dict order = the released state_dict order
    path = tmp_path_factory.mktemp("released") / "mtl_MOLA_DB_MTL_best.pt"
    torch.save(sd, path)
    return path


def test_released_checkpoint_matches_released_outputs(released_checkpoint):
    torch.set_num_threads(min(torch.get_num_threads(), 2))
    model, report = load_model(released_checkpoint, return_report=True)
    assert not model.training
    cfg = model.config
    assert report.format == "released"
    assert cfg.family == "official" and cfg.backbone == "base" and cfg.num_register_tokens == 0
    assert cfg.seg_classes == MTLESD_SEG_CLASSES and cfg.activity_classes == MTLESD_ACTIVITY_CLASSES
    assert cfg.adapter.kind == "dvlora" and cfg.adapter.rank == 4
    # The SMA's never-called Transformer is accounted for as known-unused; nothing else is dropped.
    manifest = json.loads((FIXTURES / "manifest_mtlesd.json").read_text())
    trans = sorted(e["key"] for e in manifest["keys"] if e["key"].startswith("encoder.encoder.mob.trans."))
    assert report.known_unused == trans and len(trans) == 33
    assert report.loaded == len(manifest["keys"]) - len(trans)
    assert report.ignored == [] and report.fresh == []
    # mask_token is loaded into the ViT's parameter, DV-LoRA U/V into the adapters.
    sd = torch.load(released_checkpoint, weights_only=True)
    assert torch.equal(model.backbone.mask_token, sd["encoder.encoder.mask_token"])
    assert torch.equal(model.backbone.blocks[3].mlp.fc2.lora_V, sd["encoder.encoder.blocks.3.mlp.fc2.lora_V"])

    data = np.load(FIXTURES / "parity_mtlesd.npz")
    x = torch.from_numpy(data["input"])
    with torch.no_grad():
        feats = model.forward_features(x)
        out = model(x)
    diffs = {
        "features": (feats["segmentation"] - torch.from_numpy(data["features"])).abs().max().item(),
        "segmentation": (out.segmentation - torch.from_numpy(data["seg_logits"])).abs().max().item(),
        "activity": (out.activity - torch.from_numpy(data["cls_logits"])).abs().max().item(),
    }
    print("parity max-abs diffs:", diffs)
    assert feats["segmentation"].shape == (1, 256, 16, 48)
    assert out.segmentation.shape == (1, 7, 244, 244) and out.activity.shape == (1, 3)
    assert all(d <= TOL for d in diffs.values()), diffs

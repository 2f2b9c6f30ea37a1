"""Config round trips, presets, and the forward contract (any input size, low-res fast path)."""
from __future__ import annotations

import pytest
import torch

from endoarss_ros.model import EndoARSSOutput, ModelConfig, build_model
from endoarss_ros.model.config import MTLESD_SEG_CLASSES

torch.set_num_threads(min(torch.get_num_threads(), 2))


def test_config_round_trips(tmp_path):
    for cfg in (ModelConfig.official_mtlesd(), ModelConfig.endoarss_tiny(), ModelConfig.endoarss_base(
            seg_classes=["bg", "a"], activity_classes=["x"], input_size=(252, 336))):
        assert ModelConfig.from_dict(cfg.to_dict()) == cfg
        assert ModelConfig.from_json(cfg.to_json()) == cfg
        cfg.to_yaml(tmp_path / "c.yaml")
        assert ModelConfig.from_yaml(tmp_path / "c.yaml") == cfg


def test_presets():
    off = ModelConfig.official_mtlesd()
    assert off.family == "official" and off.backbone == "base" and off.num_register_tokens == 0
    assert off.seg_classes == MTLESD_SEG_CLASSES and off.seg_classes[1] == "FPCW Forceps"
    assert off.seg_classes[6] == "Marking Area" and len(off.activity_classes) == 3
    assert not off.normalize and off.resize_align_corners and off.sma.placement == "pixel"
    assert off.adapter.kind == "dvlora" and off.adapter.targets == ("fc1", "fc2")
    tiny = ModelConfig.endoarss_tiny()
    assert tiny.normalize and tiny.sma.placement == "feature" and tiny.adapter.kind == "tesla"
    assert tiny.head.high_res
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig.endoarss_tiny(input_size=(220, 224))
    with pytest.raises(ValueError, match="unknown"):
        ModelConfig.from_dict({"family": "endoarss", "bogus": 1})


@pytest.mark.parametrize("size", [(224, 224), (180, 320), (97, 131)])
def test_forward_any_size(size):
    model = build_model(ModelConfig.endoarss_tiny()).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        out = model(x)
        low = model(x, output_size=None)
        custom = model(x, output_size=(50, 60))
    assert isinstance(out, EndoARSSOutput)
    assert out.segmentation.shape == (2, 7, *size) and out.activity.shape == (2, 3)
    assert low.segmentation.shape == (2, 7, 56, 56)  # 1/4 of the 224x224 working resolution
    assert custom.segmentation.shape == (2, 7, 50, 60)
    assert torch.equal(model.forward_low_res(x).segmentation, low.segmentation)
    assert torch.allclose(low.activity, out.activity)


def test_endoarss_features_are_spatial_and_task_specific():
    cfg = ModelConfig.endoarss_tiny(input_size=(168, 224))
    model = build_model(cfg).eval()
    for n, p in model.named_parameters():
        if "task_B" in n:
            p.data.normal_(0, 0.05)
    with torch.no_grad():
        f = model.forward_features(torch.rand(1, 3, 168, 224))
    assert f["segmentation"].shape == (1, cfg.head.neck_channels, 12, 16)
    assert f["activity"].shape == f["segmentation"].shape
    # Separate TESLA streams (and necks) give the two heads different features.
    assert not torch.allclose(f["segmentation"], f["activity"])


def test_official_low_res_is_working_resolution():
    model = build_model(ModelConfig.official(backbone="tiny", input_size=(112, 112))).eval()
    with torch.no_grad():
        low = model(torch.rand(1, 3, 150, 150), output_size=None)
    assert low.segmentation.shape == (1, 7, 112, 112)

"""Merging adapters: same outputs (<= 1e-5 relative), adapter modules gone, merged model saves/loads."""
from __future__ import annotations

import pytest
import torch

from endoarss_ros.model import ModelConfig, build_model, load_model, merge_adapters, save_model
from endoarss_ros.model.adapters import LoRALinear
from endoarss_ros.model.config import AdapterConfig
from endoarss_ros.model.tesla import MultiTaskLinear, TeslaLinear

torch.set_num_threads(min(torch.get_num_threads(), 2))


def _randomise_adapters(model):
    g = torch.Generator().manual_seed(0)
    for n, p in model.named_parameters():
        if any(m in n for m in ("lora_", "task_")):
            p.data = torch.randn(p.shape, generator=g) * 0.05


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


CONFIGS = {
    "tesla": lambda: ModelConfig.endoarss_tiny(input_size=(112, 140)),
    "tesla_all_targets": lambda: ModelConfig.endoarss_tiny(
        input_size=(112, 112), adapter=AdapterConfig(targets=("qkv", "proj", "fc1", "fc2"), task_blocks=3)),
    "lora": lambda: ModelConfig.endoarss_tiny(input_size=(112, 112), adapter=AdapterConfig(kind="lora")),
    "official_dvlora": lambda: ModelConfig.official(backbone="tiny", input_size=(112, 112)),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_merge_preserves_outputs(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(CONFIGS[name]()).eval()
    _randomise_adapters(model)
    x = torch.rand(2, 3, 120, 150)
    with torch.no_grad():
        before = model(x)
    n_params = sum(p.numel() for p in model.parameters())
    merge_adapters(model)
    assert not any(isinstance(m, (LoRALinear, TeslaLinear)) for m in model.modules())
    assert not any(any(k in n for k in ("lora_", "task_A", "task_B")) for n, _ in model.named_parameters())
    assert sum(p.numel() for p in model.parameters()) < n_params or name.startswith("tesla")
    assert model.config.adapter.merged
    with torch.no_grad():
        after = model(x)
    assert _rel(after.segmentation, before.segmentation) <= 1e-5
    assert _rel(after.activity, before.activity) <= 1e-5
    if name.startswith("tesla"):
        assert any(isinstance(m, MultiTaskLinear) for m in model.modules())
    # The merged model round-trips through our format (its config says "merged").
    save_model(model, tmp_path / "merged")
    loaded = load_model(tmp_path / "merged.safetensors")
    with torch.no_grad():
        again = loaded(x)
    assert torch.equal(again.segmentation, after.segmentation)

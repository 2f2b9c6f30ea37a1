"""Frozen-backbone fine-tuning: only adapters, SMA and heads get gradients; counts checked."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from endoarss_ros.model import (
    ModelConfig,
    build_model,
    count_parameters,
    freeze_for_adapter_training,
    print_parameter_summary,
)
from endoarss_ros.model.finetune import parameter_groups

torch.set_num_threads(min(torch.get_num_threads(), 2))


def _step(model, size=(112, 112)):
    x = torch.rand(2, 3, *size)
    out = model(x)
    seg_t = torch.randint(0, out.segmentation.shape[1], (2, *size))
    act_t = torch.randint(0, out.activity.shape[1], (2,))
    loss = F.cross_entropy(out.segmentation, seg_t) + F.cross_entropy(out.activity, act_t)
    loss.backward()


def _check_grads(model):
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0 or "lora_A" in name or "task_A" in name, name
        else:
            assert p.grad is None, name
        if name.startswith("backbone.") and not any(m in name for m in ("lora_A", "lora_B", "task_A", "task_B")):
            assert not p.requires_grad, name


def test_endoarss_tiny_adapter_training(capsys):
    torch.manual_seed(0)
    model = build_model(ModelConfig.endoarss_tiny(input_size=(112, 112)))
    freeze_for_adapter_training(model).train()
    counts = print_parameter_summary(model)
    printed = capsys.readouterr().out
    assert f"{counts['trainable']:,}" in printed and f"{counts['total']:,}" in printed
    groups = parameter_groups(model)
    assert groups["backbone"]["trainable"] == 0
    assert groups["adapters"]["trainable"] == groups["adapters"]["total"] > 0
    for part in ("sma", "neck", "segmentation head", "activity head"):
        assert groups[part]["trainable"] == groups[part]["total"] > 0, part
    expected = sum(g["trainable"] for g in groups.values())
    assert counts == {"total": sum(p.numel() for p in model.parameters()), "trainable": expected}
    # TESLA tiny: rank-4 shared on qkv/fc1/fc2 of 6 blocks + rank-4 task paths (2 tasks) in the last block.
    d, h = 192, 768
    per_block = 4 * ((d + 3 * d) + (d + h) + (h + d))
    assert groups["adapters"]["total"] == 6 * per_block + 2 * per_block
    _step(model)
    _check_grads(model)


def test_official_tiny_adapter_training():
    """Official family: DV-LoRA A/B train, U/V stay frozen (as released); the pixel SMA trains here."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.official(backbone="tiny", input_size=(112, 112)))
    freeze_for_adapter_training(model).train()
    # lora_B starts at zero, so give it a value: otherwise lora_A's gradient is exactly zero.
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.01)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert not any(n.endswith(("lora_U", "lora_V")) for n in trainable)
    assert any(n.startswith("pixel_sma.") for n in trainable)
    d, h, r = 192, 768, 4
    lora = 6 * r * ((d + h) + (h + d))
    sma = sum(p.numel() for p in model.pixel_sma.parameters())
    heads = sum(p.numel() for p in model.seg_head.parameters()) + sum(
        p.numel() for p in model.activity_head.parameters())
    assert count_parameters(model)["trainable"] == lora + sma + heads
    _step(model, (112, 112))
    _check_grads(model)

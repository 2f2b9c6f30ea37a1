"""Every weights layout load_model reads, with synthetic state dicts built here (no downloads)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from endoarss_ros.model import (
    KeyMismatchError,
    ModelConfig,
    WeightsError,
    build_model,
    load_model,
    save_model,
)
from endoarss_ros.model.vit import build_vit

torch.set_num_threads(min(torch.get_num_threads(), 2))


def _dinov2_state(num_register_tokens: int = 0, pos_grid: int = 37) -> dict[str, torch.Tensor]:
    """A DINOv2-hub-style backbone state dict (tiny width to stay fast), random non-trivial values."""
    torch.manual_seed(0)
    vit = build_vit("tiny", num_register_tokens=num_register_tokens, pos_grid=pos_grid)
    sd = vit.state_dict()
    return {k: torch.randn_like(v) * 0.05 if v.dtype.is_floating_point else v for k, v in sd.items()}


def _to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in Hugging Face ``Dinov2Model`` naming (q/k/v split)."""
    out = {
        "embeddings.cls_token": sd["cls_token"],
        "embeddings.mask_token": sd["mask_token"],
        "embeddings.position_embeddings": sd["pos_embed"],
        "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
        "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
        "layernorm.weight": sd["norm.weight"],
        "layernorm.bias": sd["norm.bias"],
    }
    if "register_tokens" in sd:
        out["embeddings.register_tokens"] = sd["register_tokens"]
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(n):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[b + f"attn.qkv.{kind}"].chunk(3, dim=0)
            out[h + f"attention.attention.query.{kind}"] = q.clone()
            out[h + f"attention.attention.key.{kind}"] = k.clone()
            out[h + f"attention.attention.value.{kind}"] = v.clone()
            out[h + f"attention.output.dense.{kind}"] = sd[b + f"attn.proj.{kind}"]
            out[h + f"norm1.{kind}"] = sd[b + f"norm1.{kind}"]
            out[h + f"norm2.{kind}"] = sd[b + f"norm2.{kind}"]
            out[h + f"mlp.fc1.{kind}"] = sd[b + f"mlp.fc1.{kind}"]
            out[h + f"mlp.fc2.{kind}"] = sd[b + f"mlp.fc2.{kind}"]
        out[h + "layer_scale1.lambda1"] = sd[b + "ls1.gamma"]
        out[h + "layer_scale2.lambda1"] = sd[b + "ls2.gamma"]
    return {k: v.contiguous() for k, v in out.items()}


def _backbone_equal(model, sd) -> None:
    own = model.backbone.state_dict()
    for k, v in sd.items():
        assert torch.equal(own[k], v), k


def _tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig.endoarss_tiny(**kw)


def test_dinov2_hub_layout(tmp_path):
    sd = _dinov2_state()
    path = tmp_path / "dinov2_vitt14_pretrain.pth"
    torch.save(sd, path)
    model, report = load_model(path, config=_tiny_cfg(), return_report=True)
    assert report.format == "dinov2" and report.loaded == len(sd)
    assert report.fresh and all(not k.startswith("backbone.") or "lora_" in k or "task_" in k
                                for k in report.fresh)
    assert model.config.family == "endoarss" and model.config.pos_grid == 37
    _backbone_equal(model, sd)
    out = model(torch.rand(1, 3, 100, 130))
    assert out.segmentation.shape == (1, 7, 100, 130)


def test_dinov2_default_config_is_endoarss(tmp_path):
    sd = _dinov2_state()
    torch.save(sd, tmp_path / "w.pth")
    model = load_model(tmp_path / "w.pth")  # no config: a default endoarss model around this backbone
    assert model.config.family == "endoarss" and model.config.backbone == "tiny"
    _backbone_equal(model, sd)


def test_dinov2_with_registers_uses_register_interpolation(tmp_path):
    sd = _dinov2_state(num_register_tokens=4)
    torch.save(sd, tmp_path / "dinov2_vitt14_reg4_pretrain.pth")
    model = load_model(tmp_path / "dinov2_vitt14_reg4_pretrain.pth")
    cfg = model.config
    assert cfg.num_register_tokens == 4
    assert cfg.pos_interpolate_offset == 0.0 and cfg.pos_interpolate_antialias
    _backbone_equal(model, sd)
    tokens = model.backbone.get_intermediate_layers(torch.rand(1, 3, 224, 224), (-1,))
    assert tokens[0][0].shape[1:] == (256, 192)  # registers dropped from the patch tokens


def test_dinov2_interpolation_matches_reference():
    """Position embeddings resampled exactly as DINOv2's hub code does (scale factor with offset 0.1)."""
    torch.manual_seed(1)
    vit = build_vit("tiny", pos_grid=37)
    vit.pos_embed.data.normal_()
    got = vit.interpolate_pos_encoding(16 * 20, 224, 280)
    pos = vit.pos_embed[:, 1:].reshape(1, 37, 37, -1).permute(0, 3, 1, 2)
    ref = torch.nn.functional.interpolate(pos, scale_factor=(16.1 / 37, 20.1 / 37), mode="bicubic")
    ref = torch.cat([vit.pos_embed[:, :1], ref.permute(0, 2, 3, 1).reshape(1, 320, -1)], dim=1)
    assert torch.equal(got, ref)


def test_depth_anything_layout(tmp_path):
    sd = _dinov2_state()
    da = {"pretrained." + k: v for k, v in sd.items()}
    da["depth_head.projects.0.weight"] = torch.zeros(4, 192, 1, 1)
    da["depth_head.scratch.output_conv2.0.bias"] = torch.zeros(4)
    torch.save(da, tmp_path / "depth_anything_vitt14.pth")
    model, report = load_model(tmp_path / "depth_anything_vitt14.pth", config=_tiny_cfg(), return_report=True)
    assert report.format == "depth_anything"
    assert report.known_unused == ["depth_head.projects.0.weight", "depth_head.scratch.output_conv2.0.bias"]
    _backbone_equal(model, sd)


def test_hf_dinov2_safetensors_layout(tmp_path):
    sd = _dinov2_state()
    save_file(_to_hf(sd), str(tmp_path / "model.safetensors"))
    torch.save(sd, tmp_path / "hub.pth")
    model, report = load_model(tmp_path / "model.safetensors", config=_tiny_cfg(), return_report=True)
    assert report.format == "hf_dinov2"
    _backbone_equal(model, sd)
    # Same backbone as the hub file gives the same tokens.
    ref = load_model(tmp_path / "hub.pth", config=_tiny_cfg())
    x = torch.rand(1, 3, 224, 224)
    with torch.no_grad():
        a = model.backbone.get_intermediate_layers(x, (-1,))[0][0]
        b = ref.backbone.get_intermediate_layers(x, (-1,))[0][0]
    assert torch.allclose(a, b, atol=1e-6)


def test_hf_prefixed_with_registers(tmp_path):
    sd = _dinov2_state(num_register_tokens=4)
    save_file({"dinov2." + k: v for k, v in _to_hf(sd).items()}, str(tmp_path / "model.safetensors"))
    model = load_model(tmp_path / "model.safetensors")
    assert model.config.num_register_tokens == 4
    _backbone_equal(model, sd)


def test_own_format_round_trip(tmp_path):
    torch.manual_seed(0)
    model = build_model(_tiny_cfg(seg_classes=["bg", "tool", "tissue"], activity_classes=["a", "b"])).eval()
    for p in model.parameters():  # non-trivial adapters so the round trip is a real check
        p.data.add_(torch.randn_like(p) * 0.01)
    target = save_model(model, tmp_path / "demo")
    assert target.name == "demo.safetensors" and (tmp_path / "demo.yaml").is_file()
    assert ModelConfig.from_yaml(tmp_path / "demo.yaml") == model.config
    loaded, report = load_model(tmp_path / "demo", return_report=True)
    assert report.format == "endoarss" and loaded.config == model.config
    x = torch.rand(2, 3, 224, 224)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.equal(a.segmentation, b.segmentation) and torch.equal(a.activity, b.activity)
    # A different working resolution for the same weights.
    other = load_model(target, config=model.config.replace(input_size=(168, 224)))
    assert other(torch.rand(1, 3, 168, 224)).segmentation.shape == (1, 3, 168, 224)


def _released_style(model) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in model.state_dict().items():
        for ours, theirs in (("pixel_sma.", "encoder.encoder.mob."), ("backbone.", "encoder.encoder."),
                             ("seg_head.", "decoders.segmentation."),
                             ("activity_head.", "decoders.classification.")):
            if k.startswith(ours):
                out[theirs + k[len(ours):]] = v
                break
    out["encoder.encoder.mob.trans.layers.0.0.ln.weight"] = torch.ones(512)
    return out


def test_released_layout_small_official(tmp_path):
    """A released-style checkpoint of a tiny official model: shapes decide the config, outputs survive."""
    torch.manual_seed(0)
    cfg = ModelConfig.official(backbone="tiny", seg_classes=[f"c{i}" for i in range(5)],
                               activity_classes=["x", "y"], pos_grid=37)
    model = build_model(cfg).eval()
    for name, p in model.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.05)
    sd = _released_style(model)
    torch.save(sd, tmp_path / "released.pt")
    loaded = load_model(tmp_path / "released.pt")
    assert loaded.config.family == "official" and loaded.config.backbone == "tiny"
    assert loaded.config.seg_classes == [f"class_{i}" for i in range(5)]  # counts from head shapes
    assert loaded.config.num_activity_classes == 2
    x = torch.rand(1, 3, 244, 244)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert torch.allclose(a.segmentation, b.segmentation, atol=1e-6)
    assert torch.allclose(a.activity, b.activity, atol=1e-6)

    # A missing key (DV-LoRA U matters) is an error that names it.
    broken = dict(sd)
    del broken["encoder.encoder.blocks.0.mlp.fc1.lora_U"]
    torch.save(broken, tmp_path / "broken.pt")
    with pytest.raises(KeyMismatchError, match=r"blocks\.0\.mlp\.fc1\.lora_U"):
        load_model(tmp_path / "broken.pt")

    # An unexpected key is an error that names it, unless ignored on purpose.
    extra = dict(sd, **{"encoder.encoder.something_new": torch.zeros(3)})
    torch.save(extra, tmp_path / "extra.pt")
    with pytest.raises(KeyMismatchError, match="something_new"):
        load_model(tmp_path / "extra.pt")
    ok, report = load_model(tmp_path / "extra.pt", ignore_keys=["encoder.encoder.something_*"],
                            return_report=True)
    assert report.ignored == ["encoder.encoder.something_new"]


def test_unexpected_backbone_key_is_an_error(tmp_path):
    sd = _dinov2_state()
    sd["head.weight"] = torch.zeros(10, 192)
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(KeyMismatchError, match="backbone.head.weight"):
        load_model(tmp_path / "w.pth", config=_tiny_cfg())
    model = load_model(tmp_path / "w.pth", config=_tiny_cfg(), ignore_keys=["head.weight"])
    assert model.config.backbone == "tiny"


def test_missing_backbone_key_is_an_error(tmp_path):
    sd = _dinov2_state()
    del sd["blocks.2.attn.qkv.weight"]
    torch.save(sd, tmp_path / "w.pth")
    with pytest.raises(KeyMismatchError, match=r"backbone\.blocks\.2\.attn\.qkv\.weight"):
        load_model(tmp_path / "w.pth", config=_tiny_cfg())


# -- position-embedding interpolation conventions (DINOv2 hub, registers, Hugging Face transformers) -----
def _bicubic_resample(grid: np.ndarray, out: tuple[int, int], coord_scale: tuple[float, float]) -> np.ndarray:
    """Bicubic resampling of a (C, M, M) grid written out from its definition (independent of torch): output
    index i samples the source at (i + 0.5) * coord_scale - 0.5 with Keys' cubic kernel (a = -0.75), source
    indices clamped at the border, one axis after the other (align_corners=False, no antialias)."""

    def kernel(t):
        t = np.abs(t)
        a = -0.75
        return np.where(t <= 1, (a + 2) * t**3 - (a + 3) * t**2 + 1,
                        np.where(t < 2, a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a, 0.0))

    def along(x, axis, n_out, scale):
        n_in = x.shape[axis]
        src = (np.arange(n_out) + 0.5) * scale - 0.5
        base = np.floor(src).astype(int)
        weights = np.zeros((n_out, n_in))
        for tap in range(-1, 3):
            idx = base + tap
            np.add.at(weights, (np.arange(n_out), np.clip(idx, 0, n_in - 1)), kernel(src - idx))
        return np.moveaxis(np.tensordot(weights, np.moveaxis(x, axis, 0), axes=1), 0, axis)

    return along(along(grid.astype(np.float64), 1, out[0], coord_scale[0]), 2, out[1], coord_scale[1])


def _reference_pos(vit, h, w, offset: float) -> np.ndarray:
    """Patch position embeddings for an h x w input. offset 0.1: facebookresearch/dinov2's hub models, which
    pass scale factor (g + 0.1) / M, so positions step by M / (g + 0.1). offset 0: transformers >= 4.45
    Dinov2Model, which resizes the grid to (h // 14, w // 14), so positions step by M / g."""
    pos = vit.pos_embed.detach()[0, 1:].double().numpy()
    m = int(round(pos.shape[0] ** 0.5))
    grid = pos.reshape(m, m, -1).transpose(2, 0, 1)
    gh, gw = h // 14, w // 14
    out = _bicubic_resample(grid, (gh, gw), (m / (gh + offset), m / (gw + offset)))
    return out.transpose(1, 2, 0).reshape(gh * gw, -1)


def test_hf_file_with_transformers_interpolation(tmp_path):
    """A model fine-tuned with transformers keeps transformers' position embeddings at other input sizes
    (pos_interpolation="transformers"); the default stays facebookresearch/dinov2's."""
    sd = _dinov2_state()
    save_file(_to_hf(sd), str(tmp_path / "model.safetensors"))
    default = load_model(tmp_path / "model.safetensors", config=_tiny_cfg())
    hf = load_model(tmp_path / "model.safetensors", config=_tiny_cfg(), pos_interpolation="transformers")
    assert (hf.config.pos_interpolate_offset, hf.config.pos_interpolate_antialias) == (0.0, False)
    _backbone_equal(hf, sd)
    h, w = 224, 280
    with torch.no_grad():
        got_hf = hf.backbone.interpolate_pos_encoding(16 * 20, h, w)[0, 1:].double().numpy()
        got_default = default.backbone.interpolate_pos_encoding(16 * 20, h, w)[0, 1:].double().numpy()
    np.testing.assert_allclose(got_hf, _reference_pos(hf.backbone, h, w, 0.0), atol=1e-5)
    np.testing.assert_allclose(got_default, _reference_pos(default.backbone, h, w, 0.1), atol=1e-5)
    assert np.abs(got_hf - got_default).max() > 1e-3  # the two conventions really differ here
    # At the native 518 x 518 no resampling happens: both give the same tokens.
    x = torch.rand(1, 3, 518, 518)
    with torch.no_grad():
        a = hf.backbone.get_intermediate_layers(x, (-1,))[0][0]
        b = default.backbone.get_intermediate_layers(x, (-1,))[0][0]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="pos_interpolation must be one of"):
        load_model(tmp_path / "model.safetensors", pos_interpolation="timm")


def test_the_interpolation_survives_save_and_reload(tmp_path):
    """What the node and replay load (our format) carries the chosen convention."""
    save_file(_to_hf(_dinov2_state()), str(tmp_path / "model.safetensors"))
    hf = load_model(tmp_path / "model.safetensors", config=_tiny_cfg(), pos_interpolation="transformers")
    reloaded = load_model(save_model(hf, tmp_path / "ours"))
    assert (reloaded.config.pos_interpolate_offset, reloaded.config.pos_interpolate_antialias) == (0.0, False)


def test_registers_file_with_explicit_config_keeps_its_interpolation(tmp_path):
    """docs/weights.md loads backbones with config=...: a registers checkpoint still gets the registers'
    interpolation (size-based, antialiased), the same features as without config."""
    sd = _dinov2_state(num_register_tokens=4)
    torch.save(sd, tmp_path / "dinov2_vitt14_reg4_pretrain.pth")
    with_cfg = load_model(tmp_path / "dinov2_vitt14_reg4_pretrain.pth", config=_tiny_cfg())
    without = load_model(tmp_path / "dinov2_vitt14_reg4_pretrain.pth")
    assert (with_cfg.config.pos_interpolate_offset, with_cfg.config.pos_interpolate_antialias) == (0.0, True)
    x = torch.rand(1, 3, 224, 252)
    with torch.no_grad():
        a = with_cfg.backbone.get_intermediate_layers(x, (-1,))[0][0]
        b = without.backbone.get_intermediate_layers(x, (-1,))[0][0]
    assert torch.equal(a, b)


def test_config_contradicting_the_files_interpolation_is_an_error(tmp_path):
    torch.save(_dinov2_state(), tmp_path / "dinov2_vitt14_pretrain.pth")
    cfg = _tiny_cfg().replace(pos_interpolate_offset=0.0, pos_interpolate_antialias=True)
    with pytest.raises(WeightsError, match="the config asks for position interpolation offset=0.0"):
        load_model(tmp_path / "dinov2_vitt14_pretrain.pth", config=cfg)


# -- Hugging Face keys: missing q/k/v named, mask token optional ------------------------------------------
def test_hf_missing_key_projection_is_named_as_missing(tmp_path):
    hf = _to_hf(_dinov2_state())
    del hf["encoder.layer.1.attention.attention.key.weight"]
    save_file(hf, str(tmp_path / "model.safetensors"))
    with pytest.raises(KeyMismatchError) as err:
        load_model(tmp_path / "model.safetensors", config=_tiny_cfg())
    assert err.value.missing == ["encoder.layer.1.attention.attention.key.weight"]
    assert err.value.unexpected == []  # query and value of that layer are not "unexpected"


def test_hf_file_without_mask_token_loads(tmp_path):
    """transformers' Dinov2Config(use_mask_token=False) saves no mask token (used only for masked-image
    training): the model keeps a fresh one, and the report says so."""
    sd = _dinov2_state()
    hf = _to_hf(sd)
    del hf["embeddings.mask_token"]
    save_file(hf, str(tmp_path / "model.safetensors"))
    model, report = load_model(tmp_path / "model.safetensors", config=_tiny_cfg(), return_report=True)
    assert "backbone.mask_token" in report.fresh
    _backbone_equal(model, {k: v for k, v in sd.items() if k != "mask_token"})

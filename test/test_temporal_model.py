"""The causal temporal model (model/temporal_tcn.py): causality, stepping == whole-sequence forward, state size, the
weights file and its binding."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from endoarss_ros.model.temporal_tcn import (
    CausalTCN,
    TemporalBinding,
    TemporalBindingError,
    TemporalConfig,
    load_temporal,
    save_temporal,
)
from endoarss_ros.model.weights import WeightsError

TINY = TemporalConfig(feature_dim=7, num_classes=3, channels=8, layers=4, stages=2, refine_channels=6)


def _model(cfg: TemporalConfig = TINY, seed: int = 0) -> CausalTCN:
    torch.manual_seed(seed)
    m = CausalTCN(cfg)
    m.set_feature_normalization(torch.randn(cfg.feature_dim), torch.rand(cfg.feature_dim) + 0.5)
    return m.eval()


def _inputs(B: int, T: int, D: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, D, generator=g), torch.rand(B, T, generator=g) < 0.25


def test_changing_the_input_at_t_plus_1_changes_no_output_at_or_before_t():
    m = _model()
    f, miss = _inputs(2, 60, TINY.feature_dim)
    with torch.no_grad():
        ref = m(f, miss)
        for t in (0, 17, 40):
            f2, miss2 = f.clone(), miss.clone()
            f2[:, t + 1:] += 5 * torch.randn_like(f2[:, t + 1:])
            miss2[:, t + 1:] = ~miss2[:, t + 1:]
            out = m(f2, miss2)
            assert torch.equal(out[:, :, : t + 1], ref[:, :, : t + 1]), t  # every stage, bit for bit
            assert not torch.allclose(out[:, :, t + 1], ref[:, :, t + 1])  # and the change does reach t+1


def test_the_output_reads_the_past_beyond_one_tick():
    """Not a frame-wise classifier in disguise: an input 20 ticks back still moves the output."""
    m = _model()
    f, miss = _inputs(1, 40, TINY.feature_dim)
    miss[:, 19] = False
    f2 = f.clone()
    f2[:, 19] += 3.0
    with torch.no_grad():
        assert not torch.allclose(m(f, miss)[-1, :, 39], m(f2, miss)[-1, :, 39])


def test_stepping_one_tick_at_a_time_equals_the_whole_sequence_forward():
    m = _model()
    T = 3 * TINY.receptive_field  # the rings wrap around many times
    f, miss = _inputs(2, T, TINY.feature_dim)
    with torch.no_grad():
        offline = m(f, miss)[-1]
    state = m.init_state(batch=2)
    stepped = torch.stack([m.step(state, f[:, t], miss[:, t]) for t in range(T)], 1)
    assert stepped.shape == offline.shape == (2, T, TINY.num_classes)
    assert (stepped - offline).abs().max().item() <= 1e-5
    assert state.ticks == T
    # numpy in, numpy out: what the streaming session uses
    state = m.init_state()
    logits = [m.step(state, f[0, t:t + 1].numpy(), miss[0, t:t + 1].numpy()) for t in range(T)]
    assert isinstance(logits[0], np.ndarray)
    np.testing.assert_allclose(np.concatenate(logits), offline[0].numpy(), atol=1e-5)


def test_the_global_token_remembers_the_maximum_since_the_start():
    """Without the token the stage-1 input 2**layers ticks back is out of reach; with it, it still counts."""
    cfg = dataclasses.replace(TINY, stages=1, layers=2)
    m = _model(cfg)
    T = 50
    f, miss = _inputs(1, T, cfg.feature_dim)
    miss[:] = False
    f2 = f.clone()
    f2[0, 2] = 50.0  # far beyond the receptive field (7 ticks) of the last output
    with torch.no_grad():
        assert not torch.allclose(m(f, miss)[-1, 0, -1], m(f2, miss)[-1, 0, -1])
        m0 = CausalTCN(dataclasses.replace(cfg, global_token=False)).eval()
        assert torch.allclose(m0(f, miss)[-1, 0, -1], m0(f2, miss)[-1, 0, -1])


def test_default_config_state_fits_in_one_megabyte_per_camera():
    m = CausalTCN(TemporalConfig(feature_dim=23, num_classes=3))
    assert m.config.receptive_field == 2047
    state = m.init_state()
    assert 0 < state.nbytes <= 1_000_000
    assert m.init_state(batch=2).nbytes == 2 * state.nbytes


def _binding(**kw) -> TemporalBinding:
    values = {"frame_model_id": "sha256:aaaa", "class_names": ("Marking", "Incision", "Dissection"),
              "feature_names": tuple(f"f{i}" for i in range(TINY.feature_dim)), "tick_s": 0.5}
    values.update(kw)
    return TemporalBinding(**values)


def test_save_and_load_round_trip_keeps_weights_normalisation_and_binding(tmp_path):
    m = _model()
    b = _binding(session_settings={"switch_evidence": 1.5}, notes={"run": "test"})
    path = save_temporal(tmp_path / "t.safetensors", m, b)
    loaded, binding = load_temporal(path, expect=_binding())
    assert binding.config == TINY and binding.session_settings == {"switch_evidence": 1.5}
    assert binding.notes == {"run": "test"} and binding.tick_s == 0.5
    f, miss = _inputs(1, 30, TINY.feature_dim)
    with torch.no_grad():
        assert torch.equal(loaded(f, miss), m(f, miss))
    assert not loaded.training


@pytest.mark.parametrize("field, value, words", [
    ("frame_model_id", "sha256:bbbb", ["frame model", "sha256:aaaa", "sha256:bbbb"]),
    ("class_names", ("Marking", "Injection", "Dissection"), ["activity classes", "Incision", "Injection"]),
    ("feature_names", ("f0", "f1", "g2", "f3", "f4", "f5", "f6"), ["feature layout", "#2", "'f2'", "'g2'"]),
    ("tick_s", 1.0, ["tick", "0.5", "1.0"]),
])
def test_a_binding_mismatch_is_an_error_naming_both_sides(tmp_path, field, value, words):
    path = save_temporal(tmp_path / "t.safetensors", _model(), _binding())
    with pytest.raises(TemporalBindingError) as e:
        load_temporal(path, expect=_binding(**{field: value}))
    text = str(e.value)
    assert "\n" not in text and str(path) in text
    for w in words:
        assert w in text


def test_an_expectation_without_tick_accepts_the_files_tick(tmp_path):
    path = save_temporal(tmp_path / "t.safetensors", _model(), _binding(tick_s=0.25))
    assert load_temporal(path, expect=_binding(tick_s=None))[1].tick_s == 0.25


def test_missing_damaged_and_wrong_kind_of_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_temporal(tmp_path / "absent.safetensors")
    path = save_temporal(tmp_path / "t.safetensors", _model(), _binding())
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(WeightsError) as e:
        load_temporal(damaged)
    assert "damaged" in str(e.value) and "\n" not in str(e.value)
    from safetensors.torch import save_file

    frame_like = tmp_path / "frame.safetensors"
    save_file({"w": torch.zeros(2)}, str(frame_like), metadata={"format": "endoarss"})
    with pytest.raises(WeightsError, match="not a temporal model file"):
        load_temporal(frame_like)
    with pytest.raises(FileNotFoundError, match="directory"):
        load_temporal(tmp_path)


def test_save_refuses_a_binding_without_a_tick(tmp_path):
    with pytest.raises(ValueError, match="tick"):
        save_temporal(tmp_path / "t.safetensors", _model(), _binding(tick_s=None))

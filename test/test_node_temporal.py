"""The node with a temporal activity model (parameter temporal_model): a real rclpy node process driven by the
probe process (test/node_probe.py), a tiny random frame model and a tiny temporal model saved here and bound to
it. Covers: Activity.source / duration_s, warm-up after a reset, the ~/reset_temporal service, lifecycle
deactivate -> activate, /diagnostics, and configure failing on temporal weights it cannot use."""
from __future__ import annotations

import pytest

from test import test_node_ros as node_tests
from test.conftest import requires_ros

READY = node_tests.READY
start_node, probe, tiny_model = node_tests.start_node, node_tests.probe, node_tests.tiny_model  # the fixtures

pytestmark = [requires_ros, pytest.mark.ros]


def _save_temporal(path, frame_weights, *, frame_model_id=None, warmup_ticks=2):
    import torch

    from endoarss_ros.inference.temporal_activity import expected_binding
    from endoarss_ros.model.config import ModelConfig
    from endoarss_ros.model.temporal_tcn import CausalTCN, TemporalBinding, TemporalConfig, save_temporal

    cfg = ModelConfig.endoarss_tiny()
    expect = expected_binding(frame_weights, cfg.seg_classes, cfg.activity_classes)
    torch.manual_seed(0)
    tcfg = TemporalConfig(feature_dim=len(expect.feature_names), num_classes=len(cfg.activity_classes),
                          channels=8, layers=3, refine_channels=4)
    binding = TemporalBinding(frame_model_id or expect.frame_model_id, expect.class_names, expect.feature_names,
                              0.5, tcfg, session_settings={"warmup_ticks": warmup_ticks})
    return str(save_temporal(path, CausalTCN(tcfg), binding))


@pytest.fixture(scope="module")
def temporal_model(tiny_model, tmp_path_factory):
    return _save_temporal(tmp_path_factory.mktemp("temporal") / "temporal.safetensors", tiny_model)


def _segment(records, sent, tag):
    stamps = [s["stamp"] for s in sent if s["tag"] == tag]
    by_stamp = {r["stamp"]: r for r in records}
    return [by_stamp[s] for s in stamps if s in by_stamp]


def test_node_publishes_temporal_activity_and_resets_on_service_and_lifecycle(start_node, probe, temporal_model):
    node = start_node(f"temporal_model:={temporal_model}")
    steps = [
        READY,
        {"op": "frames", "rate": 10, "frames": [{"seed": 1, "tag": "first", "repeat": 30}]},  # 3 s of stamps
        {"op": "diagnostics", "wait": 2.5},
        {"op": "trigger", "service": "reset_temporal"},
        {"op": "frames", "rate": 10, "frames": [{"seed": 2, "tag": "after_reset", "repeat": 3}]},
        {"op": "transition", "transition": "deactivate"},
        {"op": "transition", "transition": "activate"},
        READY,
        {"op": "frames", "rate": 10, "frames": [{"seed": 3, "tag": "after_lifecycle", "repeat": 3}]},
        {"op": "diagnostics", "wait": 2.5},
    ]
    result = probe(node, steps)
    s, activity, sent = result["steps"], result["received"]["activity"], result["sent"]
    first = _segment(activity, sent, "first")
    assert len(first) >= 10, f"only {len(first)} of 30 frames answered"
    sources = [a["source"] for a in first]
    # 2 ticks of 0.5 s warm-up: the frame-wise EMA first, then the temporal model, and never back
    assert sources[0] == "frame_ema" and sources[-1] == "temporal", sources
    assert sources == sorted(sources, key=lambda x: x == "temporal"), sources
    warm_at = next(a["stamp"] for a in first if a["source"] == "temporal")
    assert warm_at - first[0]["stamp"] >= 1.0e9 - 1e6  # 2 ticks of stamp time, not 2 messages
    for a in first:
        assert len(a["probabilities"]) == len(a["raw_probabilities"]) == len(a["class_names"])
        assert a["duration_s"] >= 0.0
    held = [a for a, b in zip(first, first[1:]) if a["class_id"] == b["class_id"]]
    assert held, "the label never held for two frames"
    diag = s[2]["values"]
    assert diag["temporal_model"] == temporal_model
    assert diag["temporal.image.warm"] == "true" and diag["temporal.image.source"] == "temporal"
    assert int(diag["temporal.image.ticks"]) >= 4 and int(diag["temporal.image.state_bytes"]) > 0
    assert s[3]["success"] and "1 camera" in s[3]["message"]
    for tag in ("after_reset", "after_lifecycle"):
        seg = _segment(activity, sent, tag)
        assert seg and all(a["source"] == "frame_ema" for a in seg), (tag, seg)
    assert s[5]["success"] and s[6]["success"]
    diag = s[9]["values"]
    assert diag["temporal.image.resets"] == "2"
    assert diag["temporal.image.resets_by_reason"] == "lifecycle deactivate 1, service request 1"
    assert node.alive()


def test_temporal_weights_the_node_cannot_use_fail_configure_with_one_line(start_node, probe, tiny_model,
                                                                          tmp_path):
    missing = tmp_path / "nowhere" / "temporal.safetensors"
    node = start_node(f"temporal_model:={missing}")
    assert node.proc.wait(120) == 1, "autostart with a missing temporal model must exit with an error"
    log = node.output()
    line = next(x for x in log.splitlines() if "configure failed" in x)
    assert "temporal_model" in line and str(missing) in line and "no such file" in line

    other = _save_temporal(tmp_path / "other.safetensors", tiny_model, frame_model_id="sha256:0123456789abcdef")
    node = start_node(f"temporal_model:={other}", autostart=False)
    result = probe(node, [{"op": "transition", "transition": "configure"}, {"op": "get_state"},
                          {"op": "trigger", "service": "reset_temporal"}, {"op": "diagnostics", "wait": 2.5}])
    s = result["steps"]
    assert s[0]["success"] is False and s[1]["state"] == "unconfigured"
    line = next(x for x in node.output().splitlines() if "configure failed" in x)
    assert "sha256:0123456789abcdef" in line and "frame model" in line and "sha256:" in line.split("is ")[-1]
    assert s[2]["answered"] and s[2]["success"] is False and "no temporal model" in s[2]["message"]
    assert "temporal model" in s[3]["values"]["configure_error"]
    assert node.alive()

"""Edges of the temporal activity path: the one rule of what is published (node and offline scoring alike),
stalled (zero or constant) stamps said in the session's diagnostics, /diagnostics and replay's summary, a change
of resolution or encoding resetting the session, and the weights binding covering an ``input_size`` override."""
from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.inference.frames import frame_from_array
from endoarss_ros.inference.smoother import ActivitySmoother, Smoothing
from endoarss_ros.inference.stream import CameraStream, StreamSettings, published_activity
from endoarss_ros.inference.temporal_activity import (
    SOURCE_FRAME,
    SOURCE_FRAME_EMA,
    SOURCE_TEMPORAL,
    STALLED_STAMP_FRAMES,
    TemporalEstimate,
    TemporalModelError,
    TemporalSession,
    TemporalSettings,
    expected_binding,
    load_temporal_for,
)
from test import test_node_ros as node_tests
from test.conftest import requires_ros
from test.test_temporal_session import ACT, SEG, _result, _session_parts

start_node, probe, tiny_model = node_tests.start_node, node_tests.probe, node_tests.tiny_model  # node fixtures


def test_one_rule_says_what_is_published():
    ema = ActivitySmoother.from_settings(3, Smoothing()).update(np.array([0.1, 0.7, 0.2], np.float32))
    temporal = TemporalEstimate(np.array([0.8, 0.1, 0.1], np.float32), 0, SOURCE_TEMPORAL, 1.0, True, 9)
    probs, label, source = published_activity(temporal, ema)
    assert (label, source) == (0, SOURCE_TEMPORAL) and probs[0] == pytest.approx(0.8)
    cold = temporal._replace(warm=False, source=SOURCE_FRAME_EMA)
    no_label = temporal._replace(class_id=-1)  # warm but no tick decided yet: the frame-wise result
    for estimate in (cold, no_label, None):
        assert published_activity(estimate, ema)[1:] == (ema.class_id, SOURCE_FRAME_EMA)
    assert published_activity(None, ema, smoothing=False)[2] == SOURCE_FRAME


def _stream(session):
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    return CameraStream(SEG, ACT, colors, StreamSettings(annotate=False), temporal=session)


def test_stalled_stamps_are_said_not_silently_frame_ema():
    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings(warmup_ticks=2))
    stream = _stream(session)
    frame = frame_from_array(np.full((48, 64, 3), 120, np.uint8), "rgb8")
    mask = np.zeros((48, 64), np.uint8)
    for k in range(STALLED_STAMP_FRAMES + 10):  # a driver that leaves header.stamp at zero
        out = stream.update(frame, _result(mask), stamp_s=0.0)
        assert out.activity.source == SOURCE_FRAME_EMA
        if k == STALLED_STAMP_FRAMES - 3:
            assert session.diagnostics()["stamps_warning"] == ""  # a few repeats are not yet a stall
    d = session.diagnostics()
    assert "zero stamps" in d["stamps_warning"] and f"last {STALLED_STAMP_FRAMES + 10} frames" in d["stamps_warning"]
    assert d["frames_repeated_stamp"] == str(STALLED_STAMP_FRAMES + 9) and d["ticks"] == "0"
    # constant, non-zero stamps say so too; advancing stamps clear it and the model warms up
    for _ in range(STALLED_STAMP_FRAMES):
        stream.update(frame, _result(mask), stamp_s=5.0)
    assert "stamp 5.000 s" in session.diagnostics()["stamps_warning"]
    assert "zero" not in session.diagnostics()["stamps_warning"]
    sources = [stream.update(frame, _result(mask), stamp_s=5.1 + k / 10).activity.source for k in range(20)]
    assert session.diagnostics()["stamps_warning"] == "" and sources[-1] == SOURCE_TEMPORAL


def test_a_change_of_resolution_or_encoding_resets_the_session():
    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings(warmup_ticks=2))
    stream = _stream(session)
    small = frame_from_array(np.full((48, 64, 3), 120, np.uint8), "rgb8")
    large = frame_from_array(np.full((96, 128, 3), 120, np.uint8), "rgb8")
    bgr = frame_from_array(np.full((96, 128, 3), 120, np.uint8), "bgr8")
    t = 0.0
    for frame, mask in ((small, np.zeros((48, 64), np.uint8)), (large, np.zeros((96, 128), np.uint8)),
                        (bgr, np.zeros((96, 128), np.uint8))):
        for _ in range(20):
            out = stream.update(frame, _result(mask), stamp_s=t)
            t += 0.1
        assert out.activity.source == SOURCE_TEMPORAL  # warm again after each reset
    assert session.resets_by_reason == {"image format changed": 2}
    assert session.last_reset_reason == "image format changed (128x96 rgb8 -> 128x96 bgr8)"


def _save_bound_temporal(path, frame_weights):
    import torch

    from endoarss_ros.model.config import ModelConfig
    from endoarss_ros.model.temporal_tcn import CausalTCN, TemporalBinding, TemporalConfig, save_temporal

    cfg = ModelConfig.endoarss_tiny()
    expect = expected_binding(frame_weights, cfg.seg_classes, cfg.activity_classes)
    torch.manual_seed(0)
    tcfg = TemporalConfig(feature_dim=len(expect.feature_names), num_classes=len(cfg.activity_classes),
                          channels=8, layers=3, refine_channels=4)
    binding = TemporalBinding(expect.frame_model_id, expect.class_names, expect.feature_names, 0.5, tcfg)
    return save_temporal(path, CausalTCN(tcfg), binding), cfg


def test_the_binding_covers_an_input_size_override(tmp_path):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    weights = save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path / "tiny")
    temporal, cfg = _save_bound_temporal(tmp_path / "temporal.safetensors", weights)
    model, binding = load_temporal_for(temporal, weights, cfg.seg_classes, cfg.activity_classes)
    assert "@" not in binding.frame_model_id
    with pytest.raises(TemporalModelError, match=r"@112x140"):
        load_temporal_for(temporal, weights, cfg.seg_classes, cfg.activity_classes, input_size=(112, 140))


@requires_ros
def test_diagnostics_warn_about_stalled_stamps():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from endoarss_ros.ros.diagnostics import NodeStats, to_diagnostic_array

    stats = NodeStats()
    for _ in range(5):
        stats.received()
        stats.published(latency_ms=10.0, inference_ms=5.0)
    info = {"lifecycle_state": "active", "temporal.image.stamps_warning": ""}
    (ok,) = to_diagnostic_array(stats, name="n", hardware_id="cpu", stamp=Time(), info=info, active=True).status
    assert ok.level == DiagnosticStatus.OK
    info["temporal.image.stamps_warning"] = "stamps not advancing: ... (zero stamps)"
    (warn,) = to_diagnostic_array(stats, name="n", hardware_id="cpu", stamp=Time(), info=info, active=True).status
    assert warn.level == DiagnosticStatus.WARN and "temporal image: stamps not advancing" in warn.message


# ---- the node: zero stamps said in /diagnostics --------------------------------------------------------------

@requires_ros
@pytest.mark.ros
def test_the_node_warns_when_zero_stamps_stop_the_temporal_clock(start_node, probe, tiny_model, tmp_path):
    temporal, _ = _save_bound_temporal(tmp_path / "temporal.safetensors", tiny_model)
    node = start_node(f"temporal_model:={temporal}")
    # 3 x the stall length at 2 Hz: on a loaded machine the node keeps only the newest frame of a burst, so slowly
    frames = [{"seed": 1, "tag": "zero", "zero_stamp": True, "repeat": 3 * STALLED_STAMP_FRAMES}]
    result = probe(node, [node_tests.READY, {"op": "frames", "rate": 2, "frames": frames},
                          {"op": "diagnostics", "wait": 2.5}])
    activity = result["received"]["activity"]
    assert activity and all(a["source"] == "frame_ema" for a in activity)
    diag = result["steps"][2]["values"]
    assert int(diag["temporal.image.frames_repeated_stamp"]) >= STALLED_STAMP_FRAMES, diag["temporal.image.frames"]
    assert diag["temporal.image.warm"] == "false" and "zero stamps" in diag["temporal.image.stamps_warning"]
    assert diag["_level"] == 1 and "temporal image: stamps not advancing" in diag["_message"], diag["_message"]
    assert node.alive()


def test_replay_prints_the_stalled_stamps_warning():
    from endoarss_ros.bag.replay_report import temporal_lines

    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings())
    for _ in range(STALLED_STAMP_FRAMES):
        session.update(0.0, np.zeros(len(binding.feature_names), np.float32), True)
    topics = {"/cam/image": dict(session.diagnostics(), sources={"frame_ema": STALLED_STAMP_FRAMES})}
    lines = temporal_lines({"topics": topics})
    assert lines[-1].startswith("warning, temporal model on /cam/image: stamps not advancing") and "zero" in lines[-1]

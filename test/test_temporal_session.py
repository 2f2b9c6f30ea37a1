"""Frames -> ticks -> the temporal session (inference/temporal_activity.py), the feature tap
(inference/temporal_features.py) and the camera stream with a temporal session: real forward passes of a tiny
temporal model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from endoarss_ros.inference.engine import FrameResult
from endoarss_ros.inference.frames import frame_from_array
from endoarss_ros.inference.smoother import Smoothing
from endoarss_ros.inference.status import FLAG, frame_status, lost_frame_status
from endoarss_ros.inference.stream import CameraStream, StreamSettings
from endoarss_ros.inference.temporal_activity import (
    SOURCE_FRAME,
    SOURCE_FRAME_EMA,
    SOURCE_TEMPORAL,
    EvidenceGate,
    TemporalSession,
    TemporalSettings,
)
from endoarss_ros.inference.temporal_features import (
    class_fractions,
    feature_dim,
    feature_names,
    frame_features,
    usable_for_temporal,
)
from endoarss_ros.model.temporal_clock import ticks_from_frames
from endoarss_ros.model.temporal_tcn import CausalTCN, TemporalBinding, TemporalConfig

SEG = ["Background", "FPCW Forceps", "Mucosal Flaps"]
ACT = ["Marking", "Incision", "Dissection"]
D = feature_dim(len(SEG), len(ACT))


def _session_parts(tick_s: float = 0.5, seed: int = 0):
    torch.manual_seed(seed)
    cfg = TemporalConfig(feature_dim=D, num_classes=len(ACT), channels=8, layers=4, refine_channels=6)
    model = CausalTCN(cfg).eval()
    binding = TemporalBinding("sha256:test", tuple(ACT), tuple(feature_names(SEG, ACT)), tick_s, cfg)
    return model, binding


# ---- the clock -----------------------------------------------------------------------------------
def test_ticks_average_the_usable_frames_of_each_tick_whatever_the_frame_rate():
    for fps in (30.0, 10.0, 7.0):
        stamps = 100.0 + np.arange(int(3 * fps)) / fps
        feats = np.stack([stamps, -stamps], 1)
        ticks, missing, index = ticks_from_frames(stamps, feats, np.ones(len(stamps), bool), 0.5)
        assert len(ticks) == 6 and not missing.any()
        for j in range(6):
            in_tick = (stamps >= 100 + 0.5 * j - 1e-9) & (stamps < 100 + 0.5 * (j + 1) - 1e-9)
            np.testing.assert_array_equal(index[in_tick], j)
            np.testing.assert_allclose(ticks[j], feats[in_tick].mean(0), rtol=1e-6)


def test_unusable_frames_are_left_out_and_a_tick_without_a_usable_frame_is_missing():
    stamps = np.arange(20) * 0.1  # 10 fps, 4 ticks of 0.5 s
    feats = np.arange(20, dtype=np.float32)[:, None]
    usable = np.ones(20, bool)
    usable[[1, 2]] = False  # tick 0: frames 0, 3, 4 remain
    usable[5:10] = False  # tick 1: none usable
    ticks, missing, index = ticks_from_frames(stamps, feats, usable, 0.5)
    assert missing.tolist() == [False, True, False, False]
    assert ticks[0, 0] == pytest.approx((0 + 3 + 4) / 3) and ticks[1, 0] == 0.0
    assert index.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5


def test_a_gap_becomes_missing_ticks_and_time_going_backwards_is_refused():
    stamps = np.array([0.0, 0.2, 3.1, 3.3])
    ticks, missing, index = ticks_from_frames(stamps, np.ones((4, 2)), np.ones(4, bool), 0.5)
    assert len(ticks) == 7 and missing.tolist() == [False, True, True, True, True, True, False]
    assert index.tolist() == [0, 0, 6, 6]
    with pytest.raises(ValueError, match="backwards at frame 2"):
        ticks_from_frames([0.0, 1.0, 0.5], np.ones((3, 2)), np.ones(3, bool), 0.5)


# ---- the session ---------------------------------------------------------------------------------
def _frames(n: int, fps: float, seed: int = 3, start: float = 50.0):
    rng = np.random.default_rng(seed)
    stamps = start + np.arange(n) / fps + rng.uniform(0, 0.2 / fps, n)  # jittered camera clock
    return stamps, rng.normal(size=(n, D)).astype(np.float32), rng.random(n) > 0.2


def test_the_session_streams_what_the_offline_forward_computes_on_the_same_ticks():
    """Each frame gets the posterior of the last closed tick: the offline forward over ticks_from_frames, shifted
    by one tick. Gaps (below max_gap_s) step through as missing ticks."""
    model, binding = _session_parts()
    stamps, feats, usable = _frames(300, 12.0)
    stamps[150:] += 7.3  # a 7 s gap
    ticks, missing, index = ticks_from_frames(stamps, feats, usable, binding.tick_s)
    with torch.no_grad():
        offline = model(torch.from_numpy(ticks)[None], torch.from_numpy(missing)[None])[-1, 0].softmax(-1).numpy()
    session = TemporalSession(model, binding, TemporalSettings(max_gap_s=10.0, warmup_ticks=3))
    for i in range(len(stamps)):
        est = session.update(stamps[i], feats[i], usable[i])
        assert est.ticks == index[i]
        if index[i] > 0:
            np.testing.assert_allclose(est.probabilities, offline[index[i] - 1], atol=1e-5)
        assert est.warm == (index[i] >= 3)
        assert est.source == (SOURCE_TEMPORAL if est.warm else SOURCE_FRAME_EMA)
    c = session.counts
    assert c["gaps"] == 1 and c["missing_ticks_in_gaps"] >= 13 and c["resets"] == 0
    assert c["frames_unusable"] == int((~usable).sum()) and c["ticks_missing"] == int(missing[:-1].sum())


def test_a_long_gap_and_time_going_backwards_reset_the_session():
    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings(max_gap_s=5.0, warmup_ticks=2))
    stamps, feats, usable = _frames(60, 10.0)
    for s, f in zip(stamps, feats):
        est = session.update(s, f, True)
    assert est.warm and est.ticks == 11  # 6 s at 10 fps: the last frame is in tick 11
    est = session.update(stamps[-1] + 6.0, feats[0], True)  # a 6 s gap > max_gap_s
    assert not est.warm and est.ticks == 0 and est.source == SOURCE_FRAME_EMA
    assert session.counts["resets"] == 1 and "gap of 6.0 s" in session.last_reset_reason
    for s, f in zip(stamps[-1] + 6.1 + np.arange(20) / 10, feats):
        est = session.update(s, f, True)
    assert est.warm
    before = session.update(stamps[-1] + 8.0, feats[0], True)
    est = session.update(stamps[-1] + 7.5, feats[1], True)  # out of order, within max_backstep_s: dropped
    assert est.ticks == before.ticks and est.warm and session.counts["frames_out_of_order"] == 1
    np.testing.assert_array_equal(est.probabilities, before.probabilities)
    est = session.update(stamps[0], feats[0], True)  # the bag looped
    assert not est.warm and est.ticks == 0
    assert session.resets_by_reason == {"gap of 6.0 s > max_gap_s 5.0 s": 1, "time went backwards": 1}
    diag = session.diagnostics()
    assert diag["resets"] == "2" and diag["warm"] == "false" and int(diag["state_bytes"]) > 0


def test_reset_on_request_and_bad_features_are_counted_not_fatal():
    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings(warmup_ticks=1))
    for k in range(10):
        session.update(k * 0.3, np.zeros(D, np.float32), True)
    assert session.warm
    session.reset("service request")
    assert not session.warm and session.resets_by_reason["service request"] == 1
    est = session.update(10.0, np.full(D, np.nan, np.float32), True)
    est = session.update(10.1, np.ones(D + 1, np.float32), True)
    assert session.counts["frames_bad_features"] == 2 and est.ticks == 0
    est = session.update(10.6, np.zeros(D, np.float32), True)
    assert est.ticks == 1 and session.counts["ticks_missing"] == 1  # the bad frames' tick was missing
    with pytest.raises(ValueError, match="tick"):
        TemporalSession(model, binding, TemporalSettings(tick_s=1.0))


def test_settings_come_from_the_binding_then_from_overrides():
    _, binding = _session_parts(tick_s=0.25)
    binding = TemporalBinding(binding.frame_model_id, binding.class_names, binding.feature_names, 0.25,
                              binding.config, session_settings={"switch_evidence": 4.0, "unknown": 1})
    s = TemporalSettings.from_binding(binding, warmup_ticks=3, max_gap_s=None)
    assert (s.tick_s, s.switch_evidence, s.warmup_ticks, s.max_gap_s) == (0.25, 4.0, 3, TemporalSettings.max_gap_s)


def test_the_evidence_gate_ignores_a_blip_and_follows_a_sustained_change():
    gate = EvidenceGate(3, threshold=3.0)
    a, b = np.array([0.8, 0.1, 0.1]), np.array([0.1, 0.8, 0.1])
    assert gate.update(a) == 0
    assert gate.update(b) == 0  # one confident tick for class 1: log 8 = 2.08 nats < 3 (an argmax would switch)
    assert gate.update(a) == 0 and gate.evidence[1] == 0.0  # the blip's evidence drains
    labels = [gate.update(np.array([0.3, 0.6, 0.1])) for _ in range(6)]  # log 2 = 0.69 nats per tick
    assert labels == [0, 0, 0, 0, 1, 1]
    assert EvidenceGate(3, threshold=0.0).update(a) == 0


# ---- the feature tap -----------------------------------------------------------------------------
def _result(mask, probs=(0.2, 0.5, 0.3), conf=0.9):
    return FrameResult(mask=mask, activity_probs=np.array(probs, np.float32),
                       confidence=np.full((16, 16), conf, np.float32))


def test_frame_features_follow_feature_names():
    mask = np.zeros((120, 160), np.uint8)
    mask[:, :40] = 1
    mask[:60, 40:] = 2
    np.testing.assert_allclose(class_fractions(mask, 3), [0.375, 0.25, 0.375], atol=1e-6)
    measures = {"sharpness": np.e - 1, "haze": 0.3, "brightness": float("nan")}
    x = frame_features(_result(mask), len(SEG), measures)
    names = feature_names(SEG, ACT)
    assert x.dtype == np.float32 and x.shape == (len(names),) == (D,)
    v = dict(zip(names, x.tolist()))
    assert v["activity_prob:Incision"] == pytest.approx(0.5) and v["seg_fraction:FPCW Forceps"] == pytest.approx(0.25)
    assert v["pixel_confidence:mean"] == pytest.approx(0.9) and v["pixel_confidence:low_fraction"] == 0.0
    assert v["status:sharpness:log"] == pytest.approx(1.0) and v["status:haze"] == pytest.approx(0.3)
    assert v["status:brightness"] == 0.0  # not measured
    assert np.all(np.isfinite(frame_features(FrameResult(mask, np.ones(3, np.float32) / 3), 3)))


def test_degraded_images_are_masked_for_the_temporal_model_low_confidence_is_not():
    assert not usable_for_temporal(lost_frame_status("DROPPED", "replaced"))
    smoke = frame_status({"haze": 0.9}, StreamSettings().thresholds)
    unsure = frame_status({"activity_confidence": 0.1}, StreamSettings().thresholds)
    assert smoke.flags & FLAG["SMOKE_OR_HAZE"] and not usable_for_temporal(smoke)
    assert unsure.flags == FLAG["LOW_CONFIDENCE"] and usable_for_temporal(unsure)


# ---- the camera stream ---------------------------------------------------------------------------
def test_the_stream_publishes_ema_until_the_temporal_model_is_warm_then_the_temporal_estimate():
    model, binding = _session_parts()
    session = TemporalSession(model, binding, TemporalSettings(warmup_ticks=4))
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    stream = CameraStream(SEG, ACT, colors, StreamSettings(annotate=False), temporal=session)
    frame = frame_from_array(np.full((64, 80, 3), 120, np.uint8), "rgb8")
    mask = np.zeros((64, 80), np.uint8)
    sources, durations = [], []
    for k in range(40):  # 10 fps: 4 s
        out = stream.update(frame, _result(mask), stamp_s=7.0 + k / 10)
        sources.append(out.activity.source)
        durations.append(out.activity.duration_s)
        assert out.features.shape == (D,) and out.temporal.ticks == k // 5
        if out.activity.source == SOURCE_TEMPORAL:
            np.testing.assert_array_equal(out.activity.probabilities, out.temporal.probabilities)
    assert sources[:20] == [SOURCE_FRAME_EMA] * 20 and sources[20:] == [SOURCE_TEMPORAL] * 20
    assert durations[0] == 0.0 and durations[19] == pytest.approx(1.9)
    assert stream.reset_temporal("lifecycle deactivate")
    assert stream.update(frame, _result(mask), stamp_s=11.0).activity.source == SOURCE_FRAME_EMA
    with pytest.raises(ValueError, match="stamp"):
        stream.update(frame, _result(mask))
    plain = CameraStream(SEG, ACT, colors, StreamSettings(smoothing=Smoothing(enabled=False), annotate=False))
    out = plain.update(frame, _result(mask))
    assert out.activity.source == SOURCE_FRAME and np.isnan(out.activity.duration_s) and out.temporal is None
    assert not plain.reset_temporal("x")

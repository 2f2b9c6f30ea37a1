"""Regression test of the committed demo temporal model on a small cached feature set (issue 26, part 2).

``test/fixtures/temporal_regression/`` holds the frame features of held-out test procedures, as the
committed demo frame model computes them (the ``eval-temporal`` feature cache of docs/temporal.md's test set,
copied), and ``expected.json`` the scores measured when the committed temporal model was made. The test
re-scores the committed model the way the node runs it (``bag.temporal_scoring.score_videos``) and fails when it
falls below frame-wise + EMA by more than ``MARGIN`` or below its recorded scores; it also checks that a worse
model (the same weights shuffled) fails the same checks, so the check can fail.

When the committed models are re-made, regenerate the fixtures (docs/temporal.md, "Regression fixtures").
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test.conftest import REPO

FIXTURES = REPO / "test" / "fixtures" / "temporal_regression"
TEMPORAL = REPO / "models" / "demo" / "endoarss_demo_temporal.safetensors"
MARGIN = 0.02  # accuracy the temporal model may lose to frame-wise + EMA before the test fails
TOLERANCE = {"accuracy": 0.005, "f1@50": 0.01, "false_transitions_per_min": 0.05}


def _videos():
    from endoarss_ros.bag.feature_cache import load_features

    return [load_features(p) for p in sorted(FIXTURES.glob("*.npz"))]


def _score(model, binding, videos) -> dict:
    from endoarss_ros.bag.temporal_scoring import score_videos
    from endoarss_ros.inference.temporal_activity import TemporalSettings

    out, _ = score_videos(model, binding, TemporalSettings.from_binding(binding), videos)
    return {m: out[m]["summary"] for m in ("temporal", "ema")}


def _failures(scores: dict, expected: dict) -> list[str]:
    t, e, rec = scores["temporal"], scores["ema"], expected["temporal"]
    out = []
    if t["accuracy"] < e["accuracy"] - MARGIN:
        out.append(f"accuracy {t['accuracy']:.3f} < frame + EMA {e['accuracy']:.3f} - {MARGIN}")
    for key in ("accuracy", "f1@50"):
        if t[key] < rec[key] - TOLERANCE[key]:
            out.append(f"{key} {t[key]:.3f} < recorded {rec[key]:.3f}")
    if t["false_transitions_per_min"] > rec["false_transitions_per_min"] + TOLERANCE["false_transitions_per_min"]:
        out.append(f"false transitions {t['false_transitions_per_min']:.2f}/min > recorded "
                   f"{rec['false_transitions_per_min']:.2f}")
    return out


@pytest.fixture(scope="module")
def committed():
    from endoarss_ros.model.temporal_tcn import load_temporal

    if not TEMPORAL.is_file():
        pytest.skip("no committed demo temporal model")
    expected = json.loads((FIXTURES / "expected.json").read_text())
    model, binding = load_temporal(TEMPORAL)
    assert binding.frame_model_id == expected["frame_model_id"], (
        "the fixtures were made with another frame model: regenerate them (docs/temporal.md)")
    return model, binding, expected, _videos()


def test_committed_temporal_model_keeps_its_scores_and_beats_frame_ema(committed):
    model, binding, expected, videos = committed
    assert len(videos) == expected["videos"] and sum(len(v.stamps) for v in videos) == expected["frames"]
    scores = _score(model, binding, videos)
    assert not _failures(scores, expected), (_failures(scores, expected), scores["temporal"], scores["ema"])
    assert scores["ema"]["accuracy"] == pytest.approx(expected["ema"]["accuracy"], abs=1e-6)  # same features


def test_a_worse_model_fails_the_same_checks(committed):
    model, binding, expected, videos = committed
    worse = type(model)(model.config)
    worse.load_state_dict(model.state_dict())
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in worse.parameters():
            flat = p.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=gen)])
    worse.eval()
    failures = _failures(_score(worse, binding, videos), expected)
    assert failures, "shuffled weights passed the regression checks: the test cannot fail"
    assert np.isfinite(len(failures))

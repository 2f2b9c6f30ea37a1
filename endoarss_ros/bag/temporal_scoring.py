"""Scoring a temporal model the way the node runs it: frame by frame through
``inference.temporal_activity.TemporalSession`` (the clock, missing ticks, resets, warm-up, the evidence gate),
next to the frame-wise + EMA baseline (``inference.smoother``, the node's defaults) on the same frames. Used for
model selection on validation videos (``validation_scorer`` for ``training.temporal_loop``) and by
``endoarss eval-temporal``.

What the node publishes for a frame (``inference.stream.published_activity``, the one definition: the temporal
label once the session is warm, before that the EMA label; ``source`` says which) is what is scored as "temporal".
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..inference.smoother import DEFAULT_SMOOTHING, ActivitySmoother, Smoothing
from ..inference.stream import published_activity
from ..inference.temporal_activity import TemporalSession, TemporalSettings
from ..metrics.segments import summarize, video_scores
from .feature_cache import VideoFeatures


@dataclass(frozen=True)
class Degradation:
    """Frames lost on the way (robustness): ``drop`` of them at random, and a gap of ``gap_s`` every
    ``gap_every_s`` of video (placed at random inside each such stretch, never in its first 10 s)."""

    drop: float = 0.0
    gap_s: float = 0.0
    gap_every_s: float = 180.0
    seed: int = 0

    def keep(self, stamps: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.seed)
        keep = rng.random(len(stamps)) >= self.drop
        if self.gap_s > 0 and len(stamps):
            t0 = stamps[0]
            for start in np.arange(t0, stamps[-1], self.gap_every_s):
                span = min(self.gap_every_s, stamps[-1] - start)
                if span < self.gap_s + 10.0:
                    continue
                g = start + rng.uniform(10.0, span - self.gap_s)
                keep &= ~((stamps >= g) & (stamps < g + self.gap_s))
        keep[0] = True  # the stream starts with its first frame
        return keep


@dataclass
class StreamedVideo:
    name: str
    stamps: np.ndarray
    truth: np.ndarray
    frame: np.ndarray  # frame-wise argmax
    ema: np.ndarray  # frame-wise + EMA (hysteresis) label
    temporal: np.ndarray  # what the node publishes with the temporal model (EMA until warm)
    source: list[str]
    temporal_probs: np.ndarray  # (N, K)


def stream_video(model, binding, settings: TemporalSettings, video: VideoFeatures,
                 degradation: Degradation | None = None, smoothing: Smoothing = DEFAULT_SMOOTHING) -> StreamedVideo:
    keep = degradation.keep(video.stamps) if degradation else np.ones(len(video.stamps), bool)
    idx = np.flatnonzero(keep)
    session = TemporalSession(model, binding, settings)
    smoother = ActivitySmoother.from_settings(video.probs.shape[1], smoothing)
    n = len(idx)
    ema, temporal = np.zeros(n, np.int64), np.zeros(n, np.int64)
    probs = np.zeros((n, video.probs.shape[1]), np.float32)
    source = []
    for j, i in enumerate(idx):
        e = smoother.update(video.probs[i])
        t = session.update(float(video.stamps[i]), video.features[i], bool(video.usable[i]))
        ema[j] = e.class_id
        _, temporal[j], published_source = published_activity(t, e, smoother.enabled)
        probs[j] = t.probabilities
        source.append(published_source)
    return StreamedVideo(video.name, video.stamps[idx], video.labels[idx], video.probs[idx].argmax(1), ema,
                         temporal, source, probs)


def score_videos(model, binding, settings: TemporalSettings, videos: Sequence[VideoFeatures],
                 degradation: Degradation | None = None) -> tuple[dict, list[StreamedVideo]]:
    """Per-video scores and their summary for the temporal model, frame-wise + EMA and the raw frame argmax."""
    streamed = [stream_video(model, binding, settings, v, degradation) for v in videos]
    out: dict = {}
    for method in ("temporal", "ema", "frame"):
        per = [video_scores(getattr(s, method), s.truth, s.stamps) for s in streamed]
        out[method] = {"summary": summarize(per), "videos": {s.name: p for s, p in zip(streamed, per)}}
    return out, streamed


def validation_scorer(videos: Sequence[VideoFeatures]):
    """``score(model, binding, switch_evidence) -> {method: summary}`` on ``videos``, streamed as the node runs
    (what ``training.temporal_loop.train_temporal`` selects with)."""
    def score(model, binding, switch_evidence: float) -> dict:
        settings = TemporalSettings(tick_s=binding.tick_s, switch_evidence=switch_evidence)
        return {m: r["summary"] for m, r in score_videos(model, binding, settings, videos)[0].items()}
    return score

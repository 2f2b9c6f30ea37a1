"""What the temporal model sees in training matches what the node sees live (issue 26, part 5): gaps of up to the
session's reset limit (45-60 s included, never a reset) and one to many frames per tick."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from endoarss_ros.inference.temporal_activity import TemporalSettings
from endoarss_ros.model.temporal_clock import ticks_from_frames
from endoarss_ros.training import temporal_loop
from endoarss_ros.training.temporal_loop import TemporalTrainSettings, augmented_ticks


def test_training_passes_have_long_gaps_and_varying_frames_per_tick(monkeypatch):
    fps, seconds = 4.0, 240.0
    stamps = np.arange(0, seconds, 1 / fps)
    video = SimpleNamespace(stamps=stamps, features=np.zeros((len(stamps), 3), np.float32),
                            usable=np.ones(len(stamps), bool), labels=np.zeros(len(stamps), np.int64))
    s = TemporalTrainSettings(drop=0.0, crop_p=0.0, speed=(1.0, 1.0))
    live_limit = TemporalSettings().max_gap_s
    assert s.max_gap_s == live_limit  # training gaps reach the node's reset limit
    seen_gaps, per_tick = [], set()

    def ticks(st, feats, usable, tick_s):
        if len(st) < len(stamps):  # the frames of the pass (the labels' call gets all frames)
            seen_gaps.append(float(np.diff(st).max()))
            per_tick.update(np.bincount(np.floor((st - st[0]) / tick_s + 1e-9).astype(int)).tolist())
        return ticks_from_frames(st, feats, usable, tick_s)

    monkeypatch.setattr(temporal_loop, "ticks_from_frames", ticks)  # watch the frames each pass turns into ticks
    rng = np.random.default_rng(0)
    for _ in range(200):
        augmented_ticks(video, rng, s, 3)
    gaps = np.array(seen_gaps)
    assert ((gaps >= 45) & (gaps < 60)).sum() >= 10, np.sort(gaps)[-20:]  # 45-60 s gaps occur in training
    assert gaps.max() <= live_limit  # and none long enough to reset the session live
    assert {1, 2, 4} <= per_tick  # one frame per tick (thinned) up to all four of a 4 fps camera

"""Timeline scores on hand-made sequences whose values are worked out in the comments."""
from __future__ import annotations

import numpy as np
import pytest

from endoarss_ros.metrics.segments import (
    TransitionRules,
    edit_score,
    false_transitions,
    segmental_f1,
    segments,
    summarize,
    transition_delays,
    video_scores,
)

T = np.arange(8.0)  # one frame per second


def test_one_frame_late_switch():
    truth = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 0, 0, 1, 1, 1])
    s = video_scores(pred, truth, T, TransitionRules(hold_s=2, max_delay_s=10, anticipation_s=1))
    assert s["accuracy"] == pytest.approx(7 / 8)
    # class 0: tp 4 fp 1 fn 0 -> 8/9; class 1: tp 3 fp 0 fn 1 -> 6/7
    assert s["macro_f1"] == pytest.approx((8 / 9 + 6 / 7) / 2)
    assert s["edit"] == 1.0
    # IoUs 4/5 and 3/4: hits at 10, 25, 50 %
    assert s["f1@10"] == s["f1@25"] == s["f1@50"] == 1.0
    assert s["delays_s"] == [1.0] and s["delay_median_s"] == 1.0 and s["misses"] == 0
    assert s["switches"] == 1 and s["false_transitions"] == 0
    assert s["minutes"] == pytest.approx(8 / 60)


def test_flicker_counts_false_transitions_and_hurts_segments():
    truth = np.array([0, 0, 0, 0, 0, 0, 1, 1])
    pred = np.array([0, 1, 0, 0, 0, 0, 1, 1])
    # predicted switches: to 1 at t=1 (true transition into 1 is at t=6; 1 >= 6 - 2? no -> false),
    # to 0 at t=2 (no true transition into 0 -> false), to 1 at t=6 (explained)
    assert false_transitions(pred, truth, T, TransitionRules(anticipation_s=2)) == (3, 2)
    # segments pred: 0[0,1) 1[1,2) 0[2,6) 1[6,8); truth: 0[0,6) 1[6,8)
    # edit: pred labels 0 1 0 1 vs 0 1 -> distance 2, max 4 -> 0.5
    assert edit_score(pred, truth) == 0.5
    # IoU with truth: 0[0,1) 1/6, 1[1,2) 0 (only truth 1 is [6,8): no overlap), 0[2,6) 4/6, 1[6,8) 1.
    # @50: the best match of 0[0,1) is truth 0 with 1/6 -> miss; 0[2,6): 4/6 -> hit; 1[6,8) hit -> P 2/4, R 2/2
    assert segmental_f1(pred, truth, 0.5) == pytest.approx(2 * 0.5 * 1 / 1.5)
    # @10: 0[0,1) IoU 1/6 >= 0.1 takes truth 0 first, so 0[2,6) finds it used: still 2 hits
    assert segmental_f1(pred, truth, 0.1) == pytest.approx(2 * 0.5 * 1 / 1.5)


def test_delay_needs_the_label_to_hold_and_misses_are_counted():
    truth = np.array([0] * 4 + [1] * 12)
    pred = np.array([0] * 5 + [1] + [0] * 2 + [1] * 8)  # a 1 s blip at t=5, then holds from t=8
    t = np.arange(16.0)
    assert transition_delays(pred, truth, t, TransitionRules(hold_s=3, max_delay_s=60)) == [4.0]
    assert transition_delays(pred, truth, t, TransitionRules(hold_s=3, max_delay_s=3)) == [None]
    never = np.zeros(16, int)
    s = video_scores(never, truth, t)
    assert s["misses"] == 1 and s["delay_median_s"] is None and s["false_transitions"] == 0


def test_unlabelled_frames_are_left_out():
    truth = np.array([0, -1, -1, 0, 1, 1])
    pred = np.array([0, 2, 2, 0, 1, 1])
    s = video_scores(pred, truth, np.arange(6.0))
    assert s["accuracy"] == 1.0 and s["frames"] == 4 and s["edit"] == 1.0


def test_segments_and_summary_average_videos_equally():
    assert segments(np.array([2, 2, 0, 1, 1])) == [(2, 0, 2), (0, 2, 3), (1, 3, 5)]
    a = video_scores(np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]), np.arange(4.0))
    b = video_scores(np.array([0] * 8), np.array([0] * 4 + [1] * 4), np.arange(8.0))
    s = summarize([a, b])
    assert s["accuracy"] == pytest.approx((1.0 + 0.5) / 2)  # not 10/12 pooled over frames
    assert s["true_transitions"] == 2 and s["misses"] == 1 and s["delay_median_s"] == 0.0

"""Stereo pairing by stamp and camera_info lookup (pure Python, no ROS)."""
from __future__ import annotations

import random

import pytest

from endoarss_ros.inference.stereo_pairing import LEFT, RIGHT, CameraInfoCache, StereoPairer

MS = 1_000_000


def feed(pairer, events):
    """events: (side, stamp_ms, item); returns all pairs (as item tuples) and unpaired (side, item, reason)."""
    pairs, unpaired = [], []
    for side, stamp_ms, item in events:
        update = pairer.add(side, int(round(stamp_ms * MS)), item)
        pairs += [(p.left.item, p.right.item) for p in update.pairs]
        unpaired += [(u.side, u.frame.item, u.reason) for u in update.unpaired]
    end = pairer.flush()
    unpaired += [(u.side, u.frame.item, u.reason) for u in end.unpaired]
    return pairs, unpaired


def test_exact_stamps_pair_in_either_arrival_order():
    events = []
    for i in range(6):
        t = i * 33.3
        first, second = (LEFT, RIGHT) if i % 2 else (RIGHT, LEFT)
        events += [(first, t, f"{first[0]}{i}"), (second, t, f"{second[0]}{i}")]
    pairer = StereoPairer(tolerance_ns=0)
    pairs, unpaired = feed(pairer, events)
    assert pairs == [(f"l{i}", f"r{i}") for i in range(6)]
    assert unpaired == []
    summary = pairer.counts.summary()
    assert summary["matched"] == 6 and summary["unmatched_left"] == 0 and summary["unmatched_right"] == 0
    assert summary["offset_ms_max"] == 0.0


def test_exact_pair_is_emitted_at_once():
    pairer = StereoPairer(tolerance_ns=0)
    assert pairer.add(LEFT, 100, "l").pairs == []
    update = pairer.add(RIGHT, 100, "r")
    assert [(p.left.item, p.right.item) for p in update.pairs] == [("l", "r")]


def test_tolerance_pairs_offset_stamps_and_counts_offsets():
    events = []
    for i in range(5):
        events += [(LEFT, i * 33.0, f"l{i}"), (RIGHT, i * 33.0 + 3.0, f"r{i}")]
    pairer = StereoPairer(tolerance_ns=5 * MS)
    pairs, unpaired = feed(pairer, events)
    assert pairs == [(f"l{i}", f"r{i}") for i in range(5)] and unpaired == []
    summary = pairer.counts.summary()
    assert summary["offset_ms_median"] == pytest.approx(3.0) and summary["offset_ms_max"] == pytest.approx(3.0)

    strict = StereoPairer(tolerance_ns=2 * MS)
    pairs, unpaired = feed(strict, events)
    assert pairs == []
    assert sorted(item for _, item, _ in unpaired) == sorted(item for _, _, item in events)
    assert strict.counts.summary()["unmatched_left"] == 5 and strict.counts.summary()["unmatched_right"] == 5


def test_a_missing_frame_never_shifts_the_pairing():
    # right frame 1 is lost; the tolerance (40 ms) is wider than half the period, yet l1 must stay unpaired
    events = [(LEFT, 0, "l0"), (RIGHT, 0, "r0"), (LEFT, 33, "l1"), (LEFT, 66, "l2"), (RIGHT, 66, "r2"),
              (LEFT, 100, "l3"), (RIGHT, 100, "r3")]
    pairer = StereoPairer(tolerance_ns=40 * MS)
    pairs, unpaired = feed(pairer, events)
    assert pairs == [("l0", "r0"), ("l2", "r2"), ("l3", "r3")]
    assert unpaired == [(LEFT, "l1", "no_partner")]


def test_half_period_rule_refuses_a_pair_across_a_gap():
    # regular 33 ms streams with right 10 ms late; right frame 2 lost: l2 (t=66) and r3 (t=109) are 43 ms apart,
    # l3 (99) is nearer to r3; with a 50 ms tolerance l2 must not pair with anything
    events = []
    for i in range(5):
        events.append((LEFT, i * 33.0, f"l{i}"))
        if i != 2:
            events.append((RIGHT, i * 33.0 + 10.0, f"r{i}"))
    pairer = StereoPairer(tolerance_ns=50 * MS)
    pairs, unpaired = feed(pairer, events)
    assert pairs == [(f"l{i}", f"r{i}") for i in range(5) if i != 2]
    assert unpaired == [(LEFT, "l2", "no_partner")]


def test_random_streams_pair_only_true_partners_and_every_true_partner():
    rng = random.Random(7)
    for trial in range(40):
        tolerance_ms = rng.choice([0.0, 2.0, 8.0, 15.0])
        jitter_ms = 0.0 if tolerance_ms == 0 else tolerance_ms / 2
        frames = 60
        events = []
        for i in range(frames):
            t = i * 33.3
            for side in (LEFT, RIGHT):
                if rng.random() < 0.15:
                    continue  # lost frame
                stamp = round(t + (rng.uniform(-jitter_ms, jitter_ms) if side == RIGHT else 0.0), 3)
                events.append((side, stamp, (side, i)))
        # arrival order: each side in order, the two sides interleaved with random lag
        left = [e for e in events if e[0] == LEFT]
        right = [e for e in events if e[0] == RIGHT]
        merged = []
        while left or right:
            pick = left if (left and (not right or rng.random() < 0.5)) else right
            merged.append(pick.pop(0))
        pairer = StereoPairer(tolerance_ns=int(tolerance_ms * MS), max_pending=64)
        pairs, unpaired = feed(pairer, merged)
        assert all(a[1] == b[1] for a, b in pairs), f"trial {trial}: wrong pair in {pairs}"
        surviving = {side: {i for s, _, (_, i) in events if s == side} for side in (LEFT, RIGHT)}
        both = surviving[LEFT] & surviving[RIGHT]
        assert sorted(a[1] for a, _ in pairs) == sorted(both), f"trial {trial}"
        used = [a for a, _ in pairs] + [b for _, b in pairs] + [item for _, item, _ in unpaired]
        assert len(used) == len(set(used)) == len(events)  # each frame exactly once
        summary = pairer.counts.summary()
        assert summary["matched"] == len(both)
        assert summary["unmatched_left"] + summary["unmatched_right"] == len(events) - 2 * len(both)


def test_stale_out_of_order_and_duplicate_frames_are_counted():
    pairer = StereoPairer(tolerance_ns=0)
    pairs, unpaired = feed(pairer, [
        (LEFT, 10, "l10"), (RIGHT, 10, "r10"),
        (LEFT, 5, "l5"),  # older than the newest pair: stale
        (RIGHT, 30, "r30"), (RIGHT, 20, "r20"),  # r20 arrives after r30: out of order
        (RIGHT, 30, "r30b"),  # same stamp again: duplicate
        (LEFT, 30, "l30"),
    ])
    assert pairs == [("l10", "r10"), ("l30", "r30")]
    assert sorted(unpaired) == sorted([(LEFT, "l5", "stale"), (RIGHT, "r20", "out_of_order"),
                                       (RIGHT, "r30b", "duplicate")])
    by_reason = pairer.counts.summary()["unmatched_by_reason"]
    assert by_reason[LEFT]["stale"] == 1 and by_reason[RIGHT]["out_of_order"] == 1
    assert by_reason[RIGHT]["duplicate"] == 1


def test_frames_older_than_a_pair_become_unpairable():
    # right 0 arrives after the pair at 33 was made: it can no longer pair with left 0
    pairer = StereoPairer(tolerance_ns=0)
    pairs, unpaired = feed(pairer, [(LEFT, 0, "l0"), (LEFT, 33, "l33"), (RIGHT, 33, "r33"), (RIGHT, 0, "r0")])
    assert pairs == [("l33", "r33")]
    assert sorted(unpaired) == [(LEFT, "l0", "no_partner"), (RIGHT, "r0", "stale")]


def test_buffers_are_bounded_when_one_side_is_silent():
    pairer = StereoPairer(tolerance_ns=5 * MS, max_pending=4)
    dropped = []
    for i in range(20):
        update = pairer.add(LEFT, i * 33 * MS, i)
        assert update.pairs == []
        dropped += [(u.frame.item, u.reason) for u in update.unpaired]
        assert pairer.pending(LEFT) <= 4
    assert dropped == [(i, "overflow") for i in range(16)]
    assert pairer.counts.summary()["unmatched_by_reason"][LEFT]["overflow"] == 16


def test_expire_and_flush_return_every_waiting_frame():
    pairer = StereoPairer(tolerance_ns=5 * MS)
    for i in range(3):
        pairer.add(LEFT, i * 33 * MS, f"l{i}")
    expired = pairer.expire(50 * MS)
    assert [(u.frame.item, u.reason) for u in expired.unpaired] == [("l0", "timeout"), ("l1", "timeout")]
    assert [(u.frame.item, u.reason) for u in pairer.flush().unpaired] == [("l2", "end")]
    assert pairer.pending(LEFT) == 0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="tolerance_ns"):
        StereoPairer(tolerance_ns=-1)
    with pytest.raises(ValueError, match="max_pending"):
        StereoPairer(max_pending=0)
    with pytest.raises(ValueError, match="side"):
        StereoPairer().add("middle", 0, None)


def test_camera_info_cache_exact_latest_and_missing():
    cache = CameraInfoCache(capacity=3, fallback_max_age_ns=1000)
    assert cache.lookup(5, now_ns=0).kind == "missing"
    for stamp in (10, 20, 30, 40):
        cache.add(stamp, f"info{stamp}", received_ns=stamp)
    exact = cache.lookup(30, now_ns=45)
    assert (exact.kind, exact.info, exact.stamp_ns) == ("exact", "info30", 30)
    # 10 fell out of the bounded cache: the latest one stands in, while it is fresh
    fallback = cache.lookup(10, now_ns=500)
    assert (fallback.kind, fallback.info, fallback.stamp_ns) == ("latest", "info40", 40)
    assert cache.lookup(50, now_ns=2000).kind == "missing"  # latest received 1960 ns before: too old
    assert cache.summary() == {"received": 4, "exact": 1, "latest": 1, "missing": 2}

    strict = CameraInfoCache(fallback_max_age_ns=None)
    strict.add(10, "a", received_ns=0)
    assert strict.lookup(11, now_ns=0).kind == "missing"


def test_a_steady_stream_pairs_without_waiting_for_the_next_frame():
    pairer = StereoPairer(tolerance_ns=5 * MS)
    made_when = {}
    for i in range(8):
        for side, offset in ((LEFT, 0.0), (RIGHT, 3.0)):
            update = pairer.add(side, int((i * 33.0 + offset) * MS), f"{side[0]}{i}")
            for p in update.pairs:
                made_when[p.left.item] = f"{side[0]}{i}"
    # once the left period is known (3 frames), each pair is made when its right frame arrives
    assert all(made_when[f"l{i}"] == f"r{i}" for i in range(3, 8))

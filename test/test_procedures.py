"""Synthetic whole procedures: order, returns to incision, ambiguous intervals, determinism, files."""
from __future__ import annotations

import numpy as np

from endoarss_ros.data.classes import CIRCUMFERENTIAL_INCISION, MARKING, MTLESD, SUBMUCOSAL_DISSECTION
from endoarss_ros.data.phase_layout import find_videos, read_phase_file, read_video
from endoarss_ros.data.procedures import (
    AMBIGUITY_KINDS,
    INSTRUMENTS_OUT,
    ProcedureSettings,
    make_procedure,
    numbered_procedure,
    write_procedure_videos,
)

SMALL = ProcedureSettings(minutes=2.0, fps=1.0, size=(48, 64), returns=2.0, ambiguity_rate=0.3)


def test_order_returns_and_ambiguity():
    for seed in range(6):
        p = make_procedure(seed, SMALL)
        acts = [g.activity for g in p.segments]
        assert acts[:3] == [MARKING, CIRCUMFERENTIAL_INCISION, SUBMUCOSAL_DISSECTION]
        assert MARKING not in acts[1:] and acts.count(CIRCUMFERENTIAL_INCISION) >= 2  # at least one return
        assert acts[-1] == SUBMUCOSAL_DISSECTION
        assert all(a != b for a, b in zip(acts, acts[1:]))  # segments are maximal
        assert p.segments[-1].end == np.float64(120.0) or abs(p.segments[-1].end - 120.0) < 1e-6
        for g0, g1 in zip(p.segments, p.segments[1:]):
            assert g0.end == g1.start
        total = sum(a.end - a.start for a in p.ambiguities)
        assert 0.2 * 120 <= total <= 0.3 * 120 + SMALL.ambiguity_seconds[1]
        for a in p.ambiguities:  # each inside one activity: the truth is the ongoing activity
            assert p.activity_at(a.start) == p.activity_at(a.end - 1e-6)


def test_frames_are_deterministic_and_labelled_with_the_ongoing_activity():
    p = make_procedure(3, ProcedureSettings(minutes=1.0, fps=1.0, size=(48, 64), ambiguity_rate=0.4,
                                            ambiguity_kinds=(INSTRUMENTS_OUT,)))
    a, b = list(p.frames()), list(make_procedure(3, p.settings).frames())
    assert len(a) == 60 and all(np.array_equal(x.rgb, y.rgb) for x, y in zip(a, b))
    assert [f.activity for f in a] == p.labels()
    withdrawn = [f for f in a if f.ambiguity == INSTRUMENTS_OUT]
    assert withdrawn and all(not np.isin(f.mask, [1, 3, 4]).any() for f in withdrawn)  # no instrument pixels
    assert any(np.isin(f.mask, [1, 3, 4]).any() for f in a if f.ambiguity is None)


def test_settings_change_the_draw():
    other = ProcedureSettings(minutes=2.0, fps=1.0, size=(48, 64), shares=(0.3, 0.3, 0.4), ambiguity_rate=0.0)
    assert make_procedure(0, SMALL).segments != make_procedure(0, other).segments
    assert make_procedure(0, other).ambiguities == []
    assert make_procedure(0, SMALL).segments != make_procedure(1, SMALL).segments


def test_written_in_the_phase_layout(tmp_path):
    s = ProcedureSettings(minutes=0.25, fps=2.0, size=(48, 64), ambiguity_kinds=AMBIGUITY_KINDS)
    write_procedure_videos(tmp_path, 2, s, seed=7)
    entries = find_videos(tmp_path)
    assert [e.name for e in entries] == ["procedure_s7_000", "procedure_s7_001"]
    labels = read_phase_file(entries[0].phases, MTLESD.activity_classes)
    assert sorted(labels) == list(range(30)) and len(list(read_video(entries[0].video))) == 30


def test_procedure_bags_are_labelled_videos(tmp_path):
    from endoarss_ros.bag.labelled import labelled_sources
    from endoarss_ros.cli import main

    assert main(["synth", "procedures", str(tmp_path / "bags"), "--count", "1", "--minutes", "0.2", "--fps", "2",
                 "--size", "64x48", "--format", "bag", "--seed", "4"]) == 0
    (video,) = labelled_sources(tmp_path / "bags", MTLESD.activity_classes)
    frames = list(video.frames())
    _, proc = numbered_procedure(4, 0, ProcedureSettings(minutes=0.2, fps=2.0, size=(48, 64)))
    assert [label for _, _, label in frames] == proc.labels()
    assert [t for t, _, _ in frames] == [i / 2.0 for i in range(len(frames))]
    assert frames[0][1].pixels.shape == (48, 64, 3)

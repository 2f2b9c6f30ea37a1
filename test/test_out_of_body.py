"""Out of the patient (issue 27): the state's hysteresis, the committed detector on held-out frames, and the
privacy gate on every file a recording in -> out -> in goes through: replay's output bag (--copy-input,
--overlay), its overlay MP4, and `endoarss scrub` (MCAP and sqlite3, blank and drop).

The recording: a held-out synthetic procedure (seed set 1027, never trained on), then views of the held-out
photographs (``data.outside.HELD_OUT_PHOTOS``, never trained on), then the procedure again."""
from __future__ import annotations

import json
import math
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from endoarss_ros.inference.out_of_body import OutOfBodySettings, OutOfBodyState

SIZE = (180, 224)
BEFORE, OUTSIDE, AFTER = 8, 6, 8
EXIT = OutOfBodySettings().exit_frames


# ---- the state ---------------------------------------------------------------------------------------
def test_the_state_enters_on_the_first_outside_frame_and_leaves_after_a_run_of_in_body_frames():
    state = OutOfBodyState(OutOfBodySettings(threshold=0.5, exit_frames=3))
    seq = [0.1, 0.2, 0.9, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.2]
    got = [state.update(p, i) for i, p in enumerate(seq)]
    assert [d.out_of_body for d in got] == [False, False, True, True, True, True, True, True, False, False]
    assert [d.gated for d in got] == [d.out_of_body for d in got]
    assert state.entries == 1 and state.gated_frames == 6
    assert [(i.start_ns, i.end_ns, i.frames) for i in state.intervals] == [(2, 7, 6)]
    assert got[2].reason.startswith("out_of_body: probability 0.9") and got[6].reason.startswith(
        "out_of_body: leaving, 1 of 3")


def test_an_undecided_frame_is_gated_and_never_counts_towards_leaving():
    state = OutOfBodyState(OutOfBodySettings(exit_frames=2))
    assert state.undecided(0).gated and not state.out_of_body  # fail closed even when in body
    state.update(0.9, 1)
    state.update(0.01, 2)
    assert state.undecided(3).gated
    assert state.update(0.01, 4).out_of_body  # the run restarted after the undecided frame
    assert not state.update(0.01, 5).out_of_body
    assert state.undecided_frames == 2


def test_with_the_gate_off_the_state_is_kept_but_nothing_is_gated():
    state = OutOfBodyState(OutOfBodySettings(privacy_gate=False))
    d = state.update(0.99, 0)
    assert d.out_of_body and not d.gated and state.gated_frames == 0 and not state.undecided(1).gated


# ---- the detector -----------------------------------------------------------------------------------
def _committed():
    from endoarss_ros.bag.privacy import load_detector
    from endoarss_ros.inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL

    return load_detector(DEFAULT_OUT_OF_BODY_MODEL)


def _probabilities(detector, frames):
    from endoarss_ros.inference import quality
    from endoarss_ros.inference.frames import frame_from_array

    out = []
    for rgb in frames:
        frame = frame_from_array(rgb, "rgb8")
        small = quality.analysis_rgb(frame)
        out.append(detector.probability(small, quality.measure(frame, small).as_dict()))
    return np.array(out)


def _procedure(index: int = 0, frames: int = BEFORE + AFTER):
    from endoarss_ros.data.procedures import ProcedureSettings, numbered_procedure

    _, proc = numbered_procedure(1027, index, ProcedureSettings(minutes=frames / 120.0, fps=2.0, size=SIZE))
    return list(proc.frames())[:frames]


def _photos(count: int, seed: int = 5):
    from endoarss_ros.data.outside import HELD_OUT_PHOTOS, photo_views

    views = [v for name in HELD_OUT_PHOTOS for v in photo_views(name, math.ceil(count / len(HELD_OUT_PHOTOS)),
                                                                   seed, SIZE)]
    return [views[i * len(views) // count] for i in range(count)]


def test_the_committed_detector_separates_held_out_procedures_from_held_out_photographs():
    detector = _committed()
    inside = _probabilities(detector, [f.rgb for i in (1, 2) for f in _procedure(i, 40)])
    outside = _probabilities(detector, _photos(24, seed=11))
    assert (inside < 0.5).mean() >= 0.97, np.sort(inside)[-5:]
    assert (outside >= 0.5).mean() >= 0.9, np.sort(outside)[:5]


def test_a_damaged_or_foreign_detector_file_is_refused_with_one_line(tmp_path):
    from safetensors.numpy import save_file

    from endoarss_ros.inference.out_of_body import OutOfBodyDetector, OutOfBodyModelError

    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00" * 64)
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, np.float32)}, str(foreign), metadata={"kind": "something_else"})
    for path, words in ((junk, "unreadable"), (foreign, "not an out-of-body detector"),
                        (tmp_path / "none.safetensors", "no such file")):
        with pytest.raises(OutOfBodyModelError, match=words) as e:
            OutOfBodyDetector.load(path)
        assert "\n" not in str(e.value)


# ---- the recording in -> out -> in ---------------------------------------------------------------------
def _sequence():
    proc = _procedure()
    photos = _photos(OUTSIDE)
    blank_mask = np.zeros(SIZE, np.uint8)
    items = ([SimpleNamespace(rgb=f.rgb, mask=f.mask, activity=f.activity) for f in proc[:BEFORE]]
             + [SimpleNamespace(rgb=p, mask=blank_mask, activity=proc[BEFORE].activity) for p in photos]
             + [SimpleNamespace(rgb=f.rgb, mask=f.mask, activity=f.activity) for f in proc[BEFORE:]])
    return items


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """(mcap bag, sqlite3 bag, stamps ns, the frames' rgb)."""
    from endoarss_ros.bag.synth_bag import stamp_ns, write_frames_bag

    items = _sequence()
    folder = tmp_path_factory.mktemp("in_out_in")
    bags = {}
    for storage in ("mcap", "sqlite3"):
        bags[storage] = folder / f"rec_{storage}"
        info = write_frames_bag(bags[storage], iter(items), len(items), 2.0, SIZE, storage=storage)
    stamps = [stamp_ns(info.start_ns, i, 2.0) for i in range(len(items))]
    return bags, stamps, [it.rgb for it in items]


def _interval(stamps):
    """Stamps that must be blanked: the photographs and the hysteresis tail (exit_frames - 1 in-body frames)."""
    return set(stamps[BEFORE:BEFORE + OUTSIDE + EXIT - 1])


def _read(bag, topic):
    from endoarss_ros.bag.reader import BagReader, stamp_to_ns

    out = {}
    with BagReader(bag) as r:
        for conn, t, raw in r.messages([topic]):
            msg = r.deserialize(raw, conn.msgtype)
            out[stamp_to_ns(msg.header.stamp)] = (t, bytes(raw), msg)
    return out


def _pixels(msg):
    return np.asarray(msg.data, np.uint8).reshape(msg.height, msg.width, -1)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


def _replay(recording, tmp_path, tiny_model, **kw):
    from endoarss_ros.bag.replay import ReplayOptions, replay

    out = tmp_path / "out"
    opts = ReplayOptions(input=recording[0]["mcap"], output=out, model=tiny_model, device="cpu", overlay=True,
                         copy_input=True, video=tmp_path / "overlay.mp4", progress=False, threads=1, **kw)
    return out, replay(opts)


def test_replay_blanks_every_copied_frame_overlay_mask_and_video_frame_of_the_interval(recording, tmp_path,
                                                                                       tiny_model):
    from endoarss_ros.bag.synth_bag import IMAGE_TOPIC

    bags, stamps, _ = recording
    out, summary = _replay(recording, tmp_path, tiny_model)
    gated = _interval(stamps)
    privacy = summary["privacy"]["topics"][IMAGE_TOPIC]
    assert privacy["gated_frames"] == len(gated) and privacy["entries"] == 1
    assert privacy["gated_intervals"] == [{"start_ns": min(gated), "end_ns": max(gated), "frames": len(gated)}]
    assert privacy["copied_input"] == {"as_recorded": len(stamps) - len(gated), "blanked": len(gated),
                                       "left_out": 0}
    source = _read(bags["mcap"], IMAGE_TOPIC)
    copied = _read(out, IMAGE_TOPIC)
    overlays = _read(out, "/endoarss/segmentation/overlay")
    masks = _read(out, "/endoarss/segmentation/mask")
    statuses = _read(out, "/endoarss/status")
    activities = _read(out, "/endoarss/activity")
    instruments = _read(out, "/endoarss/instruments")
    assert set(copied) == set(overlays) == set(statuses) == set(stamps)
    for s in stamps:
        if s in gated:
            assert not _pixels(copied[s][2]).any() and not _pixels(overlays[s][2]).any()
            assert not _pixels(masks[s][2]).any()
            assert statuses[s][2].out_of_body and statuses[s][2].flags & (1 << 13)
            assert activities[s][2].source == "out_of_body" and activities[s][2].class_id == 65535
            assert activities[s][2].label == "out_of_body" and len(instruments[s][2].instruments) == 0
        else:
            assert copied[s][:2] == source[s][:2]  # byte for byte, at the same bag time
            assert _pixels(overlays[s][2]).mean() > 20 and not statuses[s][2].out_of_body
            assert activities[s][2].source != "out_of_body"
    # the video: one frame per input frame, the interval's black, the others not
    cap = cv2.VideoCapture(str(tmp_path / "overlay.mp4"))
    frames = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        frames.append(bgr)
    cap.release()
    assert len(frames) == len(stamps)
    for s, bgr in zip(stamps, frames):
        if s in gated:
            # black up to the codec: mp4v's P-frame residual after a bright frame reaches 18 grey levels on a
            # few pixels (seen with a random tiny model's overlay), no content
            assert bgr.mean() < 1.0 and bgr.max() <= 32, (s, float(bgr.mean()), int(bgr.max()))
        else:
            assert bgr.mean() > 20


def test_replay_without_the_gate_keeps_the_state_but_writes_the_frames_as_they_came(recording, tmp_path,
                                                                                    tiny_model):
    from endoarss_ros.bag.synth_bag import IMAGE_TOPIC

    bags, stamps, _ = recording
    out, summary = _replay(recording, tmp_path, tiny_model, privacy_gate=False)
    privacy = summary["privacy"]["topics"][IMAGE_TOPIC]
    assert summary["privacy"]["privacy_gate"] is False and privacy["gated_frames"] == 0
    assert privacy["out_of_body_frames"] == len(_interval(stamps))
    source, copied = _read(bags["mcap"], IMAGE_TOPIC), _read(out, IMAGE_TOPIC)
    assert all(copied[s][:2] == source[s][:2] for s in stamps)
    statuses = _read(out, "/endoarss/status")
    assert {s for s in stamps if statuses[s][2].out_of_body} == _interval(stamps)


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_scrub_blanks_the_interval_and_copies_every_other_message_byte_for_byte(recording, tmp_path, storage):
    from endoarss_ros.bag.reader import BagReader
    from endoarss_ros.bag.scrub import ScrubOptions, scrub
    from endoarss_ros.bag.synth_bag import IMAGE_TOPIC

    bags, stamps, _ = recording
    out = tmp_path / "scrubbed"
    report = scrub(ScrubOptions(input=bags[storage], output=out))
    gated = _interval(stamps)
    cam = report["camera_topics"][IMAGE_TOPIC]
    assert cam["blanked"] == len(gated) and cam["passed"] == len(stamps) - len(gated) and cam["dropped"] == 0
    assert [(i["start_ns"], i["end_ns"], i["frames"]) for i in cam["removed_intervals"]] == [
        (min(gated), max(gated), len(gated))]
    assert json.loads((tmp_path / "scrubbed.scrub.json").read_text()) == report
    with BagReader(bags[storage]) as a, BagReader(out) as b:
        assert b.storage == storage
        topics = [c.topic for c in a.connections]
        before = [(c.topic, t, bytes(r)) for c, t, r in a.messages(topics)]
        after = [(c.topic, t, bytes(r)) for c, t, r in b.messages(topics)]
    assert len(before) == len(after)
    changed = 0
    for (topic, t, raw), (topic2, t2, raw2) in zip(sorted(before), sorted(after)):
        assert (topic, t) == (topic2, t2)
        if raw != raw2:
            changed += 1
            assert topic == IMAGE_TOPIC
    assert changed == len(gated)
    scrubbed = _read(out, IMAGE_TOPIC)
    assert all(not _pixels(scrubbed[s][2]).any() for s in gated)
    assert all(scrubbed[s][2].height == SIZE[0] and scrubbed[s][2].encoding == "rgb8" for s in gated)


def test_scrub_drop_leaves_the_interval_out_and_the_cli_reports_it(recording, tmp_path, capsys):
    from endoarss_ros.bag.synth_bag import IMAGE_TOPIC
    from endoarss_ros.cli import main

    bags, stamps, _ = recording
    out = tmp_path / "dropped"
    assert main(["scrub", str(bags["mcap"]), "-o", str(out), "--drop"]) == 0
    text = capsys.readouterr().out
    gated = _interval(stamps)
    assert f"{len(stamps) - len(gated)} passed, {len(gated)} dropped" in text and "removed" in text
    assert set(_read(out, IMAGE_TOPIC)) == set(stamps) - gated
    assert main(["scrub", str(bags["mcap"]), "-o", str(out), "--drop"]) == 2  # exists: refused, kept
    assert "already exists" in capsys.readouterr().err


# ---- the temporal session pauses ------------------------------------------------------------------------
def test_the_temporal_session_pauses_out_of_body_and_resumes_without_a_reset_or_a_gap():
    """70 s outside (longer than max_gap_s = 60 s, which would reset a session that saw it as a gap): no frame
    reaches the session, and the first frame back continues its clock one frame period later."""
    from endoarss_ros.inference.engine import FrameResult
    from endoarss_ros.inference.frames import frame_from_array
    from endoarss_ros.inference.out_of_body import OutOfBody
    from endoarss_ros.inference.stream import CameraStream, StreamSettings
    from endoarss_ros.inference.temporal_activity import SOURCE_TEMPORAL, TemporalSession, TemporalSettings
    from test.test_temporal_session import ACT, SEG, _session_parts

    session = TemporalSession(*_session_parts(), TemporalSettings(warmup_ticks=2, max_gap_s=60.0))
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    stream = CameraStream(SEG, ACT, colors, StreamSettings(annotate=False), temporal=session,
                          out_of_body=OutOfBody(_committed()))
    inside, outside = [f.rgb for f in _procedure(0, 16)], _photos(6)

    def step(rgb, t):
        result = FrameResult(np.zeros(SIZE, np.uint8), np.array([0.6, 0.3, 0.1], np.float32),
                             confidence=np.ones((16, 16), np.float32))
        return stream.update(frame_from_array(rgb, "rgb8"), result, stamp_s=t)

    for k in range(8):  # 4 fps, two frames per 0.5 s tick
        out = step(inside[k], 100.0 + k / 4)
    assert out.activity.source == SOURCE_TEMPORAL and not out.out_of_body.out_of_body
    frames, ticks = session.counts["frames"], session.ticks
    for k in range(280):  # 70 s
        out = step(outside[k % len(outside)], 102.0 + k / 4)
        assert out.activity.source == "out_of_body" and out.temporal is None and out.instruments == []
        assert out.activity.duration_s == pytest.approx(k / 4)
    assert session.counts["frames"] == frames and session.ticks == ticks  # not stepped
    back = [step(inside[8 + k], 172.0 + k / 4) for k in range(EXIT + 2)]
    assert [o.out_of_body.out_of_body for o in back] == [True] * (EXIT - 1) + [False] * 3
    first = back[EXIT - 1]  # the hysteresis tail is still out of body: paused too
    assert first.temporal is not None and first.activity.source == SOURCE_TEMPORAL  # warm: no reset
    assert session.counts["resets"] == 0 and session.counts["gaps"] == 0
    assert stream.paused_s == pytest.approx(70.5)  # from the first frame outside to the first one back
    assert session.last_stamp_s == pytest.approx(102.5)  # 102.0 (one period after 101.75) for the first back, +2


def test_every_tool_keeps_the_gate_on_unless_told_and_passes_the_choice_on(tmp_path):
    from endoarss_ros.cli import build_parser
    from endoarss_ros.tools.demo.demo_live import LiveRun
    from endoarss_ros.tools.replay import options_from_args, recording_options

    for argv in (["replay", "in", "-o", "out"], ["replay-many", "in", "-o", "out"]):
        on = build_parser(argv[0]).parse_args(argv)
        off = build_parser(argv[0]).parse_args(argv + ["--no-privacy-gate"])
        assert recording_options(on)["privacy_gate"] is True and recording_options(off)["privacy_gate"] is False
    assert options_from_args(build_parser("replay").parse_args(["replay", "i", "-o", "o"])).privacy_gate is True
    demo = build_parser("demo")
    assert demo.parse_args(["demo"]).privacy_gate is True
    assert demo.parse_args(["demo", "--no-privacy-gate"]).privacy_gate is False

    def command(gate):
        return LiveRun(tmp_path, tmp_path, {}, model="m", device="cpu", rate=1.0, size=(8, 8), node_timeout=1,
                       quiet=True, privacy_gate=gate).node_command()
    assert "privacy_gate:=false" in command(False) and not any("privacy_gate" in a for a in command(True))


def test_scrub_of_a_jpeg_recording_writes_black_jpegs_of_the_same_size(tmp_path):
    from endoarss_ros.bag.scrub import ScrubOptions, scrub
    from endoarss_ros.bag.synth_bag import COMPRESSED_TOPIC, stamp_ns, write_frames_bag
    from endoarss_ros.inference.frames import frame_from_compressed

    items = _sequence()
    info = write_frames_bag(tmp_path / "jpeg", iter(items), len(items), 2.0, SIZE, encoding="jpeg")
    stamps = [stamp_ns(info.start_ns, i, 2.0) for i in range(len(items))]
    report = scrub(ScrubOptions(input=tmp_path / "jpeg", output=tmp_path / "out"))
    gated = _interval(stamps)
    assert report["camera_topics"][COMPRESSED_TOPIC]["blanked"] == len(gated)
    source, scrubbed = _read(tmp_path / "jpeg", COMPRESSED_TOPIC), _read(tmp_path / "out", COMPRESSED_TOPIC)
    for s in stamps:
        if s in gated:
            msg = scrubbed[s][2]
            frame = frame_from_compressed(msg.format, msg.data)
            assert msg.format == source[s][2].format and frame.size == SIZE and frame.pixels.max() <= 2
        else:
            assert scrubbed[s][:2] == source[s][:2]


def test_stereo_replay_copies_each_view_once_and_gates_the_right_view_with_its_pair(tmp_path, tiny_model):
    """Both views of a stereo pair show the same in -> out -> in recording; a pair's right frame follows its left
    frame's decision (the right view goes through no camera stream of its own)."""
    from rosbags.rosbag2 import Writer

    from endoarss_ros.bag.messages import make_header, to_rosbags
    from endoarss_ros.bag.msgtypes import typestore
    from endoarss_ros.bag.replay import ReplayOptions, replay
    from endoarss_ros.bag.synth_bag import stamp_ns
    from endoarss_ros.inference.message_fields import IMAGE_TYPE, image_fields

    left, right = "/stereo/left/image_raw", "/stereo/right/image_raw"
    store, items = typestore(), _sequence()
    stamps = [stamp_ns(10**18, i, 2.0) for i in range(len(items))]
    with Writer(tmp_path / "stereo", version=8) as w:
        conns = {t: w.add_connection(t, IMAGE_TYPE, typestore=store) for t in (left, right)}
        for s, it in zip(stamps, items):
            for t, c in conns.items():
                msg = to_rosbags(store, IMAGE_TYPE, image_fields(make_header(store, s, t.split("/")[2]), it.rgb,
                                                                 "rgb8"))
                w.write(c, s, store.serialize_cdr(msg, IMAGE_TYPE))
    summary = replay(ReplayOptions(input=tmp_path / "stereo", output=tmp_path / "out", model=tiny_model,
                                   device="cpu", copy_input=True, stereo=(left, right), progress=False, threads=1))
    gated = _interval(stamps)
    for t in (left, right):
        assert summary["privacy"]["topics"][t]["copied_input"] == {
            "as_recorded": len(stamps) - len(gated), "blanked": len(gated), "left_out": 0}
        source, copied = _read(tmp_path / "stereo", t), _read(tmp_path / "out", t)
        assert sorted(copied) == stamps and summary["output_topics"][t] == len(stamps)  # each frame once
        for s in stamps:
            if s in gated:
                assert not _pixels(copied[s][2]).any()
            else:
                assert copied[s][:2] == source[s][:2]


def test_the_committed_detector_at_the_default_threshold_on_held_out_frames(tmp_path):
    """`endoarss train-oob --evaluate` re-scores the committed weights on the held-out photographs, rooms and
    procedures: no photograph view missed, no in-body frame flagged, no frame of an in -> out -> in leaked."""
    import subprocess
    import sys

    from endoarss_ros.inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL

    report = tmp_path / "evaluation.json"
    subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "train-oob", "--evaluate",
                    str(DEFAULT_OUT_OF_BODY_MODEL), "--report", str(report)], check=True, timeout=300)
    r = json.loads(report.read_text())
    assert r["threshold"] == OutOfBodySettings().threshold and "training" not in r
    for key in ("procedures_vs_photos", "procedures_vs_rooms"):
        assert r[key]["false_positives"] == 0 and r[key]["false_negatives"] == 0, (key, r[key])
    assert all(v["leaked"] == 0 and v["first_frame_gated"] and v["in_body_gated_before"] == 0
               for v in r["in_out_in"].values()), r["in_out_in"]

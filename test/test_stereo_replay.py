"""`endoarss synth stereo` bags through `endoarss replay`: --stereo (pairs, one set of outputs on the left camera's
namespace, 3D fields, markers, 3D scores against the bag's ground truth, unpaired frames counted, a swapped pair
refused), mono rays with camera_info alone, 2D unchanged without camera_info."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bag.replay import ReplayOptions, replay
from endoarss_ros.bag.stereo_bag import TRUTH_FILE, read_stereo_truth, write_stereo_bag
from endoarss_ros.data.stereo_scene import StereoRigSpec, StereoSceneSettings
from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path
from test.test_bag_replay import _read

LEFT, RIGHT = "/endoscope/left/image_raw", "/endoscope/right/image_raw"
SMALL = StereoSceneSettings(rig=StereoRigSpec(width=320, height=256, focal_px=275.0, baseline_m=0.005))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def engine(tiny_model):
    from endoarss_ros.inference import InferenceEngine

    eng = InferenceEngine(tiny_model, device="cpu", max_batch=4)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def small_bag(tmp_path_factory):
    return write_stereo_bag(tmp_path_factory.mktemp("bags") / "stereo", seconds=1.0, fps=4.0, settings=SMALL,
                            seed=3).path


def _replay(bag, out, model, engine=None, **kw):
    return replay(ReplayOptions(input=Path(bag), output=Path(out), model=model, engine=engine, progress=False,
                                batch=4, timeline="", **kw))


def test_synth_stereo_bag_has_both_cameras_and_3d_truth(small_bag):
    messages = _read(small_bag)
    for side in ("left", "right"):
        infos = messages[f"/endoscope/{side}/camera_info"]
        images = messages[f"/endoscope/{side}/image_raw"]
        assert len(infos) == len(images) == 4
        assert [m.header.stamp for _, m in infos] == [m.header.stamp for _, m in images]
        assert infos[0][1].header.frame_id == f"endoscope_{side}_optical_frame"
    p = messages["/endoscope/right/camera_info"][0][1].p
    assert p[3] == pytest.approx(-275.0 * 0.005)  # Tx = -f B, B in metres
    truth = read_stereo_truth(small_bag)
    assert truth["rig"]["baseline_m"] == 0.005 and len(truth["frames"]) == 4
    stamps = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec for _, m in messages[LEFT]}
    assert set(truth["frames"]) == stamps
    first = next(iter(truth["frames"].values()))["instruments"][0]
    assert 0.03 < first["tip_3d"][2] < 0.13 and first["tip_to_tissue_m"] >= 0
    assert (small_bag / TRUTH_FILE).is_file()


def test_stereo_replay_publishes_the_pair_once_on_the_left_namespace(small_bag, tmp_path, tiny_model, engine):
    summary = _replay(small_bag, tmp_path / "out", tiny_model, engine, stereo=(LEFT, RIGHT))
    stereo = summary["stereo"]
    assert stereo["pairs"] == 4 and stereo["pairing"]["matched"] == 4
    assert stereo["unpaired_left_published_2d"] == {} and stereo["unpaired_right_dropped"] == {}
    assert summary["frames_in"] == summary["frames_out"] == 8
    assert set(stereo["stage_ms"]) == {"match", "refine", "triangulate", "tissue_disparity"}
    assert summary["camera_info"][LEFT]["exact"] == 4 and summary["camera_info"][RIGHT]["errors"] == {}
    topics = summary["output_topics"]
    left_ns = "/endoarss/endoscope/left"
    assert topics[f"{left_ns}/activity"] == topics[f"{left_ns}/status"] == 4
    assert topics[f"{left_ns}/instruments/markers"] == 4
    assert not any("/right/" in t for t in topics)  # one scene: one activity, one status per pair
    assert list(summary["status"]) == [LEFT]
    arrays = _read(tmp_path / "out")[f"{left_ns}/instruments"]
    assert {m.header.frame_id for _, m in arrays} == {"endoscope_left_optical_frame"}
    for _, msg in arrays:  # a random-weights model finds what it finds: whatever is published is consistent
        for inst in msg.instruments:
            assert math.isclose(math.hypot(inst.tip_ray.x, inst.tip_ray.y, inst.tip_ray.z), 1.0, abs_tol=1e-6)
            assert inst.has_3d or (inst.tip_3d.z == 0.0 and math.isnan(inst.tip_to_tissue))
    assert stereo["ground_truth_3d"]["frames"] == 4


def test_swapped_pair_is_refused_and_published_with_rays(small_bag, tmp_path, tiny_model, engine):
    summary = _replay(small_bag, tmp_path / "out", tiny_model, engine, stereo=(RIGHT, LEFT))
    stereo = summary["stereo"]
    assert stereo["pairs_with_3d_stage"] == 0
    (reason, count), = stereo["pairs_without_3d_stage"].items()
    assert count == 4 and "left and right swapped?" in reason
    assert stereo["instruments_with_3d"] == 0


def test_replay_many_passes_stereo_through(small_bag, tmp_path, tiny_model, engine):
    """replay-many's options (the same recording options, JSON in its resume record) reach the replay."""
    import argparse

    from endoarss_ros.tools.replay import recording_options
    from endoarss_ros.tools.replay_many import replay_many

    parser = argparse.ArgumentParser()
    replay_many.add_arguments(parser)
    args = parser.parse_args([str(small_bag), "-o", str(tmp_path / "many"), "--stereo", f"{LEFT}:{RIGHT}",
                              "--stereo-tolerance-ms", "2", "--model", tiny_model])
    options = recording_options(args)
    assert options["stereo"] == [LEFT, RIGHT] and options["stereo_tolerance_ms"] == 2.0
    assert json.loads(json.dumps(options)) == options  # a finished recording is recognised on resume
    options.update(timeline="", engine=engine)
    summary = replay(ReplayOptions(input=small_bag, output=tmp_path / "one", progress=False, **options))
    assert summary["stereo"]["pairs"] == 4 and summary["stereo"]["tolerance_ms"] == 2.0
    with pytest.raises(SystemExit):
        parser.parse_args([str(small_bag), "-o", "x", "--stereo", LEFT])  # not LEFT:RIGHT


def _rewrite(src: Path, dst: Path, keep=lambda topic, index: True, shift_ns=lambda topic: 0) -> None:
    """A copy of the bag keeping the ``index``-th message of a topic where ``keep``, with header stamps moved by
    ``shift_ns(topic)``."""
    from rosbags.rosbag2 import Reader, Writer

    from endoarss_ros.bag.msgtypes import typestore

    store = typestore()
    with Reader(src) as reader, Writer(dst, version=8) as writer:
        conns = {c.id: writer.add_connection(c.topic, c.msgtype, typestore=store) for c in reader.connections}
        seen: dict[str, int] = {}
        for conn, t, raw in reader.messages():
            index = seen[conn.topic] = seen.get(conn.topic, -1) + 1
            if not keep(conn.topic, index):
                continue
            if shift_ns(conn.topic):
                msg = store.deserialize_cdr(raw, conn.msgtype)
                msg.header.stamp.nanosec += shift_ns(conn.topic)
                raw = store.serialize_cdr(msg, conn.msgtype)
            writer.write(conns[conn.id], t, raw)
    (dst / TRUTH_FILE).write_text((src / TRUTH_FILE).read_text())


def _drop_message(src: Path, dst: Path, topic: str, index: int) -> None:
    """A copy of the bag without the ``index``-th message of ``topic`` (a frame lost on one side)."""
    _rewrite(src, dst, keep=lambda t, i: not (t == topic and i == index))


def test_unpaired_frames_are_counted_and_the_left_one_still_published(small_bag, tmp_path, tiny_model, engine):
    _drop_message(small_bag, tmp_path / "gap", RIGHT, 1)
    summary = _replay(tmp_path / "gap", tmp_path / "out", tiny_model, engine, stereo=(LEFT, RIGHT))
    stereo = summary["stereo"]
    assert stereo["pairs"] == 3 and sum(stereo["unpaired_left_published_2d"].values()) == 1
    assert summary["output_topics"]["/endoarss/endoscope/left/status"] == 4  # nothing lost
    assert stereo["ground_truth_3d"]["frames"] == 4  # the unpaired frame is scored too (without 3D)


def test_mono_rays_with_camera_info_and_2d_without(small_bag, tmp_path, tiny_model, engine):
    from endoarss_ros.bag.synth_bag import write_synth_bag

    summary = _replay(small_bag, tmp_path / "mono", tiny_model, engine)
    assert "stereo" not in summary and summary["camera_info"][LEFT]["frames_with_camera_info"] == 4
    out = _read(tmp_path / "mono")
    assert "/endoarss/endoscope/left/instruments/markers" not in out
    for topic in ("/endoarss/endoscope/left/instruments", "/endoarss/endoscope/right/instruments"):
        for _, msg in out[topic]:
            assert msg.header.frame_id.endswith("_optical_frame")
            for inst in msg.instruments:
                assert not inst.has_3d and abs(math.hypot(inst.tip_ray.x, inst.tip_ray.y, inst.tip_ray.z) - 1) < 1e-6
    write_synth_bag(tmp_path / "plain", seconds=0.5, fps=4.0, size=(64, 80))
    summary = _replay(tmp_path / "plain", tmp_path / "plain_out", tiny_model, engine)
    assert summary["camera_info"] is None
    for _, msg in _read(tmp_path / "plain_out")["/endoarss/instruments"]:
        for inst in msg.instruments:
            assert (inst.tip_ray.x, inst.tip_ray.y, inst.tip_ray.z) == (0.0, 0.0, 0.0) and not inst.has_3d


@pytest.mark.slow
def test_stereo_replay_with_the_demo_model_gets_millimetres(tmp_path):
    """The committed demo model segments the rendered pairs; the replay scores the 3D against the truth."""
    model = resolve_model_path(DEFAULT_MODEL)
    if not model.is_file():
        pytest.skip(f"no demo weights at {model}")
    settings = StereoSceneSettings(rig=StereoRigSpec(width=640, height=512, focal_px=550.0, baseline_m=0.005))
    bag = write_stereo_bag(tmp_path / "stereo", seconds=1.0, fps=3.0, settings=settings, seed=1).path
    summary = _replay(bag, tmp_path / "out", str(model), stereo=(LEFT, RIGHT), threads=2)
    score = summary["stereo"]["ground_truth_3d"]
    assert score["visible"] >= 3 and score["fraction_3d"] >= 0.6, score
    assert score["tip_error_mm"]["median"] < 4.0, score  # 640x512: one pixel of disparity is 3.6 mm at 100 mm
    markers = _read(tmp_path / "out")["/endoarss/endoscope/left/instruments/markers"]
    assert any(m.action == 0 and m.type == 0 for _, msg in markers for m in msg.markers)  # a shaft arrow
    json.dumps(summary)  # the summary stays JSON
    assert np.isfinite(score["tip_to_tissue_error_mm"]["median"])


def test_camera_info_on_one_side_only(small_bag, tmp_path, tiny_model, engine):
    _rewrite(small_bag, tmp_path / "one_info", keep=lambda topic, i: topic != "/endoscope/right/camera_info")
    summary = _replay(tmp_path / "one_info", tmp_path / "out1", tiny_model, engine, stereo=(LEFT, RIGHT))
    stereo = summary["stereo"]
    assert stereo["pairs"] == 4 and stereo["pairs_with_3d_stage"] == 0
    assert stereo["pairs_without_3d_stage"] == {"no usable camera_info on the right side": 4}
    assert summary["camera_info"][RIGHT]["received"] == 0 and summary["camera_info"][RIGHT]["missing"] == 4


def test_stamps_that_never_match_pair_within_a_tolerance(small_bag, tmp_path, tiny_model, engine):
    # Right frames 3 ms late: with exact pairing (the default) no pair is made and every frame is counted.
    _rewrite(small_bag, tmp_path / "late", shift_ns=lambda topic: 3_000_000 if topic.startswith("/endoscope/right")
             else 0)
    summary = _replay(tmp_path / "late", tmp_path / "out2", tiny_model, engine, stereo=(LEFT, RIGHT))
    stereo = summary["stereo"]
    assert stereo["pairs"] == 0 and sum(stereo["unpaired_left_published_2d"].values()) == 4
    assert sum(stereo["unpaired_right_dropped"].values()) == 4
    assert summary["output_topics"]["/endoarss/endoscope/left/status"] == 4
    summary = _replay(tmp_path / "late", tmp_path / "out3", tiny_model, engine, stereo=(LEFT, RIGHT),
                      stereo_tolerance_ms=5.0)
    assert summary["stereo"]["pairs"] == 4 and summary["stereo"]["pairing"]["offset_ms_max"] == pytest.approx(3.0)


def test_bench_measures_the_3d_stage_row(tmp_path):
    from endoarss_ros.cli import main

    assert main(["bench", "--stereo-only", "--stereo-pairs", "1", "--json", str(tmp_path / "b.json")]) == 0
    row = json.loads((tmp_path / "b.json").read_text())["stereo_3d"]
    assert row["input"] == "1280x1024" and row["pairs"] == 1 and row["threads"] == {"torch": 1, "opencv": 1}
    for kind in ("raw", "rectified"):
        assert set(row["stage_ms"][kind]) == {"match", "refine", "triangulate", "tissue_disparity", "total",
                                              "cpu_total"}
        assert row["stage_ms"][kind]["total"]["n"] == 3 and row["stage_ms"][kind]["total"]["p50"] > 0
    accuracy = row["accuracy_ground_truth_masks"]
    assert accuracy["visible"] >= 1 and accuracy["one_px_disparity_mm_at_100mm"] == pytest.approx(1.818, abs=1e-3)

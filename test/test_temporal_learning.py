"""Feature cache, train-temporal and eval-temporal end to end on tiny procedures and a tiny frame model."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from endoarss_ros.cli import main
from endoarss_ros.data.procedures import ProcedureSettings, write_procedure_videos

SETTINGS = ProcedureSettings(minutes=0.5, fps=2.0, size=(48, 64), ambiguity_rate=0.2, return_seconds=(4, 6))


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def procedures(tmp_path_factory):
    root = tmp_path_factory.mktemp("procedures")
    write_procedure_videos(root / "train", 2, SETTINGS, seed=1)
    write_procedure_videos(root / "val", 1, SETTINGS, seed=2)
    write_procedure_videos(root / "test", 1, ProcedureSettings(minutes=0.75, fps=2.0, size=(48, 64)), seed=3)
    return root


def test_feature_cache_skips_finished_videos_and_notices_edits(tiny_model, procedures, tmp_path):
    from endoarss_ros.bag.feature_cache import FeatureExtractor, cached_features
    from endoarss_ros.bag.labelled import layout_videos

    ex = FeatureExtractor(tiny_model, batch=4)
    videos = layout_videos(procedures / "train", ex.activity_classes)
    logged: list[str] = []
    first = cached_features(ex, videos, tmp_path, log=logged.append)
    assert len(logged) == 2 and len(list(tmp_path.glob("*.npz"))) == 2
    f = first[0]
    assert f.features.shape == (60, len(ex.feature_names)) and f.probs.shape == (60, 3)
    assert np.allclose(f.stamps, np.arange(60) / 2.0) and set(np.unique(f.labels)) <= {0, 1, 2}
    logged.clear()
    again = cached_features(ex, videos, tmp_path, log=logged.append)
    assert logged == [] and np.array_equal(again[1].features, first[1].features)
    # An interrupted run leaves one video undone: only that one is extracted.
    sorted(tmp_path.glob("*.npz"))[1].unlink()
    cached_features(ex, videos, tmp_path, log=logged.append)
    assert len(logged) == 1 and videos[1].name in logged[0]
    # Relabelled video -> another key -> extracted again.
    phase = procedures / "train" / f"{videos[0].name}-phase.txt"
    text = phase.read_text()
    try:
        phase.write_text(text.replace("\t" + ex.activity_classes[2] + "\n", "\t" + ex.activity_classes[1] + "\n", 1))
        logged.clear()
        cached_features(ex, layout_videos(procedures / "train", ex.activity_classes), tmp_path, log=logged.append)
        assert len(logged) == 1 and videos[0].name in logged[0]
    finally:
        phase.write_text(text)


@pytest.fixture(scope="module")
def trained(tiny_model, procedures, tmp_path_factory):
    """One small train-temporal run shared by the tests below: (run folder, feature cache)."""
    root = tmp_path_factory.mktemp("trained")
    run, cache = root / "run", root / "cache"
    assert main(["train-temporal", "--model", tiny_model, "--videos", str(procedures / "train"), "--val-videos",
                 str(procedures / "val"), "-o", str(run), "--cache", str(cache), "--epochs", "2",
                 "--validate-every", "1", "--channels", "8", "--layers", "4"]) == 0
    return run, cache


def test_train_then_eval_temporal(tiny_model, procedures, trained, tmp_path):
    from endoarss_ros.inference.temporal_activity import load_temporal_for
    from endoarss_ros.model.config import MTLESD_ACTIVITY_CLASSES, MTLESD_SEG_CLASSES

    run, cache = trained
    for name in ("config.json", "metrics.json", "training.png", "timelines_val.png", "temporal.safetensors"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 2 and metrics["best_epoch"] in (1, 2)
    assert "frame_accuracy_train_videos" in metrics["frame_model_check"]
    model, binding = load_temporal_for(run / "temporal.safetensors", tiny_model, MTLESD_SEG_CLASSES,
                                       MTLESD_ACTIVITY_CLASSES)
    assert binding.tick_s == 1.0 and binding.session_settings["switch_evidence"] == metrics["switch_evidence"]
    assert binding.config.channels == 8 and binding.config.layers == 4

    out = tmp_path / "eval"
    assert main(["eval-temporal", str(run / "temporal.safetensors"), "--model", tiny_model, "--videos",
                 str(procedures / "test"), "-o", str(out), "--cache", str(cache)]) == 0
    report = json.loads((out / "eval_temporal.json").read_text())
    for method in ("temporal", "ema", "frame"):
        s = report["clean"][method]["summary"]
        assert s["videos"] == 1 and 0 <= s["accuracy"] <= 1 and "f1@50" in s
        assert report["robust"][method]["summary"]["videos"] == 1
    assert len(report["targets"]) == 6
    with open(out / "predictions.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == report["frames"] == 90
    assert {r["source"] for r in rows} <= {"temporal", "frame_ema"} and (out / "timelines.png").is_file()
    # The robust run scores the frames that arrive: a 30 s gap (60 frames) and ~20 % of the other 30 dropped.
    robust = report["robust"]["temporal"]["videos"]["procedure_s3_000"]["frames"]
    assert 15 <= robust <= 30


def test_a_temporal_model_for_another_frame_model_is_refused(procedures, trained, tmp_path, capsys):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    other = save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path / "other")
    run, cache = trained
    capsys.readouterr()
    assert main(["eval-temporal", str(run / "temporal.safetensors"), "--model", str(other), "--videos",
                 str(procedures / "test"), "-o", str(tmp_path / "eval"), "--cache", str(cache)]) == 2
    err = capsys.readouterr().err
    assert "frame model" in err and len(err.strip().splitlines()) == 1


def test_frames_a_bag_cannot_decode_are_counted_by_reason(tiny_model, tmp_path):
    """A recording with one byte flipped in its second MCAP chunk (as test_bag_files damages one): feature
    extraction counts the lost frames by the reason `endoarss replay` gives them, in the log and in the cache."""
    import os

    from endoarss_ros.bag.feature_cache import FeatureExtractor, cached_features
    from endoarss_ros.bag.labelled import labelled_sources
    from endoarss_ros.bag.mcap_checksums import BagChecksums, fill_chunk_checksums
    from endoarss_ros.bag.replay import ReplayOptions, replay
    from endoarss_ros.bag.synth_bag import write_synth_bag

    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=4, fps=10, size=(96, 128), seed=1, checksums=False)  # two chunks
    assert fill_chunk_checksums(bag / "in.mcap") >= 2
    second = BagChecksums([bag / "in.mcap"]).chunks[1]
    with open(bag / "in.mcap", "r+b") as f:
        f.seek(second.offset + 100_000)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0x04]))
    ex = FeatureExtractor(tiny_model, batch=4)
    logged: list[str] = []
    feats, = cached_features(ex, labelled_sources(bag, ex.activity_classes), tmp_path / "cache", log=logged.append)
    summary = replay(ReplayOptions(input=bag, output=tmp_path / "out", model=tiny_model, engine=ex.engine,
                                   progress=False, timeline=""))
    lost = summary["frames_failed"]
    assert lost > 0 and summary["failure_reasons"] == {"checksum_mismatch": lost}
    assert feats.failed == {"checksum_mismatch": lost} and len(feats.stamps) + lost == 40
    assert f"frames failed: {lost} (checksum_mismatch: {lost})" in logged[-1]
    logged.clear()
    cached, = cached_features(ex, labelled_sources(bag, ex.activity_classes), tmp_path / "cache", log=logged.append)
    assert cached.failed == feats.failed and logged == [f"features of in (cached): {feats.failed_text()}"]

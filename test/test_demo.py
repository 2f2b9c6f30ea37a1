"""The one-command demo in --quick mode, as CI runs it: real node, player and listener processes; it checks its
own summary.json. Uses the committed demo weights when present (a tiny random model otherwise)."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from test.conftest import REPO, requires_ros

DEMO_WEIGHTS = REPO / "models" / "demo" / "endoarss_demo.safetensors"


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    if DEMO_WEIGHTS.is_file():
        return str(DEMO_WEIGHTS)
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture
def demo_env(child_env):
    child_env["ROS_DOMAIN_ID"] = str(random.randint(100, 200))  # not disturbed by other ROS processes here
    return child_env


@requires_ros
@pytest.mark.ros
def test_quick_demo_runs_and_checks_its_summary(tmp_path, demo_env, demo_model):
    out = tmp_path / "demo_output"
    done = subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "demo", "--quick", "--out", str(out),
                           "--model", demo_model], env=demo_env, cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert "/endoarss/activity  stamp 1700000000." in done.stdout  # the live echo
    assert "EndoARSS demo summary" in done.stdout

    s = json.loads((out / "summary.json").read_text())
    assert s["ok"] and "error" not in s
    live = s["live"]
    assert live["frames_published"] == s["recording"]["frames"] == 60
    assert live["frames_received_by_node"] > 0 and live["activity_messages_received"] > 0
    assert live["activity_messages_received"] <= live["frames_published"]
    assert live["frames_processed_by_node"] + live["frames_dropped_by_node"] <= live["frames_received_by_node"] + 1
    latency = live["node_latency_ms"]
    assert latency["p50"] is not None and latency["p95"] >= latency["p50"]
    assert live["frames_evaluated"] == live["activity_messages_received"]
    status = live["status"]  # every frame the node received has a PerceptionStatus, and the demo counted them
    assert status["frames"] == live["frames_received_by_node"]
    assert status["processed"] == live["frames_processed_by_node"]
    assert 0 < status["usable"] <= status["processed"]  # not all stale: the node runs on the player's /clock
    assert 0 < live["result_age_ms"]["p50"] < 5000
    assert live["instruments"]["frames"] == live["frames_processed_by_node"] and live["instruments"]["tracks"] >= 1
    off = s["offline"]
    assert off["status"]["frames"] == 60 and off["instruments"]["frames"] == 60 and off["instruments"]["tracks"] >= 1
    assert set(off["ground_truth"]["by_status"]) == {"usable", "unusable"}
    assert "live status" in done.stdout and "offline instrum." in done.stdout
    assert off["frames_in"] == off["frames_out"] == 60 and off["frames_in_equals_out"]
    gt = off["ground_truth"]
    if demo_model == str(DEMO_WEIGHTS):  # 0.633 / 0.637 measured 2026-12-06 (30 s procedure)
        assert gt["activity_accuracy"] >= 0.5 and gt["miou_foreground"] >= 0.55, gt
        _check_temporal(s, out)
    if live["frames_processed_by_node"] == live["frames_published"]:  # nothing dropped: the same frames
        assert live["activity_accuracy"] == pytest.approx(gt["activity_accuracy"], abs=1e-9)
        assert live["miou_foreground"] == pytest.approx(gt["miou_foreground"], abs=1e-3)
    else:  # the node kept only the newest frames: a subset, scored the same way
        assert live["activity_accuracy"] >= gt["activity_accuracy"] - 0.3
    for key in ("output_bag", "timeline", "video", "summary", "node_log"):
        assert Path(s["files"][key]).exists(), key
    assert (Path(s["files"]["output_bag"]) / "metadata.yaml").is_file()
    assert "clock: sim time (/clock)" in Path(s["files"]["node_log"]).read_text()
    assert Path(s["files"]["video"]).stat().st_size > 0 and Path(s["files"]["timeline"]).stat().st_size > 1000


def _check_temporal(s: dict, out: Path) -> None:
    """The committed temporal model ran in the node and the replay; the summary's comparison with frame-wise + EMA
    agrees with the labels and sources in the output bag."""
    from endoarss_ros.bag.msgtypes import typestore
    from endoarss_ros.bag.reader import BagReader, read_ground_truth
    from endoarss_ros.inference.message_fields import OUTPUT_BY_KEY

    assert s["temporal_model"].endswith("endoarss_demo_temporal.safetensors")
    live_sources = s["live"]["activity_sources"]
    assert live_sources.get("temporal", 0) > 0 and live_sources.get("frame_ema", 0) > 0  # warm-up, then temporal
    assert sum(live_sources.values()) == s["live"]["activity_messages_received"]
    temporal = s["offline"]["temporal"]
    (topic, d), = temporal["topics"].items()
    store, truth = typestore(), read_ground_truth(out / "recording").activities
    published = []
    with BagReader(out / "endoarss_output_bag") as bag:
        for _, _, raw in bag.messages(["/endoarss/activity"]):
            msg = store.deserialize_cdr(raw, OUTPUT_BY_KEY["activity"].msgtype)
            published.append((msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, msg.class_id, msg.source))
    assert len(published) == 60
    sources = [src for _, _, src in published]
    assert d["sources"] == {"frame_ema": sources.count("frame_ema"), "temporal": sources.count("temporal")}
    assert sources[0] == "frame_ema" and sources[-1] == "temporal"  # warm-up (6 ticks of 1 s), then temporal
    first_temporal = sources.index("temporal")
    assert set(sources[first_temporal:]) == {"temporal"} and 5 <= first_temporal / 2.0 <= 8  # 2 fps
    sc = temporal["scores"]
    right = [c == truth[stamp] for stamp, c, _ in published]
    assert sc["published"]["frames"] == 60 and sc["published"]["accuracy"] == pytest.approx(sum(right) / 60)
    assert sc["published"]["accuracy"] == pytest.approx(s["offline"]["ground_truth"]["activity_accuracy"])
    warm = [r for r, src in zip(right, sources) if src == "temporal"]
    assert sc["frames_after_warmup"] == len(warm)
    assert sc["published"]["accuracy_after_warmup"] == pytest.approx(sum(warm) / len(warm))
    # before warm-up the published label is the frame-wise + EMA label: both agree there
    ema_labels = [seg for seg in d["frame_ema_timeline"] for _ in range(seg["frames"])]
    assert len(ema_labels) == 60
    assert all(seg["class_id"] == c for seg, (_, c, _) in zip(ema_labels[:first_temporal], published))
    ema_right = [seg["class_id"] == truth[stamp] for seg, (stamp, _, _) in zip(ema_labels, published)]
    assert sc["frame_ema"]["accuracy"] == pytest.approx(sum(ema_right) / 60)
    true_switches = sum(truth[a] != truth[b] for (a, _, _), (b, _, _) in zip(published, published[1:]))
    assert sc["published"]["true_transitions"] == sc["frame_ema"]["true_transitions"] == true_switches
    pub_switches = sum(a[1] != b[1] for a, b in zip(published, published[1:]))
    assert sc["published"]["switches"] == pub_switches
    assert sc["frame_ema"]["switches"] == len(d["frame_ema_timeline"]) - 1


def test_recording_is_reused_when_parameters_match(tmp_path):
    from endoarss_ros.tools.demo.demo_recording import ensure_recording

    path, record, reused = ensure_recording(tmp_path, seconds=0.3, fps=10, size=(32, 40), log=lambda *a: None)
    assert not reused and record["frames"] == 3 and record["procedure"]["segments"]
    assert sorted(p.name for p in path.iterdir()) == ["metadata.yaml", "recording.mcap"]
    assert "recording.mcap" in (path / "metadata.yaml").read_text()
    mtime = (path / "recording.mcap").stat().st_mtime_ns
    _, _, reused = ensure_recording(tmp_path, seconds=0.3, fps=10, size=(32, 40), log=lambda *a: None)
    assert reused and (path / "recording.mcap").stat().st_mtime_ns == mtime
    _, record, reused = ensure_recording(tmp_path, seconds=0.4, fps=10, size=(32, 40), log=lambda *a: None)
    assert not reused and record["frames"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["recording", "recording.json"]
    from endoarss_ros.bag.reader import BagReader

    with BagReader(path) as bag:
        assert bag.message_count(["/endoscope/image_raw"]) == 4


@requires_ros
@pytest.mark.ros
def test_demo_fails_when_the_node_produces_nothing(tmp_path, demo_env):
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"not a model")
    done = subprocess.run([sys.executable, "-m", "endoarss_ros.cli", "demo", "--quick", "--out", str(tmp_path / "o"),
                           "--model", str(bad), "--no-video"], env=demo_env, cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1
    assert "perception node exited" in done.stderr
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert not s["ok"] and "error" in s

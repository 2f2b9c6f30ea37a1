"""`endoarss bench`: the CI smoke run, the matrix (methods, batches, unavailable precisions), the time budget, and
the endoscope scenes and over-ROS measurement the tool finds itself."""
from __future__ import annotations

import argparse
import importlib.util
import json

import numpy as np

from endoarss_ros.cli import SUBCOMMANDS, main
from endoarss_ros.tools.bench import bench
from endoarss_ros.tools.bench.bench_frames import BenchFrames
from test.conftest import ros_available


def test_bench_quick_json(tmp_path, capsys):
    assert SUBCOMMANDS["bench"][0] == "endoarss_ros.tools.bench.bench"
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    rc = main(["bench", "--quick", "--frames", "8", "--json", str(out), "--markdown", str(md),
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0
    data = json.loads(out.read_text())
    assert set(data) >= {"meta", "results", "ros", "ros_note"}
    assert {"date", "device", "cpu", "torch", "onnxruntime", "command"} <= set(data["meta"])
    assert len(data["results"]) == 2 and {r["backend"] for r in data["results"]} == {"eager", "onnxruntime"}
    for r in data["results"]:
        assert r["frames"] == 8 and r["model"] == "endoarss-tiny" and r["input"] == "640x360"
        assert set(r["e2e_ms"]) == {"p50", "p95", "p99", "mean"}
        assert {"decode", "upload", "preprocess", "forward", "postprocess", "download", "message", "total"} <= set(
            r["stages_p50_ms"])
        assert r["baseline"]["p50_ms"] > 0 and r["speedup"] > 0 and r["throughput_fps"] > 0
        assert r["method"] == "fast" and r["e2e_over_forward"] > 1.0
        # the naive baseline resizes bilinearly without antialiasing: most pixels still agree
        assert 0.95 <= r["mask_agreement_with_baseline"] <= 1.0, r["mask_agreement_with_baseline"]
    if importlib.util.find_spec("rclpy") is None:
        assert data["ros"] is None and "not measured" in data["ros_note"]
    else:  # real processes: publisher -> node (demo weights) -> subscriber, and the transport alone
        assert data["ros_note"] is None, data["ros_note"]
        for part in ("node", "transport"):
            assert data["ros"][part]["frames_out"] > 0
            assert data["ros"][part]["latency_ms"]["p50"] > 0
    assert "| endoarss-tiny | 640x360 rgb8 esd |" in md.read_text()
    (outputs,) = data["robot_outputs"]  # the status + instruments stage, per size
    assert outputs["input"] == "640x360" and outputs["frames"] >= 10
    for part in ("total_ms", "image_quality_ms", "instruments_ms"):
        assert 0 < outputs[part]["p50"] <= outputs[part]["p95"]
    assert outputs["total_ms"]["p50"] >= outputs["image_quality_ms"]["p50"]
    temporal = data["temporal"]  # the temporal model's step on one core, and its state per camera
    assert temporal["ticks_per_camera"] == 200 and temporal["receptive_field_ticks"] == 2047
    assert 0 < temporal["step_ms"]["p50"] <= temporal["step_ms"]["p95"]
    assert 0 < temporal["state_bytes_per_camera"] <= 1_000_000


def _args(tmp_path, *extra):
    p = argparse.ArgumentParser()
    bench.add_arguments(p)
    return p.parse_args(["--models", "endoarss-tiny", "--backends", "eager", "--sizes", "160x120", "--frames", "3",
                         "--warmup", "1", "--baseline-frames", "1", "--device", "cpu", "--scene", "bands",
                         "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "b.json"), *extra])


def test_bench_matrix_methods_batches_and_unavailable_precisions(tmp_path):
    args = _args(tmp_path, "--methods", "fast,previous", "--precisions", "fp32,bf16", "--batches", "1,2")
    assert bench.run(args, ros="rclpy missing in this test") == 0
    data = json.loads((tmp_path / "b.json").read_text())
    rows = {(r["method"], r["batch"]): r for r in data["results"]}
    assert set(rows) == {("fast", 1), ("fast", 2), ("previous", 1), ("previous", 2)}
    assert (rows["previous", 1]["preprocess"], rows["previous", 1]["upsample"]) == ("cv2-direct", "logits-dense")
    assert (rows["fast", 1]["preprocess"], rows["fast", 1]["upsample"]) == ("cv2", "logits")
    for (_, b), r in rows.items():
        assert r["frames"] == 3 and r["backend"] == "eager"
        assert abs(r["speedup"] - r["baseline"]["p50_ms"] * b / r["e2e_ms"]["p50"]) < 1e-9
    assert [(u["precision"], u["method"]) for u in data["unavailable"]] == [("bf16", "fast"), ("bf16", "previous")]
    assert all("needs a CUDA device" in u["reason"] for u in data["unavailable"])
    assert data["ros"] is None and data["ros_note"] == "not measured: rclpy missing in this test"
    table = bench.markdown_table(data["results"], data["unavailable"], data["skipped"])
    assert "| endoarss-tiny | 160x120 rgb8 bands | previous | eager | fp32 | 2 |" in table
    assert "Unavailable here:" in table and "bf16" in table


def test_time_budget_lists_what_it_did_not_measure(tmp_path, capsys):
    args = _args(tmp_path, "--precisions", "fp32", "--batches", "1,2", "--time-budget", "1e-9", "--no-ros")
    assert bench.run(args) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["results"] == [] and data["ros_note"] == "not measured (--no-ros)"
    assert [(s["input"], s["scene"], s["batch"], s["reason"]) for s in data["skipped"]] == [
        ("160x120", "bands", 1, "time budget spent"), ("160x120", "bands", 2, "time budget spent")]
    out = capsys.readouterr().out  # the console says it too, naming the scene
    assert "endoarss-tiny 160x120 bands b1 fast eager/fp32: skipped (time budget spent)" in out, out
    assert "endoarss-tiny 160x120 bands b2 fast eager/fp32: skipped (time budget spent)" in out, out


def test_endoarss_bench_runs_on_endoscope_scenes_through_the_cli(tmp_path):
    """The tool finds its endoscope scenes and its over-ROS measurement itself: `endoarss bench --scene esd`
    through the CLI measures rows on synthetic endoscope frames (distinct, not flat)."""
    argv = ["bench", "--models", "endoarss-tiny", "--backends", "eager", "--sizes", "160x120", "--frames", "2",
            "--warmup", "1", "--baseline-frames", "1", "--device", "cpu", "--scene", "esd", "--precisions", "fp32",
            "--batches", "1", "--no-ros", "--cache-dir", str(tmp_path / "cache"), "--json", str(tmp_path / "b.json")]
    assert main(argv) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert [(r["model"], r["batch"]) for r in data["results"]] == [("endoarss-tiny", 1)]
    assert "esd" in bench.markdown_table(data["results"])
    frames = [np.frombuffer(d, np.uint8) for d, _ in BenchFrames("esd").get(160, 120, "rgb8")]
    assert len(frames) >= 2 and all(f.std() > 10 for f in frames) and not np.array_equal(frames[0], frames[1])
    measure = bench.ros_measure()
    assert callable(measure) if ros_available() else "not available" in measure


def test_unavailable_backends_are_probed_first_and_each_model_is_built_once(tmp_path, monkeypatch):
    """tensorrt (no CUDA here) and bf16 are reported with their reasons even when the time budget is spent before
    anything is measured; the model is built once for all the configurations that use it."""
    built = []
    real_model = bench._model
    monkeypatch.setattr(bench, "_model", lambda name: built.append(name) or real_model(name))
    args = _args(tmp_path, "--backends", "eager,tensorrt,onnxruntime", "--precisions", "fp32,bf16", "--no-ros")
    assert bench.run(args) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert {(r["backend"], r["precision"]) for r in data["results"]} == {("eager", "fp32"), ("onnxruntime", "fp32")}
    reasons = {(u["backend_requested"], u["precision"]): u["reason"] for u in data["unavailable"]}
    assert set(reasons) == {("tensorrt", "fp32"), ("eager", "bf16"), ("tensorrt", "bf16"), ("onnxruntime", "bf16")}
    assert "tensorrt needs a CUDA device" in reasons["tensorrt", "fp32"]
    assert all("needs a CUDA device" in r for (_, p), r in reasons.items() if p == "bf16")
    assert built == ["endoarss-tiny"]

    args = _args(tmp_path, "--backends", "eager,tensorrt", "--time-budget", "1e-9", "--no-ros")
    assert bench.run(args) == 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert [u["backend_requested"] for u in data["unavailable"]] == ["tensorrt"]
    assert [s["backend_requested"] for s in data["skipped"]] == ["eager"]

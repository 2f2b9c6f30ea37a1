"""`endoarss bench --quick` runs (CI smoke) and writes JSON with the documented keys."""
from __future__ import annotations

import importlib.util
import json

from endoarss_ros.cli import SUBCOMMANDS, main


def test_bench_quick_json(tmp_path, capsys):
    assert SUBCOMMANDS["bench"][0] == "endoarss_ros.inference.bench"
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
        assert 0.0 <= r["mask_agreement_with_baseline"] <= 1.0
    if importlib.util.find_spec("rclpy") is None:
        assert data["ros"] is None and "not measured" in data["ros_note"]
    else:  # real processes: publisher -> node (demo weights) -> subscriber, and the transport alone
        assert data["ros_note"] is None, data["ros_note"]
        for part in ("node", "transport"):
            assert data["ros"][part]["frames_out"] > 0
            assert data["ros"][part]["latency_ms"]["p50"] > 0
    assert "| endoarss-tiny | 640x360 rgb8 |" in md.read_text()
    (outputs,) = data["robot_outputs"]  # the status + instruments stage, per size
    assert outputs["input"] == "640x360" and outputs["frames"] >= 10
    for part in ("total_ms", "image_quality_ms", "instruments_ms"):
        assert 0 < outputs[part]["p50"] <= outputs[part]["p95"]
    assert outputs["total_ms"]["p50"] >= outputs["image_quality_ms"]["p50"]

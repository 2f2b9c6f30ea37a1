"""scripts/gpu_check.sh, run here in its CPU smoke mode: the same staged steps (environment, import without ROS,
pytest -m cuda without and then with the compile tests, the headline rows, the rest of the matrix, the hook, the
summary rebuilt from what exists) with the device 'cpu' and a tiny matrix; then stage 2 rerun alone."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from test.conftest import REPO

pytestmark = pytest.mark.slow  # the GPU check's CPU smoke run: minutes

CUDA_TESTS = "test/test_inference_cuda.py"


def _selected(k: str) -> int:
    """How many tests ``pytest -m cuda -k K`` selects (what each stage must run, all skipped without a GPU)."""
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda", "-k", k, CUDA_TESTS,
                          "-p", "no:cacheprovider"], capture_output=True, text=True, cwd=REPO, timeout=300)
    return sum(1 for line in out.stdout.splitlines() if "::" in line)


def _run(out, tmp_path, *extra):
    env = {**os.environ, "PYTHON": sys.executable, "ENDOARSS_CACHE_DIR": str(tmp_path / "cache")}
    return subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--minutes", "5", *extra,
                           str(out)], capture_output=True, text=True, timeout=500, env=env, cwd=tmp_path)


def test_gpu_check_cpu_smoke_runs_both_stages_and_a_stage_alone(tmp_path):
    out = tmp_path / "out"
    proc = _run(out, tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = {p.name for p in out.iterdir()}
    assert {"env.txt", "install.log", "pytest-stage1.log", "pytest-stage2.log", "bench-stage1.json",
            "bench-stage2-bf16.json", "bench-stage2-fp.json", "steps-stage1.md", "steps-stage2.md", "hooks.md",
            "summary.md"} <= names, names
    assert "torch" in (out / "env.txt").read_text()
    assert "imported without ROS" in (out / "install.log").read_text()
    for stage, k in (("stage1", "not compile"), ("stage2", "compile")):  # every selected test ran, skipped here
        n = _selected(k)
        log = (out / f"pytest-{stage}.log").read_text()
        assert n > 0 and re.search(rf"\b{n} skipped\b", log) and "needs a CUDA GPU" in log, (stage, n, log[-800:])
        assert "passed" not in log.splitlines()[-1] and "failed" not in log.splitlines()[-1]
    assert _selected("not compile") + _selected("compile") == _selected("cuda or not cuda")
    head = json.loads((out / "bench-stage1.json").read_text())
    assert {(r["backend"], r["precision"], r["batch"]) for r in head["results"]} == {
        ("eager", "fp32", 1), ("eager", "fp32", 2)}
    assert all(r["baseline"]["p50_ms"] > 0 for r in head["results"])  # the naive baseline in the same run
    bf16 = json.loads((out / "bench-stage2-bf16.json").read_text())
    assert bf16["results"] == [] and {u["backend_requested"] for u in bf16["unavailable"]} == {
        "compile", "tensorrt", "onnxruntime"}
    fp = json.loads((out / "bench-stage2-fp.json").read_text())
    assert {(r["backend"], r["precision"]) for r in fp["results"]} == {("onnxruntime", "fp32")}
    summary = (out / "summary.md").read_text()
    for step in ("import without ROS", "pytest -m cuda -k not compile", "pytest -m cuda -k compile",
                 "endoarss bench (stage1)", "endoarss bench (stage2-fp)"):
        assert f"| {step}" in summary, summary
    assert "failed" not in summary, summary
    assert "| endoarss-tiny | 320x240 rgb8 esd | fast | eager | fp32 | 2 |" in summary
    assert "| endoarss-tiny | 320x240 rgb8 esd | fast | onnxruntime | fp32 | 1 |" in summary
    assert "replay-many" in summary and "| endoarss bench (temporal step cost) | ok" in summary, summary
    temporal = json.loads((out / "bench-temporal.json").read_text())["temporal"]
    assert temporal["step_cpu_ms"]["p50"] > 0 and temporal["state_bytes_per_camera"] > 0, temporal

    # stage 2 again, alone: stage 1's rows stay in the rebuilt summary
    stage1_steps = (out / "steps-stage1.md").read_text()
    proc = _run(out, tmp_path, "--stage", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (out / "steps-stage1.md").read_text() == stage1_steps
    summary = (out / "summary.md").read_text()
    assert "| endoarss-tiny | 320x240 rgb8 esd | fast | eager | fp32 | 2 |" in summary
    assert "| endoarss bench (stage2-bf16)" in summary

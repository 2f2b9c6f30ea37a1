"""scripts/gpu_check.sh, run here in its CPU smoke mode: the same steps (environment, import without ROS,
pytest -m cuda, the bench matrix, the summary) with the device 'cpu' and a tiny matrix."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from test.conftest import REPO


def test_gpu_check_cpu_smoke_run_writes_every_output(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "ENDOARSS_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run([str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--minutes", "4", str(out)],
                          capture_output=True, text=True, timeout=400, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json", "bench.log", "bench.md", "env.txt", "install.log", "pytest.log", "summary.md"]
    assert "torch" in (out / "env.txt").read_text()
    assert "imported without ROS" in (out / "install.log").read_text()
    pytest_log = (out / "pytest.log").read_text()
    assert "22 skipped" in pytest_log and "needs a CUDA GPU" in pytest_log  # selected by -m cuda, skipped here
    data = json.loads((out / "bench.json").read_text())
    assert {(r["backend"], r["batch"]) for r in data["results"]} == {
        ("eager", 1), ("eager", 2), ("onnxruntime", 1), ("onnxruntime", 2)}
    assert {u["precision"] for u in data["unavailable"]} == {"bf16"}
    summary = (out / "summary.md").read_text()
    for step in ("import without ROS", "pytest -m cuda", "endoarss bench"):
        assert f"| {step}" in summary and "failed" not in summary, summary
    assert "| endoarss-tiny | 320x240 rgb8 esd | fast | eager | fp32 | 2 |" in summary

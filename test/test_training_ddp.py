"""Two-process torchrun (gloo, CPU): training takes steps and both ranks hold identical weights."""
import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent('''
    import json, os, sys
    import torch.distributed as dist
    from endoarss_ros.training.config import TrainConfig
    from endoarss_ros.training.loop import train

    out = sys.argv[1]
    rank = int(os.environ["RANK"])
    tiny = sys.argv[2:]
    result = {}
    for method in ("equal", "dbmtl"):
        cfg = TrainConfig.load(None, [f"out_dir={out}", f"name={method}", f"weighting.method={method}", *tiny])
        r = train(cfg, log=lambda s: None)
        result[method] = r["param_hash"]
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump({"world": dist.get_world_size(), "hashes": result}, f)
    dist.destroy_process_group()
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_identical_weights(tmp_path):
    from endoarss_ros.training.config import TrainConfig
    from endoarss_ros.training.loop import build_training_model, parameter_hash
    from test.test_training_loop import TINY

    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT)
    tiny = [o for o in TINY if not o.startswith(("threads", "batch_size"))]
    tiny += ["threads=1", "batch_size=2", "epochs=1", "evaluate_test=false", "data.augment=true"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", str(script), str(tmp_path), *tiny]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world"] == r1["world"] == 2
    # DDP all-reduce (equal) and DB-MTL's own per-task gradient all-reduce (dbmtl) keep the ranks in sync
    assert r0["hashes"] == r1["hashes"]

    cfg = TrainConfig.load(None, [f"out_dir={tmp_path}", *tiny])
    torch.manual_seed(cfg.seed)
    initial = parameter_hash(build_training_model(cfg))
    for method in ("equal", "dbmtl"):
        assert r0["hashes"][method] != initial  # a step was taken
        hist = json.loads((tmp_path / method / "metrics.json").read_text())
        assert hist["world_size"] == 2 and hist["weighting"] == method
        # 8 frames, 2 ranks x batch 2: two optimiser steps per epoch
        assert hist["epochs"][0]["train"]["segmentation"] > 0

#!/usr/bin/env python3
"""Scaling of `endoarss replay-many`: the same synthetic recordings replayed with each replayer configuration
in one run (embedded Ray cluster), as recordings per hour and frames per second; JSON out, a Markdown table on
stdout. Each configuration is a separate `endoarss replay-many --force` into its own output root.

    python scripts/bench_replay_many.py --json bench_replay_many.json
    python scripts/bench_replay_many.py --configs 1x4x1,2x4x0.5 --device cuda --size 1080x1920   # a GPU machine

A configuration is REPLAYERSxCPUS[xGPUS] per replayer (torch uses CPUS threads in each: Ray sets
OMP_NUM_THREADS). "replay" times run from the replayers being ready to the last recording done (what the
replayers deliver); "total" adds the cluster start, model loading, the aggregate and the shutdown.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _events(out: Path) -> dict:
    return {e["event"]: e for e in map(json.loads, (out / "progress.jsonl").read_text().splitlines())}


def _run(config: str, inputs: list[Path], out: Path, args) -> dict:
    replayers, cpus, *gpus = config.split("x")
    cmd = [sys.executable, "-m", "endoarss_ros.cli", "replay-many", *map(str, inputs), "-o", str(out), "--force",
           "--no-progress", "--model", args.model, "--device", args.device, "--replayers", replayers,
           "--cpus-per-replayer", cpus, "--gpus-per-replayer", gpus[0] if gpus else "0", "--no-timeline"]
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    ev = _events(out)
    frames, replay_s = ev["end"]["frames"], ev["replayed"]["wall_s"]
    return {"config": config, "replayers": int(replayers), "cpus_per_replayer": float(cpus),
            "gpus_per_replayer": float(gpus[0]) if gpus else 0.0, "recordings": len(inputs), "frames": frames,
            "replay_s": replay_s, "total_s": round(time.monotonic() - t0, 3),
            "start_s": round(ev["replayers"]["t"] - ev["run"]["t"], 3),
            "recordings_per_hour": round(len(inputs) / replay_s * 3600, 1),
            "frames_per_s": round(frames / replay_s, 2),
            "recordings_per_hour_total": round(len(inputs) / (time.monotonic() - t0) * 3600, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", default="1x1,1x2,2x1",
                   help="comma-separated REPLAYERSxCPUS[xGPUS] (default 1x1,1x2,2x1)")
    p.add_argument("--recordings", type=int, default=6)
    p.add_argument("--seconds", type=float, default=3.0, help="length of each recording (default 3.0)")
    p.add_argument("--fps", type=float, default=10.0)
    p.add_argument("--size", default="480x640", help="HxW of the frames (default 480x640)")
    p.add_argument("--model", default=str(REPO / "models" / "demo" / "endoarss_demo.safetensors"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args()
    sys.path.insert(0, str(REPO))
    from endoarss_ros.bag.synth_bag import write_synth_bag

    h, w = map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="endoarss-bench-many-") as tmp:
        inputs = [Path(tmp) / "in" / f"rec{i:02d}" for i in range(args.recordings)]
        for i, path in enumerate(inputs):
            write_synth_bag(path, seconds=args.seconds, fps=args.fps, size=(h, w), seed=i)
        rows = [_run(c, inputs, Path(tmp) / f"out_{c}", args) for c in args.configs.split(",")]
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    result = {"date": time.strftime("%Y-%m-%d"), "cpu": cpu, "cores": os.cpu_count(), "device": args.device,
              "model": args.model, "size": args.size, "fps": args.fps, "seconds": args.seconds, "rows": rows}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    print("| replayers x CPUs (x GPUs) | recordings | frames | replay s | recordings/h | frames/s | start s | "
          "total s | recordings/h incl. start | load before/after |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['recordings']} | {r['frames']} | {r['replay_s']} | {r['recordings_per_hour']} | "
              f"{r['frames_per_s']} | {r['start_s']} | {r['total_s']} | {r['recordings_per_hour_total']} | "
              f"{r['load_before']} / {r['load_after']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``endoarss bench``'s report: the run's machine and software, the markdown table, one row's progress line."""
from __future__ import annotations

import datetime
import importlib
import os
import platform
import sys
from pathlib import Path

import torch


def machine_meta(device: torch.device) -> dict:
    """Date, device, CPU, load, software versions and the command: the JSON's ``meta``."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "cpu": cpu, "cpu_threads": torch.get_num_threads(), "load_average_at_start": load,
        "python": platform.python_version(), "torch": torch.__version__,
        "cuda": torch.version.cuda, "command": "endoarss bench " + " ".join(sys.argv[2:]),
    }
    for mod in ("onnxruntime", "torch_tensorrt", "cv2"):
        try:
            meta[mod] = importlib.import_module(mod).__version__
        except Exception:
            meta[mod] = None
    return meta


def markdown_table(results: list[dict], unavailable: list[dict] = (), skipped: list[dict] = ()) -> str:
    head = ("| model | input | method | backend | prec | batch | e2e p50 | p95 | p99 | fps | decode | upload | "
            "pre | forward | post | download | msg | e2e/fwd | baseline p50 | speed-up | agree | peak MiB |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        s = r["stages_p50_ms"]
        peak = "-" if r["peak_gpu_mem_mib"] is None else f"{r['peak_gpu_mem_mib']:.0f}"
        lines.append(
            f"| {r['model']} | {r['input']} {r['encoding']} {r['scene']} | {r['method']} | {r['backend']} | "
            f"{r['precision']} | {r['batch']} | {r['e2e_ms']['p50']:.2f} | {r['e2e_ms']['p95']:.2f} | "
            f"{r['e2e_ms']['p99']:.2f} | {r['throughput_fps']:.1f} | "
            + " | ".join(f"{s.get(k, float('nan')):.2f}" for k in
                         ("decode", "upload", "preprocess", "forward", "postprocess", "download", "message"))
            + f" | {r['e2e_over_forward']:.2f} | {r['baseline']['p50_ms']:.2f} | {r['speedup']:.1f}x | "
            f"{100 * r['mask_agreement_with_baseline']:.1f}% | {peak} |"
        )
    text = "\n".join(lines) + ("\n\nTimes in ms (p50 per stage; stage times on CUDA are exact only with --profile; "
                               "a batch's e2e covers all its frames).\n")
    for title, rows in (("Unavailable here", unavailable), ("Not measured (time budget)", skipped)):
        if rows:
            text += f"\n{title}:\n\n" + "".join(
                f"* {r['model']} {r['backend_requested']} {r['precision']} {r['method']}"
                + (f" {r['input']} batch {r['batch']}" if "input" in r else "") + f": {r['reason']}\n" for r in rows)
    return text


def progress_line(row: dict) -> str:
    """One measured row, as printed while the run goes on."""
    return (f"{row['model']} {row['input']} {row['scene']} b{row['batch']} {row['method']} "
            f"{row['backend']}/{row['precision']}: "
            f"e2e p50 {row['e2e_ms']['p50']:.2f} ms ({row['e2e_over_forward']:.2f}x forward), "
            f"{row['throughput_fps']:.1f} fps, speed-up {row['speedup']:.1f}x")

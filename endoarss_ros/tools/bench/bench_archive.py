"""The archive report at scale: ``python -m endoarss_ros.tools.bench.bench_archive --recordings 10000``.

Replays one tiny synthetic bag with a tiny random-weights model (a real summary), then writes N recordings'
summaries cloned from it with their own figures (frames, failed frames and reasons, throughput, activity
segments, usable frames, ground truth on a share of them) and a share of failure records, as replay-many would
leave them. Then, in a fresh process (the driver's place), it rebuilds aggregate.json / .csv / .png and
report.html from them (``archive_report.write_aggregate``), timing it, and reports that process's resident
memory once its imports are done and its peak while rebuilding (Linux: ``VmHWM``, reset through
``/proc/self/clear_refs``), the phases timed once more separately, and the files' sizes."""
from __future__ import annotations

import argparse
import copy
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ERRORS = ("BagError: {name}: the MCAP data ends inside a chunk (damaged or cut short)",
          "BagError: {name}: no image topic (sensor_msgs/Image or CompressedImage)",
          "replayer died: ActorDiedError: The actor died unexpectedly before finishing this task",
          "OutputError: {name}: No space left on device")
FRAME_REASONS = ("decode", "size", "encoding")


def template_summary(work: Path) -> dict:
    """The summary of a real `endoarss replay` of a tiny synthetic bag (tiny model, CPU)."""
    from endoarss_ros.bag.replay import ReplayOptions, replay
    from endoarss_ros.bag.synth_bag import write_synth_bag
    from endoarss_ros.model import ModelConfig, build_model, save_model

    model = save_model(build_model(ModelConfig.endoarss_tiny()), work / "tiny")
    write_synth_bag(work / "bag", seconds=0.4, fps=10, size=(32, 40), seed=1)
    return replay(ReplayOptions(input=work / "bag", output=work / "out", model=str(model), device="cpu",
                                progress=False, timeline=""))


def _segments(rng: random.Random, labels: list[str], frames: int) -> list[dict]:
    cuts = sorted(rng.sample(range(1, frames), min(frames - 1, rng.randint(0, 3)))) if frames > 1 else []
    bounds = [0, *cuts, frames]
    return [{"label": rng.choice(labels), "frames": b - a, "start_s": a / 10, "end_s": b / 10}
            for a, b in zip(bounds, bounds[1:])]


def clone_summary(template: dict, name: str, rng: random.Random, *, truth: bool) -> dict:
    """``template`` with figures of its own: what one recording of the archive might report."""
    s = copy.deepcopy(template)
    frames = rng.randint(20, 600)
    failed = rng.choice([0] * 18 + [rng.randint(1, 5), rng.randint(5, 60)])
    reasons = [rng.choice(FRAME_REASONS) for _ in range(failed)]
    s.update(frames_in=frames, frames_out=frames, frames_failed=failed,
             failed_frames=[{"topic": "/cam", "index": i, "stamp_ns": i, "reason": r, "error": "synthetic"}
                            for i, r in enumerate(reasons)],
             failure_reasons={r: reasons.count(r) for r in set(reasons)}, input=f"/archive/{name}")
    wall = frames / rng.uniform(5.0, 60.0)
    s["throughput"] = dict(s["throughput"], wall_s=round(wall, 3), frames_per_s=round(frames / wall, 3))
    labels = sorted({seg["label"] for segs in template["activity_timeline"].values() for seg in segs}) or ["idle"]
    topic = next(iter(template["activity_timeline"]), "/cam")
    s["activity_timeline"] = {topic: _segments(rng, labels, frames)}
    usable = round(frames * rng.betavariate(8, 2))
    status = next(iter(template["status"].values()), {"flags": {}})
    flags = dict.fromkeys(status["flags"], 0)
    if flags:
        flags[rng.choice(sorted(flags))] = frames - usable
    s["status"] = {topic: dict(status, frames=frames, processed=frames, usable=usable, flags=flags)}
    s["ground_truth"] = (dict(template.get("ground_truth") or {}, frames_with_activity=frames, frames_with_mask=frames,
                              activity_accuracy=round(rng.betavariate(8, 2), 4),
                              miou_foreground=round(rng.betavariate(5, 3), 4)) if truth else None)
    s["made_from"] = {"package_version": "bench", "options": {"batch": 4}, "input": {"path": f"/archive/{name}"}}
    return s


def write_synthetic_archive(out_root: Path, template: dict, count: int, *, failed_share: float = 0.02,
                            truth_share: float = 1.0, seed: int = 0) -> None:
    """``count`` recordings under ``out_root`` as replay-many leaves them: a summary, or a failure record."""
    from endoarss_ros.bag.archive import FAILURE_FILE

    rng = random.Random(seed)
    for i in range(count):
        name = f"rec-{i:05d}"
        folder = Path(out_root) / name
        folder.mkdir(parents=True, exist_ok=True)
        if rng.random() < failed_share:
            failure = {"name": name, "input": f"/archive/{name}", "attempts": 1,
                       "error": rng.choice(ERRORS).format(name=f"/archive/{name}")}
            (folder / FAILURE_FILE).write_text(json.dumps(failure))
            continue
        summary = clone_summary(template, name, rng, truth=rng.random() < truth_share)
        (folder / f"{name}.summary.json").write_text(json.dumps(summary))


MEASURE = """
import json, sys, time
from pathlib import Path
from endoarss_ros.bag.archive_report import aggregate, collect, write_aggregate
from endoarss_ros.bag.archive_plot import render_picture
from endoarss_ros.bag.archive_html import render_report
from endoarss_ros.files import pyplot
pyplot()

def mb(field):
    line = next(x for x in open("/proc/self/status") if x.startswith(field + ":"))
    return round(int(line.split()[1]) / 1024, 1)

root = Path(sys.argv[1])
rss0 = mb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # the peak (VmHWM) counts from here
t0 = time.perf_counter(); write_aggregate(root); total = time.perf_counter() - t0
peak = mb("VmHWM")
t0 = time.perf_counter(); report = aggregate(collect(root)); t_agg = time.perf_counter() - t0
t0 = time.perf_counter(); png = render_picture(report); t_png = time.perf_counter() - t0
t0 = time.perf_counter(); render_report(report, root, png); t_html = time.perf_counter() - t0
print(json.dumps({"write_aggregate_s": round(total, 2), "aggregate_s": round(t_agg, 2), "picture_s": round(t_png, 2),
                  "report_s": round(t_html, 2), "rss_mb_before": rss0, "peak_rss_mb_during": peak}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m endoarss_ros.tools.bench.bench_archive", description=__doc__)
    parser.add_argument("--recordings", type=int, default=10_000)
    parser.add_argument("--failed-share", type=float, default=0.02)
    parser.add_argument("--keep", type=Path, help="write the archive here (kept) instead of a temporary folder")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="endoarss-bench-archive-") as tmp:
        root = args.keep or Path(tmp) / "archive"
        t0 = time.perf_counter()
        write_synthetic_archive(root, template_summary(Path(tmp)), args.recordings, failed_share=args.failed_share)
        made_s = time.perf_counter() - t0
        run = subprocess.run([sys.executable, "-c", MEASURE, str(root)], capture_output=True, text=True, check=True)
        result = dict(json.loads(run.stdout.strip().splitlines()[-1]), recordings=args.recordings,
                      archive_written_s=round(made_s, 1),
                      sizes_kb={f: round((root / f).stat().st_size / 1024) for f in
                                ("aggregate.json", "aggregate.csv", "aggregate.png", "report.html")})
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

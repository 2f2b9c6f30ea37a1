"""The archive's aggregate: ``OUT_ROOT/aggregate.json``, ``aggregate.csv`` (one row per recording) and
``aggregate.png``, rebuilt from every committed summary and failure record on disk (not only one run's), each
written atomically. Plain Python, no Ray."""
from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path

from ..files import write_atomic
from .archive import FAILURE_FILE, read_json

CSV_COLUMNS = ("name", "status", "input", "frames_in", "frames_out", "frames_failed", "wall_s", "frames_per_s",
               "inference_frames_per_s", "main_activity", "main_activity_share", "usable_fraction",
               "instrument_tracks", "activity_accuracy", "miou_foreground", "error")


def collect(out_root: Path) -> list[dict]:
    """(name, summary or failure record) of every recording folder under ``out_root``, by name."""
    entries = []
    for folder in sorted(p for p in Path(out_root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary = read_json(folder / f"{folder.name}.summary.json")
        if summary is not None:
            entries.append({"name": folder.name, "status": "ok", "summary": summary})
            continue
        failure = read_json(folder / FAILURE_FILE)
        if failure is not None:
            entries.append({"name": folder.name, "status": "failed", "failure": failure})
    return entries


def _recording_row(entry: dict) -> dict:
    if entry["status"] != "ok":
        f = entry["failure"]
        return {"name": entry["name"], "status": "failed", "input": f.get("input"), "error": f.get("error"),
                "attempts": f.get("attempts")}
    s = entry["summary"]
    activity = Counter()
    for segments in s.get("activity_timeline", {}).values():
        for seg in segments:
            activity[seg["label"]] += seg["frames"]
    status = list(s.get("status", {}).values())
    frames_status = sum(st["frames"] for st in status)
    gt = s.get("ground_truth") or {}
    main = activity.most_common(1)[0] if activity else (None, 0)
    return {
        "name": entry["name"], "status": "ok", "input": s.get("input"),
        "frames_in": s["frames_in"], "frames_out": s["frames_out"], "frames_failed": s["frames_failed"],
        "failure_reasons": s.get("failure_reasons", {}),
        "wall_s": s["throughput"]["wall_s"], "frames_per_s": s["throughput"]["frames_per_s"],
        "inference_frames_per_s": s["throughput"]["inference_frames_per_s"],
        "activity_frames": dict(activity), "main_activity": main[0],
        "main_activity_share": round(main[1] / sum(activity.values()), 4) if activity else None,
        "status_frames": frames_status, "usable_frames": sum(st["usable"] for st in status),
        "usable_fraction": round(sum(st["usable"] for st in status) / frames_status, 4) if frames_status else None,
        "status_flags": dict(sum((Counter(st["flags"]) for st in status), Counter())),
        "instrument_tracks": sum(tr["tracks"] for tr in s.get("instruments", {}).values()),
        "frames_with_activity_truth": gt.get("frames_with_activity", 0),
        "activity_accuracy": gt.get("activity_accuracy"),
        "frames_with_mask_truth": gt.get("frames_with_mask", 0), "miou_foreground": gt.get("miou_foreground"),
        "summary": str(Path(entry["name"]) / f"{entry['name']}.summary.json"),
    }


def _weighted(rows: list[dict], value: str, weight: str) -> float | None:
    pairs = [(r[value], r[weight]) for r in rows if r.get(value) is not None and r.get(weight)]
    total = sum(w for _, w in pairs)
    return round(sum(v * w for v, w in pairs) / total, 4) if total else None


def aggregate(entries: list[dict]) -> dict:
    """Overall figures and one row per recording. Accuracy is pooled over every frame with ground truth;
    the foreground mIoU is the recordings' mIoU weighted by their masks (the per-pixel counts are not kept)."""
    rows = [_recording_row(e) for e in entries]
    ok = [r for r in rows if r["status"] == "ok"]
    wall = sum(r["wall_s"] for r in ok)
    activity = sum((Counter(r["activity_frames"]) for r in ok), Counter())
    status_frames = sum(r["status_frames"] for r in ok)
    overall = {
        "recordings": len(rows), "finished": len(ok), "failed": len(rows) - len(ok),
        "frames_in": sum(r["frames_in"] for r in ok), "frames_out": sum(r["frames_out"] for r in ok),
        "frames_failed": sum(r["frames_failed"] for r in ok),
        "failure_reasons": dict(sum((Counter(r["failure_reasons"]) for r in ok), Counter())),
        "replay_wall_s": round(wall, 3),
        "frames_per_s": round(sum(r["frames_out"] for r in ok) / wall, 3) if wall > 0 else None,
        "activity_frames": dict(activity),
        "activity_share": {k: round(v / sum(activity.values()), 4) for k, v in activity.items()},
        "status_frames": status_frames, "usable_frames": sum(r["usable_frames"] for r in ok),
        "usable_fraction": round(sum(r["usable_frames"] for r in ok) / status_frames, 4) if status_frames else None,
        "status_flags": dict(sum((Counter(r["status_flags"]) for r in ok), Counter())),
        "instrument_tracks": sum(r["instrument_tracks"] for r in ok),
        "frames_with_activity_truth": sum(r["frames_with_activity_truth"] for r in ok),
        "activity_accuracy": _weighted(ok, "activity_accuracy", "frames_with_activity_truth"),
        "frames_with_mask_truth": sum(r["frames_with_mask_truth"] for r in ok),
        "miou_foreground_mask_weighted": _weighted(ok, "miou_foreground", "frames_with_mask_truth"),
    }
    return {"overall": overall, "failed": [{"name": r["name"], "input": r["input"], "error": r["error"]}
                                           for r in rows if r["status"] != "ok"], "recordings": rows}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _plot(path: Path, report: dict) -> None:
    """Per recording: the share of each activity (bars) and frames per second (right panel); failed ones named."""
    from ..files import pyplot

    plt = pyplot()

    rows = report["recordings"]
    labels = sorted({k for r in rows if r["status"] == "ok" for k in r["activity_frames"]})
    fig, (ax, ax_fps) = plt.subplots(1, 2, figsize=(11, 1.2 + 0.3 * max(1, len(rows))), sharey=True,
                                     gridspec_kw={"width_ratios": [3, 1]})
    for i, r in enumerate(rows):
        if r["status"] != "ok":
            ax.text(0.01, i, f"failed: {r['error']}"[:90], va="center", fontsize=7, color="crimson")
            continue
        total, left = max(1, sum(r["activity_frames"].values())), 0.0
        for j, label in enumerate(labels):
            share = r["activity_frames"].get(label, 0) / total
            ax.barh(i, share, left=left, color=plt.cm.tab10(j % 10), label=label if i == 0 else None)
            left += share
        ax_fps.barh(i, r["frames_per_s"] or 0, color="gray")
    ax.set_yticks(range(len(rows)), [r["name"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of frames per predicted activity")
    ax_fps.set_xlabel("frames / s")
    if labels:
        ax.legend(labels, fontsize=7, loc="lower right")
    fig.suptitle(f"{report['overall']['finished']} recordings finished, {report['overall']['failed']} failed")
    try:
        write_atomic(path, lambda tmp: fig.savefig(tmp, bbox_inches="tight", format="png"))
    finally:
        plt.close(fig)


def write_aggregate(out_root: Path, *, plot: bool = True) -> dict:
    """Rebuild aggregate.json, aggregate.csv and (``plot``) aggregate.png from what is on disk; returns it."""
    out_root = Path(out_root)
    report = aggregate(collect(out_root))
    write_atomic(out_root / "aggregate.csv", _csv(report["recordings"]))
    if plot and report["recordings"]:
        _plot(out_root / "aggregate.png", report)
    write_atomic(out_root / "aggregate.json", json.dumps(report, indent=2) + "\n")
    return report

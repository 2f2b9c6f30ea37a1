"""The archive's aggregate: ``OUT_ROOT/aggregate.json``, ``aggregate.csv`` (one row per recording),
``aggregate.png`` (a picture of fixed size, ``archive_plot``) and ``report.html`` (one self-contained page to
browse, ``archive_html``), rebuilt from every committed summary and failure record on disk (not only one run's),
each written atomically. Summaries are read one at a time and reduced to a row, so memory grows with the rows,
not with the summaries. Plain Python, no Ray."""
from __future__ import annotations

import csv
import io
import json
import math
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..files import write_atomic
from .archive import FAILURE_FILE, read_json

CSV_COLUMNS = ("name", "status", "input", "frames_in", "frames_out", "frames_failed", "wall_s", "frames_per_s",
               "inference_frames_per_s", "main_activity", "main_activity_share", "usable_fraction",
               "instrument_tracks", "activity_accuracy", "miou_foreground", "error")
WORST_SHOWN = 5  # recordings named per figure in aggregate.json and on the console


@dataclass(frozen=True)
class Figure:
    """A per-recording figure the picture, the report and the console show as a distribution and its worst."""
    key: str  # the row's field
    label: str
    low_is_bad: bool = True
    fraction: bool = False  # in [0, 1], shown as a percentage
    needs_truth: bool = False

    def show(self, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.fraction:
            return f"{value:.1%}"
        return f"{value:,.0f}" if self.key == "frames_failed" else f"{value:,.1f}"


FIGURES = (Figure("activity_accuracy", "activity accuracy", fraction=True, needs_truth=True),
           Figure("miou_foreground", "foreground mIoU", fraction=True, needs_truth=True),
           Figure("usable_fraction", "usable share", fraction=True),
           Figure("frames_per_s", "frames per second"),
           Figure("frames_failed", "failed frames", low_is_bad=False))


def collect(out_root: Path) -> Iterator[dict]:
    """(name, summary or failure record) of every recording folder under ``out_root``, by name, one at a time."""
    for folder in sorted(p for p in Path(out_root).iterdir() if p.is_dir() and not p.name.startswith(".")):
        summary = read_json(folder / f"{folder.name}.summary.json")
        if summary is not None:
            yield {"name": folder.name, "status": "ok", "summary": summary}
            continue
        failure = read_json(folder / FAILURE_FILE)
        if failure is not None:
            yield {"name": folder.name, "status": "failed", "failure": failure}


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


def is_number(value) -> bool:
    """A finite number (not None, not NaN): what a distribution and a ranking can use."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def error_kind(error: str | None) -> str:
    """A failure's reason without its particulars: the error's text before the first colon."""
    return " ".join(str(error or "unknown").split(":", 1)[0].split())[:60]


def worst(rows: list[dict], figure: Figure, count: int = WORST_SHOWN) -> list[tuple[str, float]]:
    """The ``count`` finished recordings worst by ``figure`` (name, value), worst first; ties by name. For failed
    frames only recordings that have any."""
    values = [(r["name"], r[figure.key]) for r in rows if r["status"] == "ok" and is_number(r.get(figure.key))]
    if not figure.low_is_bad:
        values = [(n, v) for n, v in values if v > 0]
    values.sort(key=lambda nv: (nv[1] if figure.low_is_bad else -nv[1], nv[0]))
    return values[:count]


def _settings(summary: dict) -> str | None:
    """What a recording was made from, less its own input: the same for every recording of one run."""
    made_from = summary.get("made_from")
    if not isinstance(made_from, dict):
        return None
    return json.dumps({k: v for k, v in made_from.items() if k != "input"}, sort_keys=True)


def aggregate(entries: Iterable[dict]) -> dict:
    """Overall figures, one row per recording, the worst recordings by each figure and the settings the summaries
    were made from. Accuracy is pooled over every frame with ground truth; the foreground mIoU is the
    recordings' mIoU weighted by their masks (the per-pixel counts are not kept)."""
    rows, settings = [], Counter()
    for entry in entries:
        try:
            rows.append(_recording_row(entry))
        except (KeyError, TypeError, AttributeError) as e:  # valid JSON, not a summary: counted, not fatal
            rows.append({"name": entry["name"], "status": "failed", "input": None, "attempts": None,
                         "error": f"unreadable summary: {type(e).__name__}: {e}"})
            continue
        if entry["status"] == "ok":
            settings[_settings(entry["summary"])] += 1
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
    return {"overall": overall,
            "failed": [{"name": r["name"], "input": r["input"], "error": r["error"]}
                       for r in rows if r["status"] != "ok"],
            "worst": {f.key: [list(nv) for nv in worst(rows, f)] for f in FIGURES},
            "settings": [{"recordings": n, "made_from": json.loads(k) if k else None}
                         for k, n in settings.most_common()],
            "recordings": rows}


def _csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def write_aggregate(out_root: Path, *, plot: bool = True) -> dict:
    """Rebuild aggregate.json, aggregate.csv, aggregate.png (``plot``) and report.html from what is on disk;
    returns the aggregate. The page embeds the picture, so both are of the same moment."""
    from .archive_html import render_report
    from .archive_plot import render_picture

    out_root = Path(out_root)
    report = aggregate(collect(out_root))
    write_atomic(out_root / "aggregate.csv", _csv(report["recordings"]))
    picture = render_picture(report) if plot else None
    if picture is not None:
        write_atomic(out_root / "aggregate.png", picture)
    write_atomic(out_root / "report.html", render_report(report, out_root, picture).encode("utf-8"))
    write_atomic(out_root / "aggregate.json", json.dumps(report, indent=2) + "\n")
    return report

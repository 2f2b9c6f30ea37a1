"""What a replay reports: the summary dict (frames, failures, throughput, timeline, pixel fractions, metrics),
the activity timeline as segments, and the timeline plot's rows."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np


def activity_segments(timeline: list[tuple[int, int, float]], names: list[str], start_ns: int) -> list[dict]:
    """Consecutive frames with the same activity as one segment; a segment ends where the next begins (the
    last one a median frame period after its last frame)."""
    if not timeline:
        return []
    stamps = np.array([s for s, _, _ in timeline], np.int64)
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 0
    segments: list[dict] = []
    for stamp, cls, conf in timeline:
        if segments and segments[-1]["class_id"] == cls:
            seg = segments[-1]
            seg["frames"] += 1
            seg["_conf"] += conf
            continue
        if segments:
            segments[-1]["end_ns"] = stamp
        segments.append({"class_id": int(cls), "label": names[cls] if cls < len(names) else str(cls),
                         "start_ns": int(stamp), "end_ns": None, "frames": 1, "_conf": conf})
    segments[-1]["end_ns"] = int(timeline[-1][0] + period)
    for seg in segments:
        seg["start_s"] = round((seg["start_ns"] - start_ns) / 1e9, 3)
        seg["end_s"] = round((seg["end_ns"] - start_ns) / 1e9, 3)
        seg["mean_confidence"] = round(seg.pop("_conf") / seg["frames"], 4)
    return segments


def pixel_fractions(counts: np.ndarray | None, names: list[str]) -> dict[str, float]:
    """Per-class share of all mask pixels of a topic."""
    if counts is None:
        return {}
    total = max(1, int(counts.sum()))
    return {names[i]: round(float(c) / total, 6) for i, c in enumerate(counts[: len(names)])}


def frame_accounting(states: dict, failed: list[dict]) -> dict:
    """frames in / out / failed, per topic and in all; ``frames_in_equals_out`` is the replay's promise."""
    frames_in = sum(s.frames_in for s in states.values())
    frames_out = sum(s.frames_out for s in states.values())
    return {
        "frames_in": frames_in,
        "frames_out": frames_out,
        "frames_failed": len(failed),
        "frames_in_equals_out": frames_in == frames_out,
        "failed_frames": failed,
        "failure_reasons": dict(Counter(f["reason"] for f in failed)),
    }


def throughput(wall_s: float, load_s: float, inference_s: float, frames_out: int) -> dict:
    return {
        "wall_s": round(wall_s, 3),
        "model_load_s": round(load_s, 3),
        "inference_s": round(inference_s, 3),
        "frames_per_s": round(frames_out / max(wall_s, 1e-9), 3),
        "inference_frames_per_s": round(frames_out / inference_s, 3) if inference_s > 0 else None,
    }


def timeline_rows(summary: dict, truth: dict[int, int], act_names: list[str], start_ns: int,
                  with_truth: bool) -> list[tuple[str, list[dict]]]:
    """The timeline plot's rows: each topic's predicted segments, the ground truth second when there is one."""
    timelines = summary["activity_timeline"]
    rows = [(f"{t} (predicted)" if len(timelines) > 1 or with_truth else t, segments)
            for t, segments in timelines.items()]
    if with_truth and truth:
        rows.insert(1, ("ground truth", activity_segments([(s, c, 1.0) for s, c in sorted(truth.items())],
                                                          act_names, start_ns)))
    return rows


def timeline_title(input_path, summary: dict) -> str:
    title = f"activity timeline - {Path(input_path).name}"
    accuracy = (summary["ground_truth"] or {}).get("activity_accuracy")
    if accuracy is not None:
        title += f" (accuracy {accuracy:.1%})"
    return title


def by_status(evaluators: dict) -> dict:
    """Activity accuracy and foreground mIoU of the frames their status called usable, and of the others."""
    out = {}
    for usable, ev in evaluators.items():
        r = ev.result()
        out["usable" if usable else "unusable"] = {
            k: r.get(k) for k in ("frames_with_activity", "activity_accuracy", "frames_with_mask", "miou_foreground")}
    return out

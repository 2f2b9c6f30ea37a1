"""What a replay reports: the summary dict (frames, failures, throughput, timeline, pixel fractions, metrics),
the activity timeline as segments, and the timeline plot's rows."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from ..metrics.segments import video_scores

TEMPORAL_SCORES = ("frames", "accuracy", "switches", "true_transitions", "false_transitions", "delay_median_s")


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
    """The timeline plot's rows: each topic's predicted segments, the ground truth second when there is one;
    with a temporal model the published (temporal) labels and, below the truth, the frame-wise + EMA labels."""
    timelines = summary["activity_timeline"]
    temporal = (summary.get("temporal") or {}).get("topics") or {}
    kind = "temporal" if temporal else "predicted"
    rows = [(f"{t} ({kind})" if len(timelines) > 1 or with_truth or temporal else t, segments)
            for t, segments in timelines.items()]
    if with_truth and truth:
        rows.insert(1, ("ground truth", activity_segments([(s, c, 1.0) for s, c in sorted(truth.items())],
                                                          act_names, start_ns)))
    rows += [(f"{t} (frame + EMA)", d["frame_ema_timeline"]) for t, d in temporal.items()]
    return rows


def temporal_section(model: str, states: dict, eval_topic: str, truth: dict[int, int], names: list[str],
                     start_ns: int) -> dict:
    """The temporal model's run: per topic its session's diagnostics, how many published labels came from which
    source, and the frame-wise + EMA timeline of the same frames; on the scored topic (with ground truth) the
    published labels against frame-wise + EMA (``temporal_scores``)."""
    topics = {}
    for t, st in states.items():
        topics[t] = dict(st.stream.temporal.diagnostics(),
                         sources=dict(Counter(src for src, _ in st.sources)),
                         frame_ema_timeline=[{k: v for k, v in seg.items() if k != "mean_confidence"}
                                             for seg in activity_segments(
                                                 [(s, ema, 1.0) for (s, _, _), (_, ema) in
                                                  zip(st.timeline, st.sources)], names, start_ns)])
    st = states[eval_topic]
    return {"model": model, "topics": topics, "scores": temporal_scores(st.timeline, st.sources, truth)}


def temporal_scores(timeline: list[tuple[int, int, float]], sources: list[tuple[str, int]],
                    truth: dict[int, int]) -> dict | None:
    """Published (temporal once warm) vs frame-wise + EMA labels on the same frames with a true activity:
    accuracy and label switches (``metrics.segments.video_scores``), over all frames and over those published
    by the warm temporal model (``after_warmup``). None without ground truth."""
    rows = [(s, c, src, ema, truth[s]) for (s, c, _), (src, ema) in zip(timeline, sources) if s in truth]
    if not rows:
        return None
    stamps = np.array([r[0] for r in rows], np.float64) / 1e9
    published, ema, true = (np.array([r[i] for r in rows], np.int64) for i in (1, 3, 4))
    warm = np.array([r[2] == "temporal" for r in rows])
    out = {}
    for name, pred in (("published", published), ("frame_ema", ema)):
        scores = video_scores(pred, true, stamps)
        out[name] = {k: scores[k] for k in TEMPORAL_SCORES}
        out[name]["accuracy_after_warmup"] = float(np.mean(pred[warm] == true[warm])) if warm.any() else None
    out["frames_after_warmup"] = int(warm.sum())
    return out


def temporal_lines(temporal: dict | None) -> list[str]:
    """The temporal section in words (``endoarss replay`` and ``endoarss demo`` print these)."""
    if not temporal:
        return []
    lines = []
    for topic, d in temporal["topics"].items():
        sources = ", ".join(f"{name} {n}" for name, n in sorted(d["sources"].items()))
        lines.append(f"temporal model on {topic}: {d['ticks']} ticks ({d['ticks_missing']} missing), {d['gaps']} "
                     f"gaps, {d['resets']} resets" + (f" ({d['resets_by_reason']})" if d["resets_by_reason"] else "")
                     + f"; published labels by source: {sources or 'none'}")
        if d.get("stamps_warning"):
            lines.append(f"warning, temporal model on {topic}: {d['stamps_warning']}")
    sc = temporal.get("scores")
    if sc:
        p, e = sc["published"], sc["frame_ema"]

        def pct(v):
            return "n/a" if v is None else f"{v:.1%}"
        lines.append(f"activity accuracy: published (temporal) {pct(p['accuracy'])} vs frame + EMA "
                     f"{pct(e['accuracy'])} over {p['frames']} frames; after warm-up {pct(p['accuracy_after_warmup'])}"
                     f" vs {pct(e['accuracy_after_warmup'])} ({sc['frames_after_warmup']} frames)")
        lines.append(f"label switches: published (temporal) {p['switches']} ({p['false_transitions']} false), frame "
                     f"+ EMA {e['switches']} ({e['false_transitions']} false); true switches {p['true_transitions']}")
    return lines


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

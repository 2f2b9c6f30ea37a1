"""Scores of an activity timeline against the true one, per video, unrelaxed (no boundary forgiveness).

Inputs per video: ``truth`` and ``pred`` (N,) class ids (``truth`` < 0 = unlabelled: such frames are left out of
everything) and ``times`` (N,) seconds. All scores are fractions in [0, 1] except times and rates.

* ``accuracy``: correct / labelled frames.
* ``macro_f1``: mean F1 over the classes present in the truth or the prediction of this video.
* ``edit``: 1 - Levenshtein(predicted segment labels, true segment labels) / max(their counts) (MS-TCN).
* ``f1@10/25/50``: segmental F1 (MS-TCN): a predicted segment is a hit when its IoU (in frames) with a true segment
  of its class that no earlier hit took is >= the threshold; F1 of hits over predicted and true segments.
* ``false_transitions_per_min``: predicted switches not explained by a true transition, per minute. A switch to
  class c at time s is explained by the first not yet used true transition into c at t with
  t - ``anticipation_s`` <= s <= t + ``max_delay_s``.
* delay: per true transition into c at t, the time from t until the prediction is c and stays c for
  ``hold_s`` (or until the true segment ends); a miss when that does not happen within ``max_delay_s`` or before
  the next true transition. ``delay_median_s`` / ``delay_p90_s`` over followed transitions, ``misses``.

``summarize`` averages the per-video scores (mean and std over videos: videos count equally) and pools the
transitions of all videos for the delay percentiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

THRESHOLDS = (0.10, 0.25, 0.50)


@dataclass(frozen=True)
class TransitionRules:
    hold_s: float = 5.0
    max_delay_s: float = 60.0
    anticipation_s: float = 10.0


def segments(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """Runs of equal labels: (label, start index, end index exclusive)."""
    labels = np.asarray(labels)
    if not len(labels):
        return []
    cuts = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(labels)]])
    return [(int(labels[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def edit_score(pred: np.ndarray, truth: np.ndarray) -> float:
    p = [s[0] for s in segments(pred)]
    t = [s[0] for s in segments(truth)]
    if not p and not t:
        return 1.0
    d = np.zeros((len(p) + 1, len(t) + 1), np.int64)
    d[:, 0] = np.arange(len(p) + 1)
    d[0, :] = np.arange(len(t) + 1)
    for i in range(1, len(p) + 1):
        for j in range(1, len(t) + 1):
            d[i, j] = min(d[i - 1, j] + 1, d[i, j - 1] + 1, d[i - 1, j - 1] + (p[i - 1] != t[j - 1]))
    return float(1.0 - d[-1, -1] / max(len(p), len(t)))


def segmental_f1(pred: np.ndarray, truth: np.ndarray, threshold: float) -> float:
    ps, ts = segments(pred), segments(truth)
    used = [False] * len(ts)
    hits = 0
    for label, s, e in ps:
        best, best_j = 0.0, -1
        for j, (tl, ts_, te) in enumerate(ts):
            if tl != label:
                continue
            inter = min(e, te) - max(s, ts_)
            iou = inter / (max(e, te) - min(s, ts_)) if inter > 0 else 0.0
            if iou > best:
                best, best_j = iou, j
        if best >= threshold and not used[best_j]:
            used[best_j] = True
            hits += 1
    precision = hits / len(ps) if ps else 0.0
    recall = hits / len(ts) if ts else 0.0
    return float(2 * precision * recall / (precision + recall)) if hits else 0.0


def macro_f1(pred: np.ndarray, truth: np.ndarray) -> float:
    f1s = []
    for c in np.union1d(np.unique(pred), np.unique(truth)):
        tp = float(np.sum((pred == c) & (truth == c)))
        fp, fn = float(np.sum((pred == c) & (truth != c))), float(np.sum((pred != c) & (truth == c)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return float(np.mean(f1s)) if f1s else 0.0


def _switches(labels: np.ndarray, times: np.ndarray) -> list[tuple[float, int]]:
    """(time, new class) of every change of label."""
    idx = np.flatnonzero(labels[1:] != labels[:-1]) + 1
    return [(float(times[i]), int(labels[i])) for i in idx]


def transition_delays(pred: np.ndarray, truth: np.ndarray, times: np.ndarray,
                      rules: TransitionRules = TransitionRules()) -> list[float | None]:
    """Per true transition, the delay to follow it (s), None for a miss."""
    out: list[float | None] = []
    ts = segments(truth)
    for k in range(1, len(ts)):
        label, s, e = ts[k]
        t0 = times[s]
        found = None
        for i in range(s, e):
            if times[i] - t0 > rules.max_delay_s:
                break
            if pred[i] != label:
                continue
            j = i
            while j < e and pred[j] == label and times[j] - times[i] < rules.hold_s:
                j += 1
            if j == e or times[j] - times[i] >= rules.hold_s:
                found = float(times[i] - t0)
                break
        out.append(found)
    return out


def false_transitions(pred: np.ndarray, truth: np.ndarray, times: np.ndarray,
                      rules: TransitionRules = TransitionRules()) -> tuple[int, int]:
    """(predicted switches, of those not explained by a true transition)."""
    true = _switches(truth, times)
    used = [False] * len(true)
    false = 0
    predicted = _switches(pred, times)
    for s, c in predicted:
        for k, (t, tc) in enumerate(true):
            if not used[k] and tc == c and t - rules.anticipation_s <= s <= t + rules.max_delay_s:
                used[k] = True
                break
        else:
            false += 1
    return len(predicted), false


def video_scores(pred, truth, times, rules: TransitionRules = TransitionRules()) -> dict:
    """All scores of one video (frames with truth < 0 left out)."""
    pred, truth, times = np.asarray(pred), np.asarray(truth), np.asarray(times, np.float64)
    keep = truth >= 0
    pred, truth, times = pred[keep], truth[keep], times[keep]
    if not len(truth):
        raise ValueError("no labelled frames")
    step = float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    minutes = (times[-1] - times[0] + step) / 60.0
    switches, false = false_transitions(pred, truth, times, rules)
    delays = transition_delays(pred, truth, times, rules)
    followed = [d for d in delays if d is not None]
    out = {
        "frames": int(len(truth)), "minutes": float(minutes),
        "accuracy": float(np.mean(pred == truth)), "macro_f1": macro_f1(pred, truth),
        "edit": edit_score(pred, truth),
        **{f"f1@{round(100 * t)}": segmental_f1(pred, truth, t) for t in THRESHOLDS},
        "switches": switches, "true_transitions": len(delays), "false_transitions": false,
        "false_transitions_per_min": float(false / minutes) if minutes > 0 else 0.0,
        "delays_s": delays, "misses": len(delays) - len(followed),
    }
    out["delay_median_s"] = float(np.median(followed)) if followed else None
    out["delay_p90_s"] = float(np.percentile(followed, 90)) if followed else None
    return out


MEAN_KEYS = ("accuracy", "macro_f1", "edit", "f1@10", "f1@25", "f1@50", "false_transitions_per_min")


def summarize(per_video: list[dict]) -> dict:
    """Mean and std over videos of the scores; delays pooled over all videos' transitions."""
    if not per_video:
        return {"videos": 0}
    out: dict = {"videos": len(per_video)}
    for key in MEAN_KEYS:
        v = np.array([p[key] for p in per_video], np.float64)
        out[key] = float(v.mean())
        out[key + "_std"] = float(v.std())
    delays = [d for p in per_video for d in p["delays_s"]]
    followed = [d for d in delays if d is not None]
    out["true_transitions"] = len(delays)
    out["misses"] = len(delays) - len(followed)
    out["delay_median_s"] = float(np.median(followed)) if followed else None
    out["delay_p90_s"] = float(np.percentile(followed, 90)) if followed else None
    return out

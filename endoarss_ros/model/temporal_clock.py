"""The temporal model's clock, the one definition: frames -> ticks, used offline by training and evaluation and
online by the node's session (``inference.temporal_activity.TemporalSession``). Pure numpy.

Tick ``j`` covers stamps ``[t0 + j * tick_s, t0 + (j + 1) * tick_s)`` from the first frame's stamp ``t0``
(``header.stamp``, not the arrival order or the camera's rate). A tick's feature vector is the mean of its *usable*
frames' features (status usable); a tick without a usable frame, including one no frame fell into, is *missing*:
the model gets zeros and the missing flag, as it was trained, instead of a blurred or smoky frame's features
averaged in.

``DEFAULT_SWITCH_EVIDENCE`` is the session decision's default threshold, which training also validates with
before it chooses the model's own.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_SWITCH_EVIDENCE = 2.0  # summed log-odds (nats) a challenger needs over the current label


def tick_of(stamp_s: float, origin_s: float, tick_s: float) -> int:
    """The tick a stamp falls in (the 1e-9 keeps a stamp exactly on a boundary in the later tick)."""
    return int(math.floor((stamp_s - origin_s) / tick_s + 1e-9))


def ticks_from_frames(stamps_s, features, usable, tick_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames of one video (stamps in seconds, non-decreasing; features (N, D); usable (N,) bool) ->
    ``tick_features`` float32 (T, D), ``missing`` bool (T,), ``tick_index`` int (N,) of each frame."""
    stamps = np.asarray(stamps_s, np.float64).reshape(-1)
    feats = np.asarray(features, np.float32)
    ok = np.asarray(usable, bool).reshape(-1)
    if feats.ndim != 2 or len(feats) != len(stamps) or len(ok) != len(stamps):
        raise ValueError(f"ticks_from_frames: {len(stamps)} stamps, features {feats.shape}, {len(ok)} usable flags")
    if len(stamps) == 0:
        return np.zeros((0, feats.shape[1]), np.float32), np.zeros(0, bool), np.zeros(0, np.int64)
    if np.any(np.diff(stamps) < 0):
        at = int(np.argmax(np.diff(stamps) < 0)) + 1
        raise ValueError(f"ticks_from_frames: stamps go backwards at frame {at} ({stamps[at - 1]} -> {stamps[at]} s)")
    index = np.floor((stamps - stamps[0]) / tick_s + 1e-9).astype(np.int64)
    T = int(index[-1]) + 1
    sums = np.zeros((T, feats.shape[1]), np.float64)
    np.add.at(sums, index[ok], feats[ok])
    counts = np.bincount(index[ok], minlength=T)
    missing = counts == 0
    out = np.where(missing[:, None], 0.0, sums / np.maximum(counts, 1)[:, None]).astype(np.float32)
    return out, missing, index


__all__ = ["DEFAULT_SWITCH_EVIDENCE", "tick_of", "ticks_from_frames"]

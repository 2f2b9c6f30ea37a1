"""Between the image callbacks of a stereo pair's cameras and the frame slots: frames paired by stamp.

Each pair's left and right frames go through a ``stereo_pairing.StereoPairer`` (stamp tolerance
``stereo.tolerance_ms``); a pair is parked in the LEFT camera's slot as one ``PendingFrame`` carrying the right
frame as ``partner``, so the worker runs both views in one batch and publishes with the left camera's outputs. A
left frame left without partner (none within the tolerance, or none within ``stereo.max_wait_ms`` of stamp time)
is parked alone: it is processed as a single camera (2D, viewing rays with camera_info). A right frame without
partner is only counted. Frames reach the slot in stamp order: one older than what the slot already got is dropped
(counted), so a pair's temporal session never sees time go back.
"""
from __future__ import annotations

import threading
from dataclasses import replace

from endoarss_ros.inference.stereo_pairing import LEFT, RIGHT, StereoPairer
from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame

MAX_PENDING = 8  # frames per side waiting for a partner


def stamp_ns(header) -> int:
    return int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)


class StereoIntake:
    def __init__(self, pairs: list[tuple[int, int]], tolerance_ms: float, max_wait_ms: float,
                 slots: LatestFrameSlots, stats, log_throttled=None, labels=None):
        """``log_throttled(key, level, text)``: the node's throttled log; ``labels``: camera index -> its name."""
        self._slots = slots
        self._stats = stats
        self._log = log_throttled
        self._labels = labels or {}
        self._tolerance_ms = tolerance_ms
        self._max_wait_ns = int(max_wait_ms * 1e6)
        self._lock = threading.Lock()
        self.pairs = list(pairs)
        self._pairers = {left: StereoPairer(int(tolerance_ms * 1e6), MAX_PENDING) for left, _ in pairs}
        self._side = {cam: (left, side) for left, right in pairs for cam, side in ((left, LEFT), (right, RIGHT))}
        self._parked = {left: -1 for left, _ in pairs}  # newest stamp parked in each left slot
        self.newest = {cam: None for cam in self._side}  # newest stamp received per camera

    def handles(self, camera: int) -> bool:
        return camera in self._side

    def put(self, item: PendingFrame) -> None:
        """A validated frame of one of the pairs' cameras (called from its image callback)."""
        left, side = self._side[item.camera]
        stamp = stamp_ns(item.message.header)
        with self._lock:
            self.newest[item.camera] = stamp
            pairer = self._pairers[left]
            update = pairer.add(side, stamp, item)
            update.extend(pairer.expire(stamp - self._max_wait_ns))
            ready = [(p.left.stamp_ns, replace(p.left.item, partner=p.right.item)) for p in update.pairs]
            for u in update.unpaired:
                self._stats.count(f"stereo.unmatched_{u.side}.{u.reason}")
                if u.side == LEFT:
                    ready.append((u.frame.stamp_ns, u.frame.item))
            _, right = self.pairs_of(left)
            newest = {LEFT: self.newest[left], RIGHT: self.newest[right]}  # for the log below
            to_park = []
            for stamp_left, pending in sorted(ready, key=lambda r: r[0]):
                if stamp_left <= self._parked[left]:
                    self._stats.count("stereo.dropped_older_than_parked")
                    continue
                self._parked[left] = stamp_left
                to_park.append(pending)
        for pending in to_park:
            self._slots.put(pending)
        if update.unpaired and self._log is not None:
            u = update.unpaired[0]
            other = newest[RIGHT if u.side == LEFT else LEFT]
            gap = "?" if other is None else f"{abs(u.frame.stamp_ns - other) / 1e6:.1f}"
            self._log(("stereo_unpaired", left), "warning",
                      f"stereo pair {self._labels.get(left, left)}: a {u.side} frame went unpaired ({u.reason}; "
                      f"the other camera's newest stamp is {gap} ms away, stereo.tolerance_ms "
                      f"{self._tolerance_ms:g}); it is processed alone (left) or dropped (right), and counted")

    def pairs_of(self, left: int) -> tuple[int, int]:
        return next(p for p in self.pairs if p[0] == left)

    def summary(self) -> dict:
        """The pairing counts of all pairs together (matched, unmatched per side and reason, stamp offsets) and the
        latest stamp gap between each pair's cameras (ms; what to compare with the tolerance when nothing pairs)."""
        with self._lock:
            summaries = [p.counts.summary() for p in self._pairers.values()]
            gaps = [(self.newest[left], self.newest[right]) for left, right in self.pairs]
        out = {"matched": sum(s["matched"] for s in summaries),
               "unmatched_left": sum(s["unmatched_left"] for s in summaries),
               "unmatched_right": sum(s["unmatched_right"] for s in summaries)}
        medians = [s["offset_ms_median"] for s in summaries if s["offset_ms_median"] is not None]
        maxima = [s["offset_ms_max"] for s in summaries if s["offset_ms_max"] is not None]
        out["offset_ms_median"] = max(medians) if medians else None
        out["offset_ms_max"] = max(maxima) if maxima else None
        known = [abs(r - l) / 1e6 for l, r in gaps if l is not None and r is not None]
        out["latest_stamp_gap_ms"] = max(known) if known else None
        return out

"""Counts of a stream: statuses and instruments for the replay's summary JSON and the demo's printout (both count
the same way, from results in process or from received messages), and the latency percentiles of the node's
diagnostics, the demo and the benchmarks."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .status import FLAGS


def percentile(values: Iterable[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile (``q`` in [0, 1]) of ``values``; None when there are none."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class StatusTally:
    frames: int = 0
    usable: int = 0
    processed: int = 0
    flags: Counter = field(default_factory=Counter)

    def add(self, usable: bool, flag_names, processed: bool = True) -> None:
        self.frames += 1
        self.usable += bool(usable)
        self.processed += bool(processed)
        self.flags.update(flag_names)

    def summary(self) -> dict:
        return {"frames": self.frames, "processed": self.processed, "usable": self.usable,
                "usable_fraction": round(self.usable / self.frames, 4) if self.frames else None,
                "flags": {name: self.flags.get(name, 0) for name in FLAGS}}


@dataclass
class _Track:
    class_id: int
    frames: int
    first_ns: int
    last_ns: int


class TrackTally:
    """Instrument ids over a stream: how many tracks per class, how long they lasted, instances per frame."""

    def __init__(self, class_names):
        self.class_names = list(class_names)
        self.tracks: dict[int, _Track] = {}
        self.frames = 0
        self.instances = 0
        self.frames_with_instruments = 0

    def add(self, stamp_ns: int, instruments) -> None:
        """One processed frame's instruments, as (id, class_id) pairs."""
        self.frames += 1
        pairs = list(instruments)
        self.instances += len(pairs)
        self.frames_with_instruments += bool(pairs)
        for track_id, class_id in pairs:
            t = self.tracks.get(track_id)
            if t is None:
                self.tracks[track_id] = _Track(int(class_id), 1, stamp_ns, stamp_ns)
            else:
                t.frames += 1
                t.last_ns = stamp_ns

    def summary(self) -> dict:
        per_class = {}
        for c in sorted({t.class_id for t in self.tracks.values()}):
            tracks = [t for t in self.tracks.values() if t.class_id == c]
            durations = [(t.last_ns - t.first_ns) / 1e9 for t in tracks]
            per_class[self.class_names[c] if c < len(self.class_names) else str(c)] = {
                "tracks": len(tracks),
                "frames_seen": sum(t.frames for t in tracks),
                "median_track_frames": float(np.median([t.frames for t in tracks])),
                "longest_track_s": round(max(durations), 3),
            }
        return {"frames": self.frames, "tracks": len(self.tracks),
                "instances_per_frame": round(self.instances / self.frames, 3) if self.frames else None,
                "frames_with_instruments": self.frames_with_instruments, "per_class": per_class}

"""Pairing by header stamp, without ROS: left with right frames of a stereo camera, images with their camera_info.

``StereoPairer`` (``message_filters`` is not a wheel here) pairs a left and a right frame when their stamps are
equal, or within ``tolerance_ns`` and each is the other's nearest frame. It never pairs wrongly:

- every frame is used at most once, and pairs come out in stamp order: once a pair is made, any frame of either side
  not newer than that pair's frame of its side is unpairable (counted ``stale``);
- a frame is paired only with its nearest counterpart, so a frame missing on one side leaves its partner unpaired
  instead of shifting the pairing by one frame (``never across a gap``); for the same reason a pair is refused when
  its stamp offset is half a frame period or more (the period each side shows, once it has shown one);
- a decision is final only when no later frame could change it: per topic, stamps arrive in order (a frame older
  than the newest of its own side is counted ``out_of_order`` and dropped), so a frame is decided once the other
  side has reached its stamp, or is past it by more than the tolerance. Once a side's period is known, a pair whose
  offset is under half of it is made at once (that side's next frame, a period later, is farther), so pairing adds
  no latency to a steady stream; at the end of a stream ``flush`` makes the decisions still waiting.

Buffers are bounded (``max_pending`` per side; the oldest frame is dropped, counted ``overflow``); ``expire`` drops
frames whose partner has not come in time (``timeout``), ``flush`` ends a stream (``end``). Every frame comes back
once, in a pair or as ``Unpaired`` with its reason, so a caller can still use it alone (the node publishes an
unpaired left frame in 2D) and nothing is lost silently.

``CameraInfoCache`` matches an image with the camera_info of the same stamp (a driver publishes both with the
image's stamp). When the matching one has not arrived (or never does), the most recently received camera_info is
used as a fallback if it came no longer than ``fallback_max_age_ns`` before the lookup; each lookup is counted as
``exact``, ``latest`` or ``missing``.
"""
from __future__ import annotations

import bisect
import statistics
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

LEFT, RIGHT = "left", "right"
SIDES = (LEFT, RIGHT)
UNPAIRED_REASONS = ("no_partner", "stale", "out_of_order", "duplicate", "overflow", "timeout", "end")
_PERIOD_SAMPLES = 16
_OFFSET_SAMPLES = 256


@dataclass(frozen=True)
class Stamped:
    stamp_ns: int
    item: Any


@dataclass(frozen=True)
class StereoPair:
    left: Stamped
    right: Stamped

    @property
    def offset_ns(self) -> int:
        """Right stamp minus left stamp."""
        return self.right.stamp_ns - self.left.stamp_ns


@dataclass(frozen=True)
class Unpaired:
    side: str
    frame: Stamped
    reason: str  # one of UNPAIRED_REASONS


@dataclass
class PairingUpdate:
    pairs: list[StereoPair] = field(default_factory=list)
    unpaired: list[Unpaired] = field(default_factory=list)

    def extend(self, other: PairingUpdate) -> None:
        self.pairs.extend(other.pairs)
        self.unpaired.extend(other.unpaired)


@dataclass
class PairingCounts:
    matched: int = 0
    unmatched: dict = field(default_factory=lambda: {side: Counter() for side in SIDES})
    offsets_ns: deque = field(default_factory=lambda: deque(maxlen=_OFFSET_SAMPLES))
    max_abs_offset_ns: int = 0

    def summary(self) -> dict:
        """JSON-ready counts: matched, unmatched per side (total and by reason), stamp offsets (ms, recent pairs)."""
        offsets = [abs(o) / 1e6 for o in self.offsets_ns]
        return {
            "matched": self.matched,
            "unmatched_left": sum(self.unmatched[LEFT].values()),
            "unmatched_right": sum(self.unmatched[RIGHT].values()),
            "unmatched_by_reason": {side: {r: self.unmatched[side].get(r, 0) for r in UNPAIRED_REASONS}
                                    for side in SIDES},
            "offset_ms_median": round(statistics.median(offsets), 3) if offsets else None,
            "offset_ms_max": round(self.max_abs_offset_ns / 1e6, 3) if self.matched else None,
        }


class _Side:
    """One side's buffered frames (sorted by stamp), newest stamp seen, newest paired stamp and recent period."""

    def __init__(self):
        self.frames: list[Stamped] = []
        self.newest_seen: int | None = None
        self.newest_paired: int | None = None
        self.deltas: deque = deque(maxlen=_PERIOD_SAMPLES)

    def period_ns(self) -> float | None:
        return statistics.median(self.deltas) if len(self.deltas) >= 2 else None

    def nearest(self, stamp_ns: int) -> Stamped | None:
        """The buffered frame nearest to ``stamp_ns`` (the earlier one on a tie)."""
        if not self.frames:
            return None
        return min(self.frames, key=lambda f: (abs(f.stamp_ns - stamp_ns), f.stamp_ns))


class StereoPairer:
    def __init__(self, tolerance_ns: int = 0, max_pending: int = 8):
        if tolerance_ns < 0:
            raise ValueError(f"tolerance_ns must be >= 0, got {tolerance_ns}")
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self.tolerance_ns = int(tolerance_ns)
        self.max_pending = int(max_pending)
        self.counts = PairingCounts()
        self._sides = {LEFT: _Side(), RIGHT: _Side()}

    def pending(self, side: str) -> int:
        return len(self._sides[side].frames)

    def add(self, side: str, stamp_ns: int, item: Any) -> PairingUpdate:
        """Offer one frame of ``side`` ("left" or "right"); returns the pairs and unpaired frames it decided."""
        if side not in self._sides:
            raise ValueError(f"side must be 'left' or 'right', got {side!r}")
        s = self._sides[side]
        frame = Stamped(int(stamp_ns), item)
        update = PairingUpdate()
        if s.newest_paired is not None and frame.stamp_ns <= s.newest_paired:
            return self._drop(side, frame, "stale", update)
        if s.newest_seen is not None and frame.stamp_ns < s.newest_seen:
            return self._drop(side, frame, "out_of_order", update)
        if s.newest_seen is not None and frame.stamp_ns == s.newest_seen:
            return self._drop(side, frame, "duplicate", update)
        if s.newest_seen is not None:
            s.deltas.append(frame.stamp_ns - s.newest_seen)
        s.newest_seen = frame.stamp_ns
        s.frames.append(frame)
        self._decide(update)
        while len(s.frames) > self.max_pending:
            self._drop(side, s.frames.pop(0), "overflow", update)
            self._decide(update)
        return update

    def expire(self, older_than_ns: int) -> PairingUpdate:
        """Give up on buffered frames with stamps before ``older_than_ns`` (their partner did not come in time)."""
        update = PairingUpdate()
        for side in SIDES:
            s = self._sides[side]
            while s.frames and s.frames[0].stamp_ns < older_than_ns:
                self._drop(side, s.frames.pop(0), "timeout", update)
        self._decide(update)
        return update

    def flush(self) -> PairingUpdate:
        """End of the stream: no frame comes later, so the waiting decisions are made; the rest is unpaired."""
        update = PairingUpdate()
        while self._decide_oldest(update, final=True):
            pass
        for side in SIDES:
            s = self._sides[side]
            while s.frames:
                self._drop(side, s.frames.pop(0), "end", update)
        return update

    # --- decisions -------------------------------------------------------------------------------------------------
    def _decide(self, update: PairingUpdate) -> None:
        """Decide the oldest buffered frame(s) for as long as a decision is final."""
        while self._decide_oldest(update):
            pass

    def _decide_oldest(self, update: PairingUpdate, final: bool = False) -> bool:
        heads = [(self._sides[side].frames[0].stamp_ns, side) for side in SIDES if self._sides[side].frames]
        if not heads:
            return False
        _, side = min(heads)  # the left one on equal stamps; the other side's head is then its exact partner
        other = RIGHT if side == LEFT else LEFT
        s, o = self._sides[side], self._sides[other]
        x = s.frames[0]
        if not o.frames:
            # Later frames of the other side come after its newest one: if even that one is out of reach, x is done.
            if o.newest_seen is not None and o.newest_seen - x.stamp_ns > self.tolerance_ns:
                self._drop(side, s.frames.pop(0), "no_partner", update)
                return True
            if final:
                self._drop(side, s.frames.pop(0), "end", update)
                return True
            return False
        y = o.frames[0]  # every buffered frame of the other side is at or after x: its oldest is x's nearest
        if not self._acceptable(y.stamp_ns - x.stamp_ns):
            self._drop(side, s.frames.pop(0), "no_partner", update)
            return True
        if s.nearest(y.stamp_ns) is not x:
            self._drop(side, s.frames.pop(0), "no_partner", update)  # a later frame of x's side is nearer to y
            return True
        if not (final or y.stamp_ns == x.stamp_ns or s.newest_seen >= y.stamp_ns or self._next_is_farther(s, x, y)):
            return False  # a later frame of x's side could still land nearer to y
        s.frames.pop(0)
        o.frames.pop(0)
        pair = StereoPair(x, y) if side == LEFT else StereoPair(y, x)
        self._record(pair, update)
        return True

    @staticmethod
    def _next_is_farther(s: _Side, x: Stamped, y: Stamped) -> bool:
        """Whether x's side's next frame, about one period after x, will be farther from y than x is: then the pair
        is made without waiting for that frame (no added latency once the period is known)."""
        period = s.period_ns()
        return period is not None and 2 * (y.stamp_ns - x.stamp_ns) < period

    def _acceptable(self, offset_ns: int) -> bool:
        offset = abs(offset_ns)
        if offset > self.tolerance_ns:
            return False
        periods = [p for p in (self._sides[LEFT].period_ns(), self._sides[RIGHT].period_ns()) if p]
        return offset == 0 or not periods or 2 * offset < min(periods)

    def _record(self, pair: StereoPair, update: PairingUpdate) -> None:
        self._sides[LEFT].newest_paired = pair.left.stamp_ns
        self._sides[RIGHT].newest_paired = pair.right.stamp_ns
        self.counts.matched += 1
        self.counts.offsets_ns.append(pair.offset_ns)
        self.counts.max_abs_offset_ns = max(self.counts.max_abs_offset_ns, abs(pair.offset_ns))
        update.pairs.append(pair)
        # Frames not newer than the pair's own frame of their side can no longer be paired.
        for side, stamp in ((LEFT, pair.left.stamp_ns), (RIGHT, pair.right.stamp_ns)):
            s = self._sides[side]
            while s.frames and s.frames[0].stamp_ns <= stamp:
                self._drop(side, s.frames.pop(0), "stale", update)

    def _drop(self, side: str, frame: Stamped, reason: str, update: PairingUpdate) -> PairingUpdate:
        self.counts.unmatched[side][reason] += 1
        update.unpaired.append(Unpaired(side, frame, reason))
        return update


# --- images with their camera_info ------------------------------------------------------------------------------
@dataclass(frozen=True)
class InfoMatch:
    info: Any  # the camera_info (whatever the caller stored), or None
    kind: str  # "exact" (same stamp), "latest" (the fallback), "missing"
    stamp_ns: int | None  # the camera_info's own stamp


class CameraInfoCache:
    """The recent camera_info messages of one camera, by stamp (bounded), for ``lookup`` by an image's stamp."""

    def __init__(self, capacity: int = 16, fallback_max_age_ns: int | None = 1_000_000_000):
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.fallback_max_age_ns = fallback_max_age_ns  # None: no fallback, exact stamps only
        self.counts: Counter = Counter()
        self._stamps: list[int] = []
        self._infos: dict[int, Any] = {}
        self._latest: tuple[int, Any, int] | None = None  # (stamp, info, received_ns)

    def add(self, stamp_ns: int, info: Any, received_ns: int) -> None:
        stamp_ns = int(stamp_ns)
        if stamp_ns not in self._infos:
            bisect.insort(self._stamps, stamp_ns)
        self._infos[stamp_ns] = info
        while len(self._stamps) > self.capacity:
            del self._infos[self._stamps.pop(0)]
        self._latest = (stamp_ns, info, int(received_ns))
        self.counts["received"] += 1

    @property
    def received(self) -> int:
        return self.counts["received"]

    def lookup(self, stamp_ns: int, now_ns: int) -> InfoMatch:
        """The camera_info for an image stamped ``stamp_ns``, looked up at (monotonic) time ``now_ns``."""
        info = self._infos.get(int(stamp_ns))
        if info is not None:
            self.counts["exact"] += 1
            return InfoMatch(info, "exact", int(stamp_ns))
        if (self._latest is not None and self.fallback_max_age_ns is not None
                and now_ns - self._latest[2] <= self.fallback_max_age_ns):
            self.counts["latest"] += 1
            return InfoMatch(self._latest[1], "latest", self._latest[0])
        self.counts["missing"] += 1
        return InfoMatch(None, "missing", None)

    def summary(self) -> dict:
        return {key: self.counts.get(key, 0) for key in ("received", "exact", "latest", "missing")}

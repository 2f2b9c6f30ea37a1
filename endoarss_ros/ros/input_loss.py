"""Frames lost before the subscription callback, counted from the publisher's sequence numbers.

rclpy passes a ``MessageInfo`` to a subscription callback that takes two arguments; with Fast DDS (Jazzy) it
carries the publisher's ``publication_sequence_number`` (1, 2, 3, ... per publisher). A jump from n to n + k
means k - 1 frames of that publisher never reached the callback: lost in transport, or replaced in the
subscription's queue (``input_qos.depth``) while the node was busy. Fast DDS's own "message lost" event sees
only the first kind (and none at all over shared memory), so the sequence numbers are what is counted.

What cannot be counted: the info names no publisher, so while more than one publisher is matched on one input
topic their numbers interleave and counting pauses (those frames are counted as ``not countable``); frames
sent before the subscription matched; and a publisher that restarts begins again at 1 (taken as a new start).
"""
from __future__ import annotations


class SequenceGaps:
    """Per subscription: how many frames were skipped between consecutive messages."""

    def __init__(self) -> None:
        self._last: int | None = None

    def lost(self, sequence: int | None, publishers: int) -> int | None:
        """Frames skipped since the previous message (0 or more), or None when that cannot be known (no
        sequence numbers from the middleware, or several publishers matched)."""
        if sequence is None or publishers > 1:
            self._last = None
            return None
        last, self._last = self._last, sequence
        if last is None or sequence <= last:  # the first message, or a restarted publisher
            return 0
        return sequence - last - 1

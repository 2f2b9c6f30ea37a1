"""Newest-frame-per-camera slots and the single worker thread that runs the pipeline on them.

Subscription callbacks only ``put`` a frame (O(1), no inference), replacing any frame of the same camera that the
worker has not taken yet; the replaced one is counted as dropped. The worker takes at most one frame per camera
(the newest), so nothing queues up: no unbounded queue anywhere, and results are never stale by more than one
processing time.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class PendingFrame:
    camera: int
    message: Any  # the ROS message (kept for its header; its buffer backs the pixels)
    frame: Any  # RawFrame, or None when decoding is left to the worker (compressed input)
    received: float  # time.monotonic() at receipt, for receipt -> publish latency
    partner: PendingFrame | None = None  # the right frame of a stereo pair (this one is the left)


class LatestFrameSlots:
    def __init__(self, cameras: int, on_replaced: Callable[[PendingFrame], None] | None = None,
                 unused: tuple[int, ...] = ()):
        """``unused``: cameras whose slot never fills (the right camera of a stereo pair travels with its left
        frame); the batch window does not wait for them."""
        self._slots: list[PendingFrame | None] = [None] * cameras
        self._awaited = [i for i in range(cameras) if i not in unused]
        self._cond = threading.Condition()
        self._on_replaced = on_replaced
        self._closed = False

    def put(self, item: PendingFrame) -> None:
        with self._cond:
            replaced = self._slots[item.camera]
            self._slots[item.camera] = item
            self._cond.notify()
        if replaced is not None and self._on_replaced is not None:
            self._on_replaced(replaced)

    def take(self, timeout: float, batch_window: float = 0.0) -> list[PendingFrame]:
        """Wait up to ``timeout`` for a frame; then up to ``batch_window`` more for the other cameras' frames.
        Returns the newest frame of every camera that has one (possibly empty)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._closed and not any(self._slots):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                self._cond.wait(remaining)
            if batch_window > 0 and len(self._awaited) > 1:
                window_end = time.monotonic() + batch_window
                while not self._closed and not all(self._slots[i] for i in self._awaited):
                    remaining = window_end - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
            taken = [s for s in self._slots if s is not None]
            self._slots = [None] * len(self._slots)
            return taken

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


class Worker:
    """One thread: take frames from the slots, hand them to ``process``; an exception there is reported to
    ``on_error`` and the loop goes on with the next frames."""

    def __init__(self, slots: LatestFrameSlots, process: Callable[[list[PendingFrame]], None],
                 on_error: Callable[[BaseException, list[PendingFrame]], None],
                 batch_window: Callable[[], float] = lambda: 0.0, name: str = "endoarss-inference"):
        self._slots = slots
        self._process = process
        self._on_error = on_error
        self._batch_window = batch_window
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after the batch in progress; True when the thread has ended."""
        self._stop.set()
        self._slots.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.is_set():
            batch = self._slots.take(timeout=0.2, batch_window=self._batch_window())
            if not batch or self._stop.is_set():
                continue
            try:
                self._process(batch)
            except BaseException as e:  # noqa: BLE001 - the worker must outlive any one batch
                self._on_error(e, batch)

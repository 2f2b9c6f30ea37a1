"""Temporal smoothing of the activity probabilities: EMA plus hysteresis on the winning class."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np


@dataclass(frozen=True)
class Smoothing:
    """Smoothing settings; the defaults here are the ones the node, the replay and their CLIs use."""

    enabled: bool = True
    alpha: float = 0.3
    hysteresis: float = 0.1


DEFAULT_SMOOTHING = Smoothing()


class ActivityEstimate(NamedTuple):
    probabilities: np.ndarray  # float32 (K,), smoothed
    class_id: int  # the reported activity (hysteresis applied)


class ActivitySmoother:
    """``smoothed = alpha * probs + (1 - alpha) * smoothed``; the reported class changes only when a
    challenger's smoothed probability beats the current class's by more than ``hysteresis``.

    ``enabled=False`` passes the raw probabilities through and reports their argmax.
    """

    def __init__(self, num_classes: int, *, alpha: float = DEFAULT_SMOOTHING.alpha,
                 hysteresis: float = DEFAULT_SMOOTHING.hysteresis, enabled: bool = DEFAULT_SMOOTHING.enabled):
        if num_classes < 1:
            raise ValueError("num_classes must be >= 1")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        if hysteresis < 0:
            raise ValueError(f"hysteresis must be >= 0, got {hysteresis}")
        self.num_classes = int(num_classes)
        self.alpha = float(alpha)
        self.hysteresis = float(hysteresis)
        self.enabled = bool(enabled)
        self.reset()

    @classmethod
    def from_settings(cls, num_classes: int, settings: Smoothing) -> ActivitySmoother:
        return cls(num_classes, alpha=settings.alpha, hysteresis=settings.hysteresis, enabled=settings.enabled)

    def reset(self) -> None:
        self._state: np.ndarray | None = None
        self._current: int | None = None

    def update(self, probs) -> ActivityEstimate:
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
        if p.shape[0] != self.num_classes:
            raise ValueError(f"expected {self.num_classes} probabilities, got {p.shape[0]}")
        if not self.enabled:
            return ActivityEstimate(p.copy(), int(np.argmax(p)))
        if self._state is None:
            self._state = p.copy()
        else:
            self._state = (self.alpha * p + (1.0 - self.alpha) * self._state).astype(np.float32)
        s = self._state
        best = int(np.argmax(s))
        if self._current is None:
            self._current = best
        elif best != self._current and s[best] - s[self._current] > self.hysteresis:
            self._current = best
        return ActivityEstimate(s.copy(), self._current)

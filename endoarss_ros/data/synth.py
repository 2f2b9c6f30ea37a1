"""Procedural endoscopic submucosal dissection (ESD) frames with pixel masks and activity labels: single frames
(a random state of a random scene) and temporally coherent sequences (one scene animated per activity cycle).

Scenes and their states are in ``scene``, drawing in ``render``.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .classes import (
    MARKING,
)
from .render import InstrumentTruth, instrument_truth, render, scene_light
from .scene import ACTIVITIES, FrameState, Rng, Scene, as_rng, camera_at, frame_size, make_scene, random_state


def generate_frame(rng_or_seed: Rng | int | None, activity: int, size: int | tuple[int, int] = (224, 224), *,
                   progress: float | None = None, smoke: bool | None = None, blood: bool | None = None,
                   smoke_prob: float = 0.3, blood_prob: float = 0.3, sensor_noise: float = 1.5,
                   with_truth: bool = False) -> tuple:
    """One random frame of ``activity`` (0 Marking, 1 Circumferential Incision, 2 Submucosal Dissection).

    Returns (rgb uint8 HxWx3, mask uint8 HxW with MTLESD class ids 0..6), and with ``with_truth`` a third
    element, the instruments' ``InstrumentTruth`` list. Same seed -> same bytes.
    """
    if activity not in ACTIVITIES:
        raise ValueError(f"activity must be one of {ACTIVITIES}, got {activity}")
    rng = as_rng(rng_or_seed)
    scene = make_scene(rng, size, smoke=smoke, blood=blood, smoke_prob=smoke_prob, blood_prob=blood_prob)
    state = random_state(rng, scene, activity, progress)
    rgb, mask = render(scene, state, size, rng, sensor_noise=sensor_noise)
    return (rgb, mask, instrument_truth(scene, state, size)) if with_truth else (rgb, mask)


class SequenceFrame(NamedTuple):
    t: float  # seconds since the start of the sequence
    rgb: np.ndarray
    mask: np.ndarray
    activity: int
    instruments: tuple[InstrumentTruth, ...] = ()  # where each instrument's tip and entry point are


@dataclass(frozen=True)
class Segment:
    activity: int
    start: float
    end: float
    cycle: int  # index of the Marking -> Incision -> Dissection cycle (one lesion each)


def activity_timeline(rng_or_seed: Rng | int | None, duration: float, *,
                      segment_seconds: tuple[float, float] = (2.0, 6.0), start_activity: int = MARKING
                      ) -> list[Segment]:
    """Activity segments covering ``duration`` s, in surgical order, cycling (a new lesion per cycle)."""
    rng = as_rng(rng_or_seed)
    segs: list[Segment] = []
    t, a, cycle = 0.0, start_activity, 0
    while t < duration or not segs:
        d = rng.uniform(*segment_seconds)
        segs.append(Segment(a, t, t + d, cycle))
        t += d
        a = (a + 1) % len(ACTIVITIES)
        cycle += a == MARKING
    return segs


def generate_sequence(seed: int, num_frames: int, fps: float = 30.0,
                      size: int | tuple[int, int] = (224, 224), *,
                      segment_seconds: tuple[float, float] = (2.0, 6.0), start_activity: int = MARKING,
                      smoke: bool | None = None, blood: bool | None = None, sensor_noise: float = 1.5
                      ) -> Iterator[SequenceFrame]:
    """Temporally coherent frames: one scene per activity cycle, drifting camera, moving instruments.

    Marks persist into the incision; a new cycle (after dissection) moves to a new lesion.
    """
    if fps <= 0:
        raise ValueError("fps must be positive")
    h, w = frame_size(size)
    rng = np.random.default_rng(seed)
    segments = activity_timeline(rng, num_frames / fps, segment_seconds=segment_seconds,
                                 start_activity=start_activity)
    scene_seeds = rng.integers(0, 2**63, len(segments) + 1)
    noise_rng = np.random.default_rng([seed, 1])
    cache: dict[int, tuple[Scene, tuple[np.ndarray, np.ndarray]]] = {}
    si = 0
    for i in range(num_frames):
        t = i / fps
        while si + 1 < len(segments) and t >= segments[si].end:
            si += 1
        seg = segments[si]
        if seg.cycle not in cache:
            cache.clear()
            scene = make_scene(int(scene_seeds[seg.cycle]), (h, w), smoke=smoke, blood=blood)
            cache[seg.cycle] = (scene, scene_light(scene, h, w))
        scene, light = cache[seg.cycle]
        progress = min(1.0, (t - seg.start) / (seg.end - seg.start))
        state = FrameState(seg.activity, progress, camera_at(scene, t), t)
        rgb, mask = render(scene, state, (h, w), noise_rng, sensor_noise=sensor_noise, light=light)
        yield SequenceFrame(t, rgb, mask, seg.activity, tuple(instrument_truth(scene, state, (h, w))))


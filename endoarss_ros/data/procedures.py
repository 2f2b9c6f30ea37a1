"""Synthetic whole ESD procedures: minutes of one continuous scene, in the real order (marking -> circumferential
incision -> submucosal dissection) with returns to incision during dissection, and ambiguous intervals inside
activities (instruments withdrawn, lens cleaning, smoke, bleeding) whose ground truth is the ongoing activity.

Seeded and parameterised (``ProcedureSettings``: length, fps, size, activity shares, recurrences, ambiguity mix),
so held-out sets can be drawn differently from training sets. Scenes and drawing come from ``scene`` / ``render``;
degradations from ``corruptions``. Written in the video + phase layout by ``write_procedure_videos`` (bags:
``bag.synth_bag.write_procedure_bag``).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .classes import CIRCUMFERENTIAL_INCISION, MARKING, MTLESD, SUBMUCOSAL_DISSECTION
from .corruptions import blood, smoke
from .phase_layout import write_phase_file, write_video
from .render import render, scene_light
from .scene import FrameState, camera_at, make_scene

INSTRUMENTS_OUT, LENS_CLEANING, SMOKE, BLEEDING = "instruments_out", "lens_cleaning", "smoke", "bleeding"
AMBIGUITY_KINDS = (INSTRUMENTS_OUT, LENS_CLEANING, SMOKE, BLEEDING)
DEGRADING_KINDS = (LENS_CLEANING, SMOKE, BLEEDING)  # the image is degraded (withdrawn instruments leave it clean)
INCISION_DONE_BEFORE_RETURNS = 0.8  # incision progress at the first switch to dissection when it recurs later


@dataclass(frozen=True)
class ProcedureSettings:
    minutes: float = 3.0
    fps: float = 2.0
    size: tuple[int, int] = (180, 224)  # (H, W)
    shares: tuple[float, float, float] = (0.15, 0.25, 0.60)  # of the time: marking, incision, dissection
    share_jitter: float = 0.3  # each share x exp(U(-j, j)), then normalised
    returns: float = 1.0  # expected returns to incision during dissection (Poisson), at least min_returns
    min_returns: int = 1
    return_seconds: tuple[float, float] = (10.0, 30.0)
    ambiguity_rate: float = 0.15  # fraction of the time inside ambiguous intervals
    ambiguity_seconds: tuple[float, float] = (4.0, 20.0)
    ambiguity_kinds: tuple[str, ...] = AMBIGUITY_KINDS
    sensor_noise: float = 1.5

    def __post_init__(self) -> None:
        if self.minutes <= 0 or self.fps <= 0:
            raise ValueError("minutes and fps must be positive")
        if not 0 <= self.ambiguity_rate < 0.9:
            raise ValueError(f"ambiguity_rate must be in [0, 0.9), got {self.ambiguity_rate}")
        unknown = set(self.ambiguity_kinds) - set(AMBIGUITY_KINDS)
        if unknown:
            raise ValueError(f"unknown ambiguity kinds {sorted(unknown)}; known: {', '.join(AMBIGUITY_KINDS)}")


class PhaseSegment(NamedTuple):
    activity: int
    start: float
    end: float
    progress: tuple[float, float]  # the activity's progress at start and end (marks placed, cut length, lift)


class Ambiguity(NamedTuple):
    kind: str
    start: float
    end: float
    seed: int


class ProcedureFrame(NamedTuple):
    index: int
    t: float
    rgb: np.ndarray
    mask: np.ndarray
    activity: int
    ambiguity: str | None


def _shares(rng: np.random.Generator, s: ProcedureSettings) -> np.ndarray:
    v = np.asarray(s.shares, np.float64) * np.exp(rng.uniform(-s.share_jitter, s.share_jitter, 3))
    return v / v.sum()


def procedure_timeline(rng: np.random.Generator, s: ProcedureSettings) -> list[PhaseSegment]:
    """Marking, incision, then dissection interrupted by ``returns`` short returns to incision."""
    total = s.minutes * 60.0
    mark, inc, dis = _shares(rng, s) * total
    returns = max(s.min_returns, int(rng.poisson(s.returns)))
    lengths = rng.uniform(*s.return_seconds, returns) if returns else np.zeros(0)
    lengths = lengths * min(1.0, 0.4 * dis / max(lengths.sum(), 1e-9))  # returns take at most 40 % of dissection
    pieces = rng.dirichlet(np.full(returns + 1, 2.0)) * (dis - lengths.sum())  # dissection between returns
    inc_done = INCISION_DONE_BEFORE_RETURNS if returns else 1.0
    segs = [PhaseSegment(MARKING, 0.0, mark, (0.0, 1.0)),
            PhaseSegment(CIRCUMFERENTIAL_INCISION, mark, mark + inc, (0.0, inc_done))]
    t, lifted = mark + inc, 0.0
    ret_progress = np.linspace(inc_done, 1.0, returns + 1)
    for k, piece in enumerate(pieces):
        dis_to = lifted + piece / (dis - lengths.sum())
        segs.append(PhaseSegment(SUBMUCOSAL_DISSECTION, t, t + piece, (float(lifted), float(min(1.0, dis_to)))))
        t, lifted = t + piece, dis_to
        if k < returns:
            segs.append(PhaseSegment(CIRCUMFERENTIAL_INCISION, t, t + lengths[k],
                                     (float(ret_progress[k]), float(ret_progress[k + 1]))))
            t += lengths[k]
    return segs


def ambiguous_intervals(rng: np.random.Generator, s: ProcedureSettings, segs: list[PhaseSegment]
                        ) -> list[Ambiguity]:
    """Non-overlapping intervals, each inside one activity segment (1 s from its ends), ~``ambiguity_rate``."""
    total = segs[-1].end
    target, placed, out = s.ambiguity_rate * total, 0.0, []
    lengths = np.array([g.end - g.start for g in segs])
    for _ in range(400):
        if placed >= target or not s.ambiguity_kinds:
            break
        d = rng.uniform(*s.ambiguity_seconds)
        g = segs[int(rng.choice(len(segs), p=lengths / lengths.sum()))]
        if g.end - g.start < d + 2.0:
            continue
        start = rng.uniform(g.start + 1.0, g.end - 1.0 - d)
        if any(start < a.end + 1.0 and a.start < start + d + 1.0 for a in out):
            continue
        out.append(Ambiguity(str(rng.choice(list(s.ambiguity_kinds))), start, start + d, int(rng.integers(2**31))))
        placed += d
    return sorted(out, key=lambda a: a.start)


def _lens_cleaning(rgb: np.ndarray, strength: float) -> np.ndarray:
    """Water on the lens: heavy blur and a pale wash."""
    sigma = 1.0 + 0.06 * min(rgb.shape[:2]) * strength
    out = cv2.GaussianBlur(rgb, (0, 0), sigma).astype(np.float32)
    out = out * (1 - 0.55 * strength) + np.array([205, 210, 215], np.float32) * 0.55 * strength
    return np.clip(out, 0, 255).astype(np.uint8)


def degrade(rgb: np.ndarray, amb: Ambiguity, t: float) -> np.ndarray:
    """The ambiguous interval's effect at time ``t`` (ramping in and out over 1 s); the same field all interval."""
    strength = float(np.clip(min(t - amb.start, amb.end - t) + 0.5, 0.3, 1.0))
    rng = np.random.default_rng(amb.seed)
    if amb.kind == LENS_CLEANING:
        return _lens_cleaning(rgb, strength)
    if amb.kind == SMOKE:
        return smoke(rgb, 3 if strength >= 1.0 else 2, rng)
    if amb.kind == BLEEDING:
        out = blood(blood(rgb, 3, rng), 3, rng).astype(np.float32)
        return np.clip(out * [1.0, 0.75, 0.75], 0, 255).astype(np.uint8)
    return rgb  # instruments out of view: not drawn (render)


@dataclass
class Procedure:
    seed: int
    settings: ProcedureSettings
    segments: list[PhaseSegment] = field(default_factory=list)
    ambiguities: list[Ambiguity] = field(default_factory=list)

    @property
    def num_frames(self) -> int:
        return max(1, int(round(self.settings.minutes * 60.0 * self.settings.fps)))

    def activity_at(self, t: float) -> PhaseSegment:
        return next((g for g in self.segments if t < g.end), self.segments[-1])

    def ambiguity_at(self, t: float) -> Ambiguity | None:
        return next((a for a in self.ambiguities if a.start <= t < a.end), None)

    def labels(self) -> list[int]:
        return [self.activity_at(i / self.settings.fps).activity for i in range(self.num_frames)]

    def scene(self):
        """The procedure's scene and its light map at the settings' size (fixed for the whole procedure)."""
        h, w = self.settings.size
        scene = make_scene(np.random.default_rng([self.seed, 1]), (h, w))
        return scene, scene_light(scene, h, w)

    def frame_at(self, t: float, scene, light, noise: np.random.Generator, index: int = 0) -> ProcedureFrame:
        """The frame at time ``t`` (``scene, light``: ``self.scene()``; ``noise``: the sensor-noise stream)."""
        s = self.settings
        g, amb = self.activity_at(t), self.ambiguity_at(t)
        frac = float(np.clip((t - g.start) / max(g.end - g.start, 1e-9), 0, 1))
        state = FrameState(g.activity, g.progress[0] + frac * (g.progress[1] - g.progress[0]), camera_at(scene, t), t)
        rgb, mask = render(scene, state, s.size, noise, sensor_noise=s.sensor_noise, light=light,
                           instruments=amb is None or amb.kind != INSTRUMENTS_OUT)
        if amb is not None:
            rgb = degrade(rgb, amb, t)
        return ProcedureFrame(index, t, rgb, mask, g.activity, amb.kind if amb else None)

    def frames(self) -> Iterator[ProcedureFrame]:
        scene, light = self.scene()
        noise = np.random.default_rng([self.seed, 2])
        for i in range(self.num_frames):
            yield self.frame_at(i / self.settings.fps, scene, light, noise, i)

    def description(self) -> dict:
        return {"seed": self.seed, "settings": asdict(self.settings),
                "segments": [g._asdict() for g in self.segments],
                "ambiguities": [a._asdict() for a in self.ambiguities]}


def make_procedure(seed: int, settings: ProcedureSettings | None = None) -> Procedure:
    s = settings or ProcedureSettings()
    rng = np.random.default_rng([seed, 0])
    segs = procedure_timeline(rng, s)
    return Procedure(seed, s, segs, ambiguous_intervals(rng, s, segs))


def numbered_procedure(seed: int, index: int, settings: ProcedureSettings) -> tuple[str, Procedure]:
    """Procedure ``index`` of the set drawn with ``seed`` (seed sequence ``(seed, index)``), and its name."""
    own = int(np.random.SeedSequence([seed, index]).generate_state(1)[0])
    return f"procedure_s{seed}_{index:03d}", make_procedure(own, settings)


def write_procedure_videos(out_dir: str | Path, count: int, settings: ProcedureSettings, seed: int = 0, *,
                           activity_classes=MTLESD.activity_classes, progress=None) -> list[Path]:
    """``count`` procedures as ``NAME.mp4`` + ``NAME-phase.txt`` (+ ``NAME-procedure.json``: segments and
    ambiguous intervals). Procedure k uses seed ``(seed, k)``: sets drawn with other seeds share none."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for k in range(count):
        name, proc = numbered_procedure(seed, k, settings)
        frames = proc.frames()
        if progress is not None:
            frames = progress(frames, total=proc.num_frames, desc=name)
        write_video(out / f"{name}.mp4", (f.rgb for f in frames), settings.fps)
        write_phase_file(out / f"{name}-phase.txt", proc.labels(), activity_classes)
        (out / f"{name}-procedure.json").write_text(json.dumps(proc.description(), indent=1))
        written.append(out / f"{name}.mp4")
    return written

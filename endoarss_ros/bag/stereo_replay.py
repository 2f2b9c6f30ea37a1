"""`endoarss replay IN_BAG -o OUT_BAG --stereo LEFT:RIGHT`: a stereo endoscope's recording through the 3D stage.

Left and right frames are paired by header stamp (``inference.stereo_pairing.StereoPairer``: exact, or within
``--stereo-tolerance-ms``; never across a gap). Both views of a pair go through the model in one batch; the pair
is one scene, published once with the LEFT camera's outputs (its namespace, one activity and one status per
pair, from the left view), with the instruments' 3D fields from ``inference.stereo.StereoGeometry`` (camera_info
from the sibling ``camera_info`` topics) and RViz markers on ``<left namespace>/instruments/markers``.

Unpaired frames are counted by side and reason: an unpaired LEFT frame is still published (2D, with viewing rays
when its camera_info is known), an unpaired RIGHT frame is dropped (the right camera publishes nothing of its
own). A pair without a usable camera_info on both sides, or whose two camera_infos are not a rectified pair
(``CameraInfoError``), is published like an unpaired left frame and counted by reason.

When the bag holds 3D ground truth (``bag.stereo_bag``'s ``stereo_ground_truth.json``) the summary scores it
(``metrics.stereo``): every visible instrument of every left frame counts, whether its frame was paired or not.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import replace

import numpy as np

from ..inference.camera_model import CameraInfoError, is_rectified_topic
from ..inference.instruments import extract
from ..inference.markers import MARKERS_TOPIC, MARKERS_TYPE, instrument_marker_fields
from ..inference.quality import analysis_rgb
from ..inference.stereo import StereoGeometry, StereoRig, frame_gray, mono_geometry
from ..inference.stereo_pairing import LEFT, RIGHT, StereoPairer
from ..metrics.stereo import Predicted3D, StereoEvaluator
from .messages import to_rosbags
from .reader import BagError
from .replay import _ReplayRun
from .stereo_bag import read_stereo_truth


def parse_stereo(text: str) -> tuple[str, str]:
    """``LEFT_TOPIC:RIGHT_TOPIC`` -> (left, right)."""
    left, sep, right = text.partition(":")
    if not sep or not left.strip() or not right.strip() or left.strip() == right.strip():
        raise ValueError(f"--stereo needs two different image topics as LEFT:RIGHT, got {text!r}")
    return left.strip(), right.strip()


def _stats(values) -> dict | None:
    v = np.asarray([x for x in values if math.isfinite(x)], np.float64)
    if not len(v):
        return None
    return {"p50": float(np.median(v)), "p90": float(np.percentile(v, 90)), "mean": float(v.mean()),
            "n": int(len(v))}


class StereoReplayRun(_ReplayRun):
    def __init__(self, opts, bag, outputs):
        left, right = opts.stereo
        if opts.topics and sorted(opts.topics) != sorted((left, right)):
            raise BagError(f"--stereo {left}:{right} replays exactly those two topics, not also {opts.topics}")
        super().__init__(replace(opts, topics=[left, right]), bag, outputs)
        self.left, self.right = left, right
        self.pairer = StereoPairer(tolerance_ns=round(opts.stereo_tolerance_ms * 1e6))
        self.partner: dict[int, tuple] = {}  # left stamp -> (right BagFrame, right FrameResult)
        self.geometries: dict[tuple, tuple] = {}
        self.shown_ids: set[int] = set()
        self.last: tuple | None = None  # (instruments, geometry or None, header) of the frame being written
        self.unpaired = {LEFT: Counter(), RIGHT: Counter()}
        self.no_3d = Counter()  # pairs published without the 3D stage, by reason
        self.pairs = self.with_geometry = self.matched = self.rejected = 0
        self.instruments_left = self.instruments_3d = 0
        self.reprojection: list[float] = []
        self.stage_ms: dict[str, list[float]] = {s: [] for s in StereoGeometry.STAGES}
        self.truth = read_stereo_truth(opts.input)
        self.evaluator_3d = None
        if self.truth is not None:
            rig = self.truth["rig"]
            self.evaluator_3d = StereoEvaluator.for_image(rig["width"], rig["height"], rig["focal_px"],
                                                          rig["baseline_m"])

    @property
    def output_states(self):
        return [self.states[self.left]]

    def declare_outputs(self) -> None:
        super().declare_outputs()
        self.out.add(self.states[self.left].out_topic(MARKERS_TOPIC), MARKERS_TYPE)

    # --- frames -------------------------------------------------------------------------------------------
    def run(self) -> None:
        opts = self.opts
        items: list[tuple] = []
        for bf in self.bag.frames(self.topics, max_pixels=opts.max_pixels, keep_raw=opts.copy_input,
                                  extra_topics=self.extra_topics, on_extra=self.on_extra):
            self.states[bf.topic].frames_in += 1
            if opts.copy_input and bf.rawdata is not None:
                self.out.write_raw(bf.topic, bf.timestamp, bf.rawdata)
            if bf.frame is None:
                self.failed.append({"topic": bf.topic, "index": bf.index, "stamp_ns": bf.stamp,
                                    "reason": bf.reason, "error": bf.error})
                if bf.topic == self.left:  # the pair's status says so; a broken right frame leaves its left alone
                    from ..inference.status import lost_frame_status

                    self._write_status(bf, lost_frame_status("INPUT_REJECTED", f"{bf.reason}: {bf.error}"), 0.0)
                self._advance(1)
                continue
            items += self._items(self.pairer.add(LEFT if bf.topic == self.left else RIGHT, bf.stamp, bf))
            if sum(1 + (r is not None) for _, r in items) >= max(1, opts.batch):
                self._flush_items(items)
                items = []
        items += self._items(self.pairer.flush())
        self._flush_items(items)
        if self.evaluator is not None:
            self._evaluate(final=True)

    def _items(self, update) -> list[tuple]:
        """(left frame, right frame or None) to process; unpaired right frames are counted and dropped."""
        items = [(pair.left.item, pair.right.item) for pair in update.pairs]
        for u in update.unpaired:
            self.unpaired[u.side][u.reason] += 1
            if u.side == LEFT:
                items.append((u.frame.item, None))
            else:
                self._advance(1)
        return items

    def _flush_items(self, items: list[tuple]) -> None:
        if not items:
            return
        import time

        frames = [f for pair in items for f in pair if f is not None]
        t0 = time.monotonic()
        results = self.engine.infer([f.frame for f in frames],
                                    overlay_alpha=self.opts.overlay_alpha if self.want_overlay else None)
        inference_s = time.monotonic() - t0
        self.inference_s += inference_s
        by_frame = {id(f): r for f, r in zip(frames, results)}
        for left, right in items:
            if right is not None:
                self.partner[left.stamp] = (right, by_frame[id(right)])
                self.states[self.right].frames_out += 1
                self.pairs += 1
            self._write_results(left, by_frame[id(left)], inference_s / len(frames) * (2 if right else 1))
        if self.evaluator is not None:
            self._evaluate()
        self._advance(len(frames))

    # --- 3D -----------------------------------------------------------------------------------------------
    def geometry(self, frame, result, stream):
        partner = self.partner.pop(frame.stamp, None)
        geometry, header = None, frame.header
        if partner is None:
            geometry, header = super().geometry(frame, result, stream)
        else:
            geometry, header = self._stereo(frame, result, stream, *partner)
        self.last = (stream.instruments, geometry, header)
        return geometry, header

    def _stereo(self, frame, result, stream, right, right_result):
        h, w = result.mask.shape[:2]
        left_model = self.cameras.model(self.left, frame.stamp, frame.timestamp, w, h)
        rh, rw = right_result.mask.shape[:2]
        right_model = self.cameras.model(self.right, right.stamp, right.timestamp, rw, rh)
        stage = self._stage(left_model, right_model)
        if isinstance(stage, str):
            self.no_3d[stage] += 1
            if left_model is None:
                return None, frame.header
            rays = mono_geometry(left_model, stream.instruments, rectified=is_rectified_topic(self.left))
            return rays, self._header_in(frame, left_model.frame_id)
        settings = self.states[self.left].stream.settings.instruments
        classes = self.states[self.left].stream.instrument_classes
        right_instruments = extract(right_result.mask, classes, confidence=right_result.confidence,
                                    image=analysis_rgb(right.frame), min_area_fraction=settings.min_area_fraction)
        out = stage.process(frame_gray(frame.frame), frame_gray(right.frame), result.mask, right_result.mask,
                            stream.instruments, right_instruments)
        self.with_geometry += 1
        self.matched += out.matched
        self.rejected += out.rejected
        self.reprojection.extend(out.reprojection_errors_px)
        for name, ms in out.stage_ms.items():
            self.stage_ms[name].append(ms)
        return out.instruments, self._header_in(frame, left_model.frame_id)

    def _stage(self, left_model, right_model) -> StereoGeometry | str:
        """The 3D stage of this pair of camera models (cached), or why there is none."""
        if left_model is None or right_model is None:
            return f"no usable camera_info on the {'left' if left_model is None else 'right'} side"
        key = (id(left_model), id(right_model))  # the models are kept with it: their ids stay theirs
        if key not in self.geometries:
            try:
                rig = StereoRig.from_models(left_model, right_model)
                stage = StereoGeometry(rig, rectified_input=is_rectified_topic(self.left),
                                       instrument_classes=self.states[self.left].stream.instrument_classes)
            except CameraInfoError as e:
                stage = str(e)
            self.geometries[key] = (left_model, right_model, stage)
        return self.geometries[key][2]

    def _write_results(self, frame, result, inference_s: float) -> None:
        self.last = None
        super()._write_results(frame, result, inference_s)
        instruments, geometry, header = self.last
        geometry_or_none = geometry if geometry is not None else [None] * len(instruments)
        self.instruments_left += len(instruments)
        self.instruments_3d += sum(1 for g in geometry_or_none if g is not None and g.has_3d)
        shown = [g if g is not None else _NO_3D for g in geometry_or_none]
        fields, self.shown_ids = instrument_marker_fields(header, instruments, shown, self.seg_names,
                                                          self.shown_ids, colors=self.engine.colors)
        st = self.states[self.left]
        self.out.write(st.out_topic(MARKERS_TOPIC), frame.timestamp, to_rosbags(self.out.store, MARKERS_TYPE, fields))
        truth = self.truth["frames"].get(frame.stamp) if self.truth is not None else None
        if truth is not None:
            self.evaluator_3d.add(truth["instruments"], [
                Predicted3D(i.class_id, i.tip, bool(g is not None and g.has_3d),
                            tuple(g.tip_3d) if g is not None else (0.0, 0.0, 0.0),
                            tuple(g.entry_3d) if g is not None else (0.0, 0.0, 0.0),
                            float(g.tip_to_tissue) if g is not None else math.nan)
                for i, g in zip(instruments, geometry_or_none)])

    def summary(self, *args) -> dict:
        summary = super().summary(*args)
        for key in ("activity_timeline", "pixel_fractions", "status", "instruments"):  # the pair's: the left's
            summary[key].pop(self.right, None)
        summary["stereo"] = {
            "left": self.left, "right": self.right, "tolerance_ms": self.opts.stereo_tolerance_ms,
            "pairing": self.pairer.counts.summary(), "pairs": self.pairs,
            "unpaired_left_published_2d": dict(self.unpaired[LEFT]),
            "unpaired_right_dropped": dict(self.unpaired[RIGHT]),
            "pairs_with_3d_stage": self.with_geometry, "pairs_without_3d_stage": dict(self.no_3d),
            "instruments": self.instruments_left, "instruments_with_3d": self.instruments_3d,
            "matched": self.matched, "rejected_by_reprojection": self.rejected,
            "reprojection_error_px": _stats(self.reprojection),
            "stage_ms": {name: _stats(v) for name, v in self.stage_ms.items()},
            "markers_topic": self.states[self.left].out_topic(MARKERS_TOPIC),
            "ground_truth_3d": self.evaluator_3d.result() if self.evaluator_3d is not None else None,
        }
        return summary


class _No3D:
    has_3d = False


_NO_3D = _No3D()

"""Offline inference over a rosbag2 recording (`endoarss replay IN_BAG -o OUT_BAG`). No ROS needed.

Every image of the chosen topic(s) goes through the shared pipeline (``endoarss_ros.inference``) in batches;
nothing is dropped. The output bag holds, per image topic, the node's outputs (``message_fields.OUTPUTS``:
``<ns>/activity``, ``<ns>/segmentation/mask``, optionally ``<ns>/segmentation/overlay``,
``<ns>/segmentation/info`` (latched), ``<ns>/instruments`` and ``<ns>/status``), each stamped with its source
image's header and written at the source image's bag time, so ``ros2 bag play`` reproduces the timing. Frames
that cannot be decoded are listed in the summary with their reason and get a status with INPUT_REJECTED.
Offline there is no live clock: a status's ``age_ms`` is NaN and STALE is never set.

The privacy gate (on unless ``privacy_gate=False``) is the node's: every image written (overlay, mask, the
copied input frames of ``copy_input``, the overlay video) is blanked while the topic is out of body or a frame
has no decision; a copied input frame is written only after its own decision (``privacy`` in the summary).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from endoarss_ros.inference.camera_model import is_rectified_topic
from endoarss_ros.inference.instruments import InstrumentSettings
from endoarss_ros.inference.message_fields import (
    OUTPUT_BY_KEY,
    frame_fields,
    segmentation_info_fields,
    status_fields,
)
from endoarss_ros.inference.out_of_body import (
    DEFAULT_OUT_OF_BODY_MODEL,
    OUT_OF_BODY_CLASS_ID,
    OutOfBody,
    OutOfBodySettings,
)
from endoarss_ros.inference.smoother import DEFAULT_SMOOTHING, Smoothing
from endoarss_ros.inference.status import StatusThresholds, lost_frame_status
from endoarss_ros.inference.stereo import mono_geometry
from endoarss_ros.inference.stream import CameraStream, StreamSettings
from endoarss_ros.inference.tallies import StatusTally, TrackTally
from endoarss_ros.inference.temporal_activity import TemporalSession, TemporalSettings, load_temporal_for
from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path
from endoarss_ros.metrics.frames import GroundTruthEvaluator

from . import replay_report as report
from .camera_infos import CameraInfos
from .media import OverlayVideo, plot_timeline
from .messages import make_header, to_rosbags
from .partials import OutputSet, committed_outputs, pause_point
from .privacy import BlankingError, blanked_rawdata, load_detector
from .reader import BagError, BagFrame, BagReader, GroundTruthCollector
from .writer import BagOutput

DEFAULT_NAMESPACE = "/endoarss"


@dataclass
class ReplayOptions:
    input: Path
    output: Path
    model: str = DEFAULT_MODEL
    topics: list[str] | None = None
    namespace: str = DEFAULT_NAMESPACE
    overlay: bool = False
    info: bool = True
    copy_input: bool = False
    batch: int = 4
    device: str = "auto"
    precision: str = "fp32"
    backend: str = "eager"
    smoothing: bool = DEFAULT_SMOOTHING.enabled
    smoothing_alpha: float = DEFAULT_SMOOTHING.alpha
    smoothing_hysteresis: float = DEFAULT_SMOOTHING.hysteresis
    overlay_alpha: float = 0.5
    annotate: bool = True  # instruments, activity, status and legend on the overlay topic and the video
    thresholds: StatusThresholds = field(default_factory=StatusThresholds)
    instruments: InstrumentSettings = field(default_factory=InstrumentSettings)
    storage: str | None = None  # None: the input's
    overwrite: bool = False
    video: Path | None = None
    timeline: Path | None = None  # None: <output>.timeline.png; "" or False: none
    summary: Path | None = None  # None: <output>.summary.json
    max_pixels: int | None = 3840 * 2160
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True
    engine: object | None = None  # an InferenceEngine to reuse (tests, demo, replay-many's replayers)
    temporal_model: str = ""  # temporal activity weights bound to ``model`` ('' = frame-wise + EMA)
    made_from: dict | None = None  # what the outputs were made from (replay-many's resume record), in the summary
    privacy_gate: bool = True  # blank every image written while out of body or undecided (inference.out_of_body)
    out_of_body_model: str = DEFAULT_OUT_OF_BODY_MODEL
    stereo: tuple[str, str] | None = None  # (left, right) image topics of a stereo pair (``stereo_replay``)
    stereo_tolerance_ms: float = 0.0  # pair left and right frames whose stamps differ by at most this

    @property
    def stream_settings(self) -> StreamSettings:
        return StreamSettings(Smoothing(self.smoothing, self.smoothing_alpha, self.smoothing_hysteresis),
                              self.thresholds, self.instruments, self.annotate)

    @property
    def summary_path(self) -> Path:
        return Path(self.summary) if self.summary else default_sidecar(Path(self.output), ".summary.json")

    @property
    def timeline_path(self) -> Path | None:
        if self.timeline is None:
            return default_sidecar(Path(self.output), ".timeline.png")
        return Path(self.timeline) if self.timeline else None


@dataclass
class _TopicState:
    topic: str
    namespace: str
    stream: CameraStream
    statuses: StatusTally
    tracks: TrackTally
    frames_in: int = 0
    frames_out: int = 0
    info_frame_id: str | None = None
    timeline: list[tuple[int, int, float]] = field(default_factory=list)  # (stamp, class id, confidence)
    # with a temporal model, per frame of ``timeline``: (source of the published label, frame-wise + EMA label)
    sources: list[tuple[str, int]] = field(default_factory=list)
    pixels: np.ndarray | None = None

    def out(self, key: str) -> str:
        """The output topic of ``message_fields.OUTPUTS[key]`` for this input topic."""
        return self.out_topic(OUTPUT_BY_KEY[key].topic)

    def out_topic(self, relative: str) -> str:
        """An output topic of this input topic (``relative`` to its output namespace)."""
        return f"{self.namespace.rstrip('/')}/{relative}"


def default_sidecar(output: Path, suffix: str) -> Path:
    return output.with_name(output.name + suffix)


def output_namespaces(topics: list[str], namespace: str) -> dict[str, str]:
    """One camera: outputs directly under ``namespace``; several: ``namespace`` + the camera's own prefix."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    if len(topics) == 1:
        return {topics[0]: ns or "/"}
    prefixes = {}
    for t in topics:
        base = t[: -len("/compressed")] if t.endswith("/compressed") else t
        prefixes[t] = base.rsplit("/", 1)[0] or base
    if len(set(prefixes.values())) < len(topics):
        prefixes = {t: t for t in topics}
    return {t: f"{ns}{p}" for t, p in prefixes.items()}


def make_engine(opts: ReplayOptions):
    """The engine of ``opts`` (the one it carries, else loaded from ``opts.model``)."""
    if opts.engine is not None:
        return opts.engine
    from ..inference import InferenceEngine

    if opts.threads > 0:
        import torch

        torch.set_num_threads(opts.threads)
    model = resolve_model_path(opts.model)
    if not model.is_file():
        raise FileNotFoundError(f"model {model}: no such file (give --model PATH to a .safetensors file)")
    return InferenceEngine(str(model), device=opts.device, precision=opts.precision, backend=opts.backend,
                           max_batch=max(1, opts.batch))


class _ReplayRun:
    """One replay's state: the input bag's topics, the engine, per-topic state and the ground-truth scoring."""

    def __init__(self, opts: ReplayOptions, bag: BagReader, outputs: OutputSet):
        self.opts, self.bag, self.outputs = opts, bag, outputs
        self.topics = bag.image_topics(opts.topics)  # before the model loads: a wrong topic fails fast
        pause_point("model_loading")
        self.engine = engine = make_engine(opts)
        self.input_types = bag.topics()
        self.input_conns = {c.topic: c for c in bag.connections}
        mask_topic, activity_topic = bag.ground_truth_topics()
        self.collector = GroundTruthCollector(bag, mask_topic, activity_topic)
        self.cameras = CameraInfos(bag, self.topics)
        self.seg_names, self.act_names = list(engine.seg_classes), list(engine.activity_classes)
        self.evaluator = self._evaluator() if self.collector.topics else None
        self.by_status = {True: self._evaluator(), False: self._evaluator()} if self.evaluator else {}
        self.eval_topic = self.topics[0]
        self.pending_eval: dict[int, tuple[np.ndarray, int]] = {}
        self.truth_activities: dict[int, int] = {}
        namespaces = output_namespaces(self.topics, opts.namespace)
        temporal = self._temporal_model()
        self.states = {t: _TopicState(t, namespaces[t], CameraStream(
            self.seg_names, self.act_names, engine.colors, opts.stream_settings,
            temporal=TemporalSession(*temporal, TemporalSettings.from_binding(temporal[1])) if temporal else None),
            StatusTally(), TrackTally(self.seg_names)) for t in self.topics}
        detector = load_detector(opts.out_of_body_model, opts.privacy_gate)
        for st in self.states.values():
            st.stream.out_of_body = (OutOfBody(detector, OutOfBodySettings(privacy_gate=opts.privacy_gate))
                                     if detector is not None else None)
        # --copy-input: per topic, frames copied as they came / blanked / left out (no blank could be made)
        self.copied = {t: {"as_recorded": 0, "blanked": 0, "left_out": 0} for t in self.topics}
        self.last_decision = None  # the out-of-body decision of the frame written last
        self.failed: list[dict] = []
        self.want_overlay = opts.overlay or opts.video is not None
        self.video = (OverlayVideo(Path(opts.video), self._video_fps(), outputs) if opts.video is not None
                      else None)
        self.inference_s = 0.0
        self.progress = None
        self.out: BagOutput | None = None

    def _temporal_model(self):
        """(model, binding) of ``--temporal-model``, checked against the frame model; None without one."""
        if not self.opts.temporal_model:
            return None
        return load_temporal_for(resolve_model_path(self.opts.temporal_model), resolve_model_path(self.opts.model),
                                 self.engine.seg_classes, self.engine.activity_classes)

    def _evaluator(self) -> GroundTruthEvaluator:
        return GroundTruthEvaluator(len(self.seg_names), len(self.act_names), seg_names=self.seg_names,
                                    activity_names=self.act_names)

    def _video_fps(self) -> float:
        conn = self.input_conns[self.eval_topic]
        duration = self.bag.duration_ns / 1e9
        return round((conn.msgcount - 1) / duration, 3) if conn.msgcount > 1 and duration > 0 else 15.0

    @property
    def output_states(self) -> list[_TopicState]:
        """The topics whose outputs are published (a stereo pair publishes with its left camera only)."""
        return list(self.states.values())

    def declare_outputs(self) -> None:
        out, opts = self.out, self.opts
        wanted = (["activity", "mask"] + (["overlay"] if opts.overlay else []) + (["info"] if opts.info else [])
                  + ["instruments", "status"])
        for st in self.output_states:
            for key in wanted:
                output = OUTPUT_BY_KEY[key]
                out.add(st.out(key), output.msgtype, latched=output.latched)
        if opts.copy_input:
            for t in self.topics:
                c = self.input_conns[t]
                out.add(t, self.input_types[t], msgdef=getattr(c.msgdef, "data", None), rihs01=c.digest or None)

    def run(self) -> None:
        """Every frame of the image topics through the engine, in batches of one frame size."""
        opts = self.opts
        batch: list[BagFrame] = []
        for bf in self.bag.frames(self.topics, max_pixels=opts.max_pixels, keep_raw=opts.copy_input,
                                  extra_topics=self.extra_topics, on_extra=self.on_extra):
            self.states[bf.topic].frames_in += 1
            if opts.copy_input and (bf.frame is None or not opts.privacy_gate):
                self._copy_input(bf, gated=bf.frame is None)  # a decodable frame waits for its decision
            if bf.frame is None:
                self.failed.append({"topic": bf.topic, "index": bf.index, "stamp_ns": bf.stamp,
                                    "reason": bf.reason, "error": bf.error})
                gate = self.states[bf.topic].stream.out_of_body
                outside = gate is not None and gate.state.out_of_body
                self._write_status(bf, lost_frame_status("INPUT_REJECTED", f"{bf.reason}: {bf.error}", outside), 0.0)
                self._advance(1)
                continue
            if batch and (len(batch) >= max(1, opts.batch) or batch[0].frame.size != bf.frame.size):
                self._flush(batch)
                batch = []
            batch.append(bf)
        self._flush(batch)
        if self.evaluator is not None:
            self._evaluate(final=True)

    def _copy_input(self, bf: BagFrame, gated: bool) -> None:
        """The input frame into the output bag: as recorded, or blanked when the gate is on and the frame is
        out of body or undecided (undecodable); left out (counted) when no blank can be made."""
        if bf.rawdata is None:  # lost in a damaged chunk
            return
        copied = self.copied[bf.topic]
        if not (gated and self.opts.privacy_gate):
            self.out.write_raw(bf.topic, bf.timestamp, bf.rawdata)
            copied["as_recorded"] += 1
            return
        try:
            self.out.write_raw(bf.topic, bf.timestamp, blanked_rawdata(self.out.store, bf.msgtype, bf.rawdata))
            copied["blanked"] += 1
        except BlankingError:
            copied["left_out"] += 1

    @property
    def extra_topics(self) -> list[str]:
        """Topics read beside the images: ground truth and camera_info."""
        return self.collector.topics + self.cameras.topics

    def on_extra(self, conn, timestamp, rawdata) -> None:
        (self.cameras.add if conn.topic in self.cameras.topics else self.collector)(conn, timestamp, rawdata)

    def geometry(self, frame: BagFrame, result, stream):
        """(the instruments' 3D fields or None, the InstrumentArray header): viewing rays where the frame's
        camera_info is known (the header then carries its frame_id), else 2D as without camera_info."""
        h, w = result.mask.shape[:2]
        model = self.cameras.model(frame.topic, frame.stamp, frame.timestamp, w, h)
        if model is None:
            return None, frame.header
        rays = mono_geometry(model, stream.instruments, rectified=is_rectified_topic(frame.topic))
        return rays, self._header_in(frame, model.frame_id)

    def _header_in(self, frame: BagFrame, frame_id: str):
        """The frame's header, with ``frame_id`` (the camera_info's) when the image's differs."""
        if str(getattr(frame.header, "frame_id", "")) == frame_id:
            return frame.header
        return make_header(self.out.store, frame.stamp, frame_id)

    def _advance(self, frames: int) -> None:
        if self.progress is not None:
            self.progress.update(frames)

    def _flush(self, batch: list[BagFrame]) -> None:
        if not batch:
            return
        t0 = time.monotonic()
        results = self.engine.infer([b.frame for b in batch],
                                    overlay_alpha=self.opts.overlay_alpha if self.want_overlay else None)
        inference_s = time.monotonic() - t0
        self.inference_s += inference_s
        for frame, result in zip(batch, results):
            self._write_results(frame, result, inference_s / len(batch))
        if self.evaluator is not None:
            self._evaluate()
        self._advance(len(batch))
        pause_point("frames")

    def _write_results(self, frame: BagFrame, result, inference_s: float) -> None:
        st, out, store = self.states[frame.topic], self.out, self.out.store
        stream = st.stream.update(frame.frame, result, frame.stamp / 1e9)
        self.last_decision = stream.out_of_body  # a stereo pair's right frame follows its left's decision
        if self.opts.copy_input and self.opts.privacy_gate:
            self._copy_input(frame, gated=stream.out_of_body.gated)
        activity = stream.activity
        outside = stream.out_of_body is not None and stream.out_of_body.out_of_body
        header = frame.header
        frame_id = str(getattr(header, "frame_id", ""))
        if self.opts.info and st.info_frame_id != frame_id:
            info = segmentation_info_fields(header, self.seg_names, self.engine.colors, Path(str(self.opts.model)).name)
            out.write(st.out("info"), frame.timestamp, to_rosbags(store, OUTPUT_BY_KEY["info"].msgtype, info))
            st.info_frame_id = frame_id
        geometry, instruments_header = self.geometry(frame, result, stream)
        for key, fields in frame_fields(header, result, stream, self.act_names, self.seg_names,
                                        overlay=self.opts.overlay, geometry=geometry,
                                        instruments_header=instruments_header).items():
            out.write(st.out(key), frame.timestamp, to_rosbags(store, OUTPUT_BY_KEY[key].msgtype, fields))
        status = self._write_status(frame, stream.status, (inference_s + stream.compute_s) * 1000.0)
        st.tracks.add(frame.stamp, [(i.id, i.class_id) for i in stream.instruments])
        if self.video is not None and frame.topic == self.eval_topic and stream.overlay is not None:
            self.video.add(stream.overlay)
        counts = np.bincount(result.mask.reshape(-1), minlength=len(self.seg_names))
        st.pixels = counts if st.pixels is None else st.pixels + counts[: len(st.pixels)]
        st.timeline.append((frame.stamp, activity.class_id,
                            0.0 if outside else float(activity.probabilities[activity.class_id])))
        if st.stream.temporal is not None:
            st.sources.append((activity.source, OUT_OF_BODY_CLASS_ID if outside else stream.ema_class_id))
        st.frames_out += 1
        if self.evaluator is not None and frame.topic == self.eval_topic and not outside:
            self.pending_eval[frame.stamp] = (result.mask, activity.class_id, status.usable)

    def _write_status(self, frame: BagFrame, status, processing_ms: float):
        """A frame's PerceptionStatus (offline: no age), written and counted; returns it."""
        st, out = self.states[frame.topic], self.out
        status = status.with_timing(None, processing_ms, self.opts.thresholds)
        header = frame.header if frame.header is not None else make_header(out.store, frame.stamp, "")
        out.write(st.out("status"), frame.timestamp,
                  to_rosbags(out.store, OUTPUT_BY_KEY["status"].msgtype, status_fields(header, status)))
        st.statuses.add(status.usable, status.flag_names, status.processed)
        return status

    def _evaluate(self, final: bool = False) -> None:
        """Score the predictions whose ground truth has arrived (all of them when final)."""
        gt = self.collector.gt
        for s in list(self.pending_eval):
            mask, cls, usable = self.pending_eval[s]
            complete = ((gt.mask_topic is None or s in gt.masks)
                        and (gt.activity_topic is None or s in gt.activities))
            if not (complete or final):
                continue
            by_status = self.by_status[usable]
            if s in gt.masks:
                truth_mask = gt.masks.pop(s)
                self.evaluator.add_mask(mask, truth_mask)
                by_status.add_mask(mask, truth_mask)
            if s in gt.activities:
                self.truth_activities[s] = gt.activities.pop(s)
                self.evaluator.add_activity(cls, self.truth_activities[s])
                by_status.add_activity(cls, self.truth_activities[s])
            del self.pending_eval[s]
        if final:
            self.truth_activities.update(gt.activities)

    def summary(self, storage: str, wall_s: float, load_s: float, output_counts: dict, checksums) -> dict:
        opts, states = self.opts, self.states
        start_ns = self.bag.start_time
        summary: dict = {
            "input": str(opts.input), "output": str(opts.output), "storage": storage, "model": str(opts.model),
            "device": str(getattr(self.engine, "device", "")), "backend": str(getattr(self.engine, "backend", "")),
            "image_topics": {t: {"type": self.input_types[t], "output_namespace": s.namespace,
                                 "frames_in": s.frames_in, "frames_out": s.frames_out} for t, s in states.items()},
            **report.frame_accounting(states, self.failed),
            "checksums": checksums.report() if checksums is not None else None,
            "output_topics": output_counts,
            "throughput": report.throughput(wall_s, load_s, self.inference_s, sum(s.frames_out for s in
                                                                                   states.values())),
            "activity_classes": self.act_names,
            "activity_timeline": {t: report.activity_segments(s.timeline, self.act_names, start_ns)
                                  for t, s in states.items()},
            "pixel_fractions": {t: report.pixel_fractions(s.pixels, self.seg_names) for t, s in states.items()},
            "status": {t: s.statuses.summary() for t, s in states.items()},
            "instruments": {t: s.tracks.summary() for t, s in states.items()},
            "privacy": report.privacy_section(states, opts, self.copied),
            "temporal": report.temporal_section(str(opts.temporal_model), states, self.eval_topic,
                                                self.truth_activities, self.act_names, start_ns)
            if opts.temporal_model else None,
            "ground_truth": None,
            "camera_info": self.cameras.summary() or None,
            "files": {"bag": str(opts.output), "summary": str(opts.summary_path),
                      "timeline": str(opts.timeline_path) if opts.timeline_path else None,
                      "video": str(opts.video) if opts.video is not None else None},
        }
        if opts.made_from is not None:
            summary["made_from"] = opts.made_from
        if self.video is not None:
            summary["video_frames"] = self.video.frames
        if self.evaluator is not None:
            gt = self.collector.gt
            summary["ground_truth"] = dict(self.evaluator.result(), topic=self.eval_topic,
                                           mask_topic=gt.mask_topic, activity_topic=gt.activity_topic,
                                           by_status=report.by_status(self.by_status))
        return summary

    def plot(self, summary: dict) -> None:
        path = self.opts.timeline_path
        if path is None:
            return
        with_truth = self.evaluator is not None and self.collector.gt.activity_topic is not None
        rows = report.timeline_rows(summary, self.truth_activities, self.act_names, self.bag.start_time, with_truth)
        plot_timeline(path, rows, self.act_names, title=report.timeline_title(self.opts.input, summary),
                      outputs=self.outputs)


def replay(opts: ReplayOptions) -> dict:
    """Run the replay; returns the summary (also written as JSON). Raises BagError / OutputError / ...;
    on any failure or interrupt no output bag, summary, timeline or video is left behind: all of them are
    written as partials and put in place together at the end (``partials.OutputSet``)."""
    with committed_outputs(opts.overwrite, opts.output) as outputs:  # a full disk anywhere: one error, exit 2
        summary = _replay(opts, outputs)
    return summary


def _replay(opts: ReplayOptions, outputs: OutputSet) -> dict:
    t_start = time.monotonic()
    with BagReader(opts.input) as bag:
        if opts.stereo:
            from .stereo_replay import StereoReplayRun

            run = StereoReplayRun(opts, bag, outputs)
        else:
            run = _ReplayRun(opts, bag, outputs)
        load_s = time.monotonic() - t_start
        storage = opts.storage or bag.storage
        if opts.progress:
            from tqdm import tqdm

            run.progress = tqdm(total=bag.message_count(run.topics), desc="replay", unit="frame",
                                dynamic_ncols=True)
        try:
            with BagOutput(opts.output, storage=storage, overwrite=opts.overwrite, outputs=outputs) as out:
                run.out = out
                run.declare_outputs()
                run.run()
                if run.video is not None:
                    run.video.finish()
                output_counts = dict(out.counts)
        except BaseException:
            if run.video is not None:
                run.video.discard()
            raise
        finally:
            if run.progress is not None:
                run.progress.close()
        summary = run.summary(storage, time.monotonic() - t_start, load_s, output_counts, bag.checksums())
        run.plot(summary)
    outputs.write_text(opts.summary_path, json.dumps(summary, indent=2) + "\n")
    return summary


__all__ = ["BagError", "ReplayOptions", "make_engine", "output_namespaces", "replay"]

"""Offline inference over a rosbag2 recording (`endoarss replay IN_BAG -o OUT_BAG`). No ROS needed.

Every image of the chosen topic(s) goes through the shared pipeline (``endoarss_ros.inference``) in batches;
nothing is dropped. The output bag holds, per image topic, ``<ns>/activity``, ``<ns>/segmentation/mask``,
optionally ``<ns>/segmentation/overlay``, and ``<ns>/segmentation/info`` (latched), each stamped with its
source image's header and written at the source image's bag time, so ``ros2 bag play`` reproduces the timing.
Frames that cannot be decoded are listed in the summary with their reason.
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from endoarss_ros.inference.weights_path import DEFAULT_MODEL, resolve_model_path

from .evaluation import GroundTruthEvaluator
from .partials import NO_SPACE_ERRNOS, OutputSet, pause_point, write_failure
from .reader import ACTIVITY_TYPE, IMAGE_TYPE, BagError, BagFrame, BagReader, GroundTruthCollector
from .writer import BagOutput, OutputError

INFO_TYPE = "endoarss_ros/msg/SegmentationInfo"
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
    smoothing: bool = True
    smoothing_alpha: float = 0.3
    smoothing_hysteresis: float = 0.1
    overlay_alpha: float = 0.5
    storage: str | None = None  # None: the input's
    overwrite: bool = False
    video: Path | None = None
    timeline: Path | None = None  # None: <output>.timeline.png; "" or False: none
    summary: Path | None = None  # None: <output>.summary.json
    max_pixels: int | None = 3840 * 2160
    threads: int = 0  # torch CPU threads; 0 keeps torch's default
    progress: bool = True
    engine: object | None = None  # an InferenceEngine to reuse (tests, demo)


@dataclass
class _TopicState:
    topic: str
    namespace: str
    smoother: object
    frames_in: int = 0
    frames_out: int = 0
    info_frame_id: str | None = None
    timeline: list[tuple[int, int, float]] = field(default_factory=list)  # (stamp, class id, confidence)
    pixels: np.ndarray | None = None

    def out(self, name: str) -> str:
        return f"{self.namespace.rstrip('/')}/{name}"


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


def _header(store, stamp_ns: int, frame_id: str):
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=stamp_ns // 10**9, nanosec=stamp_ns % 10**9),
        frame_id=frame_id)


def _image(store, header, pixels: np.ndarray, encoding: str):
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return store.types[IMAGE_TYPE](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                   step=w * channels, data=np.ascontiguousarray(pixels).reshape(-1))


def activity_segments(timeline: list[tuple[int, int, float]], names: list[str], start_ns: int) -> list[dict]:
    """Consecutive frames with the same activity as one segment; a segment ends where the next begins (the
    last one a median frame period after its last frame)."""
    if not timeline:
        return []
    stamps = np.array([s for s, _, _ in timeline], np.int64)
    period = int(np.median(np.diff(stamps))) if len(stamps) > 1 else 0
    segments: list[dict] = []
    for stamp, cls, conf in timeline:
        if segments and segments[-1]["class_id"] == cls:
            seg = segments[-1]
            seg["frames"] += 1
            seg["_conf"] += conf
            continue
        if segments:
            segments[-1]["end_ns"] = stamp
        segments.append({"class_id": int(cls), "label": names[cls] if cls < len(names) else str(cls),
                         "start_ns": int(stamp), "end_ns": None, "frames": 1, "_conf": conf})
    segments[-1]["end_ns"] = int(timeline[-1][0] + period)
    for seg in segments:
        seg["start_s"] = round((seg["start_ns"] - start_ns) / 1e9, 3)
        seg["end_s"] = round((seg["end_ns"] - start_ns) / 1e9, 3)
        seg["mean_confidence"] = round(seg.pop("_conf") / seg["frames"], 4)
    return segments


def plot_timeline(path: Path, rows: list[tuple[str, list[dict]]], names: list[str], *, title: str,
                  outputs: OutputSet) -> None:
    """Activity segments as coloured bars, one row per (label, segments); written as a partial of ``outputs``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    colors = plt.get_cmap("tab10").colors
    fig, ax = plt.subplots(figsize=(10, 1.0 + 0.6 * max(1, len(rows))), dpi=100)
    for y, (_, segments) in enumerate(rows):
        bars = [(s["start_s"], max(s["end_s"] - s["start_s"], 1e-3)) for s in segments]
        ax.broken_barh(bars, (y - 0.35, 0.7), facecolors=[colors[s["class_id"] % 10] for s in segments])
    ax.set_yticks(range(len(rows)), [label for label, _ in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time (s)")
    ax.set_title(title, fontsize=10)
    ax.legend(handles=[Patch(color=colors[i % 10], label=n) for i, n in enumerate(names)],
              loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    fig.tight_layout()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(outputs.partial(path), bbox_inches="tight", format="png")
    except OSError as e:
        raise write_failure(e, path) from e
    finally:
        plt.close(fig)


class _Video:
    """mp4v video of the overlays, written as a partial of ``outputs`` (checked readable when finished)."""

    def __init__(self, path: Path, fps: float, outputs: OutputSet):
        self.path = path
        self.fps = fps
        self.outputs = outputs
        self.tmp = outputs.partial(path, ext=path.suffix or ".mp4")  # OpenCV picks the container by extension
        self.writer = None
        self.size: tuple[int, int] | None = None
        self.frames = 0

    def add(self, rgb: np.ndarray) -> None:
        import cv2

        if self.writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            h, w = rgb.shape[:2]
            self.size = (w - w % 2, h - h % 2)
            self.writer = cv2.VideoWriter(str(self.tmp), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, self.size)
            if not self.writer.isOpened():
                raise self._failure("OpenCV's mp4v writer did not open")
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        if (bgr.shape[1], bgr.shape[0]) != self.size:
            bgr = cv2.resize(bgr, self.size, interpolation=cv2.INTER_AREA)
        self.writer.write(bgr)
        self.frames += 1

    def finish(self) -> None:
        """Close the file and check that every frame can be read back: OpenCV's writer does not report
        write errors (a full disk gives warnings and an unplayable file)."""
        import cv2

        if self.writer is None:  # no frame to show: no video
            self.outputs.forget(self.tmp)
            return
        self.writer.release()
        self.writer = None
        cap = cv2.VideoCapture(str(self.tmp))
        readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
        cap.release()
        if readable != self.frames:
            raise self._failure(f"{readable} of {self.frames} frames readable")

    def _failure(self, what: str) -> OutputError:
        full = shutil.disk_usage(self.tmp.parent).free == 0
        return OutputError(f"cannot write video {self.path}: {what}"
                           + (" (no space left on device)" if full else "") + "; nothing was kept")

    def discard(self) -> None:
        if self.writer is not None:
            self.writer.release()
            self.writer = None
        self.tmp.unlink(missing_ok=True)


def _make_engine(opts: ReplayOptions):
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


def replay(opts: ReplayOptions) -> dict:
    """Run the replay; returns the summary (also written as JSON). Raises BagError / OutputError / ...;
    on any failure or interrupt no output bag, summary, timeline or video is left behind: all of them are
    written as partials and put in place together at the end (``partials.OutputSet``)."""
    with OutputSet(overwrite=opts.overwrite) as outputs:
        try:
            summary = _replay(opts, outputs)
        except OSError as e:  # a full disk anywhere (bag, video, timeline, summary): a clear error, exit 2
            if e.errno not in NO_SPACE_ERRNOS:
                raise
            raise write_failure(e, Path(opts.output).parent) from e
        pause_point("before_commit")
        outputs.commit()
    return summary


def _replay(opts: ReplayOptions, outputs: OutputSet) -> dict:
    from ..inference import ActivitySmoother

    t_start = time.monotonic()
    output = Path(opts.output)
    summary_path = Path(opts.summary) if opts.summary else default_sidecar(output, ".summary.json")
    if opts.timeline is None:
        timeline_path = default_sidecar(output, ".timeline.png")
    else:
        timeline_path = Path(opts.timeline) if opts.timeline else None

    with BagReader(opts.input) as bag:
        topics = bag.image_topics(opts.topics)
        storage = opts.storage or bag.storage
        namespaces = output_namespaces(topics, opts.namespace)
        total = bag.message_count(topics)
        mask_topic, activity_topic = bag.ground_truth_topics()
        collector = GroundTruthCollector(bag, mask_topic, activity_topic)
        input_types = bag.topics()
        input_conns = {c.topic: c for c in bag.connections}

        pause_point("model_loading")
        engine = _make_engine(opts)
        t_loaded = time.monotonic()
        store = None
        seg_names, act_names = list(engine.seg_classes), list(engine.activity_classes)
        colors = np.asarray(engine.colors, np.uint8)
        evaluator = GroundTruthEvaluator(len(seg_names), len(act_names), seg_names=seg_names,
                                         activity_names=act_names) if collector.topics else None
        eval_topic = topics[0]
        pending_eval: dict[int, tuple[np.ndarray, int]] = {}
        states = {t: _TopicState(t, namespaces[t], ActivitySmoother(
            len(act_names), alpha=opts.smoothing_alpha, hysteresis=opts.smoothing_hysteresis,
            enabled=opts.smoothing)) for t in topics}
        failed: list[dict] = []
        want_overlay = opts.overlay or opts.video is not None
        video = None
        if opts.video is not None:
            conn = input_conns[eval_topic]
            duration = bag.duration_ns / 1e9
            fps = (conn.msgcount - 1) / duration if conn.msgcount > 1 and duration > 0 else 15.0
            video = _Video(Path(opts.video), round(fps, 3), outputs)
        infer_s = 0.0
        progress = None
        if opts.progress:
            from tqdm import tqdm

            progress = tqdm(total=total, desc="replay", unit="frame", dynamic_ncols=True)

        try:
            with BagOutput(output, storage=storage, overwrite=opts.overwrite, outputs=outputs) as out:
                store = out.store
                for st in states.values():
                    out.add(st.out("activity"), ACTIVITY_TYPE)
                    out.add(st.out("segmentation/mask"), IMAGE_TYPE)
                    if opts.overlay:
                        out.add(st.out("segmentation/overlay"), IMAGE_TYPE)
                    if opts.info:
                        out.add(st.out("segmentation/info"), INFO_TYPE, latched=True)
                if opts.copy_input:
                    for t in topics:
                        c = input_conns[t]
                        out.add(t, input_types[t], msgdef=getattr(c.msgdef, "data", None), rihs01=c.digest or None)

                def evaluate(final: bool = False) -> None:
                    """Score the predictions whose ground truth has arrived (all of them when final)."""
                    gt = collector.gt
                    for s in list(pending_eval):
                        mask, cls = pending_eval[s]
                        complete = ((mask_topic is None or s in gt.masks)
                                    and (activity_topic is None or s in gt.activities))
                        if not (complete or final):
                            continue
                        if s in gt.masks:
                            evaluator.add_mask(mask, gt.masks.pop(s))
                        if s in gt.activities:
                            evaluator.add_activity(cls, gt.activities.pop(s))
                        del pending_eval[s]

                def flush(batch: list[BagFrame]) -> None:
                    nonlocal infer_s
                    if not batch:
                        return
                    t0 = time.monotonic()
                    results = engine.infer([b.frame for b in batch],
                                           overlay_alpha=opts.overlay_alpha if want_overlay else None)
                    infer_s += time.monotonic() - t0
                    for b, r in zip(batch, results):
                        st = states[b.topic]
                        smoothed, cls = st.smoother.update(r.activity_probs)
                        frame_id = str(getattr(b.header, "frame_id", ""))
                        header = _header(store, b.stamp, frame_id)
                        if opts.info and st.info_frame_id != frame_id:
                            out.write(st.out("segmentation/info"), b.timestamp, store.types[INFO_TYPE](
                                header=header, class_names=seg_names, colors=colors.reshape(-1),
                                mask_encoding="mono8", has_ignore_id=False, ignore_id=0,
                                model=Path(str(opts.model)).name))
                            st.info_frame_id = frame_id
                        out.write(st.out("activity"), b.timestamp, store.types[ACTIVITY_TYPE](
                            header=header, label=act_names[cls], class_id=int(cls),
                            confidence=float(smoothed[cls]), class_names=act_names,
                            probabilities=np.asarray(smoothed, np.float32),
                            raw_probabilities=np.asarray(r.activity_probs, np.float32)))
                        out.write(st.out("segmentation/mask"), b.timestamp, _image(store, header, r.mask, "mono8"))
                        if opts.overlay and r.overlay is not None:
                            out.write(st.out("segmentation/overlay"), b.timestamp,
                                      _image(store, header, r.overlay, "rgb8"))
                        if video is not None and b.topic == eval_topic and r.overlay is not None:
                            video.add(r.overlay)
                        counts = np.bincount(r.mask.reshape(-1), minlength=len(seg_names))
                        st.pixels = counts if st.pixels is None else st.pixels + counts[: len(st.pixels)]
                        st.timeline.append((b.stamp, int(cls), float(smoothed[cls])))
                        st.frames_out += 1
                        if evaluator is not None and b.topic == eval_topic:
                            pending_eval[b.stamp] = (r.mask, int(cls))
                    if evaluator is not None:
                        evaluate()
                    if progress is not None:
                        progress.update(len(batch))
                    pause_point("frames")

                batch: list[BagFrame] = []
                for bf in bag.frames(topics, max_pixels=opts.max_pixels, keep_raw=opts.copy_input,
                                     extra_topics=collector.topics, on_extra=collector):
                    st = states[bf.topic]
                    st.frames_in += 1
                    if opts.copy_input and bf.rawdata is not None:  # None: lost in a damaged chunk
                        out.write_raw(bf.topic, bf.timestamp, bf.rawdata)
                    if bf.frame is None:
                        failed.append({"topic": bf.topic, "index": bf.index, "stamp_ns": bf.stamp,
                                       "reason": bf.reason, "error": bf.error})
                        if progress is not None:
                            progress.update(1)
                        continue
                    if batch and (len(batch) >= max(1, opts.batch) or batch[0].frame.size != bf.frame.size):
                        flush(batch)
                        batch = []
                    batch.append(bf)
                flush(batch)
                if evaluator is not None:
                    evaluate(final=True)
                if video is not None:
                    video.finish()
                output_counts = dict(out.counts)
        except BaseException:
            if video is not None:
                video.discard()
            raise
        finally:
            if progress is not None:
                progress.close()
        start_ns = bag.start_time
        checksums = bag.checksums()

    wall = time.monotonic() - t_start
    frames_in = sum(s.frames_in for s in states.values())
    frames_out = sum(s.frames_out for s in states.values())
    summary: dict = {
        "input": str(opts.input),
        "output": str(output),
        "storage": storage,
        "model": str(opts.model),
        "device": str(getattr(engine, "device", "")),
        "backend": str(getattr(engine, "backend", "")),
        "image_topics": {t: {"type": input_types[t], "output_namespace": s.namespace, "frames_in": s.frames_in,
                             "frames_out": s.frames_out} for t, s in states.items()},
        "frames_in": frames_in,
        "frames_out": frames_out,
        "frames_failed": len(failed),
        "frames_in_equals_out": frames_in == frames_out,
        "failed_frames": failed,
        "failure_reasons": dict(Counter(f["reason"] for f in failed)),
        "checksums": checksums.report() if checksums is not None else None,
        "output_topics": output_counts,
        "throughput": {
            "wall_s": round(wall, 3),
            "model_load_s": round(t_loaded - t_start, 3),
            "inference_s": round(infer_s, 3),
            "frames_per_s": round(frames_out / max(wall, 1e-9), 3),
            "inference_frames_per_s": round(frames_out / infer_s, 3) if infer_s > 0 else None,
        },
        "activity_classes": act_names,
        "activity_timeline": {t: activity_segments(s.timeline, act_names, start_ns) for t, s in states.items()},
        "pixel_fractions": {t: ({seg_names[i]: round(float(c) / max(1, int(s.pixels.sum())), 6)
                                 for i, c in enumerate(s.pixels[: len(seg_names)])} if s.pixels is not None
                                else {}) for t, s in states.items()},
        "ground_truth": None,
        "files": {"bag": str(output), "summary": str(summary_path),
                  "timeline": str(timeline_path) if timeline_path else None,
                  "video": str(opts.video) if opts.video is not None else None},
    }
    if video is not None:
        summary["video_frames"] = video.frames
    if evaluator is not None:
        metrics = evaluator.result()
        metrics.update({"topic": eval_topic, "mask_topic": mask_topic, "activity_topic": activity_topic})
        summary["ground_truth"] = metrics
    if timeline_path is not None:
        rows = [(f"{t} (predicted)" if len(states) > 1 or evaluator else t, summary["activity_timeline"][t])
                for t in states]
        if evaluator is not None and activity_topic is not None:
            truth = sorted(_ground_truth_timeline(opts.input, activity_topic).items())
            rows.insert(1, ("ground truth", activity_segments([(s, c, 1.0) for s, c in truth], act_names,
                                                              start_ns)))
        title = f"activity timeline - {Path(opts.input).name}"
        acc = (summary["ground_truth"] or {}).get("activity_accuracy")
        if acc is not None:
            title += f" (accuracy {acc:.1%})"
        plot_timeline(timeline_path, rows, act_names, title=title, outputs=outputs)
    outputs.write_text(summary_path, json.dumps(summary, indent=2) + "\n")
    return summary


def _ground_truth_timeline(path, activity_topic: str) -> dict[int, int]:
    """stamp -> activity id of the ground truth (only the small activity messages are read)."""
    from .reader import stamp_to_ns

    truth = {}
    with BagReader(path) as bag:
        for conn, _, raw in bag.messages([activity_topic], damaged="skip"):  # lost truth: a gap in the plot
            msg = bag.deserialize(raw, conn.msgtype)
            truth[stamp_to_ns(msg.header.stamp)] = int(msg.class_id)
    return truth


__all__ = ["BagError", "ReplayOptions", "activity_segments", "output_namespaces", "replay"]

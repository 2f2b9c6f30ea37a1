"""A de-identified copy of a recording (`endoarss scrub IN_BAG -o OUT_BAG`). No ROS needed.

Each camera topic (``BagReader.image_topics``: every Image / CompressedImage topic but ground truth and our own
outputs, or the ``topics`` asked for) goes through the node's out-of-body state and privacy gate
(``inference.out_of_body``: the same detector, features, hysteresis): a frame whose decision gates it, or that
cannot be decoded (no decision: fail closed), is blanked (``bag.privacy.blanked_rawdata``) or, with ``drop``,
left out. Every other message, and every camera frame the gate lets through, is copied byte for byte with its
bag time. The bag and the report (``OUT_BAG.scrub.json``: per topic the intervals removed, frames passed /
blanked / dropped) appear together or not at all (``partials.OutputSet``), like replay's outputs.
Image topics that are not gated (ground truth masks, our own outputs) are copied as they are and listed in the
report under ``image_topics_not_gated``.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL, OutOfBody, OutOfBodySettings
from .mcap_checksums import DamagedMessage
from .partials import committed_outputs, pause_point
from .privacy import BlankingError, blanked_rawdata, load_detector
from .reader import IMAGE_TYPES, BagReader, stamp_to_ns
from .writer import BagOutput


@dataclass
class ScrubOptions:
    input: Path
    output: Path
    topics: list[str] | None = None
    drop: bool = False  # leave gated frames out instead of blanking them
    model: str = DEFAULT_OUT_OF_BODY_MODEL
    threshold: float = OutOfBodySettings.threshold
    exit_frames: int = OutOfBodySettings.exit_frames
    storage: str | None = None  # None: the input's
    overwrite: bool = False
    report: Path | None = None  # None: <output>.scrub.json
    max_pixels: int | None = 3840 * 2160

    @property
    def report_path(self) -> Path:
        return Path(self.report) if self.report else self.output.with_name(self.output.name + ".scrub.json")


def _decode(bag: BagReader, conn, rawdata, max_pixels):
    """(header stamp ns or None, RawFrame or None, why not) of one camera message."""
    from ..inference import FrameError, frame_from_compressed, frame_from_image_fields

    try:
        msg = bag.deserialize(rawdata, conn.msgtype)
    except Exception as e:  # noqa: BLE001 - a broken message is undecided: gated
        return None, None, f"undecodable_message: {type(e).__name__}"
    stamp = stamp_to_ns(msg.header.stamp)
    try:
        if conn.msgtype == IMAGE_TYPES[1]:
            return stamp, frame_from_compressed(msg.format, msg.data, max_pixels=max_pixels), ""
        return stamp, frame_from_image_fields(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                                              max_pixels=max_pixels), ""
    except FrameError as e:
        return stamp, None, e.reason


class _TopicTally:
    def __init__(self, gate: OutOfBody):
        self.gate = gate
        self.passed = self.blanked = self.dropped = self.undecided = self.damaged = 0
        self.undecided_reasons: dict[str, int] = {}
        self.decide_s = 0.0

    def summary(self, start_ns: int) -> dict:
        state = self.gate.state.summary()
        for i in state["gated_intervals"]:
            i["start_s"] = round((i["start_ns"] - start_ns) / 1e9, 3)
            i["end_s"] = round((i["end_ns"] - start_ns) / 1e9, 3)
        decided = max(1, state["frames"])
        return {"frames": self.passed + self.blanked + self.dropped + self.damaged, "passed": self.passed,
                "blanked": self.blanked, "dropped": self.dropped, "undecided_undecodable": self.undecided,
                "undecided_reasons": self.undecided_reasons, "damaged_left_out": self.damaged,
                "out_of_body_frames": state["out_of_body_frames"], "entries": state["entries"],
                "removed_intervals": state["gated_intervals"],
                "decision_ms_mean": round(1000.0 * self.decide_s / decided, 3)}


class _Scrub:
    def __init__(self, opts: ScrubOptions, bag: BagReader, out: BagOutput):
        self.opts, self.bag, self.out = opts, bag, out
        self.cameras = bag.image_topics(opts.topics)
        detector = load_detector(opts.model)
        settings = OutOfBodySettings(opts.threshold, opts.exit_frames, privacy_gate=True)
        self.tallies = {t: _TopicTally(OutOfBody(detector, settings)) for t in self.cameras}
        self.copied: dict[str, int] = {}
        self.damaged_other: dict[str, int] = {}
        for c in bag.connections:
            out.add(c.topic, c.msgtype, msgdef=getattr(c.msgdef, "data", None), rihs01=c.digest or None,
                    qos=getattr(c.ext, "offered_qos_profiles", None))

    def run(self) -> None:
        for conn, timestamp, rawdata in self.bag.messages([c.topic for c in self.bag.connections], damaged="yield"):
            if conn.topic in self.tallies:
                self._camera(conn, timestamp, rawdata)
            elif isinstance(rawdata, DamagedMessage):
                self.damaged_other[conn.topic] = self.damaged_other.get(conn.topic, 0) + 1
            else:
                self.out.write_raw(conn.topic, timestamp, bytes(rawdata))
                self.copied[conn.topic] = self.copied.get(conn.topic, 0) + 1
            pause_point("frames")

    def _camera(self, conn, timestamp: int, rawdata) -> None:
        from ..inference import quality

        tally = self.tallies[conn.topic]
        if isinstance(rawdata, DamagedMessage):  # its bytes are lost: nothing to blank, nothing written
            tally.damaged += 1
            return
        t0 = time.perf_counter()
        stamp, frame, why = _decode(self.bag, conn, rawdata, self.opts.max_pixels)
        if frame is None:
            tally.undecided += 1
            tally.undecided_reasons[why] = tally.undecided_reasons.get(why, 0) + 1
            gated = True
        else:
            rgb = quality.analysis_rgb(frame)
            gated = tally.gate.decide(rgb, quality.measure(frame, rgb).as_dict(), stamp).gated
        tally.decide_s += time.perf_counter() - t0
        if not gated:
            self.out.write_raw(conn.topic, timestamp, bytes(rawdata))
            tally.passed += 1
            return
        if self.opts.drop:
            tally.dropped += 1
            return
        try:
            self.out.write_raw(conn.topic, timestamp, blanked_rawdata(self.out.store, conn.msgtype, rawdata))
            tally.blanked += 1
        except BlankingError:
            tally.dropped += 1  # no blank can be made of it: left out, never written as it came

    def report(self, storage: str, wall_s: float) -> dict:
        opts, start = self.opts, self.bag.start_time
        types = self.bag.topics()
        checksums = self.bag.checksums()
        return {
            "input": str(opts.input), "output": str(opts.output), "storage": storage,
            "mode": "drop" if opts.drop else "blank", "out_of_body_model": str(opts.model),
            "threshold": opts.threshold, "exit_frames": opts.exit_frames,
            "camera_topics": {t: tally.summary(start) for t, tally in self.tallies.items()},
            "copied_topics": self.copied, "damaged_left_out": self.damaged_other,
            "image_topics_not_gated": sorted(t for t, m in types.items() if m in IMAGE_TYPES
                                             and t not in self.tallies),
            "checksums": checksums.report() if checksums is not None else None,
            "output_topics": dict(self.out.counts), "wall_s": round(wall_s, 3),
            "files": {"bag": str(opts.output), "report": str(opts.report_path)},
        }


def scrub(opts: ScrubOptions) -> dict:
    """Write the de-identified copy and its report; returns the report. Raises BagError / OutputError /
    OutOfBodyModelError; on any failure or interrupt neither the bag nor the report is left behind."""
    t0 = time.monotonic()
    with committed_outputs(opts.overwrite, opts.output) as outputs:
        with BagReader(opts.input) as bag:
            storage = opts.storage or bag.storage
            with BagOutput(opts.output, storage=storage, overwrite=opts.overwrite, outputs=outputs) as out:
                run = _Scrub(opts, bag, out)
                run.run()
            report = run.report(storage, time.monotonic() - t0)
        outputs.write_text(opts.report_path, json.dumps(report, indent=2) + "\n")
    return report


__all__ = ["ScrubOptions", "scrub"]

"""Read rosbag2 recordings (MCAP, sqlite3) with ``rosbags``: image topics, decoded frames, ground truth.

No ROS needed. Every failure to open or read a bag becomes a ``BagError`` that names the file and the cause.
Frames that cannot be decoded do not stop a replay: they come out as ``BagFrame`` with ``frame=None`` and a
reason (``FrameError`` reasons, or one of ``BAG_REASONS``: the CDR itself is broken, or the MCAP chunk that
holds the message fails its checksum; see ``mcap_checksums``).
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..inference.message_fields import ACTIVITY_TYPE, IMAGE_TYPE, OUTPUTS
from ..inference.message_fields import COMPRESSED_IMAGE_TYPE as COMPRESSED_TYPE
from .mcap_checksums import BagChecksums, DamagedMessage, McapFormatError
from .msgtypes import typestore

IMAGE_TYPES = (IMAGE_TYPE, COMPRESSED_TYPE)
GROUND_TRUTH_MARK = "ground_truth"
# What our own tools publish/write: never an input to a replay.
OUTPUT_SUFFIXES = tuple(o.topic for o in OUTPUTS if o.msgtype == IMAGE_TYPE)
UNDECODABLE, CHECKSUM_MISMATCH = "undecodable_message", "checksum_mismatch"
BAG_REASONS = (UNDECODABLE, CHECKSUM_MISMATCH)  # the reader's own reasons, beside the decoders' FrameError ones


class BagError(RuntimeError):
    """A bag that cannot be opened or read: missing, not a rosbag2, truncated, corrupt, no image topics..."""


@dataclass
class BagFrame:
    topic: str
    index: int  # per topic, from 0
    timestamp: int  # bag receive time (ns)
    stamp: int  # header stamp (ns); equals timestamp when the message could not be decoded
    header: object | None  # the message's std_msgs/Header (rosbags object), None when undecodable
    frame: object | None  # inference.RawFrame, None when the frame could not be decoded
    reason: str | None = None
    error: str | None = None
    rawdata: bytes | None = None  # the serialized message (kept only when asked for)
    msgtype: str = IMAGE_TYPE


@dataclass
class GroundTruth:
    """Ground truth by header stamp (ns): class-id masks and activity ids (``endoarss synth`` bags)."""

    masks: dict[int, np.ndarray]
    activities: dict[int, int]
    activity_names: list[str]
    mask_topic: str | None = None
    activity_topic: str | None = None

    def __bool__(self) -> bool:
        return bool(self.masks or self.activities)


def stamp_to_ns(stamp) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def resolve_bag_path(path: str | Path) -> Path:
    """A rosbag2 directory (with metadata.yaml). A storage file inside one is accepted too."""
    p = Path(path)
    if not p.exists():
        raise BagError(f"bag {p}: no such file or directory")
    if p.is_file():
        if (p.parent / "metadata.yaml").is_file():
            return p.parent
        raise BagError(f"bag {p}: a file without metadata.yaml next to it; give the rosbag2 directory "
                       "(the folder `ros2 bag record` or `endoarss synth --bag` wrote)")
    if not (p / "metadata.yaml").is_file():
        raise BagError(f"bag {p}: not a rosbag2 directory (metadata.yaml is missing)")
    return p


def _cause(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return f"{type(error).__name__}: {text}" if type(error).__name__ not in text else text


class BagReader:
    """Context manager around ``rosbags.highlevel.AnyReader`` with our message types registered."""

    def __init__(self, path: str | Path):
        self.path = resolve_bag_path(path)
        self._reader = None
        self._checksums: BagChecksums | None | bool = False  # False: not scanned yet
        self._read_count = 0

    def __enter__(self) -> BagReader:
        from rosbags.highlevel import AnyReader

        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
            self._reader.open()
        except Exception as e:  # noqa: BLE001 - rosbags raises many kinds; all mean "cannot open"
            self._reader = None
            raise BagError(f"bag {self.path}: cannot open it ({_cause(e)}); the file may be truncated, "
                           "corrupt, or not a rosbag2 recording") from e
        return self

    def __exit__(self, *exc) -> None:
        if self._reader is not None:
            try:
                self._reader.close()
            except Exception:  # noqa: BLE001 - closing a broken bag must not hide the first error
                pass
            self._reader = None

    @property
    def reader(self):
        if self._reader is None:
            raise BagError(f"bag {self.path} is not open")
        return self._reader

    @property
    def connections(self):
        return self.reader.connections

    @property
    def storage(self) -> str:
        """'mcap' or 'sqlite3' (from metadata.yaml)."""
        import yaml

        try:
            meta = yaml.safe_load((self.path / "metadata.yaml").read_text())
            return str(meta["rosbag2_bagfile_information"]["storage_identifier"])
        except Exception:  # noqa: BLE001 - only informative
            return "mcap"

    @property
    def start_time(self) -> int:
        return int(self.reader.start_time)

    @property
    def duration_ns(self) -> int:
        return max(0, int(self.reader.end_time) - int(self.reader.start_time))

    def topics(self) -> dict[str, str]:
        """topic -> message type."""
        return {c.topic: c.msgtype for c in self.connections}

    def message_count(self, topics: Iterable[str]) -> int:
        wanted = set(topics)
        return sum(c.msgcount for c in self.connections if c.topic in wanted)

    # ---- image topics ---------------------------------------------------------------------------------
    def image_topics(self, requested: Sequence[str] | None = None) -> list[str]:
        """The image topics to run on: ``requested`` (checked), else every Image / CompressedImage topic that
        is not ground truth or one of our outputs; a raw topic wins over its ``/compressed`` twin."""
        types = self.topics()
        if requested:
            chosen = []
            for topic in requested:
                if topic not in types:
                    raise BagError(f"bag {self.path}: no topic {topic!r} (image topics: "
                                   f"{', '.join(self._candidates(types)) or 'none'})")
                if types[topic] not in IMAGE_TYPES:
                    raise BagError(f"bag {self.path}: topic {topic!r} is {types[topic]}, not an image "
                                   f"({' or '.join(IMAGE_TYPES)})")
                chosen.append(topic)
            return chosen
        candidates = self._candidates(types)
        candidates = [t for t in candidates if not (t.endswith("/compressed") and t[: -len("/compressed")] in
                                                    candidates)]
        if not candidates:
            listing = ", ".join(f"{t} ({m})" for t, m in sorted(types.items())) or "no topics at all"
            raise BagError(f"bag {self.path}: no image topics (sensor_msgs/msg/Image or CompressedImage, "
                           f"ground truth excluded) - it has {listing}")
        return candidates

    @staticmethod
    def _candidates(types: dict[str, str]) -> list[str]:
        return sorted(t for t, m in types.items() if m in IMAGE_TYPES and GROUND_TRUTH_MARK not in t
                      and not t.endswith(OUTPUT_SUFFIXES))

    # ---- messages -------------------------------------------------------------------------------------
    def checksums(self) -> BagChecksums | None:
        """The MCAP chunk checksums, verified (scanned once); None for sqlite3 bags or an unparsable file
        (reading it then fails with its own error)."""
        if self._checksums is False:
            self._checksums = None
            files = sorted(self.path.glob("*.mcap"))
            if files:
                try:
                    self._checksums = BagChecksums(files)
                except (McapFormatError, OSError):
                    pass
        return self._checksums

    def messages(self, topics: Iterable[str], *, damaged: str = "error"
                 ) -> Iterator[tuple[object, int, bytes | DamagedMessage]]:
        """(connection, bag timestamp ns, raw CDR bytes) in time order; read errors become ``BagError``.

        Messages in MCAP chunks that fail their checksum are read around; where one of them comes, ``damaged``
        says what happens: ``"error"`` a BagError, ``"skip"`` nothing, ``"yield"`` it is yielded in its place
        with a ``DamagedMessage`` instead of the bytes."""
        if damaged not in ("error", "skip", "yield"):
            raise ValueError(f"damaged must be error, skip or yield, got {damaged!r}")
        wanted = set(topics)
        conns = [c for c in self.connections if c.topic in wanted]
        if not conns:
            return
        by_topic = {c.topic: c for c in conns}
        checksums = self.checksums()
        spans = checksums.damaged_spans() if checksums is not None else []
        self._read_count = 0
        start = None
        for span in spans:
            yield from self._read(conns, start, span.start)
            lost = [m for m in span.messages if m.topic in by_topic]
            if lost and damaged == "error":
                raise BagError(f"bag {self.path}: {len(lost)} messages are in damaged data ({lost[0].detail})")
            if damaged == "yield":
                yield from ((by_topic[m.topic], m.timestamp, m) for m in lost)
            start = span.end + 1
        yield from self._read(conns, start, None)

    def _read(self, conns, start: int | None, stop: int | None) -> Iterator[tuple[object, int, bytes]]:
        it = self.reader.messages(connections=conns, start=start, stop=stop)
        while True:
            try:
                conn, timestamp, rawdata = next(it)
            except StopIteration:
                return
            except Exception as e:  # noqa: BLE001
                raise BagError(f"bag {self.path}: reading failed after {self._read_count} messages ({_cause(e)}); "
                               "the file is truncated or corrupt") from e
            self._read_count += 1
            yield conn, int(timestamp), rawdata

    def deserialize(self, rawdata, msgtype: str):
        return self.reader.deserialize(rawdata, msgtype)

    def frames(self, topics: Sequence[str], *, max_pixels: int | None = None, keep_raw: bool = False,
               extra_topics: Iterable[str] = (), on_extra=None) -> Iterator[BagFrame]:
        """Decoded frames of ``topics`` in time order. Messages of ``extra_topics`` go to ``on_extra(conn,
        timestamp, rawdata)`` as they come (e.g. ground truth read in the same pass)."""
        from ..inference import FrameError, frame_from_compressed, frame_from_image_fields

        image_topics = set(topics)
        counters = dict.fromkeys(topics, 0)
        for conn, timestamp, rawdata in self.messages(image_topics | set(extra_topics), damaged="yield"):
            damaged = isinstance(rawdata, DamagedMessage)
            if conn.topic not in image_topics:
                if on_extra is not None and not damaged:  # lost ground truth: fewer frames evaluated
                    on_extra(conn, timestamp, rawdata)
                continue
            index = counters[conn.topic]
            counters[conn.topic] += 1
            if damaged:
                yield BagFrame(conn.topic, index, timestamp, timestamp, None, None, CHECKSUM_MISMATCH,
                               rawdata.detail, None, conn.msgtype)
                continue
            raw = bytes(rawdata) if keep_raw else None
            try:
                msg = self.deserialize(rawdata, conn.msgtype)
            except Exception as e:  # noqa: BLE001
                yield BagFrame(conn.topic, index, timestamp, timestamp, None, None, UNDECODABLE,
                               f"CDR deserialization failed: {_cause(e)}", raw, conn.msgtype)
                continue
            stamp = stamp_to_ns(msg.header.stamp)
            try:
                if conn.msgtype == COMPRESSED_TYPE:
                    frame = frame_from_compressed(msg.format, msg.data, max_pixels=max_pixels)
                else:
                    frame = frame_from_image_fields(msg.encoding, msg.width, msg.height, msg.step, msg.data,
                                                    max_pixels=max_pixels)
            except FrameError as e:
                yield BagFrame(conn.topic, index, timestamp, stamp, msg.header, None, e.reason, str(e), raw,
                               conn.msgtype)
                continue
            yield BagFrame(conn.topic, index, timestamp, stamp, msg.header, frame, None, None, raw, conn.msgtype)

    # ---- ground truth ---------------------------------------------------------------------------------
    def ground_truth_topics(self) -> tuple[str | None, str | None]:
        """(mask topic, activity topic) of the recording's ground truth, None where absent."""
        mask = activity = None
        for topic, msgtype in sorted(self.topics().items()):
            if GROUND_TRUTH_MARK not in topic:
                continue
            if msgtype == IMAGE_TYPE and mask is None:
                mask = topic
            elif msgtype == ACTIVITY_TYPE and activity is None:
                activity = topic
        return mask, activity


class GroundTruthCollector:
    """Feeds on ground-truth messages (``BagReader.frames(..., on_extra=collector)``)."""

    def __init__(self, reader: BagReader, mask_topic: str | None, activity_topic: str | None):
        self.reader = reader
        self.gt = GroundTruth({}, {}, [], mask_topic, activity_topic)
        self.errors = 0

    @property
    def topics(self) -> list[str]:
        return [t for t in (self.gt.mask_topic, self.gt.activity_topic) if t]

    def __call__(self, conn, timestamp, rawdata) -> None:
        try:
            msg = self.reader.deserialize(rawdata, conn.msgtype)
        except Exception:  # noqa: BLE001 - broken ground truth only lowers the evaluated count
            self.errors += 1
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if conn.topic == self.gt.mask_topic:
            if msg.encoding != "mono8" or msg.step < msg.width or len(msg.data) < msg.step * msg.height:
                self.errors += 1
                return
            data = np.asarray(msg.data, dtype=np.uint8)[: msg.step * msg.height]
            self.gt.masks[stamp] = data.reshape(msg.height, msg.step)[:, : msg.width].copy()
        elif conn.topic == self.gt.activity_topic:
            self.gt.activities[stamp] = int(msg.class_id)
            if not self.gt.activity_names:
                self.gt.activity_names = list(msg.class_names)


def read_ground_truth(path: str | Path) -> GroundTruth:
    """All ground truth of a bag (for small recordings: masks are kept in memory)."""
    with BagReader(path) as bag:
        mask_topic, activity_topic = bag.ground_truth_topics()
        collector = GroundTruthCollector(bag, mask_topic, activity_topic)
        for conn, timestamp, rawdata in bag.messages(collector.topics, damaged="skip"):
            collector(conn, timestamp, rawdata)
        return collector.gt

"""MCAP chunk checksums: filled in the bags we write, verified in the bags we read (format: mcap.dev/spec).

An MCAP chunk record stores the CRC-32 of its uncompressed records (0: none). ``ros2 bag record`` (the mcap
C++ writer) fills it; ``rosbags`` writes 0, and its reader stops at the first chunk whose CRC does not match.
So a bag is scanned once up front: the damaged chunks are found, their messages listed from the message
index records that follow each chunk, and a replay reads around them (``damaged_spans``) and reports each
of their frames as ``checksum_mismatch``.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"\x89MCAP0\r\n"
OP_FOOTER, OP_CHANNEL, OP_MESSAGE, OP_CHUNK, OP_MESSAGE_INDEX = 0x02, 0x04, 0x05, 0x06, 0x07
CRC_AT = 9 + 24  # from a chunk record's start: opcode and length, then start / end time and uncompressed size


class McapFormatError(ValueError):
    """The file's record structure itself is broken (not just a checksum)."""


@dataclass
class Chunk:
    file: Path
    offset: int  # of the chunk record in the file
    start: int  # message log times, ns, inclusive
    end: int
    stored_crc: int
    problem: str | None = None  # why the chunk cannot be trusted; None: verified or without checksum
    index: list[tuple[int, int]] = field(default_factory=list)  # (channel id, log time) per message
    listed: list[tuple[int, int]] = field(default_factory=list)  # the same read from a damaged chunk's records

    @property
    def messages(self) -> list[tuple[int, int]]:
        """(channel id, log time) in time order: from the message index, else as listed from the records."""
        return sorted(self.index or self.listed, key=lambda m: m[1])


@dataclass
class DamagedMessage:
    """A message that cannot be read because its chunk is damaged."""

    topic: str
    timestamp: int
    detail: str


@dataclass
class DamagedSpan:
    """Log times [start, end] that must be read around, and the messages lost in them (time order)."""

    start: int
    end: int
    messages: list[DamagedMessage]


def _u(buf: bytes, at: int, n: int) -> int:
    if at + n > len(buf):
        raise McapFormatError(f"record field at {at} runs past its record")
    return int.from_bytes(buf[at:at + n], "little")


def _string(buf: bytes, at: int) -> tuple[str, int]:
    n = _u(buf, at, 4)
    return buf[at + 4:at + 4 + n].decode("utf-8", "replace"), at + 4 + n


def _records(buf_or_file, size: int, start: int):
    """(opcode, record offset, content) of consecutive records from ``start`` (a file or bytes)."""
    pos = start
    while pos + 9 <= size:
        if isinstance(buf_or_file, bytes):
            head = buf_or_file[pos:pos + 9]
        else:
            buf_or_file.seek(pos)
            head = buf_or_file.read(9)
        op, length = head[0], int.from_bytes(head[1:9], "little")
        if pos + 9 + length > size:
            raise McapFormatError(f"record at byte {pos} (opcode {op:#x}) runs past the end")
        content = (buf_or_file[pos + 9:pos + 9 + length] if isinstance(buf_or_file, bytes)
                   else buf_or_file.read(length))
        yield op, pos, content
        if op == OP_FOOTER:
            return
        pos += 9 + length


def _decompress(data: bytes, compression: str) -> bytes:
    if compression == "":
        return data
    if compression == "zstd":
        try:
            from compression import zstd
        except ImportError:  # Python < 3.14: the backport rosbags depends on
            from backports import zstd
        return zstd.decompress(data)
    if compression == "lz4":
        from lz4.frame import decompress

        return decompress(data)
    raise McapFormatError(f"unknown chunk compression {compression!r}")


def _chunk_records(content: bytes) -> tuple[int, int, int, int, str, bytes]:
    """(start, end, uncompressed size, stored crc, compression, compressed records) of a chunk record."""
    start, end, usize, crc = _u(content, 0, 8), _u(content, 8, 8), _u(content, 16, 8), _u(content, 24, 4)
    compression, at = _string(content, 28)
    n = _u(content, at, 8)
    return start, end, usize, crc, compression, content[at + 8:at + 8 + n]


def _channel(content: bytes) -> tuple[int, str]:
    return _u(content, 0, 2), _string(content, 4)[0]


def _message_index(content: bytes) -> list[tuple[int, int]]:
    channel, n = _u(content, 0, 2), _u(content, 2, 4)
    return [(channel, _u(content, 6 + i, 8)) for i in range(0, n - n % 16, 16)]


def _messages_in(raw: bytes) -> list[tuple[int, int]]:
    """(channel id, log time) of the message records in a chunk's records (for chunks without an index)."""
    return [(_u(c, 0, 2), _u(c, 6, 8)) for op, _, c in _records(raw, len(raw), 0) if op == OP_MESSAGE]


def scan_file(path: Path) -> tuple[list[Chunk], dict[int, str]]:
    """The file's chunks (checked where they carry a CRC) and its channels (id -> topic)."""
    chunks: list[Chunk] = []
    channels: dict[int, str] = {}
    size = path.stat().st_size
    with open(path, "rb") as f:
        if f.read(8) != MAGIC:
            raise McapFormatError(f"{path} is not an MCAP file")
        for op, offset, content in _records(f, size, 8):
            if op == OP_CHANNEL:
                cid, topic = _channel(content)
                channels[cid] = topic
            elif op == OP_MESSAGE_INDEX and chunks:
                chunks[-1].index += _message_index(content)
            elif op == OP_CHUNK:
                chunks.append(_check_chunk(path, offset, content, channels))
    return chunks, channels


def _check_chunk(path: Path, offset: int, content: bytes, channels: dict[int, str]) -> Chunk:
    start, end, usize, crc, compression, data = _chunk_records(content)
    chunk = Chunk(path, offset, start, end, crc)
    if crc == 0:
        return chunk
    try:
        raw = _decompress(data, compression)
    except Exception as e:  # noqa: BLE001 - any decompressor error means the same: damaged data
        chunk.problem = f"cannot decompress ({type(e).__name__}: {e})"
        return chunk
    computed = zlib.crc32(raw)
    if len(raw) != usize or computed != crc:
        chunk.problem = f"CRC-32 {computed:08x} != stored {crc:08x}"
        try:  # listed now in case the file has no message index for it
            chunk.listed = _messages_in(raw)
        except McapFormatError:
            pass
        return chunk
    try:  # rosbags writes channel records inside the first chunk
        channels.update(_channel(c) for op, _, c in _records(raw, len(raw), 0) if op == OP_CHANNEL)
    except McapFormatError:
        pass
    return chunk


class BagChecksums:
    """The chunks of all MCAP files of a bag, checked."""

    def __init__(self, files: list[Path]):
        self.chunks: list[Chunk] = []
        self._topics: dict[tuple[Path, int], str] = {}
        for path in files:
            chunks, channels = scan_file(path)
            self.chunks += chunks
            self._topics.update({(path, cid): topic for cid, topic in channels.items()})

    def report(self) -> dict:
        """For the summary: how many chunks, how many carried a checksum, how many are damaged."""
        return {"chunks": len(self.chunks), "with_checksum": sum(1 for c in self.chunks if c.stored_crc),
                "damaged": sum(1 for c in self.chunks if c.problem)}

    def damaged_spans(self) -> list[DamagedSpan]:
        """Disjoint, sorted time spans of damaged chunks, with every message they make unreadable: those of
        the damaged chunks, and those of other chunks that fall inside the span (rosbags reads by time)."""
        spans: list[list] = []
        for c in sorted((c for c in self.chunks if c.problem), key=lambda c: c.start):
            if spans and c.start <= spans[-1][1]:
                spans[-1][1] = max(spans[-1][1], c.end)
                spans[-1][2].append(c)
            else:
                spans.append([c.start, c.end, [c]])
        out = []
        for start, end, damaged in spans:
            where = "; ".join(f"MCAP chunk at byte {c.offset} of {c.file.name}: {c.problem}" for c in damaged)
            lost = [DamagedMessage(self._topic(c, cid), t, where) for c in damaged for cid, t in c.messages]
            for c in self.chunks:
                if c.problem is None and c.start <= end and c.end >= start:
                    lost += [DamagedMessage(self._topic(c, cid), t, f"in the time span of a damaged chunk, "
                                            f"not readable on its own ({where})")
                             for cid, t in c.messages if start <= t <= end]
            out.append(DamagedSpan(start, end, sorted(lost, key=lambda m: m.timestamp)))
        return out

    def _topic(self, chunk: Chunk, channel: int) -> str:
        return self._topics.get((chunk.file, channel), f"<unknown channel {channel}>")


def fill_chunk_checksums(path: Path) -> int:
    """Write the CRC-32 of every chunk that has none (rosbags writes 0) into ``path``, in place; returns how
    many. The record layout does not change: the CRC is a fixed 4-byte field."""
    filled = 0
    size = path.stat().st_size
    with open(path, "r+b") as f:
        if f.read(8) != MAGIC:
            raise McapFormatError(f"{path} is not an MCAP file")
        for op, offset, content in _records(f, size, 8):  # it seeks before each record: writing between is safe
            if op != OP_CHUNK:
                continue
            _, _, _, crc, compression, data = _chunk_records(content)
            if crc == 0:
                f.seek(offset + CRC_AT)
                f.write(zlib.crc32(_decompress(data, compression)).to_bytes(4, "little"))
                filled += 1
    return filled

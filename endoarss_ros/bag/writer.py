"""Write an output rosbag2 so that it only ever appears complete.

The bag is written inside a hidden temporary folder next to the destination (same file system) and renamed
into place after ``rosbags`` has closed it (its metadata.yaml is written at close). On any exception,
KeyboardInterrupt included, the temporary folder is removed: an interrupted or failed run leaves no bag
that looks finished, and an existing bag at the destination is only replaced (``overwrite``) at the end.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from .msgtypes import typestore

PARTIAL_PREFIX = ".partial-"


class OutputError(RuntimeError):
    """The output bag cannot be written where asked (exists, parent is not a writable folder...)."""


def _qos(*, reliable: bool = True, transient_local: bool = False, depth: int = 10):
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth,
               QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


def check_output_path(path: str | Path, *, overwrite: bool = False) -> Path:
    """Fail early, with the reason, when ``path`` cannot become a bag."""
    out = Path(path)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise OutputError(f"output {out} already exists (use --overwrite to replace it)")
        if not out.is_dir():
            raise OutputError(f"output {out} exists and is not a bag folder; not replacing it")
    parent = out.absolute().parent
    for p in (parent, *parent.parents):
        if p.exists():
            if not p.is_dir():
                raise OutputError(f"cannot write output {out}: {p} is not a directory")
            break
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write output {out}: cannot create {parent} ({e.strerror or e})") from e
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write output {out}: {parent} is not writable")
    return out


class BagOutput:
    """``with BagOutput(path) as out: out.add(topic, type); out.write(topic, t, msg)`` -> complete bag or none."""

    def __init__(self, path: str | Path, *, storage: str = "mcap", overwrite: bool = False):
        if storage not in ("mcap", "sqlite3"):
            raise OutputError(f"storage must be mcap or sqlite3, got {storage!r}")
        self.path = check_output_path(path, overwrite=overwrite)
        self.storage = storage
        self.overwrite = overwrite
        self.store = typestore()
        self._tmpdir: Path | None = None
        self._writer = None
        self._conns: dict[str, tuple[object, str]] = {}
        self.counts: dict[str, int] = {}

    @property
    def temp_path(self) -> Path | None:
        return None if self._tmpdir is None else self._tmpdir / self.path.name

    def __enter__(self) -> BagOutput:
        from rosbags.rosbag2 import StoragePlugin, Writer

        parent = self.path.absolute().parent
        try:
            self._tmpdir = Path(tempfile.mkdtemp(prefix=f".{self.path.name}{PARTIAL_PREFIX}", dir=parent))
        except OSError as e:
            raise OutputError(f"cannot write output {self.path}: {e.strerror or e}") from e
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        try:
            self._writer = Writer(self.temp_path, version=8, storage_plugin=plugin)
            self._writer.open()
        except BaseException as e:
            self._discard()
            raise OutputError(f"cannot write output {self.path}: {e}") from e
        return self

    def add(self, topic: str, msgtype: str, *, latched: bool = False, msgdef: str | None = None,
            rihs01: str | None = None) -> None:
        """Declare a topic (once). ``latched``: transient-local QoS, replayed as latched by ``ros2 bag play``."""
        if topic in self._conns:
            return
        qos = [_qos(transient_local=latched, depth=1 if latched else 10)]
        if msgdef is not None and rihs01 is not None:
            conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=rihs01,
                                               offered_qos_profiles=qos)
        else:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store, offered_qos_profiles=qos)
        self._conns[topic] = (conn, msgtype)
        self.counts[topic] = 0

    def write(self, topic: str, timestamp: int, msg) -> None:
        conn, msgtype = self._conns[topic]
        self._writer.write(conn, int(timestamp), self.store.serialize_cdr(msg, msgtype))
        self.counts[topic] += 1

    def write_raw(self, topic: str, timestamp: int, rawdata: bytes) -> None:
        conn, _ = self._conns[topic]
        self._writer.write(conn, int(timestamp), rawdata)
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._writer.close()
            self._writer = None
            if self.path.exists():
                if not self.overwrite:
                    raise OutputError(f"output {self.path} appeared while writing; left the new bag out")
                shutil.rmtree(self.path)
            os.replace(self.temp_path, self.path)
        except BaseException:
            self._discard()
            raise
        shutil.rmtree(self._tmpdir, ignore_errors=True)
        self._tmpdir = None

    def _discard(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except BaseException:  # noqa: BLE001 - we are throwing it away anyway
                pass
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

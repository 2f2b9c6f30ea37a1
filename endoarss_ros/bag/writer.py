"""Write an output rosbag2 so that it only ever appears complete.

The bag is written inside a hidden partial folder next to the destination (same file system; named as in
``partials``) and renamed into place after ``rosbags`` has closed it (its metadata.yaml is written at close)
and its MCAP chunk checksums are filled in. On any exception, KeyboardInterrupt included, the partial is
removed: an interrupted or failed run leaves no bag that looks finished, and an existing bag at the
destination is only replaced (``overwrite``) at the end. Given an ``OutputSet``, the bag is only registered
there and goes into place with the run's other outputs, at its commit.
"""
from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from .mcap_checksums import fill_chunk_checksums
from .msgtypes import typestore
from .partials import OutputError, OutputSet, write_failure

__all__ = ["BagOutput", "OutputError", "check_output_path"]


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

    def __init__(self, path: str | Path, *, storage: str = "mcap", overwrite: bool = False,
                 outputs: OutputSet | None = None):
        if storage not in ("mcap", "sqlite3"):
            raise OutputError(f"storage must be mcap or sqlite3, got {storage!r}")
        self.path = check_output_path(path, overwrite=overwrite)
        self.storage = storage
        self.overwrite = overwrite
        self._own_outputs = outputs is None
        self.outputs = OutputSet(overwrite=overwrite) if outputs is None else outputs
        self.store = typestore()
        self.temp_path: Path | None = None
        self._writer = None
        self._conns: dict[str, tuple[object, str]] = {}
        self.counts: dict[str, int] = {}

    def __enter__(self) -> BagOutput:
        from rosbags.rosbag2 import StoragePlugin, Writer

        try:
            self.temp_path = self.outputs.folder(self.path) / self.path.name
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
            rihs01: str | None = None, qos: list | None = None) -> None:
        """Declare a topic (once). ``latched``: transient-local QoS, replayed as latched by ``ros2 bag play``;
        ``qos``: the offered QoS profiles to record instead (a copy keeps the original's)."""
        if topic in self._conns:
            return
        qos = list(qos) if qos else [_qos(transient_local=latched, depth=1 if latched else 10)]
        if msgdef is not None and rihs01 is not None:
            conn = self._writer.add_connection(topic, msgtype, msgdef=msgdef, rihs01=rihs01,
                                               offered_qos_profiles=qos)
        else:
            conn = self._writer.add_connection(topic, msgtype, typestore=self.store, offered_qos_profiles=qos)
        self._conns[topic] = (conn, msgtype)
        self.counts[topic] = 0

    def write(self, topic: str, timestamp: int, msg) -> None:
        _, msgtype = self._conns[topic]
        self.write_raw(topic, timestamp, self.store.serialize_cdr(msg, msgtype))

    def write_raw(self, topic: str, timestamp: int, rawdata: bytes) -> None:
        conn, _ = self._conns[topic]
        try:
            self._writer.write(conn, int(timestamp), rawdata)
        except (OSError, sqlite3.Error) as e:  # a full disk, mostly
            raise write_failure(e, self.path) from e
        self.counts[topic] += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._writer.close()
            self._writer = None
            for mcap in self.temp_path.glob("*.mcap"):
                fill_chunk_checksums(mcap)
            if self._own_outputs:
                self.outputs.commit()
        except (OSError, sqlite3.Error) as e:
            self._discard()
            raise write_failure(e, self.path) from e
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            try:
                writer.close()
            except BaseException:  # noqa: BLE001 - we are throwing it away anyway
                pass
        self.outputs.discard()

"""An archive of recordings for `endoarss replay-many`: the work list, each recording's output folder, and the
record of what a finished recording's outputs were made from (its resume marker). Plain Python, no Ray.

A recording is a rosbag2 folder (``metadata.yaml`` + MCAP or sqlite3 files). Its outputs are exactly those of
``endoarss replay -o OUT_ROOT/<name>/<name>``: the bag ``<name>/``, ``<name>.summary.json``, ``<name>.timeline.png``
and, when asked, ``<name>.mp4``. The summary is put in place last (``partials.OutputSet``), so it is the commit
marker: a folder without one holds nothing finished. It carries ``made_from`` (the input's ``recording_stat``, weights
identity, options, package version); a rerun skips a recording whose summary says the same.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..files import file_sha256, write_atomic
from .reader import BagError, resolve_bag_path

STORAGE_SUFFIXES = (".mcap", ".db3")
LIST_SUFFIXES = (".txt", ".list")
FAILURE_FILE = "failure.json"  # a recording's failure record (driver-written; removed when it is redone)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Recording:
    path: Path  # the rosbag2 folder (or a loose storage file, which the replay then rejects with its reason)
    name: str  # unique in the run: the output folder's and the output bag's name
    size: int  # bytes on disk (the largest go first)

    def folder(self, out_root: Path) -> Path:
        return Path(out_root) / self.name

    def output(self, out_root: Path) -> Path:
        return self.folder(out_root) / self.name

    def summary_path(self, out_root: Path) -> Path:
        return self.folder(out_root) / f"{self.name}.summary.json"


def _storage_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file())


def _size(path: Path) -> int:
    files = _storage_files(path) if path.is_dir() else [path]
    return sum(f.stat().st_size for f in files)


def _from_list(list_file: Path) -> list[Path]:
    """The recordings named in a text file, one a line (``#`` comments; relative to the file's folder)."""
    paths = []
    for line in list_file.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            p = Path(line).expanduser()
            paths.append(p if p.is_absolute() else list_file.parent / p)
    return paths


def _search(folder: Path) -> list[Path]:
    """rosbag2 folders under ``folder`` (not descended into), plus storage files that are in none."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        if "metadata.yaml" in files:
            found.append(Path(root))
            dirs.clear()
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(root) / f for f in sorted(files) if f.endswith(STORAGE_SUFFIXES)]
    return found


def _expand(item: Path) -> list[Path]:
    if not item.exists():
        raise BagError(f"input {item}: no such file or directory")
    if item.is_dir():
        if (item / "metadata.yaml").is_file():
            return [item]
        return _search(item)
    if item.suffix in LIST_SUFFIXES:
        return [p for entry in _from_list(item) for p in _expand(entry)]
    try:
        return [resolve_bag_path(item)]  # a storage file inside a rosbag2 folder: that folder
    except BagError:
        return [item]  # a loose file: the replay says why it cannot read it, as that recording's failure


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "recording"


def _stem(path: Path) -> str:
    return _safe(path.stem if path.is_file() else path.name)


def find_recordings(inputs: list[str | Path]) -> list[Recording]:
    """Every recording named by ``inputs`` (recordings, folders searched for them, list files), each once,
    the largest first. Names are the recording's folder name; where two share one, each gets a short hash
    of its full path added. Raises BagError for an input that does not exist."""
    paths: dict[Path, None] = {}
    for item in inputs:
        for p in _expand(Path(item).expanduser()):
            paths.setdefault(p.resolve(), None)
    stems: dict[str, int] = {}
    for p in paths:
        stems[_stem(p)] = stems.get(_stem(p), 0) + 1
    recordings = []
    for p in paths:
        name = _stem(p)
        if stems[name] > 1:
            name = f"{name}-{hashlib.sha1(str(p).encode()).hexdigest()[:8]}"
        recordings.append(Recording(p, name, _size(p)))
    return sorted(recordings, key=lambda r: (-r.size, r.name))


def recording_stat(path: Path) -> dict:
    """What identifies a recording's input without reading it: its path and each file's name, size and mtime."""
    path = Path(path)
    files = _storage_files(path) if path.is_dir() else [path] if path.exists() else []
    return {"path": str(path),
            "files": [{"name": f.name, "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]}


def file_identity(path: str | Path) -> dict:
    """A weights file's identity: its sha256 and size."""
    return {"path": str(path), "sha256": file_sha256(path), "size": Path(path).stat().st_size}


def read_json(path: Path) -> dict | None:
    """A committed summary, or None (missing, or not readable JSON)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_finished(recording: Recording, out_root: Path, made_from: dict) -> bool:
    """True when the recording's committed summary was made from exactly ``made_from``."""
    summary = read_json(recording.summary_path(out_root))
    return summary is not None and summary.get("made_from") == made_from


def clear_folder(folder: Path) -> None:
    """Remove a recording's previous outputs, partials and failure record, the summary (commit marker) first."""
    folder = Path(folder)
    if not folder.exists():
        return
    for summary in folder.glob("*.summary.json"):
        summary.unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


def record_failure(recording: Recording, out_root: Path, failure: dict) -> None:
    write_atomic(recording.folder(out_root) / FAILURE_FILE, json.dumps(failure, indent=2) + "\n")

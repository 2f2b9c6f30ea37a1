"""Outputs that appear together and complete, or not at all.

Every output (bag folder, summary, timeline, video) is written under a *partial* name next to its destination:
``.<name>.partial-<pid>-<host>[.<ext>]``, hidden, on the same file system, with the writing process's id and
host. ``OutputSet.commit`` renames all of them into place in one step, with SIGINT / SIGTERM held back until
it is done; on any failure or interrupt before it, ``discard`` removes them all. A process killed with SIGKILL
cannot clean up: the next run that writes into the same folder removes the partials whose process is gone
(same host, pid no longer running). Partials of other hosts (shared file systems) are left alone.
"""
from __future__ import annotations

import errno
import os
import re
import shutil
import signal
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

PARTIAL_MARK = ".partial-"
_PARTIAL_NAME = re.compile(r"^\..+\.partial-(?P<pid>\d+)-(?P<host>[A-Za-z0-9_]+)(?:\.[A-Za-z0-9]+)?$")
_DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
PAUSE_ENV = "ENDOARSS_REPLAY_PAUSE_AT"
NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class OutputError(RuntimeError):
    """An output cannot be written where asked (exists, parent is not a writable folder, disk full...)."""


def write_failure(error: BaseException, what: Path) -> OutputError:
    """An OSError (or sqlite3 error) met while writing ``what``, as an OutputError that says it plainly."""
    full = "database or disk is full" in str(error)  # sqlite3's way of saying ENOSPC
    if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS or full:
        return OutputError(f"cannot write {what}: no space left on device; nothing was kept")
    if isinstance(error, OSError):
        return OutputError(f"cannot write {what}: {error.strerror or error}; nothing was kept")
    return OutputError(f"cannot write {what}: {type(error).__name__}: {error}; nothing was kept")


class InterruptedAfterCommit(KeyboardInterrupt):
    """SIGINT / SIGTERM arrived while the outputs were being put in place: they are complete and kept."""

    def __init__(self, files: list[Path]):
        super().__init__(f"interrupted after the outputs were complete: {', '.join(map(str, files))}")
        self.files = files


def host_tag() -> str:
    """This host's name as it appears in partial names (letters, digits and ``_`` only)."""
    return re.sub(r"[^A-Za-z0-9]", "_", socket.gethostname()) or "host"


def partial_name(final: Path, *, ext: str = "") -> Path:
    """The partial of ``final`` written by this process; ``ext`` for writers that pick the format from the
    extension (OpenCV's video writer)."""
    return final.with_name(f".{final.name}{PARTIAL_MARK}{os.getpid()}-{host_tag()}{ext}")


def partial_owner(name: str) -> tuple[int, str] | None:
    """(pid, host tag) of a partial's name, None when ``name`` is not one of ours."""
    m = _PARTIAL_NAME.match(name)
    return (int(m.group("pid")), m.group("host")) if m else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def remove_stale_partials(folder: Path) -> list[Path]:
    """Remove the partials in ``folder`` left by processes of this host that no longer run; returns them."""
    removed = []
    here = host_tag()
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        owner = partial_owner(entry.name)
        if owner is None or owner[1] != here or owner[0] == os.getpid() or _pid_alive(owner[0]):
            continue
        _remove(entry)
        removed.append(entry)
    return removed


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextmanager
def signals_held():
    """SIGINT / SIGTERM that arrive inside are delivered (as KeyboardInterrupt) only after it; the list it
    yields tells whether one came."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received
        return
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in _DEFERRED_SIGNALS}
    try:
        yield received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def pause_point(phase: str, *, until=lambda: False) -> None:
    """Test hook: with ``ENDOARSS_REPLAY_PAUSE_AT=<phase>`` the process says ``paused at <phase>`` on stderr
    and waits there (at most 60 s, or until ``until()``), so a test can signal it in that exact phase."""
    if os.environ.get(PAUSE_ENV) != phase:
        return
    os.environ.pop(PAUSE_ENV)  # once
    print(f"paused at {phase}", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not until():
        time.sleep(0.02)


class OutputSet:
    """Partials registered with their destinations; ``commit`` renames them all into place, ``discard``
    removes them all. As a context manager: discard on any exception (commit stays explicit)."""

    def __init__(self, *, overwrite: bool = False):
        self.overwrite = overwrite  # an existing bag folder at a destination may be replaced
        self._staged: list[tuple[Path, Path, Path]] = []  # (partial to move, destination, partial to remove)
        self._cleaned: set[Path] = set()
        self.committed: list[Path] = []

    def partial(self, final: Path, *, ext: str = "") -> Path:
        """A partial path for ``final`` (a file), registered; stale partials of its folder are removed first."""
        path = partial_name(Path(final), ext=ext)
        self._clean(path.parent)
        self._staged.append((path, Path(final), path))
        return path

    def folder(self, final: Path) -> Path:
        """A new empty partial folder for ``final``, registered; write ``final`` as ``<folder>/<final.name>``
        (tools like rosbags name their files after the folder)."""
        holder = partial_name(Path(final))
        self._clean(holder.parent)
        holder.mkdir()
        self._staged.append((holder / Path(final).name, Path(final), holder))
        return holder

    def forget(self, partial: Path) -> None:
        """Drop a registered partial that will not be written after all (and remove it, if it exists)."""
        for entry in [e for e in self._staged if e[0] == partial]:
            self._staged.remove(entry)
            _remove(entry[2])

    def write_text(self, final: Path, text: str) -> None:
        final = Path(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self.partial(final).write_text(text)
        except OSError as e:
            raise write_failure(e, final) from e

    def _clean(self, folder: Path) -> None:
        folder = folder.absolute()
        if folder not in self._cleaned:
            self._cleaned.add(folder)
            remove_stale_partials(folder)

    def commit(self) -> list[Path]:
        """Rename every partial into place (an existing destination file is replaced; an existing folder only
        with ``overwrite``); if one rename fails, the ones done are undone. Signals are held meanwhile; one
        that came raises InterruptedAfterCommit afterwards (the outputs are complete and stay)."""
        with signals_held() as received:
            for src, dst, _ in self._staged:
                if not src.exists():
                    raise OutputError(f"output {dst} was not written (its partial {src} is missing)")
                if dst.is_dir() and not dst.is_symlink() and not (self.overwrite and src.is_dir()):
                    raise OutputError(f"output {dst} is a folder that appeared while writing; left the new one out")
            done: list[tuple[Path, Path, Path | None]] = []  # (partial, destination, old destination set aside)
            dst = None
            try:
                for src, dst, holder in self._staged:
                    done.append(self._put_in_place(src, dst, holder))
                    pause_point("commit", until=lambda: bool(received))
            except BaseException as e:
                self._roll_back(done)
                self.discard()
                if isinstance(e, OSError):
                    raise write_failure(e, dst) from e
                raise
            self.committed = [dst for _, dst, _ in done]
            self._staged.clear()
            for _, _, old in done:
                if old is not None:
                    _remove(old)
        if received:
            raise InterruptedAfterCommit(self.committed)
        return self.committed

    @staticmethod
    def _put_in_place(src: Path, dst: Path, holder: Path) -> tuple[Path, Path, Path | None]:
        old = None
        if dst.is_dir() and not dst.is_symlink():  # os.replace cannot replace a non-empty folder
            old = partial_name(dst).with_name(partial_name(dst).name + ".old")
            os.replace(dst, old)
        try:
            os.replace(src, dst)
        except BaseException:
            if old is not None:
                os.replace(old, dst)
            raise
        if holder != src:
            holder.rmdir()
        return src, dst, old

    @staticmethod
    def _roll_back(done: list[tuple[Path, Path, Path | None]]) -> None:
        for _, dst, old in reversed(done):
            _remove(dst)
            if old is not None:
                os.replace(old, dst)

    def discard(self) -> None:
        """Remove every partial not yet committed. Signals are held meanwhile (and dropped: the run is
        ending with its own error), so a second Ctrl-C cannot leave debris."""
        with signals_held():
            for _, _, holder in self._staged:
                _remove(holder)
            self._staged.clear()

    def __enter__(self) -> OutputSet:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()


@contextmanager
def committed_outputs(overwrite: bool, output: str | Path):
    """An ``OutputSet`` whose partials are put in place together when the block ends without error (after the
    ``before_commit`` pause point); a full disk anywhere in the block is one clear error naming ``output``'s
    folder. Shared by replay and scrub."""
    with OutputSet(overwrite=overwrite) as outputs:
        try:
            yield outputs
        except OSError as e:
            if e.errno not in NO_SPACE_ERRNOS:
                raise
            raise write_failure(e, Path(output).parent) from e
        pause_point("before_commit")
        outputs.commit()

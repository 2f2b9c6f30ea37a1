"""Writing and identifying files, for every layer: a write that is never half done (``write_atomic``), a file's
sha256 (``file_sha256``), and matplotlib for PNGs (``pyplot``: headless, its cache off ``$HOME``)."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path


def write_atomic(path: str | Path, data: str | bytes | Callable[[Path], object]) -> Path:
    """Write ``path`` through a hidden temporary next to it and a rename (never half a file). ``data``: text,
    bytes, or a function that writes the temporary path it is given (``np.savez``, ``fig.savefig``, an export);
    the temporary keeps ``path``'s suffix for writers that choose the format by it. Nothing is left on error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}{path.suffix}")
    try:
        if isinstance(data, str):
            tmp.write_text(data)
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file's bytes, read once per path, size and modification time."""
    p = Path(path).resolve()
    st = p.stat()
    return _sha256(str(p), st.st_size, st.st_mtime_ns)


@lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pyplot():
    """matplotlib.pyplot with the Agg backend; its font cache and config go to a folder of this user under the
    system temp dir unless MPLCONFIGDIR says otherwise (matplotlib's default is $HOME/.cache, $HOME/.config)."""
    if not os.environ.get("MPLCONFIGDIR"):
        folder = Path(tempfile.gettempdir()) / f"endoarss-matplotlib-{os.getuid()}"
        try:
            folder.mkdir(mode=0o700, exist_ok=True)
            mine = folder.stat().st_uid == os.getuid() and not folder.is_symlink()
        except OSError:
            mine = False
        os.environ["MPLCONFIGDIR"] = str(folder) if mine else tempfile.mkdtemp(prefix="endoarss-matplotlib-")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt

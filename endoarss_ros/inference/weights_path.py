"""Where the weights file named by a user (or the default demo weights) is on disk."""
from __future__ import annotations

from pathlib import Path

DEFAULT_MODEL = "models/demo/endoarss_demo.safetensors"


def resolve_model_path(model: str | Path) -> Path:
    """The weights file: as given (absolute, or relative to the current directory), else relative to the
    package share directory (colcon install) or the source tree. Returns the path as given when none exists,
    so the error names the path the user asked for."""
    path = Path(model).expanduser()
    if path.is_absolute() or path.exists():
        return path
    candidates = [Path(__file__).resolve().parents[2] / path]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("endoarss_ros")) / path)
    except (ImportError, LookupError, ValueError, OSError):  # not in an ament environment
        pass
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return path

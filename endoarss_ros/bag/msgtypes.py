"""A rosbags typestore with the standard ROS 2 messages plus this package's own (msg/*.msg).

Pure Python: bags can be written and read without a ROS installation.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

PACKAGE = "endoarss_ros"
STORE = "ros2_jazzy"  # the distribution the package targets; sensor_msgs/std_msgs are stable across them


def msg_dir() -> Path:
    """The package's msg/ folder: the source tree first, then the installed share/ (colcon)."""
    source = Path(__file__).resolve().parents[2] / "msg"
    if source.is_dir():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        share = Path(get_package_share_directory(PACKAGE)) / "msg"
        if share.is_dir():
            return share
    except (ImportError, LookupError):  # no ROS, or the package is not installed there
        pass
    raise FileNotFoundError(f"cannot find the {PACKAGE} msg/ folder (looked in {source} and share/{PACKAGE})")


@lru_cache(maxsize=1)
def typestore():
    """A typestore (cached) with our messages registered as ``endoarss_ros/msg/<Name>``."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores(STORE))
    types: dict = {}
    for path in sorted(msg_dir().glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"{PACKAGE}/msg/{path.stem}"))
    store.register(types)
    return store

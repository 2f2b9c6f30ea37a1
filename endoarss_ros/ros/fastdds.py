"""Fast DDS settings that every endoarss process starting ROS applies before ``rclpy.init``."""
from __future__ import annotations

import collections
import os
from pathlib import Path

# Jazzy ships Fast DDS 2.x (FASTRTPS_*); Kilted and later read FASTDDS_*.
PROFILE_ENV_VARS = ("FASTRTPS_DEFAULT_PROFILES_FILE", "FASTDDS_DEFAULT_PROFILES_FILE")
PROFILE_FILE_NAME = "fastdds_shm.xml"
SHM_SEGMENT_BYTES = 16 * 1024 * 1024


def shipped_profile_path() -> Path:
    """The profile in the source tree (venv route) or in share/endoarss_ros/config (colcon install)."""
    source = Path(__file__).resolve().parents[2] / "config" / PROFILE_FILE_NAME
    if source.is_file():
        return source
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("endoarss_ros")) / "config" / PROFILE_FILE_NAME
        if installed.is_file():
            return installed
    except (ImportError, LookupError):
        pass
    raise FileNotFoundError(f"the shipped Fast DDS profile {PROFILE_FILE_NAME} was not found")


def apply_profile(env: dict | os._Environ | None = None) -> str | None:
    """Point Fast DDS at our profile unless the user chose one. Returns the profile in effect (or None).

    Call before the first ROS participant of the process exists (i.e. before ``rclpy.init``), or pass the
    environment of a child process.
    """
    env = os.environ if env is None else env
    for name in PROFILE_ENV_VARS:
        if env.get(name):
            return env[name]
    path = str(shipped_profile_path())
    for name in PROFILE_ENV_VARS:
        env[name] = path
    return path


def shm_mappings() -> dict[str, int]:
    """Bytes this process has mapped per Fast DDS shared-memory file (Linux; empty elsewhere).

    The participant's data segment is ``/dev/shm/fastrtps_<guid>``: about 0.5 MiB with Fast DDS defaults,
    16 MiB and more with our profile. Tests and diagnostics use this to show the profile is in effect.
    """
    sizes: collections.Counter[str] = collections.Counter()
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/dev/shm/fastrtps_"):
                    start, end = (int(x, 16) for x in fields[0].split("-"))
                    sizes[fields[5]] += end - start
    except OSError:
        return {}
    return dict(sizes)


def largest_shm_segment() -> int:
    """Size of the largest Fast DDS data segment mapped by this process (0 when none)."""
    return max((size for name, size in shm_mappings().items() if "_port" not in name), default=0)

"""The console scripts exist and answer --help."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    found = str(path) if path.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"console script {name} is not installed (run scripts/setup_env.sh)")
    return found


def test_endoarss_help_lists_subcommands():
    out = subprocess.run([_script("endoarss"), "--help"], capture_output=True, text=True, check=True).stdout
    assert "usage: endoarss" in out and "check" in out


def test_perception_help_accepts_ros_args():
    out = subprocess.run([_script("endoarss-perception"), "--help"], capture_output=True, text=True,
                         check=True).stdout
    assert "--ros-args" in out

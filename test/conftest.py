"""Shared test fixtures. ROS tests run real rclpy processes from the venv's interpreter."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ros_available() -> bool:
    return importlib.util.find_spec("rclpy") is not None


requires_ros = pytest.mark.skipif(not ros_available(), reason="rclpy is not installed (run scripts/setup_env.sh)")


@pytest.fixture
def child_env():
    """Environment for child processes: the ROS wheels' bootstrap guard must not leak into them."""
    env = dict(os.environ)
    env.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def python() -> str:
    return sys.executable

"""Shared test fixtures. ROS tests run real rclpy processes from the venv's interpreter."""
from __future__ import annotations

import importlib.util
import itertools
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def ros_available() -> bool:
    return importlib.util.find_spec("rclpy") is not None


requires_ros = pytest.mark.skipif(not ros_available(), reason="rclpy is not installed (run scripts/setup_env.sh)")


_domains = itertools.count()


@pytest.fixture(autouse=True)
def isolated_ros_domain(monkeypatch) -> int:
    """Each test talks on its own DDS domain (inherited by its child processes), so tests running at the same
    time on one machine, or a robot on domain 0, never see each other's topics or shared-memory segments."""
    domain = 1 + (os.getpid() * 7 + next(_domains)) % 200
    monkeypatch.setenv("ROS_DOMAIN_ID", str(domain))
    return domain


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

"""The checks behind launch/perception.launch.py (endoarss_ros.ros.launch_checks), without the launch tools;
test/launch/test_launch_file.py drives the launch file itself where `launch` is installed."""
from __future__ import annotations

import os

import pytest

from test.conftest import REPO, requires_ros

pytestmark = requires_ros


@pytest.mark.parametrize("given,expected", [
    ("/robot/left/image_raw/", "/robot/left/image_raw"),
    ("  /robot//left///image_raw// ", "/robot/left/image_raw"),
    ("image_raw", "image_raw"),
    ("~/image", "~/image"),
])
def test_topic_arguments_are_normalised(given, expected):
    from endoarss_ros.ros.launch_checks import normalise_topic

    assert normalise_topic(given) == expected


@pytest.mark.parametrize("given,why", [
    ("/bad topic", "must not contain characters other than"),
    ("/robot/1left/image", "must not start with a number"),
    ("", "must not be empty"),
    ("   ", "must not be empty"),
    ("//", "must not end with a forward slash"),
])
def test_invalid_topic_arguments_are_named(given, why):
    from endoarss_ros.ros.launch_checks import normalise_topic

    with pytest.raises(ValueError) as ei:
        normalise_topic(given, "image")
    assert str(ei.value).startswith(f"image:={given!r} is not a valid topic name: ") and why in str(ei.value)


def test_rviz_is_looked_for_in_the_ament_prefixes(tmp_path, monkeypatch):
    from endoarss_ros.ros.launch_checks import rviz_problem

    monkeypatch.setenv("AMENT_PREFIX_PATH", str(tmp_path))
    problem = rviz_problem()
    assert "package rviz2 is not installed here" in problem and str(tmp_path) in problem
    assert "apt install ros-jazzy-rviz2" in problem and "rviz:=false" in problem
    (tmp_path / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (tmp_path / "share" / "ament_index" / "resource_index" / "packages" / "rviz2").write_text("")
    assert "missing or not executable" in rviz_problem()
    exe = tmp_path / "lib" / "rviz2" / "rviz2"
    exe.parent.mkdir(parents=True)
    exe.write_text("#!/bin/sh\n")
    os.chmod(exe, 0o755)
    assert rviz_problem() is None


def test_only_a_failing_exit_of_its_own_fails_the_launch():
    from endoarss_ros.ros.launch_checks import node_exit_problem

    assert "exited with code 1" in node_exit_problem("perception_node-1", 1, shutting_down=False)
    assert "exited with code -11" in node_exit_problem("perception_node-1", -11, shutting_down=False)
    assert node_exit_problem("perception_node-1", 0, shutting_down=False) is None
    assert node_exit_problem("perception_node-1", -2, shutting_down=True) is None  # launch's own Ctrl-C


def test_rviz2_is_declared_where_the_dependencies_are():
    assert "<exec_depend>rviz2</exec_depend>" in (REPO / "package.xml").read_text()

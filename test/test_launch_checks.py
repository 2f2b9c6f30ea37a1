"""The checks behind launch/perception.launch.py (endoarss_ros.ros.launch_checks), without the launch tools;
test/launch/test_launch_file.py drives the launch file itself where `launch` is installed."""
from __future__ import annotations

import os

import pytest
import yaml

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


def _launch_file_arguments() -> set[str]:
    """The arguments launch/perception.launch.py declares, read from its source (no launch tools needed): the
    keys of its ``_ARGUMENTS`` table, and every node parameter when it declares one argument per entry of
    ``NODE_ARGUMENTS``."""
    import ast

    from endoarss_ros.ros.launch_checks import NODE_ARGUMENTS

    tree = ast.parse((REPO / "launch" / "perception.launch.py").read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_ARGUMENTS" for t in node.targets):
            names |= set(ast.literal_eval(node.value))
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant):
                names.add(first.value)
        if isinstance(node, ast.ListComp) and isinstance(node.elt, ast.Call) \
                and getattr(node.elt.func, "id", "") == "DeclareLaunchArgument":
            source = ast.unparse(node.generators[0].iter)
            if source in ("NODE_ARGUMENTS", "NODE_ARGUMENTS.items()"):
                names |= set(NODE_ARGUMENTS)
    return names


def _launch_line_arguments(text: str) -> set[str]:
    """Every ``name:=`` a text tells users to write on a launch line: not the node's own ``-p``/``-r``
    arguments, ``endoarss play --remap``, or placeholders in capitals."""
    import re

    found = set()
    for m in re.finditer(r"(?:(-p|-r|--remap) +)?([A-Za-z_][A-Za-z0-9_.]*):=", text):
        if m.group(1) is None and not m.group(2).isupper() and not m.group(2).startswith("__"):
            found.add(m.group(2))
    return found


def test_every_parameter_the_docs_set_on_the_launch_line_is_a_launch_argument():
    from endoarss_ros.ros.params import SPECS

    declared = _launch_file_arguments()
    assert {"namespace", "image", "params_file", "use_sim_time", "rviz"} <= declared
    assert {spec.name for spec in SPECS} <= declared  # cameras, input_size, ... as the issue asked
    for doc in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        used = _launch_line_arguments(doc.read_text())
        assert used - declared == set(), f"{doc.name} sets {sorted(used - declared)} on the launch line"


@pytest.mark.parametrize("text,expected", [("true", True), ("True", True), ("TRUE", True), ("1", True),
                                           ("false", False), ("False", False), ("0", False)])
def test_launch_booleans_in_every_spelling_launch_accepts(text, expected):
    from endoarss_ros.ros.launch_checks import launch_bool

    assert launch_bool(text, "rviz") is expected


def test_launch_arguments_become_typed_parameters_or_one_clear_error():
    from endoarss_ros.ros.launch_checks import launch_bool, parameter_overrides

    overrides = parameter_overrides({"cameras": "['left', 'right']", "overlay_alpha": "1", "input_size": "[]",
                                     "autostart": "False", "max_batch": "4", "model": "", "device": "cpu"})
    assert overrides == {"cameras": ["left", "right"], "overlay_alpha": 1.0, "input_size": [],
                         "autostart": False, "max_batch": 4, "device": "cpu"}  # model '' keeps the file's
    assert isinstance(overrides["overlay_alpha"], float)
    for given, words in [({"max_batch": "two"}, "max_batch:='two' must be an integer"),
                         ({"overlay_alpha": "2.0"}, "overlay_alpha must be in [0.0, 1.0]"),
                         ({"cameras": "left"}, "cameras:='left' must be a list"),
                         ({"autostart": "yes please"}, "autostart:='yes please' must be true or false")]:
        with pytest.raises(ValueError) as ei:
            parameter_overrides(given)
        assert words in str(ei.value)
    with pytest.raises(ValueError):
        launch_bool("maybe", "use_sim_time")


def test_a_misspelt_launch_argument_is_named_with_the_one_meant():
    from endoarss_ros.ros.launch_checks import misspelt_arguments

    known = _launch_file_arguments()
    assert misspelt_arguments({"camera", "image", "robot_description"}, known) == [
        "unknown launch argument 'camera': did you mean 'cameras'?"]


def test_the_missing_model_hint_matches_where_the_node_runs():
    from endoarss_ros.ros.launch_checks import LAUNCHED_ENV, parameter_hint

    assert parameter_hint("model", "/w.safetensors", environ={}) == "-p model:=/w.safetensors"
    assert parameter_hint("model", "/w", environ={LAUNCHED_ENV: "1"}) == "model:=/w on the `ros2 launch` line"


def _declared_values(tmp_path, *params_files) -> dict:
    """The node's parameter values as rcl and rclpy read ``params_files`` (in order) and ``declare_all`` declares
    them: a real node in a context of its own."""
    import rclpy
    from rclpy.context import Context

    from endoarss_ros.ros.params import SPECS, declare_all

    context = Context()
    args = ["--ros-args", *[a for f in params_files for a in ("--params-file", str(f))]]
    rclpy.init(args=args, context=context)
    try:
        node = rclpy.create_node("endoarss_perception", context=context)
        declare_all(node)
        values = {s.name: node.get_parameter(s.name).value for s in SPECS}
        node.destroy_node()
        return values
    finally:
        rclpy.shutdown(context=context)


def test_an_empty_list_on_the_launch_line_overrides_the_params_file(tmp_path):
    """`params_file:=mine.yaml cameras:=[]` (issue 29 item 1): launch_ros refuses an empty list, so the launch file
    hands the empty ones to the node in a file of their own, after the params file; the node reads them as []."""
    from endoarss_ros.ros.launch_checks import empty_list_parameters_file, parameter_overrides

    mine = tmp_path / "mine.yaml"
    mine.write_text("/**/endoarss_perception:\n  ros__parameters:\n    cameras: [left, right]\n"
                    "    warmup_size: [112, 140]\n    input_size: [224, 224]\n    instruments.classes: ['1']\n")
    overrides = parameter_overrides({"cameras": "[]", "warmup_size": "[]", "input_size": "[]",
                                     "instruments.classes": "[]", "overlay_alpha": ""})
    assert overrides == {"cameras": [], "warmup_size": [], "input_size": [], "instruments.classes": []}
    empty = empty_list_parameters_file(overrides, str(tmp_path))
    assert empty is not None and yaml.safe_load(open(empty)) == {"/**": {"ros__parameters": overrides}}
    assert empty_list_parameters_file({"cameras": ["left"], "max_batch": 2}, str(tmp_path)) is None

    before = _declared_values(tmp_path, mine)
    assert before["cameras"] == ["left", "right"] and before["warmup_size"] == [112, 140]
    after = _declared_values(tmp_path, mine, empty)
    assert after["cameras"] == [] and after["warmup_size"] == [] and after["input_size"] == []
    assert after["instruments.classes"] == []


def test_instrument_ids_on_the_launch_line_are_passed_as_the_node_takes_them(tmp_path):
    """`instruments.classes:=[1, 2]` (issue 29 item 4): YAML reads integers; the parameter is a string array of
    names or ids. A params file with integer ids is taken too."""
    from endoarss_ros.ros.launch_checks import parameter_overrides

    ids = tmp_path / "ids.yaml"
    ids.write_text("/**:\n  ros__parameters:\n    instruments:\n      classes: [1, 2]\n")
    assert _declared_values(tmp_path, ids)["instruments.classes"] == ["1", "2"]

    assert parameter_overrides({"instruments.classes": "[1, 2]"}) == {"instruments.classes": ["1", "2"]}
    assert parameter_overrides({"instruments.classes": "['FPCW Knife', 3]"}) == {
        "instruments.classes": ["FPCW Knife", "3"]}
    assert parameter_overrides({"warmup_size": "[480, 640]"}) == {"warmup_size": [480, 640]}


def test_show_args_shows_each_node_parameter_default_and_the_list_syntax():
    """`--show-args` printed `(default: '')` for every node parameter (issue 29 item 3)."""
    from endoarss_ros.ros.launch_checks import NODE_ARGUMENTS, argument_default_text, argument_description

    assert argument_default_text("overlay_alpha") == "0.5 (left out: the params_file's value)"
    assert argument_default_text("warmup_size").startswith("[1080, 1920] ")
    assert argument_default_text("cameras").startswith("[] ")
    assert argument_default_text("engine_cache_dir").startswith("'' ")
    assert argument_default_text("autostart").startswith("true ")
    assert argument_default_text("model").startswith("models/demo/endoarss_demo.safetensors ")
    assert all(argument_default_text(name) for name in NODE_ARGUMENTS)
    assert '"cameras:=[a, b]"' in argument_description("cameras")
    assert "cameras:=[] sets the empty list" in argument_description("cameras")
    assert "read-only" in argument_description("cameras") and "read-only" not in argument_description(
        "overlay_alpha")


def test_the_node_log_is_coloured_on_a_terminal_only():
    """Launch runs the node on a pseudo-terminal: rcutils colours its log unless told not to (issue 29 item 7)."""
    from endoarss_ros.ros.launch_checks import log_colour_env

    assert log_colour_env(False, environ={}) == {"RCUTILS_COLORIZED_OUTPUT": "0"}
    assert log_colour_env(True, environ={}) == {}
    assert log_colour_env(False, environ={"RCUTILS_COLORIZED_OUTPUT": "1"}) == {}  # the user's choice stays
@pytest.mark.parametrize("image,given,expected", [
    ("/endoscope/left/image_raw", "", "/endoscope/left/camera_info"),
    ("/image_raw", "", "/camera_info"),
    ("image_raw", "", "camera_info"),
    ("/endoscope/left/image_raw", "/calib/left/camera_info/", "/calib/left/camera_info"),
])
def test_the_single_cameras_camera_info_is_the_image_topics_sibling(image, given, expected):
    from endoarss_ros.ros.launch_checks import camera_info_topic

    assert camera_info_topic(image, given) == expected


def test_stereo_arguments_become_typed_parameters():
    from endoarss_ros.ros.launch_checks import parameter_overrides

    overrides = parameter_overrides({"cameras": "['/dvrk/left:left', '/dvrk/right:right']",
                                     "stereo_pairs": "['left:right']", "stereo.tolerance_ms": "5",
                                     "image_name": "image_raw", "rectified_input": "true"})
    assert overrides == {"cameras": ["/dvrk/left:left", "/dvrk/right:right"], "stereo_pairs": ["left:right"],
                         "stereo.tolerance_ms": 5.0, "image_name": "image_raw", "rectified_input": True}
    with pytest.raises(ValueError, match="stereo.tolerance_ms must be in"):
        parameter_overrides({"stereo.tolerance_ms": "-1"})

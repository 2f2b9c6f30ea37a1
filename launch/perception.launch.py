"""Launch the EndoARSS perception node (namespace /endoarss by default), optionally with RViz.

    ros2 launch endoarss_ros perception.launch.py image:=/endoscope/left/image_raw
    ros2 launch endoarss_ros perception.launch.py model:=/data/endoarss.safetensors device:=cuda:0 rviz:=true
    ros2 launch endoarss_ros perception.launch.py image_transport:=compressed image:=/camera/image_raw

    ros2 launch endoarss_ros perception.launch.py use_sim_time:=true   # with `ros2 bag play --clock REC`
    ros2 launch endoarss_ros perception.launch.py "cameras:=['left', 'right']" overlay_alpha:=0.3
    ros2 launch endoarss_ros perception.launch.py image_name:=image_raw stereo.tolerance_ms:=5.0 \
        "cameras:=['/dvrk/left:left', '/dvrk/right:right']" "stereo_pairs:=['left:right']"

Every parameter of the node is also a launch argument (`--show-args` lists them with their defaults); left out
it keeps the params file's value; an empty list (`cameras:=[]`: one camera) sets the empty list, as `ros2 param set`
does. A misspelt argument close to a real one (`camera:=`) is refused before anything starts.
The node's log is coloured on a terminal only (not when launch's output goes to a file or a pipe).

Outputs: /<namespace>/activity, /<namespace>/segmentation/{mask,overlay,info}, /<namespace>/status,
/<namespace>/instruments, /<namespace>/instruments/markers, /diagnostics (and <left camera>/disparity for a stereo
pair). camera_info is read beside every image: <image's namespace>/camera_info (camera_info:= overrides it for the
single camera; each `cameras` entry reads <input ns>/camera_info).
The image topic is normalised once for both remaps (a trailing slash is dropped; an invalid name is an error);
rviz:=true checks that RViz 2 is installed before anything starts. When the node exits with an error (e.g. its
model cannot be loaded) the launch ends and `ros2 launch` exits non-zero.
Every endoarss process (and RViz started from here) uses the shipped Fast DDS profile unless
FASTRTPS_DEFAULT_PROFILES_FILE is already set: its 16 MiB shared-memory segment is what lets 1080p frames
through with best-effort QoS.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, RegisterEventHandler, SetEnvironmentVariable, Shutdown
from launch.event_handlers import OnProcessExit
from launch.substitution import Substitution
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from endoarss_ros.ros.launch_checks import (
    LAUNCHED_ENV,
    NODE_ARGUMENTS,
    argument_default_text,
    argument_description,
    camera_info_topic,
    empty_list_parameters_file,
    launch_bool,
    log_colour_env,
    misspelt_arguments,
    node_exit_problem,
    normalise_topic,
    parameter_overrides,
    rviz_problem,
)

PACKAGE = "endoarss_ros"


# The launch file's own arguments (name -> default, description); params_file's default is the installed one.
_ARGUMENTS = {
    "namespace": ("endoarss", "Namespace of the node and its outputs"),
    "image": ("/endoscope/image_raw", "Input image topic (the compressed one is <image>/compressed)"),
    "camera_info": ("", "camera_info topic of the image ('': its sibling, <image's namespace>/camera_info)"),
    "params_file": ("", "Parameters file (every parameter documented in config/perception.yaml)"),
    "use_sim_time": ("false", "Use /clock (a bag played with --clock) for result ages and staleness (true/false)"),
    "rviz": ("false", "Start RViz showing the image, the overlay and the mask (needs rviz2; true/false)"),
}


def _share_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - running from the source tree
        return Path(__file__).resolve().parents[1]


def _launch_actions(context, *args, **kwargs):
    """Everything is checked before anything starts: a bad argument or a missing RViz starts nothing."""
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    misspelt = misspelt_arguments(set(context.launch_configurations), set(_ARGUMENTS) | set(NODE_ARGUMENTS))
    if misspelt:
        raise RuntimeError("; ".join(misspelt))
    image = normalise_topic(arg("image"), "image")
    rviz = launch_bool(arg("rviz"), "rviz")
    if rviz and (problem := rviz_problem()):
        raise RuntimeError(problem)
    overrides = parameter_overrides({name: arg(name) for name in NODE_ARGUMENTS})
    overrides["use_sim_time"] = launch_bool(arg("use_sim_time"), "use_sim_time")
    # launch_ros cannot pass an empty list (cameras:=[]): those go in a file of their own, after the others.
    empty_lists = empty_list_parameters_file(overrides)
    overrides = {name: value for name, value in overrides.items() if value != []}
    remappings = [("image", image), ("image/compressed", image + "/compressed"),
                  ("camera_info", camera_info_topic(image, arg("camera_info")))]
    perception = Node(
        package=PACKAGE, executable="perception_node", name="endoarss_perception", namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides, *([empty_lists] if empty_lists else [])],
        remappings=remappings, output="screen", emulate_tty=True,
        additional_env={"PYTHONUNBUFFERED": "1", LAUNCHED_ENV: "1", **log_colour_env(sys.stdout.isatty())},
    )
    actions = [perception, RegisterEventHandler(OnProcessExit(target_action=perception, on_exit=_on_node_exit))]
    if rviz:
        rviz_config = str(_share_dir() / "config" / "endoarss.rviz")
        actions.append(Node(package="rviz2", executable="rviz2", name="rviz2", arguments=["-d", rviz_config],
                            parameters=[{"use_sim_time": overrides["use_sim_time"]}]))
    return actions


def _on_node_exit(event, context):
    """The node ended on its own: a failure (e.g. configure failed) fails the launch; a clean end ends it."""
    problem = node_exit_problem(event.action.name, event.returncode, context.is_shutdown)
    if problem:
        raise RuntimeError(problem)  # launch logs it, shuts everything down and exits 1
    if not context.is_shutdown:
        return [Shutdown(reason=f"{event.action.name} exited")]
    return None


class _NodeDefault(Substitution):
    """A node parameter's launch default: '' (the params file's value stays), shown by --show-args as the value
    the node has then."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    def describe(self) -> str:
        return argument_default_text(self._name)

    def perform(self, context) -> str:
        return ""


def generate_launch_description() -> LaunchDescription:
    share = _share_dir()
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or str(share / "config" / "fastdds_shm.xml")
    defaults = {"params_file": str(share / "config" / "perception.yaml")}
    arguments = [DeclareLaunchArgument(name, default_value=defaults.get(name, default), description=description)
                 for name, (default, description) in _ARGUMENTS.items()]
    # The node's parameters, empty by default: the params file's value (or the node's default) stays.
    arguments += [DeclareLaunchArgument(name, default_value=[_NodeDefault(name)],
                                        description=argument_description(name)) for name in NODE_ARGUMENTS]
    return LaunchDescription([
        *arguments,
        # The node applies the same profile itself; setting it here covers RViz and anything else launched.
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile),
        OpaqueFunction(function=_launch_actions),
    ])

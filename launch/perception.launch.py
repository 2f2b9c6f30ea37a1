"""Launch the EndoARSS perception node (namespace /endoarss by default), optionally with RViz.

    ros2 launch endoarss_ros perception.launch.py image:=/endoscope/left/image_raw
    ros2 launch endoarss_ros perception.launch.py model:=/data/endoarss.safetensors device:=cuda:0 rviz:=true
    ros2 launch endoarss_ros perception.launch.py image_transport:=compressed image:=/camera/image_raw

Outputs: /<namespace>/activity, /<namespace>/segmentation/{mask,overlay,info}, /diagnostics.
Every endoarss process (and RViz started from here) uses the shipped Fast DDS profile unless
FASTRTPS_DEFAULT_PROFILES_FILE is already set: its 16 MiB shared-memory segment is what lets 1080p frames
through with best-effort QoS.
"""
from __future__ import annotations

import os
from pathlib import Path

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "endoarss_ros"


def _share_dir() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory(PACKAGE))
    except Exception:  # noqa: BLE001 - running from the source tree
        return Path(__file__).resolve().parents[1]


def _perception_node(context, *args, **kwargs):
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name in ("model", "device"):
        if arg(name):  # empty: keep the params file's value
            overrides[name] = arg(name)
    overrides["image_transport"] = arg("image_transport")
    image = arg("image")
    remappings = [("image", image), ("image/compressed", image.rstrip("/") + "/compressed")]
    return [Node(
        package=PACKAGE, executable="perception_node", name="endoarss_perception", namespace=arg("namespace"),
        parameters=[arg("params_file"), overrides], remappings=remappings, output="screen", emulate_tty=True,
        additional_env={"PYTHONUNBUFFERED": "1"},
    )]


def generate_launch_description() -> LaunchDescription:
    share = _share_dir()
    profile = os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE") or str(share / "config" / "fastdds_shm.xml")
    return LaunchDescription([
        DeclareLaunchArgument("namespace", default_value="endoarss",
                              description="Namespace of the node and its outputs"),
        DeclareLaunchArgument("image", default_value="/endoscope/image_raw",
                              description="Input image topic (the compressed one is <image>/compressed)"),
        DeclareLaunchArgument("params_file", default_value=str(share / "config" / "perception.yaml"),
                              description="Parameters file (every parameter documented in config/perception.yaml)"),
        DeclareLaunchArgument("model", default_value="", description="Weights file; empty keeps the params file's"),
        DeclareLaunchArgument("device", default_value="", description="auto, cpu, cuda or cuda:N; empty keeps the "
                              "params file's"),
        DeclareLaunchArgument("image_transport", default_value="raw", choices=["raw", "compressed"],
                              description="raw: sensor_msgs/Image; compressed: sensor_msgs/CompressedImage"),
        DeclareLaunchArgument("rviz", default_value="false", choices=["true", "false"],
                              description="Start RViz showing the image, the overlay and the mask"),
        # The node applies the same profile itself; setting it here covers RViz and anything else launched.
        SetEnvironmentVariable("FASTRTPS_DEFAULT_PROFILES_FILE", profile),
        OpaqueFunction(function=_perception_node),
        Node(package="rviz2", executable="rviz2", name="rviz2",
             arguments=["-d", str(share / "config" / "endoarss.rviz")],
             condition=IfCondition(LaunchConfiguration("rviz"))),
    ])

"""Entry point of the EndoARSS perception node (`endoarss-perception`, `ros2 run endoarss_ros perception_node`).

With ``autostart`` (default) the lifecycle node walks itself to active, so `ros2 run` and launch files just work.
The node itself is in :mod:`endoarss_ros.ros.node`; it is imported only after ``--help`` is handled, so the help
needs neither ROS nor torch.
"""
from __future__ import annotations

import sys

USAGE = """usage: endoarss-perception [--ros-args ...]

The EndoARSS perception node: endoscope images in, segmentation masks and the surgical activity out.
ROS arguments follow --ros-args as usual, for example:
  endoarss-perception --ros-args -r image:=/endoscope/left/image_raw -p model:=models/demo/endoarss_demo.safetensors
  endoarss-perception --ros-args --params-file config/perception.yaml
  endoarss-perception --ros-args -r __ns:=/endoarss -p autostart:=false   # wait for a lifecycle manager

Topics (relative to the node's namespace; one set per entry of the `cameras` parameter):
  in:  image (sensor_msgs/Image) or image/compressed (image_transport:=compressed)
  out: activity, segmentation/mask, segmentation/overlay, segmentation/info, and /diagnostics
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_start = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if any(a in ("-h", "--help") for a in argv[:ros_start]):
        print(USAGE)
        return 0

    from endoarss_ros.ros import fastdds

    fastdds.apply_profile()  # before the first participant exists
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.lifecycle import TransitionCallbackReturn

    from endoarss_ros.ros.node import PerceptionNode

    rclpy.init(args=["endoarss-perception", *argv])
    node = None
    code = 0
    try:
        node = PerceptionNode()
        if node.settings.autostart:
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: configure failed (see above); exiting")
                return 1
            if node.trigger_activate() != TransitionCallbackReturn.SUCCESS:
                node.get_logger().fatal("autostart: activate failed (see above); exiting")
                return 1
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as e:  # noqa: BLE001 - e.g. an out-of-range parameter at start: say it plainly
        print(f"endoarss-perception: {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        if node is not None:
            try:
                node.trigger_shutdown()
            except Exception:  # noqa: BLE001 - already finalized, or the context is gone
                pass
            node.destroy_node()
        rclpy.try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())

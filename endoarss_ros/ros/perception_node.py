"""The EndoARSS perception node (`endoarss-perception`, `ros2 run endoarss_ros perception_node`)."""
from __future__ import annotations

import sys

USAGE = """usage: endoarss-perception [--ros-args ...]

The EndoARSS perception node: endoscope images in, segmentation masks and the surgical activity out.
ROS arguments follow --ros-args as usual, for example:
  endoarss-perception --ros-args -r image:=/endoscope/left/image_raw -p model:=models/demo/endoarss_demo.safetensors
  endoarss-perception --ros-args --params-file config/perception.yaml
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_start = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if any(a in ("-h", "--help") for a in argv[:ros_start]):
        print(USAGE)
        return 0
    raise SystemExit("endoarss-perception: the perception node is not built yet")


if __name__ == "__main__":
    sys.exit(main())

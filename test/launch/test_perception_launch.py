"""launch_testing: perception.launch.py with a tiny random model; frames in, activity and masks out with the input
stamps. Runs under `colcon test` (CMakeLists: add_launch_test) or `launch_test test/launch/test_perception_launch.py`
on a ROS 2 install; plain pytest skips it where launch_testing is not installed.
"""
import pytest

pytest.importorskip(
    "launch_testing",
    reason="launch_testing is not installed (pip-wheel ROS set-up): this test runs under `colcon test` or "
           "`launch_test` on a ROS 2 install with launch, launch_ros and launch_testing",
)

import tempfile  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
from pathlib import Path  # noqa: E402

import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
from launch import LaunchDescription  # noqa: E402
from launch.actions import IncludeLaunchDescription  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

IMAGE_TOPIC = "/launch_test/image_raw"
NAMESPACE = "endoarss"


def _launch_file() -> Path:
    try:
        from ament_index_python.packages import get_package_share_directory

        installed = Path(get_package_share_directory("endoarss_ros")) / "launch" / "perception.launch.py"
        if installed.is_file():
            return installed
    except Exception:  # noqa: BLE001 - fall back to the source tree
        pass
    return Path(__file__).resolve().parents[2] / "launch" / "perception.launch.py"


def _tiny_model(directory: str) -> str:
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), Path(directory) / "tiny.safetensors"))


@pytest.mark.launch_test
def generate_test_description():
    model = _tiny_model(tempfile.mkdtemp(prefix="endoarss_launch_test_"))
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(_launch_file())),
        launch_arguments={"namespace": NAMESPACE, "image": IMAGE_TOPIC, "model": model, "device": "cpu",
                          "rviz": "false"}.items(),
    )
    return LaunchDescription([perception, launch_testing.actions.ReadyToTest()])


class TestPerceptionOutputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        import rclpy

        rclpy.init()
        cls.node = rclpy.create_node("endoarss_launch_test_client")

    @classmethod
    def tearDownClass(cls):
        import rclpy

        cls.node.destroy_node()
        rclpy.shutdown()

    def test_activity_and_mask_carry_the_input_stamps(self):
        import numpy as np
        import rclpy
        from endoarss_ros.msg import Activity, SegmentationInfo
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image

        node = self.node
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        got = {"activity": [], "mask": [], "info": []}
        node.create_subscription(Activity, f"/{NAMESPACE}/activity", got["activity"].append, reliable)
        node.create_subscription(Image, f"/{NAMESPACE}/segmentation/mask", got["mask"].append, reliable)
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(SegmentationInfo, f"/{NAMESPACE}/segmentation/info", got["info"].append, latched)
        pub = node.create_publisher(Image, IMAGE_TOPIC, reliable)

        # The model loads and warms up in configure: allow for a slow machine.
        deadline = time.monotonic() + 180
        while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
            rclpy.spin_once(node, timeout_sec=0.1)
        self.assertGreater(pub.get_subscription_count(), 0, "the perception node never subscribed to the images")

        width, height = 320, 240
        pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8).tobytes()
        sent = set()
        while time.monotonic() < deadline and len({_ns(m.header.stamp) for m in got["activity"]} & sent) < 5:
            msg = Image(height=height, width=width, encoding="rgb8", step=width * 3)
            msg.header.stamp = node.get_clock().now().to_msg()
            msg.header.frame_id = "endoscope"
            msg.data = pixels
            pub.publish(msg)
            sent.add(_ns(msg.header.stamp))
            end = time.monotonic() + 0.5
            while time.monotonic() < end:
                rclpy.spin_once(node, timeout_sec=0.05)

        answered = {_ns(m.header.stamp) for m in got["activity"]}
        self.assertGreaterEqual(len(answered & sent), 5)
        self.assertTrue(answered <= sent, "an activity was published for a frame that was never sent")
        for mask in got["mask"]:
            self.assertIn(_ns(mask.header.stamp), sent)
            self.assertEqual((mask.width, mask.height, mask.encoding), (width, height, "mono8"))
            self.assertEqual(mask.header.frame_id, "endoscope")
        self.assertTrue(got["info"], "segmentation/info (transient local) was not received")
        self.assertEqual(got["info"][-1].mask_encoding, "mono8")


def _ns(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_codes(self, proc_info):
        # SIGINT from launch: the node shuts down cleanly, exit 0 (not -2 with a traceback).
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0])

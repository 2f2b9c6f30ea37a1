"""Our interfaces import from the venv (or a colcon install) and survive a serialize/deserialize round trip."""
import pytest

rclpy_serialization = pytest.importorskip("rclpy.serialization")


def test_activity_round_trip():
    from endoarss_ros.msg import Activity

    msg = Activity(label="Submucosal Dissection", class_id=2, confidence=0.75,
                   class_names=["Marking", "Circumferential Incision", "Submucosal Dissection"],
                   probabilities=[0.05, 0.2, 0.75], raw_probabilities=[0.1, 0.3, 0.6])
    msg.header.frame_id = "endoscope"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    back = rclpy_serialization.deserialize_message(rclpy_serialization.serialize_message(msg), Activity)
    assert back.header.frame_id == "endoscope" and back.header.stamp.nanosec == 345
    assert back.label == "Submucosal Dissection" and back.class_id == 2
    assert list(back.class_names) == list(msg.class_names)
    assert list(back.probabilities) == pytest.approx([0.05, 0.2, 0.75])
    assert list(back.raw_probabilities) == pytest.approx([0.1, 0.3, 0.6])


def test_segmentation_info_round_trip():
    from endoarss_ros.msg import SegmentationInfo

    msg = SegmentationInfo(class_names=["background", "FPCW Forceps"], colors=[0, 0, 0, 255, 0, 0],
                           mask_encoding="mono8", has_ignore_id=True, ignore_id=255, model="demo")
    back = rclpy_serialization.deserialize_message(rclpy_serialization.serialize_message(msg), SegmentationInfo)
    assert list(back.class_names) == ["background", "FPCW Forceps"]
    assert bytes(back.colors) == bytes([0, 0, 0, 255, 0, 0])
    assert back.mask_encoding == "mono8" and back.has_ignore_id and back.ignore_id == 255


def test_package_imports_without_ros_or_torch():
    """`import endoarss_ros` stays light: neither rclpy nor torch is imported by it."""
    import subprocess
    import sys

    code = "import sys, endoarss_ros; print('rclpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]

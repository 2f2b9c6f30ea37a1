"""Our interfaces import from the venv (or a colcon install) and survive a serialize/deserialize round trip."""
import pytest

rclpy_serialization = pytest.importorskip("rclpy.serialization")


def test_activity_round_trip():
    from endoarss_ros.msg import Activity

    msg = Activity(label="Submucosal Dissection", class_id=2, confidence=0.75,
                   class_names=["Marking", "Circumferential Incision", "Submucosal Dissection"],
                   probabilities=[0.05, 0.2, 0.75], raw_probabilities=[0.1, 0.3, 0.6],
                   source=Activity.SOURCE_TEMPORAL, duration_s=12.5)
    msg.header.frame_id = "endoscope"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    back = rclpy_serialization.deserialize_message(rclpy_serialization.serialize_message(msg), Activity)
    assert back.header.frame_id == "endoscope" and back.header.stamp.nanosec == 345
    assert back.label == "Submucosal Dissection" and back.class_id == 2
    assert list(back.class_names) == list(msg.class_names)
    assert list(back.probabilities) == pytest.approx([0.05, 0.2, 0.75])
    assert list(back.raw_probabilities) == pytest.approx([0.1, 0.3, 0.6])
    assert back.source == "temporal" and back.duration_s == 12.5


def test_activity_source_constants_are_the_pipelines():
    from endoarss_ros.msg import Activity

    from endoarss_ros.inference import temporal_activity as temporal

    assert (Activity.SOURCE_TEMPORAL, Activity.SOURCE_FRAME_EMA, Activity.SOURCE_FRAME) == (
        temporal.SOURCE_TEMPORAL, temporal.SOURCE_FRAME_EMA, temporal.SOURCE_FRAME)


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


def _fields_of_every_output():
    """One field dict per message type we write, built by the shared module (header as a plain dict, so both
    the rclpy and the rosbags builder make their own)."""
    import numpy as np

    from endoarss_ros.inference import message_fields as mf
    from endoarss_ros.inference.engine import FrameResult
    from endoarss_ros.inference.frames import frame_from_array
    from endoarss_ros.inference.stream import CameraStream

    header = {"stamp": {"sec": 42, "nanosec": 7}, "frame_id": "endoscope_left"}
    seg_names = ["Background", "FPCW Forceps", "Mucosal Flaps"]
    mask = np.zeros((64, 80), np.uint8)
    mask[20:60, 10:22] = 1  # an instrument
    overlay = np.zeros((64, 80, 3), np.uint8)
    result = FrameResult(mask=mask, activity_probs=np.array([0.3, 0.6, 0.1], np.float32), overlay=overlay,
                         confidence=np.full((16, 20), 0.9, np.float32))
    colors = np.array([[0, 0, 0], [255, 0, 0], [0, 255, 0]], np.uint8)
    stream = CameraStream(seg_names, ["a", "b", "c"], colors)
    frame = frame_from_array(np.full((64, 80, 3), 120, np.uint8), "rgb8")
    out = stream.update(frame, result)
    assert len(out.instruments) == 1
    per_frame = mf.frame_fields(header, result, out, ["a", "b", "c"], seg_names, overlay=True)
    assert set(per_frame) == {"activity", "mask", "overlay", "instruments"}
    fields = [(mf.OUTPUT_BY_KEY[k].msgtype, f) for k, f in per_frame.items()]
    from endoarss_ros.inference.status import lost_frame_status

    for status in (out.status.with_timing(12.5, 30.0, stream.settings.thresholds),
                   lost_frame_status("INPUT_REJECTED", "bad_step: data has 3 bytes")):
        fields.append((mf.STATUS_TYPE, mf.status_fields(header, status)))
    fields.append((mf.SEGMENTATION_INFO_TYPE, mf.segmentation_info_fields(header, seg_names, colors, "m")))
    fields.append((mf.COMPRESSED_IMAGE_TYPE, mf.compressed_image_fields(header, "png", np.arange(5, dtype=np.uint8))))
    fields.append((mf.ACTIVITY_TYPE, mf.one_hot_activity_fields(header, ["a", "b", "c"], 2)))
    return fields


def test_every_output_type_is_built_the_same_for_rclpy_and_rosbags():
    """The node (rclpy) and the replay (rosbags) build each message from the same field values: the bag's bytes
    read back by rclpy equal the node's message (CDR padding bytes may differ), and every field of the message
    type is set by the shared module."""
    from endoarss_ros.bag.messages import to_rosbags
    from endoarss_ros.bag.msgtypes import typestore
    from endoarss_ros.ros.conversions import message_class, to_ros

    store = typestore()
    outputs = _fields_of_every_output()
    from endoarss_ros.inference.message_fields import OUTPUTS

    assert {t for t, _ in outputs} >= {o.msgtype for o in OUTPUTS}
    for msgtype, fields in outputs:
        assert set(fields) == set(message_class(msgtype).get_fields_and_field_types()), msgtype
        ros_msg = to_ros(msgtype, fields)
        bag_bytes = bytes(store.serialize_cdr(to_rosbags(store, msgtype, fields), msgtype))
        assert _same(rclpy_serialization.deserialize_message(bag_bytes, type(ros_msg)), ros_msg), msgtype


def _same(a, b) -> bool:
    """Message equality where NaN equals NaN (PerceptionStatus marks what was not measured with NaN)."""
    import math

    if hasattr(a, "get_fields_and_field_types"):
        return type(a) is type(b) and all(_same(getattr(a, f), getattr(b, f)) for f in a.get_fields_and_field_types())
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, (list, tuple)) or hasattr(a, "tolist"):
        a, b = list(a), list(b)
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def test_output_messages_carry_the_input_header():
    from std_msgs.msg import Header

    from endoarss_ros.inference.message_fields import activity_fields, image_fields
    from endoarss_ros.ros.conversions import to_ros

    header = Header(frame_id="endoscope_left")
    header.stamp.sec, header.stamp.nanosec = 42, 7
    import numpy as np

    mask = np.arange(12, dtype=np.uint8).reshape(3, 4)
    msg = to_ros("sensor_msgs/msg/Image", image_fields(header, mask, "mono8"))
    assert (msg.width, msg.height, msg.step, msg.encoding) == (4, 3, 4, "mono8")
    assert bytes(msg.data) == mask.tobytes() and msg.header.stamp.sec == 42 and msg.header.frame_id == "endoscope_left"
    act = to_ros("endoarss_ros/msg/Activity", activity_fields(header, ["a", "b", "c"], [0.2, 0.7, 0.1],
                                                              [0.3, 0.6, 0.1], 1))
    assert act.label == "b" and act.class_id == 1 and act.confidence == pytest.approx(0.7)
    assert act.header.stamp.nanosec == 7 and list(act.raw_probabilities) == pytest.approx([0.3, 0.6, 0.1])


def test_status_flags_in_the_msg_file_are_the_inference_layers():
    """The bit constants of PerceptionStatus.msg are exactly inference.status.FLAGS (bit i = 1 << i), and
    DEGRADED_IMAGE is the union of its image-quality flags."""
    from endoarss_ros.msg import PerceptionStatus

    from endoarss_ros.inference import status

    for name, bit in status.FLAG.items():
        assert getattr(PerceptionStatus, name) == bit, name
    assert PerceptionStatus.DEGRADED_IMAGE == status.DEGRADED_IMAGE
    constants = [n for n in dir(PerceptionStatus) if n.isupper() and isinstance(getattr(PerceptionStatus, n), int)]
    assert set(constants) == set(status.FLAGS) | {"DEGRADED_IMAGE"}

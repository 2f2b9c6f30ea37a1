"""The 3D fields of Instrument and the RViz markers, built once (message_fields, markers) and written the same by
rosbags (the replay) and rclpy (the node)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from endoarss_ros.bag.messages import to_rosbags
from endoarss_ros.bag.msgtypes import typestore
from endoarss_ros.inference import message_fields as mf
from endoarss_ros.inference.instruments import Instrument
from endoarss_ros.inference.markers import ADD, ARROW, DELETE, MARKERS_TYPE, instrument_marker_fields
from endoarss_ros.inference.stereo import Instrument3D

HEADER = {"stamp": {"sec": 12, "nanosec": 5}, "frame_id": "endoscope_left_optical_frame"}
CLASSES = ["Background", "FPCW Knife", "Marking Area", "FPCW Forceps", "Electric Knife"]


def _instrument(i: int, class_id: int) -> Instrument:
    return Instrument(class_id, 0.9, 500, 0.01, (100.0, 80.0), (90, 60, 20, 40), 1.2, 4.0, (105.0 + i, 70.0),
                      (95.0, 110.0), True, id=i, seen_frames=3)


def _geometry():
    stereo = Instrument3D(np.array([0.1, 0.05, 0.99]) / np.linalg.norm([0.1, 0.05, 0.99]), True,
                          np.array([0.008, 0.004, 0.079]), np.array([0.02, 0.03, 0.06]), 0.0004, 0.0123, 1.5)
    unknown_tissue = Instrument3D(stereo.tip_ray, True, stereo.tip_3d, stereo.entry_3d, 0.0004, math.nan, 0.7)
    return [stereo, unknown_tissue, Instrument3D.ray_only(np.array([0.0, 0.0, 1.0])), None]


def _array_fields():
    instruments = [_instrument(4, 1), _instrument(6, 3), _instrument(9, 4), _instrument(11, 3)]
    geometry = _geometry()
    per = [mf.instrument_fields(i, CLASSES, g) for i, g in zip(instruments, geometry)]
    return mf.instrument_array_fields(HEADER, 1280, 1024, instruments, CLASSES, geometry), per


def test_instrument_3d_fields_round_trip_through_a_bag_message():
    store = typestore()
    fields, _ = _array_fields()
    msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(store, mf.INSTRUMENTS_TYPE, fields),
                                                    mf.INSTRUMENTS_TYPE), mf.INSTRUMENTS_TYPE)
    a, b, c, d = msg.instruments
    assert a.has_3d and (a.tip_3d.x, a.tip_3d.y, a.tip_3d.z) == (0.008, 0.004, 0.079)
    assert a.tip_to_tissue == pytest.approx(0.0123) and a.tip_depth_sigma == pytest.approx(0.0004)
    assert b.has_3d and math.isnan(b.tip_to_tissue)
    assert not c.has_3d and c.tip_ray.z == 1.0 and c.tip_3d.z == 0.0 and math.isnan(c.tip_depth_sigma)
    assert not d.has_3d and (d.tip_ray.x, d.tip_ray.y, d.tip_ray.z) == (0.0, 0.0, 0.0)  # no camera_info
    with pytest.raises(ValueError, match="3 3D geometries for 4 instruments"):
        mf.instrument_array_fields(HEADER, 1, 1, [_instrument(1, 1)] * 4, CLASSES, _geometry()[:3])


def test_markers_show_3d_instruments_and_delete_lost_ones():
    instruments = [_instrument(4, 1), _instrument(6, 3), _instrument(9, 4)]
    geometry = _geometry()[:3]
    fields, shown = instrument_marker_fields(HEADER, instruments, geometry, CLASSES, {4, 7})
    assert shown == {4, 6}  # the ray-only instrument has no 3D marker
    adds = [m for m in fields["markers"] if m["action"] == ADD]
    deletes = [m for m in fields["markers"] if m["action"] == DELETE]
    assert len(adds) == 6 and {m["id"] for m in deletes} == {7} and len(deletes) == 3
    shaft = next(m for m in adds if m["id"] == 4 and m["type"] == ARROW)
    assert [p["z"] for p in shaft["points"]] == [0.06, 0.079]  # entry -> tip
    labels = {m["id"]: m["text"] for m in adds if m["text"]}
    assert labels == {4: "4 FPCW Knife  12.3 mm", 6: "6 FPCW Forceps  ? mm"}
    assert all(m["header"] is HEADER for m in fields["markers"])
    store = typestore()
    msg = store.deserialize_cdr(store.serialize_cdr(to_rosbags(store, MARKERS_TYPE, fields), MARKERS_TYPE),
                                MARKERS_TYPE)
    assert len(msg.markers) == 9 and msg.markers[0].header.frame_id == HEADER["frame_id"]
    assert msg.markers[0].lifetime.nanosec == 500_000_000
    # Next frame: nothing in 3D any more -> deletes for both, and nothing shown.
    fields, shown = instrument_marker_fields(HEADER, [], [], CLASSES, shown)
    assert shown == set() and {(m["ns"], m["id"]) for m in fields["markers"]} == {
        (f"endoarss_instruments/{p}", i) for p in ("shaft", "tip", "label") for i in (4, 6)}


def test_rclpy_builds_the_same_3d_messages():
    pytest.importorskip("rclpy")
    pytest.importorskip("visualization_msgs.msg")
    from rclpy.serialization import deserialize_message

    from endoarss_ros.ros.conversions import message_class, to_ros
    from test.test_messages import _same

    store = typestore()
    array, _ = _array_fields()
    markers, _ = instrument_marker_fields(HEADER, [_instrument(4, 1), _instrument(6, 3)], _geometry()[:2], CLASSES,
                                          {8})
    for msgtype, fields in ((mf.INSTRUMENTS_TYPE, array), (MARKERS_TYPE, markers)):
        ros_msg = to_ros(msgtype, fields)
        bag_bytes = bytes(store.serialize_cdr(to_rosbags(store, msgtype, fields), msgtype))
        assert _same(deserialize_message(bag_bytes, type(ros_msg)), ros_msg), msgtype
    marker_fields = set(message_class("visualization_msgs/msg/Marker").get_fields_and_field_types())
    assert all(set(m) == marker_fields for m in markers["markers"])


def test_camera_info_dict_reads_an_rclpy_message():
    pytest.importorskip("rclpy")
    from sensor_msgs.msg import CameraInfo

    from endoarss_ros.inference.camera_model import CameraModel, camera_info_dict
    from test.stereo_calibrations import camera_info_fields, load_storz

    _, right = camera_info_fields(load_storz())
    msg = CameraInfo(height=right["height"], width=right["width"], distortion_model="plumb_bob", d=right["d"],
                     k=right["k"], r=right["r"], p=right["p"], binning_x=2, binning_y=2)
    msg.header.frame_id = right["header"]["frame_id"]
    msg.roi.x_offset, msg.roi.width, msg.roi.height = 8, 1800, 1000
    model = CameraModel.from_fields(camera_info_dict(msg))
    assert model.frame_id == "storz_right_optical_frame" and model.binning_x == 2 and model.roi == (8, 0, 1800, 1000)
    assert np.allclose(model.p.reshape(-1), right["p"]) and model.for_image(900, 500).width == 900

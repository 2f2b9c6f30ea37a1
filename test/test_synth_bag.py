"""Synthetic rosbag2 writing, read back with rosbags' AnyReader (no ROS needed)."""
import cv2
import numpy as np
import pytest
from rosbags.highlevel import AnyReader

from endoarss_ros.bag.msgtypes import msg_dir, typestore
from endoarss_ros.bag.synth_bag import (
    ACTIVITY_TOPIC,
    COMPRESSED_TOPIC,
    DEFAULT_START_NS,
    IMAGE_TOPIC,
    MASK_TOPIC,
    stamp_ns,
    write_synth_bag,
)
from endoarss_ros.data.classes import MTLESD
from endoarss_ros.data.synth import generate_sequence

SIZE = (48, 64)  # H, W
FPS = 4.0
SECONDS = 2.0  # segments last >= 2 s: use a short one so the labels change within the bag
OPTS = {"segment_seconds": (0.75, 1.0)}


def _read(path):
    out: dict[str, list] = {}
    with AnyReader([path], default_typestore=typestore()) as reader:
        for conn, ts, raw in reader.messages():
            out.setdefault(conn.topic, []).append((ts, reader.deserialize(raw, conn.msgtype), conn.msgtype))
    return out


def _ns(header):
    return header.stamp.sec * 10**9 + header.stamp.nanosec


def test_msg_types_registered():
    assert (msg_dir() / "Activity.msg").is_file()
    store = typestore()
    assert "endoarss_ros/msg/Activity" in store.types and "endoarss_ros/msg/SegmentationInfo" in store.types


@pytest.mark.parametrize("encoding,storage", [("rgb8", "mcap"), ("bgr8", "sqlite3"), ("jpeg", "mcap"),
                                              ("png", "sqlite3")])
def test_bag_round_trip(tmp_path, encoding, storage):
    path = tmp_path / "bag"
    info = write_synth_bag(path, seconds=SECONDS, fps=FPS, size=SIZE, encoding=encoding, storage=storage,
                           seed=5, **OPTS)
    n = int(SECONDS * FPS)
    expected = list(generate_sequence(5, n, FPS, SIZE, **OPTS))
    assert info.frames == n and info.activities == [f.activity for f in expected]
    assert list((path).glob("*.mcap" if storage == "mcap" else "*.db3"))

    msgs = _read(path)
    image_topic = COMPRESSED_TOPIC if encoding in ("jpeg", "png") else IMAGE_TOPIC
    assert set(msgs) == {image_topic, MASK_TOPIC, ACTIVITY_TOPIC}
    assert all(len(v) == n for v in msgs.values())

    for i, ((ts_i, img, img_type), (ts_m, mask, _), (ts_a, act, act_type)) in enumerate(
            zip(msgs[image_topic], msgs[MASK_TOPIC], msgs[ACTIVITY_TOPIC])):
        want = stamp_ns(DEFAULT_START_NS, i, FPS)
        # Bag timestamps = header stamps, equal across the three topics, frame_id "endoscope".
        assert ts_i == ts_m == ts_a == want
        assert _ns(img.header) == _ns(mask.header) == _ns(act.header) == want
        assert img.header.frame_id == mask.header.frame_id == act.header.frame_id == "endoscope"
        frame = expected[i]

        if encoding in ("rgb8", "bgr8"):
            assert img_type == "sensor_msgs/msg/Image" and img.encoding == encoding
            assert (img.height, img.width, img.step) == (*SIZE, SIZE[1] * 3)
            pixels = img.data.reshape(*SIZE, 3)
            if encoding == "bgr8":
                pixels = pixels[..., ::-1]
            assert np.array_equal(pixels, frame.rgb)
        else:
            assert img_type == "sensor_msgs/msg/CompressedImage" and encoding in img.format
            rgb = cv2.cvtColor(cv2.imdecode(img.data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
            if encoding == "png":
                assert np.array_equal(rgb, frame.rgb)
            else:
                assert np.abs(rgb.astype(int) - frame.rgb.astype(int)).mean() < 6

        assert mask.encoding == "mono8" and np.array_equal(mask.data.reshape(SIZE), frame.mask)
        assert act_type == "endoarss_ros/msg/Activity"
        assert act.class_id == frame.activity and act.label == MTLESD.activity_classes[frame.activity]
        assert list(act.class_names) == list(MTLESD.activity_classes)
        assert act.probabilities.tolist() == [float(k == frame.activity) for k in range(3)]

    stamps = [ts for ts, _, _ in msgs[image_topic]]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    acts = [a.class_id for _, a, _ in msgs[ACTIVITY_TOPIC]]
    assert acts[0] == 0 and len(set(acts)) >= 2  # labels follow the sequence's activity changes


def test_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        write_synth_bag(tmp_path / "a", seconds=1, fps=2, size=SIZE, encoding="yuv")
    with pytest.raises(ValueError):
        write_synth_bag(tmp_path / "b", seconds=1, fps=2, size=SIZE, storage="rosbag1")


def test_synthetic_mcap_bags_carry_chunk_checksums(tmp_path):
    """Damage in a synthetic recording is detectable: every MCAP chunk has its CRC-32 filled in."""
    from endoarss_ros.bag.mcap_checksums import scan_file

    write_synth_bag(tmp_path / "rec", seconds=0.3, fps=10, size=(48, 64), storage="mcap")
    (mcap,) = (tmp_path / "rec").glob("*.mcap")
    chunks, _ = scan_file(mcap)
    assert chunks and all(c.stored_crc != 0 and c.problem is None for c in chunks)

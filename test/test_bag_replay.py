"""`endoarss replay`: real synthetic bags (MCAP / sqlite3, raw / compressed, rgb8 / bgr8, odd sizes) through the
shared inference pipeline with a tiny random-weights model; bad inputs and outputs fail cleanly."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from endoarss_ros.bag.reader import BagError, BagReader, stamp_to_ns
from endoarss_ros.bag.replay import ReplayOptions, replay
from endoarss_ros.bag.synth_bag import write_synth_bag
from endoarss_ros.bag.writer import OutputError


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


@pytest.fixture(scope="module")
def engine(tiny_model):
    from endoarss_ros.inference import InferenceEngine

    eng = InferenceEngine(tiny_model, device="cpu", max_batch=4)
    yield eng
    eng.close()


def _opts(inp, out, engine, tiny_model, **kw):
    return ReplayOptions(input=Path(inp), output=Path(out), model=tiny_model, engine=engine, progress=False, **kw)


def _read(path):
    """topic -> list of (bag timestamp, deserialized message)."""
    from rosbags.highlevel import AnyReader

    from endoarss_ros.bag.msgtypes import typestore

    out: dict[str, list] = {}
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def _image_stamps(bag_path, topic):
    return [(t, stamp_to_ns(m.header.stamp)) for t, m in _read(bag_path)[topic]]


CASES = [
    ("mcap", "rgb8", (64, 80), 8),
    ("sqlite3", "bgr8", (64, 80), 8),
    ("mcap", "jpeg", (64, 80), 8),
    ("sqlite3", "png", (64, 80), 8),
    ("mcap", "bgr8", (1024, 1280), 3),
]


def _ground_truth(bag):
    """stamp -> activity id and stamp -> mask of the synthetic bag's ground-truth topics."""
    from rosbags.highlevel import AnyReader

    from endoarss_ros.bag.msgtypes import typestore

    act, masks = {}, {}
    with AnyReader([bag], default_typestore=typestore()) as r:
        for conn, _, raw in r.messages([c for c in r.connections if "ground_truth" in c.topic]):
            msg = r.deserialize(raw, conn.msgtype)
            if conn.msgtype.endswith("Activity"):
                act[stamp_to_ns(msg.header.stamp)] = int(msg.class_id)
            else:
                masks[stamp_to_ns(msg.header.stamp)] = np.asarray(msg.data).reshape(msg.height, msg.width)
    return act, masks


def _miou_fg(written_masks, truth: dict, classes: int) -> float:
    """Foreground mIoU over all frames pooled, classes absent from truth and prediction left out."""
    inter, union = np.zeros(classes), np.zeros(classes)
    for _, m in written_masks:
        p = np.asarray(m.data).reshape(m.height, m.width)
        t = truth[stamp_to_ns(m.header.stamp)]
        for c in range(classes):
            inter[c] += np.sum((p == c) & (t == c))
            union[c] += np.sum((p == c) | (t == c))
    present = union[1:] > 0
    return float(np.mean(inter[1:][present] / union[1:][present]))


@pytest.mark.parametrize("storage,encoding,size,frames", CASES,
                         ids=[f"{c[0]}-{c[1]}-{c[2][1]}x{c[2][0]}" for c in CASES])
def test_replay_counts_stamps_and_readable_output(tmp_path, engine, tiny_model, storage, encoding, size, frames):
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=frames / 10, fps=10, size=size, encoding=encoding, storage=storage, seed=3)
    out = tmp_path / "out"
    summary = replay(_opts(bag, out, engine, tiny_model, overlay=True))

    image_topic = "/endoscope/image_raw" + ("/compressed" if encoding in ("jpeg", "png") else "")
    assert summary["frames_in"] == summary["frames_out"] == frames
    assert summary["frames_in_equals_out"] and summary["failed_frames"] == []
    assert summary["storage"] == storage
    written = _read(out)
    for name in ("activity", "segmentation/mask", "segmentation/overlay", "instruments", "status"):
        assert len(written[f"/endoarss/{name}"]) == frames, name
    assert len(written["/endoarss/segmentation/info"]) == 1
    # Each output carries its source image's header stamp and frame_id, at the source's bag time.
    source = _image_stamps(bag, image_topic)
    for name in ("activity", "segmentation/mask", "instruments", "status"):
        got = [(t, stamp_to_ns(m.header.stamp)) for t, m in written[f"/endoarss/{name}"]]
        assert got == source, name
        assert {m.header.frame_id for _, m in written[f"/endoarss/{name}"]} == {"endoscope"}
    for _, mask in written["/endoarss/segmentation/mask"]:
        assert (mask.height, mask.width, mask.encoding) == (size[0], size[1], "mono8")
        assert mask.data.max() < len(engine.seg_classes)
    for _, act in written["/endoarss/activity"]:
        assert act.class_names == list(engine.activity_classes)
        assert abs(float(np.sum(act.probabilities)) - 1.0) < 1e-3
    # The synthetic bag has ground truth: the summary evaluates against it.
    gt = summary["ground_truth"]
    assert gt["frames_with_activity"] == frames and gt["frames_with_mask"] == frames
    truth_act, truth_mask = _ground_truth(bag)
    predicted = {stamp_to_ns(m.header.stamp): m for _, m in written["/endoarss/activity"]}
    assert gt["activity_accuracy"] == pytest.approx(
        np.mean([predicted[s].class_id == c for s, c in truth_act.items()]))
    assert gt["miou_foreground"] == pytest.approx(_miou_fg(written["/endoarss/segmentation/mask"], truth_mask,
                                                           len(engine.seg_classes)), abs=1e-9)
    assert sum(summary["pixel_fractions"][image_topic].values()) == pytest.approx(1.0, abs=1e-4)
    segments = summary["activity_timeline"][image_topic]
    assert sum(s["frames"] for s in segments) == frames and segments[0]["start_s"] == 0.0
    assert json.loads(Path(summary["files"]["summary"]).read_text())["frames_out"] == frames
    assert Path(summary["files"]["timeline"]).stat().st_size > 1000


def test_rgb8_and_bgr8_recordings_give_the_same_masks(tmp_path, engine, tiny_model):
    masks = {}
    for enc in ("rgb8", "bgr8"):
        write_synth_bag(tmp_path / enc, seconds=0.4, fps=10, size=(48, 64), encoding=enc, seed=5)
        replay(_opts(tmp_path / enc, tmp_path / f"out_{enc}", engine, tiny_model, timeline=""))
        masks[enc] = [m.data for _, m in _read(tmp_path / f"out_{enc}")["/endoarss/segmentation/mask"]]
    assert len(masks["rgb8"]) == 4
    for a, b in zip(masks["rgb8"], masks["bgr8"]):
        np.testing.assert_array_equal(a, b)


def test_copy_input_video_topic_and_namespace(tmp_path, engine, tiny_model):
    import cv2

    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=0.6, fps=10, size=(64, 80), encoding="rgb8", seed=1)
    summary = replay(_opts(bag, tmp_path / "out", engine, tiny_model, copy_input=True, namespace="perception",
                           topics=["/endoscope/image_raw"], video=tmp_path / "v.mp4", info=False))
    written = _read(tmp_path / "out")
    assert set(written) == {"/endoscope/image_raw", "/perception/activity", "/perception/segmentation/mask",
                            "/perception/instruments", "/perception/status"}
    original = _read(bag)["/endoscope/image_raw"]
    copied = written["/endoscope/image_raw"]
    assert [t for t, _ in copied] == [t for t, _ in original]
    np.testing.assert_array_equal(copied[2][1].data, original[2][1].data)
    cap = cv2.VideoCapture(str(tmp_path / "v.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == 6 and summary["video_frames"] == 6
    cap.release()


def _write_bag(path, messages, storage="mcap"):
    """messages: list of (topic, msgtype, timestamp, msg)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    from endoarss_ros.bag.msgtypes import typestore

    store = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=8, storage_plugin=plugin) as w:
        conns = {}
        for topic, msgtype, t, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=store)
            w.write(conns[topic], t, store.serialize_cdr(msg, msgtype))


def _image(store, ns, *, encoding="rgb8", w=32, h=24, step=None, nbytes=None):
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=ns // 10**9, nanosec=ns % 10**9),
                                      frame_id="cam")
    step = w * 3 if step is None else step
    data = np.full(step * h if nbytes is None else nbytes, 120, np.uint8)
    return t["sensor_msgs/msg/Image"](header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
                                      step=step, data=data)


def test_undecodable_frames_are_listed_with_their_reason(tmp_path, engine, tiny_model):
    from endoarss_ros.bag.msgtypes import typestore

    store = typestore()
    base = 1_700_000_000 * 10**9
    msgs = [_image(store, base), _image(store, base + 10**8, encoding="yuv9"),
            _image(store, base + 2 * 10**8, nbytes=100), _image(store, base + 3 * 10**8, step=10),
            _image(store, base + 4 * 10**8)]
    _write_bag(tmp_path / "in", [("/cam/image", "sensor_msgs/msg/Image", m.header.stamp.sec * 10**9
                                  + m.header.stamp.nanosec, m) for m in msgs])
    summary = replay(_opts(tmp_path / "in", tmp_path / "out", engine, tiny_model))
    assert summary["frames_in"] == 5 and summary["frames_out"] == 2 and summary["frames_failed"] == 3
    assert not summary["frames_in_equals_out"]
    assert [(f["index"], f["reason"]) for f in summary["failed_frames"]] == [
        (1, "unsupported_encoding"), (2, "truncated_data"), (3, "bad_step")]
    assert summary["ground_truth"] is None
    # Every frame has a status in the output bag, the undecodable ones with INPUT_REJECTED and their reason.
    status = {stamp_to_ns(m.header.stamp): m for _, m in _read(tmp_path / "out")["/endoarss/status"]}
    assert sorted(status) == [stamp_to_ns(m.header.stamp) for m in msgs]
    for i, reason in ((1, "unsupported_encoding"), (2, "truncated_data"), (3, "bad_step")):
        s = status[stamp_to_ns(msgs[i].header.stamp)]
        assert s.flags == 1024 and not s.usable and not s.processed  # PerceptionStatus.INPUT_REJECTED
        assert s.reasons[0].startswith(f"input_rejected: {reason}") and np.isnan(s.sharpness)
    for i in (0, 4):
        s = status[stamp_to_ns(msgs[i].header.stamp)]
        assert s.processed and not s.flags & 1024 and np.isnan(s.age_ms) and s.processing_ms > 0
    assert summary["status"]["/cam/image"]["flags"]["INPUT_REJECTED"] == 3
    assert summary["status"]["/cam/image"]["frames"] == 5 and summary["status"]["/cam/image"]["processed"] == 2


def _assert_nothing_written(parent: Path, name: str, before: set[str]):
    assert not (parent / name).exists()
    assert set(os.listdir(parent)) == before, "temporary or partial files were left behind"


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_truncated_or_corrupt_bag_is_a_clear_error(tmp_path, engine, tiny_model, storage, damage):
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=0.5, fps=10, size=(64, 80), storage=storage, seed=2)
    data_file = next(f for f in bag.iterdir() if f.suffix in (".mcap", ".db3"))
    size = data_file.stat().st_size
    if damage == "truncated":
        os.truncate(data_file, size // 2)
    else:
        with open(data_file, "r+b") as f:
            f.seek(8)
            f.write(b"\xa5" * 512)
    out_parent = tmp_path / "results"
    out_parent.mkdir()
    with pytest.raises(BagError) as err:
        replay(_opts(bag, out_parent / "out", engine, tiny_model))
    assert str(bag) in str(err.value)
    assert "truncated" in str(err.value) or "corrupt" in str(err.value)
    _assert_nothing_written(out_parent, "out", set())


def test_failure_while_reading_removes_the_partial_output(tmp_path, engine, tiny_model):
    """MCAP without chunk CRCs damaged after its header: opening works, reading fails mid-way. With CRCs the
    same damage is found up front: the damaged chunk's frames are failed frames, the rest is replayed."""
    for checksums in (False, True):
        bag = tmp_path / f"in_{checksums}"
        write_synth_bag(bag, seconds=0.5, fps=10, size=(64, 80), seed=2, checksums=checksums)
        (data_file,) = bag.glob("*.mcap")
        with open(data_file, "r+b") as f:
            f.seek(200)
            f.write(b"\xa5" * 512)
        if not checksums:
            with pytest.raises(BagError, match="reading failed"):
                replay(_opts(bag, tmp_path / "out", engine, tiny_model))
            _assert_nothing_written(tmp_path, "out", {"in_False"})
            continue
        summary = replay(_opts(bag, tmp_path / "out", engine, tiny_model))
        assert summary["failure_reasons"] == {"checksum_mismatch": summary["frames_failed"]}
        assert summary["frames_failed"] >= 1 and summary["frames_in"] == 5


class InterruptOnSecondBatch:
    """The engine, except that its second batch raises KeyboardInterrupt (a Ctrl-C mid-replay)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def infer(self, frames, **kw):
        self.calls += 1
        if self.calls == 2:
            raise KeyboardInterrupt
        return self.inner.infer(frames, **kw)


def test_interrupted_run_leaves_no_finished_looking_bag(tmp_path, engine, tiny_model):
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=1.2, fps=10, size=(48, 64), seed=4)
    with pytest.raises(KeyboardInterrupt):
        replay(_opts(bag, tmp_path / "out", InterruptOnSecondBatch(engine), tiny_model, batch=4,
                     video=tmp_path / "v.mp4"))
    _assert_nothing_written(tmp_path, "out", {"in"})


def test_bag_without_image_topics(tmp_path, engine, tiny_model):
    from endoarss_ros.bag.msgtypes import typestore

    store = typestore()
    t = store.types
    header = t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0), frame_id="")
    act = t["endoarss_ros/msg/Activity"](header=header, label="Marking", class_id=0, confidence=1.0,
                                         class_names=["Marking"], probabilities=np.ones(1, np.float32),
                                         raw_probabilities=np.ones(1, np.float32), source="", duration_s=0.0)
    _write_bag(tmp_path / "in", [("/endoscope/ground_truth/activity", "endoarss_ros/msg/Activity", 10**9, act)])
    with pytest.raises(BagError, match="no image topics") as err:
        replay(_opts(tmp_path / "in", tmp_path / "out", engine, tiny_model))
    assert "/endoscope/ground_truth/activity" in str(err.value)
    with pytest.raises(BagError, match="no topic '/nope'"):
        replay(_opts(tmp_path / "in", tmp_path / "out", engine, tiny_model, topics=["/nope"]))
    _assert_nothing_written(tmp_path, "out", {"in"})


def test_missing_bag_and_unwritable_output(tmp_path, engine, tiny_model):
    with pytest.raises(BagError, match="no such file"):
        replay(_opts(tmp_path / "missing", tmp_path / "out", engine, tiny_model))
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=0.2, fps=10, size=(32, 40), seed=1)
    # Tests run as root here, so "unwritable" is a parent that is a regular file.
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        replay(_opts(bag, tmp_path / "afile" / "out", engine, tiny_model))
    (tmp_path / "exists").mkdir()
    with pytest.raises(OutputError, match="already exists"):
        replay(_opts(bag, tmp_path / "exists", engine, tiny_model))
    assert set(os.listdir(tmp_path)) == {"in", "afile", "exists"}
    assert list((tmp_path / "exists").iterdir()) == []


def test_cli_reports_errors_and_summary(tmp_path, tiny_model, capsys):
    from endoarss_ros.cli import main

    assert main(["replay", str(tmp_path / "missing"), "-o", str(tmp_path / "o"), "--model", tiny_model]) == 2
    assert "endoarss replay: error: bag" in capsys.readouterr().err
    bag = tmp_path / "in"
    write_synth_bag(bag, seconds=0.3, fps=10, size=(32, 40), storage="sqlite3", seed=1)
    assert main(["replay", str(bag), "-o", str(tmp_path / "o"), "--model", tiny_model, "--device", "cpu",
                 "--storage", "mcap"]) == 0
    out = capsys.readouterr().out
    assert "frames in 3 == frames out 3" in out and "against ground truth" in out
    with BagReader(tmp_path / "o") as reader:
        assert reader.storage == "mcap"

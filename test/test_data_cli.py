"""`endoarss synth dataset|bag` through the top-level CLI."""
from rosbags.highlevel import AnyReader

from endoarss_ros.bag.msgtypes import typestore
from endoarss_ros.cli import main
from endoarss_ros.data.datasets import ReleasedLayoutDataset


def test_synth_dataset_cli(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["synth", "dataset", str(out), "--train", "3", "--val", "3", "--test", "2", "--size", "40",
                 "--seed", "3"]) == 0
    assert (out / "classes.yaml").is_file()
    assert len(list((out / "train").glob("*/image/*.png"))) == 3
    assert len(list((out / "val").glob("*/mask/*.png"))) == 3
    assert len(list((out / "test").glob("*/image/*.png"))) == 2
    item = ReleasedLayoutDataset(out, "train", size=None)[0]
    assert item["image"].shape == (3, 40, 40)
    assert "train: 3 frames" in capsys.readouterr().out


def test_synth_bag_cli(tmp_path, capsys):
    out = tmp_path / "bag"
    assert main(["synth", "bag", str(out), "--seconds", "1", "--fps", "3", "--size", "64x48",
                 "--encoding", "jpeg", "--storage", "sqlite3"]) == 0
    assert list(out.glob("*.db3")) and (out / "metadata.yaml").is_file()
    with AnyReader([out], default_typestore=typestore()) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts == {"/endoscope/image_raw/compressed": 3, "/endoscope/ground_truth/mask": 3,
                      "/endoscope/ground_truth/activity": 3}
    captured = capsys.readouterr()
    assert "3 frames, 64x48 jpeg" in captured.out
    assert "\r" not in captured.err and "frame/s" not in captured.err  # no progress bar into a pipe or log

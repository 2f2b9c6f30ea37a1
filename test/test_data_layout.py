"""Dataset layouts on disk and the torch datasets reading them."""
import cv2
import numpy as np
import pytest
import torch

from endoarss_ros.data.classes import MTLESD, generic_class_set
from endoarss_ros.data.datasets import GenericLayoutDataset, ReleasedLayoutDataset, split_train_val
from endoarss_ros.data.layout import (
    GenericLayoutWriter,
    class_to_raw,
    raw_to_class,
    read_generic_labels,
    write_released_sample,
    write_synthetic_dataset,
)


def _pair(seed, h=40, w=48):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = rng.integers(0, 7, (h, w), dtype=np.uint8)
    return rgb, mask


def test_raw_id_encoding():
    cls = np.array([[0, 1, 2, 3, 4, 5, 6]], np.uint8)
    assert class_to_raw(cls).tolist() == [[0, 2, 3, 4, 5, 6, 7]]
    assert raw_to_class(class_to_raw(cls)).tolist() == cls.tolist()
    assert raw_to_class(np.array([1], np.uint8)).tolist() == [0]  # as the released loader does


def test_hand_written_raw_png_is_shifted(tmp_path):
    """A mask written the way the release stores it (raw ids {0, 2..7}) reads as class ids {0, 1..6}."""
    raw = np.array([[0, 2, 3, 4], [5, 6, 7, 0]], np.uint8)
    for k in (1, 3):  # activity folders 1 and 3 -> activities 0 and 2
        (tmp_path / "train" / str(k) / "image").mkdir(parents=True)
        (tmp_path / "train" / str(k) / "mask").mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "train" / str(k) / "image" / "f.png"), np.full((2, 4, 3), 200, np.uint8))
        cv2.imwrite(str(tmp_path / "train" / str(k) / "mask" / "f.png"), raw)
    ds = ReleasedLayoutDataset(tmp_path, "train", size=None)
    assert len(ds) == 2 and ds.activities == [0, 2]
    item = ds[0]
    assert item["mask"].tolist() == [[0, 1, 2, 3], [4, 5, 6, 0]]
    assert item["mask"].dtype == torch.int64 and item["activity"].item() == 0
    assert item["image"].shape == (3, 2, 4)
    assert torch.allclose(item["image"], torch.full((3, 2, 4), 200 / 255))
    # No classes.yaml: generic names, 3 activities from the largest folder number.
    assert ds.class_set.num_activities == 3 and ds.class_set.num_seg_classes == 7


def test_released_round_trip(tmp_path):
    pairs = [(*_pair(i), i % 3) for i in range(6)]
    for i, (rgb, mask, a) in enumerate(pairs):
        img_path, mask_path = write_released_sample(tmp_path, "test", f"{i:03d}", rgb, mask, a)
        assert img_path.parent.parent.name == str(a + 1) and img_path.name == mask_path.name
        raw = cv2.imread(str(mask_path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(raw, class_to_raw(mask))  # raw encoding on disk
    MTLESD.save_yaml(tmp_path / "classes.yaml")
    ds = ReleasedLayoutDataset(tmp_path, "test", size=None)
    assert ds.class_set == MTLESD
    by_name = {item["path"].split("/")[-1]: item for item in (ds[i] for i in range(len(ds)))}
    for i, (rgb, mask, a) in enumerate(pairs):
        item = by_name[f"{i:03d}.png"]
        assert item["activity"].item() == a
        assert np.array_equal(item["mask"].numpy(), mask)
        assert np.array_equal((item["image"] * 255).round().byte().permute(1, 2, 0).numpy(), rgb)


def test_resize_on_read(tmp_path):
    rgb, _ = _pair(0, 64, 64)
    mask = np.zeros((64, 64), np.uint8)
    mask[:, 32:] = 5
    write_released_sample(tmp_path, "train", "a", rgb, mask, 1)
    item = ReleasedLayoutDataset(tmp_path, "train", size=(16, 24))[0]
    assert item["image"].shape == (3, 16, 24) and item["mask"].shape == (16, 24)
    assert set(item["mask"].unique().tolist()) == {0, 5}  # nearest: no blended ids
    assert (item["mask"][:, :12] == 0).all() and (item["mask"][:, 12:] == 5).all()


def test_generic_round_trip(tmp_path):
    cs = generic_class_set(4, 2)
    pairs = [(*_pair(i), i % 2) for i in range(4)]
    with GenericLayoutWriter(tmp_path, cs) as w:
        for i, (rgb, mask, a) in enumerate(pairs):
            w.add(f"s{i}", rgb, mask % 4, a)
    assert read_generic_labels(tmp_path) == [(f"s{i}.png", i % 2) for i in range(4)]
    ds = GenericLayoutDataset(tmp_path, size=None)
    assert ds.class_set == cs and len(ds) == 4
    for i, (_rgb, mask, a) in enumerate(pairs):
        item = ds[i]
        assert item["activity"].item() == a
        assert np.array_equal(item["mask"].numpy(), mask % 4)  # class ids stored as-is


def test_synthetic_dataset_splits(tmp_path):
    counts = write_synthetic_dataset(tmp_path, {"train": 6, "val": 3, "test": 3}, size=48, seed=1)
    assert counts == {"train": 6, "val": 3, "test": 3}
    assert (tmp_path / "classes.yaml").is_file()
    sets = {s: ReleasedLayoutDataset(tmp_path, s, size=None) for s in counts}
    assert sets["train"].activities.count(0) == 2 and sorted(set(sets["val"].activities)) == [0, 1, 2]
    for ds in sets.values():
        for i in range(len(ds)):
            item = ds[i]
            present = set(item["mask"].unique().tolist()) - {0}
            assert present == MTLESD.activity_objects[item["activity"].item()]
    # Splits come from different seed streams: no identical frames across splits.
    imgs = {s: [ds[i]["image"] for i in range(len(ds))] for s, ds in sets.items()}
    assert not any(torch.equal(a, b) for a in imgs["train"] for b in imgs["val"] + imgs["test"])
    # Deterministic: writing again with the same seed gives the same bytes.
    write_synthetic_dataset(tmp_path / "again", {"val": 3}, size=48, seed=1)
    f = sorted((tmp_path / "val" / "1" / "image").glob("*.png"))[0]
    assert f.read_bytes() == (tmp_path / "again" / "val" / "1" / "image" / f.name).read_bytes()


def test_synthetic_generic_layout(tmp_path):
    write_synthetic_dataset(tmp_path, {"train": 3}, size=(40, 56), seed=2, layout="generic")
    ds = GenericLayoutDataset(tmp_path / "train", size=None)
    assert len(ds) == 3 and ds.class_set == MTLESD and ds[0]["image"].shape == (3, 40, 56)


def test_split_train_val_stratified():
    class Fake(torch.utils.data.Dataset):
        activities = [0] * 10 + [1] * 10 + [2] * 5

        def __len__(self):
            return len(self.activities)

        def __getitem__(self, i):
            return i

    train, val = split_train_val(Fake(), 0.2, seed=0)
    assert sorted(list(train.indices) + list(val.indices)) == list(range(25))
    assert not set(train.indices) & set(val.indices)
    assert sorted(Fake.activities[i] for i in val.indices) == [0, 0, 1, 1, 2]
    assert list(split_train_val(Fake(), 0.2, seed=0)[1].indices) == list(val.indices)
    with pytest.raises(ValueError):
        split_train_val(Fake(), 1.0)

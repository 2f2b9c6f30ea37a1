"""Augmentations keep image and mask aligned and are reproducible."""
import cv2
import numpy as np
import torch

from endoarss_ros.data.datasets import ReleasedLayoutDataset
from endoarss_ros.data.layout import write_released_sample
from endoarss_ros.data.transforms import BlurNoise, ColorJitter, RandomFlip, RandomScaleCrop, train_transforms


def _coded_pair(h=32, w=40):
    """Image whose red channel encodes the mask, so alignment is checkable after any geometry."""
    mask = np.zeros((h, w), np.uint8)
    mask[4:12, 5:20] = 3  # an off-centre block: flips move it
    mask[20:30, 30:38] = 6
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[..., 0] = mask * 40
    rgb[..., 1] = 100
    return rgb, mask


def test_flip_moves_image_and_mask_together():
    rgb, mask = _coded_pair()
    rng = np.random.default_rng(0)
    img2, mask2 = RandomFlip(horizontal=1.0, vertical=1.0)(rgb, mask, rng)
    assert np.array_equal(mask2, mask[::-1, ::-1]) and np.array_equal(img2, rgb[::-1, ::-1])
    assert np.array_equal(img2[..., 0], mask2 * 40)
    same = RandomFlip(horizontal=0.0, vertical=0.0)(rgb, mask, rng)
    assert np.array_equal(same[1], mask)


def test_scale_crop_keeps_alignment_and_ids():
    rgb, mask = _coded_pair()
    for seed in range(10):
        img2, mask2 = RandomScaleCrop(scale=(1.2, 2.0), p=1.0)(rgb, mask, np.random.default_rng(seed))
        assert img2.shape == rgb.shape and mask2.shape == mask.shape
        assert set(np.unique(mask2).tolist()) <= {0, 3, 6}
        # Away from label borders the encoded red channel matches the nearest-resized mask.
        k = np.ones((5, 5), np.uint8)  # linear blending spans ~scale pixels around a label edge
        interior = cv2.dilate(mask2, k) == cv2.erode(mask2, k)
        interior[:2], interior[-2:], interior[:, :2], interior[:, -2:] = False, False, False, False
        assert np.array_equal(img2[..., 0][interior], mask2[interior].astype(np.uint8) * 40)


def test_photometric_leave_mask_alone():
    rgb, mask = _coded_pair()
    rng = np.random.default_rng(1)
    for t in (ColorJitter(), BlurNoise(blur_p=1.0, noise_p=1.0)):
        img2, mask2 = t(rgb, mask, rng)
        assert mask2 is mask and img2.shape == rgb.shape and img2.dtype == np.uint8
        assert not np.array_equal(img2, rgb)


def test_pipeline_reproducible():
    rgb, mask = _coded_pair()
    t = train_transforms()
    a = t(rgb, mask, np.random.default_rng(3))
    b = t(rgb, mask, np.random.default_rng(3))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_dataset_applies_transform_seeded_by_torch(tmp_path):
    rgb, mask = _coded_pair()
    write_released_sample(tmp_path, "train", "x", rgb, mask, 0)
    ds = ReleasedLayoutDataset(tmp_path, "train", size=None, transform=RandomFlip(1.0, 0.0))
    item = ds[0]
    assert np.array_equal(item["mask"].numpy(), mask[:, ::-1])
    ds.transform = train_transforms()
    torch.manual_seed(0)
    a = ds[0]
    torch.manual_seed(0)
    b = ds[0]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])

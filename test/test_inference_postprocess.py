"""The exact 'logits' mask: the fast path equals the dense reference pixel for pixel, and evaluates few pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from endoarss_ros.inference import postprocess
from endoarss_ros.inference.postprocess import (
    axis_map,
    dense_logits_argmax,
    logits_argmax,
    reference_logits_argmax,
)
from endoarss_ros.model import ModelConfig, build_model, load_model
from test.conftest import REPO

DEMO = REPO / "models" / "demo" / "endoarss_demo.safetensors"


def _torch_exact(L: np.ndarray, H: int, W: int, ac: bool) -> np.ndarray:
    up = F.interpolate(torch.from_numpy(L)[None], size=(H, W), mode="bilinear", align_corners=ac)
    return up.argmax(1)[0].numpy()


def test_axis_map_is_torchs_bilinear_sampling():
    """The reference samples where torch does: interpolating a ramp gives torch's values."""
    for n_in, n_out, ac in [(42, 1080, False), (42, 1920, True), (56, 30, False), (7, 7, True), (5, 1, True)]:
        m = axis_map(n_in, n_out, ac)
        ramp = np.arange(n_in, dtype=np.float32) ** 1.5
        ours = ramp[m.i0] * m.w0 + ramp[m.i1] * m.w1
        ref = F.interpolate(torch.from_numpy(ramp)[None, None, None], size=(1, n_out), mode="bilinear",
                            align_corners=ac)[0, 0, 0].numpy()
        np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=1e-5)
        assert (np.diff(m.i0) >= 0).all() and m.count.sum() == n_out


@pytest.mark.parametrize("seed", range(6))
def test_fast_equals_reference_on_random_logits(seed):
    """Random shapes (up- and downscaling, 1-pixel and odd sizes), both align_corners, exact ties (rounded
    logits, constant maps, duplicated classes) and a class that wins only between cells."""
    rng = np.random.default_rng(seed)
    for trial in range(40):
        C, h, w = int(rng.integers(1, 9)), int(rng.integers(1, 13)), int(rng.integers(1, 13))
        H, W, ac = int(rng.integers(1, 50)), int(rng.integers(1, 50)), bool(rng.integers(0, 2))
        L = (rng.normal(size=(C, h, w)) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
        kind = trial % 5
        if kind == 1:
            L = np.round(L)  # many exact ties
        elif kind == 2:
            L[:] = L[:, :1, :1]  # every pixel the same vector
        elif kind == 3 and C > 2:
            L[C - 1] = L[0]  # two classes identical everywhere: the first index must win
        got = logits_argmax(L, H, W, align_corners=ac)
        np.testing.assert_array_equal(got, reference_logits_argmax(L, H, W, align_corners=ac),
                                      err_msg=f"C={C} h={h} w={w} H={H} W={W} ac={ac} kind={kind}")


def test_a_class_that_wins_at_no_corner_is_found():
    """Corners (10, 0, 9) and (0, 10, 9): class 2 is the argmax nowhere at low resolution but wins between."""
    L = np.zeros((3, 1, 2), np.float32)
    L[:, 0, 0], L[:, 0, 1] = (10, 0, 9), (0, 10, 9)
    got = logits_argmax(L, 1, 40)
    assert set(np.unique(got)) == {0, 1, 2}
    np.testing.assert_array_equal(got, reference_logits_argmax(L, 1, 40))


@pytest.fixture(scope="module")
def demo_logits():
    """Logits of the trained demo model on synthetic ESD frames (42 x 42, 7 classes)."""
    from endoarss_ros.data.synth import generate_frame
    from endoarss_ros.inference.frames import frame_from_array
    from endoarss_ros.inference.preprocess import cv2_preprocess

    model = load_model(DEMO).eval()
    out = []
    with torch.inference_mode():
        for seed in range(3):
            rgb = generate_frame(seed, seed % 3, (270, 480))[0]
            small = cv2_preprocess(frame_from_array(rgb, "rgb8"), tuple(model.config.input_size))
            x = torch.from_numpy(small).permute(2, 0, 1)[None].float() / 255.0
            out.append(model(x, output_size=None).segmentation[0].numpy())
    return out


@pytest.mark.parametrize("H,W,ac", [(1080, 1920, False), (1081, 1917, False), (1024, 1280, True), (23, 31, False)])
def test_fast_equals_reference_on_trained_logits(demo_logits, H, W, ac):
    for L in demo_logits:
        stats = {}
        got = logits_argmax(L, H, W, align_corners=ac, stats=stats)
        ref = reference_logits_argmax(L, H, W, align_corners=ac)
        np.testing.assert_array_equal(got, ref)
        assert len(np.unique(ref)) >= 2  # a real mask with boundaries, not one class
        # the reference is the bilinear upsample + argmax torch computes (ties to float rounding aside)
        assert (ref == _torch_exact(L, H, W, ac)).mean() >= 0.9999
        if H * W > 1e6:  # only pixels near class boundaries were evaluated class by class
            assert 0 < stats["exact_pixels"] < 0.25 * H * W, stats


def test_fast_equals_reference_for_the_official_family():
    """official: align_corners=True and logits already at the working size (56 x 56 here)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig.official(backbone="tiny", input_size=(56, 56))).eval()
    with torch.inference_mode():
        L = model(torch.rand(1, 3, 56, 56), output_size=None).segmentation[0].numpy()
    assert L.shape[1:] == (56, 56) and model.config.resize_align_corners
    for H, W in [(1080, 1920), (57, 113)]:
        np.testing.assert_array_equal(logits_argmax(L, H, W, align_corners=True),
                                      reference_logits_argmax(L, H, W, align_corners=True))


def test_previous_dense_method_gives_the_same_masks(demo_logits):
    for L in demo_logits[:2]:
        ref = reference_logits_argmax(L, 1080, 1920)
        assert (dense_logits_argmax(L, 1080, 1920) == ref).mean() >= 0.9999
        np.testing.assert_array_equal(dense_logits_argmax(L, 300, 400, align_corners=True),
                                      _torch_exact(L, 300, 400, True))


def test_non_finite_logits_fall_back_to_the_reference():
    L = np.random.default_rng(0).normal(size=(3, 4, 4)).astype(np.float32)
    L[1, 2, 2] = np.inf
    np.testing.assert_array_equal(logits_argmax(L, 9, 9), reference_logits_argmax(L, 9, 9))


@pytest.mark.parametrize("method", ["cells", "bands"])
@pytest.mark.parametrize("seed", range(3))
def test_both_exact_methods_equal_the_reference(monkeypatch, method, seed):
    """The same random logits through each way of evaluating the ambiguous pixels (the threshold between them
    pinned to 'always' / 'never'), with exact ties and a class duplicated."""
    monkeypatch.setattr(postprocess, "_BAND_FRACTION", 0.0 if method == "bands" else 2.0)
    rng = np.random.default_rng(100 + seed)
    for trial in range(30):
        C, h, w = int(rng.integers(2, 9)), int(rng.integers(1, 15)), int(rng.integers(1, 15))
        H, W, ac = int(rng.integers(1, 90)), int(rng.integers(1, 90)), bool(rng.integers(0, 2))
        L = (rng.normal(size=(C, h, w)) * rng.choice([0.01, 1.0, 30.0])).astype(np.float32)
        if trial % 3 == 1:
            L = np.round(L)
        elif trial % 3 == 2:
            L[C - 1] = L[0]
        stats = {}
        got = logits_argmax(L, H, W, align_corners=ac, stats=stats)
        np.testing.assert_array_equal(got, reference_logits_argmax(L, H, W, align_corners=ac),
                                      err_msg=f"{method}: C={C} h={h} w={w} H={H} W={W} ac={ac}")
        assert stats["exact_method"] == method or stats["exact_pixels"] == 0


@pytest.mark.parametrize("ac", [False, True])
def test_noise_logits_worst_case_is_exact_and_bounded_by_the_dense_work(ac):
    """Logits of noise: nearly every cell ambiguous. The mask is still the reference's, evaluated band by band,
    and no more upsampled values are computed than the dense method's C * H * W."""
    L = np.random.default_rng(7).normal(size=(7, 42, 42)).astype(np.float32)
    H, W = 1080, 1920
    stats = {}
    got = logits_argmax(L, H, W, align_corners=ac, stats=stats)
    np.testing.assert_array_equal(got, reference_logits_argmax(L, H, W, align_corners=ac))
    assert stats["exact_pixels"] > 0.5 * H * W and stats["exact_method"] == "bands", stats
    assert stats["evaluated_values"] <= 7 * H * W, stats


def test_trained_logits_evaluate_a_small_share_of_the_dense_work(demo_logits):
    """Endoscope scenes: a few cells along class boundaries, each over its own few candidates."""
    for L in demo_logits:
        stats = {}
        logits_argmax(L, 1080, 1920, stats=stats)
        assert stats["exact_method"] == "cells" and stats["evaluated_values"] < 0.1 * L.shape[0] * 1080 * 1920, stats

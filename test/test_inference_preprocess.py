"""The CPU preprocessing: 2x2 halvings before INTER_AREA stay within a tight tolerance of one INTER_AREA."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from endoarss_ros.data.synth import generate_frame
from endoarss_ros.inference import InferenceEngine, frame_from_array
from endoarss_ros.inference.preprocess import cv2_preprocess, halvings, torch_preprocess
from test.conftest import REPO

DEMO = REPO / "models" / "demo" / "endoarss_demo.safetensors"


def test_halvings_leave_a_real_downscale_for_inter_area():
    assert halvings(1080, 1920, 168, 168) == 2  # -> 270 x 480, then INTER_AREA by 1.6 x 2.9
    assert halvings(1024, 1280, 168, 168) == 2
    assert halvings(720, 1280, 168, 168) == 1
    assert halvings(1080, 1920, 224, 224) == 1
    assert halvings(480, 640, 168, 168) == 0
    assert halvings(1081, 1920, 168, 168) == 0  # odd: a 2x2 box would not be exact
    assert halvings(48, 70, 14, 28) == 0


@pytest.fixture(scope="module")
def esd_frames():
    """Synthetic endoscope frames (instruments with hard edges) at the two benchmark sizes."""
    return [frame_from_array(generate_frame(seed, seed % 3, size)[0], "rgb8")
            for size in ((1080, 1920), (1024, 1280)) for seed in range(2)]


def test_halved_resize_is_within_the_spread_of_the_two_exact_filters(esd_frames):
    """Against one INTER_AREA resize: mean difference <= 0.8 grey levels, 99th percentile <= 8 (measured 0.34-0.62
    and 3-8). The device path's exact box filter differs from INTER_AREA by about as much (mean ~0.4)."""
    for f in esd_frames:
        direct = cv2_preprocess(f, (168, 168), prescale=False).astype(np.float64)
        halved = cv2_preprocess(f, (168, 168)).astype(np.float64)
        box = torch_preprocess(torch.from_numpy(f.pixels)[None], "rgb8", (168, 168))[0].permute(1, 2, 0).numpy()
        d = np.abs(halved - direct)
        assert d.mean() <= 0.8 and np.percentile(d, 99) <= 8, (f.size, d.mean(), np.percentile(d, 99))
        assert d.mean() <= 2 * np.abs(box * 255 - direct).mean()


def test_halved_resize_keeps_the_demo_models_masks(esd_frames):
    fast = InferenceEngine(str(DEMO), device="cpu", preprocess="cv2")
    direct = InferenceEngine(str(DEMO), device="cpu", preprocess="cv2-direct")
    for f in esd_frames:
        a, b = fast.infer([f])[0], direct.infer([f])[0]
        assert (a.mask == b.mask).mean() >= 0.995
        np.testing.assert_allclose(a.activity_probs, b.activity_probs, atol=0.02)


@pytest.mark.parametrize("prescale", [True, False])
def test_alpha_channel_is_resized_away_without_changing_the_colours(prescale):
    rgb = generate_frame(3, 1, (540, 960))[0]
    alpha = np.full((540, 960, 1), 7, np.uint8)
    want = cv2_preprocess(frame_from_array(rgb, "rgb8"), (168, 168), prescale=prescale)
    got = cv2_preprocess(frame_from_array(np.dstack([rgb, alpha]), "rgba8"), (168, 168), prescale=prescale)
    bgra = cv2_preprocess(frame_from_array(np.dstack([rgb[:, :, ::-1], alpha]), "bgra8"), (168, 168),
                          prescale=prescale)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(bgra, want)

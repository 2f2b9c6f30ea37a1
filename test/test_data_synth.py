"""Procedural generator: determinism, label consistency, endoscopic look, no activity shortcut."""
import numpy as np
import pytest

from endoarss_ros.data import classes as C
from endoarss_ros.data.classes import MTLESD
from endoarss_ros.data.synth import activity_timeline, generate_frame, generate_sequence

SIZE = (128, 128)
ALL_OBJECTS = set(range(1, MTLESD.num_seg_classes))


def _fov_masks(h, w, radius_frac=0.40):
    # Conservative regions: the FOV radius is >= 0.46 of the shorter side, centred within 0.02.
    yy, xx = np.mgrid[:h, :w]
    r = np.hypot(yy - h / 2, xx - w / 2) / min(h, w)
    return r < radius_frac, r > 0.62


def test_frame_deterministic():
    a = generate_frame(123, C.MARKING, SIZE)
    b = generate_frame(123, C.MARKING, SIZE)
    c = generate_frame(124, C.MARKING, SIZE)
    assert a[0].dtype == np.uint8 and a[0].shape == (*SIZE, 3) and a[1].shape == SIZE
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    rng = np.random.default_rng(5)
    d = generate_frame(rng, 2, SIZE)
    assert np.array_equal(d[0], generate_frame(np.random.default_rng(5), 2, SIZE)[0])


def test_sequence_deterministic():
    a = list(generate_sequence(7, 6, fps=10, size=(64, 80)))
    b = list(generate_sequence(7, 6, fps=10, size=(64, 80)))
    c = list(generate_sequence(8, 6, fps=10, size=(64, 80)))
    assert [f.t for f in a] == pytest.approx([i / 10 for i in range(6)])
    assert all(np.array_equal(x.rgb, y.rgb) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b))
    assert not np.array_equal(a[0].rgb, c[0].rgb)
    assert a[0].rgb.shape == (64, 80, 3)


@pytest.mark.parametrize("activity", [0, 1, 2])
def test_masks_show_exactly_the_activity_objects(activity):
    expected = MTLESD.activity_objects[activity]
    for seed in range(25):
        rgb, mask = generate_frame(seed, activity, SIZE)
        present = set(np.unique(mask).tolist()) - {0}
        assert present <= ALL_OBJECTS
        assert present == expected, (seed, present)
        instruments = np.isin(mask, list(C.INSTRUMENT_CLASSES)).sum()
        assert instruments > 0.01 * mask.size  # an instrument is clearly visible


def test_large_frames_and_wide_aspect():
    rgb, mask = generate_frame(3, C.CIRCUMFERENTIAL_INCISION, (270, 480))
    assert rgb.shape == (270, 480, 3)
    assert set(np.unique(mask).tolist()) - {0} == MTLESD.activity_objects[1]


def test_looks_like_endoscopy():
    inner, outer = _fov_masks(*SIZE)
    for seed in range(12):
        rgb, mask = generate_frame(seed, seed % 3, SIZE)
        assert rgb[outer].mean() < 8  # dark outside the circular field of view
        assert (mask[outer] == 0).all()
        tissue = rgb[inner & (mask == 0)].astype(float).mean(0)
        assert tissue[0] > tissue[1] + 30 and tissue[0] > tissue[2] + 30  # reddish mucosa
        assert rgb[inner].std() > 10  # textured, not flat


def test_no_tissue_colour_shortcut():
    """Scene and lighting do not depend on the activity: same seed, same tissue pixels."""
    inner, _ = _fov_masks(*SIZE)
    means = {a: [] for a in range(3)}
    for seed in range(20):
        frames = [generate_frame(seed, a, SIZE) for a in range(3)]
        for a, (rgb, mask) in enumerate(frames):
            means[a].append(rgb[inner & (mask == 0)].astype(float).mean(0))
        # Away from all objects, the three activities render identical tissue.
        import cv2
        objects = np.zeros(SIZE, np.uint8)
        for _, mask in frames:
            objects |= (mask > 0).astype(np.uint8)
        far = cv2.dilate(objects, np.ones((9, 9), np.uint8)) == 0
        ref = frames[0][0][far & inner]
        assert all(np.array_equal(rgb[far & inner], ref) for rgb, _ in frames[1:])
    m = np.array([np.mean(means[a], 0) for a in range(3)])
    assert np.abs(m - m.mean(0)).max() < 6  # grey levels


def test_timeline_cycles_in_surgical_order():
    segs = activity_timeline(0, 40.0)
    assert segs[0].activity == C.MARKING and segs[-1].end >= 40.0
    for s, nxt in zip(segs, segs[1:]):
        assert nxt.activity == (s.activity + 1) % 3
        assert 2.0 <= s.end - s.start <= 6.0 and nxt.start == s.end


def test_sequence_coherent_and_labelled():
    frames = list(generate_sequence(3, 60, fps=5, size=(96, 96)))  # 12 s: several activities
    acts = [f.activity for f in frames]
    assert acts[0] == C.MARKING and len(set(acts)) >= 2
    for f in frames:
        assert set(np.unique(f.mask).tolist()) - {0} == MTLESD.activity_objects[f.activity]
    # Consecutive frames of one activity differ only a little (slow camera, smooth instruments).
    for f0, f1 in zip(frames, frames[1:]):
        if f0.activity == f1.activity:
            assert np.abs(f0.rgb.astype(int) - f1.rgb.astype(int)).mean() < 20
    # Marks persist from marking into the incision: the last marking frame's dots stay labelled.
    last_mark = max(i for i, a in enumerate(acts) if a == C.MARKING)
    if last_mark + 1 < len(frames) and acts[last_mark + 1] == C.CIRCUMFERENTIAL_INCISION:
        a, b = frames[last_mark].mask == C.MARKING_AREA, frames[last_mark + 1].mask == C.MARKING_AREA
        assert (a & b).sum() > 0.5 * a.sum()


def test_bad_arguments():
    with pytest.raises(ValueError):
        generate_frame(0, 3, SIZE)
    with pytest.raises(ValueError):
        generate_frame(0, 0, (8, 8))

"""StereoGeometry on rendered stereo pairs with known 3D truth: tips and entry points in millimetres, tip-to-tissue,
a wrong match refused, swapped views publishing nothing 3D, raw (distorted, unrectified) input through
camera_info, and mono rays."""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from endoarss_ros.data.classes import MARKING, SUBMUCOSAL_DISSECTION
from endoarss_ros.data.stereo_scene import StereoRigSpec, StereoSceneSettings, generate_stereo_sequence
from endoarss_ros.inference.camera_model import CameraModel
from endoarss_ros.inference.instruments import extract
from endoarss_ros.inference.stereo import Instrument3D, StereoGeometry, StereoRig, mono_geometry

INSTRUMENT_CLASSES = (1, 3, 4)  # MTLESD: FPCW Knife, FPCW Forceps, Electric Knife
SPEC = StereoRigSpec(width=640, height=512, focal_px=550.0, baseline_m=0.005)  # half the default resolution


def _rig(spec: StereoRigSpec = SPEC) -> StereoRig:
    return StereoRig.from_models(CameraModel.from_fields(spec.camera_info_fields("left", "left_optical")),
                                 CameraModel.from_fields(spec.camera_info_fields("right", "right_optical")))


@pytest.fixture(scope="module")
def frames():
    settings = StereoSceneSettings(rig=SPEC)
    two = list(generate_stereo_sequence(5, 2, fps=0.5, settings=settings, start_activity=SUBMUCOSAL_DISSECTION,
                                        segment_seconds=(3.0, 3.0)))
    one = list(generate_stereo_sequence(6, 1, settings=settings, start_activity=MARKING))
    return two + one


def _truth_of(instrument, frame):
    same = [t for t in frame.instruments if t.class_id == instrument.class_id]
    return min(same, key=lambda t: np.hypot(*(np.array(t.tip_left_px) - instrument.tip)))


def _run(geometry, frame, left=None, right=None):
    li = extract(frame.left_mask, INSTRUMENT_CLASSES) if left is None else left
    ri = extract(frame.right_mask, INSTRUMENT_CLASSES) if right is None else right
    return li, ri, geometry.process(frame.left, frame.right, frame.left_mask, frame.right_mask, li, ri)


def test_tips_entries_and_tip_to_tissue_in_millimetres(frames):
    geometry = StereoGeometry(_rig(), instrument_classes=INSTRUMENT_CLASSES)
    tip_errors, entry_errors, tissue_errors, count, with_3d = [], [], [], 0, 0
    for frame in frames:
        li, _, result = _run(geometry, frame)
        assert len(result.instruments) == len(li)
        assert set(result.stage_ms) == set(StereoGeometry.STAGES)
        for instrument, g in zip(li, result.instruments):
            truth = _truth_of(instrument, frame)
            count += truth.visible
            if not g.has_3d:  # refused: e.g. its tip hidden from the right camera by the view's edge
                assert np.isnan(g.tip_to_tissue) and not g.tip_3d.any()
                continue
            with_3d += 1
            tip_errors.append(np.linalg.norm(g.tip_3d - truth.tip_3d) * 1000)
            entry_errors.append(np.linalg.norm(g.entry_3d - truth.entry_3d) * 1000)
            tissue_errors.append(abs(g.tip_to_tissue - truth.tip_to_tissue_m) * 1000)
            assert np.linalg.norm(g.tip_ray) == pytest.approx(1.0)
            assert np.degrees(np.arccos(g.tip_ray @ truth.tip_3d / np.linalg.norm(truth.tip_3d))) < 1.0
            # one sigma of depth: Z^2 / (f B) * sigma_d, a fraction of a millimetre to a few at this size
            assert 0 < g.tip_depth_sigma < 0.005
    assert count >= 4 and with_3d >= 0.8 * count
    # At 640x512 one pixel of disparity is 3.6 mm of depth at 100 mm: the refined match is well below it.
    assert np.median(tip_errors) < 2.0 and max(tip_errors) < 5.0, tip_errors
    assert np.median(tissue_errors) < 3.0, tissue_errors
    assert np.median(entry_errors) < 8.0, entry_errors


def test_a_wrong_match_is_refused_not_published(frames):
    frame = frames[0]
    geometry = StereoGeometry(_rig(), instrument_classes=INSTRUMENT_CLASSES)
    li = extract(frame.left_mask, INSTRUMENT_CLASSES)
    ri = extract(frame.right_mask, INSTRUMENT_CLASSES)
    # The right view's instruments claim to lie 25 px to the left of where they are, on the same rows: the
    # match is made (a plausible disparity), but the image puts the left instrument's tip 25 px away from that
    # claimed axis, across it for a steep instrument: the reprojection check refuses the match.
    moved = [dataclasses.replace(i, tip=(i.tip[0] - 25.0, i.tip[1]), entry=(i.entry[0] - 25.0, i.entry[1]))
             for i in ri]
    steep = [abs(math.sin(i.orientation)) > 0.6 for i in ri]
    assert sum(steep) >= 1
    _, _, result = _run(geometry, frame, li, moved)
    assert result.rejected >= sum(steep) and result.matched == len(li) - result.rejected
    for instrument, g in zip(li, result.instruments):
        if g.has_3d:  # a shallow instrument may keep its match: then it must be right
            assert np.linalg.norm(g.tip_3d - _truth_of(instrument, frame).tip_3d) < 0.005
    # Two instruments whose classes are swapped in the right view: whatever is matched, nothing wrong comes out.
    swapped = [dataclasses.replace(i, class_id=ri[1 - k].class_id) for k, i in enumerate(ri)]
    _, _, result = _run(geometry, frame, li, swapped)
    for instrument, g in zip(li, result.instruments):
        assert not g.has_3d or np.linalg.norm(g.tip_3d - _truth_of(instrument, frame).tip_3d) < 0.005


def test_swapped_views_give_no_3d(frames):
    frame = frames[0]
    geometry = StereoGeometry(_rig(), instrument_classes=INSTRUMENT_CLASSES)
    li = extract(frame.left_mask, INSTRUMENT_CLASSES)
    ri = extract(frame.right_mask, INSTRUMENT_CLASSES)
    result = geometry.process(frame.right, frame.left, frame.right_mask, frame.left_mask, ri, li)
    assert result.matched == 0 and not any(g.has_3d for g in result.instruments)
    assert all(np.linalg.norm(g.tip_ray) == pytest.approx(1.0) for g in result.instruments)  # rays still


def test_mono_rays_and_the_two_d_only_value(frames):
    frame = frames[0]
    li = extract(frame.left_mask, INSTRUMENT_CLASSES)
    rays = mono_geometry(_rig().left, li)
    for instrument, g in zip(li, rays):
        truth = _truth_of(instrument, frame)
        assert not g.has_3d and np.isnan(g.tip_to_tissue)
        assert np.degrees(np.arccos(g.tip_ray @ truth.tip_3d / np.linalg.norm(truth.tip_3d))) < 1.0
    absent = Instrument3D.absent()
    assert not absent.has_3d and not absent.tip_ray.any() and np.isnan(absent.tip_depth_sigma)


def _distort_views(frame, spec: StereoRigSpec):
    """The rendered (rectified) pair as a raw camera would see it: plumb_bob distortion, the rectification
    rotations R1 and R2, other intrinsics; returns the raw images, raw masks and the pair's camera_infos."""
    infos, images = [], []
    d = [-0.28, 0.09, 0.0008, -0.0005, -0.01]
    for side, angle, image, mask in (("left", 0.6, frame.left, frame.left_mask),
                                     ("right", -0.5, frame.right, frame.right_mask)):
        info = spec.camera_info_fields(side, f"{side}_optical")
        r, _ = cv2.Rodrigues(np.radians([0.2, angle, 0.3]))
        k = np.array([[spec.focal_px * 1.04, 0, spec.cx + 6], [0, spec.focal_px * 1.03, spec.cy - 4], [0, 0, 1]])
        info.update(k=k.reshape(-1).tolist(), d=d, r=r.reshape(-1).tolist())
        model = CameraModel.from_fields(info)
        v, u = np.mgrid[0:spec.height, 0:spec.width].astype(np.float64)
        rect = model.rectify_points(np.c_[u.ravel(), v.ravel()]).reshape(spec.height, spec.width, 2)
        mx, my = rect[..., 0].astype(np.float32), rect[..., 1].astype(np.float32)
        images.append((cv2.remap(image, mx, my, cv2.INTER_LINEAR), cv2.remap(mask, mx, my, cv2.INTER_NEAREST)))
        infos.append(info)
    return images, infos


def test_raw_distorted_input_through_camera_info(frames):
    frame = frames[0]
    ((left, left_mask), (right, right_mask)), infos = _distort_views(frame, SPEC)
    rig = StereoRig.from_models(CameraModel.from_fields(infos[0]), CameraModel.from_fields(infos[1]))
    geometry = StereoGeometry(rig, instrument_classes=INSTRUMENT_CLASSES)
    li, ri = extract(left_mask, INSTRUMENT_CLASSES), extract(right_mask, INSTRUMENT_CLASSES)
    result = geometry.process(left, right, left_mask, right_mask, li, ri)
    assert len(li) == len(frame.instruments) and result.matched >= 1
    r1 = rig.left.r
    for instrument, g in zip(li, result.instruments):
        if not g.has_3d:
            continue
        truth = min(frame.instruments, key=lambda t: t.class_id != instrument.class_id)
        # The truth is in the rectified left frame of this made-up camera; results are in its raw frame.
        tip_raw = r1.T @ np.array(truth.tip_3d)
        assert np.linalg.norm(g.tip_3d - tip_raw) * 1000 < 3.0
        assert abs(g.tip_to_tissue - truth.tip_to_tissue_m) * 1000 < 4.0

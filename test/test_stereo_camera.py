"""camera_info -> CameraModel / StereoRig on the real Storz and Viking laparoscope calibrations: rectification
figures of the fixture's README, epipolar error, the round trip of 3D points through raw pixels, binning, ROI,
scaling, the three distortion models, and a specific CameraInfoError for every bad camera_info."""
from __future__ import annotations

import copy

import cv2
import numpy as np
import pytest

from endoarss_ros.inference.camera_model import CameraInfoError, CameraModel, camera_info_dict
from endoarss_ros.inference.stereo import StereoRig
from test.stereo_calibrations import camera_info_fields, load_storz, load_viking

# The fixture README's figures (stereoRectify, CALIB_ZERO_DISPARITY, alpha 0, 1920x1080).
README = {"storz": {"baseline_mm": 6.0534, "fx": 1704.805, "tx": -10.3199, "cx": 934.263, "cy": 584.940},
          "viking": {"baseline_mm": 4.5334, "fx": 1780.599, "tx": -8.0722, "cx": 1205.612, "cy": 626.492}}
LOADERS = {"storz": load_storz, "viking": load_viking}


def _rig(name: str) -> StereoRig:
    left, right = camera_info_fields(LOADERS[name]())
    return StereoRig.from_models(CameraModel.from_fields(left), CameraModel.from_fields(right))


def _points(n: int = 60, seed: int = 0) -> np.ndarray:
    """3D points in the left raw frame, 40-150 mm deep, inside a ~50-degree cone."""
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.04, 0.15, n)
    return np.c_[rng.uniform(-0.35, 0.35, n) * z, rng.uniform(-0.2, 0.2, n) * z, z]


def _raw_pixels(points: np.ndarray, k, d, r=None, t=None) -> np.ndarray:
    rvec, _ = cv2.Rodrigues(np.eye(3) if r is None else np.asarray(r, np.float64))
    t = np.zeros(3) if t is None else np.asarray(t, np.float64)
    out, _ = cv2.projectPoints(points.reshape(-1, 1, 3), rvec, t, k, d)
    return out.reshape(-1, 2)


@pytest.mark.parametrize("name", ["storz", "viking"])
def test_real_calibration_rectifies_to_the_readme_figures(name):
    rig = _rig(name)
    want = README[name]
    assert rig.baseline_m * 1000 == pytest.approx(want["baseline_mm"], abs=2e-3)
    assert rig.focal == pytest.approx(want["fx"], abs=5e-3)
    assert rig.right.p[0, 3] == pytest.approx(want["tx"], abs=5e-4)
    assert rig.left.p[0, 2] == pytest.approx(want["cx"], abs=5e-3)
    assert rig.left.p[1, 2] == pytest.approx(want["cy"], abs=5e-3)
    assert rig.frame_id == f"{name}_left_optical_frame"


@pytest.mark.parametrize("name", ["storz", "viking"])
def test_real_calibration_round_trip_and_epipolar_error(name):
    cal, rig = LOADERS[name](), _rig(name)
    points = _points()
    raw_l = _raw_pixels(points, cal.k_left, cal.d_left)
    raw_r = _raw_pixels(points, cal.k_right, cal.d_right, cal.r, cal.t_m)
    rect_l = rig.left.rectify_points(raw_l)
    rect_r = rig.right.rectify_points(raw_r)
    # Rectified rows agree (epipolar error), and the disparity is positive and gives the points back.
    assert np.abs(rect_l[:, 1] - rect_r[:, 1]).max() < 1e-3
    d = rect_l[:, 0] - rect_r[:, 0]
    assert (d > 0).all()
    z = rig.focal * rig.baseline_m / d
    xy = (rect_l - rig.left.p[:2, 2]) / rig.focal * z[:, None]
    back = rig.rectified_to_left(np.c_[xy, z])
    assert np.abs(back - points).max() < 1e-6  # metres: a micrometre
    # Viewing rays of the raw pixels point at the points (raw frame, R1^T applied).
    rays = rig.left.rays(raw_l)
    assert np.allclose(rays, points / np.linalg.norm(points, axis=1, keepdims=True), atol=1e-8)
    # The model's own projection reproduces OpenCV's.
    assert np.abs(rig.left.project(points) - raw_l).max() < 1e-9
    # Input that is rectified already: only P is used.
    assert np.allclose(rig.left.rays(rect_l, rectified=True), rays, atol=1e-8)


def test_rosbags_message_to_fields_to_model():
    from endoarss_ros.bag.msgtypes import typestore

    store = typestore()
    t = store.types
    left, _ = camera_info_fields(load_viking())
    msg = t["sensor_msgs/msg/CameraInfo"](
        header=t["std_msgs/msg/Header"](stamp=t["builtin_interfaces/msg/Time"](sec=1, nanosec=0),
                                        frame_id=left["header"]["frame_id"]),
        height=left["height"], width=left["width"], distortion_model="plumb_bob", d=np.array(left["d"]),
        k=np.array(left["k"]), r=np.array(left["r"]), p=np.array(left["p"]), binning_x=0, binning_y=0,
        roi=t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
    model = CameraModel.from_fields(camera_info_dict(msg))
    reference = CameraModel.from_fields(left)
    assert model.frame_id == "viking_left_optical_frame"
    assert np.array_equal(model.p, reference.p) and np.array_equal(model.d, reference.d)


@pytest.mark.parametrize("binning,roi,size", [
    ((2, 2), (0, 0, 0, 0), (960, 540)),
    ((1, 1), (120, 60, 1600, 900), (1600, 900)),
    ((2, 2), (120, 60, 1600, 900), (800, 450)),
    ((0, 0), (0, 0, 0, 0), (960, 540)),  # a uniformly scaled stream (half size): K and P rescaled
    ((0, 0), (0, 0, 0, 0), (1280, 720)),
])
def test_binning_roi_and_scale_map_image_pixels_to_the_same_rays(binning, roi, size):
    left, _ = camera_info_fields(load_viking())
    cal = load_viking()
    fields = dict(left, binning_x=binning[0], binning_y=binning[1],
                  roi={"x_offset": roi[0], "y_offset": roi[1], "width": roi[2], "height": roi[3],
                       "do_rectify": False})
    full = CameraModel.from_fields(left)
    model = CameraModel.from_fields(fields).for_image(*size)
    assert (model.width, model.height) == size and model.is_identity_mapped
    points = _points(40, seed=1)
    raw_full = _raw_pixels(points, cal.k_left, cal.d_left)
    # Pixel centre of the full-resolution image -> pixel centre of this image.
    crop_w = roi[2] or 1920
    s = size[0] / crop_w
    raw_image = (raw_full - np.array(roi[:2]) + 0.5) * s - 0.5
    assert np.allclose(model.rays(raw_image), full.rays(raw_full), atol=1e-9)
    assert np.allclose(model.project(points), raw_image, atol=1e-6)


def test_scaled_image_of_another_aspect_is_refused():
    left, _ = camera_info_fields(load_viking())
    with pytest.raises(CameraInfoError, match=r"image 1280x1024 does not match camera_info 1920x1080"):
        CameraModel.from_fields(left).for_image(1280, 1024)
    binned = dict(left, binning_x=2, binning_y=2)
    with pytest.raises(CameraInfoError, match=r"binning 2x2.*expected 960x540"):
        CameraModel.from_fields(binned).for_image(1000, 540)


def _pinhole_fields(model: str, d) -> dict:
    k = [800.0, 0, 330.5, 0, 805.0, 236.0, 0, 0, 1]
    return {"header": {"frame_id": "cam_optical_frame"}, "width": 640, "height": 480, "distortion_model": model,
            "d": list(d), "k": k, "r": [1, 0, 0, 0, 1, 0, 0, 0, 1],
            "p": [760.0, 0, 320.0, 0, 0, 760.0, 240.0, 0, 0, 0, 1, 0], "binning_x": 0, "binning_y": 0,
            "roi": {"x_offset": 0, "y_offset": 0, "width": 0, "height": 0, "do_rectify": False}}


@pytest.mark.parametrize("model,d", [
    ("plumb_bob", (-0.3, 0.12, 0.001, -0.002, -0.02)),
    ("rational_polynomial", (-0.3, 0.12, 0.001, -0.002, -0.02, 0.05, -0.01, 0.004)),
    ("equidistant", (0.08, -0.02, 0.01, -0.003)),
    ("", ()),  # no distortion
])
def test_distortion_models_undistort_with_opencv(model, d):
    camera = CameraModel.from_fields(_pinhole_fields(model, d))
    points = _points(50, seed=2) * np.array([0.6, 0.6, 1.0])
    k, dist = camera.k, camera.d
    if model == "equidistant":
        raw, _ = cv2.fisheye.projectPoints(points.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), k, dist)
        raw = raw.reshape(-1, 2)
    else:
        raw = _raw_pixels(points, k, dist)
    rays = camera.rays(raw)
    assert np.allclose(rays, points / np.linalg.norm(points, axis=1, keepdims=True), atol=1e-7)
    rect = camera.rectify_points(raw)
    expect = points[:, :2] / points[:, 2:] * 760.0 + np.array([320.0, 240.0])
    assert np.abs(rect - expect).max() < 1e-4


def _bad(change) -> dict:
    fields = copy.deepcopy(_pinhole_fields("plumb_bob", (0.0,) * 5))
    change(fields)
    return fields


@pytest.mark.parametrize("change,message", [
    (lambda f: f.update(k=[0.0] * 9), r"camera_info K is all zeros"),
    (lambda f: f.update(p=[0.0] * 12), r"camera_info P is all zeros"),
    (lambda f: f.update(r=[0.0] * 9), r"camera_info R is all zeros"),
    (lambda f: f.update(k=[800.0, 0, 320, 0, 800.0, 240, 0, 0]), r"camera_info K has 8 values, not 9"),
    (lambda f: f.update(k=[float("nan")] + [0.0] * 8), r"camera_info K has a NaN"),
    (lambda f: f.update(k=[-800.0, 0, 320, 0, 800.0, 240, 0, 0, 1]), r"camera_info K has a focal length <= 0"),
    (lambda f: f.update(r=[1, 0, 0, 0, 2, 0, 0, 0, 1]), r"camera_info R is not a rotation"),
    (lambda f: f.update(width=0), r"camera_info image size is 0x480"),
    (lambda f: f.update(d=[0.1, 0.2]), r"camera_info D has 2 coefficients; plumb_bob needs 5"),
    (lambda f: f.update(distortion_model="kannala", d=[0.1] * 4), r"distortion_model 'kannala' is not supported"),
    (lambda f: f.update(roi={"x_offset": 600, "y_offset": 0, "width": 100, "height": 100}),
     r"ROI x=600 y=0 100x100 does not lie inside the calibrated 640x480 image"),
])
def test_bad_camera_info_is_refused_with_a_specific_message(change, message):
    with pytest.raises(CameraInfoError, match=message):
        CameraModel.from_fields(_bad(change))


def _pair_fields():
    left, right = camera_info_fields(load_storz())
    return copy.deepcopy(left), copy.deepcopy(right)


def _rig_of(left, right):
    return StereoRig.from_models(CameraModel.from_fields(left), CameraModel.from_fields(right))


def test_bad_stereo_pairs_are_refused_with_a_specific_message():
    left, right = _pair_fields()
    with pytest.raises(CameraInfoError, match=r"P of the left camera has Tx = -10.3.*left and right swapped\?"):
        _rig_of(right, left)
    wrong_sign = copy.deepcopy(right)
    wrong_sign["p"][3] = -wrong_sign["p"][3]
    with pytest.raises(CameraInfoError, match=r"P of the right camera has Tx = 10.3.* >= 0 \(baseline sign\): left "
                                              r"and right swapped\?"):
        _rig_of(left, wrong_sign)
    millimetres = copy.deepcopy(right)
    millimetres["p"][3] *= 1000
    with pytest.raises(CameraInfoError, match=r"baseline of 6.05 m: Tx in pixel\*millimetres\?"):
        _rig_of(left, millimetres)
    same = copy.deepcopy(right)
    same["header"]["frame_id"] = left["header"]["frame_id"]
    with pytest.raises(CameraInfoError, match=r"same frame_id 'storz_left_optical_frame'"):
        _rig_of(left, same)
    other = copy.deepcopy(right)
    other["p"][2] += 40.0  # cx' of a pair not rectified together
    with pytest.raises(CameraInfoError, match=r"left and right P differ beyond Tx"):
        _rig_of(left, other)
    smaller = dict(copy.deepcopy(right), width=1280, height=720)
    with pytest.raises(CameraInfoError, match=r"left image 1920x1080 and right image 1280x720 differ in size"):
        _rig_of(left, smaller)
    rig = _rig_of(left, right)
    with pytest.raises(CameraInfoError, match=r"image 1280x1024 does not match camera_info 1920x1080"):
        rig.for_image(1280, 1024)
    assert rig.for_image(960, 540).baseline_m == pytest.approx(rig.baseline_m)

"""The real stereo laparoscope calibrations of test/fixtures/stereo_calibration as CameraInfo field dicts.

Both layouts are parsed (see that folder's README): Viking (K, D and a 4x4 left->right transform in separate files)
and Storz (K and D in one 4-line file, R and t in another). Lengths in the files are millimetres; the camera_info
dicts use metres, as ROS does. Rectified with ``cv2.stereoRectify`` (CALIB_ZERO_DISPARITY, alpha 0) at the
README's assumed 1920x1080.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "stereo_calibration"
SIZE = (1920, 1080)


@dataclass(frozen=True)
class Calibration:
    name: str
    k_left: np.ndarray
    d_left: np.ndarray
    k_right: np.ndarray
    d_right: np.ndarray
    r: np.ndarray  # left -> right rotation
    t_m: np.ndarray  # left -> right translation, metres


def _rows(path: Path) -> list[list[float]]:
    return [[float(x) for x in line.split()] for line in path.read_text().splitlines() if line.strip()]


def load_viking() -> Calibration:
    folder = FIXTURES / "viking_2022_02_11"
    l2r = np.loadtxt(folder / "calib.l2r.txt")
    return Calibration("viking", np.loadtxt(folder / "calib.left.intrinsics.txt"),
                       np.loadtxt(folder / "calib.left.distortion.txt").reshape(-1),
                       np.loadtxt(folder / "calib.right.intrinsics.txt"),
                       np.loadtxt(folder / "calib.right.distortion.txt").reshape(-1),
                       l2r[:3, :3], l2r[:3, 3] / 1000.0)


def load_storz() -> Calibration:
    folder = FIXTURES / "storz_2020_01_20"
    left, right, l2r = (_rows(folder / f"calib.{n}.txt") for n in ("left.intrinsics", "right.intrinsics", "l2r"))
    return Calibration("storz", np.array(left[:3]), np.array(left[3]), np.array(right[:3]), np.array(right[3]),
                       np.array(l2r[:3]), np.array(l2r[3]) / 1000.0)


def rectify(cal: Calibration, size=SIZE):
    """(R1, R2, P1, P2) of ``cv2.stereoRectify`` as the README computed them."""
    r1, r2, p1, p2, *_ = cv2.stereoRectify(cal.k_left, cal.d_left, cal.k_right, cal.d_right, size, cal.r,
                                           cal.t_m.reshape(3, 1), flags=cv2.CALIB_ZERO_DISPARITY, alpha=0)
    return r1, r2, p1, p2


def camera_info_fields(cal: Calibration, size=SIZE) -> tuple[dict, dict]:
    """(left, right) sensor_msgs/CameraInfo field dicts."""
    r1, r2, p1, p2 = rectify(cal, size)
    out = []
    for side, k, d, r, p in (("left", cal.k_left, cal.d_left, r1, p1), ("right", cal.k_right, cal.d_right, r2, p2)):
        out.append({"header": {"frame_id": f"{cal.name}_{side}_optical_frame"}, "width": size[0],
                    "height": size[1], "distortion_model": "plumb_bob", "d": d.tolist(), "k": k.reshape(-1).tolist(),
                    "r": r.reshape(-1).tolist(), "p": p.reshape(-1).tolist(), "binning_x": 0, "binning_y": 0,
                    "roi": {"x_offset": 0, "y_offset": 0, "width": 0, "height": 0, "do_rectify": False}})
    return out[0], out[1]

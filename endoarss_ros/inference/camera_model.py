"""A calibrated camera from ``sensor_msgs/CameraInfo`` fields: validation, the image it describes, rays.

``CameraModel.from_fields`` takes a plain dict with the CameraInfo field names (``camera_info_dict`` builds it
from an rclpy or a rosbags message, so the node and the replay share one parser) and refuses a camera_info that
cannot be right with a ``CameraInfoError`` naming what is wrong. Conventions (REP 104 / CameraInfo):

* ``k``: intrinsics of the raw (distorted) image; ``d`` by ``distortion_model``: ``plumb_bob`` (k1 k2 p1 p2 k3),
  ``rational_polynomial`` (k1 k2 p1 p2 k3 k4 k5 k6), ``equidistant`` (k1 k2 k3 k4, OpenCV's ``cv2.fisheye``);
  ``r``: raw camera frame -> rectified frame; ``p``: projection of the rectified image, ``p[0, 3] = -fx' * B``
  (B in metres) for the right camera of a horizontal pair.
* ``binning_x/y`` and ``roi`` describe the image as a part of the calibrated one; ``for_image`` turns them (and a
  uniformly scaled image) into a model whose ``k`` and ``p`` apply to that image's own pixels.
* Pixel coordinates are those of the pixel centres (the top-left pixel's centre is (0, 0), as OpenCV).

Undistortion is OpenCV's (``cv2.undistortPoints``, ``cv2.fisheye.undistortPoints``), iterated to convergence.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

PINHOLE_MODELS = ("plumb_bob", "rational_polynomial")
FISHEYE_MODEL = "equidistant"
DISTORTION_LENGTHS = {"plumb_bob": (5,), "rational_polynomial": (8,), "equidistant": (4,)}
_UNDISTORT_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
_SCALE_TOLERANCE_PX = 1.0  # a scaled image's other side may be off by this much (integer sizes)


class CameraInfoError(ValueError):
    """A camera_info that cannot describe the image (one sentence saying what is wrong)."""


def camera_info_topic(image_topic: str) -> str:
    """The camera_info topic of an image topic by image_transport's convention: ``camera_info`` in the image
    topic's namespace (``/endoscope/left/image_raw[/compressed]`` -> ``/endoscope/left/camera_info``)."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    namespace = base.rsplit("/", 1)[0] if "/" in base else ""
    return f"{namespace}/camera_info"


def is_rectified_topic(image_topic: str) -> bool:
    """True for image_proc's rectified images (``image_rect``, ``image_rect_color``): pixels of P, no D or R."""
    base = image_topic[: -len("/compressed")] if image_topic.endswith("/compressed") else image_topic
    return base.rsplit("/", 1)[-1].startswith("image_rect")


def camera_info_dict(msg) -> dict:
    """The fields of a ``sensor_msgs/CameraInfo`` message (rclpy's or rosbags', read by attribute name) as the
    plain dict ``CameraModel.from_fields`` takes."""
    roi = msg.roi
    return {"header": {"frame_id": str(msg.header.frame_id)}, "height": int(msg.height), "width": int(msg.width),
            "distortion_model": str(msg.distortion_model), "d": np.asarray(msg.d, np.float64).reshape(-1),
            "k": np.asarray(msg.k, np.float64).reshape(-1), "r": np.asarray(msg.r, np.float64).reshape(-1),
            "p": np.asarray(msg.p, np.float64).reshape(-1), "binning_x": int(msg.binning_x),
            "binning_y": int(msg.binning_y),
            "roi": {"x_offset": int(roi.x_offset), "y_offset": int(roi.y_offset), "height": int(roi.height),
                    "width": int(roi.width), "do_rectify": bool(roi.do_rectify)}}


def _matrix(fields: Mapping, name: str, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(fields.get(name, ()), np.float64).reshape(-1)
    if values.size != shape[0] * shape[1]:
        raise CameraInfoError(f"camera_info {name.upper()} has {values.size} values, not {shape[0] * shape[1]}")
    if not np.all(np.isfinite(values)):
        raise CameraInfoError(f"camera_info {name.upper()} has a NaN or infinite value")
    if not np.any(values):
        raise CameraInfoError(f"camera_info {name.upper()} is all zeros (the camera is not calibrated)")
    return values.reshape(shape)


def _check_rotation(r: np.ndarray) -> None:
    if np.abs(r @ r.T - np.eye(3)).max() > 1e-4 or np.linalg.det(r) < 0:
        raise CameraInfoError("camera_info R is not a rotation matrix (R R^T != I or det(R) < 0)")


def _check_intrinsics(name: str, m: np.ndarray) -> None:
    if m[0, 0] <= 0 or m[1, 1] <= 0:
        raise CameraInfoError(f"camera_info {name} has a focal length <= 0 (fx={m[0, 0]:g}, fy={m[1, 1]:g})")
    if np.abs(m[2, :3] - (0, 0, 1)).max() > 1e-9 or m[1, 0] != 0:
        raise CameraInfoError(f"camera_info {name} is not an upper-triangular camera matrix with last row 0 0 1")


def _distortion(model: str, d: np.ndarray) -> tuple[str, np.ndarray]:
    if model in DISTORTION_LENGTHS:
        if d.size not in DISTORTION_LENGTHS[model]:
            raise CameraInfoError(f"camera_info D has {d.size} coefficients; {model} needs "
                                  f"{DISTORTION_LENGTHS[model][0]}")
        return model, d
    if not np.any(d):  # no distortion: any name (often "" or "none") means a pinhole camera
        return "plumb_bob", np.zeros(5)
    raise CameraInfoError(f"camera_info distortion_model {model!r} is not supported "
                          f"(plumb_bob, rational_polynomial, equidistant)")


@dataclass(frozen=True, eq=False)
class CameraModel:
    """A validated camera_info. ``k`` (3x3), ``r`` (3x3), ``p`` (3x4) float64; ``roi`` = (x_offset, y_offset,
    width, height) in full-resolution raw pixels, (0, 0, 0, 0) = the full image."""

    frame_id: str
    width: int
    height: int
    distortion_model: str
    d: np.ndarray
    k: np.ndarray
    r: np.ndarray
    p: np.ndarray
    binning_x: int = 1
    binning_y: int = 1
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)
    _p_inverse: np.ndarray = field(init=False, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_p_inverse", np.linalg.inv(self.p[:, :3]))

    @classmethod
    def from_fields(cls, fields: Mapping) -> CameraModel:
        """A model of the ``sensor_msgs/CameraInfo`` field values ``fields``; ``CameraInfoError`` when they
        cannot describe a camera."""
        width, height = int(fields.get("width", 0)), int(fields.get("height", 0))
        if width <= 0 or height <= 0:
            raise CameraInfoError(f"camera_info image size is {width}x{height} (width and height must be set)")
        k = _matrix(fields, "k", (3, 3))
        r = _matrix(fields, "r", (3, 3))
        p = _matrix(fields, "p", (3, 4))
        _check_intrinsics("K", k)
        _check_intrinsics("P", p)
        if abs(p[2, 3]) > 1e-9:
            raise CameraInfoError("camera_info P[2,3] is not 0 (P of a camera whose rectified frame is shifted "
                                  "along its optical axis is not supported)")
        _check_rotation(r)
        d = np.asarray(fields.get("d", ()), np.float64).reshape(-1)
        if not np.all(np.isfinite(d)):
            raise CameraInfoError("camera_info D has a NaN or infinite value")
        model, d = _distortion(str(fields.get("distortion_model", "")), d)
        bx, by = max(1, int(fields.get("binning_x", 0))), max(1, int(fields.get("binning_y", 0)))
        roi = fields.get("roi") or {}
        rx, ry = int(roi.get("x_offset", 0)), int(roi.get("y_offset", 0))
        rw, rh = int(roi.get("width", 0)), int(roi.get("height", 0))
        if (rw or rh) and (rw <= 0 or rh <= 0 or rx < 0 or ry < 0 or rx + rw > width or ry + rh > height):
            raise CameraInfoError(f"camera_info ROI x={rx} y={ry} {rw}x{rh} does not lie inside the calibrated "
                                  f"{width}x{height} image")
        frame_id = str((fields.get("header") or {}).get("frame_id", ""))
        return cls(frame_id, width, height, model, d, k, r, p, bx, by, (rx, ry, rw, rh) if rw else (0, 0, 0, 0))

    @property
    def is_identity_mapped(self) -> bool:
        """True when the model's pixels are those of the image it describes (no binning, no ROI)."""
        return self.binning_x == 1 and self.binning_y == 1 and self.roi == (0, 0, 0, 0)

    def for_image(self, width: int, height: int) -> CameraModel:
        """The model of a ``width`` x ``height`` image of this camera, with binning and ROI folded into ``k``
        and ``p`` (the result has neither): the image is the calibrated one cropped to the ROI, binned, and
        possibly scaled uniformly (one factor for both axes, e.g. a driver's 1280x1024 of a 2560x2048
        calibration). Scaling rescales ``k`` and ``p`` (centre-of-pixel exact) rather than refusing the image:
        a resized stream is common and unambiguous when its aspect is kept. Anything else raises
        ``CameraInfoError``. ``p`` keeps the same crop as ``k``, so the rectified image of a cropped raw image
        is cropped alike; two cameras of a pair must then share the ROI (``StereoRig`` checks ``p``)."""
        rx, ry, rw, rh = self.roi
        full_w, full_h = (rw, rh) if rw else (self.width, self.height)
        expected_w, expected_h = full_w // self.binning_x, full_h // self.binning_y
        if (width, height) == (self.width, self.height) and self.is_identity_mapped:
            return self
        sx, sy = 1.0 / self.binning_x, 1.0 / self.binning_y
        if (width, height) != (expected_w, expected_h):
            scale = width / expected_w
            if abs(height - expected_h * scale) > _SCALE_TOLERANCE_PX or width <= 0:
                raise CameraInfoError(
                    f"image {width}x{height} does not match camera_info {self.width}x{self.height} "
                    f"(binning {self.binning_x}x{self.binning_y}, ROI {rw}x{rh}+{rx}+{ry}: expected "
                    f"{expected_w}x{expected_h} or a uniform scale of it)")
            sx, sy = sx * scale, sy * scale
        # full-resolution pixel centre u -> image pixel centre (u - rx + 0.5) * sx - 0.5
        a = np.array([[sx, 0.0, (0.5 - rx) * sx - 0.5], [0.0, sy, (0.5 - ry) * sy - 0.5], [0.0, 0.0, 1.0]])
        return replace(self, width=int(width), height=int(height), k=a @ self.k, p=a @ self.p,
                       binning_x=1, binning_y=1, roi=(0, 0, 0, 0))

    def rectify_points(self, uv: np.ndarray, *, rectified: bool = False) -> np.ndarray:
        """(N, 2) pixels of this model's (raw) image -> pixels of its rectified image (the image of ``p``).
        ``rectified=True``: the input is that rectified image already (only ``p`` matters): returned as is."""
        pts = np.asarray(uv, np.float64).reshape(-1, 2)
        if rectified or len(pts) == 0:
            return pts.copy()
        src = pts.reshape(-1, 1, 2)
        if self.distortion_model == FISHEYE_MODEL:
            out = cv2.fisheye.undistortPoints(src, self.k, self.d, R=self.r, P=self.p[:, :3],
                                              criteria=_UNDISTORT_CRITERIA)
        else:
            out = cv2.undistortPoints(src, self.k, self.d, R=self.r, P=self.p[:, :3],
                                      criteria=_UNDISTORT_CRITERIA)
        return out.reshape(-1, 2)

    def rectified_rays(self, uv_rect: np.ndarray) -> np.ndarray:
        """(N, 3) unit rays in the RECTIFIED frame through pixels of the rectified image."""
        pts = np.asarray(uv_rect, np.float64).reshape(-1, 2)
        rays = np.c_[pts, np.ones(len(pts))] @ self._p_inverse.T
        return rays / np.linalg.norm(rays, axis=1, keepdims=True)

    def rays(self, uv: np.ndarray, *, rectified: bool = False) -> np.ndarray:
        """(N, 3) unit viewing rays through pixels ``uv`` of the image, in the camera's own (raw) optical frame
        (REP 103: z forward, x right, y down): the rectified ray rotated back by ``r``^T."""
        return self.rectified_rays(self.rectify_points(uv, rectified=rectified)) @ self.r

    def project(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) points of the raw optical frame -> (N, 2) raw (distorted) pixels of this model's image."""
        pts = np.asarray(points, np.float64).reshape(-1, 1, 3)
        zero = np.zeros(3)
        if self.distortion_model == FISHEYE_MODEL:
            out, _ = cv2.fisheye.projectPoints(pts, zero, zero, self.k, self.d)
        else:
            out, _ = cv2.projectPoints(pts, zero, zero, self.k, self.d)
        return out.reshape(-1, 2)

    @property
    def focal_rectified(self) -> float:
        """fx' of ``p`` (pixels)."""
        return float(self.p[0, 0])

    def __repr__(self) -> str:
        return (f"CameraModel(frame_id={self.frame_id!r}, {self.width}x{self.height}, {self.distortion_model}, "
                f"fx={self.k[0, 0]:.1f}, Tx={self.p[0, 3]:.4g})")


def pixel_scale(model: CameraModel) -> float:
    """Image diagonal over 1000 px: thresholds given for a ~1000-px image scale with this."""
    return math.hypot(model.width, model.height) / 1000.0

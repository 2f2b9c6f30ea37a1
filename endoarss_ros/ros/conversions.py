"""ROS messages <-> the inference pipeline's frames and results (no cv_bridge: it breaks with NumPy 2).

Input images are validated and wrapped without copying (``endoarss_ros.inference``); outputs copy the input's
header so message_filters can pair them with the image and other sensors.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image

from endoarss_ros.msg import Activity, SegmentationInfo


def frame_from_image(msg, *, max_pixels: int | None = None):
    """``sensor_msgs/Image`` -> ``RawFrame`` (zero-copy view of ``msg.data``); raises ``FrameError``."""
    from endoarss_ros.inference import frame_from_image_fields

    # Only 8-bit encodings are supported, for which is_bigendian does not matter.
    return frame_from_image_fields(msg.encoding, msg.width, msg.height, msg.step, msg.data, max_pixels=max_pixels)


def frame_from_compressed_image(msg, *, max_pixels: int | None = None):
    """``sensor_msgs/CompressedImage`` (jpeg, png) -> ``RawFrame``; raises ``FrameError``."""
    from endoarss_ros.inference import frame_from_compressed

    # image_transport's compressed format field reads e.g. "rgb8; jpeg compressed bgr8": the codec is what counts.
    fmt = msg.format.lower()
    codec = "png" if "png" in fmt else "jpeg" if ("jpeg" in fmt or "jpg" in fmt) else fmt
    return frame_from_compressed(codec, msg.data, max_pixels=max_pixels)


def mask_message(mask: np.ndarray, header) -> Image:
    """mono8 class ids at the input resolution."""
    mask = np.ascontiguousarray(mask, dtype=np.uint8)
    msg = Image(header=header, height=mask.shape[0], width=mask.shape[1], encoding="mono8", is_bigendian=0,
                step=mask.shape[1])
    msg.data = mask.tobytes()
    return msg


def overlay_message(overlay: np.ndarray, header) -> Image:
    """rgb8 colour overlay (for RViz)."""
    overlay = np.ascontiguousarray(overlay, dtype=np.uint8)
    msg = Image(header=header, height=overlay.shape[0], width=overlay.shape[1], encoding="rgb8", is_bigendian=0,
                step=overlay.shape[1] * 3)
    msg.data = overlay.tobytes()
    return msg


def activity_message(header, class_names: list[str], smoothed: np.ndarray, raw: np.ndarray,
                     class_id: int) -> Activity:
    return Activity(
        header=header, label=class_names[class_id], class_id=int(class_id), confidence=float(smoothed[class_id]),
        class_names=list(class_names), probabilities=[float(p) for p in smoothed],
        raw_probabilities=[float(p) for p in raw])


def segmentation_info_message(class_names: list[str], colors: np.ndarray, model: str, *, stamp,
                              frame_id: str = "") -> SegmentationInfo:
    msg = SegmentationInfo(class_names=list(class_names),
                           colors=np.asarray(colors, dtype=np.uint8).reshape(-1).tobytes(),
                           mask_encoding="mono8", has_ignore_id=False, ignore_id=0, model=model)
    msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg

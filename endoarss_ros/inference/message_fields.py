"""Inference results -> the field values of our output messages, once for the node and the offline replay.

Each function returns a plain ``dict`` of field name -> value for one message type: numbers, strings, lists,
numpy arrays for numeric sequences, a nested ``dict`` for a nested message, and a list of dicts for a sequence
of messages. ``header`` values are passed through as they come (the input image's own header object, rclpy's
or rosbags'), so every output carries the source image's stamp and frame_id. ``endoarss_ros.ros.conversions``
turns the dicts into rclpy messages and ``endoarss_ros.bag.messages`` into rosbags messages: a new field is one
line in the ``.msg`` file and one line here.

``OUTPUTS`` lists the per-camera output topics (relative names) with their types, for the node's publishers
and the replay's output bag alike.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTIVITY_TYPE = "endoarss_ros/msg/Activity"
SEGMENTATION_INFO_TYPE = "endoarss_ros/msg/SegmentationInfo"
IMAGE_TYPE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE_TYPE = "sensor_msgs/msg/CompressedImage"
MASK_ENCODING = "mono8"  # one class id per pixel, at the input image's resolution


@dataclass(frozen=True)
class Output:
    """One output topic of a camera: ``key`` names it in code, ``topic`` is relative to the camera's namespace."""

    key: str
    topic: str
    msgtype: str
    latched: bool = False  # transient local: late subscribers (and bag players) get the last one


OUTPUTS: tuple[Output, ...] = (
    Output("activity", "activity", ACTIVITY_TYPE),
    Output("mask", "segmentation/mask", IMAGE_TYPE),
    Output("overlay", "segmentation/overlay", IMAGE_TYPE),
    Output("info", "segmentation/info", SEGMENTATION_INFO_TYPE, latched=True),
)
OUTPUT_BY_KEY = {o.key: o for o in OUTPUTS}


def image_fields(header, pixels: np.ndarray, encoding: str) -> dict:
    """``sensor_msgs/Image`` of a dense uint8 ``(H, W)`` or ``(H, W, C)`` array."""
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    h, w = pixels.shape[:2]
    channels = 1 if pixels.ndim == 2 else pixels.shape[2]
    return {"header": header, "height": h, "width": w, "encoding": encoding, "is_bigendian": 0,
            "step": w * channels, "data": pixels.reshape(-1)}


def compressed_image_fields(header, format: str, data: np.ndarray) -> dict:  # noqa: A002 - the field's name
    """``sensor_msgs/CompressedImage``; ``format`` as image_transport writes it, e.g. ``rgb8; jpeg compressed bgr8``."""
    return {"header": header, "format": format, "data": np.asarray(data, dtype=np.uint8).reshape(-1)}


def activity_fields(header, class_names: Sequence[str], probabilities, raw_probabilities, class_id: int) -> dict:
    """``endoarss_ros/Activity``: the winner ``class_id`` of the (smoothed) ``probabilities``."""
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    return {"header": header, "label": class_names[class_id], "class_id": int(class_id),
            "confidence": float(probabilities[class_id]), "class_names": list(class_names),
            "probabilities": probabilities,
            "raw_probabilities": np.asarray(raw_probabilities, dtype=np.float32).reshape(-1)}


def one_hot_activity_fields(header, class_names: Sequence[str], class_id: int) -> dict:
    """A ground-truth ``Activity``: probability 1 for ``class_id``."""
    probs = np.zeros(len(class_names), np.float32)
    probs[class_id] = 1.0
    return activity_fields(header, class_names, probs, probs, class_id)


def segmentation_info_fields(header, class_names: Sequence[str], colors: np.ndarray, model: str) -> dict:
    """``endoarss_ros/SegmentationInfo``: how to read the masks (class names, overlay colours, encoding)."""
    return {"header": header, "class_names": list(class_names),
            "colors": np.asarray(colors, dtype=np.uint8).reshape(-1), "mask_encoding": MASK_ENCODING,
            "has_ignore_id": False, "ignore_id": 0, "model": model}


def frame_fields(header, result, activity, class_names: Sequence[str], *, overlay: bool) -> dict[str, dict]:
    """The per-frame outputs of one engine ``result`` (``FrameResult``) and its smoothed ``activity``
    (``ActivityEstimate``), keyed like ``OUTPUTS``; the overlay only when asked for and computed."""
    fields = {
        "activity": activity_fields(header, class_names, activity.probabilities, result.activity_probs,
                                    activity.class_id),
        "mask": image_fields(header, result.mask, MASK_ENCODING),
    }
    if overlay and result.overlay is not None:
        fields["overlay"] = image_fields(header, result.overlay, "rgb8")
    return fields

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

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ACTIVITY_TYPE = "endoarss_ros/msg/Activity"
SEGMENTATION_INFO_TYPE = "endoarss_ros/msg/SegmentationInfo"
STATUS_TYPE = "endoarss_ros/msg/PerceptionStatus"
INSTRUMENTS_TYPE = "endoarss_ros/msg/InstrumentArray"
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
    Output("instruments", "instruments", INSTRUMENTS_TYPE),
    Output("status", "status", STATUS_TYPE),  # last: a frame's status follows its other outputs
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


def activity_fields(header, class_names: Sequence[str], probabilities, raw_probabilities, class_id: int,
                    source: str = "", duration_s: float = 0.0) -> dict:
    """``endoarss_ros/Activity``: the winner ``class_id`` of the (smoothed or temporal) ``probabilities``,
    the estimator that produced it (``source``, ``temporal.SOURCE_*``) and how long it has held."""
    probabilities = np.asarray(probabilities, dtype=np.float32).reshape(-1)
    return {"header": header, "label": class_names[class_id], "class_id": int(class_id),
            "confidence": float(probabilities[class_id]), "class_names": list(class_names),
            "probabilities": probabilities,
            "raw_probabilities": np.asarray(raw_probabilities, dtype=np.float32).reshape(-1),
            "source": str(source), "duration_s": _f32(duration_s)}


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


def _f32(value) -> float:
    """A float32 field's value as the message stores it (rclpy keeps a Python float as given)."""
    return float(np.float32(value))


def status_fields(header, status) -> dict:
    """``endoarss_ros/PerceptionStatus`` of a ``status.FrameStatus`` (with its timing)."""
    return {"header": header, "usable": status.usable, "flags": int(status.flags), "reasons": list(status.reasons),
            "processed": bool(status.processed), **{k: _f32(v) for k, v in status.measures.items()},
            "age_ms": _f32(status.age_ms), "processing_ms": _f32(status.processing_ms)}


def _point(xy) -> dict:
    return {"x": float(xy[0]), "y": float(xy[1]), "z": 0.0}


_NO_3D = {"tip_ray": {"x": 0.0, "y": 0.0, "z": 0.0}, "has_3d": False, "tip_3d": {"x": 0.0, "y": 0.0, "z": 0.0},
          "entry_3d": {"x": 0.0, "y": 0.0, "z": 0.0}, "tip_depth_sigma": math.nan, "tip_to_tissue": math.nan}


def _xyz(v) -> dict:
    return {"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}


def instrument_3d_fields(geometry) -> dict:
    """The 3D fields of ``endoarss_ros/Instrument`` of a ``stereo.Instrument3D`` (None: no camera_info, zero
    ray, no 3D, NaN unknowns)."""
    if geometry is None:
        return dict(_NO_3D)
    has_3d = bool(geometry.has_3d)
    zero = (0.0, 0.0, 0.0)
    return {"tip_ray": _xyz(geometry.tip_ray), "has_3d": has_3d,
            "tip_3d": _xyz(geometry.tip_3d if has_3d else zero),
            "entry_3d": _xyz(geometry.entry_3d if has_3d else zero),
            "tip_depth_sigma": _f32(geometry.tip_depth_sigma if has_3d else math.nan),
            "tip_to_tissue": _f32(geometry.tip_to_tissue if has_3d else math.nan)}


def instrument_fields(instrument, class_names: Sequence[str], geometry=None) -> dict:
    """``endoarss_ros/Instrument`` of an ``instruments.Instrument`` and its ``stereo.Instrument3D`` (or None)."""
    x, y, w, h = instrument.bbox
    c = instrument.class_id
    return {"id": int(instrument.id), "seen_frames": int(instrument.seen_frames), "class_id": int(c),
            "label": class_names[c] if c < len(class_names) else str(c), "confidence": _f32(instrument.confidence),
            "area_px": int(instrument.area_px), "area_fraction": _f32(instrument.area_fraction),
            "centroid": _point(instrument.centroid),
            "bbox": {"x_offset": int(x), "y_offset": int(y), "width": int(w), "height": int(h), "do_rectify": False},
            "orientation": _f32(instrument.orientation), "elongation": _f32(instrument.elongation),
            "tip": _point(instrument.tip), "entry_point": _point(instrument.entry),
            "entry_at_view_edge": bool(instrument.entry_at_view_edge), **instrument_3d_fields(geometry)}


def instrument_array_fields(header, width: int, height: int, instruments, class_names: Sequence[str],
                            geometry=None) -> dict:
    """``endoarss_ros/InstrumentArray`` of one frame's instruments; ``geometry``: their ``stereo.Instrument3D``
    (aligned with ``instruments``), or None without camera_info. The header is passed as given: with
    camera_info, give it the (left) camera_info's frame_id."""
    if geometry is not None and len(geometry) != len(instruments):
        raise ValueError(f"{len(geometry)} 3D geometries for {len(instruments)} instruments")
    geometry = geometry if geometry is not None else [None] * len(instruments)
    return {"header": header, "width": int(width), "height": int(height),
            "instruments": [instrument_fields(i, class_names, g) for i, g in zip(instruments, geometry)]}


def frame_fields(header, result, stream, activity_names: Sequence[str], seg_names: Sequence[str], *,
                 overlay: bool, geometry=None, instruments_header=None) -> dict[str, dict]:
    """The per-frame outputs of one engine ``result`` (``FrameResult``) and its ``stream.StreamOutput``, keyed
    like ``OUTPUTS``, but the status (published last, with its timing: ``status_fields``); the overlay only
    when asked for and computed. ``geometry``: the instruments' ``stereo.Instrument3D`` (None without
    camera_info); ``instruments_header``: the InstrumentArray's header (the camera_info's frame_id), default
    ``header``."""
    activity = stream.activity
    h, w = result.mask.shape[:2]
    fields = {
        "activity": activity_fields(header, activity_names, activity.probabilities, result.activity_probs,
                                    activity.class_id, activity.source, activity.duration_s),
        "mask": image_fields(header, result.mask, MASK_ENCODING),
        "instruments": instrument_array_fields(header if instruments_header is None else instruments_header, w, h,
                                               stream.instruments, seg_names, geometry),
    }
    if overlay and stream.overlay is not None:
        fields["overlay"] = image_fields(header, stream.overlay, "rgb8")
    return fields

"""ROS messages <-> the inference pipeline's frames and results (no cv_bridge: it breaks with NumPy 2).

Input images are validated and wrapped without copying (``endoarss_ros.inference.frames``). Outputs are built
from the field values of ``endoarss_ros.inference.message_fields`` by one generic function, ``to_ros``; the
fields carry the input's header so message_filters can pair the results with the image and other sensors.
"""
from __future__ import annotations

import array
import importlib
from functools import cache

import numpy as np

from endoarss_ros.inference import frame_from_compressed, frame_from_image_fields

# numpy dtype -> array.array type code, for numeric sequence fields (rclpy stores them as array.array)
_ARRAY_CODES = {np.dtype(np.float32): "f", np.dtype(np.float64): "d", np.dtype(np.int32): "i",
                np.dtype(np.uint16): "H", np.dtype(np.int16): "h", np.dtype(np.uint32): "I"}


def frame_from_image(msg, *, max_pixels: int | None = None):
    """``sensor_msgs/Image`` -> ``RawFrame`` (zero-copy view of ``msg.data``); raises ``FrameError``."""
    # Only 8-bit encodings are supported, for which is_bigendian does not matter.
    return frame_from_image_fields(msg.encoding, msg.width, msg.height, msg.step, msg.data, max_pixels=max_pixels)


def frame_from_compressed_image(msg, *, max_pixels: int | None = None):
    """``sensor_msgs/CompressedImage`` (jpeg, png) -> ``RawFrame``; raises ``FrameError``."""
    return frame_from_compressed(msg.format, msg.data, max_pixels=max_pixels)


@cache
def message_class(msgtype: str):
    """``'pkg/msg/Name'`` or ``'pkg/Name'`` (rclpy's spelling of nested types) -> the rclpy message class;
    ImportError / AttributeError when the package is not importable here."""
    parts = msgtype.split("/")
    if len(parts) not in (2, 3):
        raise ImportError(f"not a message type name: {msgtype!r}")
    package, sub, name = (parts[0], "msg", parts[1]) if len(parts) == 2 else parts
    return getattr(importlib.import_module(f"{package}.{sub}"), name)


def to_ros(msgtype: str, fields: dict):
    """An rclpy message of ``msgtype`` from ``message_fields`` values (nested dicts become nested messages)."""
    cls = message_class(msgtype)
    types = cls.get_fields_and_field_types()
    return cls(**{name: _ros_value(types[name], value) for name, value in fields.items()})


def _ros_value(field_type: str, value):
    if isinstance(value, dict):
        return to_ros(field_type, value)
    if isinstance(value, list) and field_type.startswith("sequence<") and "/" in field_type:
        element = field_type[len("sequence<"):].split(",")[0].rstrip(">")
        return [to_ros(element, v) if isinstance(v, dict) else v for v in value]
    if isinstance(value, np.ndarray):
        if value.dtype == np.uint8:
            return value.tobytes()  # array.array('B', bytes) is one memcpy
        code = _ARRAY_CODES[value.dtype]
        return array.array(code, np.ascontiguousarray(value).tobytes())
    return value

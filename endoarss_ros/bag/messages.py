"""rosbags messages from ``endoarss_ros.inference.message_fields`` values, and the header builder for bags.

``to_rosbags`` is generic: it reads the message definition from the typestore, so a new field in a ``.msg``
file needs no change here. Nested dicts become nested messages, lists of dicts sequences of messages;
numeric sequences are numpy arrays, as rosbags wants them.
"""
from __future__ import annotations

import numpy as np

_NAME = 2  # rosbags Nodetype.NAME: a nested message type
_SEQUENCE_KINDS = (3, 4)  # rosbags Nodetype.ARRAY, Nodetype.SEQUENCE
_NUMPY_TYPES = {"bool": np.bool_, "byte": np.uint8, "char": np.uint8, "uint8": np.uint8, "int8": np.int8,
                "uint16": np.uint16, "int16": np.int16, "uint32": np.uint32, "int32": np.int32,
                "uint64": np.uint64, "int64": np.int64, "float32": np.float32, "float64": np.float64}


def make_header(store, stamp_ns: int, frame_id: str):
    """``std_msgs/Header`` with a stamp in nanoseconds."""
    t = store.types
    return t["std_msgs/msg/Header"](
        stamp=t["builtin_interfaces/msg/Time"](sec=int(stamp_ns) // 10**9, nanosec=int(stamp_ns) % 10**9),
        frame_id=frame_id)


def to_rosbags(store, msgtype: str, fields: dict):
    """A rosbags message of ``msgtype`` (e.g. ``endoarss_ros/msg/Activity``) from field values."""
    definitions = dict(store.fielddefs[msgtype][1])
    values = {}
    for name, value in fields.items():
        kind, detail = definitions[name]
        values[name] = _value(store, int(kind), detail, value)
    return store.types[msgtype](**values)


def _value(store, kind: int, detail, value):
    if kind == _NAME and isinstance(value, dict):
        return to_rosbags(store, detail, value)
    if kind in _SEQUENCE_KINDS:
        (element_kind, element), _ = detail
        if int(element_kind) == _NAME:
            return [to_rosbags(store, element, v) if isinstance(v, dict) else v for v in value]
        if element[0] in _NUMPY_TYPES:
            return np.asarray(value, dtype=_NUMPY_TYPES[element[0]])
    return value

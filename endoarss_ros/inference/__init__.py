"""Frame bytes -> tensors -> model -> masks and activity: the one pipeline shared by node, replay and bench.

No ROS imports here (nor from ``endoarss_ros.ros`` / ``endoarss_ros.bag``): the node wraps this package.
"""
from .backends import BackendUnavailable, default_cache_dir
from .colors import class_colors, default_colors
from .engine import DeviceOutOfMemory, FrameResult, InferenceEngine
from .frames import (
    ENCODINGS,
    FRAME_ERROR_REASONS,
    FrameError,
    RawFrame,
    frame_from_array,
    frame_from_compressed,
    frame_from_image_fields,
)
from .options import BACKENDS, PRECISIONS
from .smoother import ActivitySmoother
from .weights_path import DEFAULT_MODEL, resolve_model_path

__all__ = [
    "BACKENDS", "DEFAULT_MODEL", "ENCODINGS", "FRAME_ERROR_REASONS", "PRECISIONS", "ActivitySmoother",
    "BackendUnavailable", "DeviceOutOfMemory",
    "FrameError", "FrameResult", "InferenceEngine", "RawFrame", "class_colors", "default_cache_dir",
    "default_colors", "frame_from_array", "frame_from_compressed", "frame_from_image_fields", "resolve_model_path",
]

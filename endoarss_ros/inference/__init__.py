"""Frame bytes -> tensors -> model -> masks and activity: the one pipeline shared by node, replay and bench.

No ROS imports here (nor from ``endoarss_ros.ros`` / ``endoarss_ros.bag``): the node wraps this package.
Names are imported on first use, so the light modules (frames, message fields, smoothing) do not pull in
torch: a bag player or a message builder starts without loading the model stack.
"""
from __future__ import annotations

from endoarss_ros.lazy import lazy_exports

_EXPORTS = {
    "BACKENDS": "options", "PRECISIONS": "options", "BackendUnavailable": "backends",
    "default_cache_dir": "backends",
    "class_colors": "colors", "default_colors": "colors",
    "DeviceOutOfMemory": "engine", "FrameResult": "engine", "InferenceEngine": "engine",
    "ENCODINGS": "frames", "FRAME_ERROR_REASONS": "frames", "FrameError": "frames", "RawFrame": "frames",
    "frame_from_array": "frames", "frame_from_compressed": "frames", "frame_from_image_fields": "frames",
    "ActivitySmoother": "smoother",
    "DEFAULT_MODEL": "weights_path", "resolve_model_path": "weights_path",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

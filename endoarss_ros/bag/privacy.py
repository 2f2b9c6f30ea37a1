"""The privacy gate on recorded images: a blanked copy of one image message, and the detector a bag tool loads.

``blanked_rawdata`` keeps every field of the message (header, size, encoding, format) and replaces the pixels:
``sensor_msgs/Image`` data all zero; ``sensor_msgs/CompressedImage`` a black image of the same size in the same
codec (a 16x16 one when the original's size cannot be read). The decision itself is the node's code
(``inference.out_of_body``, through ``inference.stream.CameraStream`` in replay, directly in scrub).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..inference.message_fields import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE

FALLBACK_SIDE = 16  # a compressed frame whose size cannot be read becomes this black square


class BlankingError(ValueError):
    """The message cannot be blanked (not an image, or not deserializable): it must not be written."""


def _black_encoded(fmt: str, data) -> np.ndarray:
    import cv2

    from ..inference.frames import FrameError, check_compressed, compressed_codec

    try:
        codec = compressed_codec(fmt)
    except FrameError:
        codec = "png"
    try:
        head = check_compressed(fmt, data)
        h, w = head.height, head.width
    except FrameError:
        h = w = FALLBACK_SIDE
    ok, buf = cv2.imencode(".png" if codec == "png" else ".jpg", np.zeros((h, w, 3), np.uint8))
    if not ok:
        raise BlankingError(f"cannot encode a black {codec} image of {w}x{h}")
    return buf.reshape(-1)


def blanked_rawdata(store, msgtype: str, rawdata: bytes) -> bytes:
    """The serialized message ``rawdata`` of ``msgtype`` with its pixels blanked (see the module docstring).
    Raises ``BlankingError`` when that cannot be done."""
    if msgtype not in (IMAGE_TYPE, COMPRESSED_IMAGE_TYPE):
        raise BlankingError(f"{msgtype} is not an image type")
    try:
        msg = store.deserialize_cdr(bytes(rawdata), msgtype)
    except Exception as e:  # noqa: BLE001 - a damaged message: the caller leaves it out and counts it
        raise BlankingError(f"cannot deserialize the {msgtype} message: {type(e).__name__}: {e}") from e
    if msgtype == IMAGE_TYPE:
        blank = dataclasses.replace(msg, data=np.zeros(len(msg.data), np.uint8))
    else:
        blank = dataclasses.replace(msg, data=_black_encoded(msg.format, np.asarray(msg.data, np.uint8)))
    return bytes(store.serialize_cdr(blank, msgtype))


def load_detector(path: str, privacy_gate: bool = True):
    """The out-of-body detector of a bag tool (``--out-of-body-model``); None for '' (no detection), which
    only goes with the gate off (a gate that cannot decide would pass every frame). Raises
    ``OutOfBodyModelError``."""
    from ..inference.out_of_body import OutOfBodyDetector, OutOfBodyModelError
    from ..inference.weights_path import resolve_model_path

    if not path:
        if privacy_gate:
            raise OutOfBodyModelError("no out-of-body detector ('') while the privacy gate is on: the gate cannot "
                                      "decide; give the detector, or turn the gate off knowingly")
        return None
    return OutOfBodyDetector.load(resolve_model_path(path))


__all__ = ["BlankingError", "blanked_rawdata", "load_detector"]

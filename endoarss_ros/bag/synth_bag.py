"""Write a synthetic ESD sequence as a rosbag2 (MCAP or sqlite3) with ground truth, using rosbags only.

Topics (all with the same header per frame: stamp = start + i / fps, frame_id "endoscope"):

* ``/endoscope/image_raw`` (sensor_msgs/Image, rgb8 or bgr8) or
  ``/endoscope/image_raw/compressed`` (sensor_msgs/CompressedImage, jpeg or png)
* ``/endoscope/ground_truth/mask`` (sensor_msgs/Image, mono8 class ids)
* ``/endoscope/ground_truth/activity`` (endoarss_ros/msg/Activity, one-hot probabilities)

Bag message timestamps equal the header stamps, so replay at recorded speed reproduces the rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..data.classes import MTLESD, ClassSet
from ..inference.message_fields import (
    ACTIVITY_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    MASK_ENCODING,
    compressed_image_fields,
    image_fields,
    one_hot_activity_fields,
)
from .mcap_checksums import fill_chunk_checksums
from .messages import make_header, to_rosbags
from .msgtypes import typestore

IMAGE_TOPIC = "/endoscope/image_raw"
COMPRESSED_TOPIC = "/endoscope/image_raw/compressed"
MASK_TOPIC = "/endoscope/ground_truth/mask"
ACTIVITY_TOPIC = "/endoscope/ground_truth/activity"
FRAME_ID = "endoscope"
RAW_ENCODINGS = ("rgb8", "bgr8")
COMPRESSED_FORMATS = ("jpeg", "png")
DEFAULT_START_NS = 1_700_000_000 * 10**9  # a fixed, plausible wall-clock start keeps bags reproducible


@dataclass
class SynthBagInfo:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]  # (H, W)
    encoding: str
    storage: str
    topics: dict[str, int] = field(default_factory=dict)  # topic -> message count
    activities: list[int] = field(default_factory=list)  # per frame
    start_ns: int = DEFAULT_START_NS


def stamp_ns(start_ns: int, index: int, fps: float) -> int:
    return int(start_ns + round(index * 1e9 / fps))


def _compressed_fields(header, rgb: np.ndarray, fmt: str, jpeg_quality: int) -> dict:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if fmt == "jpeg" else [cv2.IMWRITE_PNG_COMPRESSION, 1]
    ok, buf = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", bgr, params)
    if not ok:
        raise RuntimeError(f"{fmt} encoding failed")
    # Same format string as compressed_image_transport, so its decoders accept the bag.
    return compressed_image_fields(header, f"rgb8; {fmt} compressed bgr8", buf)


def _frame_fields(header, frame, encoding: str, jpeg_quality: int, class_set: ClassSet) -> dict[str, dict]:
    """The image, ground-truth mask and ground-truth activity of one synthetic frame, keyed by message type."""
    if encoding in COMPRESSED_FORMATS:
        image = _compressed_fields(header, frame.rgb, encoding, jpeg_quality)
    else:
        pixels = frame.rgb if encoding == "rgb8" else cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)
        image = image_fields(header, pixels, encoding)
    return {"image": image, "mask": image_fields(header, frame.mask, MASK_ENCODING),
            "activity": one_hot_activity_fields(header, class_set.activity_classes, frame.activity)}


def write_synth_bag(path: str | Path, *, seconds: float = 10.0, fps: float = 30.0,
                    size: tuple[int, int] = (1024, 1280), encoding: str = "rgb8", storage: str = "mcap",
                    seed: int = 0, start_ns: int = DEFAULT_START_NS, jpeg_quality: int = 90,
                    class_set: ClassSet = MTLESD, progress: bool = False, checksums: bool = True,
                    **synth_options) -> SynthBagInfo:
    """Generate ``seconds`` of a synthetic sequence at ``fps`` and ``size`` (H, W) into a new bag at ``path``.

    ``encoding``: rgb8 / bgr8 (raw Image) or jpeg / png (CompressedImage). ``storage``: mcap / sqlite3.
    ``checksums``: fill in the MCAP chunk CRCs (False: none, as some recorders write them).
    """
    from ..data.synth import generate_sequence

    if fps <= 0 or seconds <= 0:
        raise ValueError("fps and seconds must be positive")
    frames = max(1, int(round(seconds * fps)))
    return write_frames_bag(path, generate_sequence(seed, frames, fps, size, **synth_options), frames, fps, size,
                            encoding=encoding, storage=storage, start_ns=start_ns, jpeg_quality=jpeg_quality,
                            class_set=class_set, progress=progress, checksums=checksums)


def write_procedure_bag(path: str | Path, procedure, **options) -> SynthBagInfo:
    """A synthetic procedure (``data.procedures.Procedure``) as a bag; ``options`` as ``write_frames_bag``."""
    s = procedure.settings
    return write_frames_bag(path, procedure.frames(), procedure.num_frames, s.fps, s.size, **options)


def write_frames_bag(path: str | Path, sequence, frames: int, fps: float, size: tuple[int, int], *,
                     encoding: str = "rgb8", storage: str = "mcap", start_ns: int = DEFAULT_START_NS,
                     jpeg_quality: int = 90, class_set: ClassSet = MTLESD, progress: bool = False,
                     checksums: bool = True) -> SynthBagInfo:
    """Write ``frames`` items of ``sequence`` (each with ``rgb``, ``mask``, ``activity``) at ``fps``."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if encoding not in RAW_ENCODINGS + COMPRESSED_FORMATS:
        raise ValueError(f"encoding must be one of {RAW_ENCODINGS + COMPRESSED_FORMATS}, got {encoding!r}")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
    path = Path(path)
    store = typestore()
    compressed = encoding in COMPRESSED_FORMATS
    info = SynthBagInfo(path, frames, fps, tuple(size), encoding, storage, start_ns=start_ns)
    if progress:
        from tqdm import tqdm

        sequence = tqdm(sequence, total=frames, desc="frames", unit="frame")
    # Version 8 is what Jazzy's rosbag2 writes; newer readers accept it too.
    outputs = {  # key of _frame_fields -> (topic, type)
        "image": (COMPRESSED_TOPIC, COMPRESSED_IMAGE_TYPE) if compressed else (IMAGE_TOPIC, IMAGE_TYPE),
        "mask": (MASK_TOPIC, IMAGE_TYPE),
        "activity": (ACTIVITY_TOPIC, ACTIVITY_TYPE),
    }
    with Writer(path, version=8, storage_plugin=plugins[storage]) as writer:
        conns = {key: writer.add_connection(topic, typ, typestore=store) for key, (topic, typ) in outputs.items()}
        info.topics = {topic: 0 for topic, _ in outputs.values()}
        for i, frame in enumerate(sequence):
            ns = stamp_ns(start_ns, i, fps)
            fields = _frame_fields(make_header(store, ns, FRAME_ID), frame, encoding, jpeg_quality, class_set)
            for key, (topic, typ) in outputs.items():
                writer.write(conns[key], ns, store.serialize_cdr(to_rosbags(store, typ, fields[key]), typ))
                info.topics[topic] += 1
            info.activities.append(frame.activity)
    for mcap in path.glob("*.mcap") if checksums else ():  # rosbags writes none: add them, so damage shows
        fill_chunk_checksums(mcap)
    return info

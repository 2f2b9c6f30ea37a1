"""Write a synthetic stereo endoscope recording (``endoarss synth stereo``) as a rosbag2, with 3D ground truth.

Topics (``NS`` = ``/endoscope`` by default; per frame pair one stamp, the same for every topic):

* ``NS/left/image_raw``, ``NS/right/image_raw`` (sensor_msgs/Image rgb8/bgr8, or ``.../image_raw/compressed``)
* ``NS/left/camera_info``, ``NS/right/camera_info`` (sensor_msgs/CameraInfo: a rectified pinhole pair, frame ids
  ``endoscope_left_optical_frame`` / ``endoscope_right_optical_frame``, right ``P[0,3] = -f * B``, B in metres)
* ``NS/left/ground_truth/mask``, ``NS/right/ground_truth/mask`` (mono8 class ids), ``NS/ground_truth/activity``

The 3D ground truth is a JSON file inside the bag directory, ``stereo_ground_truth.json`` (it travels with the
bag; rosbag2 readers ignore it). Its ``frames`` list one entry per pair: ``stamp_ns`` and per instrument
``class_id``, ``tip_left_px``, ``tip_right_px``, ``entry_left_px`` (pixels), ``tip_3d``, ``entry_3d`` (metres, left
optical frame), ``tip_to_tissue_m`` and ``visible`` (the tip is inside both views). ``read_stereo_truth`` reads it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2

from ..data.classes import MTLESD
from ..data.stereo_scene import StereoSceneSettings, generate_stereo_sequence
from ..inference.message_fields import (
    ACTIVITY_TYPE,
    COMPRESSED_IMAGE_TYPE,
    IMAGE_TYPE,
    MASK_ENCODING,
    image_fields,
    one_hot_activity_fields,
)
from .mcap_checksums import fill_chunk_checksums
from .messages import make_header, to_rosbags
from .msgtypes import typestore
from .synth_bag import COMPRESSED_FORMATS, DEFAULT_START_NS, RAW_ENCODINGS, _compressed_fields, stamp_ns

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"
TRUTH_FILE = "stereo_ground_truth.json"
TRUTH_FORMAT = "endoarss-stereo-truth/1"
SIDES = ("left", "right")


@dataclass
class StereoBagInfo:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int]  # (H, W)
    baseline_m: float
    focal_px: float
    topics: dict[str, int] = field(default_factory=dict)
    truth: Path | None = None


def frame_id(side: str) -> str:
    return f"endoscope_{side}_optical_frame"


def _image(header, rgb, encoding: str, jpeg_quality: int) -> dict:
    if encoding in COMPRESSED_FORMATS:
        return _compressed_fields(header, rgb, encoding, jpeg_quality)
    return image_fields(header, rgb if encoding == "rgb8" else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), encoding)


def _truth_entry(stamp: int, frame) -> dict:
    return {"stamp_ns": stamp, "activity": int(frame.activity),
            "instruments": [t._asdict() for t in frame.instruments]}


def write_stereo_bag(path: str | Path, *, seconds: float = 4.0, fps: float = 15.0,
                     settings: StereoSceneSettings | None = None, encoding: str = "rgb8",
                     storage: str = "mcap", seed: int = 0, namespace: str = "/endoscope",
                     start_ns: int = DEFAULT_START_NS, jpeg_quality: int = 90, progress: bool = False,
                     checksums: bool = True) -> StereoBagInfo:
    """Render ``seconds`` of a stereo procedure at ``fps`` into a new bag at ``path`` (see the module doc)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    if encoding not in RAW_ENCODINGS + COMPRESSED_FORMATS:
        raise ValueError(f"encoding must be one of {RAW_ENCODINGS + COMPRESSED_FORMATS}, got {encoding!r}")
    if fps <= 0 or seconds <= 0:
        raise ValueError("fps and seconds must be positive")
    plugins = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
    if storage not in plugins:
        raise ValueError(f"storage must be mcap or sqlite3, got {storage!r}")
    settings = settings or StereoSceneSettings()
    path, ns, rig = Path(path), "/" + namespace.strip("/"), settings.rig
    frames = max(1, int(round(seconds * fps)))
    store = typestore()
    image_type = COMPRESSED_IMAGE_TYPE if encoding in COMPRESSED_FORMATS else IMAGE_TYPE
    suffix = "/compressed" if encoding in COMPRESSED_FORMATS else ""
    outputs = {}  # key -> (topic, type)
    for side in SIDES:
        outputs[f"{side}_info"] = (f"{ns}/{side}/camera_info", CAMERA_INFO_TYPE)
        outputs[f"{side}_image"] = (f"{ns}/{side}/image_raw{suffix}", image_type)
        outputs[f"{side}_mask"] = (f"{ns}/{side}/ground_truth/mask", IMAGE_TYPE)
    outputs["activity"] = (f"{ns}/ground_truth/activity", ACTIVITY_TYPE)
    info = StereoBagInfo(path, frames, fps, (rig.height, rig.width), rig.baseline_m, rig.focal_px)
    sequence = generate_stereo_sequence(seed, frames, fps, settings)
    if progress:
        from tqdm import tqdm

        sequence = tqdm(sequence, total=frames, desc="stereo pairs", unit="pair")
    truth = []
    with Writer(path, version=8, storage_plugin=plugins[storage]) as writer:
        conns = {k: writer.add_connection(topic, typ, typestore=store) for k, (topic, typ) in outputs.items()}
        info.topics = {topic: 0 for topic, _ in outputs.values()}
        for i, frame in enumerate(sequence):
            stamp = stamp_ns(start_ns, i, fps)
            fields = {}
            for side in SIDES:
                header = make_header(store, stamp, frame_id(side))
                camera = rig.camera_info_fields(side, frame_id(side))
                fields[f"{side}_info"] = dict(camera, header=header)
                rgb, mask = (frame.left, frame.left_mask) if side == "left" else (frame.right, frame.right_mask)
                fields[f"{side}_image"] = _image(header, rgb, encoding, jpeg_quality)
                fields[f"{side}_mask"] = image_fields(header, mask, MASK_ENCODING)
            fields["activity"] = one_hot_activity_fields(make_header(store, stamp, frame_id("left")),
                                                         MTLESD.activity_classes, frame.activity)
            for key, (topic, typ) in outputs.items():  # camera_info first: a live reader has it before the image
                writer.write(conns[key], stamp, store.serialize_cdr(to_rosbags(store, typ, fields[key]), typ))
                info.topics[topic] += 1
            truth.append(_truth_entry(stamp, frame))
    info.truth = path / TRUTH_FILE
    document = {"format": TRUTH_FORMAT, "frame_id": frame_id("left"), "units": "metres, pixels",
                "rig": asdict(rig), "depth_range_m": list(settings.depth_range_m), "frames": truth}
    info.truth.write_text(json.dumps(document) + "\n")
    for mcap in path.glob("*.mcap") if checksums else ():
        fill_chunk_checksums(mcap)
    return info


def read_stereo_truth(bag_path: str | Path) -> dict | None:
    """The 3D ground truth of a bag written by ``write_stereo_bag`` (None when it has none); ``frames`` keyed
    by stamp (ns)."""
    path = Path(bag_path) / TRUTH_FILE
    if not path.is_file():
        return None
    document = json.loads(path.read_text())
    if document.get("format") != TRUTH_FORMAT:
        raise ValueError(f"{path}: format {document.get('format')!r} is not {TRUTH_FORMAT}")
    document["frames"] = {int(f["stamp_ns"]): f for f in document["frames"]}
    return document

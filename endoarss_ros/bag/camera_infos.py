"""camera_info of a recording's image topics, for the replay: the sibling topic ``<namespace>/camera_info`` of
each image topic (image_transport's convention), matched to the images by stamp (``CameraInfoCache``: the same
stamp, else the latest one received within a second), parsed once per distinct message and fitted to each image
size (``CameraModel.for_image``). A bad camera_info is counted by its error, and its frames stay 2D."""
from __future__ import annotations

from collections import Counter

import numpy as np

from ..inference.camera_model import CameraInfoError, CameraModel, camera_info_dict, camera_info_topic
from ..inference.stereo_pairing import CameraInfoCache

CAMERA_INFO_TYPE = "sensor_msgs/msg/CameraInfo"


class CameraInfos:
    """Per image topic: its camera_info topic (when the bag has one) and the messages read so far."""

    def __init__(self, bag, image_topics):
        types = bag.topics()
        self.bag = bag
        self.info_topic = {t: camera_info_topic(t) for t in image_topics}
        self.info_topic = {t: i for t, i in self.info_topic.items() if types.get(i) == CAMERA_INFO_TYPE}
        self.caches = {i: CameraInfoCache() for i in self.info_topic.values()}
        self.errors: dict[str, Counter] = {t: Counter() for t in self.info_topic}
        self._models: dict[tuple, CameraModel | str] = {}
        self.frames_with = Counter()
        self.frames_without = Counter()

    @property
    def topics(self) -> list[str]:
        return sorted(set(self.info_topic.values()))

    def add(self, conn, timestamp: int, rawdata) -> None:
        """A camera_info message of the bag (``BagReader.frames(..., on_extra=...)``)."""
        try:
            msg = self.bag.deserialize(rawdata, conn.msgtype)
        except Exception:  # noqa: BLE001 - an undecodable camera_info is one the frames do without
            for topic, info_topic in self.info_topic.items():
                if info_topic == conn.topic:
                    self.errors[topic]["undecodable camera_info message"] += 1
            return
        stamp = int(msg.header.stamp.sec) * 10**9 + int(msg.header.stamp.nanosec)
        self.caches[conn.topic].add(stamp, camera_info_dict(msg), timestamp)

    def model(self, topic: str, stamp_ns: int, timestamp: int, width: int, height: int) -> CameraModel | None:
        """The camera model of the image of ``topic`` stamped ``stamp_ns`` (bag time ``timestamp``), fitted to
        its size; None (counted) without a usable camera_info."""
        info_topic = self.info_topic.get(topic)
        match = self.caches[info_topic].lookup(stamp_ns, timestamp) if info_topic else None
        if match is None or match.info is None:
            self.frames_without[topic] += 1
            return None
        key = (_fingerprint(match.info), width, height)
        if key not in self._models:
            if len(self._models) > 64:
                self._models.clear()
            try:
                self._models[key] = CameraModel.from_fields(match.info).for_image(width, height)
            except CameraInfoError as e:
                self._models[key] = str(e)
        model = self._models[key]
        if isinstance(model, str):
            self.errors[topic][model] += 1
            self.frames_without[topic] += 1
            return None
        self.frames_with[topic] += 1
        return model

    def summary(self) -> dict:
        return {topic: {"camera_info_topic": info_topic, **self.caches[info_topic].summary(),
                        "frames_with_camera_info": self.frames_with[topic],
                        "frames_without": self.frames_without[topic], "errors": dict(self.errors[topic])}
                for topic, info_topic in self.info_topic.items()}


def _fingerprint(info: dict) -> tuple:
    """The values that define a camera model (camera_info messages repeat them frame after frame)."""
    arrays = tuple(np.asarray(info[k], np.float64).tobytes() for k in ("d", "k", "r", "p"))
    roi = info["roi"]
    return (info["header"]["frame_id"], info["width"], info["height"], info["distortion_model"], *arrays,
            info["binning_x"], info["binning_y"], roi["x_offset"], roi["y_offset"], roi["width"], roi["height"])

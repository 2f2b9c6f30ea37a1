"""The node's outputs: one lifecycle publisher per ``message_fields.OUTPUTS`` entry for every camera, and what is
published on them (a frame's results, its ``PerceptionStatus``, the latched ``SegmentationInfo``).

Created at configure, destroyed at cleanup or shutdown, and only after the inference worker (the one thread
that publishes results) has stopped.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from endoarss_ros.inference.markers import MARKERS_TOPIC, MARKERS_TYPE
from endoarss_ros.inference.message_fields import (
    OUTPUT_BY_KEY,
    OUTPUTS,
    Output,
    frame_fields,
    instrument_array_fields,
    segmentation_info_fields,
    status_fields,
)
from endoarss_ros.inference.status import lost_frame_status
from endoarss_ros.ros import conversions, qos
from endoarss_ros.ros.geometry import DISPARITY_TOPIC, DISPARITY_TYPE


@dataclass
class CameraOutputs:
    publishers: dict[str, Any]  # message_fields.OUTPUTS key -> lifecycle publisher
    info_frame_id: str | None = None  # frame_id of the last published SegmentationInfo

    def publish(self, key: str, fields: dict) -> None:
        output = OUTPUT_BY_KEY.get(key) or GEOMETRY_OUTPUT_BY_KEY[key]
        self.publishers[key].publish(conversions.to_ros(output.msgtype, fields))

    def wants_overlay(self) -> bool:
        """Rendering the overlay costs time: only when someone subscribes to it."""
        return self.publishers["overlay"].get_subscription_count() > 0

    def wants(self, key: str) -> bool:
        """Whether an optional output (markers, disparity) has a subscriber: it is only computed then."""
        publisher = self.publishers.get(key)
        return publisher is not None and publisher.get_subscription_count() > 0


# 3D outputs (issue 25): markers for every camera (published with camera_info), disparity for a stereo pair's left
GEOMETRY_OUTPUT_BY_KEY = {
    "markers": Output("markers", MARKERS_TOPIC, MARKERS_TYPE),
    "disparity": Output("disparity", DISPARITY_TOPIC, DISPARITY_TYPE),
}


def geometry_outputs(cam, settings) -> list[Output]:
    from endoarss_ros.ros.params import parse_stereo_pairs

    lefts = {left for left, _ in parse_stereo_pairs(list(settings.stereo_pairs), settings.cameras)}
    keys = ("markers", "disparity") if cam.index in lefts else ("markers",)
    return [GEOMETRY_OUTPUT_BY_KEY[k] for k in keys]


@dataclass
class Labels:
    """What the published messages name: the (possibly renamed) classes, their colours and the model file."""
    seg_names: list[str]
    activity_names: list[str]
    colors: Any
    model: str


class Outputs:
    """Every camera's publishers, and the per-frame publishing the node's input callbacks and worker share."""

    def __init__(self, node, settings, stats):
        self._node = node
        self._stats = stats
        self.cameras = [self._create(cam, settings) for cam in settings.cameras]

    def _create(self, cam, settings) -> CameraOutputs:
        log = self._node.get_logger()
        stream = qos.stream_qos(settings.output_reliability, settings.output_depth)
        publishers = {}
        for output in (*OUTPUTS, *geometry_outputs(cam, settings)):
            topic = cam.output_topic(output.topic)
            publishers[output.key] = self._node.create_lifecycle_publisher(
                conversions.message_class(output.msgtype), topic, qos.latched_qos() if output.latched else stream,
                event_callbacks=qos.publisher_events(log, topic))
        return CameraOutputs(publishers)

    def destroy(self) -> None:
        cameras, self.cameras = self.cameras, []
        for out in cameras:
            for pub in out.publishers.values():
                self._node.destroy_lifecycle_publisher(pub)

    def publish_results(self, camera: int, header, result, stream, labels: Labels, overlay: bool,
                        geometry=None) -> float:
        """One frame's masks, overlay, activity and instruments (and the info again when the frame_id changed);
        ``geometry``: its ``geometry.FrameGeometry`` (3D fields, markers, disparity) or None (2D).
        Returns the seconds spent building the messages' fields (the node's ``message_build`` stage)."""
        out = self.cameras[camera]
        t0 = time.monotonic()
        fields = frame_fields(header, result, stream, labels.activity_names, labels.seg_names, overlay=overlay)
        if geometry is not None:
            h, w = result.mask.shape[:2]
            fields["instruments"] = instrument_array_fields(geometry.header, w, h, stream.instruments,
                                                            labels.seg_names, geometry.instruments)
            for key in ("markers", "disparity"):
                if getattr(geometry, key) is not None:
                    fields[key] = getattr(geometry, key)
        build_s = time.monotonic() - t0
        for key, value in fields.items():
            out.publish(key, value)  # markers and disparity after instruments, before the status
        if out.info_frame_id != header.frame_id:
            self.publish_info(camera, header.frame_id, labels)
        return build_s

    def publish_info(self, camera: int, frame_id: str, labels: Labels) -> None:
        header = {"stamp": self._node.get_clock().now().to_msg(), "frame_id": frame_id}
        out = self.cameras[camera]
        out.publish("info", segmentation_info_fields(header, labels.seg_names, labels.colors, labels.model))
        out.info_frame_id = frame_id

    def publish_status(self, camera: int, header, status, received: float, thresholds):
        """The frame's PerceptionStatus with its timing (age = the node's clock - the image stamp), counted;
        returns it as published (None for a camera that has no outputs)."""
        if camera >= len(self.cameras):
            return None
        stamp = header.stamp
        age_ms = (self._node.get_clock().now().nanoseconds - (stamp.sec * 10**9 + stamp.nanosec)) / 1e6
        status = status.with_timing(age_ms, (time.monotonic() - received) * 1000.0, thresholds)
        self.cameras[camera].publish("status", status_fields(header, status))
        self._stats.status(status.usable, status.flag_names)
        return status

    def publish_lost(self, camera: int, header, flag: str, reason: str, received: float, thresholds, *,
                     out_of_body: bool = False) -> None:
        """The status of a frame that has no results (rejected, replaced, failed); ``out_of_body``: the
        camera's state (such a frame publishes no image, so the privacy gate has nothing to blank)."""
        self.publish_status(camera, header, lost_frame_status(flag, reason, out_of_body), received, thresholds)

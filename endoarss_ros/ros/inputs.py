"""The node's intake: one subscription per camera. A callback counts the frame (and the frames its publisher
sent that never arrived), validates it without copying (compressed frames by their header: decoding is the
worker's job) and parks it in the newest-frame slots; a bad frame is handed to ``reject`` and never displaces a
good pending one."""
from __future__ import annotations

import time
from collections.abc import Callable

from sensor_msgs.msg import CompressedImage, Image

from endoarss_ros.inference.frames import FrameError, check_compressed
from endoarss_ros.ros import conversions, qos
from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame
from endoarss_ros.ros.input_loss import SequenceGaps


class Inputs:
    """Subscribes every camera of ``node.settings`` at once; ``destroy`` stops the intake."""

    def __init__(self, node, slots: LatestFrameSlots, reject: Callable[[int, object, Exception], None],
                 stereo=None):
        self._node = node
        # A camera of a stereo pair parks its frames with the pairing (``stereo_intake``), the others in the slots.
        self._put = [stereo.put if stereo is not None and stereo.handles(cam.index) else slots.put
                     for cam in node.settings.cameras]
        self._reject = reject
        s, log = node.settings, node.get_logger()
        self._gaps = [SequenceGaps() for _ in s.cameras]
        in_qos = qos.stream_qos(s.input_reliability, s.input_depth)
        self._subscriptions = []
        for cam in s.cameras:
            if s.image_transport == "compressed":
                topic = cam.input_topic(f"{s.image_name}/compressed")
                msg_type, callback = CompressedImage, self._compressed_callback(cam.index)
            else:
                topic = cam.input_topic(s.image_name)
                msg_type, callback = Image, self._image_callback(cam.index)
            events = qos.subscription_events(log, topic, on_lost=self._count_dds_lost)
            self._subscriptions.append(node.create_subscription(msg_type, topic, callback, in_qos,
                                                                event_callbacks=events))

    def topic_names(self) -> list[str]:
        return [sub.topic_name for sub in self._subscriptions]

    def destroy(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, []
        for sub in subscriptions:
            self._node.destroy_subscription(sub)

    def _image_callback(self, camera: int):
        def on_image(msg, info):
            received = self._count_input(camera, info)
            try:
                # Validation only (no copy): a bad frame never displaces a good pending one.
                frame = conversions.frame_from_image(msg, max_pixels=self._node.settings.max_input_pixels)
            except ValueError as e:
                self._reject(camera, msg, e)
                return
            self._node.stats.stages(receive_convert=(time.monotonic() - received) * 1000.0)
            self._put[camera](PendingFrame(camera, msg, frame, received))
        return on_image

    def _compressed_callback(self, camera: int):
        def on_compressed(msg, info):
            received = self._count_input(camera, info)
            try:
                # The header only (microseconds, whatever size it claims): decoding is the worker's job.
                check_compressed(msg.format, msg.data, max_pixels=self._node.settings.max_input_pixels)
            except FrameError as e:
                self._reject(camera, msg, e)
                return
            self._put[camera](PendingFrame(camera, msg, None, received))
        return on_compressed

    def _count_input(self, camera: int, info) -> float:
        """Count a received frame and the frames its publisher sent since the previous one that never arrived
        (sequence gaps, see ``input_loss``). Returns the receipt time."""
        received = time.monotonic()
        stats = self._node.stats
        stats.received()
        subs = self._subscriptions
        publishers = subs[camera].get_publisher_count() if camera < len(subs) else 1
        lost = self._gaps[camera].lost(info.get("publication_sequence_number"), publishers)
        if lost is None:
            stats.count("input.loss_not_countable")
        elif lost:
            stats.dropped("lost_before_callback", lost)
        return received

    def _count_dds_lost(self, samples: int) -> None:
        self._node.stats.count("input.dds_samples_lost", samples)

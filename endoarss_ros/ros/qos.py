"""QoS profiles of the perception node, and the warnings that explain an incompatible peer.

Inputs default to sensor data (best effort, newest frame only): a best-effort subscription matches every
publisher. Outputs default to reliable, which RViz, `ros2 topic echo` and bag recording expect.
``segmentation/info`` is transient-local, like ``CameraInfo`` latching, so late subscribers get it.
"""
from __future__ import annotations

from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

_RELIABILITY = {"best_effort": ReliabilityPolicy.BEST_EFFORT, "reliable": ReliabilityPolicy.RELIABLE}


def stream_qos(reliability: str, depth: int) -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=depth, reliability=_RELIABILITY[reliability],
                      durability=DurabilityPolicy.VOLATILE)


def latched_qos() -> QoSProfile:
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1, reliability=ReliabilityPolicy.RELIABLE,
                      durability=DurabilityPolicy.TRANSIENT_LOCAL)


def _policy_name(policy_id) -> str:
    try:
        from rclpy.qos import qos_policy_name_from_kind

        return qos_policy_name_from_kind(policy_id)
    except Exception:  # noqa: BLE001 - only for the message text
        return str(policy_id)


def subscription_events(logger, topic: str, on_lost=None) -> SubscriptionEventCallbacks:
    """Warn (throttled) when a publisher cannot be matched: the most common reason for 'no output'.
    ``on_lost(n)`` hears the middleware's "message lost" event (samples it knows were lost in transport; Fast
    DDS does not count samples replaced in the subscription's queue, nor any over shared memory)."""
    def on_incompatible(event):
        policy = _policy_name(event.last_policy_kind)
        logger.warning(
            f"incompatible QoS on input {topic}: a publisher offers a {policy} policy this subscription cannot "
            f"accept ({event.total_count} publisher(s) so far), so its images are NOT received. Typical cause: "
            "input_qos.reliability:=reliable while the camera publishes best effort; use best_effort (default).",
            throttle_duration_sec=5.0)

    def on_message_lost(event):
        if on_lost is not None and event.total_count_change > 0:
            on_lost(event.total_count_change)

    return SubscriptionEventCallbacks(incompatible_qos=on_incompatible, message_lost=on_message_lost)


def publisher_events(logger, topic: str) -> PublisherEventCallbacks:
    def on_incompatible(event):
        policy = _policy_name(event.last_policy_kind)
        logger.warning(
            f"incompatible QoS on output {topic}: a subscriber requests a {policy} policy this publisher does not "
            f"offer ({event.total_count} subscriber(s) so far), so it receives nothing. Typical cause: a subscriber "
            "asking for reliable while output_qos.reliability is best_effort, or transient-local on a volatile topic.",
            throttle_duration_sec=5.0)

    return PublisherEventCallbacks(incompatible_qos=on_incompatible)

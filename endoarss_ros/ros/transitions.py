"""Lifecycle plumbing of the node that rclpy leaves out: transition callbacks that log what they raise, and a
ChangeState service that refuses (instead of raising out of the executor) a transition the state does not have."""
from __future__ import annotations

import functools
import traceback


def logged(transition):
    """rclpy turns an exception in a transition callback into ERROR without a word: log it first."""

    @functools.wraps(transition)
    def wrapper(self, state):
        try:
            return transition(self, state)
        except Exception as e:
            self.get_logger().error(f"{transition.__name__} raised {type(e).__name__}: {e}\n"
                                    + traceback.format_exc())
            raise
    return wrapper


def guard_change_state_service(node, stats) -> None:
    """Wrap rclpy's ChangeState handler: an unavailable transition gets ``success: false`` and a warning."""
    service = getattr(node, "_service_change_state", None)  # absent without the communication interface
    if service is None:
        return
    change_state = service.callback

    def on_change_state(request, response):
        transition = request.transition
        available = {tid: label for tid, label, *_ in node._state_machine.available_transitions}
        wanted = transition.label or transition.id
        allowed = transition.label in available.values() if transition.label else transition.id in available
        if not allowed:
            state = node._state_machine.current_state[1]
            stats.count("lifecycle.refused_transitions")
            node.get_logger().warning(
                f"refused lifecycle transition {wanted!r}: not available in state {state!r} (available: "
                + ", ".join(f"{label} [{tid}]" for tid, label in sorted(available.items())) + ")")
            response.success = False
            return response
        return change_state(request, response)

    service.callback = on_change_state

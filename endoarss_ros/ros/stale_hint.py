"""What to tell a user whose results are STALE because of the clock, not the machine: a recorded bag played into
a node on system time (``age = now - image stamp`` is then the recording's age). Used by the node where it logs
stale results and by ``endoarss play`` before it plays such a bag without ``--clock``."""
from __future__ import annotations

RECORDING_AGE_S = 60.0  # stamps this far behind the clock come from a recording, not from a slow machine
FIX = ("play the bag with `endoarss play --clock` (or `ros2 bag play --clock`) and start the node with "
       "use_sim_time:=true (on the `ros2 launch` line; `-p use_sim_time:=true` with `ros2 run`)")


def _duration(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def node_stale_hint(age_ms: float, sim_time: bool) -> str | None:
    """The node's warning for a STALE result ``age_ms`` old (None: a plain slow result, no hint)."""
    if not age_ms >= RECORDING_AGE_S * 1000.0:
        return None
    age = _duration(age_ms / 1000.0)
    if sim_time:
        return (f"results are STALE: image stamps are {age} behind /clock; is the player publishing the bag's time "
                "(`endoarss play --clock`, `ros2 bag play --clock`)?")
    return (f"results are STALE: image stamps are {age} behind this node's system clock, so they come from a "
            f"recording; {FIX}")


def player_stale_hint(bag_start_ns: int, publishes_clock: bool, now_s: float) -> str | None:
    """``endoarss play``'s note for a bag recorded long ago and played without ``--clock`` (None otherwise)."""
    age_s = now_s - bag_start_ns / 1e9
    if publishes_clock or age_s < RECORDING_AGE_S:
        return None
    return (f"note: this bag was recorded {_duration(age_s)} ago and is played without --clock: a node on system "
            f"time flags every result STALE (its age is measured from the recorded stamps); for live ages, {FIX}")

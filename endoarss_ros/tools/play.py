"""`endoarss play BAG`: publish a rosbag2's messages live with their original timing (rclpy + rosbags).

For machines with rclpy but no ``ros2 bag`` (like the venv of scripts/setup_env.sh). The serialized CDR of
each message is published as is (no decode / re-encode), with the recorded inter-message timing scaled by
``--rate``. Users with a ROS install can use ``ros2 bag play`` on the same bags instead.

    endoarss play demo_output/recording --rate 0.5 --remap /endoscope/image_raw:=/cam/image

``--clock HZ`` also publishes the bag's time on ``/clock`` (``rosgraph_msgs/Clock``), as ``ros2 bag play --clock``
does, for nodes running with ``use_sim_time:=true``: their clock then follows the recording, so the age of a
result (now - its image's stamp) means the same as live.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import time
from collections import Counter


def add_arguments(parser) -> None:
    parser.add_argument("bag", metavar="BAG", help="rosbag2 folder (MCAP or sqlite3)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    parser.add_argument("--loop", action="store_true", help="play again and again until interrupted")
    parser.add_argument("--topics", nargs="+", metavar="TOPIC", help="only these topics (default: all)")
    parser.add_argument("--remap", action="append", default=[], metavar="FROM:=TO",
                        help="publish topic FROM as TO (repeatable)")
    parser.add_argument("--qos", choices=["reliable", "best_effort"], default="reliable",
                        help="reliability of the publishers (default reliable; latched topics stay latched)")
    parser.add_argument("--depth", type=int, default=10, help="publisher history depth")
    parser.add_argument("--wait-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="before playing, wait up to SECONDS until every topic has a subscriber")
    parser.add_argument("--start-offset", type=float, default=0.0, metavar="SECONDS",
                        help="skip the first SECONDS of the bag")
    parser.add_argument("--clock", type=float, nargs="?", const=40.0, default=None, metavar="HZ",
                        help="publish the bag's time on /clock at HZ (default 40 when given without a value)")
    parser.add_argument("--node-name", default="endoarss_player")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    parser.add_argument("--quiet", action="store_true")


def parse_remaps(items) -> dict[str, str]:
    remaps = {}
    for item in items or []:
        if ":=" not in item:
            raise ValueError(f"--remap expects FROM:=TO, got {item!r}")
        src, dst = item.split(":=", 1)
        if not src or not dst:
            raise ValueError(f"--remap expects FROM:=TO, got {item!r}")
        remaps[src] = dst
    return remaps


def message_class(msgtype: str):
    """The rclpy message class of ``pkg/msg/Name``; None when not importable here."""
    from endoarss_ros.ros import conversions

    try:
        return conversions.message_class(msgtype)
    except (ImportError, AttributeError):
        return None


def _is_latched(conn) -> bool:
    profiles = getattr(getattr(conn, "ext", None), "offered_qos_profiles", None)
    if not profiles:
        return False
    if isinstance(profiles, str):  # older rosbags: the YAML text
        return "durability: 1" in profiles
    from rosbags.interfaces import QosDurability

    return any(getattr(p, "durability", None) == QosDurability.TRANSIENT_LOCAL for p in profiles)


def _create_publishers(node, conns, args, remaps: dict[str, str], skipped: dict[str, str]) -> dict:
    """topic -> publisher for every connection whose type is importable here (the others go to ``skipped``);
    latched topics stay latched."""
    from endoarss_ros.ros import qos

    publishers = {}
    for c in conns:
        cls = message_class(c.msgtype)
        if cls is None:
            skipped[c.topic] = f"message type {c.msgtype} is not available here"
            continue
        if c.topic in publishers:
            continue
        profile = qos.latched_qos() if _is_latched(c) else qos.stream_qos(args.qos, max(1, args.depth))
        publishers[c.topic] = node.create_publisher(cls, remaps.get(c.topic, c.topic), profile)
    return publishers


def _wait_for_subscribers(publishers: dict, seconds: float, log) -> list[str]:
    """Up to ``seconds`` for every publisher to have a subscriber; returns the topics still without one."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(p.get_subscription_count() > 0 for p in publishers.values()):
            break
        time.sleep(0.05)
    waiting = [p.topic_name for p in publishers.values() if p.get_subscription_count() == 0]
    if waiting:
        log(f"no subscriber after {seconds:.1f} s on: {', '.join(waiting)}")
    else:
        time.sleep(0.3)  # let the subscribers' side finish matching as well
    return waiting


class _BagClock:
    """Publishes the bag's time on /clock every ``1 / hz`` s while waiting for the next message."""

    def __init__(self, node, bag_start_ns: int, rate: float, hz: float):
        from rclpy.qos import QoSProfile
        from rosgraph_msgs.msg import Clock

        self._pub = node.create_publisher(Clock, "/clock", QoSProfile(depth=1))
        self._msg = Clock()
        self.bag_start_ns, self.rate, self.period = bag_start_ns, rate, 1.0 / max(hz, 1e-3)
        self.wall_start = time.monotonic()

    def _publish(self, wall: float) -> None:
        ns = self.bag_start_ns + int((wall - self.wall_start) * self.rate * 1e9)
        self._msg.clock.sec, self._msg.clock.nanosec = ns // 10**9, ns % 10**9
        self._pub.publish(self._msg)

    def sleep_until(self, due: float, stop: threading.Event) -> None:
        """Sleep until ``due`` (monotonic), publishing the clock every period and once at ``due``."""
        while (now := time.monotonic()) < due:
            self._publish(now)
            if stop.wait(min(self.period, due - now)):
                raise KeyboardInterrupt
        self._publish(due)


def _sleep_until(due: float, stop: threading.Event) -> None:
    if stop.wait(max(0.0, due - time.monotonic())):
        raise KeyboardInterrupt


def _publish_timed(bag, publishers: dict, args, counts: Counter, summary: dict, node=None,
                   stop: threading.Event | None = None) -> None:
    """The serialized messages at their recorded times (scaled by ``--rate``), once or ``--loop``; with
    ``--clock`` the bag's time on /clock meanwhile."""
    stop = stop or threading.Event()
    bag_start = bag.start_time + int(args.start_offset * 1e9)
    clock = _BagClock(node, bag_start, args.rate, args.clock) if args.clock else None
    while True:
        loop_wall = time.monotonic()
        if clock is not None:
            clock.wall_start = loop_wall
        wait = clock.sleep_until if clock is not None else _sleep_until
        for conn, timestamp, rawdata in bag.messages(publishers):
            if timestamp < bag_start:
                continue
            wait(loop_wall + (timestamp - bag_start) / 1e9 / args.rate, stop)
            publishers[conn.topic].publish(bytes(rawdata))
            counts[publishers[conn.topic].topic_name] += 1
        summary["loops"] += 1
        if not args.loop:
            return


def _empty_summary(args) -> dict:
    return {"bag": str(args.bag), "rate": args.rate, "published": {}, "skipped_topics": {}, "loops": 0,
            "seconds": 0.0}


def play(args, *, log=print, stop: threading.Event | None = None, summary: dict | None = None) -> dict:
    """Publish the bag; returns the summary (``summary``: the dict to fill, so a caller can read it meanwhile).
    Needs ``rclpy.init`` done by the caller; ``stop`` set ends the playing as an interrupt."""
    import rclpy

    from endoarss_ros.bag.reader import BagReader
    from endoarss_ros.ros.stale_hint import player_stale_hint

    remaps = parse_remaps(args.remap)
    if args.rate <= 0:
        raise ValueError("--rate must be positive")
    summary = summary if summary is not None else _empty_summary(args)
    counts: Counter[str] = Counter()
    summary["published"] = counts  # live: what an interrupt that cannot wait for the tear-down prints
    with BagReader(args.bag) as bag:
        conns = [c for c in bag.connections if not args.topics or c.topic in args.topics]
        missing = sorted(set(args.topics or []) - {c.topic for c in bag.connections})
        if missing:
            raise ValueError(f"bag {bag.path} has no topic(s) {', '.join(missing)} "
                             f"(it has {', '.join(sorted(bag.topics()))})")
        node = None
        t0 = None
        try:
            node = rclpy.create_node(args.node_name)
            publishers = _create_publishers(node, conns, args, remaps, summary["skipped_topics"])
            for topic, reason in summary["skipped_topics"].items():
                log(f"skipping {topic}: {reason}")
            if not publishers:
                raise ValueError(f"bag {bag.path}: nothing to publish")
            if hint := player_stale_hint(bag.start_time, bool(args.clock), time.time()):
                log(hint)
            if args.wait_subscribers > 0:
                summary["without_subscribers"] = _wait_for_subscribers(publishers, args.wait_subscribers, log)
            summary["wall_start_unix"] = time.time()
            t0 = time.monotonic()
            _publish_timed(bag, publishers, args, counts, summary, node, stop)
            summary["seconds"] = round(time.monotonic() - t0, 3)
            time.sleep(0.3)  # let the last samples leave before the participant goes away
        except KeyboardInterrupt:
            _ignore_interrupts()  # a second Ctrl-C must not cut the summary short
            summary["interrupted"] = True
            summary["seconds"] = round(time.monotonic() - t0, 3) if t0 is not None else 0.0
        finally:
            summary["published"] = dict(counts)
            if node is not None:
                node.destroy_node()
    return summary


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


SIGNALS = {signal.SIGINT, signal.SIGTERM}
TEAR_DOWN_GRACE_S = 10.0


class _Interrupts:
    """Ctrl-C and SIGTERM taken by a thread of their own (``sigwait``; blocked in every other thread, so neither
    rclpy's nor the middleware's threads see them): the first sets ``stop``, which the playing loop checks between
    messages and while it waits. Should the main thread still not be done ``TEAR_DOWN_GRACE_S`` later (blocked in
    the middleware), the summary so far is printed and the process exits 130: a player always ends on Ctrl-C."""

    def __init__(self, report):
        self.stop, self.done, self._report = threading.Event(), threading.Event(), report
        for sig in SIGNALS:  # not ignored (a script's background job starts with SIGINT ignored): sigwait gets it
            signal.signal(sig, signal.default_int_handler)
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)  # before rclpy starts any thread: they inherit it
        threading.Thread(target=self._watch, name="endoarss-play-signals", daemon=True).start()

    def _watch(self) -> None:
        signal.sigwait(SIGNALS)
        self.stop.set()
        if not self.done.wait(TEAR_DOWN_GRACE_S):
            print(f"endoarss play: the tear-down did not finish within {TEAR_DOWN_GRACE_S:g} s of the interrupt; "
                  "exiting", file=sys.stderr, flush=True)
            self._report()
            os._exit(130)

    def restore(self) -> None:
        self.done.set()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)


def run(args) -> int:
    from endoarss_ros.bag.reader import BagError
    from endoarss_ros.ros import fastdds

    fastdds.apply_profile()
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    summary = _empty_summary(args)
    # Not rclpy's signal handling: it shuts the context down from its own thread while a publish is in flight
    # ("publisher's context is invalid"). The interrupt ends the loop, `play` destroys its node, and the context
    # is shut down after that.
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
    interrupts = _Interrupts(lambda: _print_summary(args, {**summary, "interrupted": True,
                                                           "published": dict(summary["published"])}))
    try:
        rclpy.init(args=["endoarss-play"], signal_handler_options=SignalHandlerOptions.NO)
        summary = play(args, log=log, stop=interrupts.stop, summary=summary)
    except (BagError, ValueError) as e:
        print(f"endoarss play: error: {e}", file=sys.stderr)
        return 2
    finally:
        rclpy.try_shutdown()
        _ignore_interrupts()  # a second Ctrl-C, pending while blocked, is dropped when unblocked
        interrupts.restore()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if interrupts.stop.is_set():
        summary["interrupted"] = True
    _print_summary(args, summary)
    return 130 if summary.get("interrupted") else 0


def _print_summary(args, summary: dict) -> None:
    if args.json:
        print(json.dumps(summary), flush=True)
        return
    total = sum(summary["published"].values())
    print(f"published {total} messages in {summary['seconds']} s (rate {args.rate}"
          + (f", {summary['loops']} loops" if args.loop else "") + ")"
          + (" - interrupted" if summary.get("interrupted") else ""), flush=True)
    for topic, n in sorted(summary["published"].items()):
        print(f"  {topic}: {n}", flush=True)


def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="endoarss play", description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

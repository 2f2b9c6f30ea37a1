"""Entry point of the EndoARSS perception node (`endoarss-perception`, `ros2 run endoarss_ros perception_node`).

With ``autostart`` (default) the lifecycle node walks itself to active, so `ros2 run` and launch files just work.
The node itself is in :mod:`endoarss_ros.ros.node`; it is imported only after ``--help`` is handled, so the help
needs neither ROS nor torch.
"""
from __future__ import annotations

import os
import signal
import sys

USAGE = """usage: endoarss-perception [--ros-args ...]

The EndoARSS perception node: endoscope images in, segmentation masks and the surgical activity out.
ROS arguments follow --ros-args as usual, for example:
  endoarss-perception --ros-args -r image:=/endoscope/left/image_raw -p model:=models/demo/endoarss_demo.safetensors
  endoarss-perception --ros-args --params-file config/perception.yaml
  endoarss-perception --ros-args -p autostart:=false   # wait for a lifecycle manager

The node starts in the namespace /endoarss (where the docs and config/perception.yaml expect it);
`-r __ns:=/other` moves it. Ctrl-C or SIGTERM: a clean shutdown, exit 0; so does
`ros2 lifecycle set /endoarss/endoarss_perception shutdown`.

Topics (relative to the node's namespace; one set per entry of the `cameras` parameter):
  in:  image (sensor_msgs/Image) or image/compressed (image_transport:=compressed)
  out: activity, segmentation/mask, segmentation/overlay, segmentation/info, and /diagnostics
"""


def main(argv: list[str] | None = None) -> int:
    _exit_quietly_on_early_interrupt()
    argv = list(sys.argv[1:] if argv is None else argv)
    ros_start = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    if any(a in ("-h", "--help") for a in argv[:ros_start]):
        print(USAGE)
        return 0
    try:
        return _run(argv)
    except KeyboardInterrupt:  # before ROS was up (imports, parsing): nothing to clean up
        return 0


def _exit_quietly_on_early_interrupt() -> None:
    """Until the node's own handler is installed (``_run``), Ctrl-C or SIGTERM ends the process at once with exit 0:
    nothing needs cleaning up while Python still imports rclpy and torch. It exits there and then (``os._exit``)
    rather than raising: an exception raised inside a C extension's initialisation (rclpy's) comes out as an
    ImportError with a traceback, and under ``ros2 launch`` a second SIGINT (launch's own, after the terminal's)
    would interrupt the unwinding of the first (exit code -2).
    The installed ``perception_node`` starts Python with both signals blocked (its ``env --block-signal``
    shebang), so one that comes while the interpreter starts (``site``, the ROS wheels' re-exec) waits for this
    handler instead of failing the start-up; unblocked here, it is delivered now."""
    def early_exit(signum, frame):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(0)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, early_exit)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})


def _run(argv: list[str]) -> int:
    problem = params_file_problem(argv)
    if problem:
        print(f"endoarss-perception: {problem}", file=sys.stderr)
        return 1
    from endoarss_ros.ros import fastdds

    fastdds.apply_profile()  # before the first participant exists
    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from endoarss_ros.ros.node import PerceptionNode

    # rclpy's own SIGINT handler shuts the context down from its signal thread, at once, while the worker may be
    # publishing and a transition may be creating publishers: the node then fails or aborts. Ours acts in the
    # main thread only, and the tear-down below runs in order with the context still valid. Installed
    # explicitly: a process started with SIGINT ignored (a background job of a script) must still stop.
    interrupts = _Interrupts()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, interrupts)
    node = executor = None
    code = 0
    try:
        rclpy.init(args=["endoarss-perception", *argv], signal_handler_options=SignalHandlerOptions.NO)
        node = PerceptionNode()
        if node.settings.autostart and not _autostart(node):
            code = 1
        else:
            executor = SingleThreadedExecutor()
            executor.add_node(node)
            interrupts.raise_now = False  # from here the spin loop checks; see _Interrupts
            _spin(node, executor, interrupts)
            if interrupts.requested:
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        _ignore_interrupts()
        if node is not None:
            node.get_logger().info(f"interrupted ({_interrupted_phase(node)}): shutting down")
    except ExternalShutdownException:  # the context was shut down from outside (e.g. a test harness)
        pass
    except Exception as e:  # noqa: BLE001 - e.g. an out-of-range parameter at start: say it plainly
        print(f"endoarss-perception: {type(e).__name__}: {_first_line(e)}", file=sys.stderr)
        code = 1
    finally:
        # A second Ctrl-C (or `timeout` and `ros2 launch` both signalling) must not cut the clean-up short.
        _ignore_interrupts()
        _tear_down(node, executor)
    return code


def _tear_down(node, executor) -> None:
    """Intake, worker, publishers, node (``PerceptionNode.close``), then the executor, then the context."""
    import rclpy

    if node is not None:
        if not node.finalized:
            _try_shutdown_transition(node)
        node.close()
    if executor is not None:
        executor.shutdown()
    rclpy.try_shutdown()


def _try_shutdown_transition(node) -> None:
    """The lifecycle ``shutdown`` transition, when the node is in a primary state (not when Ctrl-C came in the
    middle of a transition: ``close`` releases what that transition had created)."""
    from rclpy.lifecycle import TransitionCallbackReturn

    state = node._state_machine.current_state[1]
    if state not in ("unconfigured", "inactive", "active"):
        return
    try:
        node.trigger_shutdown()
    except Exception as e:  # noqa: BLE001 - the tear-down goes on; say why the transition did not run
        node.get_logger().warning(f"shutdown transition from {state}: {type(e).__name__}: {_first_line(e)}")
    else:
        if not node.finalized:
            node.get_logger().warning(f"shutdown transition from {state} did not return "
                                      f"{TransitionCallbackReturn.SUCCESS.to_label()}")


def _interrupted_phase(node) -> str:
    state = node._state_machine.current_state[1]
    if state == "configuring":
        return "while configuring: the transition is abandoned"
    return f"state {state}"


def _autostart(node) -> bool:
    from rclpy.lifecycle import TransitionCallbackReturn

    for name, trigger in (("configure", node.trigger_configure), ("activate", node.trigger_activate)):
        if trigger() != TransitionCallbackReturn.SUCCESS:
            node.get_logger().fatal(f"autostart: {name} failed (see above); exiting")
            return False
    return True


SPIN_PERIOD_S = 0.2  # how soon the main thread sees a Ctrl-C while no callback runs


class _Interrupts:
    """The SIGINT / SIGTERM handler. While the main thread runs a long transition of its own (autostart's
    configure: model load, warm-up) it raises KeyboardInterrupt there, abandoning the transition; while spinning
    it only sets ``requested``, which the spin loop checks between callbacks: raised inside rclpy's executor,
    KeyboardInterrupt can land half-way through its bookkeeping (a Task built halfway)."""

    def __init__(self):
        self.requested = False
        self.raise_now = True

    def __call__(self, signum, frame):
        self.requested = True
        if self.raise_now:
            raise KeyboardInterrupt


def _spin(node, executor, interrupts: _Interrupts) -> None:
    """Spin until interrupted or finalized (``ros2 lifecycle set ... shutdown`` ends the process). A callback
    that raises is reported and the node goes on serving: nothing a client sends (a service request, a
    parameter, a message) may end the process."""
    from rclpy.executors import ExternalShutdownException

    while not interrupts.requested and not node.finalized and node.context.ok():
        try:
            executor.spin_once(timeout_sec=SPIN_PERIOD_S)
        except (KeyboardInterrupt, ExternalShutdownException):
            raise
        except Exception as e:  # noqa: BLE001
            node.report_callback_error(e)


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else ""


def _params_file_loader():
    """YAML as rcl reads a parameters file: safe, plus the ``!!python/tuple`` lists launch_ros writes for a list
    parameter given to a launch ``Node`` (e.g. ``cameras``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    Loader.add_constructor("tag:yaml.org,2002:python/tuple", lambda loader, node: loader.construct_sequence(node))
    return Loader


def params_file_problem(argv: list[str]) -> str | None:
    """Why a ``--params-file`` among the ROS arguments cannot be used (None when all are readable YAML
    mappings). rcl would otherwise fail inside ``rclpy.init`` with a traceback and no line number."""
    import yaml

    ros_args = argv[argv.index("--ros-args") + 1:] if "--ros-args" in argv else []
    files = [ros_args[i + 1] for i, a in enumerate(ros_args[:-1]) if a == "--params-file"]
    for path in files:
        try:
            with open(path) as f:
                data = yaml.load(f, Loader=_params_file_loader())
        except OSError as e:
            return f"cannot read the parameters file {path}: {e.strerror or e}"
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            what = getattr(e, "problem", None) or _first_line(e)
            return f"the parameters file {path} is not valid YAML{where}: {what}"
        if not isinstance(data, dict):
            return (f"the parameters file {path} must be a mapping of node names to ros__parameters "
                    f"(see config/perception.yaml), not {type(data).__name__}")
    return None


if __name__ == "__main__":
    sys.exit(main())

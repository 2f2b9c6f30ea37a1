"""Checks behind launch/perception.launch.py, kept here so they are tested without the launch tools.

* ``normalise_topic``: one spelling of a topic argument for both remaps (``image`` and ``image/compressed``),
  so ``image:=/robot/left/image_raw/`` works instead of killing the node with "Couldn't parse remap rule";
* ``camera_info_topic``: the single camera's camera_info, by default the image topic's sibling;
* ``rviz_problem``: whether RViz 2 can be started, checked before anything is launched;
* ``node_exit_problem``: whether the node's exit must end the launch with a failure;
* ``launch_bool``: a boolean argument in every spelling launch's own conditions accept (``true``, ``True``, ``1``);
* ``NODE_ARGUMENTS`` / ``parameter_overrides``: one launch argument per node parameter, so any parameter the
  docs mention can be set on the launch line (``cameras:="['left', 'right']"``), typed as the node declares it;
* ``misspelt_arguments``: launch arguments given that this launch file does not have, but nearly does;
* ``parameter_hint``: how to set a parameter, as a launch argument under launch, with ``-p`` otherwise;
* ``empty_list_parameters_file``: the empty lists given on the launch line (``cameras:=[]``), which launch_ros
  cannot pass itself, as a parameters file;
* ``argument_default_text`` / ``argument_description``: what ``--show-args`` says of a node parameter;
* ``log_colour_env``: no ANSI colours in the node's log when launch's output is not a terminal.
"""
from __future__ import annotations

import difflib
import os
import re

import yaml

RVIZ_PACKAGE = "rviz2"


def normalise_topic(value: str, argument: str = "image") -> str:
    """``value`` without surrounding spaces, repeated or trailing slashes; ValueError naming the argument when
    it is still not a valid ROS topic name."""
    from rclpy.exceptions import InvalidTopicNameException
    from rclpy.validate_topic_name import validate_topic_name

    name = re.sub(r"/{2,}", "/", str(value).strip())
    if len(name) > 1:
        name = name.rstrip("/")
    try:
        validate_topic_name(name)
    except InvalidTopicNameException as e:
        why = str(e).strip().splitlines()[0].removeprefix("Invalid topic name: ").rstrip(":")
        raise ValueError(f"{argument}:={value!r} is not a valid topic name: {why}") from None
    return name


def camera_info_topic(image_topic: str, given: str = "") -> str:
    """The camera_info topic of the single camera: ``given`` (normalised) or, by the image_transport convention,
    the image topic's sibling ``camera_info`` (``/endoscope/left/image_raw`` -> ``/endoscope/left/camera_info``)."""
    if str(given).strip():
        return normalise_topic(given, "camera_info")
    if "/" not in image_topic:  # a relative name resolves in the node's namespace: so does its sibling
        return "camera_info"
    from endoarss_ros.inference.camera_model import camera_info_topic as sibling

    return sibling(image_topic)


def rviz_problem(environ=None) -> str | None:
    """Why ``rviz:=true`` cannot work here (None when the rviz2 executable is installed)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_prefix

    environ = os.environ if environ is None else environ
    try:
        prefix = get_package_prefix(RVIZ_PACKAGE)
    except (PackageNotFoundError, LookupError, ValueError):
        where = environ.get("AMENT_PREFIX_PATH", "") or "(AMENT_PREFIX_PATH is empty)"
        return (f"rviz:=true needs RViz 2, and the package {RVIZ_PACKAGE} is not installed here (searched "
                f"{where}). Install it (e.g. `sudo apt install ros-jazzy-rviz2`) or launch with rviz:=false")
    executable = os.path.join(prefix, "lib", RVIZ_PACKAGE, RVIZ_PACKAGE)
    if not os.access(executable, os.X_OK):
        return f"rviz:=true needs {executable}, which is missing or not executable: reinstall {RVIZ_PACKAGE}"
    return None


def node_exit_problem(name: str, returncode: int | None, shutting_down: bool) -> str | None:
    """Why the node's exit must fail the launch (None when it must not): any non-zero code that launch's own
    shutdown did not cause (a failed configure exits 1)."""
    if shutting_down or returncode == 0:
        return None
    return (f"{name} exited with code {returncode} (see its log above); ending the launch with a failure "
            "instead of leaving the rest running without perception")


LAUNCHED_ENV = "ENDOARSS_LAUNCHED"  # set by perception.launch.py for the node it starts


def parameter_hint(name: str, value: str, environ=None) -> str:
    """How a user sets parameter ``name`` where the node runs: a launch argument under ``ros2 launch``,
    ``-p`` otherwise."""
    environ = os.environ if environ is None else environ
    if environ.get(LAUNCHED_ENV):
        return f"{name}:={value} on the `ros2 launch` line"
    return f"-p {name}:={value}"


def launch_bool(value: str, argument: str) -> bool:
    """``value`` as launch's conditions read it (true/false/1/0, any case); ValueError naming the argument."""
    text = str(value).strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise ValueError(f"{argument}:={value!r} must be true or false (or 1 / 0, in any case)")


def _node_arguments() -> dict[str, str]:
    from endoarss_ros.ros.params import SPECS

    return {spec.name: spec.description for spec in SPECS}


NODE_ARGUMENTS = _node_arguments()  # node parameter -> its description; '' on the launch line: the params file's


def parameter_overrides(values: dict[str, str]) -> dict:
    """The node parameters set on the launch line (``values``: argument -> its text; '' is not set), typed as
    the node declares them: YAML as ``-p`` reads it, an integer where a double is declared made a double, a
    bool in any spelling ``launch_bool`` accepts. ValueError naming the argument when the text cannot be one."""
    from rcl_interfaces.msg import ParameterType

    from endoarss_ros.ros.params import SPEC_BY_NAME, validate

    STRING_ARRAY = ParameterType.PARAMETER_STRING_ARRAY

    overrides = {}
    for name, text in values.items():
        if name not in SPEC_BY_NAME or text == "":
            continue
        default = SPEC_BY_NAME[name].default
        if isinstance(default, bool):
            value = launch_bool(text, name)
        elif isinstance(default, str):
            value = text
        else:
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError as e:
                raise ValueError(f"{name}:={text!r} is not a value: {e}") from None
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, type(default)) or isinstance(value, bool):
                kind = {int: "an integer", float: "a number", list: "a list like [a, b]"}[type(default)]
                raise ValueError(f"{name}:={text!r} must be {kind}")
            if isinstance(value, list) and SPEC_BY_NAME[name].array_type == STRING_ARRAY:
                value = [str(item) for item in value]  # instruments.classes:=[1, 2]: ids, as the node takes them
        reason = validate(name, value)
        if reason is not None:
            raise ValueError(f"{name}:={text!r}: {reason}")
        overrides[name] = value
    return overrides


def misspelt_arguments(given: set[str], known: set[str]) -> list[str]:
    """One message per given argument this launch file does not have that is close to one it has (a typo like
    ``camera:=``), which launch itself would ignore. Other unknown names may belong to a parent launch file."""
    messages = []
    for name in sorted(given - known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
        if close:
            messages.append(f"unknown launch argument {name!r}: did you mean {close[0]!r}?")
    return messages


def empty_list_parameters_file(overrides: dict, directory: str | None = None) -> str | None:
    """The empty lists among ``overrides`` (``cameras:=[]``) written as a parameters file for every node, or None
    when there are none. launch_ros refuses an empty list in ``parameters`` (it cannot tell its type), while
    rcl reads one from a file and the node gives it the parameter's own array type (``params.declare_all``).
    Listed after the params file, it overrides that file's value, as any other launch argument does."""
    import tempfile

    empty = {name: [] for name, value in overrides.items() if isinstance(value, list) and not value}
    if not empty:
        return None
    with tempfile.NamedTemporaryFile("w", prefix="endoarss_empty_lists_", suffix=".yaml", dir=directory,
                                     delete=False) as f:
        yaml.safe_dump({"/**": {"ros__parameters": empty}}, f, default_flow_style=False)
    return f.name


def _launch_text(value) -> str:
    """``value`` as it is written on the launch line (YAML flow style; '' for an empty string)."""
    if isinstance(value, str):
        return value if value else "''"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def argument_default_text(name: str) -> str:
    """What ``--show-args`` shows as the default of node parameter ``name``: the node's own default, which is
    also config/perception.yaml's; left out on the launch line, the ``params_file``'s value stays."""
    from endoarss_ros.ros.params import SPEC_BY_NAME

    return f"{_launch_text(SPEC_BY_NAME[name].default)} (left out: the params_file's value)"


def argument_description(name: str) -> str:
    """``--show-args``'s description of node parameter ``name``; a list parameter's says how to write one."""
    from endoarss_ros.ros.params import SPEC_BY_NAME

    spec = SPEC_BY_NAME[name]
    text = f"(node parameter{', read-only' if spec.read_only else ''}) {spec.description}"
    if isinstance(spec.default, list):
        text += (f" On the launch line: \"{name}:=[a, b]\" (quoted for the shell; strings 'quoted' where YAML "
                 f"needs it); {name}:=[] sets the empty list.")
    return text


COLOUR_ENV = "RCUTILS_COLORIZED_OUTPUT"


def log_colour_env(is_terminal: bool, environ=None) -> dict[str, str]:
    """The environment for the node's log colours: launch runs the node on a pseudo-terminal (``emulate_tty``), so
    rcutils would colour its log even when launch's own output goes to a file or a pipe; there, no colour. A
    ``RCUTILS_COLORIZED_OUTPUT`` the user set is kept."""
    environ = os.environ if environ is None else environ
    if is_terminal or COLOUR_ENV in environ:
        return {}
    return {COLOUR_ENV: "0"}

"""What the node does with its parameter values besides declaring them (``params``): name the unknown ones given
at start, judge a live change (``ros2 param set``), and say why the values cannot be configured."""
from __future__ import annotations

import difflib

from endoarss_ros.ros import params


def warn_unknown_parameters(node, node_name: str) -> list[str]:
    """rclpy silently ignores a -p or params-file value for a name that is never declared (a typo like
    ``modle``): say so once, naming it and the parameters there are. Returns the unknown names."""
    known = sorted(node._parameters)
    unknown = sorted(set(node._parameter_overrides) - set(known))
    if unknown:
        hints = [f"{name!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(
            name, known, n=1)) else "") for name in unknown]
        node.get_logger().warning(
            f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(hints)} ignored; "
            f"the parameters of {node_name} are: {', '.join(known)}")
    return unknown


def current_values(node) -> dict:
    return {s.name: params.current_value(node, s.name) for s in params.SPECS}


def changed_settings(node, changed, seg_names: list[str] | None) -> tuple[params.Settings | None, str]:
    """The settings after a live change of ``changed`` (rclpy Parameters), or None and the reason it is refused.
    ``seg_names``: the loaded model's segmentation classes (None when no model is loaded), against which
    ``instruments.classes`` is checked."""
    for p in changed:
        reason = params.validate(p.name, p.value)
        if reason is not None:
            return None, reason
    values = current_values(node)
    values.update({p.name: p.value for p in changed})
    new = params.Settings.from_values(values)
    if seg_names is not None:
        from endoarss_ros.inference.instruments import resolve_classes

        try:
            resolve_classes(new.instruments.classes, seg_names)
        except ValueError as e:
            return None, str(e)
    return new, ""


def configure_problem(node) -> str | None:
    """Why the parameters cannot be configured (None when they can): values, device and precision."""
    values = current_values(node)
    for name, value in values.items():
        reason = params.validate(name, value)
        if reason is not None:
            return f"invalid parameter: {reason}"
    s = params.Settings.from_values(values)
    try:
        pairs = params.parse_stereo_pairs(list(s.stereo_pairs), s.cameras)
    except ValueError as e:
        return f"invalid parameter: {e}"
    if pairs and s.max_batch < 2:
        return "stereo_pairs needs max_batch >= 2: both views of a pair go through the model in one batch"
    from endoarss_ros.inference.engine import resolve_device

    try:
        device = resolve_device(s.device)
    except (RuntimeError, ValueError) as e:
        return f"device {s.device!r}: {e}"
    if s.precision != "fp32" and device.type != "cuda":
        where = "device:=auto found none here" if s.device == "auto" else f"device:={s.device}"
        return (f"precision {s.precision} needs a CUDA device, and {where} (it would run on {device}); "
                "set precision:=fp32, or device:=cuda on a machine with a GPU")
    return None


def unchanged_read_only(node, parameter) -> bool:
    """Whether ``parameter`` (an rclpy Parameter sent to the node) is a read-only one set to the value it has:
    ``ros2 param load`` of a dump sends every parameter, and those are no failure. A list compares by its items
    (a dump's ``[]`` comes back as whatever array type the client guessed)."""
    if not node.has_parameter(parameter.name) or not node.describe_parameter(parameter.name).read_only:
        return False
    (sent,) = params.typed_lists([parameter])
    current = node.get_parameter(parameter.name)
    if sent.type_ != current.type_:
        return False
    if sent.type_.name.endswith("_ARRAY"):
        return list(sent.value) == list(current.value)
    return sent.value == current.value

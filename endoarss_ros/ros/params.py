"""The perception node's parameters: one table of declarations, validation with reasons, typed settings.

Every parameter is declared up front with a ``ParameterDescriptor`` (type, range, read-only). Read-only ones
would need the model reloaded or the topics re-created: set them at start (``-p``, ``--params-file``).
The live ones can be changed at any time (``ros2 param set``); invalid values are rejected with a reason and
the old value stays.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from endoarss_ros.inference.frames import MAX_DECODE_PIXELS
from endoarss_ros.inference.instruments import InstrumentSettings
from endoarss_ros.inference.options import BACKENDS, PRECISIONS  # the engine's lists, in its fallback order
from endoarss_ros.inference.out_of_body import DEFAULT_OUT_OF_BODY_MODEL, OutOfBodySettings
from endoarss_ros.inference.smoother import DEFAULT_SMOOTHING, Smoothing
from endoarss_ros.inference.status import StatusThresholds
from endoarss_ros.inference.stream import StreamSettings
from endoarss_ros.inference.weights_path import DEFAULT_MODEL
from endoarss_ros.model.config import PATCH_SIZE

RELIABILITIES = ("best_effort", "reliable")
TRANSPORTS = ("raw", "compressed")
_DEVICE = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
_NAMESPACE = re.compile(r"^/?[A-Za-z_][A-Za-z0-9_]*(/[A-Za-z_][A-Za-z0-9_]*)*$")


@dataclass(frozen=True)
class Spec:
    name: str
    default: Any
    description: str
    read_only: bool = False
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    # Empty lists have no type of their own in ROS: say which array type the parameter is.
    array_type: int | None = None


SPECS: tuple[Spec, ...] = (
    Spec("autostart", True, "Walk the lifecycle to active at start (configure + activate), so plain "
         "`ros2 run` / launch just works. False: wait for a lifecycle manager.", read_only=True),
    Spec("model", DEFAULT_MODEL, "Weights file (.safetensors with its config, or a released checkpoint). "
         "Relative paths are resolved against the current directory, then the package share directory "
         "and the source tree.", read_only=True),
    Spec("temporal_model", "", "Temporal activity model (.safetensors from `endoarss train-temporal`) bound to "
         "`model`; '' publishes the frame-wise activity with EMA smoothing. A file that is missing, damaged or "
         "trained for another frame model fails configure.", read_only=True),
    Spec("device", "auto", "auto (CUDA when available, else CPU), cpu, cuda or cuda:N.", read_only=True),
    Spec("precision", "fp32", "Inference precision: fp32, fp16 or bf16 (fp16/bf16 on CUDA only).",
         read_only=True, choices=PRECISIONS),
    Spec("backend", "eager", "Inference backend: eager, compile, onnxruntime or tensorrt; one that cannot run "
         "here falls back (tensorrt -> compile -> onnxruntime -> eager) and diagnostics say which is in use.",
         read_only=True, choices=BACKENDS),
    Spec("engine_cache_dir", "", "Where compiled engines (TensorRT plans, ONNX files) are cached; '' is the "
         "engine's default cache directory.", read_only=True),
    Spec("input_size", [], "Working resolution [height, width] of the network, multiples of 14; "
         "[] or [0, 0] keeps the one stored with the model.", read_only=True,
         array_type=ParameterType.PARAMETER_INTEGER_ARRAY),
    Spec("class_names_file", "", "YAML file with `segmentation:` and `activity:` name lists replacing the "
         "model's class names in the published messages; '' keeps the model's.", read_only=True),
    Spec("max_batch", 2, "Most frames (one per camera) run through the model together.", read_only=True,
         int_range=(1, 16)),
    Spec("warmup_size", [1080, 1920], "Image size [height, width] run once at configure so the first real "
         "frame is not slow; [] or [0, 0] skips the warm-up.", read_only=True,
         array_type=ParameterType.PARAMETER_INTEGER_ARRAY),
    Spec("max_input_pixels", 3840 * 2160, "Frames with more pixels (width * height) are rejected "
         "(reason too_large) before any copy or decoding.", int_range=(1, MAX_DECODE_PIXELS)),
    Spec("overlay_alpha", 0.5, "Opacity of the class colours on segmentation/overlay (0: the image, "
         "1: colours only).", float_range=(0.0, 1.0)),
    Spec("overlay_annotations", True, "Draw each instrument's box, axis, tip and id, the activity, the frame's "
         "status and a class legend on segmentation/overlay; false: the colour blend alone."),
    Spec("smoothing.enabled", DEFAULT_SMOOTHING.enabled, "Smooth the activity over time (EMA with hysteresis); "
         "false publishes each frame's own result."),
    Spec("smoothing.alpha", DEFAULT_SMOOTHING.alpha, "EMA weight of the newest frame (1: no memory).",
         float_range=(0.01, 1.0)),
    Spec("smoothing.hysteresis", DEFAULT_SMOOTHING.hysteresis, "Margin by which a new activity must beat the "
         "current one before the label switches.", float_range=(0.0, 1.0)),
    Spec("batch_window_ms", 5.0, "After the first camera's frame arrives, wait this long for the other "
         "cameras' frames so they share a batch.", float_range=(0.0, 100.0)),
    Spec("input_qos.reliability", "best_effort", "Input subscription reliability. best_effort (sensor "
         "data) matches every publisher; reliable does not match best-effort publishers.", read_only=True,
         choices=RELIABILITIES),
    Spec("input_qos.depth", 1, "Input subscription history depth (the node keeps only the newest frame anyway).",
         read_only=True, int_range=(1, 100)),
    Spec("output_qos.reliability", "reliable", "Output reliability (reliable: what RViz and the CLI expect).",
         read_only=True, choices=RELIABILITIES),
    Spec("output_qos.depth", 5, "Output history depth.", read_only=True, int_range=(1, 100)),
    Spec("cameras", [], "Several cameras through one model: each entry 'NS' or 'INPUT_NS:OUTPUT_NS'. "
         "Camera i subscribes INPUT_NS/image and publishes under OUTPUT_NS. [] is one camera: `image` in, "
         "outputs in the node's namespace.", read_only=True, array_type=ParameterType.PARAMETER_STRING_ARRAY),
    Spec("image_transport", "raw", "raw: sensor_msgs/Image on <in>/image; compressed: "
         "sensor_msgs/CompressedImage (jpeg, png) on <in>/image/compressed.", read_only=True, choices=TRANSPORTS),
    # 3D (issue 25): camera_info is always subscribed beside each image, on <in>/camera_info
    Spec("image_name", "image", "Name of the image topic in each camera's input namespace: <in>/image_name, e.g. "
         "image_raw (a dVRK or camera driver's name) or image_rect; camera_info is always <in>/camera_info.",
         read_only=True),
    Spec("rectified_input", False, "The images are rectified (image_rect): camera_info's P alone maps their "
         "pixels; D and R are not applied.", read_only=True),
    Spec("stereo_pairs", [], "Stereo pairs among the cameras: entries 'LEFT:RIGHT', each side a camera of "
         "`cameras` by its namespace (as written there, input or output) or its index. A pair's frames are "
         "matched by stamp, go through the model in one batch and are published with the LEFT camera's outputs "
         "(instruments with 3D fields, markers, disparity); the RIGHT camera publishes no results of its own.",
         read_only=True, array_type=ParameterType.PARAMETER_STRING_ARRAY),
    Spec("stereo.tolerance_ms", 0.0, "A left and a right frame pair when their stamps differ by at most this "
         "(0: equal stamps, hardware-synchronised cameras) and each is the other's nearest frame; never across "
         "a missing frame.", read_only=True, float_range=(0.0, 1000.0)),
    Spec("stereo.max_wait_ms", 100.0, "A stereo frame whose partner has not come once frames this much newer "
         "(in stamp time) have arrived is processed alone (2D, or viewing rays with camera_info) and counted "
         "unmatched.", read_only=True, float_range=(0.0, 10000.0)),
)
_INSTRUMENTS = InstrumentSettings()
SPECS += tuple(
    Spec(f"status.{name}", default, description, float_range=float_range)
    for name in StatusThresholds.names() for default, float_range, description in [StatusThresholds.spec(name)]
) + (
    Spec("instruments.classes", [], "Segmentation classes (names or ids) reported on `instruments`; [] takes "
         "them from the model's class names (MTLESD: FPCW Forceps, FPCW Knife, Electric Knife).",
         array_type=ParameterType.PARAMETER_STRING_ARRAY),
    Spec("instruments.min_area_fraction", _INSTRUMENTS.min_area_fraction, "Smallest instrument region, as a "
         "fraction of the frame.", float_range=(0.0, 1.0)),
    Spec("instruments.max_match_distance", _INSTRUMENTS.max_match_distance, "An instrument keeps its id when "
         "its centroid moved less than this fraction of the image diagonal since it was last seen.",
         float_range=(0.0, 1.0)),
    Spec("instruments.max_missed_frames", _INSTRUMENTS.max_missed_frames, "Frames an instrument may go unseen "
         "and keep its id.", int_range=(0, 1000)),
)
_OUT_OF_BODY = OutOfBodySettings()
SPECS += (
    Spec("privacy_gate", _OUT_OF_BODY.privacy_gate, "Blank segmentation/overlay and segmentation/mask (all zero) "
         "while the camera is out of body or a frame got no out-of-body decision; false turns the gate off "
         "(only for video that never leaves the operating room).", read_only=True),
    Spec("out_of_body.model", DEFAULT_OUT_OF_BODY_MODEL, "Out-of-body detector weights (.safetensors from "
         "`endoarss train-oob`); a missing or damaged file fails configure. '' runs without out-of-body "
         "detection (out_of_body never set), which needs privacy_gate false.", read_only=True),
    Spec("out_of_body.threshold", _OUT_OF_BODY.threshold, "A frame scored at or over this P(out of body) puts "
         "the camera out of body at once.", float_range=(0.01, 0.99)),
    Spec("out_of_body.exit_frames", _OUT_OF_BODY.exit_frames, "In-body frames in a row needed to leave the "
         "out-of-body state.", int_range=(1, 1000)),
)
SPEC_BY_NAME = {s.name: s for s in SPECS}


def descriptor(spec: Spec) -> ParameterDescriptor:
    d = ParameterDescriptor(name=spec.name, description=spec.description, read_only=spec.read_only)
    if spec.array_type is not None:
        d.type = spec.array_type
    if spec.int_range is not None:
        d.integer_range = [IntegerRange(from_value=spec.int_range[0], to_value=spec.int_range[1], step=0)]
    if spec.float_range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=spec.float_range[0],
                                                     to_value=spec.float_range[1], step=0.0)]
    if spec.choices is not None:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    return d


_ARRAY_TYPES = {ParameterType.PARAMETER_INTEGER_ARRAY: "INTEGER_ARRAY",
                ParameterType.PARAMETER_STRING_ARRAY: "STRING_ARRAY"}


def declare_all(node) -> None:
    """Declare every parameter with its descriptor (before anything reads them).

    Every parameter gets a value, also an empty list: a parameter declared by type alone is "not set" to ROS,
    and every tool that fetches all parameters (``ros2 param dump``, rqt_reconfigure) would see none of them.
    rclpy infers a list's type from its elements, so an empty one is set with the parameter's array type."""
    from rclpy.parameter import Parameter

    overrides = node._parameter_overrides  # rclpy's start values (-p, params files), typed as the node takes them
    for name, p in list(overrides.items()):
        overrides[name] = typed_lists([p])[0] if p.type_ != Parameter.Type.NOT_SET else p
    for spec in SPECS:
        default = spec.default
        array_type = Parameter.Type[_ARRAY_TYPES[spec.array_type]] if spec.array_type is not None else None
        if array_type is not None and not default:
            default = array_type
        d = descriptor(spec)
        declared = node.declare_parameter(spec.name, default, d)
        if array_type is not None and declared.type_ == Parameter.Type.NOT_SET:  # [] by default or override
            node._set_parameters_atomically_common([Parameter(spec.name, array_type, [])], {spec.name: d})


def typed_lists(parameters: list) -> list:
    """A pre-set-parameters callback (``declare_all`` applies it to the start values too): a list arrives typed by
    whoever sent it. ``ros2 param set ... "[]"`` sends a bool array: an empty list gets the parameter's own array
    type, so the default ``[]`` can be set again; ``"[1, 2]"`` sends integers: a string array of names or ids
    (``instruments.classes``) gets their text."""
    from rclpy.parameter import Parameter

    string_array = Parameter.Type.STRING_ARRAY
    out = []
    for p in parameters:
        spec = SPEC_BY_NAME.get(p.name)
        if spec is not None and spec.array_type is not None and p.type_.name.endswith("_ARRAY"):
            if len(p.value) == 0:
                p = Parameter(p.name, Parameter.Type[_ARRAY_TYPES[spec.array_type]], [])
            elif spec.array_type == string_array.value and p.type_ == Parameter.Type.INTEGER_ARRAY:
                p = Parameter(p.name, string_array, [str(v) for v in p.value])
        out.append(p)
    return out


def validate(name: str, value: Any) -> str | None:
    """Why ``value`` is not acceptable for ``name`` (None when it is). Ranges are checked by rclpy too."""
    spec = SPEC_BY_NAME.get(name)
    if spec is None:
        return None
    if spec.choices is not None and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, not {value!r}"
    if spec.int_range is not None and not spec.int_range[0] <= value <= spec.int_range[1]:
        return f"{name} must be in [{spec.int_range[0]}, {spec.int_range[1]}], not {value}"
    if spec.float_range is not None and not spec.float_range[0] <= value <= spec.float_range[1]:
        return f"{name} must be in [{spec.float_range[0]}, {spec.float_range[1]}], not {value}"
    if name == "device" and not _DEVICE.match(value):
        return f"device must be auto, cpu, cuda or cuda:N, not {value!r}"
    if name == "model" and not value.strip():
        return "model must name a weights file"
    if name in ("input_size", "warmup_size"):
        values = list(value)
        if values == [0, 0]:
            return None
        if values and (len(values) != 2 or min(values) <= 0):
            return f"{name} must be [height, width] with positive values ([] or [0, 0]: none), not {values}"
        if name == "input_size" and values and any(v % PATCH_SIZE for v in values):
            return f"input_size must be multiples of {PATCH_SIZE} (the ViT patch), not {values}"
    if name == "cameras":
        try:
            parse_cameras(list(value))
        except ValueError as e:
            return str(e)
    if name == "image_name" and not _NAMESPACE.match(value.strip("/") or "?"):
        return f"image_name must be a topic name like image_raw, not {value!r}"
    return None


@dataclass(frozen=True)
class Camera:
    """One input: frames on ``<input_ns>/image``, results under ``<output_ns>/`` ('' = the node's namespace)."""
    index: int
    input_ns: str
    output_ns: str

    def input_topic(self, name: str) -> str:
        return f"{self.input_ns.rstrip('/')}/{name}" if self.input_ns else name

    def output_topic(self, name: str) -> str:
        return f"{self.output_ns.rstrip('/')}/{name}" if self.output_ns else name

    @property
    def label(self) -> str:
        return self.output_ns or self.input_ns or "image"


def parse_cameras(entries: list[str]) -> list[Camera]:
    if not entries:
        return [Camera(0, "", "")]
    cameras = []
    for i, entry in enumerate(entries):
        parts = entry.split(":")
        if len(parts) > 2:
            raise ValueError(f"cameras[{i}] {entry!r}: use 'NS' or 'INPUT_NS:OUTPUT_NS'")
        input_ns, output_ns = (parts[0], parts[0]) if len(parts) == 1 else parts
        for ns in (input_ns, output_ns):
            if not _NAMESPACE.match(ns):
                raise ValueError(f"cameras[{i}] {entry!r}: {ns!r} is not a valid namespace")
        cameras.append(Camera(i, input_ns, output_ns))
    outputs = [c.output_ns for c in cameras]
    if len(set(outputs)) != len(outputs):
        raise ValueError(f"cameras: two cameras publish into the same namespace: {entries}")
    return cameras


def parse_stereo_pairs(entries: list[str], cameras: list[Camera]) -> list[tuple[int, int]]:
    """``stereo_pairs`` entries 'LEFT:RIGHT' -> (left index, right index) into ``cameras``; ValueError naming the
    entry that does not resolve (unknown, ambiguous, the same camera twice, a camera in two pairs)."""
    def resolve(i: int, entry: str, name: str) -> int:
        if name.isdigit():
            if int(name) < len(cameras):
                return int(name)
            raise ValueError(f"stereo_pairs[{i}] {entry!r}: there is no camera {name} ({len(cameras)} camera(s))")
        found = {c.index for c in cameras if name.strip("/") in (c.input_ns.strip("/"), c.output_ns.strip("/"))}
        if len(found) != 1:
            names = ", ".join(repr(c.label) for c in cameras)
            why = "names several cameras" if found else "is not a camera"
            raise ValueError(f"stereo_pairs[{i}] {entry!r}: {name!r} {why} (cameras: {names}; set `cameras` to "
                             "list both, e.g. ['/endoscope/left:left', '/endoscope/right:right'])")
        return found.pop()

    pairs, used = [], set()
    for i, entry in enumerate(entries):
        parts = [p.strip() for p in str(entry).split(":")]
        if len(parts) != 2 or not all(parts):
            raise ValueError(f"stereo_pairs[{i}] {entry!r}: use 'LEFT:RIGHT' (camera namespaces or indices)")
        left, right = resolve(i, entry, parts[0]), resolve(i, entry, parts[1])
        if left == right or {left, right} & used:
            raise ValueError(f"stereo_pairs[{i}] {entry!r}: a camera can be in one pair, on one side only")
        used |= {left, right}
        pairs.append((left, right))
    return pairs


@dataclass
class Settings:
    """The parameters' values, typed, as the node uses them (defaults live in ``SPECS`` alone)."""
    autostart: bool
    model: str
    temporal_model: str
    device: str
    precision: str
    backend: str
    engine_cache_dir: str
    input_size: tuple[int, int] | None
    class_names_file: str
    max_batch: int
    warmup_size: tuple[int, int] | None
    max_input_pixels: int
    overlay_alpha: float
    overlay_annotations: bool
    smoothing_enabled: bool
    smoothing_alpha: float
    smoothing_hysteresis: float
    batch_window_ms: float
    input_reliability: str
    input_depth: int
    output_reliability: str
    output_depth: int
    cameras: list[Camera]
    image_transport: str
    image_name: str
    rectified_input: bool
    stereo_pairs: tuple[str, ...]  # as given; ``parse_stereo_pairs`` resolves them against ``cameras``
    stereo_tolerance_ms: float
    stereo_max_wait_ms: float
    thresholds: StatusThresholds
    instruments: InstrumentSettings
    out_of_body_model: str = DEFAULT_OUT_OF_BODY_MODEL
    out_of_body: OutOfBodySettings = OutOfBodySettings()

    @property
    def smoothing(self) -> Smoothing:
        return Smoothing(self.smoothing_enabled, self.smoothing_alpha, self.smoothing_hysteresis)

    @property
    def stream(self) -> StreamSettings:
        """What each camera's ``CameraStream`` runs with."""
        return StreamSettings(self.smoothing, self.thresholds, self.instruments, self.overlay_annotations)

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> Settings:
        def size(v):
            v = [int(x) for x in (v or [])]
            return (v[0], v[1]) if v and any(v) else None

        return cls(
            autostart=bool(values["autostart"]), model=values["model"], temporal_model=values["temporal_model"],
            device=values["device"],
            precision=values["precision"], backend=values["backend"],
            engine_cache_dir=values["engine_cache_dir"], input_size=size(values["input_size"]),
            class_names_file=values["class_names_file"], max_batch=int(values["max_batch"]),
            warmup_size=size(values["warmup_size"]), max_input_pixels=int(values["max_input_pixels"]),
            overlay_alpha=float(values["overlay_alpha"]), overlay_annotations=bool(values["overlay_annotations"]),
            smoothing_enabled=bool(values["smoothing.enabled"]),
            smoothing_alpha=float(values["smoothing.alpha"]),
            smoothing_hysteresis=float(values["smoothing.hysteresis"]),
            batch_window_ms=float(values["batch_window_ms"]),
            input_reliability=values["input_qos.reliability"], input_depth=int(values["input_qos.depth"]),
            output_reliability=values["output_qos.reliability"], output_depth=int(values["output_qos.depth"]),
            cameras=parse_cameras(list(values["cameras"] or [])), image_transport=values["image_transport"],
            image_name=values["image_name"].strip("/"), rectified_input=bool(values["rectified_input"]),
            stereo_pairs=tuple(values["stereo_pairs"] or ()),
            stereo_tolerance_ms=float(values["stereo.tolerance_ms"]),
            stereo_max_wait_ms=float(values["stereo.max_wait_ms"]),
            thresholds=StatusThresholds().updated(**{n: values[f"status.{n}"] for n in StatusThresholds.names()}),
            instruments=InstrumentSettings(
                classes=tuple(values["instruments.classes"] or ()),
                min_area_fraction=float(values["instruments.min_area_fraction"]),
                max_match_distance=float(values["instruments.max_match_distance"]),
                max_missed_frames=int(values["instruments.max_missed_frames"])),
            out_of_body_model=values["out_of_body.model"],
            out_of_body=OutOfBodySettings(float(values["out_of_body.threshold"]),
                                          int(values["out_of_body.exit_frames"]), bool(values["privacy_gate"])),
        )

    @classmethod
    def from_node(cls, node) -> Settings:
        return cls.from_values({s.name: current_value(node, s.name) for s in SPECS})


def current_value(node, name: str) -> Any:
    """A parameter's value (every one has a value: see ``declare_all``)."""
    return node.get_parameter(name).value


def load_class_names(path: str, seg_count: int, activity_count: int) -> tuple[list[str] | None, list[str] | None]:
    """Read a class names file; raise ValueError naming the file and what is wrong."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"class_names_file {path}: cannot read it ({e.strerror or e})") from e
    except yaml.YAMLError as e:
        raise ValueError(f"class_names_file {path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ValueError(f"class_names_file {path}: expected a mapping with 'segmentation' and/or 'activity'")
    out = []
    for key, count in (("segmentation", seg_count), ("activity", activity_count)):
        names = data.get(key)
        if names is None:
            out.append(None)
            continue
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names_file {path}: '{key}' must be a list of names")
        if len(names) != count:
            raise ValueError(f"class_names_file {path}: '{key}' has {len(names)} names, the model has {count} classes")
        out.append(names)
    return out[0], out[1]

"""The perception node's parts without a running node: parameters, newest-frame slots + worker, diagnostics,
output conversions, the launch files parse."""
from __future__ import annotations

import threading
import time

from test.conftest import REPO, requires_ros

pytestmark = requires_ros


def test_validation_gives_reasons_and_accepts_defaults():
    from endoarss_ros.ros import params

    for spec in params.SPECS:
        assert params.validate(spec.name, spec.default) is None, spec.name
    assert "one of" in params.validate("precision", "fp8")
    assert "cuda:N" in params.validate("device", "gpu0")
    assert params.validate("device", "cuda:1") is None
    assert "[0.0, 1.0]" in params.validate("overlay_alpha", 1.5)
    assert "multiples of 14" in params.validate("input_size", [225, 224])
    assert params.validate("input_size", [0, 0]) is None
    assert "INPUT_NS:OUTPUT_NS" in params.validate("cameras", ["a:b:c"])
    assert "same namespace" in params.validate("cameras", ["left:x", "right:x"])
    assert "not a valid namespace" in params.validate("cameras", ["left camera"])


def test_cameras_give_input_and_output_topics():
    from endoarss_ros.ros.params import parse_cameras

    (single,) = parse_cameras([])
    assert single.input_topic("image") == "image" and single.output_topic("activity") == "activity"
    left, right = parse_cameras(["/endoscope/left:left", "right"])
    assert left.input_topic("image") == "/endoscope/left/image"
    assert left.output_topic("segmentation/mask") == "left/segmentation/mask"
    assert right.input_topic("image/compressed") == "right/image/compressed"


def _flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_params_file_matches_the_declarations_both_ways():
    """config/perception.yaml sets exactly the declared parameters, each to its declared default (so the file
    cannot drift from the node); the two without a default value (empty lists) appear as commented examples."""
    import re

    import yaml

    from endoarss_ros.ros import params

    text = (REPO / "config" / "perception.yaml").read_text()
    (section,) = yaml.safe_load(text).values()
    values = _flatten(section["ros__parameters"])
    declared = {s.name: s for s in params.SPECS}
    assert set(values) <= set(declared), f"not parameters of the node: {sorted(set(values) - set(declared))}"
    for name, value in values.items():
        assert value == declared[name].default, f"{name}: the file says {value!r}, the node {declared[name].default!r}"
        assert params.validate(name, value) is None
    commented = set(re.findall(r"^\s*#\s*([a-z_.]+):", text, re.MULTILINE))
    missing = set(declared) - set(values) - commented
    assert not missing, f"declared but not in config/perception.yaml: {sorted(missing)}"
    for name in set(declared) - set(values):
        assert declared[name].default == [], f"{name} has a default but the file only comments it"


def test_the_params_file_shows_the_declared_defaults():
    """config/perception.yaml documents the defaults: its values are the declared ones (the status thresholds'
    defaults live in inference.status.StatusThresholds, the file must follow them)."""
    import yaml

    from endoarss_ros.ros import params

    (node,) = yaml.safe_load((REPO / "config" / "perception.yaml").read_text()).values()

    def flat(tree, prefix=""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield prefix + key, value

    values = dict(flat(node["ros__parameters"]))
    assert {n for n in params.SPEC_BY_NAME if n.startswith(("status.", "instruments."))} <= set(values)
    for name, value in values.items():
        assert value == params.SPEC_BY_NAME[name].default, name


def test_slots_keep_the_newest_frame_and_count_replaced_ones():
    from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame

    replaced = []
    slots = LatestFrameSlots(2, on_replaced=replaced.append)
    for i in range(5):
        slots.put(PendingFrame(0, f"m{i}", None, 0.0))
    slots.put(PendingFrame(1, "r0", None, 0.0))
    taken = slots.take(timeout=0.1)
    assert [t.message for t in taken] == ["m4", "r0"]
    assert [r.message for r in replaced] == ["m0", "m1", "m2", "m3"]
    assert slots.take(timeout=0.05) == []


def test_slots_batch_window_waits_for_the_other_camera():
    from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame

    slots = LatestFrameSlots(2)
    slots.put(PendingFrame(0, "left", None, 0.0))
    threading.Timer(0.05, lambda: slots.put(PendingFrame(1, "right", None, 0.0))).start()
    taken = slots.take(timeout=1.0, batch_window=0.5)
    assert [t.message for t in taken] == ["left", "right"]


def test_worker_survives_an_exception_and_serves_the_next_frame():
    from endoarss_ros.ros.frame_slot import LatestFrameSlots, PendingFrame, Worker

    done, errors = [], []

    def process(batch):
        if batch[0].message == "boom":
            raise MemoryError("CUDA out of memory (simulated)")
        done.append(batch[0].message)

    slots = LatestFrameSlots(1)
    worker = Worker(slots, process, lambda e, b: errors.append(str(e)))
    worker.start()
    slots.put(PendingFrame(0, "boom", None, 0.0))
    deadline = time.monotonic() + 5
    while not errors and time.monotonic() < deadline:
        time.sleep(0.01)
    slots.put(PendingFrame(0, "good", None, 0.0))
    while not done and time.monotonic() < deadline:
        time.sleep(0.01)
    assert worker.stop()
    assert errors == ["CUDA out of memory (simulated)"] and done == ["good"]


def test_diagnostics_report_counters_rates_and_latency():
    from builtin_interfaces.msg import Time
    from diagnostic_msgs.msg import DiagnosticStatus

    from endoarss_ros.ros.diagnostics import NodeStats, to_diagnostic_array

    stats = NodeStats()
    for i in range(10):
        stats.received()
        stats.published(latency_ms=10.0 + i, inference_ms=5.0)
    stats.rejected("truncated_data")
    stats.dropped("replaced", 3)
    array = to_diagnostic_array(stats, name="endoarss_perception: /endoarss/endoarss_perception", hardware_id="cpu",
                                stamp=Time(), active=True,
                                info={"model": "tiny.safetensors", "device": "cpu", "lifecycle_state": "active"})
    (status,) = array.status
    values = {kv.key: kv.value for kv in status.values}
    assert status.level == DiagnosticStatus.OK
    assert values["frames.received"] == "10" and values["frames.published"] == "10"
    assert values["rejected.truncated_data"] == "1" and values["rejected.total"] == "1"
    assert values["rejected.corrupt_compressed"] == "0"
    assert values["dropped.replaced"] == "3" and values["errors.inference"] == "0"
    assert float(values["latency_p50_ms"]) == 15.0 and float(values["latency_p95_ms"]) == 19.0
    assert values["model"] == "tiny.safetensors" and values["device"] == "cpu"


def test_sequence_gaps_count_skipped_frames_of_one_publisher():
    from endoarss_ros.ros.input_loss import SequenceGaps

    gaps = SequenceGaps()
    assert [gaps.lost(n, 1) for n in (5, 6, 9, 10, 20)] == [0, 0, 2, 0, 9]  # the first one is the baseline
    assert gaps.lost(3, 1) == 0  # a restarted publisher starts again
    assert gaps.lost(5, 1) == 1
    assert gaps.lost(9, 2) is None  # two publishers interleave their numbers: not countable
    assert gaps.lost(12, 1) == 0  # back to one: a new baseline, no gap invented across the pause
    assert gaps.lost(None, 1) is None  # a middleware without sequence numbers


def test_a_params_file_as_launch_ros_writes_it_passes_the_pre_check(tmp_path):
    """launch_ros writes a list parameter of a launch Node as `!!python/tuple`; rcl reads it as a list, and so
    must the node's own check of the file (it refused every launch with `cameras:=[...]`)."""
    from endoarss_ros.ros.perception_node import params_file_problem

    launch_written = tmp_path / "launch_params_x"
    launch_written.write_text("/endoarss/endoarss_perception:\n  ros__parameters:\n    cameras: !!python/tuple\n"
                              "    - left\n    - right\n")
    assert params_file_problem(["--ros-args", "--params-file", str(launch_written)]) is None
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("/**:\n  ros__parameters:\n    x: !!python/object/apply:os.system ['true']\n")
    assert "is not valid YAML" in params_file_problem(["--ros-args", "--params-file", str(unsafe)])

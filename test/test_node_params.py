"""Every parameter of the node has a value that tools can fetch, and what they fetch reproduces the node: real
node processes, asked over ROS as `ros2 param dump` asks (list_parameters, then get_parameters for all)."""
from __future__ import annotations

import pytest
import yaml

from test.conftest import requires_ros
from test.test_node_ros import probe, start_node, tiny_model  # noqa: F401 (fixtures)

pytestmark = [requires_ros, pytest.mark.ros]

STRING_ARRAY, BOOL_ARRAY = 9, 6  # rcl_interfaces ParameterType


def _as_dump_file(path, node_name: str, values: dict) -> str:
    """``values`` written as `ros2 param dump` writes them: nested at each '.', under the node's full name."""
    nested: dict = {}
    for name, value in values.items():
        *parents, leaf = name.split(".")
        where = nested
        for part in parents:
            where = where.setdefault(part, {})
        where[leaf] = value
    path.write_text(yaml.safe_dump({node_name: {"ros__parameters": nested}}))
    return str(path)


def test_a_dump_has_every_parameter_and_fed_back_reproduces_the_node(start_node, probe, tmp_path):  # noqa: F811
    from endoarss_ros.ros.params import SPECS

    first = start_node("cameras:=['left', 'right']", "overlay_alpha:=0.25", "warmup_size:=[112, 140]",
                       "instruments.max_missed_frames:=7", autostart=False)
    dump = probe(first, [{"op": "dump_params"}])["steps"][0]
    names = {spec.name for spec in SPECS}
    assert names <= set(dump["names"])
    assert set(dump["values"]) == set(dump["names"]), "get_parameters left some listed parameters out"
    assert [n for n, t in dump["types"].items() if t == 0] == [], "parameters without a value"
    values = dump["values"]
    assert values["cameras"] == ["left", "right"] and values["warmup_size"] == [112, 140]
    assert values["input_size"] == [] and values["instruments.classes"] == []
    assert values["overlay_alpha"] == 0.25 and values["instruments.max_missed_frames"] == 7

    params_file = _as_dump_file(tmp_path / "dump.yaml", first.name, values)
    assert first.stop() == 0
    second = start_node(autostart=False, ros_args=["--params-file", params_file], ns=first.ns)
    second_dump = probe(second, [{"op": "dump_params"}])["steps"][0]
    assert second_dump["values"] == values
    assert second_dump["types"] == dump["types"]  # [] comes back a string or integer array, as declared
    assert "unknown parameter" not in second.output()


def test_an_emptied_list_parameter_can_be_set_back_to_its_default(start_node, probe):  # noqa: F811
    """`ros2 param set NODE instruments.classes "[]"` sends an empty *bool* array: it must still restore []."""
    node = start_node(autostart=False)
    steps = probe(node, [
        {"op": "set_params", "params": {"instruments.classes": ["FPCW Forceps"]}},
        {"op": "set_params", "params": {"instruments.classes": {"type": "bool_array", "value": []}}},
        {"op": "get_params", "names": ["instruments.classes"]},
        {"op": "set_params", "params": {"instruments.classes": {"type": "bool_array", "value": [True]}}},
    ])["steps"]
    assert steps[0]["results"] == [{"successful": True, "reason": ""}]
    assert steps[1]["results"] == [{"successful": True, "reason": ""}]
    assert steps[2]["values"] == {"instruments.classes": []} and steps[2]["types"]["instruments.classes"] == \
        STRING_ARRAY
    assert steps[3]["results"][0]["successful"] is False  # a non-empty bool array is still the wrong type

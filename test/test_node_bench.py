"""bench_ros.measure: publisher -> node -> subscriber and publisher -> relay -> subscriber, separate processes."""
import pytest

from test.conftest import requires_ros

pytestmark = [requires_ros, pytest.mark.ros]


def test_measure_reports_node_and_transport_latency(tmp_path, monkeypatch):
    from endoarss_ros.model import ModelConfig, build_model, save_model
    from endoarss_ros.tools.bench import bench_ros

    monkeypatch.delenv("_ROS_WHEELS_BOOTSTRAP_COMPLETE", raising=False)
    model = save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path / "tiny")
    result = bench_ros.measure(model, frames=15, width=640, height=480, rate=5.0, device="cpu", timeout=120)
    node, transport = result["node"], result["transport"]
    assert node["frames_in"] == 15 and transport["frames_in"] == 15
    assert 1 <= node["frames_out"] <= 15 and 1 <= transport["frames_out"] <= 15
    for part in (node, transport):
        assert 0 < part["latency_ms"]["p50"] <= part["latency_ms"]["p95"]
    print(result)

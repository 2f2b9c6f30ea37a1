"""PerceptionStatus and InstrumentArray from the running node: a real rclpy node process driven by the probe
process (test/node_probe.py). The first two tests run the demo weights on synthetic frames whose instrument
tips the renderer knows; the third a tiny random model (only the status's timing and accounting matter there)."""
from __future__ import annotations

import math

import numpy as np
import pytest

from test import test_node_ros as node_tests
from test.conftest import REPO, requires_ros

READY = node_tests.READY
start_node, probe, tiny_model = node_tests.start_node, node_tests.probe, node_tests.tiny_model  # the fixtures

pytestmark = [requires_ros, pytest.mark.ros]

DEMO = str(REPO / "models" / "demo" / "endoarss_demo.safetensors")
SIZE = (256, 320)
NAMED = {"gaussian_noise": "NOISE", "gaussian_blur": "BLUR", "jpeg": "COMPRESSION_ARTIFACTS",
         "smoke": "SMOKE_OR_HAZE", "blood": "BLOOD_OR_SOILING"}


@pytest.fixture(scope="module")
def marking_frames(tmp_path_factory):
    """Eight frames of a synthetic recording (Marking: the electric knife moves between the marks), without the
    scene's own smoke and blood, their truth, and corrupted copies of two of them, in an .npz for the probe."""
    from endoarss_ros.data.corruptions import CORRUPTIONS
    from endoarss_ros.data.synth import generate_sequence

    frames = list(generate_sequence(21, 8, fps=5, size=SIZE, smoke=False, blood=False))
    assert {f.activity for f in frames} == {0}
    images = {f"clean{i}": f.rgb for i, f in enumerate(frames)}
    for name in NAMED:
        for i in (0, 1):
            images[f"{name}{i}"] = CORRUPTIONS[name](frames[i].rgb, 3, np.random.default_rng([3, i]))
    path = tmp_path_factory.mktemp("frames") / "frames.npz"
    np.savez(path, **images)
    return str(path), frames


def _by_stamp(records):
    out = {}
    for r in records:
        assert r["stamp"] not in out, f"two messages for stamp {r['stamp']}"
        out[r["stamp"]] = r
    return out


def _flag(name: str) -> int:
    from endoarss_ros.msg import PerceptionStatus

    return getattr(PerceptionStatus, name)


@pytest.mark.slow
def test_clean_stream_is_usable_with_stable_instrument_ids_and_tips_near_the_truth(start_node, probe,
                                                                                   marking_frames):
    path, frames = marking_frames
    node = start_node("warmup_size:=[256, 320]", "smoothing.enabled:=false", model=DEMO)
    specs = [{"image_file": path, "key": f"clean{i}", "tag": i} for i in range(len(frames))]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": specs},
                          {"op": "diagnostics", "wait": 2.5}])
    status, instruments = _by_stamp(result["received"]["status"]), _by_stamp(result["received"]["instruments"])
    diagonal = math.hypot(*SIZE)
    ids, errors = set(), []
    for sent in result["sent"]:
        s = status[sent["stamp"]]
        assert s["usable"] and s["flags"] == 0 and s["reasons"] == [] and s["processed"], s
        assert s["age_ms"] > 0 and s["processing_ms"] > 0 and 0 <= s["low_confidence_fraction"] <= 1
        assert s["sharpness"] > 1.2 and 0 < s["brightness"] < 1 and s["tissue_fraction"] > 0.5
        array = instruments[sent["stamp"]]
        assert (array["width"], array["height"]) == (SIZE[1], SIZE[0])
        (truth,) = frames[sent["tag"]].instruments
        knives = [i for i in array["instruments"] if i["class_id"] == truth.class_id]
        assert len(knives) == 1, array["instruments"]
        knife = knives[0]
        assert knife["label"] == "Electric Knife" and knife["entry_at_view_edge"] and knife["confidence"] > 0.5
        ids.add(knife["id"])
        errors.append(math.dist((knife["tip"]["x"], knife["tip"]["y"]), truth.tip) / diagonal)
        bx, by, bw, bh = (knife["bbox"][k] for k in ("x_offset", "y_offset", "width", "height"))
        assert bx <= knife["tip"]["x"] <= bx + bw and by <= knife["tip"]["y"] <= by + bh
    assert len(ids) == 1, f"the knife changed id: {ids}"
    assert max(errors) < 0.03, f"tip errors (fraction of the diagonal): {errors}"
    diag = result["diagnostics"]
    assert diag["status.published"] == str(len(frames)) and diag["status.usable"] == str(len(frames))
    assert diag["status.usable_fraction"] == "1.00" and diag["status.flag.STALE"] == "0"


@pytest.mark.slow
def test_corrupted_and_rejected_frames_are_flagged_with_their_reasons(start_node, probe, marking_frames):
    path, _ = marking_frames
    node = start_node("warmup_size:=[256, 320]", model=DEMO)
    specs = [{"image_file": path, "key": "clean0", "tag": "clean"}]
    for name in NAMED:
        specs += [{"image_file": path, "key": f"{name}{i}", "tag": name} for i in (0, 1)]
    bad = {"truncated": "truncated_data", "bad_step": "bad_step", "unsupported_encoding": "unsupported_encoding"}
    for kind in bad:
        specs += [{"seed": 3, "bad": kind, "tag": kind}, {"image_file": path, "key": "clean1", "tag": "clean"}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": specs},
                          {"op": "diagnostics", "wait": 2.5}])
    status = _by_stamp(result["received"]["status"])
    answered = {r["stamp"] for kind in ("activity", "mask", "instruments") for r in result["received"][kind]}
    assert set(status) == {s["stamp"] for s in result["sent"]}, "every frame that reached the node has a status"
    for sent in result["sent"]:
        s, tag = status[sent["stamp"]], sent["tag"]
        if tag == "clean":
            assert s["usable"], s
        elif tag in NAMED:
            flag = NAMED[tag]
            assert not s["usable"] and s["processed"] and s["flags"] & _flag(flag), (tag, s)
            assert any(r.startswith(flag.lower() + ":") for r in s["reasons"]), s["reasons"]
            assert s["flags"] & _flag("DEGRADED_IMAGE")
        else:
            assert s["flags"] == _flag("INPUT_REJECTED") and not s["usable"] and not s["processed"], s
            assert s["reasons"][0].startswith(f"input_rejected: {bad[tag]}"), s["reasons"]
            assert math.isnan(s["sharpness"]) and math.isnan(s["activity_confidence"])
            assert sent["stamp"] not in answered, "a rejected frame got results"
    diag = result["diagnostics"]
    assert diag["status.flag.INPUT_REJECTED"] == "3" and diag["status.published"] == str(len(specs))
    for flag in NAMED.values():
        assert int(diag[f"status.flag.{flag}"]) >= 2, flag


def test_stale_results_are_flagged_and_counted_and_every_received_frame_has_a_status(start_node, probe):
    node = start_node("status.max_result_age_ms:=1000.0")
    past = [{"seed": i, "stamp_offset_ms": 3000, "tag": "old"} for i in range(3)]
    now = [{"seed": 5, "tag": "new"}]
    burst = [{"seed": 10 + i % 3, "width": 640, "height": 480, "tag": "burst"} for i in range(40)]
    result = probe(node, [
        READY,
        {"op": "frames", "lockstep": True, "rate": 5, "frames": past + now},
        {"op": "set_params", "params": {"status.max_result_age_ms": 60000.0}},  # live
        {"op": "set_params", "params": {"instruments.classes": ["Electric Knife", "scalpel"]}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [dict(f, tag="old_allowed") for f in past]},
        {"op": "frames", "rate": 200, "frames": burst, "settle": 3},
        {"op": "diagnostics", "wait": 2.5},
    ])
    assert result["steps"][2]["results"][0]["successful"]
    refused = result["steps"][3]["results"][0]
    assert not refused["successful"] and "'scalpel' is not one of the model's classes" in refused["reason"]
    status = _by_stamp(result["received"]["status"])
    stale = _flag("STALE")
    for sent in result["sent"]:
        s = status.get(sent["stamp"])
        if sent["tag"] == "old":
            assert s["flags"] & stale and s["age_ms"] >= 3000 and not s["usable"], s
            assert any(r.startswith("stale: age_ms") for r in s["reasons"]), s["reasons"]
        elif sent["tag"] in ("new", "old_allowed"):
            assert not s["flags"] & stale, s
    diag = result["diagnostics"]
    assert diag["status.flag.STALE"] == "3"
    # Every frame the node received has exactly one status: processed, or replaced by a newer one (DROPPED).
    dropped = [s for s in status.values() if s["flags"] & _flag("DROPPED")]
    assert len(status) == int(diag["frames.received"]) == int(diag["status.published"])
    assert len(dropped) == int(diag["dropped.replaced"]) == int(diag["status.flag.DROPPED"])
    assert dropped, "a 200 Hz burst of 640x480 frames replaced none (is the node that fast?)"
    assert all(not s["processed"] and s["reasons"][0].startswith("dropped: replaced") for s in dropped)
    processed = [s for s in status.values() if s["processed"]]
    assert len(processed) == int(diag["frames.published"])

"""Out of the patient on the running node (issue 27): a real ``endoarss-perception`` process (tiny model, the
committed out-of-body detector) and the probe process (test/node_probe.py) publishing a recording in -> out -> in
(a held-out synthetic procedure, views of the held-out photographs, the procedure again).

Lockstep: every frame is processed; the overlay and mask of every frame from the first photograph to the end of
the hysteresis tail are all zero, the others are not; the status, activity and instruments say out of body;
/diagnostics counts the gated frames. Lagging: published faster than the node runs, so most frames are replaced
before the worker takes them; still no overlay of the interval is published un-blanked, the first processed
photograph included."""
from __future__ import annotations

import numpy as np
import pytest

from test import test_node_ros as node_tests
from test.conftest import requires_ros
from test.test_out_of_body import BEFORE, EXIT, OUTSIDE, _sequence

READY = node_tests.READY
start_node, probe, tiny_model = node_tests.start_node, node_tests.probe, node_tests.tiny_model  # the fixtures

pytestmark = [requires_ros, pytest.mark.ros, pytest.mark.slow]
OUT_OF_BODY = 1 << 13
# The harness runs other tests without the detector (its own frames are blobs): here it is on, as by default.
WITH_GATE = ("warmup_size:=[180, 224]", "out_of_body.model:=models/demo/endoarss_out_of_body.safetensors",
             "privacy_gate:=true")


@pytest.fixture(scope="module")
def frames_file(tmp_path_factory):
    items = _sequence()
    path = tmp_path_factory.mktemp("oob_frames") / "frames.npz"
    np.savez(path, **{f"f{i}": it.rgb for i, it in enumerate(items)})
    return str(path), len(items)


def _by_stamp(records):
    return {r["stamp"]: r for r in records}


def test_the_node_blanks_every_image_of_the_interval_and_marks_it_out_of_body(start_node, probe, frames_file):
    path, n = frames_file
    node = start_node(*WITH_GATE)
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "answer_timeout": 60,
                                  "frames": [{"image_file": path, "key": f"f{i}"} for i in range(n)]},
                          {"op": "diagnostics", "wait": 2.5}], overlay=True, keep_images=True)
    sent = [s["stamp"] for s in result["sent"]]
    gated = set(sent[BEFORE:BEFORE + OUTSIDE + EXIT - 1])
    rec = result["received"]
    overlays, statuses = _by_stamp(rec["overlay"]), _by_stamp(rec["status"])
    activities, instruments = _by_stamp(rec["activity"]), _by_stamp(rec["instruments"])
    assert set(overlays) == set(sent) == set(statuses), "lockstep: every frame processed and published"
    images = result["images"]
    for s in sent:
        overlay, mask = images[f"overlay_0_{s}"], images[f"mask_0_{s}"]
        if s in gated:
            assert not overlay.any() and not mask.any(), f"un-blanked image of out-of-body stamp {s}"
            assert statuses[s]["out_of_body"] and statuses[s]["flags"] & OUT_OF_BODY
            assert statuses[s]["reasons"][0].startswith("out_of_body:")
            assert activities[s]["source"] == "out_of_body" and activities[s]["label"] == "out_of_body"
            assert activities[s]["class_id"] == 65535 and instruments[s]["instruments"] == []
        else:
            assert overlay.mean() > 20 and not statuses[s]["out_of_body"]
            assert activities[s]["source"] != "out_of_body"
    diag = result["steps"][-1]["values"]
    assert int(diag["privacy_gate.gated_frames"]) == len(gated)
    assert int(diag["status.flag.OUT_OF_BODY"]) == len(gated)
    assert diag["privacy_gate"] == "on" and diag["out_of_body.state.image"] == "in"
    assert diag["out_of_body.entries.image"] == "1"


def test_while_inference_lags_no_overlay_of_the_interval_leaves_un_blanked(start_node, probe, frames_file):
    path, n = frames_file
    node = start_node(*WITH_GATE)
    # First a few in-body frames in lockstep (the node is warm and answering), then 50 frames/s with each
    # photograph 25 times: 3 s outside, long enough for a slow node on a busy machine to take some of them.
    warm = [{"image_file": path, "key": f"f{i}", "tag": "warm"} for i in range(3)]
    specs = ([{"image_file": path, "key": f"f{i}", "tag": "in"} for i in range(BEFORE)]
             + [{"image_file": path, "key": f"f{i}", "tag": "out", "repeat": 25}
                for i in range(BEFORE, BEFORE + OUTSIDE)]
             + [{"image_file": path, "key": f"f{i}", "tag": "after"} for i in range(BEFORE + OUTSIDE, n)])
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "answer_timeout": 60, "frames": warm},
                          {"op": "frames", "rate": 50, "frames": specs, "settle": 5},
                          {"op": "diagnostics", "wait": 2.5}], overlay=True, keep_images=True)
    tags = {s["stamp"]: s["tag"] for s in result["sent"]}
    statuses = _by_stamp(result["received"]["status"])
    dropped = [s for s, st in statuses.items() if not st["processed"]]
    processed_out = [s for s, t in tags.items() if t == "out" and statuses.get(s, {}).get("processed")]
    assert dropped, "the node kept up: nothing was replaced, the lag this test needs did not happen"
    assert processed_out, "no photograph was processed"
    first_out = min(s for s, t in tags.items() if t == "out")
    for rec in result["received"]["overlay"]:
        s = rec["stamp"]
        if tags[s] == "out" or (s >= first_out and statuses[s]["out_of_body"]):
            assert not result["images"][f"overlay_0_{s}"].any(), f"un-blanked overlay of stamp {s}"
    for s in processed_out:
        assert statuses[s]["out_of_body"] and f"overlay_0_{s}" in result["images"]
    diag = result["steps"][-1]["values"]
    assert int(diag["privacy_gate.gated_frames"]) == sum(st["out_of_body"] and st["processed"]
                                                         for st in statuses.values())

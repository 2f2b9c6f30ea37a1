"""The node's 3D side as users run it: a real node process with the committed demo model, driven by a real client
process (test/node_probe.py) that publishes a rendered stereo endoscope (``data.stereo_scene``: known intrinsics,
5 mm baseline, ground-truth tips) with camera_info beside each image.

* a stereo pair with camera_info: InstrumentArray on the LEFT camera with has_3d and tip_3d near the truth, RViz
  markers (deleted when the instrument is gone), the lazy disparity image, one activity and status per pair;
* one camera with camera_info: viewing rays, frame_id from camera_info; without camera_info: 2D as before and
  /diagnostics says camera_info is missing;
* every bad camera_info case: a diagnostic naming it, counted, and no 3D published.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from test.conftest import REPO, requires_ros
from test.test_node_ros import probe, start_node, tiny_model  # noqa: F401 - fixtures

pytestmark = [requires_ros, pytest.mark.ros]

DEMO_MODEL = str(REPO / "models" / "demo" / "endoarss_demo.safetensors")
WIDTH, HEIGHT, FOCAL_PX, BASELINE_M = 640, 512, 700.0, 0.005
LEFT_FRAME, RIGHT_FRAME = "endoscope_left_optical_frame", "endoscope_right_optical_frame"
READY = {"op": "wait_ready", "timeout": 180}


def _rig():
    from endoarss_ros.data.stereo_scene import StereoRigSpec

    return StereoRigSpec(width=WIDTH, height=HEIGHT, focal_px=FOCAL_PX, baseline_m=BASELINE_M)


def _info(side: str, **changes) -> dict:
    """CameraInfo fields as the probe publishes them (flat: frame_id instead of header)."""
    fields = _rig().camera_info_fields(side, LEFT_FRAME if side == "left" else RIGHT_FRAME)
    fields["frame_id"] = fields.pop("header")["frame_id"]
    fields.update(changes)
    return fields


@pytest.fixture(scope="module")
def stereo_frames(tmp_path_factory):
    """Rendered pairs (npz: left_i, right_i) with their truth, and two pairs with the instruments painted out."""
    import cv2

    from endoarss_ros.data.classes import INSTRUMENT_CLASSES
    from endoarss_ros.data.stereo_scene import StereoSceneSettings, generate_stereo_sequence

    settings = StereoSceneSettings(rig=_rig())
    frames = list(generate_stereo_sequence(4, 6, fps=2.0, settings=settings))  # 5 of 6 tips in 3D offline
    arrays, truth = {}, []
    for i, f in enumerate(frames):
        arrays[f"left_{i}"], arrays[f"right_{i}"] = f.left, f.right
        truth.append([t._asdict() for t in f.instruments if t.visible])
        for side, image, mask in (("left", f.left, f.left_mask), ("right", f.right, f.right_mask)):
            hole = cv2.dilate(np.isin(mask, sorted(INSTRUMENT_CLASSES)).astype(np.uint8), np.ones((9, 9), np.uint8))
            arrays[f"{side}_empty_{i}"] = cv2.inpaint(image, hole, 5, cv2.INPAINT_TELEA)
    path = tmp_path_factory.mktemp("stereo") / "pairs.npz"
    np.savez(path, **arrays)
    return {"path": str(path), "truth": truth, "count": len(frames)}


def _pairs(frames, keys, **right_spec):
    """Frame specs of stereo pairs: left on camera 0, right (silent: it answers through the left) on camera 1."""
    specs = []
    for key in keys:
        specs.append({"camera": 0, "image_file": frames["path"], "key": f"left_{key}"})
        specs.append({"camera": 1, "image_file": frames["path"], "key": f"right_{key}", "with_previous": True,
                      "silent": True, **right_spec})
    return specs


def _stereo_cameras(node, left_info=None, right_info=None):
    return [{"input": f"{node.ns}/left/image", "output": f"{node.ns}/left", "camera_info": left_info or _info("left")},
            {"input": f"{node.ns}/right/image", "output": f"{node.ns}/right",
             "camera_info": right_info or _info("right"), "silent": True}]


def _stereo_node(start_node, *extra):  # noqa: F811
    return start_node("cameras:=['left', 'right']", "stereo_pairs:=['left:right']", f"warmup_size:=[{HEIGHT}, "
                      f"{WIDTH}]", *extra, model=DEMO_MODEL)


def _by_stamp(records, camera=0):
    return {r["stamp"]: r for r in records if r["camera"] == camera}


def _frames_accounted(diag) -> bool:
    """Every frame the node received is published, rejected, replaced, or counted by the stereo pairing."""
    def n(key):
        return int(diag.get(key) or 0)
    return n("frames.received") == (n("frames.published") + n("rejected.total") + n("dropped.replaced")
                                    + n("stereo.matched") + n("stereo.unmatched_right")
                                    + n("stereo.dropped_older_than_parked"))


def _left_stamps(result):
    return [s["stamp"] for s in result["sent"] if s["camera"] == 0]


@pytest.mark.slow
def test_a_stereo_pair_with_camera_info_publishes_instruments_in_3d(start_node, probe, stereo_frames):  # noqa: F811
    node = _stereo_node(start_node)
    n = stereo_frames["count"]
    frames = _pairs(stereo_frames, range(n)) + _pairs(stereo_frames, ["empty_0", "empty_1"])
    result = probe(node, [READY, {"op": "frames", "frames": frames, "rate": 2, "lockstep": True, "settle": 5},
                          {"op": "diagnostics", "wait": 2.5}],
                   cameras=_stereo_cameras(node), markers=True, disparity=True)
    received = result["received"]
    left = _left_stamps(result)
    # One scene per pair: one activity, one status, one InstrumentArray, all on the left camera's outputs.
    for kind in ("activity", "status", "instruments", "mask"):
        stamps = [r["stamp"] for r in received[kind] if r["camera"] == 0]
        assert sorted(stamps) == sorted(left), kind
        assert not [r for r in received[kind] if r["camera"] == 1], f"the right camera published {kind}"
    instruments = _by_stamp(received["instruments"])
    assert all(r["frame_id"] == LEFT_FRAME for r in instruments.values())  # the left camera_info's frame
    assert all(r["frame_id"] == "endoscope" for r in received["activity"])  # the image's own header
    errors_mm, gaps_mm, found = [], [], 0
    for stamp, truth in zip(left[:n], stereo_frames["truth"]):
        published = [i for i in instruments[stamp]["instruments"] if i["has_3d"]]
        for t in truth:
            candidates = [i for i in published if i["class_id"] == t["class_id"]
                          and math.dist((i["tip"]["x"], i["tip"]["y"]), t["tip_left_px"]) < 25]
            if not candidates:
                continue
            found += 1
            tip = candidates[0]
            xyz = (tip["tip_3d"]["x"], tip["tip_3d"]["y"], tip["tip_3d"]["z"])
            errors_mm.append(1000 * math.dist(xyz, t["tip_3d"]))
            ray = np.array([tip["tip_ray"][k] for k in "xyz"])
            assert abs(np.linalg.norm(ray) - 1) < 1e-5 and np.dot(ray, xyz) / np.linalg.norm(xyz) > 0.999
            assert tip["tip_depth_sigma"] > 0
            if math.isfinite(tip["tip_to_tissue"]):
                gaps_mm.append(1000 * abs(tip["tip_to_tissue"] - t["tip_to_tissue_m"]))
    visible = sum(len(t) for t in stereo_frames["truth"])
    print(f"3D for {found} of {visible} visible tips; tip error mm {np.round(errors_mm, 2).tolist()}; "
          f"tip-to-tissue error mm {np.round(gaps_mm, 2).tolist()}")  # shown with pytest -rP
    assert visible >= 4 and found >= 0.6 * visible, (found, visible)
    assert float(np.median(errors_mm)) <= 5.0 and max(errors_mm) <= 20.0, errors_mm
    assert gaps_mm and float(np.median(gaps_mm)) <= 5.0, gaps_mm
    for stamp in left[n:]:  # the instruments painted out: no 3D instrument left
        assert not [i for i in instruments[stamp]["instruments"] if i["has_3d"]]

    markers = [m for m in received["markers"] if m["markers"]]
    shown = {(m["ns"], m["id"]) for r in markers for m in r["markers"] if m["action"] == 0}
    assert {ns.rsplit("/", 1)[-1] for ns, _ in shown} == {"shaft", "tip", "label"}
    assert all(m["frame_id"] == LEFT_FRAME for r in markers for m in r["markers"])
    deleted = {(m["ns"], m["id"]) for r in markers for m in r["markers"] if m["action"] == 2}
    last_ids = {i["id"] for i in instruments[left[n - 1]]["instruments"] if i["has_3d"]}
    assert {(ns, i) for ns, i in shown if i in last_ids} <= deleted, "markers of the lost instruments not deleted"

    disparity = result["received"]["disparity"]
    assert {d["stamp"] for d in disparity} <= set(left) and disparity
    d = disparity[0]
    assert d["encoding"] == "32FC1" and d["frame_id"] == LEFT_FRAME and abs(d["t"] - BASELINE_M) < 1e-9
    small_f = d["f"]  # the downscaled image's focal length
    assert small_f * BASELINE_M / 0.125 <= d["median_disparity"] <= small_f * BASELINE_M / 0.045
    assert d["valid_fraction"] > 0.3

    diag = result["diagnostics"]
    assert diag["camera_info.left"] == "ok" and diag["camera_info.right"] == "ok"
    assert int(diag["stereo.matched"]) == n + 2 and int(diag["stereo.unmatched_left"]) == 0
    assert float(diag["stereo.offset_ms_max"]) == 0.0
    assert float(diag["stereo.3d_success_rate"]) > 0.5
    assert float(diag["stereo.reprojection_px_p50"]) < 5.0
    for stage in ("match", "refine", "triangulate", "tissue_disparity", "total"):
        assert float(diag[f"stage_p50_ms.stereo_{stage}"]) >= 0.0
    assert diag["stereo.left"].startswith("ok")
    assert int(diag["frames.received"]) == 2 * (n + 2) and _frames_accounted(diag)


@pytest.mark.slow
def test_camera_info_gives_rays_and_its_frame_and_without_it_the_node_stays_2d(start_node, probe,  # noqa: F811
                                                                               stereo_frames):
    node = start_node(f"warmup_size:=[{HEIGHT}, {WIDTH}]", model=DEMO_MODEL,
                      ros_args=["-r", "camera_info:=/calib/scope/camera_info"])
    info = _info("left", frame_id="scope_optical_frame")
    camera = [{"input": f"{node.ns}/image", "output": node.ns, "camera_info": info,
               "camera_info_topic": "/calib/scope/camera_info"}]
    images = [{"image_file": stereo_frames["path"], "key": f"left_{i}"} for i in range(3)]
    steps = [READY,
             {"op": "frames", "frames": [{**f, "camera_info": False} for f in images], "rate": 2, "lockstep": True},
             {"op": "diagnostics", "wait": 2.5},
             {"op": "frames", "frames": images, "rate": 2, "lockstep": True},
             {"op": "diagnostics", "wait": 2.5}]
    result = probe(node, steps, cameras=camera)
    without, with_info = _left_stamps(result)[:3], _left_stamps(result)[3:]
    instruments = _by_stamp(result["received"]["instruments"])
    masks = _by_stamp(result["received"]["mask"])
    some = 0
    for a, b in zip(without, with_info):
        plain, rays = instruments[a], instruments[b]
        assert plain["frame_id"] == "endoscope" and rays["frame_id"] == "scope_optical_frame"
        assert masks[a]["digest"] == masks[b]["digest"]  # camera_info changes nothing in 2D
        keys = ("class_id", "tip", "entry_point", "bbox", "area_px", "orientation")
        assert [{k: i[k] for k in keys} for i in plain["instruments"]] == \
               [{k: i[k] for k in keys} for i in rays["instruments"]]
        for i in plain["instruments"]:
            assert i["tip_ray"] == {"x": 0.0, "y": 0.0, "z": 0.0} and not i["has_3d"]
            assert math.isnan(i["tip_to_tissue"]) and math.isnan(i["tip_depth_sigma"])
        for i in rays["instruments"]:
            some += 1
            k = info["k"]
            expected = np.array([(i["tip"]["x"] - k[2]) / k[0], (i["tip"]["y"] - k[5]) / k[4], 1.0])
            ray = np.array([i["tip_ray"][c] for c in "xyz"])
            assert np.allclose(ray, expected / np.linalg.norm(expected), atol=1e-6)
            assert not i["has_3d"] and i["tip_3d"] == {"x": 0.0, "y": 0.0, "z": 0.0}
    assert some >= 2
    missing, ok = result["steps"][2]["values"], result["steps"][4]["values"]
    assert missing["camera_info.image"].startswith("missing") and int(missing["camera_info.missing"]) >= 3
    assert missing["camera_info.image.topic"] == "/calib/scope/camera_info"
    assert ok["camera_info.image"] == "ok" and int(ok["camera_info.matched_exact"]) == 3


@pytest.mark.slow
def test_bad_camera_info_is_diagnosed_counted_and_never_published_as_3d(start_node, probe,  # noqa: F811
                                                                        stereo_frames):
    node = _stereo_node(start_node)
    f = stereo_frames
    zeros = _info("right", k=[0.0] * 9, p=[0.0] * 12)
    wrong_size = _info("left", height=480)  # a K for 640x480, the images are 640x512
    wrong_sign = _info("right", p=[FOCAL_PX, 0, _rig().cx, FOCAL_PX * BASELINE_M, 0, FOCAL_PX, _rig().cy, 0, 0, 0, 1,
                                   0])
    swapped = []
    for i in range(3):
        swapped.append({"camera": 0, "image_file": f["path"], "key": f"right_{i}"})
        swapped.append({"camera": 1, "image_file": f["path"], "key": f"left_{i}", "with_previous": True,
                        "silent": True})
    cases = [
        ("never_matching_stamps", _pairs(f, range(3), own_offset_ms=7.0)),
        ("right_camera_info_missing", _pairs(f, range(3), camera_info=False)),
        ("zeros", _pairs(f, range(3), camera_info=zeros)),
        ("k_not_matching_the_image", [dict(s, camera_info=wrong_size) if s["camera"] == 0 else s
                                      for s in _pairs(f, range(3))]),
        ("baseline_sign", _pairs(f, range(3), camera_info=wrong_sign)),
        ("left_right_swapped", swapped),
    ]
    steps = [READY]
    for _, frames in cases:
        # 1.5 s apart: the previous case's camera_info is no longer taken as the latest fallback
        steps += [{"op": "sleep", "seconds": 1.5},
                  {"op": "frames", "frames": frames, "rate": 2, "lockstep": True, "settle": 5},
                  {"op": "diagnostics", "wait": 2.5}]
    result = probe(node, steps, cameras=_stereo_cameras(node), markers=True)
    instruments = _by_stamp(result["received"]["instruments"])
    left = _left_stamps(result)
    assert len(left) == 3 * len(cases)
    for stamp in left:  # every left frame answered (in 2D or with rays), none with 3D
        assert not [i for i in instruments[stamp]["instruments"] if i["has_3d"]]
    assert not [m for r in result["received"]["markers"] for m in r["markers"] if m["action"] == 0]
    diags = {name: step["values"] for (name, _), step in zip(cases, [s for s in result["steps"]
                                                                     if s["op"] == "diagnostics"])}
    rays = {name: [any(i["tip_ray"][c] != 0.0 for c in "xyz") for s in left[3 * k:3 * k + 3]
                   for i in instruments[s]["instruments"]] for k, (name, _) in enumerate(cases)}

    d = diags["never_matching_stamps"]
    assert int(d["stereo.matched"]) == 0 and int(d["stereo.unmatched_left"]) >= 3
    assert "no left and right frames paired yet" in d["_message"] and d["_level"] == 1
    assert rays["never_matching_stamps"] and all(rays["never_matching_stamps"])  # left alone: rays

    d = diags["right_camera_info_missing"]
    assert d["stereo.left"].startswith("no 3D: no valid camera_info for the right camera")
    assert d["camera_info.right"].startswith("missing") and int(d["stereo.no_3d.right_camera_info"]) >= 3
    assert all(rays["right_camera_info_missing"])

    d = diags["zeros"]
    assert d["camera_info.right"].startswith("invalid: ") and int(d["camera_info.invalid"]) >= 3
    assert d["_level"] == 1 and "camera_info of right invalid" in d["_message"]

    d = diags["k_not_matching_the_image"]
    assert d["camera_info.left"].startswith("invalid: ") and "480" in d["camera_info.left"]
    assert int(d["stereo.no_3d.left_camera_info"]) >= 3
    assert not any(rays["k_not_matching_the_image"])  # no trusted camera: 2D only

    d = diags["baseline_sign"]
    assert d["stereo.left"].startswith("no 3D: camera_infos refused as a stereo pair") and "swapped" in d["stereo.left"]
    assert int(d["stereo.no_3d.invalid_pair"]) >= 3

    d = diags["left_right_swapped"]
    assert int(d["stereo.negative_disparity"]) >= 1
    assert "negative disparities" in d["_message"] and "swapped" in d["_message"] and d["_level"] == 1
    assert int(d["frames.received"]) == 6 * len(cases) and _frames_accounted(d)

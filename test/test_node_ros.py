"""The perception node as users run it: a real rclpy node process, driven by a real rclpy client process
(test/node_probe.py) with a tiny random-weights model. Random weights give arbitrary but deterministic outputs:
enough for stamps, sizes, encodings equivalence, rejections, lifecycle and parameters."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid

import numpy as np
import pytest

from test.conftest import REPO, requires_ros

pytestmark = [requires_ros, pytest.mark.ros]

BAD_RAW = {"truncated": "truncated_data", "zero_size": "zero_size", "bad_step": "bad_step",
           "unsupported_encoding": "unsupported_encoding", "too_large": "too_large"}


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from endoarss_ros.model import ModelConfig, build_model, save_model

    return str(save_model(build_model(ModelConfig.endoarss_tiny()), tmp_path_factory.mktemp("model") / "tiny"))


class NodeProcess:
    """``endoarss-perception`` in its own process, in a namespace of its own."""

    def __init__(self, tmp_path, env, model, *params: str, autostart=True, ros_args=(), ns=None):
        self.ns = ns or "/t" + uuid.uuid4().hex[:8]
        self.name = f"{self.ns}/endoarss_perception"
        self.log_path = tmp_path / f"node{self.ns.replace('/', '_')}_{uuid.uuid4().hex[:4]}.log"
        args = [sys.executable, "-m", "endoarss_ros.ros.perception_node", "--ros-args", "-r", f"__ns:={self.ns}",
                "-p", f"model:={model}", "-p", "device:=cpu", "-p", "warmup_size:=[240, 320]",
                "-p", f"autostart:={str(autostart).lower()}"]
        for p in params:
            args += ["-p", p]
        args += list(ros_args)  # e.g. ["--params-file", path]
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text()


@pytest.fixture
def start_node(tmp_path, child_env, tiny_model):
    nodes = []

    def start(*params, model=tiny_model, autostart=True, ros_args=(), ns=None):
        node = NodeProcess(tmp_path, child_env, model, *params, autostart=autostart, ros_args=ros_args, ns=ns)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        node.stop()


@pytest.fixture
def probe(tmp_path, child_env):
    def run(node: NodeProcess, steps, *, cameras=None, transport="raw", overlay=False, keep_images=False,
            input_qos="reliable", timeout=300, **plan_keys):
        """``plan_keys``: further plan keys (``markers``, ``disparity``: see test/node_probe.py)."""
        cameras = cameras or [{"input": f"{node.ns}/image", "output": node.ns}]
        plan = {"node": node.name, "cameras": cameras, "transport": transport, "overlay": overlay,
                "keep_images": keep_images, "input_qos": input_qos, "steps": steps, **plan_keys}
        plan_path = tmp_path / f"plan_{uuid.uuid4().hex[:6]}.json"
        plan_path.write_text(json.dumps(plan))
        images = tmp_path / f"images_{plan_path.stem}.npz"
        cmd = [sys.executable, "-m", "test.node_probe", str(plan_path), "--save-images", str(images)]
        done = subprocess.run(cmd, env=child_env, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        assert done.returncode == 0, f"probe failed:\n{done.stderr[-3000:]}\nnode log:\n{node.output()[-3000:]}"
        result = json.loads(done.stdout.strip().splitlines()[-1])
        result["images"] = dict(np.load(images)) if keep_images else {}
        return result
    return run


READY = {"op": "wait_ready", "timeout": 120}


def _stamps(records, camera=None):
    return {r["stamp"] for r in records if camera is None or r["camera"] == camera}


def _good_stamps(result, camera=None):
    return {s["stamp"] for s in result["sent"] if s["good"] and (camera is None or s["camera"] == camera)}


def _assert_every_good_frame_answered_and_nothing_else(result):
    sent_good = _good_stamps(result)
    bad = {s["stamp"] for s in result["sent"] if not s["good"]}
    for kind in ("activity", "mask"):
        got = _stamps(result["received"][kind])
        assert got == sent_good, f"{kind}: missing {sorted(sent_good - got)}, unexpected {sorted(got - sent_good)}"
        assert not got & bad, f"{kind} published for a rejected frame"


@pytest.mark.slow
def test_1080p_stream_outputs_match_input_stamps_and_size(start_node, probe):
    node = start_node("warmup_size:=[1080, 1920]")
    frames = [{"seed": 1, "width": 1920, "height": 1080, "repeat": 120}]  # 4 s at 30 Hz
    result = probe(node, [READY, {"op": "frames", "rate": 30, "frames": frames, "settle": 5},
                          {"op": "diagnostics", "wait": 2.5}])
    sent = _stamps(result["sent"])
    assert len(sent) == 120
    activity, masks = result["received"]["activity"], result["received"]["mask"]
    # The node cannot run a 1080p model at 30 Hz on a shared 2-core CPU: it keeps the newest frame and drops
    # the rest, but everything it publishes belongs to a frame that was sent, with the frame's size and header.
    assert _stamps(activity) <= sent and _stamps(masks) <= sent
    assert _stamps(activity) == _stamps(masks), "every processed frame gets both a mask and an activity"
    assert len(_stamps(masks)) == len(masks), "one result per frame"
    for m in masks:
        assert (m["width"], m["height"], m["encoding"], m["step"]) == (1920, 1080, "mono8", 1920)
        assert m["frame_id"] == "endoscope"
    assert all(a["frame_id"] == "endoscope" and len(a["probabilities"]) == len(a["class_names"]) for a in activity)
    diag = result["diagnostics"]
    received, published = int(diag["frames.received"]), int(diag["frames.published"])
    assert published == len(masks)
    # Every frame the node received is accounted for: published, or replaced by a newer one before processing.
    assert received == published + int(diag["dropped.replaced"]) + int(diag["rejected.total"])
    assert int(diag["rejected.total"]) == 0 and int(diag["errors.inference"]) == 0
    assert float(diag["latency_p50_ms"]) > 0 and diag["device"] == "cpu" and diag["lifecycle_state"] == "active"
    # The worker is never idle while a frame waits: a frame's latency (wait + processing) is at least one
    # processing cycle, so a busy worker publishes at least stream time / latency frames (or all it got).
    stream_ms = (max(sent) - min(sent)) / 1e6
    busy = min(received, stream_ms / float(diag["latency_p50_ms"]))
    assert published >= 0.7 * busy, f"published {published}, a busy worker would publish ~{busy:.0f}"
    print(f"1080p@30Hz: node received {received}/120, published {published}, dropped {diag['dropped.replaced']}, "
          f"latency p50 {diag['latency_p50_ms']} ms p95 {diag['latency_p95_ms']} ms")


def test_encodings_give_the_same_classes_as_rgb8(start_node, probe):
    node = start_node("smoothing.enabled:=false")
    frames = [{"seed": 5, "encoding": e, "tag": e} for e in ("rgb8", "bgr8", "rgba8", "bgra8")]
    frames += [{"seed": 5, "encoding": "rgb8", "pad": 64, "tag": "rgb8_padded"},
               {"seed": 5, "encoding": "bgr8", "pad": 13, "tag": "bgr8_padded"},
               {"seed": 5, "encoding": "yuv422_yuy2", "tag": "yuyv"},
               {"seed": 5, "encoding": "yuyv", "tag": "yuyv_alias"},
               {"seed": 5, "encoding": "rgb8", "decoded_yuyv": True, "tag": "rgb8_of_yuyv"},
               {"seed": 5, "encoding": "mono8", "tag": "mono8"}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 10, "frames": frames}])
    _assert_every_good_frame_answered_and_nothing_else(result)
    by_tag = {}
    for sent in result["sent"]:
        mask = next(m for m in result["received"]["mask"] if m["stamp"] == sent["stamp"])
        act = next(a for a in result["received"]["activity"] if a["stamp"] == sent["stamp"])
        by_tag[sent["tag"]] = (mask["digest"], act["raw_probabilities"], act["class_id"])
    for tag in ("bgr8", "rgba8", "bgra8", "rgb8_padded", "bgr8_padded"):
        assert by_tag[tag][0] == by_tag["rgb8"][0], f"{tag} mask differs from rgb8"
        assert by_tag[tag][1] == pytest.approx(by_tag["rgb8"][1], abs=1e-5) and by_tag[tag][2] == by_tag["rgb8"][2]
    for tag in ("yuyv", "yuyv_alias"):
        assert by_tag[tag][0] == by_tag["rgb8_of_yuyv"][0], f"{tag} mask differs from the rgb8 frame it decodes to"
        assert by_tag[tag][1] == pytest.approx(by_tag["rgb8_of_yuyv"][1], abs=1e-5)
    mono = next(m for m in result["received"]["mask"] if m["stamp"] == result["sent"][-1]["stamp"])
    assert (mono["width"], mono["height"]) == (320, 240)


def test_compressed_jpeg_and_png(start_node, probe):
    node = start_node("image_transport:=compressed")
    frames = [{"seed": 2, "format": "jpeg"}, {"seed": 2, "format": "png"}, {"seed": 3, "bad": "corrupt"},
              {"seed": 4, "format": "jpeg", "width": 640, "height": 480}, {"seed": 3, "bad": "corrupt"},
              {"seed": 5, "format": "png"}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": frames},
                          {"op": "diagnostics", "wait": 2.5}], transport="compressed")
    _assert_every_good_frame_answered_and_nothing_else(result)
    sizes = {m["stamp"]: (m["width"], m["height"]) for m in result["received"]["mask"]}
    assert [sizes[s["stamp"]] for s in result["sent"] if s["good"]] == [(320, 240), (320, 240), (640, 480), (320, 240)]
    assert result["diagnostics"]["rejected.corrupt_compressed"] == "2"
    assert node.alive()


def test_bad_inputs_are_rejected_and_the_next_good_frame_is_served(start_node, probe):
    node = start_node(f"max_input_pixels:={640 * 480}")
    frames = [{"seed": 1}]
    for i, bad in enumerate(BAD_RAW):
        spec = {"seed": 10 + i, "bad": bad}
        if bad == "too_large":
            spec.update(width=1280, height=960)
        frames += [spec, {"seed": 20 + i}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": frames},
                          {"op": "diagnostics", "wait": 2.5}])
    _assert_every_good_frame_answered_and_nothing_else(result)
    diag = result["diagnostics"]
    for reason in BAD_RAW.values():
        assert diag[f"rejected.{reason}"] == "1", (reason, diag)
    assert diag["rejected.total"] == "5" and diag["errors.inference"] == "0"
    log = node.output()
    for reason in BAD_RAW.values():
        assert f"{reason})" in log, f"no specific error log for {reason}"
    assert "data has" in log and "step" in log  # the messages say what is wrong, not just that it is
    assert node.alive()


def test_two_cameras_through_one_model(start_node, probe):
    node = start_node("cameras:=['left', 'right']", "batch_window_ms:=100.0")
    cameras = [{"input": f"{node.ns}/left/image", "output": f"{node.ns}/left"},
               {"input": f"{node.ns}/right/image", "output": f"{node.ns}/right"}]
    frames = []
    for i in range(4):
        frames += [{"camera": 0, "seed": i, "frame_id": "left_optical"},
                   {"camera": 1, "seed": 100 + i, "frame_id": "right_optical", "with_previous": True}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": frames},
                          {"op": "diagnostics", "wait": 2.5}], cameras=cameras)
    for cam, frame_id in ((0, "left_optical"), (1, "right_optical")):
        sent = _good_stamps(result, cam)
        assert len(sent) == 4
        for kind in ("activity", "mask"):
            recs = [r for r in result["received"][kind] if r["camera"] == cam]
            assert _stamps(recs) == sent and all(r["frame_id"] == frame_id for r in recs)
        info = [r for r in result["received"]["info"] if r["camera"] == cam]
        assert info and info[-1]["frame_id"] == frame_id and info[-1]["mask_encoding"] == "mono8"
    assert int(result["diagnostics"].get("batches.multi_camera", 0)) >= 1, "stereo pairs were never batched"
    assert result["diagnostics"]["cameras"] == "left, right"


def test_lifecycle_transitions_and_memory_release(start_node, probe):
    node = start_node(autostart=False)
    good = [{"seed": 1}, {"seed": 2}]
    steps = [
        {"op": "get_state"},
        {"op": "diagnostics", "wait": 2.5},
        {"op": "transition", "transition": "configure"},
        {"op": "diagnostics", "wait": 2.5},
        {"op": "transition", "transition": "activate"},
        READY,
        {"op": "frames", "lockstep": True, "rate": 5, "frames": good},
        {"op": "transition", "transition": "deactivate"},
        {"op": "get_state"},
        {"op": "frames", "rate": 5, "frames": [{"seed": 3, "tag": "inactive"}, {"seed": 4, "tag": "inactive"}],
         "settle": 2, "tail_timeout": 3},
        {"op": "transition", "transition": "activate"},
        READY,
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [{"seed": 5, "tag": "reactivated"}]},
        {"op": "transition", "transition": "deactivate"},
        {"op": "transition", "transition": "cleanup"},
        {"op": "get_state"},
        {"op": "diagnostics", "wait": 2.5},
    ]
    result = probe(node, steps)
    s = result["steps"]
    assert s[0]["state"] == "unconfigured"
    assert s[1]["values"]["model_loaded"] == "false"
    assert s[2]["success"] and s[3]["values"]["model_loaded"] == "true"
    assert s[3]["values"]["lifecycle_state"] == "inactive"
    assert s[4]["success"] and s[6]["unanswered"] == 0
    assert s[7]["success"] and s[8]["state"] == "inactive"
    answered = _stamps(result["received"]["mask"])
    inactive = {x["stamp"] for x in result["sent"] if x["tag"] == "inactive"}
    assert not answered & inactive, "an inactive node published results"
    assert s[10]["success"] and s[12]["unanswered"] == 0
    assert s[13]["success"] and s[14]["success"] and s[15]["state"] == "unconfigured"
    before, loaded, after = (float(s[i]["values"]["process_rss_mb"]) for i in (1, 3, 16))
    assert s[16]["values"]["model_loaded"] == "false"
    model_mb = os.path.getsize(node.proc.args[node.proc.args.index("-p") + 1].split(":=", 1)[1]) / 2**20
    # Loading costs at least the weights; cleanup gives back at least the weights' worth of memory.
    assert loaded - before >= model_mb * 0.8, (before, loaded, model_mb)
    assert loaded - after >= model_mb * 0.8, f"RSS before {before}, loaded {loaded}, after cleanup {after} MiB"
    print(f"RSS: unconfigured {before:.0f} MiB, configured {loaded:.0f} MiB, after cleanup {after:.0f} MiB "
          f"(weights {model_mb:.0f} MiB)")
    assert node.alive()


def test_missing_or_unreadable_model_fails_configure_naming_the_file(start_node, probe, tmp_path):
    missing = tmp_path / "nowhere" / "weights.safetensors"
    node = start_node(model=str(missing))
    assert node.proc.wait(120) == 1, "autostart with a missing model must exit with an error"
    log = node.output()
    assert str(missing) in log and "no such file" in log

    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"this is not a weights file" * 100)
    node = start_node(model=str(garbage), autostart=False)
    result = probe(node, [{"op": "transition", "transition": "configure"}, {"op": "get_state"}])
    assert result["steps"][0]["success"] is False and result["steps"][1]["state"] == "unconfigured"
    assert str(garbage) in node.output() and "configure failed" in node.output()
    assert node.alive(), "a failed configure must leave the node up for another try"


def test_parameter_validation_and_live_overlay_alpha(start_node, probe):
    node = start_node("overlay_annotations:=false")  # the colour blend alone (annotations: test_status_eval)
    steps = [
        READY,
        {"op": "set_params", "params": {"overlay_alpha": 1.5}},
        {"op": "set_params", "params": {"smoothing.alpha": 0.0}},
        {"op": "set_params", "params": {"device": "cuda:0"}},
        {"op": "set_params", "params": {"overlay_alpha": "opaque"}},
        {"op": "get_params", "names": ["overlay_alpha", "smoothing.alpha", "device"]},
        {"op": "set_params", "params": {"overlay_alpha": 0.0}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [{"seed": 7, "tag": "alpha0"}]},
        {"op": "set_params", "params": {"overlay_alpha": 1.0}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [{"seed": 7, "tag": "alpha1"}]},
        {"op": "get_params", "names": ["overlay_alpha"]},
    ]
    result = probe(node, steps, overlay=True, keep_images=True)
    s = result["steps"]
    rejected = [s[i]["results"][0] for i in (1, 2, 3, 4)]
    assert not any(r["successful"] for r in rejected)
    assert all(r["reason"] for r in rejected), rejected
    assert "overlay_alpha" in rejected[0]["reason"] and "read-only" in rejected[2]["reason"]
    assert s[5]["values"] == {"overlay_alpha": 0.5, "smoothing.alpha": 0.3, "device": "cpu"}  # old values kept
    assert s[6]["results"][0]["successful"] and s[8]["results"][0]["successful"]
    assert s[10]["values"] == {"overlay_alpha": 1.0}

    from test.node_probe import synthetic_image

    rgb = synthetic_image(7, 320, 240)
    info = result["received"]["info"][-1]
    colors = np.array(info["colors"], np.uint8).reshape(-1, 3)
    stamps = {x["tag"]: x["stamp"] for x in result["sent"]}
    images = result["images"]
    mask = images[f"mask_0_{stamps['alpha1']}"][..., 0]
    overlay0 = images[f"overlay_0_{stamps['alpha0']}"]
    overlay1 = images[f"overlay_0_{stamps['alpha1']}"]
    np.testing.assert_array_equal(overlay0, rgb)  # alpha 0: the image itself
    fg = mask > 0  # alpha 1: class colours where there is a class, the image on background
    np.testing.assert_array_equal(overlay1[fg], colors[mask[fg]])
    np.testing.assert_array_equal(overlay1[~fg], rgb[~fg])
    assert "parameter overlay_alpha set to 1.0" in node.output()


def test_incompatible_qos_is_logged_clearly(start_node, probe):
    """A reliable input subscription cannot match a best-effort camera: the node says so (the most common reason
    users see no output)."""
    node = start_node("input_qos.reliability:=reliable", "warmup_size:=[0, 0]")
    result = probe(node, [{"op": "sleep", "seconds": 1},
                          {"op": "diagnostics", "wait": 20, "first": True},  # the node is up
                          {"op": "frames", "rate": 5, "frames": [{"seed": 1, "repeat": 10}], "settle": 2,
                           "tail_timeout": 4}], input_qos="best_effort")
    assert result["received"]["mask"] == []
    log = node.output()
    assert "incompatible QoS on input" in log and "RELIABILITY" in log.upper(), log[-2000:]


def test_live_parameters_take_effect_while_streaming(start_node, probe):
    """Every live parameter changed at run time changes what the node does next: the smoother is rebuilt,
    max_input_pixels rejects / admits, batch_window_ms makes two cameras share a forward pass."""
    node = start_node("cameras:=['left', 'right']", "batch_window_ms:=0.0")
    cameras = [{"input": f"{node.ns}/{c}/image", "output": f"{node.ns}/{c}"} for c in ("left", "right")]
    alone = [{"camera": 0, "seed": 20 + i, "tag": "window"} for i in range(4)]  # the right camera is silent
    steps = [
        READY,
        {"op": "set_params", "params": {"smoothing.alpha": 0.01}},  # heavy smoothing, fresh smoother
        {"op": "frames", "lockstep": True, "rate": 5,
         "frames": [{"camera": 0, "seed": 1, "tag": "first"}, {"camera": 0, "seed": 9, "tag": "second"}]},
        {"op": "set_params", "params": {"smoothing.enabled": False}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [{"camera": 0, "seed": 9, "tag": "raw"}]},
        {"op": "set_params", "params": {"max_input_pixels": 320 * 240 - 1}},
        {"op": "frames", "rate": 5, "frames": [{"camera": 0, "seed": 2, "tag": "too_big"}], "settle": 1.5},
        {"op": "set_params", "params": {"max_input_pixels": 320 * 240}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [{"camera": 0, "seed": 2, "tag": "fits"}]},
        {"op": "diagnostics", "wait": 2.5},  # 9
        {"op": "frames", "lockstep": True, "rate": 5, "frames": alone},  # window 0: answered at once
        {"op": "set_params", "params": {"batch_window_ms": 30.0}},
        {"op": "set_params", "params": {"batch_window_ms": 0.0}},
        {"op": "set_params", "params": {"batch_window_ms": 100.0}},
        {"op": "frames", "lockstep": True, "rate": 5, "frames": [dict(f, tag="wait") for f in alone]},
    ]
    result = probe(node, steps, cameras=cameras)
    s = result["steps"]
    failed = [(i, r) for i in (1, 3, 5, 7, 11, 12, 13) for r in s[i]["results"] if not r["successful"]]
    assert not failed, failed
    by_tag = {x["tag"]: x["stamp"] for x in result["sent"]}
    act = {r["stamp"]: r for r in result["received"]["activity"]}
    first, second, raw = act[by_tag["first"]], act[by_tag["second"]], act[by_tag["raw"]]
    # A new smoother starts from the first frame's own probabilities; alpha 0.01 then barely moves.
    np.testing.assert_allclose(first["probabilities"], first["raw_probabilities"], atol=1e-6)
    moved = np.abs(np.subtract(second["probabilities"], first["probabilities"])).max()
    assert moved <= 0.011 * np.abs(np.subtract(second["raw_probabilities"], first["probabilities"])).max() + 1e-6
    np.testing.assert_allclose(raw["probabilities"], raw["raw_probabilities"], atol=1e-6)  # smoothing off
    assert by_tag["too_big"] not in act and by_tag["fits"] in act
    assert s[9]["values"]["rejected.too_large"] == "1"
    # With a window the worker waits for the silent camera's frame that never comes: each answer is later by
    # about the window (100 ms) than with none.
    answered_t = {r["stamp"]: r["t"] for r in result["received"]["activity"]}
    latency = {tag: np.median([answered_t[x["stamp"]] - x["t"] for x in result["sent"] if x["tag"] == tag])
               for tag in ("window", "wait")}
    assert latency["wait"] - latency["window"] >= 0.07, latency
    assert "parameter batch_window_ms set to 100.0" in node.output()


def test_two_cameras_of_different_sizes_class_names_file_and_input_size(start_node, probe, tiny_model, tmp_path):
    """Two cameras with different sizes and encodings through one model whose working size is overridden
    (input_size) and whose class names come from a file: each camera's mask and activity equal those of the
    same engine run here, and the published names are the file's."""
    from endoarss_ros.inference import InferenceEngine, frame_from_array
    from endoarss_ros.model import load_model
    from test.node_probe import encode_pixels, synthetic_image

    model = load_model(tiny_model)
    seg = [f"tissue class {i}" for i in range(len(model.config.seg_classes))]
    act = [f"phase {i}" for i in range(len(model.config.activity_classes))]
    names = tmp_path / "names.yaml"
    names.write_text(yaml_dump({"segmentation": seg, "activity": act}))
    node = start_node("cameras:=['left', 'right']", "batch_window_ms:=0.0", "input_size:=[112, 140]",
                      f"class_names_file:={names}")
    cameras = [{"input": f"{node.ns}/{c}/image", "output": f"{node.ns}/{c}"} for c in ("left", "right")]
    frames = [{"camera": 0, "seed": 3, "width": 320, "height": 240, "encoding": "rgb8", "tag": "left"},
              {"camera": 1, "seed": 4, "width": 200, "height": 150, "encoding": "bgr8", "tag": "right"}]
    result = probe(node, [READY, {"op": "frames", "lockstep": True, "rate": 5, "frames": frames}],
                   cameras=cameras, keep_images=True)
    engine = InferenceEngine(load_model(tiny_model, config=model.config.replace(input_size=(112, 140))),
                             device="cpu", max_batch=1)
    received = {(r["camera"], r["stamp"]): r for r in result["received"]["activity"]}
    for spec, sent in zip(frames, result["sent"]):
        rgb = synthetic_image(spec["seed"], spec["width"], spec["height"])
        (expected,) = engine.infer([frame_from_array(encode_pixels(rgb, spec["encoding"]), spec["encoding"])])
        mask = result["images"][f"mask_{spec['camera']}_{sent['stamp']}"][..., 0]
        assert mask.shape == (spec["height"], spec["width"])
        assert np.mean(mask == expected.mask) > 0.999, spec["tag"]
        got = received[(spec["camera"], sent["stamp"])]
        np.testing.assert_allclose(got["raw_probabilities"], expected.activity_probs, atol=1e-4)
        assert got["class_names"] == act and got["label"] == act[got["class_id"]]
    assert {tuple(r["class_names"]) for r in result["received"]["info"]} == {tuple(seg)}
    # At the model's own working size the same frame gives other probabilities: the override was in effect.
    left = frame_from_array(synthetic_image(3, 320, 240), "rgb8")
    (own_size,) = InferenceEngine(tiny_model, device="cpu").infer([left])
    (overridden,) = engine.infer([left])
    assert not np.allclose(own_size.activity_probs, overridden.activity_probs, atol=1e-4)


def yaml_dump(data) -> str:
    import yaml

    return yaml.safe_dump(data)

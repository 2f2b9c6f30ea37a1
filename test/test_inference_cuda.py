"""The engine on a CUDA GPU: ``pytest -m cuda`` (skipped, with the reason, where CUDA is absent).

Same assertions for every backend that runs here (eager, compile with CUDA graphs, onnxruntime with the CUDA
execution provider and IO binding, tensorrt where it imports) in fp32, fp16 and bf16: masks and activity
probabilities against the CPU fp32 reference; pinned host buffers; one host wait per batch (counted with
PyTorch's GPU trace hooks, in a fresh process); device memory back to its baseline after ``close()`` and after
the node's cleanup transition; a real out-of-memory error reported and the next frames served.
``scripts/gpu_check.sh`` runs this file on a GPU machine.
"""
from __future__ import annotations

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from endoarss_ros.inference import InferenceEngine, frame_from_array
from endoarss_ros.inference.backends import DTYPES, BackendUnavailable
from endoarss_ros.inference.options import BACKENDS, PRECISIONS
from endoarss_ros.inference.postprocess import device_mask, reference_logits_argmax
from test.conftest import REPO

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: torch.cuda.is_available() is False"),
]

DEMO = REPO / "models" / "demo" / "endoarss_demo.safetensors"
CHEAPEST_FIRST = sorted(BACKENDS, key=["eager", "onnxruntime", "tensorrt", "compile"].index)  # builds last
# (mask pixel agreement, activity probability tolerance) against the CPU fp32 reference
BARS = {"fp32": (0.999, 1e-3), "fp16": (0.995, 1e-2), "bf16": (0.995, 1e-2)}


def _esd(H, W, encoding, seed):
    from endoarss_ros.data.synth import generate_frame

    rgb = generate_frame(seed, seed % 3, (H, W))[0]
    pixels = rgb[:, :, ::-1] if encoding == "bgr8" else rgb
    return frame_from_array(np.ascontiguousarray(pixels), encoding)


@pytest.fixture(scope="module")
def frames():
    """Two same-size cameras of different encodings and a third size: batches mix sizes and encodings."""
    return [_esd(540, 960, "rgb8", 1), _esd(540, 960, "bgr8", 2), _esd(1080, 1920, "rgb8", 3)]


@pytest.fixture(scope="module")
def cpu_reference(frames, tmp_path_factory):
    eng = InferenceEngine(str(DEMO), device="cpu", preprocess="torch", max_batch=1,
                          cache_dir=tmp_path_factory.mktemp("cpu"))
    return [eng.infer([f], overlay_alpha=0.5)[0] for f in frames]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One engine cache for the module (and its child processes): each graph / ONNX file is built once."""
    path = tmp_path_factory.mktemp("engines")
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(path / "inductor"))
    return path


def _engine(backend, precision, cache_dir, **kw):
    """The CUDA engine, or a skip naming why this backend does not run here."""
    kw.setdefault("max_batch", 1 if backend in ("compile", "tensorrt") else 2)  # one graph / engine to build
    try:
        return InferenceEngine(str(DEMO), device="cuda", backend=backend, precision=precision, cache_dir=cache_dir,
                               fallback=False, **kw)
    except BackendUnavailable as e:
        pytest.skip(f"{backend} {precision} does not run here: {e}")


def test_device_upsample_is_the_exact_answer_for_both_corner_conventions(tmp_path):
    """The device's bilinear upsample + argmax against the CPU reference definition, on the same logits."""
    g = torch.Generator().manual_seed(0)
    for ac in (False, True):  # endoarss / official family
        logits = torch.nn.functional.interpolate(torch.randn(2, 7, 8, 8, generator=g) * 4, size=(42, 42),
                                                 mode="bicubic", align_corners=False)
        got = device_mask(logits.cuda(), 1080, 1920, "logits", ac).cpu().numpy()
        for i in range(2):
            ref = reference_logits_argmax(logits[i].numpy(), 1080, 1920, align_corners=ac)
            assert (got[i] == ref).mean() >= 0.9999


def test_host_buffers_are_pinned(frames, cache):
    eng = _engine("eager", "fp32", cache)
    eng.infer(frames, overlay_alpha=0.5)
    assert eng._bufs and eng._probs_host.is_pinned()
    for buf in eng._bufs.values():
        assert buf.host_u8.is_pinned() and buf.mask_host.is_pinned() and buf.overlay_host().is_pinned()
        assert buf.dev_u8.is_cuda
    eng.close()


_OOM_PROBE = r"""
import json, logging, sys
import numpy as np, torch
from endoarss_ros.inference import DeviceOutOfMemory, InferenceEngine, frame_from_array
logging.basicConfig(level=logging.ERROR)
model, cache = sys.argv[1], sys.argv[2]
rng = np.random.default_rng(0)
small = [frame_from_array(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8), "rgb8")]
huge = [frame_from_array(np.zeros((8000, 8000, 3), np.uint8), "rgb8")]  # its float RGB alone is 768 MB
eng = InferenceEngine(model, device="cuda", max_batch=1, cache_dir=cache)
want = eng.infer(small)[0]
torch.cuda.synchronize()
limit = torch.cuda.memory_reserved() + 512 * 2**20
torch.cuda.set_per_process_memory_fraction(limit / torch.cuda.get_device_properties(0).total_memory)
error = None
try:
    eng.infer(huge)
except DeviceOutOfMemory as e:
    error = str(e)
after = [eng.infer(small)[0] for _ in range(3)]
print(json.dumps({"error": error, "oom_errors": eng.oom_errors,
                  "served": all(np.array_equal(a.mask, want.mask) for a in after)}))
"""


def test_out_of_memory_in_a_frame_is_reported_and_the_next_frames_served(cache):
    """A per-process memory fraction makes a real CUDA out-of-memory error (fresh process: the fraction stays)."""
    out = subprocess.run([sys.executable, "-c", _OOM_PROBE, str(DEMO), str(cache)], capture_output=True,
                         text=True, timeout=300, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["error"] and "out of memory for a batch of 1 frame(s) (8000x8000)" in r["error"], r
    assert r["oom_errors"] == 1 and r["served"], r
    assert "out of memory" in out.stderr  # logged, for the node's log and diagnostics


_SYNC_PROBE = r"""
import json, sys
import numpy as np, torch
from torch.cuda import _gpu_trace
from endoarss_ros.inference import InferenceEngine, frame_from_array
backend, model, cache, max_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
rng = np.random.default_rng(0)
frames = [frame_from_array(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8), "rgb8"),
          frame_from_array(rng.integers(0, 256, (540, 960, 3), dtype=np.uint8), "bgr8"),
          frame_from_array(rng.integers(0, 256, (1080, 1920, 3), dtype=np.uint8), "rgb8")][:max_batch + 1]
eng = InferenceEngine(model, device="cuda", backend=backend, max_batch=max_batch, cache_dir=cache, fallback=False)
for _ in range(3):  # warm: graphs recorded, buffers allocated
    eng.infer(frames, overlay_alpha=0.5)
waits = []
_gpu_trace.register_callback_for_device_synchronization(lambda: waits.append("device"))
_gpu_trace.register_callback_for_stream_synchronization(lambda s: waits.append("stream"))
_gpu_trace.register_callback_for_event_synchronization(lambda e: waits.append("event"))
torch._C._activate_gpu_trace()
before = eng.host_syncs
calls = 4
for _ in range(calls):
    eng.infer(frames, overlay_alpha=0.5)
batches = calls * -(-len(frames) // max_batch)
print(json.dumps({"backend": eng.backend, "waits": waits, "engine": eng.host_syncs - before, "batches": batches}))
"""


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", "compile"])
def test_one_host_synchronisation_per_batch(cache, backend):
    max_batch = 1 if backend == "compile" else 2
    out = subprocess.run([sys.executable, "-c", _SYNC_PROBE, backend, str(DEMO), str(cache), str(max_batch)],
                         capture_output=True, text=True, timeout=600, cwd=REPO, env=dict(os.environ))
    if "BackendUnavailable" in out.stderr:
        pytest.skip(f"{backend} does not run here: {out.stderr.strip().splitlines()[-1]}")
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["engine"] == r["batches"], r
    assert len(r["waits"]) == r["batches"], r  # every wait PyTorch saw is the engine's one per batch


@pytest.mark.parametrize("backend", ["eager", "onnxruntime", "compile"])
def test_device_memory_back_to_baseline_after_close(frames, cache, backend):
    def cycle():
        eng = _engine(backend, "fp32", cache)
        eng.infer(frames, overlay_alpha=0.5)
        used = torch.cuda.memory_allocated()
        eng.close()
        del eng
        gc.collect()
        return used

    cycle()  # first use loads CUDA modules and library handles for good: not the engine's memory
    torch.cuda.synchronize()
    base_alloc, base_reserved, base_free = (torch.cuda.memory_allocated(), torch.cuda.memory_reserved(),
                                            torch.cuda.mem_get_info()[0])
    assert cycle() > base_alloc
    torch.cuda.synchronize()
    # What "back to baseline" means, in the allocator's own accounting (torch.cuda.memory_stats):
    # * allocated (active blocks) = live tensors + the cuBLAS workspaces, which PyTorch takes from the caching
    #   allocator, one per (handle, stream). close() clears them, but a compiled graph's replay (CUDA graphs on
    #   the engine's stream) may take one again inside its private pool before the graphs are collected: up to
    #   one workspace per stream the engine used (its own and the default one) may remain. The engine's own
    #   memory (weights, buffers; >= 20 MiB for the demo model) cannot hide inside that bound.
    # * reserved = segments held from the driver, private CUDA-graph pools included: emptied by close(), so
    #   never above the baseline's.
    leftover = torch.cuda.memory_allocated() - base_alloc
    assert 0 <= leftover <= 2 * _cublas_workspace_bytes(), (leftover, torch.cuda.memory_summary())
    assert torch.cuda.memory_reserved() <= base_reserved + leftover
    # memory outside PyTorch's allocator (ONNX Runtime's arena, TensorRT) is back too, to 64 MiB
    assert torch.cuda.mem_get_info()[0] >= base_free - 64 * 2**20


def _cublas_workspace_bytes() -> int:
    """One cuBLAS workspace as PyTorch sizes it: CUBLAS_WORKSPACE_CONFIG (":SIZE_KiB:COUNT" pairs), else its
    default (32 MiB on compute capability 9.x and later, 4 MiB x 2 + 16 KiB x 8 before)."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if config:
        numbers = [int(v) for v in config.split(":") if v]
        return sum(size * 1024 * count for size, count in zip(numbers[::2], numbers[1::2]))
    return 32 * 2**20 if torch.cuda.get_device_capability()[0] >= 9 else 4096 * 1024 * 2 + 16 * 1024 * 8


def test_device_memory_back_to_baseline_after_the_nodes_cleanup(tmp_path):
    rclpy = pytest.importorskip("rclpy", reason="the node's cleanup transition needs ROS 2 (rclpy), absent here")
    from rclpy.parameter import Parameter

    from endoarss_ros.ros.node import PerceptionNode

    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    rclpy.init()
    try:
        node = PerceptionNode(parameter_overrides=[
            Parameter("model", value=str(DEMO)), Parameter("device", value="cuda"),
            Parameter("autostart", value=False), Parameter("warmup_size", value=[540, 960]),
            Parameter("engine_cache_dir", value=str(tmp_path))])
        node.trigger_configure()
        assert node._engine is not None and torch.cuda.memory_allocated() > base
        node.trigger_cleanup()
        assert node._engine is None
        gc.collect()
        assert torch.cuda.memory_allocated() == base
        node.destroy_node()
    finally:
        rclpy.shutdown()


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("backend", CHEAPEST_FIRST)
def test_masks_and_probabilities_match_the_cpu_fp32_reference(frames, cpu_reference, cache, backend, precision):
    eng = _engine(backend, precision, cache)
    assert next(eng.model.parameters()).dtype == DTYPES[precision] and eng._pre == "torch"
    agree_min, atol = BARS[precision]
    for got, want in zip(eng.infer(frames, overlay_alpha=0.5), cpu_reference):
        same = got.mask == want.mask
        assert same.mean() >= agree_min, (backend, precision, same.mean())
        np.testing.assert_allclose(got.activity_probs, want.activity_probs, atol=atol)
        assert np.abs(got.overlay.astype(int) - want.overlay.astype(int))[same].max() <= 1
    eng.close()

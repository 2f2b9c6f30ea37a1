"""Every engine path on the CPU: the device-style path (``preprocess='torch'``: per-size buffers, device-side
postprocess and overlay) and the cv2 path, against each other and against a plain reference (float, resize,
model, upsample, argmax); batches mixing sizes and encodings, more frames than ``max_batch``, odd sizes, buffer
reuse and eviction, ``copy_outputs=False``, precision checks and out-of-memory recovery."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from endoarss_ros.inference import DeviceOutOfMemory, InferenceEngine, frame_from_array
from endoarss_ros.inference.engine import MAX_CACHED_SIZES
from endoarss_ros.inference.frames import ENCODINGS
from endoarss_ros.inference.preprocess import reference_area_resize, reference_rgb
from endoarss_ros.model import ModelConfig, build_model, load_model
from test.conftest import REPO

DEMO = REPO / "models" / "demo" / "endoarss_demo.safetensors"


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = build_model(ModelConfig.endoarss_tiny(input_size=(56, 56))).eval()
    for mod in m.modules():  # trained-like BN statistics
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2.0)
    return m


@pytest.fixture(scope="module")
def demo():
    return load_model(DEMO).eval()


def _rgb(H: int, W: int, seed: int) -> np.ndarray:
    """A smooth image with blobs (so masks have regions, not noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 / W, yy * 255 / H, (xx + yy) * 127 / (H + W)], axis=2)
    for _ in range(3):
        cy, cx, r = rng.uniform(0, H), rng.uniform(0, W), rng.uniform(0.1, 0.3) * min(H, W)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    return np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)


def _frame(H: int, W: int, encoding: str, seed: int = 0):
    rgb = _rgb(H, W, seed)
    alpha = np.full((H, W, 1), 200, np.uint8)
    grey = rgb.mean(axis=2, keepdims=True).astype(np.uint8)
    chroma = np.empty((H, W, 1), np.uint8)  # U at even columns, V at odd ones
    chroma[:, 0::2, 0], chroma[:, 1::2, 0] = rgb[:, 0::2, 2] // 2 + 64, rgb[:, 1::2, 0] // 2 + 64
    arr = {"rgb8": rgb, "bgr8": rgb[:, :, ::-1], "rgba8": np.dstack([rgb, alpha]),
           "bgra8": np.dstack([rgb[:, :, ::-1], alpha]), "mono8": grey,
           "yuyv": np.dstack([grey, chroma]), "yuv422_yuy2": np.dstack([grey, chroma]),
           "uyvy": np.dstack([chroma, grey]), "yuv422": np.dstack([chroma, grey])}[encoding]
    return frame_from_array(np.ascontiguousarray(arr), encoding)


def _plain_reference(model, frame):
    """float64 RGB -> box-filter resize -> model -> bilinear upsample -> argmax (no engine code but the
    documented colour conversion and resize definitions)."""
    small = reference_area_resize(reference_rgb(frame), tuple(model.config.input_size)) / 255.0
    x = torch.from_numpy(small).permute(2, 0, 1)[None].float()
    with torch.inference_mode():
        out = model(x, output_size=None)
        up = F.interpolate(out.segmentation, size=frame.size, mode="bilinear",
                           align_corners=model.config.resize_align_corners)
    return up.argmax(1)[0].numpy(), torch.softmax(out.activity, -1)[0].numpy()


def _alone(eng, frames, alpha=None):
    return [eng.infer([f], overlay_alpha=alpha)[0] for f in frames]


def _same(a, b, probs_atol=1e-5):
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_allclose(a.activity_probs, b.activity_probs, atol=probs_atol)
    if a.overlay is not None or b.overlay is not None:
        np.testing.assert_array_equal(a.overlay, b.overlay)


@pytest.mark.parametrize("preprocess", ["torch", "cv2"])
def test_same_size_frames_of_different_encodings_keep_their_own_slots(demo, tmp_path, preprocess):
    """An rgb8 and a bgr8 camera of one size (and a YUV one) in one batch: each frame's mask, probabilities
    and overlay are its own, as when it runs alone (the torch path used to share one buffer row)."""
    a, b = _frame(48, 64, "rgb8", seed=1), _frame(48, 64, "bgr8", seed=2)
    c = _frame(48, 64, "yuyv", seed=3)
    same_pixels_as_a = frame_from_array(np.ascontiguousarray(a.pixels[:, :, ::-1]), "bgr8")
    eng = InferenceEngine(demo, device="cpu", preprocess=preprocess, max_batch=4, cache_dir=tmp_path)
    frames = [a, b, c, same_pixels_as_a]
    together = eng.infer(frames, overlay_alpha=0.5)
    for got, want in zip(together, _alone(eng, frames, 0.5)):
        _same(got, want)
    assert not np.array_equal(together[0].mask, together[1].mask)
    _same(together[3], together[0])  # the same picture in another encoding gives the same answer
    eng.close()


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_encoding_on_both_paths_matches_the_plain_reference(demo, tmp_path, encoding):
    frames = [_frame(190, 252, encoding, seed=s) for s in (4, 5)]
    dev = InferenceEngine(demo, device="cpu", preprocess="torch", max_batch=2, cache_dir=tmp_path)
    cv = InferenceEngine(demo, device="cpu", preprocess="cv2", max_batch=2, cache_dir=tmp_path)
    for f, rd, rc in zip(frames, dev.infer(frames), cv.infer(frames)):
        ref_mask, ref_probs = _plain_reference(demo, f)
        assert (rd.mask == ref_mask).mean() >= 0.999  # same definitions, float32 instead of float64
        np.testing.assert_allclose(rd.activity_probs, ref_probs, atol=1e-4)
        assert (rc.mask == ref_mask).mean() >= 0.98  # INTER_AREA on uint8 instead of the exact box filter
        np.testing.assert_allclose(rc.activity_probs, ref_probs, atol=0.05)


@pytest.mark.parametrize("preprocess", ["torch", "cv2"])
def test_mixed_sizes_odd_sizes_and_more_frames_than_max_batch(demo, tmp_path, preprocess):
    specs = [(61, 97, "rgb8"), (40, 50, "bgr8"), (61, 97, "rgb8"), (33, 47, "mono8"), (40, 50, "rgba8"),
             (61, 97, "bgr8"), (35, 48, "uyvy")]
    frames = [_frame(H, W, e, seed=i) for i, (H, W, e) in enumerate(specs)]
    eng = InferenceEngine(demo, device="cpu", preprocess=preprocess, max_batch=3, cache_dir=tmp_path)
    batched = eng.infer(frames, overlay_alpha=0.4)
    assert [r.mask.shape for r in batched] == [(H, W) for H, W, _ in specs]
    for got, want in zip(batched, _alone(eng, frames, 0.4)):
        _same(got, want)
    eng.close()


def test_buffers_reused_and_eviction_beyond_8_sizes_never_frees_a_buffer_in_use(demo, tmp_path):
    sizes = [(30 + 2 * i, 40 + 3 * i) for i in range(MAX_CACHED_SIZES + 2)]
    frames = [_frame(H, W, "rgb8", seed=i) for i, (H, W) in enumerate(sizes)]
    eng = InferenceEngine(demo, device="cpu", preprocess="torch", max_batch=len(frames), cache_dir=tmp_path)
    together = eng.infer(frames, overlay_alpha=0.6)  # one batch with 10 sizes
    ref = InferenceEngine(demo, device="cpu", preprocess="torch", max_batch=1, cache_dir=tmp_path)
    for got, want in zip(together, _alone(ref, frames, 0.6)):
        _same(got, want)
    assert len(eng._bufs) == len(sizes)  # none dropped while the batch used it
    assert len(ref._bufs) == MAX_CACHED_SIZES and list(ref._bufs) == [(H, W, 3) for H, W in sizes[-8:]]
    kept = ref._bufs[(*sizes[-1], 3)]
    ref.infer([frames[-1]])
    assert ref._bufs[(*sizes[-1], 3)] is kept  # reused, not reallocated
    eng.close()
    ref.close()


def test_copy_outputs_false_gives_views_of_the_last_chunk_only(demo, tmp_path):
    frames = [_frame(44, 60, "rgb8", seed=10 + i) for i in range(5)]
    copies = InferenceEngine(demo, device="cpu", preprocess="torch", max_batch=2, cache_dir=tmp_path)
    views = InferenceEngine(demo, device="cpu", preprocess="torch", max_batch=2, cache_dir=tmp_path,
                            copy_outputs=False)
    want, got = copies.infer(frames, overlay_alpha=0.5), views.infer(frames, overlay_alpha=0.5)
    for g, w in zip(got, want):
        _same(g, w)  # earlier chunks reuse the buffer rows: their results must not be views
    buf = views._bufs[(44, 60, 3)]
    assert [np.shares_memory(g.mask, buf.mask_host_np) for g in got] == [False] * 4 + [True]
    assert not any(np.shares_memory(w.mask, copies._bufs[(44, 60, 3)].mask_host_np) for w in want)
    other = _frame(44, 60, "bgr8", seed=99)
    other_mask = copies.infer([other])[0].mask
    assert not np.array_equal(other_mask, want[4].mask)
    views.infer([other])  # the documented lifetime: a view is valid until the next call, which reuses its row
    np.testing.assert_array_equal(got[4].mask, other_mask)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_half_precision_on_a_cpu_is_refused_clearly(tiny, tmp_path, precision):
    with pytest.raises(ValueError, match=f"precision '{precision}' needs a CUDA device.*use precision='fp32'"):
        InferenceEngine(tiny, device="cpu", precision=precision, cache_dir=tmp_path)
    if not torch.cuda.is_available():  # 'auto' resolves to the CPU here: same answer, never a slow path
        with pytest.raises(ValueError, match="needs a CUDA device"):
            InferenceEngine(tiny, device="auto", precision=precision, cache_dir=tmp_path)


def test_out_of_memory_in_a_batch_is_reported_and_the_next_batch_served(tiny, tmp_path, caplog):
    """The fault is injected into the backend (a real device OOM is the cuda test's job): the engine logs it,
    counts it, raises DeviceOutOfMemory naming the batch, drops its size buffers and serves the next batch."""
    eng = InferenceEngine(tiny, device="cpu", preprocess="torch", cache_dir=tmp_path)
    frames = [_frame(40, 56, "rgb8", seed=20)]
    want = eng.infer(frames)[0]
    run = eng._runner.run
    calls = []

    def failing_once(x):
        calls.append(x.shape[0])
        if len(calls) == 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return run(x)

    eng._runner.run = failing_once
    with caplog.at_level(logging.ERROR, logger="endoarss_ros.inference.engine"):
        with pytest.raises(DeviceOutOfMemory, match=r"out of memory for a batch of 1 frame\(s\) \(56x40\)"):
            eng.infer(frames)
    assert eng.oom_errors == 1 and eng._bufs == {}
    assert any("out of memory" in r.getMessage() for r in caplog.records)
    _same(eng.infer(frames)[0], want)
    assert calls == [1, 1]


def test_upsample_modes_on_the_cpu_path(demo, tmp_path):
    """'logits' (fast exact) == 'logits-dense' (every class upsampled) to float-rounding ties; 'mask' is the
    low-resolution argmax, close but not equal."""
    frames = [_frame(270, 480, "rgb8", seed=30 + i) for i in range(2)]
    out = {m: InferenceEngine(demo, device="cpu", upsample=m, cache_dir=tmp_path).infer(frames)
           for m in ("logits", "logits-dense", "mask")}
    for fast, dense, low in zip(out["logits"], out["logits-dense"], out["mask"]):
        assert (fast.mask == dense.mask).mean() >= 0.9999
        assert 0.9 <= (low.mask == fast.mask).mean() < 1.0
        np.testing.assert_array_equal(fast.activity_probs, dense.activity_probs)


class _DispatchedOps(TorchDispatchMode):
    """Every aten op the code under it dispatches, with the tensors each one produced (to tell an index tensor
    computed on the device from one made out of host data)."""

    def __init__(self):
        super().__init__()
        self.ops: list[str] = []
        self.host_made: list[str] = []  # ops that turned Python data into a tensor (then copied to the device)
        self.foreign_indices: list[str] = []  # aten.index with an index tensor that no recorded op produced
        self._produced: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func)
        self.ops.append(name)
        if "lift_fresh" in name or name.startswith("aten.scalar_tensor"):
            self.host_made.append(name)
        if name.startswith("aten.index.") or name.startswith("aten.index_put"):
            indices = [t for t in args[1] if isinstance(t, torch.Tensor)]
            if any(t.data_ptr() not in self._produced for t in indices):
                self.foreign_indices.append(name)
        out = func(*args, **(kwargs or {}))
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor):
                self._produced.add(t.data_ptr())
        return out


@pytest.fixture(scope="module")
def torch_path_engine(tiny):
    with InferenceEngine(tiny, device="cpu", preprocess="torch", max_batch=2) as eng:
        yield eng


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_device_path_makes_no_tensor_from_host_data_per_batch(torch_path_engine, encoding):
    """On CUDA a tensor made from Python data inside the per-batch path (a list index such as ``x[:, [2, 1, 0]]``,
    a ``torch.tensor(...)`` constant) is a blocking host->device copy, i.e. a stream synchronisation mid-batch.
    Recorded on the CPU, the device path (preprocess, model, device mask and overlay) must dispatch none."""
    eng = torch_path_engine
    C = ENCODINGS[encoding]
    frames = [frame_from_array(np.random.default_rng(s).integers(0, 256, (40, 66, C), dtype=np.uint8), encoding)
              for s in range(2)]
    eng.infer(frames, overlay_alpha=0.5)  # buffers and backend made outside the recording
    with _DispatchedOps() as rec:
        eng.infer(frames, overlay_alpha=0.5)
    assert "aten.flip.default" in rec.ops or encoding not in ("bgr8", "bgra8"), rec.ops
    assert rec.host_made == [], f"{encoding}: tensors made from host data per batch: {rec.host_made}"
    assert rec.foreign_indices == [], f"{encoding}: index tensors not computed on the device: {rec.foreign_indices}"

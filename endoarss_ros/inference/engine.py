"""The inference engine: raw frames -> device -> model -> mask / activity -> numpy, in one pipeline.

Per batch of frames (``max_batch`` at most per forward; frames of different sizes and encodings share one
forward, since all are resized to the model's working size first). Each frame owns one slot of the batch:
row ``s`` of the model input, of the probabilities and of its size's buffers.

1. upload: the uint8 pixels go into the pinned host buffer of their size and on to the device with a
   non-blocking copy (CUDA); on a CPU device the ``cv2`` path resizes the uint8 view directly;
2. preprocess: colour conversion, resize, scale to [0, 1] (see ``preprocess``); the model normalises;
3. forward: the backend (eager / compile / onnxruntime / tensorrt) on ``(B, 3, h, w)``;
4. postprocess: class masks at the frame's size (see ``postprocess``), softmax of the activity logits,
   the optional overlay (on the device on CUDA);
5. download: non-blocking copies of the uint8 masks, overlays and probabilities into pinned buffers, then the
   batch's one host wait (CUDA). Nothing else in a batch waits for the device (``host_syncs`` counts the waits;
   ``profile=True`` adds one per stage for exact stage times).

On CUDA all of it runs on the engine's own stream. Buffers (pinned host, device input, masks) are allocated once
per frame size and reused; the 8 most recently used sizes are kept (never one the current batch uses).
"""
from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from endoarss_ros.model import load_model
from endoarss_ros.model.deploy import prepare_for_inference

from .backends import (
    DTYPES,
    RUNNERS,
    BackendUnavailable,
    LowResForward,
    default_cache_dir,
    fallback_chain,
    model_digest,
)
from .colors import class_colors
from .frames import ENCODINGS, RawFrame
from .options import BACKENDS, HALF_PRECISIONS, PRECISIONS, PREPROCESS_MODES, UPSAMPLE_MODES
from .postprocess import (
    cpu_overlay,
    dense_logits_argmax,
    device_mask,
    device_overlay,
    logits_argmax,
    nearest_mask,
    top_class_probability,
)
from .preprocess import cv2_full_rgb, cv2_preprocess, torch_preprocess, torch_to_rgb

log = logging.getLogger(__name__)

STAGES = ("upload", "preprocess", "forward", "postprocess", "download")
MAX_CACHED_SIZES = 8


@dataclass
class FrameResult:
    mask: np.ndarray  # uint8 (H, W) class ids at the input resolution
    activity_probs: np.ndarray  # float32 (K,) softmax
    overlay: np.ndarray | None = None  # uint8 (H, W, 3) RGB, only when overlay_alpha was given
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (shared by a batch's frames)
    # float32 (h, w) top-class probability of each pixel at the segmentation head's resolution (the whole
    # frame, resized to the model's input): the model's per-pixel confidence, for PerceptionStatus
    confidence: np.ndarray | None = None


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory for one batch: that batch is lost, the engine has released its cached
    memory and serves the next batch."""


def resolve_device(device: str | torch.device) -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(device)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if d.type == "cuda" and d.index is None:
        d = torch.device("cuda", torch.cuda.current_device())
    return d


class _SizeBuffers:
    """Per (H, W, C) frame size, one row per batch slot: pinned host input, device input, pinned host masks
    (and overlays, made on first use)."""

    def __init__(self, n: int, H: int, W: int, C: int, device: torch.device):
        self.cuda = device.type == "cuda"
        self.n, self.H, self.W = n, H, W
        self.host_u8 = torch.empty((n, H, W, C), dtype=torch.uint8, pin_memory=self.cuda)
        self.host_u8_np = self.host_u8.numpy()
        self.dev_u8 = torch.empty((n, H, W, C), dtype=torch.uint8, device=device) if self.cuda else self.host_u8
        self.mask_host = torch.empty((n, H, W), dtype=torch.uint8, pin_memory=self.cuda)
        self.mask_host_np = self.mask_host.numpy()
        self._overlay: torch.Tensor | None = None

    def overlay_host(self) -> torch.Tensor:
        if self._overlay is None:
            self._overlay = torch.empty((self.n, self.H, self.W, 3), dtype=torch.uint8, pin_memory=self.cuda)
        return self._overlay


@dataclass
class _Group:
    """Frames of one (H, W, C, encoding) in batch slots ``s0:s1`` (``idx``: their positions in the call)."""

    H: int
    W: int
    C: int
    encoding: str
    s0: int
    s1: int
    idx: list[int]
    buf: _SizeBuffers | None = None  # the torch path's buffers (rows s0:s1 belong to these frames)


class InferenceEngine:
    """See the module docstring. ``backend`` falls back along ``tensorrt -> compile -> onnxruntime -> eager``
    when the requested one cannot run here; ``.backend`` is the one in effect, ``.notes`` says why.

    ``precision`` fp16 / bf16 need a CUDA device: on a CPU they raise ``ValueError`` (they would run far slower
    than fp32 there). Extra options: ``upsample`` (see ``options.UPSAMPLE_MODES``), ``preprocess`` ('auto' =
    cv2 on a CPU, torch on CUDA; 'torch' runs the device path on a CPU too, e.g. to test it; the cv2 modes are
    CPU only), ``channels_last`` (default: on CUDA), ``compile_mode``, ``profile`` (synchronise the device at
    each stage boundary for exact stage times), ``copy_outputs`` (False: the masks and overlays of the last
    ``max_batch`` frames of a call are views into reused buffers, valid until the next ``infer``),
    ``fallback`` (False: raise ``BackendUnavailable`` instead of falling back, e.g. to measure one backend).
    """

    def __init__(
        self,
        model_or_path,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        backend: str = "eager",
        max_batch: int = 2,
        cache_dir: str | Path | None = None,
        upsample: str = "logits",
        preprocess: str = "auto",
        channels_last: bool | None = None,
        compile_mode: str | None = None,
        profile: bool = False,
        copy_outputs: bool = True,
        fallback: bool = True,
    ):
        self._device = resolve_device(device)
        cuda = self._device.type == "cuda"
        self.check_options(precision, backend, upsample, preprocess, max_batch, cuda)
        self.notes: list[str] = []
        self.device = str(self._device)
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.max_batch = int(max_batch)
        self.upsample = upsample
        self.profile = bool(profile)
        self.copy_outputs = bool(copy_outputs)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self._pre = ("torch" if cuda else "cv2") if preprocess == "auto" else preprocess
        self.channels_last = cuda if channels_last is None else bool(channels_last)
        self._stream = torch.cuda.Stream(self._device) if cuda else None
        self.host_syncs = 0  # host waits for the device (one per batch on CUDA unless profiling)
        self.oom_errors = 0
        self.requested_backend = backend
        self._fallback = bool(fallback)
        self._compile_mode = compile_mode
        self._runner = None
        self.backend = ""
        with self._on_stream():
            self._set_up_model(model_or_path)
            self._allocate()
            self._select_backend(backend)
        self._sync()

    @staticmethod
    def check_options(precision, backend, upsample, preprocess, max_batch, cuda) -> None:
        for name, value, allowed in (("precision", precision, PRECISIONS), ("backend", backend, BACKENDS),
                                     ("upsample", upsample, UPSAMPLE_MODES),
                                     ("preprocess", preprocess, PREPROCESS_MODES)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if precision in HALF_PRECISIONS and not cuda:
            raise ValueError(f"precision {precision!r} needs a CUDA device; on a CPU it runs slower than fp32 "
                             "(no fast half-precision kernels there): use precision='fp32' or device='cuda'")
        if preprocess in ("cv2", "cv2-direct") and cuda:
            raise ValueError(f"preprocess={preprocess!r} is the CPU pipeline; on CUDA use 'auto' or 'torch'")

    # -- set-up ----------------------------------------------------------------------------------
    def _set_up_model(self, model_or_path) -> None:
        model = self._load(model_or_path)
        cfg = model.config
        self.config = cfg
        self.seg_classes: list[str] = list(cfg.seg_classes)
        self.activity_classes: list[str] = list(cfg.activity_classes)
        self.colors: np.ndarray = class_colors(self.seg_classes)
        self.input_hw = tuple(cfg.input_size)
        self.align_corners = bool(cfg.resize_align_corners)
        done = prepare_for_inference(model)
        self.notes.append(f"model optimised: {done['adapters_merged']} adapter layers merged, "
                          f"{done['conv_bn_fused']} conv+BN pairs fused")
        model = model.to(device=self._device, dtype=self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._fn = LowResForward(model).eval()
        self._digest: str | None = None

    def _allocate(self) -> None:
        self._colors_dev = torch.from_numpy(self.colors).to(self._device)
        x = torch.zeros((self.max_batch, 3, *self.input_hw), dtype=self.dtype, device=self._device)
        self._x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        self._small_np = np.empty((self.max_batch, *self.input_hw, 3), np.uint8)  # cv2 path
        self._small_t = torch.from_numpy(self._small_np)
        K = len(self.activity_classes)
        self._probs_host = torch.empty((self.max_batch, K), dtype=torch.float32,
                                       pin_memory=self._device.type == "cuda")
        self._bufs: OrderedDict[tuple[int, int, int], _SizeBuffers] = OrderedDict()

    def _load(self, model_or_path) -> nn.Module:
        if isinstance(model_or_path, nn.Module):
            return copy.deepcopy(model_or_path).cpu().float()  # never modify the caller's model

        return load_model(model_or_path, device="cpu")

    def _digest_fn(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.model)
        return self._digest

    def _make_runner(self, name: str):

        return RUNNERS[name](
            self._fn, device=self._device, precision=self.precision, input_hw=self.input_hw,
            cache_dir=self.cache_dir, digest_fn=self._digest_fn,
            channels_last=self.channels_last and name in ("eager", "compile"), compile_mode=self._compile_mode,
            stream=self._stream,
        )

    def _select_backend(self, requested: str, *, batch: int = 1) -> None:
        chain = fallback_chain(requested) if self._fallback else [requested]
        for i, name in enumerate(chain):
            try:
                runner = self._make_runner(name)
                note = runner.prepare(batch)
            except BackendUnavailable as e:
                nxt = chain[i + 1] if i + 1 < len(chain) else None
                msg = f"backend {name!r} unavailable: {e}" + (f"; falling back to {nxt!r}" if nxt else "")
                log.warning(msg)
                self.notes.append(msg)
                if nxt is None:
                    raise
                continue
            if self._runner is not None:
                self._runner.close()
            self._runner, self.backend = runner, name
            if note:
                self.notes.append(note)
            return

    def _ensure_batch(self, b: int) -> None:
        if b in self._runner.prepared:
            return
        try:
            note = self._runner.prepare(b)
            if note:
                self.notes.append(note)
        except BackendUnavailable as e:
            if not self._fallback:
                raise
            msg = f"backend {self.backend!r} failed for batch {b}: {e}; falling back to 'eager'"
            log.warning(msg)
            self.notes.append(msg)
            self._select_backend("eager", batch=b)

    def _buffers(self, H: int, W: int, C: int, in_use: set) -> _SizeBuffers:
        """The buffers of one frame size (LRU cache; a size the current batch uses is never evicted)."""
        key = (H, W, C)
        buf = self._bufs.get(key)
        if buf is not None:
            self._bufs.move_to_end(key)
            return buf
        for old in [k for k in self._bufs if k not in in_use][:max(0, len(self._bufs) + 1 - MAX_CACHED_SIZES)]:
            del self._bufs[old]
        buf = self._bufs[key] = _SizeBuffers(self.max_batch, H, W, C, self._device)
        return buf

    def warmup(self, sizes: Sequence[tuple[int, int]] = ((1080, 1920),), batch: int = 1,
               encoding: str = "rgb8", iterations: int = 2) -> None:
        """Build the backend for ``batch``, allocate the buffers for each (H, W) and run the pipeline."""
        batch = max(1, min(int(batch), self.max_batch))
        C = ENCODINGS[encoding]
        for H, W in sizes:
            frames = [RawFrame(np.zeros((H, W, C), np.uint8), encoding) for _ in range(batch)]
            for _ in range(iterations):
                self.infer(frames, overlay_alpha=None)

    # -- inference -------------------------------------------------------------------------------
    def _on_stream(self):
        return torch.cuda.stream(self._stream) if self._stream is not None else contextlib.nullcontext()

    def _sync(self) -> None:
        if self._stream is not None:
            self._stream.synchronize()
            self.host_syncs += 1

    def _mark(self, times: dict, stage: str, t0: float) -> float:
        """Add the time since ``t0`` to ``stage`` (after a device wait when profiling); returns the new t0."""
        if self.profile:
            self._sync()
        t = time.perf_counter()
        times[stage] += t - t0
        return t

    def infer(self, frames: Sequence[RawFrame], *, overlay_alpha: float | None = None) -> list[FrameResult]:
        """Masks and activity probabilities for ``frames`` (any sizes and encodings, in order).

        Raises ``DeviceOutOfMemory`` when the device runs out of memory (the engine stays usable).
        """
        if self._runner is None:
            raise RuntimeError("engine is closed")
        frames = list(frames)
        chunks = [frames[s:s + self.max_batch] for s in range(0, len(frames), self.max_batch)]
        results: list[FrameResult] = []
        with torch.inference_mode(), self._on_stream():
            for n, chunk in enumerate(chunks):
                keep_views = not self.copy_outputs and n == len(chunks) - 1  # earlier chunks' rows get reused
                try:
                    results.extend(self._infer_chunk(chunk, overlay_alpha, keep_views))
                except torch.cuda.OutOfMemoryError as e:
                    raise self._out_of_memory(chunk, e) from e
        return results

    def _out_of_memory(self, frames: list[RawFrame], e: Exception) -> DeviceOutOfMemory:
        self.oom_errors += 1
        self._bufs.clear()  # sizes come back on demand; the cached ones may be what filled the device
        if self._stream is not None:
            self._stream.synchronize()
            torch.cuda.empty_cache()
        sizes = sorted({f"{f.width}x{f.height}" for f in frames})
        msg = (f"{self._device} out of memory for a batch of {len(frames)} frame(s) ({', '.join(sizes)}); "
               f"the batch is dropped and the engine carries on ({self.oom_errors} so far): {e}")
        log.error(msg)
        return DeviceOutOfMemory(msg)

    def _infer_chunk(self, frames: list[RawFrame], alpha: float | None, keep_views: bool) -> list[FrameResult]:
        b = len(frames)
        self._ensure_batch(b)
        times = dict.fromkeys(STAGES, 0.0)
        t_start = time.perf_counter()
        groups = self._plan(frames)
        x = self._x[:b]
        if self._pre == "torch":
            self._upload_and_preprocess(frames, groups, x, times)
        else:
            self._cv2_preprocess(frames, groups, x, times)
        t = time.perf_counter()
        seg, act = self._runner.run(x)
        t = self._mark(times, "forward", t)
        confidence = top_class_probability(seg)  # on the host after the batch's one wait
        masks, overlays = self._postprocess(frames, groups, seg, act, alpha, times)
        t = time.perf_counter()
        self._sync()  # the one wait: masks, overlays and probabilities are on the host after this
        times["download"] += time.perf_counter() - t
        times["total"] = time.perf_counter() - t_start
        return self._results(groups, masks, overlays, times, keep_views, confidence.numpy())

    def _plan(self, frames: list[RawFrame]) -> list[_Group]:
        """Group the frames by (H, W, C, encoding); each group gets consecutive batch slots and, on the torch
        path, its size's buffers (whose rows s0:s1 are then its own: two groups of one size never share rows)."""
        keyed: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            keyed.setdefault((*f.pixels.shape, f.encoding), []).append(i)
        groups, s = [], 0
        for (H, W, C, enc), idx in keyed.items():
            groups.append(_Group(H, W, C, enc, s, s + len(idx), idx))
            s += len(idx)
        if self._pre == "torch":
            in_use = {(g.H, g.W, g.C) for g in groups}
            for g in groups:
                g.buf = self._buffers(g.H, g.W, g.C, in_use)
        return groups

    def _upload_and_preprocess(self, frames, groups: list[_Group], x: torch.Tensor, times: dict) -> None:
        for g in groups:
            t = time.perf_counter()
            buf = g.buf
            for s, i in enumerate(g.idx, start=g.s0):
                np.copyto(buf.host_u8_np[s], frames[i].pixels)
            if buf.dev_u8 is not buf.host_u8:
                buf.dev_u8[g.s0:g.s1].copy_(buf.host_u8[g.s0:g.s1], non_blocking=True)
            t = self._mark(times, "upload", t)
            x[g.s0:g.s1].copy_(torch_preprocess(buf.dev_u8[g.s0:g.s1], g.encoding, self.input_hw))
            self._mark(times, "preprocess", t)

    def _cv2_preprocess(self, frames, groups: list[_Group], x: torch.Tensor, times: dict) -> None:
        t = time.perf_counter()
        prescale = self._pre == "cv2"
        for g in groups:
            for s, i in enumerate(g.idx, start=g.s0):
                cv2_preprocess(frames[i], self.input_hw, out=self._small_np[s], prescale=prescale)
        x.copy_(self._small_t[:x.shape[0]].permute(0, 3, 1, 2))
        x.mul_(1.0 / 255.0)
        self._mark(times, "preprocess", t)

    def _postprocess(self, frames, groups, seg, act, alpha, times) -> tuple[dict, dict]:
        """Masks (and overlays) per frame index: host views on the torch path (filled once the batch's wait
        is over), new arrays on the cv2 path. Enqueues the probabilities' download."""
        t = time.perf_counter()
        b = act.shape[0]
        self._probs_host[:b].copy_(torch.softmax(act.float(), dim=-1), non_blocking=self._stream is not None)
        masks: dict[int, np.ndarray] = {}
        overlays: dict[int, np.ndarray] = {}
        for g in groups:
            if g.buf is None:
                self._cpu_group(frames, g, seg[g.s0:g.s1], alpha, masks, overlays)
            else:
                self._device_group(g, seg[g.s0:g.s1], alpha, masks, overlays)
        self._mark(times, "postprocess", t)
        return masks, overlays

    def _cpu_group(self, frames, g: _Group, logits: torch.Tensor, alpha, masks: dict, overlays: dict) -> None:
        small = logits.argmax(dim=1).to(torch.uint8).numpy() if self.upsample == "mask" else None
        for j, i in enumerate(g.idx):
            if small is not None:
                masks[i] = nearest_mask(small[j], g.H, g.W)
            else:
                upsample = logits_argmax if self.upsample == "logits" else dense_logits_argmax
                masks[i] = upsample(logits[j].float().numpy(), g.H, g.W, align_corners=self.align_corners)
            if alpha is not None:
                overlays[i] = cpu_overlay(cv2_full_rgb(frames[i]), masks[i], self.colors, alpha)

    def _device_group(self, g: _Group, logits: torch.Tensor, alpha, masks: dict, overlays: dict) -> None:
        buf, rows = g.buf, slice(g.s0, g.s1)
        mask = device_mask(logits, g.H, g.W, self.upsample, self.align_corners)
        cuda = self._stream is not None
        buf.mask_host[rows].copy_(mask, non_blocking=cuda)
        ov_host = None
        if alpha is not None:
            ov = device_overlay(torch_to_rgb(buf.dev_u8[rows], g.encoding), mask, self._colors_dev, alpha)
            ov_host = buf.overlay_host()
            ov_host[rows].copy_(ov, non_blocking=cuda)
        for s, i in enumerate(g.idx, start=g.s0):
            masks[i] = buf.mask_host_np[s]
            if ov_host is not None:
                overlays[i] = ov_host[s].numpy()

    def _results(self, groups, masks, overlays, times, keep_views: bool, confidence) -> list[FrameResult]:
        probs = self._probs_host.numpy()
        out: dict[int, FrameResult] = {}
        for g in groups:
            copy_out = g.buf is not None and not keep_views  # device-path outputs live in reused buffers
            for s, i in enumerate(g.idx, start=g.s0):
                ov = overlays.get(i)
                out[i] = FrameResult(
                    mask=masks[i].copy() if copy_out else masks[i],
                    activity_probs=probs[s].copy(),
                    overlay=ov.copy() if (copy_out and ov is not None) else ov,
                    timings=dict(times),
                    confidence=confidence[s],
                )
        return [out[i] for i in range(len(out))]

    def close(self) -> None:
        """Release the backend, the model and every buffer; on CUDA the device memory goes back to where it
        was before the engine (PyTorch's cache emptied)."""
        if self._stream is not None:
            self._stream.synchronize()
        if self._runner is not None:
            self._runner.close()
        self._runner = self._fn = self.model = None
        self._bufs.clear()
        self._x = self._colors_dev = None
        if self._stream is not None:
            clear_workspaces = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
            if clear_workspaces is not None:  # cuBLAS keeps a workspace per stream otherwise
                clear_workspaces()
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

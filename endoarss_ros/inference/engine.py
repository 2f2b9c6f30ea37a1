"""The inference engine: raw frames -> device -> model -> mask / activity -> numpy, in one pipeline.

Per batch of frames (``max_batch`` at most per forward; frames of different sizes share one forward, since
all are resized to the model's working size first):

1. upload: the uint8 pixels go into a pinned host buffer and on to the device with a non-blocking copy
   (CUDA); on a CPU device the ``cv2`` path resizes the uint8 view directly (no full-resolution float);
2. preprocess: colour conversion, resize, scale to [0, 1] (see ``preprocess``); the model normalises;
3. forward: the backend (eager / compile / onnxruntime / tensorrt) on ``(B, 3, h, w)``;
4. postprocess: ``upsample='mask'`` -- argmax at the head's resolution then nearest-exact upsample of the
   uint8 mask; ``'logits'`` -- bilinear upsample of the logits then argmax (the released way, exact);
   softmax of the activity logits; optional overlay blended on the device;
5. download: one device-to-host copy of the uint8 masks (+ the K activity probabilities) into pinned
   buffers.

Buffers (pinned host, device input, masks, probabilities) are allocated once per frame size and reused;
transient device tensors come from PyTorch's caching allocator (no ``cudaMalloc`` in the steady state).
"""
from __future__ import annotations

import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backends import (
    BACKENDS,
    PRECISIONS,
    BackendUnavailable,
    LowResForward,
    default_cache_dir,
    fallback_chain,
    model_digest,
    optimise_model,
)
from .colors import class_colors
from .frames import ENCODINGS, RawFrame
from .preprocess import cv2_full_rgb, cv2_preprocess, torch_preprocess, torch_to_rgb

log = logging.getLogger(__name__)

UPSAMPLE_MODES = ("mask", "logits")
STAGES = ("upload", "preprocess", "forward", "postprocess", "download")


@dataclass
class FrameResult:
    mask: np.ndarray  # uint8 (H, W) class ids at the input resolution
    activity_probs: np.ndarray  # float32 (K,) softmax
    overlay: np.ndarray | None = None  # uint8 (H, W, 3) RGB, only when overlay_alpha was given
    timings: dict[str, float] = field(default_factory=dict)  # stage -> seconds (shared by a batch's frames)
    # float32 (h, w) top-class probability of each pixel at the segmentation head's resolution (the whole
    # frame, resized to the model's input): the model's per-pixel confidence, for PerceptionStatus
    confidence: np.ndarray | None = None


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
    """Per (H, W, C) frame size: pinned host input, device input, device + host masks."""

    def __init__(self, n: int, H: int, W: int, C: int, device: torch.device, on_device_post: bool):
        cuda = device.type == "cuda"
        self.host_u8 = torch.empty((n, H, W, C), dtype=torch.uint8, pin_memory=cuda)
        self.host_u8_np = self.host_u8.numpy()
        self.dev_u8 = torch.empty((n, H, W, C), dtype=torch.uint8, device=device) if cuda else self.host_u8
        self.mask_host = torch.empty((n, H, W), dtype=torch.uint8, pin_memory=cuda)
        self.mask_host_np = self.mask_host.numpy()
        self.mask_dev = (torch.empty((n, H, W), dtype=torch.uint8, device=device)
                         if cuda and on_device_post else self.mask_host)


class InferenceEngine:
    """See the module docstring. ``backend`` falls back along ``tensorrt -> compile -> onnxruntime -> eager``
    when the requested one cannot run here; ``.backend`` is the one in effect, ``.notes`` says why.

    Extra options: ``upsample`` ('mask' | 'logits'), ``preprocess`` ('auto' = cv2 on CPU, torch on CUDA;
    'torch' forces the device path, e.g. to test it on a CPU), ``channels_last`` (default: on CUDA),
    ``compile_mode``, ``profile`` (synchronise the device at each stage boundary for exact stage timings),
    ``copy_outputs`` (False: results are views into reused buffers, valid until the next ``infer``).
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
    ):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if upsample not in UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {UPSAMPLE_MODES}, got {upsample!r}")
        if preprocess not in ("auto", "cv2", "torch"):
            raise ValueError(f"preprocess must be 'auto', 'cv2' or 'torch', got {preprocess!r}")
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.notes: list[str] = []
        self._device = resolve_device(device)
        self.device = str(self._device)
        self.precision = precision
        self.dtype = PRECISIONS[precision]
        self.max_batch = int(max_batch)
        self.upsample = upsample
        self.profile = bool(profile)
        self.copy_outputs = bool(copy_outputs)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cuda = self._device.type == "cuda"
        self._pre = ("torch" if cuda else "cv2") if preprocess == "auto" else preprocess
        self.channels_last = cuda if channels_last is None else bool(channels_last)

        model = self._load(model_or_path)
        cfg = model.config
        self.config = cfg
        self.seg_classes: list[str] = list(cfg.seg_classes)
        self.activity_classes: list[str] = list(cfg.activity_classes)
        self.colors: np.ndarray = class_colors(self.seg_classes)
        self.input_hw = tuple(cfg.input_size)
        self.align_corners = bool(cfg.resize_align_corners)
        done = optimise_model(model)
        self.notes.append(f"model optimised: {done['adapters_merged']} adapter layers merged, "
                          f"{done['conv_bn_fused']} conv+BN pairs fused")
        model = model.to(device=self._device, dtype=self.dtype)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self._fn = LowResForward(model).eval()
        self._digest: str | None = None

        self._colors_dev = torch.from_numpy(self.colors).to(self._device)
        x = torch.zeros((self.max_batch, 3, *self.input_hw), dtype=self.dtype, device=self._device)
        self._x = x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
        self._small_np = np.empty((self.max_batch, *self.input_hw, 3), np.uint8)  # cv2 path
        self._small_t = torch.from_numpy(self._small_np)
        K = len(self.activity_classes)
        self._probs_host = torch.empty((self.max_batch, K), dtype=torch.float32, pin_memory=cuda)
        self._bufs: dict[tuple[int, int, int], _SizeBuffers] = {}

        self.requested_backend = backend
        self._compile_mode = compile_mode
        self._runner = None
        self.backend = ""
        self._select_backend(backend)

    # -- set-up ----------------------------------------------------------------------------------
    def _load(self, model_or_path) -> nn.Module:
        if isinstance(model_or_path, nn.Module):
            return copy.deepcopy(model_or_path).cpu().float()  # never modify the caller's model
        from endoarss_ros.model import load_model

        return load_model(model_or_path, device="cpu")

    def _digest_fn(self) -> str:
        if self._digest is None:
            self._digest = model_digest(self.model)
        return self._digest

    def _make_runner(self, name: str):
        from .backends import RUNNERS

        return RUNNERS[name](
            self._fn, device=self._device, precision=self.precision, input_hw=self.input_hw,
            cache_dir=self.cache_dir, digest_fn=self._digest_fn,
            channels_last=self.channels_last and name in ("eager", "compile"), compile_mode=self._compile_mode,
        )

    def _select_backend(self, requested: str, *, batch: int = 1) -> None:
        chain = fallback_chain(requested)
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
            msg = f"backend {self.backend!r} failed for batch {b}: {e}; falling back to 'eager'"
            log.warning(msg)
            self.notes.append(msg)
            self._select_backend("eager", batch=b)

    def _buffers(self, H: int, W: int, C: int) -> _SizeBuffers:
        key = (H, W, C)
        buf = self._bufs.get(key)
        if buf is None:
            if len(self._bufs) >= 8:  # many sizes (replaying mixed bags): drop the oldest
                self._bufs.pop(next(iter(self._bufs)))
            buf = self._bufs[key] = _SizeBuffers(self.max_batch, H, W, C, self._device, self._pre == "torch")
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
    def _sync(self) -> None:
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)

    def infer(self, frames: Sequence[RawFrame], *, overlay_alpha: float | None = None) -> list[FrameResult]:
        if self._runner is None:
            raise RuntimeError("engine is closed")
        frames = list(frames)
        results: list[FrameResult] = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.max_batch):
                results.extend(self._infer_chunk(frames[start:start + self.max_batch], overlay_alpha))
        return results

    def _infer_chunk(self, frames: list[RawFrame], alpha: float | None) -> list[FrameResult]:
        b = len(frames)
        self._ensure_batch(b)
        prof = self.profile
        times = dict.fromkeys(STAGES, 0.0)
        t_start = time.perf_counter()
        # group by (H, W, C, encoding): contiguous slot ranges in the batch
        groups: dict[tuple, list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault((*f.pixels.shape, f.encoding), []).append(i)
        order = [i for g in groups.values() for i in g]
        slots: list[tuple[tuple, int, int, list[int]]] = []
        s = 0
        for key, idx in groups.items():
            slots.append((key, s, s + len(idx), idx))
            s += len(idx)
        x = self._x[:b]

        # 1-2. upload + preprocess
        if self._pre == "cv2":
            t = time.perf_counter()
            for j, i in enumerate(order):
                cv2_preprocess(frames[i], self.input_hw, out=self._small_np[j])
            x.copy_(self._small_t[:b].permute(0, 3, 1, 2))
            x.mul_(1.0 / 255.0)
            times["preprocess"] = time.perf_counter() - t
        else:
            for (H, W, C, enc), s0, s1, idx in slots:
                t = time.perf_counter()
                buf = self._buffers(H, W, C)
                n = s1 - s0
                for j, i in enumerate(idx):
                    np.copyto(buf.host_u8_np[j], frames[i].pixels)
                if buf.dev_u8 is not buf.host_u8:
                    buf.dev_u8[:n].copy_(buf.host_u8[:n], non_blocking=True)
                if prof:
                    self._sync()
                t1 = time.perf_counter()
                times["upload"] += t1 - t
                x[s0:s1].copy_(torch_preprocess(buf.dev_u8[:n], enc, self.input_hw))
                if prof:
                    self._sync()
                times["preprocess"] += time.perf_counter() - t1

        # 3. forward
        t = time.perf_counter()
        seg, act = self._runner.run(x)
        if prof:
            self._sync()
        times["forward"] = time.perf_counter() - t
        confidence = top_class_probability(seg)  # enqueued now, on the host after the batch's one wait

        # 4. postprocess (+ 5. download, interleaved per size group)
        t = time.perf_counter()
        probs = torch.softmax(act.float(), dim=-1)
        cuda = self._device.type == "cuda"
        self._probs_host[:b].copy_(probs, non_blocking=cuda)
        masks: dict[int, np.ndarray] = {}
        overlays: dict[int, np.ndarray] = {}
        t_down = 0.0
        for (H, W, C, enc), s0, s1, idx in slots:
            n = s1 - s0
            logits = seg[s0:s1]
            if self._pre == "cv2":
                small = self._argmax_small(logits) if self.upsample == "mask" else None
                for j, i in enumerate(idx):
                    masks[i] = self._cpu_mask(logits[j:j + 1], small, j, H, W)
                    if alpha is not None:
                        overlays[i] = cpu_overlay(cv2_full_rgb(frames[i]), masks[i], self.colors, alpha)
                continue
            buf = self._buffers(H, W, C)
            mask = self._device_mask(logits, H, W)
            buf.mask_dev[:n].copy_(mask)
            ov = None
            if alpha is not None:
                ov = device_overlay(torch_to_rgb(buf.dev_u8[:n], enc), mask, self._colors_dev, alpha)
            if prof:
                self._sync()
            t1 = time.perf_counter()
            if buf.mask_host is not buf.mask_dev:
                buf.mask_host[:n].copy_(buf.mask_dev[:n], non_blocking=True)
            ov_host = ov.cpu() if ov is not None else None  # display only: not on the hot path
            if prof:
                self._sync()
            t_down += time.perf_counter() - t1
            for j, i in enumerate(idx):
                masks[i] = buf.mask_host_np[j]
                if ov_host is not None:
                    overlays[i] = ov_host[j].numpy()
        t1 = time.perf_counter()
        self._sync()  # the one wait: masks and probabilities are on the host after this
        t_end = time.perf_counter()
        times["download"] = t_down + (t_end - t1)
        times["postprocess"] = (t1 - t) - t_down
        times["total"] = t_end - t_start
        probs_np = self._probs_host[:b].numpy()
        confidence_np = confidence.numpy()
        out = []
        fresh = self._pre == "cv2"  # cv2 masks are new arrays already; device-path masks live in reused buffers
        slot_of = {i: j for j, i in enumerate(order)}
        for i in range(b):
            m = masks[i]
            out.append(FrameResult(
                mask=m.copy() if (self.copy_outputs and not fresh) else m,
                activity_probs=probs_np[slot_of[i]].copy(),
                overlay=overlays.get(i),
                timings=dict(times),
                confidence=confidence_np[slot_of[i]],
            ))
        return out

    def _argmax_small(self, logits: torch.Tensor) -> np.ndarray:
        return logits.argmax(dim=1).to(torch.uint8).cpu().numpy()

    def _cpu_mask(self, logits1, small, j, H, W) -> np.ndarray:
        import cv2

        if small is not None:
            return cv2.resize(small[j], (W, H), interpolation=cv2.INTER_NEAREST_EXACT)
        return cpu_logits_argmax(logits1[0].float().numpy(), H, W, align_corners=self.align_corners)

    def _device_mask(self, logits: torch.Tensor, H: int, W: int) -> torch.Tensor:
        if self.upsample == "mask":
            small = logits.argmax(dim=1, keepdim=True).to(torch.uint8)
            return F.interpolate(small, size=(H, W), mode="nearest-exact")[:, 0]
        up = F.interpolate(logits, size=(H, W), mode="bilinear", align_corners=self.align_corners)
        return up.argmax(dim=1).to(torch.uint8)

    def close(self) -> None:
        if self._runner is not None:
            self._runner.close()
        self._runner = None
        self._fn = None
        self.model = None
        self._bufs.clear()
        self._x = None
        if self._device.type == "cuda":
            torch.cuda.empty_cache()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def top_class_probability(logits: torch.Tensor) -> torch.Tensor:
    """``(B, C, h, w)`` segmentation logits -> ``(B, h, w)`` float32 softmax maximum, on the host: computed on the
    logits' device, copied without waiting (valid after the next device synchronisation)."""
    top = torch.softmax(logits.float(), dim=1).amax(dim=1)
    if top.device.type == "cpu":
        return top
    host = torch.empty(top.shape, dtype=torch.float32, pin_memory=True)
    return host.copy_(top, non_blocking=True)


def cpu_logits_argmax(logits: np.ndarray, H: int, W: int, *, align_corners: bool = False) -> np.ndarray:
    """argmax over classes of the bilinearly upsampled ``(C, h, w)`` logits, class by class with cv2 (a running
    max at full resolution in float32, never the full ``(C, H, W)`` stack): ~15x faster than torch on a CPU."""
    import cv2

    if align_corners:  # cv2 has no align_corners: fall back to torch for the official family
        t = torch.from_numpy(np.ascontiguousarray(logits))[None]
        up = F.interpolate(t, size=(H, W), mode="bilinear", align_corners=True)
        return up.argmax(dim=1)[0].to(torch.uint8).numpy()
    best = cv2.resize(np.ascontiguousarray(logits[0]), (W, H), interpolation=cv2.INTER_LINEAR)
    idx = np.zeros((H, W), np.uint8)
    for c in range(1, logits.shape[0]):
        u = cv2.resize(np.ascontiguousarray(logits[c]), (W, H), interpolation=cv2.INTER_LINEAR)
        better = u > best
        np.maximum(best, u, out=best)
        idx[better] = c
    return idx


def cpu_overlay(rgb: np.ndarray, mask: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """Blend class colours over ``rgb`` where ``mask > 0`` (background pixels keep the image)."""
    import cv2

    col = colors[mask]
    blended = cv2.addWeighted(rgb, 1.0 - alpha, col, alpha, 0.0)
    fg = mask > 0
    out = rgb.copy()
    out[fg] = blended[fg]
    return out


def device_overlay(rgb: torch.Tensor, mask: torch.Tensor, colors: torch.Tensor, alpha: float) -> torch.Tensor:
    """``rgb`` (B, 3, H, W) float [0, 255], ``mask`` (B, H, W) uint8 -> (B, H, W, 3) uint8, on the device."""
    col = colors[mask.long()].permute(0, 3, 1, 2).float()
    blended = rgb * (1.0 - alpha) + col * alpha
    out = torch.where((mask > 0).unsqueeze(1), blended, rgb)
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)

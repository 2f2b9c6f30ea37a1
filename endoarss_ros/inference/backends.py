"""Backends: eager, ``torch.compile``, ONNX Runtime, Torch-TensorRT, and their engine cache.

Every backend runs the same function: ``(B, 3, h, w)`` RGB in ``[0, 1]`` at the model's working size ->
``(segmentation logits at the head's native resolution, activity logits)``. Built artefacts (ONNX files,
TensorRT engines, compiled-graph caches) live in the engine cache, one file per key::

    sha256(model weights + config, backend, input shape (B, 3, h, w), precision, device, library versions)

so an artefact is rebuilt only when one of those changes. Frames are resized before the backend, so a new
camera resolution does not rebuild anything; a new batch size does.

On CUDA every runner works on the stream it is given (the engine's own stream): its work is ordered with the
engine's upload and postprocessing without any host wait (ONNX Runtime is handed that stream and told not to
synchronise at the end of a run).
"""
from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from ..files import write_atomic
from .options import BACKENDS, PRECISIONS

log = logging.getLogger(__name__)

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
assert tuple(DTYPES) == PRECISIONS


class BackendUnavailable(RuntimeError):
    """This backend cannot run here (not installed, no GPU, precision unsupported, build failed)."""


def fallback_chain(requested: str) -> list[str]:
    if requested not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {requested!r}")
    return list(BACKENDS[BACKENDS.index(requested):])


def default_cache_dir() -> Path:
    env = os.environ.get("ENDOARSS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "endoarss_ros" / "engines"


# -- the function every backend runs ------------------------------------------------------------
class LowResForward(nn.Module):
    """The traced / compiled function: working-size RGB in, native-resolution logits out."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model(images, output_size=None)
        return out.segmentation, out.activity


def model_digest(model: nn.Module) -> str:
    """sha256 of the config and every tensor of the (optimised) model."""
    h = hashlib.sha256()
    cfg = getattr(model, "config", None)
    if cfg is not None:
        h.update(cfg.to_json().encode())
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        t = t.detach()
        if t.dtype == torch.bfloat16:
            t = t.view(torch.int16)
        h.update(t.cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def device_tag(device: torch.device) -> str:
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        return f"cuda-{p.name.replace(' ', '_')}-sm{p.major}{p.minor}"
    return device.type


def engine_key(digest: str, backend: str, shape: tuple[int, ...], precision: str, device: torch.device,
               versions: str = "") -> tuple[str, str]:
    """(full sha256 key, readable file stem)."""
    dev = device_tag(device)
    shape_s = "x".join(str(int(s)) for s in shape)
    full = hashlib.sha256(
        "|".join([digest, backend, shape_s, precision, dev, versions, torch.__version__]).encode()
    ).hexdigest()
    stem = f"{backend}-{digest[:12]}-{shape_s}-{precision}-{dev}-{full[:10]}"
    return full, stem


# -- runners ------------------------------------------------------------------------------------
class Runner:
    """One backend bound to one optimised model, precision and device. ``prepare(batch)`` builds (or
    loads) what a batch size needs and returns a note; ``run(x)`` executes."""

    name = "base"

    def __init__(self, fn: LowResForward, *, device: torch.device, precision: str, input_hw: tuple[int, int],
                 cache_dir: Path, digest_fn, channels_last: bool = False, compile_mode: str | None = None,
                 stream=None):
        self.fn = fn
        self.device = device
        self.precision = precision
        self.dtype = DTYPES[precision]
        self.stream = stream  # torch.cuda.Stream the engine runs on (None on a CPU)
        self.input_hw = tuple(input_hw)
        self.cache_dir = Path(cache_dir)
        self._digest_fn = digest_fn  # lazy: hashing ViT-B weights costs ~0.5 s
        self.channels_last = channels_last
        self.compile_mode = compile_mode
        self.prepared: dict[int, str] = {}

    def shape(self, batch: int) -> tuple[int, int, int, int]:
        return (batch, 3, *self.input_hw)

    def example(self, batch: int) -> torch.Tensor:
        x = torch.rand(self.shape(batch), device=self.device).to(self.dtype)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare(self, batch: int) -> str:
        if batch not in self.prepared:
            self.prepared[batch] = self._prepare(batch)
        return self.prepared[batch]

    def _prepare(self, batch: int) -> str:
        return ""

    def run(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def close(self) -> None:
        self.fn = None


class EagerRunner(Runner):
    name = "eager"

    def _prepare(self, batch: int) -> str:
        with torch.inference_mode():
            self.fn(self.example(batch))
        return f"eager {self.precision} ready for batch {batch}"

    def run(self, x):
        return self.fn(x)


class CompileRunner(Runner):
    """``torch.compile`` with static shapes. CUDA: ``reduce-overhead`` (CUDA graphs); CPU: the configured
    mode (default ``max-autotune-no-cudagraphs``). Compiled artefacts: the Inductor caches live under the
    engine cache (``TORCHINDUCTOR_CACHE_DIR`` unless set), and the portable "mega-cache"
    (``torch.compiler.save_cache_artifacts``) is written per key and loaded on the next start."""

    name = "compile"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(self.cache_dir / "inductor"))
        mode = self.compile_mode or ("reduce-overhead" if self.device.type == "cuda"
                                     else "max-autotune-no-cudagraphs")
        self.mode = mode
        self.cudagraphs = self.device.type == "cuda" and mode in ("reduce-overhead", "max-autotune")
        try:
            self.compiled = torch.compile(self.fn, mode=mode, dynamic=False, fullgraph=False)
        except Exception as e:  # pragma: no cover - torch.compile unsupported on this platform
            raise BackendUnavailable(f"torch.compile failed: {e}") from e

    def _prepare(self, batch: int) -> str:
        _, stem = engine_key(self._digest_fn(), "compile", self.shape(batch), self.precision, self.device,
                             self.mode)
        path = self.cache_dir / f"{stem}.bin"
        loaded = False
        if path.is_file():
            try:
                torch.compiler.load_cache_artifacts(path.read_bytes())
                loaded = True
            except Exception as e:  # stale or foreign cache: recompile
                log.warning("compile cache %s unusable (%s): recompiling", path, e)
        t0 = time.perf_counter()
        try:
            with torch.inference_mode():
                for _ in range(3 if self.cudagraphs else 1):  # CUDA graphs record on the 2nd/3rd call
                    self._call(self.example(batch))
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
        except Exception as e:
            raise BackendUnavailable(f"torch.compile ({self.mode}) failed: {type(e).__name__}: {e}") from e
        dt = time.perf_counter() - t0
        if not loaded:
            try:
                art = torch.compiler.save_cache_artifacts()
                if art is not None:
                    write_atomic(path, art[0])
            except Exception as e:  # pragma: no cover
                log.info("could not save compile artefacts: %s", e)
            return f"compile ({self.mode}) built for batch {batch} in {dt:.1f} s -> {path.name}"
        return f"compile ({self.mode}) reused {path.name} (warm-up {dt:.1f} s)"

    def _call(self, x):
        if self.cudagraphs:
            torch.compiler.cudagraph_mark_step_begin()
        return self.compiled(x)

    def run(self, x):
        return self._call(x)

    def close(self) -> None:
        self.compiled = None
        if self.device.type == "cuda":
            # compiled code, guards and the CUDA-graph trees' memory pool are process-wide: reset them so the
            # device memory comes back (another live compile engine in this process recompiles on its next call)
            torch._dynamo.reset()
        super().close()


class OnnxRuntimeRunner(Runner):
    """ONNX export (cached per key) + ONNX Runtime; CUDA: IO binding straight from/to torch tensors."""

    name = "onnxruntime"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        try:
            import onnxruntime as ort
        except ImportError as e:
            raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime[-gpu])") from e
        self.ort = ort
        if self.device.type == "cuda":
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                raise BackendUnavailable("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu)")
            cuda_opts = {"device_id": str(self.device.index or 0)}
            if self.stream is not None:  # ORT runs on the engine's stream: no host wait around a run
                cuda_opts.update(has_user_compute_stream="1", user_compute_stream=str(self.stream.cuda_stream))
            self.providers = [("CUDAExecutionProvider", cuda_opts), "CPUExecutionProvider"]
        elif self.device.type == "cpu":
            if self.precision != "fp32":
                raise BackendUnavailable(f"onnxruntime {self.precision} needs the CUDA execution provider")
            self.providers = ["CPUExecutionProvider"]
        else:
            raise BackendUnavailable(f"onnxruntime does not run on {self.device.type}")
        if self.precision == "bf16":
            raise BackendUnavailable("onnxruntime: bf16 models are not supported here (use fp16)")
        self.sessions: dict[int, object] = {}
        self.paths: dict[int, Path] = {}
        self._run_options = ort.RunOptions()
        if self.stream is not None:  # the engine waits once per batch, after its download
            self._run_options.add_run_config_entry("disable_synchronize_execution_providers", "1")

    def _prepare(self, batch: int) -> str:
        ort = self.ort
        _, stem = engine_key(self._digest_fn(), "onnxruntime", self.shape(batch), self.precision, self.device,
                             f"ort{ort.__version__}")
        path = self.cache_dir / f"{stem}.onnx"
        built = False
        t0 = time.perf_counter()
        if not path.is_file():
            self._export(path, batch)
            built = True
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = max(1, torch.get_num_threads())
        # idle worker threads spin by default: on a few CPU cores they then slow the cv2 preprocessing and
        # postprocessing around each run
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        try:
            sess = ort.InferenceSession(str(path), sess_options=so, providers=self.providers)
        except Exception as e:
            raise BackendUnavailable(f"onnxruntime could not load {path.name}: {e}") from e
        self.sessions[batch] = sess
        self.paths[batch] = path
        with torch.inference_mode():
            self.run(self.example(batch))
        dt = time.perf_counter() - t0
        return f"onnxruntime {'built' if built else 'reused'} {path.name} ({dt:.1f} s)"

    def _np_dtype(self):
        import numpy as np

        return np.float16 if self.precision == "fp16" else np.float32

    def _export(self, path: Path, batch: int) -> None:

        x = self.example(batch).contiguous()

        def export(tmp: Path) -> None:
            with warnings.catch_warnings(), torch.no_grad():
                warnings.simplefilter("ignore")
                torch.onnx.export(self.fn, (x,), str(tmp), dynamo=False, input_names=["images"],
                                  output_names=["segmentation", "activity"], opset_version=17,
                                  do_constant_folding=True)
        try:
            write_atomic(path, export)
        except Exception as e:
            raise BackendUnavailable(f"ONNX export failed: {type(e).__name__}: {e}") from e

    def run(self, x):
        sess = self.sessions[x.shape[0]]
        if self.device.type == "cpu":
            seg, act = sess.run(None, {"images": x.contiguous().numpy()})
            return torch.from_numpy(seg), torch.from_numpy(act)
        return self._run_cuda(sess, x)

    def _run_cuda(self, sess, x):  # pragma: no cover - needs a GPU
        x = x.contiguous()
        b = sess.io_binding()
        dev_id = self.device.index or 0
        np_t = self._np_dtype()
        b.bind_input("images", "cuda", dev_id, np_t, tuple(x.shape), x.data_ptr())
        outs = []
        for o in sess.get_outputs():
            shape = tuple(int(s) for s in o.shape)
            t = torch.empty(shape, dtype=self.dtype, device=self.device)
            b.bind_output(o.name, "cuda", dev_id, np_t, shape, t.data_ptr())
            outs.append(t)
        if self.stream is None:  # ORT on its own stream: the input must be complete first
            torch.cuda.current_stream(self.device).synchronize()
        sess.run_with_iobinding(b, self._run_options)
        return outs[0], outs[1]

    def close(self) -> None:
        self.sessions.clear()
        super().close()


class TensorRTRunner(Runner):  # pragma: no cover - needs a GPU and torch_tensorrt
    """Torch-TensorRT (dynamo IR), one serialized engine per key, reloaded on the next start."""

    name = "tensorrt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.device.type != "cuda":
            raise BackendUnavailable("tensorrt needs a CUDA device")
        try:
            import torch_tensorrt
        except Exception as e:
            raise BackendUnavailable(f"torch_tensorrt is not installed or failed to import: {e}") from e
        self.trt = torch_tensorrt
        self.modules: dict[int, nn.Module] = {}

    def _prepare(self, batch: int) -> str:
        trt = self.trt
        _, stem = engine_key(self._digest_fn(), "tensorrt", self.shape(batch), self.precision, self.device,
                             f"trt{getattr(trt, '__version__', '?')}")
        path = self.cache_dir / f"{stem}.ep"
        x = self.example(batch)
        t0 = time.perf_counter()
        if path.is_file():
            try:
                mod = torch.export.load(str(path)).module()
                with torch.inference_mode():
                    mod(x)
                self.modules[batch] = mod
                return f"tensorrt reused {path.name} ({time.perf_counter() - t0:.1f} s)"
            except Exception as e:
                log.warning("tensorrt engine %s unusable (%s): rebuilding", path, e)
        try:
            mod = trt.compile(self.fn, ir="dynamo", inputs=[x], enabled_precisions={self.dtype},
                              truncate_double=True, min_block_size=1)
            write_atomic(path, lambda tmp: trt.save(mod, str(tmp), inputs=[x], output_format="exported_program"))
            with torch.inference_mode():
                mod(x)
        except Exception as e:
            raise BackendUnavailable(f"Torch-TensorRT build failed: {type(e).__name__}: {e}") from e
        self.modules[batch] = mod
        return f"tensorrt built {path.name} ({time.perf_counter() - t0:.1f} s)"

    def run(self, x):
        out = self.modules[x.shape[0]](x.contiguous())  # the engine's input is channels-last on CUDA
        return out[0], out[1]

    def close(self) -> None:
        self.modules.clear()
        super().close()


RUNNERS: dict[str, type[Runner]] = {
    "eager": EagerRunner, "compile": CompileRunner, "onnxruntime": OnnxRuntimeRunner, "tensorrt": TensorRTRunner,
}


def probe(name: str, device: torch.device, precision: str, cache_dir: Path) -> str | None:
    """Why backend ``name`` cannot run at ``precision`` on ``device`` here, or None when it can: in seconds and
    without a model (the runner's own checks: imports, execution providers, device; for ``compile`` one tiny
    compiled call in the mode the runner would use), so a caller can report it before building anything."""
    try:
        runner = RUNNERS[name](nn.Identity(), device=device, precision=precision, input_hw=(8, 8),
                               cache_dir=cache_dir, digest_fn=str)
        if isinstance(runner, CompileRunner):
            _compile_probe(device, runner.mode)
    except BackendUnavailable as e:
        return str(e)
    return None


def _compile_probe(device: torch.device, mode: str) -> None:
    try:
        fn = torch.compile(lambda x: torch.relu(x) * 2.0 + 1.0, mode=mode, dynamic=False)
        with torch.inference_mode():
            for _ in range(3):  # CUDA graphs record on the 2nd/3rd call
                fn(torch.ones(16, device=device))
    except Exception as e:  # noqa: BLE001 - whatever stops it (no compiler, no triton) is the reason
        raise BackendUnavailable(f"torch.compile ({mode}) cannot compile here: {type(e).__name__}: {e}") from e
    finally:
        torch._dynamo.reset()

"""The causal temporal activity model: a multi-stage dilated TCN (TeCNO) with a running-max global token (SKiT).

Input per tick: a frame feature vector (``inference.temporal_features``) and a ``missing`` flag (no usable frame
in the tick). Stage 1 projects ``[features, missing]`` to ``channels`` maps, runs ``layers`` causal dilated
residual convolutions (dilation 1, 2, 4, ...) and classifies them together with the global token: the
element-wise maximum of the projected input over every non-missing tick since the start ("has marking happened
yet"), constant in size however long the procedure. Each later stage refines the previous stage's probabilities
(plus the missing flag) with its own dilated stack. Every convolution is left-padded only: no output reads a
later input.

``forward`` runs whole sequences (training, evaluation); ``init_state`` / ``step`` run one tick at a time with a
ring buffer per layer holding that layer's last ``(kernel - 1) * dilation`` inputs, so a step costs the same at
tick 10 and at tick 100 000 and equals ``forward`` on the same prefix.

The weights file (safetensors) records what the model is bound to (``TemporalBinding``): the frame model it
reads features from, the class names, the feature layout and the tick; loading against another is an error
naming both sides.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .weights.read import WeightsError, read_state_dict

FORMAT = "endoarss_temporal"
FORMAT_KEY = "format"
BINDING_KEY = "endoarss_temporal_binding"


@dataclass(frozen=True)
class TemporalConfig:
    """Shape of a ``CausalTCN``. Receptive field per stage: ``(kernel - 1) * (2**layers - 1) + 1`` ticks."""

    feature_dim: int
    num_classes: int
    channels: int = 64  # maps of stage 1
    layers: int = 10  # dilated layers per stage (dilations 1 .. 2**(layers - 1))
    stages: int = 2  # stage 1 + (stages - 1) refinement stages
    kernel: int = 3
    dropout: float = 0.2
    refine_channels: int = 32  # maps of each refinement stage (half the state of stage 1's)
    global_token: bool = True  # running max of the projected input, read by stage 1's classifier

    def __post_init__(self):
        for name in ("feature_dim", "num_classes", "channels", "layers", "stages", "refine_channels"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TemporalConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.kernel < 2:
            raise ValueError(f"TemporalConfig.kernel must be >= 2, got {self.kernel}")

    @property
    def receptive_field(self) -> int:
        return (self.kernel - 1) * (2 ** self.layers - 1) + 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TemporalConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown TemporalConfig fields {unknown}")
        return cls(**data)


class _CausalLayer(nn.Module):
    """``x + 1x1(dropout(relu(causal dilated conv(x))))`` (MS-TCN's residual layer, left padding only)."""

    def __init__(self, channels: int, kernel: int, dilation: int, dropout: float):
        super().__init__()
        self.kernel, self.dilation = kernel, dilation
        self.conv = nn.Conv1d(channels, channels, kernel, dilation=dilation)
        self.out = nn.Conv1d(channels, channels, 1)
        self.dropout = nn.Dropout(dropout)

    @property
    def history(self) -> int:
        """Past inputs a step needs."""
        return (self.kernel - 1) * self.dilation

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T)
        h = self.conv(F.pad(x, (self.history, 0)))
        return x + self.out(self.dropout(F.relu(h)))


class _Stage(nn.Module):
    def __init__(self, in_dim: int, channels: int, cfg: TemporalConfig, extra: int = 0):
        super().__init__()
        self.inp = nn.Conv1d(in_dim, channels, 1)
        self.layers = nn.ModuleList(_CausalLayer(channels, cfg.kernel, 2 ** i, cfg.dropout)
                                    for i in range(cfg.layers))
        self.classifier = nn.Conv1d(channels + extra, cfg.num_classes, 1)


class CausalTCN(nn.Module):
    """See the module docstring. ``feature_mean`` / ``feature_std`` (buffers, saved with the weights) normalise
    the raw features; training sets them from its data with ``set_feature_normalization``."""

    def __init__(self, config: TemporalConfig):
        super().__init__()
        self.config = cfg = config
        self.register_buffer("feature_mean", torch.zeros(cfg.feature_dim))
        self.register_buffer("feature_std", torch.ones(cfg.feature_dim))
        self.proj = nn.Linear(cfg.feature_dim + 1, cfg.channels)
        self.norm = nn.LayerNorm(cfg.channels)
        extra = cfg.channels if cfg.global_token else 0
        self.stages = nn.ModuleList(
            [_Stage(cfg.channels, cfg.channels, cfg, extra)]
            + [_Stage(cfg.num_classes + 1, cfg.refine_channels, cfg) for _ in range(cfg.stages - 1)])

    def set_feature_normalization(self, mean, std) -> None:
        mean = torch.as_tensor(mean, dtype=torch.float32).reshape(-1)
        std = torch.as_tensor(std, dtype=torch.float32).reshape(-1)
        if mean.numel() != self.config.feature_dim or std.numel() != self.config.feature_dim:
            raise ValueError(f"feature normalisation needs {self.config.feature_dim} values")
        self.feature_mean.copy_(mean)
        self.feature_std.copy_(std.clamp_min(1e-6))

    def _embed(self, features: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """(..., D), (...) -> (..., channels): normalised features (zero where missing) + the flag, projected."""
        m = missing.to(features.dtype).unsqueeze(-1)
        x = torch.nan_to_num((features - self.feature_mean) / self.feature_std) * (1.0 - m)
        return self.norm(self.proj(torch.cat([x, m], -1)))

    def forward(self, features: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """``features`` (B, T, D) float, ``missing`` (B, T) bool -> logits (S, B, T, K) of every stage."""
        B, T, _ = features.shape
        if missing is None:
            missing = torch.zeros(B, T, dtype=torch.bool, device=features.device)
        e = self._embed(features, missing)  # (B, T, C)
        flag = missing.to(e.dtype).unsqueeze(1)  # (B, 1, T)
        outputs = []
        for i, stage in enumerate(self.stages):
            if i == 0:
                x = stage.inp(e.transpose(1, 2))
            else:
                x = stage.inp(torch.cat([outputs[-1].softmax(1), flag], 1))
            for layer in stage.layers:
                x = layer(x)
            if i == 0 and self.config.global_token:
                seen = e.masked_fill(missing.unsqueeze(-1), float("-inf")).cummax(1).values
                x = torch.cat([x, torch.nan_to_num(seen, neginf=0.0).transpose(1, 2)], 1)
            outputs.append(stage.classifier(x))
        return torch.stack(outputs).transpose(2, 3)  # (S, B, K, T) -> (S, B, T, K)

    def init_state(self, batch: int = 1) -> TemporalState:
        """A fresh state for ``batch`` streams, tied to the weights as they are now (see ``TemporalState``)."""
        return TemporalState(_StepPlan(self), batch)

    def step(self, state: TemporalState, features, missing):
        """One tick for each of the B streams: ``features`` (B, D), ``missing`` (B,) bool -> logits (B, K) of
        the last stage (a tensor when given tensors, else numpy float32); ``state`` advances in place."""
        as_tensor = isinstance(features, torch.Tensor)
        if as_tensor:
            features, missing = features.detach().cpu().numpy(), missing.detach().cpu().numpy()
        logits = state.step(np.asarray(features, np.float32), np.asarray(missing, bool))
        return torch.from_numpy(logits) if as_tensor else logits


# -- streaming ---------------------------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().cpu().numpy(), dtype=np.float32)


def _pointwise(conv: nn.Conv1d) -> tuple[np.ndarray, np.ndarray]:
    """A 1x1 convolution as ``x @ W + b`` on (B, C_in) rows."""
    return _np(conv.weight[:, :, 0].t()), _np(conv.bias)


class _StepPlan:
    """The weights of a ``CausalTCN`` as float32 numpy matrices for one-tick steps. A step is ~60 tiny matrix
    products; numpy's per-call cost is a fraction of torch's, which is what decides the time of a step."""

    def __init__(self, model: CausalTCN):
        cfg = self.config = model.config
        self.mean, self.std = _np(model.feature_mean), _np(model.feature_std)
        self.proj_w, self.proj_b = _np(model.proj.weight.t()), _np(model.proj.bias)
        self.norm_w, self.norm_b, self.norm_eps = _np(model.norm.weight), _np(model.norm.bias), model.norm.eps
        self.stages = []
        for stage in model.stages:
            layers = []
            for layer in stage.layers:
                w = layer.conv.weight  # (C_out, C_in, k): tap j reads tick t - (k - 1 - j) * dilation
                fused = _np(w.permute(2, 1, 0).reshape(-1, w.shape[0]))  # the k taps side by side, tap 0 first
                layers.append((layer.dilation, layer.history, fused, _np(layer.conv.bias), *_pointwise(layer.out)))
            self.stages.append((*_pointwise(stage.inp), layers, *_pointwise(stage.classifier)))
        self.kernel, self.global_token = cfg.kernel, cfg.global_token

    def embed(self, features: np.ndarray, missing: np.ndarray) -> np.ndarray:
        m = missing.astype(np.float32)[:, None]
        x = np.nan_to_num((features - self.mean) / self.std) * (1.0 - m)
        h = np.concatenate([x, m], 1) @ self.proj_w + self.proj_b
        h = h - h.mean(1, keepdims=True)
        return h / np.sqrt((h * h).mean(1, keepdims=True) + self.norm_eps) * self.norm_w + self.norm_b


class TemporalState:
    """One or more streams' state between steps: per stage and layer a ring of the layer's last
    ``(kernel - 1) * dilation`` inputs (zeros before the first tick, like ``forward``'s padding), the running
    max of the projected input, and the tick count. Tied to the weights as they were at ``init_state``."""

    def __init__(self, plan: _StepPlan, batch: int):
        self.plan, self.batch, self.ticks = plan, int(batch), 0
        self.rings = [[np.zeros((batch, history, w_in.shape[1]), np.float32) for (_, history, *_) in layers]
                      for w_in, _, layers, *_ in plan.stages]
        self.global_max = np.full((batch, plan.config.channels), -np.inf, np.float32)

    @property
    def nbytes(self) -> int:
        """Bytes of state (the weights are the model's, shared by every stream)."""
        return sum(r.nbytes for stage in self.rings for r in stage) + self.global_max.nbytes

    def step(self, features: np.ndarray, missing: np.ndarray) -> np.ndarray:
        plan, t, k = self.plan, self.ticks, self.plan.kernel
        if features.shape != (self.batch, plan.mean.shape[0]) or missing.shape != (self.batch,):
            raise ValueError(f"step needs features ({self.batch}, {plan.mean.shape[0]}) and missing "
                             f"({self.batch},), got {features.shape} and {missing.shape}")
        e = plan.embed(features, missing)
        flag = missing.astype(np.float32)[:, None]
        logits = None
        for i, ((w_in, b_in, layers, w_cls, b_cls), rings) in enumerate(zip(plan.stages, self.rings)):
            if i == 0:
                x = e @ w_in + b_in
            else:
                p = np.exp(logits - logits.max(1, keepdims=True))
                x = np.concatenate([p / p.sum(1, keepdims=True), flag], 1) @ w_in + b_in
            for (d, n, w, b, w_out, b_out), ring in zip(layers, rings):
                taps = [ring[:, (t - (k - 1 - j) * d) % n] for j in range(k - 1)]
                h = np.concatenate([*taps, x], 1) @ w + b
                np.maximum(h, 0.0, out=h)
                ring[:, t % n] = x
                x = x + h @ w_out + b_out
            if i == 0 and plan.global_token:
                self.global_max = np.where(missing[:, None], self.global_max, np.maximum(self.global_max, e))
                x = np.concatenate([x, np.where(np.isneginf(self.global_max), 0.0, self.global_max)], 1)
            logits = x @ w_cls + b_cls
        self.ticks = t + 1
        return logits.astype(np.float32)


# -- weights file and its binding -------------------------------------------------------------------
class TemporalBindingError(ValueError):
    """A temporal model loaded against a frame model, classes, features or tick it was not trained for."""


@dataclass(frozen=True)
class TemporalBinding:
    """What a temporal model's weights are valid for. ``frame_model_id``: ``temporal_features.frame_model_identity``
    of the frame network whose outputs the features are; ``feature_names``: the feature layout, in order;
    ``tick_s``: the clock the model steps on (None in an expectation: any)."""

    frame_model_id: str
    class_names: tuple[str, ...]
    feature_names: tuple[str, ...]
    tick_s: float | None
    config: TemporalConfig | None = None  # None in an expectation; save_temporal fills in the model's
    # Settings of the streaming session chosen with the model (e.g. a switch_evidence tuned on validation), read
    # by ``inference.temporal_activity.TemporalSettings.from_binding``; names of TemporalSettings fields.
    session_settings: dict = field(default_factory=dict, compare=False)
    notes: dict = field(default_factory=dict, compare=False)  # free-form provenance (training run, commit)

    def to_json(self) -> str:
        return json.dumps({"frame_model_id": self.frame_model_id, "class_names": list(self.class_names),
                           "feature_names": list(self.feature_names), "tick_s": self.tick_s,
                           "config": self.config.to_dict() if self.config else None,
                           "session_settings": self.session_settings, "notes": self.notes})

    @classmethod
    def from_json(cls, text: str) -> TemporalBinding:
        d = json.loads(text)
        return cls(str(d["frame_model_id"]), tuple(d["class_names"]), tuple(d["feature_names"]),
                   float(d["tick_s"]), TemporalConfig.from_dict(d["config"]),
                   dict(d.get("session_settings") or {}), dict(d.get("notes") or {}))

    def mismatches(self, expect: TemporalBinding) -> list[str]:
        """What differs between this (the file's) binding and ``expect`` (what the caller runs), one line each."""
        out = []
        if self.frame_model_id != expect.frame_model_id:
            out.append(f"frame model: the file was trained on features of {self.frame_model_id}, "
                       f"the loaded frame model is {expect.frame_model_id}")
        if tuple(self.class_names) != tuple(expect.class_names):
            out.append(f"activity classes: file {list(self.class_names)}, frame model {list(expect.class_names)}")
        if tuple(self.feature_names) != tuple(expect.feature_names):
            diff = next((i for i, (a, b) in enumerate(zip(self.feature_names, expect.feature_names)) if a != b),
                        min(len(self.feature_names), len(expect.feature_names)))
            out.append(f"feature layout: file has {len(self.feature_names)} features, this build "
                       f"{len(expect.feature_names)}; first difference at #{diff}: "
                       f"{_at(self.feature_names, diff)!r} vs {_at(expect.feature_names, diff)!r}")
        if expect.tick_s is not None and abs(self.tick_s - expect.tick_s) > 1e-9:
            out.append(f"tick: file {self.tick_s} s, expected {expect.tick_s} s")
        return out


def _at(names, i: int) -> str:
    return names[i] if i < len(names) else "(none)"


def save_temporal(path: str | Path, model: CausalTCN, binding: TemporalBinding) -> Path:
    """Write the weights and the binding (metadata) as one safetensors file."""
    from safetensors.torch import save_file

    if binding.config is None:
        binding = dataclasses.replace(binding, config=model.config)
    if binding.config != model.config:
        raise ValueError(f"the binding's config {binding.config} is not the model's {model.config}")
    if binding.tick_s is None or binding.tick_s <= 0:
        raise ValueError(f"the binding needs the tick the model was trained on (tick_s > 0), not {binding.tick_s}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(path), metadata={FORMAT_KEY: FORMAT, BINDING_KEY: binding.to_json()})
    return path


def load_temporal(path: str | Path, expect: TemporalBinding | None = None) -> tuple[CausalTCN, TemporalBinding]:
    """The model (eval mode, CPU) and its binding. Raises ``FileNotFoundError`` / ``WeightsError`` (one line)
    for a missing or damaged file, ``TemporalBindingError`` when ``expect`` differs (frame model, classes,
    feature layout, tick; its ``config`` is not compared)."""
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"temporal model {path}: is a directory, not a weights file")
    tensors, meta = read_state_dict(path)
    if meta.get(FORMAT_KEY) != FORMAT or BINDING_KEY not in meta:
        raise WeightsError(f"temporal model {path}: not a temporal model file (no {BINDING_KEY!r} metadata; "
                           "frame weights go in the 'model' parameter, temporal ones in 'temporal_model')")
    try:
        binding = TemporalBinding.from_json(meta[BINDING_KEY])
        model = CausalTCN(binding.config)
        model.load_state_dict(tensors, strict=True)
    except (ValueError, TypeError, KeyError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"temporal model {path}: its contents do not fit its own description ({first})") from e
    if expect is not None:
        problems = binding.mismatches(expect)
        if problems:
            raise TemporalBindingError(f"temporal model {path} does not fit: " + "; ".join(problems))
    return model.eval(), binding


__all__ = ["CausalTCN", "TemporalBinding", "TemporalBindingError", "TemporalConfig", "TemporalState",
           "load_temporal", "save_temporal"]

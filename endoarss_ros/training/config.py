"""Training configuration: a ``TrainConfig`` dataclass, read from YAML, with dotted CLI overrides.

Example YAML::

    name: demo
    epochs: 12
    batch_size: 16
    weighting: {method: equal}
    freeze: full
    model: {preset: endoarss_tiny, overrides: {input_size: [168, 168], adapter: {kind: none}}}
    data: {layout: synthetic, synthetic: {seed: 0, train: 2400, val: 150, render_size: 336}}
    optim: {lr: 1.0e-3, scheduler: cosine}

Overrides: ``--set optim.lr=3e-4 --set data.root=/data/mtlesd`` (values parsed as YAML scalars/lists).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..model.config import yaml_text

LAYOUTS = ("released", "generic", "synthetic", "videos")
WEIGHTINGS = ("equal", "dbmtl", "stch")
FREEZE_MODES = ("adapters", "full")
SCHEDULERS = ("none", "step", "cosine")
PRESETS = ("endoarss_tiny", "endoarss_small", "endoarss_base", "official_mtlesd")


@dataclass(kw_only=True)
class SyntheticConfig:
    """In-memory synthetic frames (``endoarss_ros.data.layout.synthetic_samples`` seed streams).

    Frames are rendered at ``render_size`` and INTER_AREA-downscaled to the working size, like the node
    shrinks camera frames. Every ``wide_every``-th training frame is rendered 5:4 (W = 1.25 H) so that
    squashed full-resolution frames (1280x1024 -> square) are in the training distribution.
    """

    seed: int = 0
    train: int = 600
    val: int = 90
    test: int = 90
    test_seed: int | None = None  # None: seed + 1000 (never the training seed)
    render_size: int = 336
    wide_every: int = 3  # 0: never


@dataclass(kw_only=True)
class DataConfig:
    layout: str = "synthetic"  # released | generic | synthetic | videos (phase-labelled videos, no masks)
    root: str | None = None  # released/generic/videos: dataset root (generic: root/{train,val,test}/...)
    size: tuple[int, int] | None = None  # working (H, W) of the tensors; None: the model's input_size
    train_split: str = "train"
    val: str | float = "val"  # a split name, or a fraction of the training split held out (stratified)
    test_split: str = "test"
    augment: bool = True
    vertical_flip: float = 0.5
    scale_crop: bool = True
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    # videos: root is a folder in a data.video_layouts layout (Cholec80, AutoLaparo, M2CAI16, ours), or holds
    # one per split (root/train, root/val, root/test); frames read at sample_fps, labels at label_fps (None: the
    # layout's rate); without a root/val folder a fraction of the training videos (whole videos) validates.
    sample_fps: float = 1.0
    label_fps: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.synthetic, dict):
            self.synthetic = SyntheticConfig(**self.synthetic)
        if self.size is not None:
            s = self.size
            self.size = (int(s), int(s)) if isinstance(s, int) else tuple(int(v) for v in s)


@dataclass(kw_only=True)
class ModelSection:
    preset: str = "endoarss_tiny"  # a ModelConfig class method (PRESETS)
    config: str | None = None  # a ModelConfig YAML (instead of the preset)
    init: str | None = None  # weights to start from (ours, released, or a DINOv2 backbone)
    overrides: dict[str, Any] = field(default_factory=dict)  # ModelConfig fields, e.g. {input_size: [168, 168]}


@dataclass(kw_only=True)
class OptimConfig:
    name: str = "adamw"  # adam | adamw
    lr: float = 1.1e-3  # released: Adam, 1.1e-3
    weight_decay: float = 1e-4
    scheduler: str = "cosine"  # none | step | cosine
    step_size: int = 100  # step: epochs per decay (released: 100)
    gamma: float = 0.5  # step: decay factor (released: 0.5)
    warmup_steps: int = 0  # linear warm-up (optimiser steps)
    min_lr_ratio: float = 0.02  # cosine: final lr / lr
    grad_clip: float = 0.0  # 0: off


@dataclass(kw_only=True)
class WeightingConfig:
    method: str = "equal"  # equal | dbmtl | stch
    task_weights: tuple[float, float] = (1.0, 1.0)  # equal: static (segmentation, activity) loss weights
    dbmtl_beta: float = 0.9  # released DB_beta
    stch_mu: float = 1.0
    stch_warmup_epochs: int = 4  # released: 4 (the nadir is the mean loss over the last of them)


@dataclass(kw_only=True)
class TrainConfig:
    name: str = "run"
    out_dir: str = "runs"  # the run folder is out_dir/name
    epochs: int = 10
    batch_size: int = 16
    eval_batch_size: int = 32
    seed: int = 42
    workers: int = 0
    threads: int = 0  # torch.set_num_threads; 0 leaves torch's default
    amp: bool = True  # bfloat16 autocast on CUDA (ignored on CPU)
    freeze: str = "full"  # adapters (frozen backbone, train adapters/SMA/heads) | full
    seg_dice_weight: float = 0.0  # extra soft-Dice term on the segmentation loss (released: 0)
    ignore_index: int = 255
    max_steps_per_epoch: int = 0  # 0: the whole training set
    evaluate_test: bool = True  # after training, evaluate best.safetensors on the test split (report only)
    progress: bool = True
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSection = field(default_factory=ModelSection)
    optim: OptimConfig = field(default_factory=OptimConfig)
    weighting: WeightingConfig = field(default_factory=WeightingConfig)

    def __post_init__(self) -> None:
        for name, cls in (("data", DataConfig), ("model", ModelSection), ("optim", OptimConfig),
                          ("weighting", WeightingConfig)):
            if isinstance(getattr(self, name), dict):
                setattr(self, name, cls(**getattr(self, name)))
        self.validate()

    def validate(self) -> None:
        checks = [
            (self.data.layout, LAYOUTS, "data.layout"),
            (self.weighting.method, WEIGHTINGS, "weighting.method"),
            (self.freeze, FREEZE_MODES, "freeze"),
            (self.optim.scheduler, SCHEDULERS, "optim.scheduler"),
            (self.optim.name, ("adam", "adamw"), "optim.name"),
        ]
        for value, allowed, key in checks:
            if value not in allowed:
                raise ValueError(f"{key} must be one of {allowed}, got {value!r}")
        if self.model.config is None and self.model.preset not in PRESETS:
            raise ValueError(f"model.preset must be one of {PRESETS}, got {self.model.preset!r}")
        if self.data.layout != "synthetic" and not self.data.root:
            raise ValueError(f"data.root is required for layout {self.data.layout!r}")
        if self.data.layout == "videos" and self.ignore_index != 255:
            raise ValueError("data.layout videos marks every mask pixel 255 (no masks): keep ignore_index 255")
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be positive")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        return yaml_text(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return cls(**_check_keys(cls, dict(d)))

    @classmethod
    def load(cls, path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
        """The YAML at ``path`` (defaults when None) with ``key.sub=value`` overrides applied."""
        d = cls().to_dict()
        if path is not None:
            _merge(d, yaml.safe_load(Path(path).read_text()) or {})
        for item in overrides:
            apply_override(d, item)
        return cls.from_dict(d)


def apply_override(d: dict[str, Any], item: str) -> None:
    """``"optim.lr=1e-3"`` -> d["optim"]["lr"] = 0.001 (the value is parsed as YAML)."""
    if "=" not in item:
        raise ValueError(f"override must be key=value, got {item!r}")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        if p not in node or not isinstance(node[p], dict):
            if (p in node and node[p] is None) or (p not in node and _free_form(parts)):
                node[p] = {}  # model.overrides.* mirrors ModelConfig: sections appear on demand
            else:
                raise KeyError(f"unknown config section {key!r}")
        node = node[p]
    leaf = parts[-1]
    if leaf not in node and not _free_form(parts):
        raise KeyError(f"unknown config key {key!r}")
    value = yaml.safe_load(text) if text.strip() else None
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            value = float(value)
        except ValueError:
            pass
    node[leaf] = value


def _free_form(parts: list[str]) -> bool:
    return len(parts) >= 3 and parts[:2] == ["model", "overrides"]


def _merge(base: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict) and k != "overrides":
            _merge(base[k], v)
        elif k == "overrides" and isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v


def _check_keys(cls, d: dict) -> dict:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} keys: {sorted(unknown)}")
    return d


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def build_model_config(cfg: TrainConfig):
    """The ModelConfig a run trains: preset or YAML, plus ``model.overrides`` (nested dicts merge)."""
    from endoarss_ros.model import ModelConfig

    if cfg.model.config:
        base = ModelConfig.from_yaml(cfg.model.config).to_dict()
    else:
        base = getattr(ModelConfig, cfg.model.preset)().to_dict()
    _merge(base, dict(cfg.model.overrides))
    return ModelConfig.from_dict(base)

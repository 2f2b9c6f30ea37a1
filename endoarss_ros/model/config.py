"""Model configuration: plain keyword-only dataclasses, saved next to the weights (YAML / JSON).

Two families share one config:

* ``official`` -- the released EndoARSS architecture, exactly (to run the paper's checkpoints);
* ``endoarss`` -- the same ideas done right (normalised input, spatial multi-block features, feature-space
  SMA, TESLA adapters, high-resolution segmentation branch).
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PATCH_SIZE = 14  # the ViT's patch side (DINOv2 ViT-*/14): a working resolution is a multiple of it

# Released MTLESD class order (the released loader's raw mask ids {0, 2..7}, shifted down by one). The one list of
# these names: the data layer's class set (colours, activity objects) uses it too.
MTLESD_SEG_CLASSES = [
    "Background", "FPCW Forceps", "Mucosal Flaps", "FPCW Knife", "Electric Knife", "Incision Area",
    "Marking Area",
]
MTLESD_ACTIVITY_CLASSES = ["Marking", "Circumferential Incision", "Submucosal Dissection"]
# The segmentation classes that are instruments (the synthetic data uses the MTLESD classes). A model's instruments
# are its classes with these names (``instrument_class_ids``); the node's ``instruments.classes`` overrides it.
MTLESD_INSTRUMENT_CLASSES = ["FPCW Forceps", "FPCW Knife", "Electric Knife"]

FAMILIES = ("official", "endoarss")
ADAPTER_KINDS = ("none", "lora", "dvlora", "tesla")
SMA_PLACEMENTS = ("none", "pixel", "feature")


def yaml_text(data: dict[str, Any], path: str | Path | None = None) -> str:
    """``data`` as YAML in its own key order (a config's ``to_yaml``), also written to ``path`` when given."""
    import yaml

    text = yaml.safe_dump(data, sort_keys=False)
    if path is not None:
        Path(path).write_text(text)
    return text

@dataclass(kw_only=True)
class AdapterConfig:
    kind: str = "tesla"  # one of ADAPTER_KINDS
    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = ("qkv", "fc1", "fc2")  # among qkv, proj, fc1, fc2 (w12, w3 for SwiGLU)
    task_rank: int = 4  # TESLA: rank of each task-specific path
    task_alpha: float = 4.0
    task_blocks: int = 2  # TESLA: how many final blocks carry task-specific streams
    train_dv_vectors: bool = False  # DV-LoRA U/V: frozen, as released
    merged: bool = False  # True once merge_adapters() folded them into the base weights


@dataclass(kw_only=True)
class SMAConfig:
    placement: str = "feature"  # one of SMA_PLACEMENTS
    dim: int = 512  # pixel placement: lifted channel count
    patch_size: int = 7  # pixel placement: unfold patch side
    groups: int = 8  # feature placement: EMA channel groups


@dataclass(kw_only=True)
class HeadConfig:
    feature_blocks: tuple[int, ...] = (-4, -3, -2, -1)  # ViT blocks whose tokens feed the heads
    neck_channels: int = 256  # endoarss: fused feature-map width
    aspp_channels: int = 256
    aspp_rates: tuple[int, ...] = (2, 4, 6)
    activity_channels: int = 256
    high_res: bool = True  # endoarss: DeepLabV3+-style 1/4-resolution branch
    stem_channels: int = 32
    decoder_channels: int = 64
    token_map_width: int = 48  # official: the (B, tokens, D / 48, 48) token-as-channel reshape


@dataclass(kw_only=True)
class ModelConfig:
    family: str = "endoarss"  # "official" | "endoarss"
    backbone: str = "base"  # tiny | small | base | large | giant
    num_register_tokens: int = 0
    pos_grid: int | None = None  # learned position grid side; None = the preset's (DINOv2: 37)
    pos_interpolate_offset: float = 0.1  # DINOv2 hub: 0.1; register models: 0.0
    pos_interpolate_antialias: bool = False  # DINOv2 hub: False; register models: True
    seg_classes: list[str] = field(default_factory=lambda: list(MTLESD_SEG_CLASSES))
    activity_classes: list[str] = field(default_factory=lambda: list(MTLESD_ACTIVITY_CLASSES))
    input_size: tuple[int, int] = (224, 224)  # working resolution (H, W), multiple of 14
    normalize: bool = True  # ImageNet mean/std inside the model (official: False, as released)
    resize_align_corners: bool = False  # official: True, as released
    adapter: AdapterConfig = field(default_factory=AdapterConfig)
    sma: SMAConfig = field(default_factory=SMAConfig)
    head: HeadConfig = field(default_factory=HeadConfig)

    def __post_init__(self) -> None:
        if isinstance(self.adapter, dict):
            self.adapter = AdapterConfig(**_tuples(self.adapter))
        if isinstance(self.sma, dict):
            self.sma = SMAConfig(**self.sma)
        if isinstance(self.head, dict):
            self.head = HeadConfig(**_tuples(self.head))
        self.input_size = tuple(int(v) for v in self.input_size)
        self.seg_classes = list(self.seg_classes)
        self.activity_classes = list(self.activity_classes)
        self.validate()

    def validate(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.adapter.kind not in ADAPTER_KINDS:
            raise ValueError(f"adapter.kind must be one of {ADAPTER_KINDS}, got {self.adapter.kind!r}")
        if self.sma.placement not in SMA_PLACEMENTS:
            raise ValueError(f"sma.placement must be one of {SMA_PLACEMENTS}, got {self.sma.placement!r}")
        h, w = self.input_size
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise ValueError(f"input_size {self.input_size} must be divisible by the patch size {PATCH_SIZE}")
        if len(self.seg_classes) < 2 or len(self.activity_classes) < 1:
            raise ValueError("need at least 2 segmentation classes and 1 activity class")

    @property
    def num_seg_classes(self) -> int:
        return len(self.seg_classes)

    @property
    def num_activity_classes(self) -> int:
        return len(self.activity_classes)

    # -- serialisation ---------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _lists(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields: {sorted(unknown)}")
        return cls(**_tuples(dict(data)))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))

    def to_yaml(self, path: str | Path | None = None) -> str:
        return yaml_text(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> ModelConfig:
        import yaml

        p = Path(path_or_text)
        text = p.read_text() if (len(str(path_or_text)) < 4096 and p.is_file()) else str(path_or_text)
        return cls.from_dict(yaml.safe_load(text))

    def replace(self, **changes: Any) -> ModelConfig:
        return dataclasses.replace(self, **changes)

    # -- presets -------------------------------------------------------------------------------
    @classmethod
    def official(
        cls,
        *,
        seg_classes: list[str] | None = None,
        activity_classes: list[str] | None = None,
        backbone: str = "base",
        input_size: tuple[int, int] = (224, 224),
        **kwargs: Any,
    ) -> ModelConfig:
        """The released architecture: ViT/14 without registers, pixel SMA, DV-LoRA r=4 on the MLPs."""
        return cls(
            family="official",
            backbone=backbone,
            seg_classes=list(MTLESD_SEG_CLASSES if seg_classes is None else seg_classes),
            activity_classes=list(MTLESD_ACTIVITY_CLASSES if activity_classes is None else activity_classes),
            input_size=input_size,
            normalize=False,
            resize_align_corners=True,
            adapter=AdapterConfig(kind="dvlora", rank=4, alpha=4.0, targets=("fc1", "fc2"), task_blocks=0),
            sma=SMAConfig(placement="pixel", dim=512, patch_size=7),
            head=HeadConfig(
                feature_blocks=(-1,), aspp_channels=256, aspp_rates=(12, 24, 36), activity_channels=256,
                high_res=False,
            ),
            **kwargs,
        )

    @classmethod
    def official_mtlesd(cls, **kwargs: Any) -> ModelConfig:
        """The released MTLESD model: 7 segmentation classes, 3 activities."""
        return cls.official(
            seg_classes=MTLESD_SEG_CLASSES, activity_classes=MTLESD_ACTIVITY_CLASSES, **kwargs
        )

    @classmethod
    def endoarss(cls, *, backbone: str = "base", **kwargs: Any) -> ModelConfig:
        return cls(family="endoarss", backbone=backbone, **kwargs)

    @classmethod
    def endoarss_tiny(cls, **kwargs: Any) -> ModelConfig:
        """192-dim, 6-block ViT with small heads: tests, CPU demos, training from scratch.

        Sized for CPU: one TESLA task block, narrow heads (~2.2 GFLOP per 224-px frame).
        """
        kwargs.setdefault(
            "head",
            HeadConfig(neck_channels=96, aspp_channels=64, activity_channels=64, stem_channels=24,
                       decoder_channels=32),
        )
        kwargs.setdefault("adapter", AdapterConfig(task_blocks=1))
        kwargs.setdefault("sma", SMAConfig(placement="feature", groups=8))
        return cls(family="endoarss", backbone="tiny", **kwargs)

    @classmethod
    def endoarss_small(cls, **kwargs: Any) -> ModelConfig:
        return cls(family="endoarss", backbone="small", **kwargs)

    @classmethod
    def endoarss_base(cls, **kwargs: Any) -> ModelConfig:
        return cls(family="endoarss", backbone="base", **kwargs)


def instrument_class_ids(seg_classes: list[str], names: list[str] | None = None) -> list[int]:
    """Ids of the segmentation classes that are instruments: those named in ``names`` (default
    ``MTLESD_INSTRUMENT_CLASSES``; case and surrounding spaces ignored)."""
    wanted = {n.strip().lower() for n in (MTLESD_INSTRUMENT_CLASSES if names is None else names)}
    return [i for i, n in enumerate(seg_classes) if n.strip().lower() in wanted]


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    """YAML/JSON give lists; the dataclasses want tuples for their fixed-length fields."""
    out = {}
    for k, v in d.items():
        if isinstance(v, list) and k not in ("seg_classes", "activity_classes"):
            v = tuple(v)
        out[k] = v
    return out


def _lists(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _lists(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_lists(x) for x in v]
    return v

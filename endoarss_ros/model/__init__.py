"""Pure PyTorch EndoARSS: backbone, adapters, SMA, heads, weights loading.

No ROS, no file I/O beyond weights.
"""
from .config import AdapterConfig, HeadConfig, ModelConfig, SMAConfig
from .finetune import (
    count_parameters,
    format_parameter_summary,
    freeze_for_adapter_training,
    merge_adapters,
    print_parameter_summary,
)
from .flops import estimate_flops
from .network import EndoARSS, EndoARSSOutput, build_model
from .weights import KeyMismatchError, UnsafeCheckpointError, WeightsError, load_model, save_model

__all__ = [
    "AdapterConfig", "EndoARSS", "EndoARSSOutput", "HeadConfig", "KeyMismatchError", "ModelConfig",
    "SMAConfig",
    "UnsafeCheckpointError", "WeightsError", "build_model", "count_parameters", "estimate_flops",
    "format_parameter_summary", "freeze_for_adapter_training", "load_model", "merge_adapters",
    "print_parameter_summary", "save_model",
]

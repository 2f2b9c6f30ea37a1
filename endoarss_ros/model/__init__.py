"""Pure PyTorch EndoARSS: backbone, adapters, SMA, heads, weights loading.

No ROS, no file I/O beyond weights. Names are imported on first use, so the configuration and the class
lists (``model.config``) can be read without importing torch.
"""
from __future__ import annotations

from endoarss_ros.lazy import lazy_exports

_EXPORTS = {
    "AdapterConfig": "config", "HeadConfig": "config", "ModelConfig": "config", "SMAConfig": "config",
    "count_parameters": "finetune", "format_parameter_summary": "finetune",
    "freeze_for_adapter_training": "finetune", "merge_adapters": "finetune", "print_parameter_summary": "finetune",
    "estimate_flops": "flops",
    "EndoARSS": "network", "EndoARSSOutput": "network", "build_model": "network",
    "KeyMismatchError": "weights", "UnsafeCheckpointError": "weights", "WeightsError": "weights",
    "load_model": "weights", "save_model": "weights",
}
__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

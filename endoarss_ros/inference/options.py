"""The engine's option names, in one place and without importing torch (``ros/params.py`` reads them too).

``BACKENDS`` is also the fallback order: a backend that cannot run here falls back to the next one.
"""
from __future__ import annotations

BACKENDS = ("tensorrt", "compile", "onnxruntime", "eager")
PRECISIONS = ("fp32", "fp16", "bf16")
HALF_PRECISIONS = ("fp16", "bf16")  # CUDA only: on a CPU they are refused (see InferenceEngine)

# 'logits': exact (bilinear upsample of the logits, then argmax), computed only where it can differ from the
# low-resolution argmax; 'logits-dense': the same answer, every class upsampled at full resolution (the
# previous CPU method, kept for comparison); 'mask': argmax at the head's resolution, nearest upsample.
UPSAMPLE_MODES = ("logits", "logits-dense", "mask")

# 'auto': cv2 on a CPU device, torch on CUDA. 'cv2': 2x2 box halvings first, then INTER_AREA for the rest;
# 'cv2-direct': one INTER_AREA resize (the previous CPU method); 'torch': the device path on any device.
PREPROCESS_MODES = ("auto", "cv2", "cv2-direct", "torch")

"""The inference graph exports with torch.export and to ONNX; onnxruntime matches PyTorch."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from endoarss_ros.model import ModelConfig, build_model, merge_adapters

torch.set_num_threads(min(torch.get_num_threads(), 2))

CONFIGS = {
    "endoarss_tiny": lambda: ModelConfig.endoarss_tiny(),
    # Official family with a 37x37 position grid: exercises the DINOv2 bicubic resampling and pixel SMA.
    "official_tiny": lambda: ModelConfig.official(backbone="tiny", input_size=(112, 112), pos_grid=37),
}


def _model(name):
    torch.manual_seed(0)
    model = build_model(CONFIGS[name]()).eval()
    for n, p in model.named_parameters():
        if "lora_B" in n or "task_B" in n:
            p.data.normal_(0, 0.02)
    return model


class LowRes(torch.nn.Module):
    """The engine's fast path: logits without the final upsample."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(x, output_size=None)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_torch_export(name):
    model = _model(name)
    merge_adapters(model)
    x = torch.rand(1, 3, 200, 260)
    with torch.no_grad():
        ref = model(x)
        ep = torch.export.export(model, (x,))
        out = ep.module()(x)
    assert torch.allclose(out[0], ref.segmentation, atol=1e-5)
    assert torch.allclose(out[1], ref.activity, atol=1e-5)
    low = torch.export.export(LowRes(model), (x,))
    with torch.no_grad():
        assert low.module()(x)[0].shape == model.forward_low_res(x).segmentation.shape


@pytest.mark.parametrize("name", list(CONFIGS))
def test_onnx_matches_pytorch(name, tmp_path):
    import onnxruntime as ort

    model = _model(name)
    merge_adapters(model)
    x = torch.rand(1, 3, 224, 224)
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # TorchScript-based exporter: needs no onnxscript; the graph is static-shaped for a fixed input size.
        torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["segmentation", "activity"])
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    seg, act = sess.run(None, {"images": x.numpy()})
    with torch.no_grad():
        ref = model(x)
    np.testing.assert_allclose(seg, ref.segmentation.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(act, ref.activity.numpy(), atol=1e-4, rtol=1e-4)

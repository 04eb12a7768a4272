"""A quantized layer's bias is on the int32 grid the integer kernels add it on (input scale x weight scale):
the PyTorch model adds what ONNX Runtime's and LiteRT's kernels add. Oracles: the int32 biases and scales in
the exported ONNX file, and LiteRT's outputs."""

import numpy as np
import onnx
import pytest
import torch
from helpers import as_artifact
from onnx import numpy_helper
from torch import nn

import edgeshrink


class Deep(nn.Module):
    """Six convolutions with biases: one-step differences at near-ties add up over the layers."""

    def __init__(self):
        super().__init__()
        widths = [1, 8, 16, 16, 16, 16, 16]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, padding=1) for a, b in zip(widths, widths[1:], strict=False))
        for conv in self.convs:
            nn.init.uniform_(conv.bias, -0.5, 0.5)  # biases of the size training leaves, not near 0
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        for conv in self.convs:
            x = torch.relu(conv(x))
        return self.head(x.mean((2, 3)))


@pytest.fixture(scope="module")
def quantized():
    torch.manual_seed(0)
    x = torch.randn(512, 1, 8, 8)
    return as_artifact(Deep(), x, True), x


def test_the_model_adds_the_biases_the_onnx_file_stores(quantized, tmp_path):
    art, x = quantized
    edgeshrink.export(art, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer}
    layers = {n: m for n, m in art.model.named_modules() if getattr(m, "bias", None) is not None}
    assert sorted(layers) == [*(f"convs.{i}" for i in range(6)), "head"]
    for name, layer in layers.items():
        stored = inits[f"{name}.bias_quantized"]  # int32, at scale input x weight per channel
        assert stored.dtype == np.int32
        added = (stored.astype(np.float64) * inits[f"{name}.bias_scale"].astype(np.float64)).astype(np.float32)
        np.testing.assert_array_equal(layer.bias.detach().numpy(), added, err_msg=name)


def test_litert_computes_what_the_model_computes_to_the_step(quantized, tmp_path):
    art, x = quantized
    result = edgeshrink.export(art, tmp_path / "m.tflite", verify_data=[x])
    assert result.parity["max_diff_steps"] < 0.5, result.parity  # with float biases: 1 step on these 512 inputs

"""Where the quantizers go decides which integer kernels ONNX Runtime fuses: checked on the runtime's own
optimized graph (its operator list is the oracle), with the file's outputs against the PyTorch model."""

import collections

import onnx
import onnxruntime as ort
import torch
from torch import nn
from torch.nn import functional as F

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.conv = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.stem(x))
        h = torch.relu(h + self.conv(h))  # a residual add and its ReLU
        return self.head(h.mean((2, 3)))


class Gated(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.gate = nn.Conv2d(8, 8, 1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = h * F.hardsigmoid(self.gate(h.mean((2, 3), keepdim=True)))  # a squeeze-excite product
        return self.head(h.mean((2, 3)))


def _runtime_ops(path) -> collections.Counter:
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(path.with_suffix(".opt.onnx"))
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return collections.Counter(n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node)


def _int8(model, x, tmp_path):
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    cfg = parse_stage({"type": "quantize", "weight_range": "full"})
    art = apply_stage(Artifact(model.eval(), example_input=x[:1]), cfg, ctx)
    result = edgeshrink.export(art, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    assert result.parity["within_tolerance"], result.parity
    return _runtime_ops(tmp_path / "m.onnx")


def test_a_residual_add_and_its_relu_run_as_one_integer_add(tmp_path):
    torch.manual_seed(0)
    ops = _int8(Residual(), torch.randn(16, 3, 8, 8), tmp_path)
    assert ops["QLinearAdd"] == 1 and ops["Relu"] == 0, ops


def test_a_gate_product_runs_as_an_integer_multiply(tmp_path):
    torch.manual_seed(0)
    ops = _int8(Gated(), torch.randn(16, 3, 8, 8), tmp_path)
    assert ops["QLinearMul"] == 1 and ops["Mul"] == 0, ops

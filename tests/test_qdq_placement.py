"""Where the quantizers go decides which integer kernels ONNX Runtime fuses: checked on the runtime's own
optimized graph (its operator list is the oracle), with the file's outputs against the PyTorch model."""

import collections

import onnx
import onnxruntime as ort
import torch
from helpers import Focus
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
    cfg = parse_stage({"type": "quantize", "weight_range": "auto"})
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


class Hardswished(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.Hardswish()
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        h = F.hardswish(self.conv2(self.act(self.conv(x))))  # a module and a functional hardswish
        return self.head(h.mean((2, 3)))


def test_hardswish_runs_its_product_as_an_integer_multiply_and_the_file_reloads(tmp_path):
    """ONNX Runtime has no integer hardswish: x * hardsigmoid(x) with a quantized gate makes the product a
    QLinearMul (no float Mul left); the file records the split, so loading it rebuilds the same model."""
    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    ops = _int8(Hardswished(), x, tmp_path)
    assert ops["QLinearMul"] == 2 and ops["Mul"] == 0, ops
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(Hardswished().eval(), example_input=x[:1]), parse_stage({"type": "quantize"}), ctx)
    assert art.quantization.split_hardswish
    edgeshrink.save(art, tmp_path / "m.eshrink")
    with torch.no_grad():
        assert torch.equal(edgeshrink.load(tmp_path / "m.eshrink", model=Hardswished()).model(x), art.model(x))


def test_a_file_quantized_before_the_split_loads_as_it_was(tmp_path):
    """Files written before hardswish was split record no split: load keeps hardswish whole."""
    from edgeshrink.quant.prepare import activation_quantizers, prepare

    torch.manual_seed(0)
    model = Hardswished().eval()
    whole, _ = prepare(model, {"conv": 8, "conv2": 8, "head": 8})
    split, plan = prepare(model, {"conv": 8, "conv2": 8, "head": 8}, split_hardswish=True)
    assert plan.split_hardswish == 2
    assert len(activation_quantizers(split)) == len(activation_quantizers(whole)) + 2  # one per gate
    with torch.no_grad():  # quantizers off: the split computes the same function (torch's own hardswish)
        x = torch.randn(4, 3, 8, 8)
        torch.testing.assert_close(split(x), whole(x), rtol=1e-6, atol=1e-6)


class EpsilonSqrt(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.conv2, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1), nn.Linear(8, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        h = self.conv2(torch.sqrt(h + 1e-3)) + h  # an epsilon before a sqrt, then a residual sum of two tensors
        return self.head(h.mean((2, 3)))


def test_a_constant_added_before_a_sqrt_is_not_rounded_away(tmp_path):
    """A sum with a constant stays float: quantized, x + 1e-3 rounds back to 0 on a uint8 grid from 0, and
    sqrt's gradient there is infinite (int8-qat weights became nan). Oracle: torch's autograd; a sum of two
    tensors is still one QLinearAdd in ONNX Runtime."""
    from edgeshrink.quant.passes import calibrate
    from edgeshrink.quant.prepare import prepare, set_mode

    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    model, _ = prepare(EpsilonSqrt().eval(), {"conv": 8, "conv2": 8, "head": 8})
    calibrate(model, [(x, None)])
    set_mode(model, "quantize")
    model.train()
    model(x).square().sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads.values()), [n for n, g in grads.items()]
    ops = _int8(EpsilonSqrt(), x, tmp_path)
    assert ops["QLinearAdd"] == 1 and ops["Sqrt"] == 1, ops


class SpatialSoftmax(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Linear(8, 4)

    def forward(self, x):
        h = self.conv(x)
        weights = torch.softmax(h.flatten(2), -1).view_as(h)  # a softmax, then a reshape, then a product
        return self.head((h * weights).sum((2, 3)))


class ChannelSoftmaxGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.gate, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Softmax2d(), nn.Linear(8, 4)

    def forward(self, x):
        h = self.conv(x)
        return self.head((h * self.gate(h)).mean((2, 3)))  # nn.Softmax2d: a module, over the channels


def test_a_softmax_module_s_output_gets_the_pinned_grid_too():
    from edgeshrink.quant.passes import calibrate
    from edgeshrink.quant.prepare import activation_quantizers, prepare

    torch.manual_seed(0)
    model, _ = prepare(ChannelSoftmaxGate().eval(), {"conv": 8, "head": 8})
    calibrate(model, [(torch.randn(16, 3, 8, 8), None)])
    scales = [float(q.scale) for _, q in activation_quantizers(model) if q.fixed is not None]
    assert scales == [1 / 256]


def test_a_softmax_output_keeps_litert_s_grid_through_calibration_and_learning(tmp_path):
    """The quantizer after a softmax (through its reshape) is pinned to [0, 1) in steps of 1/256, the only grid
    LiteRT's int8 SOFTMAX writes; calibration and LSQ leave it there while they move the others. Oracle: the
    grid's definition, and ONNX Runtime running the product as an integer multiply."""
    from edgeshrink.quant.passes import calibrate
    from edgeshrink.quant.prepare import activation_quantizers, prepare

    torch.manual_seed(0)
    x = torch.randn(16, 3, 8, 8)
    model, _ = prepare(SpatialSoftmax().eval(), {"conv": 8, "head": 8}, learn_scales=True)
    calibrate(model, [(x, None)])
    quantizers = dict(activation_quantizers(model))
    pinned = [name for name, q in quantizers.items() if q.fixed is not None]
    assert len(pinned) == 1 and quantizers[pinned[0]].learned_scale is None
    before = {name: float(q.scale) for name, q in quantizers.items()}
    assert before[pinned[0]] == 1 / 256 and int(quantizers[pinned[0]].zero_point) == 0
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    for _ in range(3):
        optimizer.zero_grad()
        model(x).square().mean().backward()
        optimizer.step()
    after = {name: float(q.scale) for name, q in quantizers.items()}
    assert after[pinned[0]] == 1 / 256
    assert any(after[name] != before[name] for name in after if name not in pinned)  # the others learned
    ops = _int8(SpatialSoftmax(), x, tmp_path)
    assert ops["QLinearMul"] == 1, ops


def _quantized_focus(x: torch.Tensor, slices_keep_grid: bool) -> Artifact:
    from edgeshrink.artifact import Quantization
    from edgeshrink.quant.ptq import PTQSettings, build_quantized

    bits = {"stem": 8, "conv": 8, "head": 8}
    settings = PTQSettings(slices_keep_grid=slices_keep_grid)
    model, plan = build_quantized(Focus().eval(), bits, [(x, None)], settings)
    quantization = Quantization(bits=bits, split_hardswish=True, sliced=plan.sliced > 0)
    return Artifact(model.eval(), quantization=quantization, example_input=x[:1])


def test_slices_keep_their_grid_and_a_file_from_before_loads_as_it_was(tmp_path):
    """A slice selects values on its input's grid: it shares that quantizer instead of getting a new one (LiteRT's
    STRIDED_SLICE must keep one grid; a new grid per slice failed conversion). The file records it; a file written
    before (no `sliced`) loads with a grid after each slice, as it was made. Oracle: the saved model's outputs."""
    from edgeshrink.quant.prepare import activation_quantizers

    torch.manual_seed(0)
    x = torch.randn(16, 1, 8, 8)
    ctx = StageContext(None, None, example_input=x[:1], calibration=[(x, None)])
    art = apply_stage(Artifact(Focus().eval(), example_input=x[:1]), parse_stage({"type": "quantize"}), ctx)
    assert art.quantization.sliced
    before = _quantized_focus(x, slices_keep_grid=False)
    assert not before.quantization.sliced
    assert len(activation_quantizers(before.model)) == len(activation_quantizers(art.model)) + 4  # one per slice
    for made in (art, before):
        path = tmp_path / f"{made.quantization.sliced}.eshrink"
        edgeshrink.save(made, path)
        with torch.no_grad():
            assert torch.equal(edgeshrink.load(path, model=Focus()).model(x), made.model(x))

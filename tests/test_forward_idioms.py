"""Idioms of hand-written forwards that crashed compress (a probe of shape idioms in user models): the textbook
`x.view(x.size(0), -1)` flatten after a convolution, which the loops' channels-last layout broke in training
(and, on 3-channel images, in evaluation too), and a ViT-style attention whose scale `(C // heads) ** -0.5` is a
number from the input's shape, which int8 quantized as if it were a tensor."""

import pytest
import torch
from helpers import smallest
from torch import nn

import edgeshrink
from edgeshrink.memory_layout import runs_channels_last
from edgeshrink.recipes import load_recipe
from edgeshrink.tasks.data import TensorLoader
from edgeshrink.train import TrainConfig, evaluate, fit


class ViewFlatten(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(h.view(h.size(0), -1))


class FlattenCall(ViewFlatten):
    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class VitAttention(nn.Module):
    """Patches, then timm-style attention written with the input's shape."""

    def __init__(self, dim: int = 16, heads: int = 2):
        super().__init__()
        self.heads = heads
        self.patches = nn.Conv2d(3, dim, 2, 2)
        self.qkv, self.proj, self.head = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x):
        x = self.patches(x).flatten(2).transpose(1, 2)
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * (C // self.heads) ** -0.5).softmax(dim=-1)
        x = x + self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))
        return self.head(x.mean(1))


def _data(channels: int, n: int = 192, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, channels, 8, 8, generator=torch.Generator().manual_seed(99))
    labels = torch.randint(0, 3, (n,), generator=g)
    return centers[labels] + 0.5 * torch.randn(n, channels, 8, 8, generator=g), labels


def _loaders(channels: int):
    (x, y), (xv, yv) = _data(channels), _data(channels, 96, seed=1)
    return TensorLoader(x, y, 32, shuffle=True), TensorLoader(xv, yv, 96)


def _trained_then_int8(model: nn.Module, train, val, epochs: int, tmp_path):
    """`model` trained `epochs` passes (Adam), then the int8 recipe at its smallest settings into tmp_path/run."""
    fit(model, train, TrainConfig(epochs=epochs, optimizer="adam", lr=3e-3))
    return edgeshrink.compress(
        model.eval(), smallest(load_recipe("int8")), train_loader=train, val_loader=val, out=tmp_path / "run",
        progress=False,
    )  # fmt: skip


@pytest.mark.parametrize("channels", [1, 3])
def test_a_view_after_a_convolution_trains_evaluates_and_compresses(channels, tmp_path):
    torch.manual_seed(0)
    train, val = _loaders(channels)
    model = ViewFlatten(channels)
    assert not runs_channels_last(model, val.inputs)  # its forward refuses that layout: the loops keep the model's
    before = model.fc.weight.detach().clone()
    fit(model, train, TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
    assert not torch.equal(model.fc.weight, before) and model.conv.weight.is_contiguous()
    with torch.no_grad():  # the oracle: the model's own forward in its own layout
        expected = 100.0 * float((model(val.inputs).argmax(1) == val.labels).float().mean())
    assert evaluate(model, val) == pytest.approx(expected)
    result = edgeshrink.compress(
        model.eval(), smallest(load_recipe("int8-qat")), train_loader=train, val_loader=val, out=tmp_path,
        progress=False,
    )  # fmt: skip
    assert result.report["budget"]["final"] == pytest.approx(evaluate(result.model, val))


def test_a_forward_that_runs_channels_last_still_does():
    x, _ = _data(3, 4)
    model = FlattenCall(3).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert runs_channels_last(model, x)  # the loops keep the 2x faster layout for the forwards that allow it
    assert model.training and model.conv.weight.is_contiguous()  # the trial ran on a copy
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key])


def test_attention_scaled_by_a_number_from_the_shape_quantizes_and_exports(tmp_path):
    torch.manual_seed(0)
    train, val = _loaders(3)
    model = VitAttention()
    result = _trained_then_int8(model, train, val, 6, tmp_path)
    plan = {row["name"]: row["status"] for row in result.report["stages"][0]["layers"]}
    assert plan["qkv"] == plan["proj"] == "quantized"
    with torch.no_grad():  # the fake-quantized model follows the float one (what int8 is for)
        agree = (result.model(val.inputs).argmax(1) == model(val.inputs).argmax(1)).float().mean()
    assert agree >= 0.95
    exported = edgeshrink.export(result, tmp_path / "model.onnx", verify_data=[val.inputs])
    assert exported.parity["top1_agreement"] >= 99.0


class LogitsAndFeatures(ViewFlatten):
    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(1)
        return self.fc(h), h


@pytest.mark.parametrize("call", ["fit", "evaluate"])
def test_a_model_returning_a_tuple_is_refused_by_the_loops_in_one_line(call):
    train, val = _loaders(1)
    model = LogitsAndFeatures(1)
    with pytest.raises(edgeshrink.EdgeshrinkError, match="returns a tuple of 2 outputs, not one tensor") as err:
        fit(model, train, TrainConfig(epochs=1)) if call == "fit" else evaluate(model, val)
    assert "\n" not in str(err.value)


def test_distillation_hands_the_student_and_the_teacher_back_in_the_standard_layout():
    from edgeshrink.train import DistillConfig

    train, _ = _loaders(3)
    teacher, student = FlattenCall(3).eval(), FlattenCall(3)
    cfg = TrainConfig(epochs=1, lr=1e-3, shift=1, distill=DistillConfig())  # shifted images: the teacher runs per batch
    fit(student, train, cfg, teacher=teacher)
    for model in (teacher, student):
        assert model.conv.weight.is_contiguous() and not model.conv.weight.is_contiguous(
            memory_format=torch.channels_last
        )


class ByteImages(nn.Module):
    """uint8 images in, scaled inside the model: what a camera pipeline hands over."""

    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x.float() / 255.0)).flatten(1))


def _byte_loaders():
    (x, y), (xv, yv) = _data(1), _data(1, 96, seed=1)
    to_bytes = lambda t: ((t + 3).clamp(0, 6) / 6 * 255).to(torch.uint8)  # noqa: E731
    return TensorLoader(to_bytes(x), y, 32, shuffle=True), TensorLoader(to_bytes(xv), yv, 96)


def test_a_model_taking_uint8_images_quantizes_and_its_onnx_file_takes_uint8(tmp_path):
    torch.manual_seed(0)
    train, val = _byte_loaders()
    result = _trained_then_int8(ByteImages(), train, val, 3, tmp_path)
    exported = edgeshrink.export(result, tmp_path / "model.onnx", verify_data=[val.inputs])
    assert exported.parity["examples"] == len(val.inputs) and exported.parity["top1_agreement"] >= 99.0


def test_float16_of_a_forward_that_makes_float32_is_refused_in_one_line(tmp_path):
    train, val = _byte_loaders()
    with pytest.raises(edgeshrink.EdgeshrinkError, match="does not run in float16.*x.to") as err:
        edgeshrink.compress(ByteImages().eval(), "fp16", train_loader=train, val_loader=val, out=tmp_path)
    assert "\n" not in str(err.value) and not any(tmp_path.iterdir())

"""Core ML export (--format coreml): the .mlpackage, read back from disk with coremltools, stores a shared layer as
its codebook plus indices, a pruned one as its mask plus nonzero values, and decodes (coremltools' reference
decoding) to exactly the model's weights; a package that would not is refused and nothing is written. Core ML
runs only on Apple platforms, so these are structural checks: the export says its numerics were not run."""

import copy

import numpy as np
import pytest
import torch
from helpers import SmallNet, loaders
from torch import nn

pytest.importorskip("coremltools")

import edgeshrink  # noqa: E402
from edgeshrink.errors import ExportError  # noqa: E402
from edgeshrink.exporters import coreml_check  # noqa: E402
from edgeshrink.exporters.coreml import NOT_RUN, plan_weight  # noqa: E402
from edgeshrink.quant.half import HalfPrecision  # noqa: E402
from edgeshrink.quant.ptq import PTQSettings, post_training_quantize  # noqa: E402
from edgeshrink.train import TrainConfig, fit  # noqa: E402


@pytest.fixture(scope="module")
def compressed():
    """SmallNet with fc1 pruned to 90% and shared on 16 values, conv shared on 4 values, fc2 left alone."""
    train, val = loaders()
    torch.manual_seed(0)
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=2, optimizer="adam", lr=3e-3))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        w = model.fc1.weight
        codebook = torch.linspace(-0.2, 0.2, 16)
        w.copy_(codebook[torch.randint(0, 16, w.shape, generator=g)])
        w[torch.rand(w.shape, generator=g) < 0.9] = 0
        model.conv.weight.copy_(torch.tensor([-0.3, -0.1, 0.1, 0.3])[torch.randint(0, 4, model.conv.weight.shape)])
    return model.eval(), next(iter(val))[0]


def _stored(package) -> dict[str, coreml_check.StoredWeight]:
    return {w.consumer: w for w in coreml_check.read_package(package)}


def test_palettes_masks_and_values_are_the_models(compressed, tmp_path):
    model, x = compressed
    result = edgeshrink.export(model, tmp_path / "m.mlpackage", format="coreml", verify_data=[x])
    assert result.path.is_dir() and result.bytes > 0 and NOT_RUN in result.notes
    by_layer = {row["layer"]: row for row in result.parity["structural"]["layers"]}
    assert {k: v["stored_as"] for k, v in by_layer.items()} == {
        "conv": "palette",
        "fc1": "palette+sparse",
        "fc2": "plain",
    }
    stored = _stored(result.path)  # read again, independently of the export's own check
    fc1, conv = stored[by_layer["fc1"]["op"]], stored[by_layer["conv"]["op"]]
    weight = model.fc1.weight.detach().numpy()
    assert np.array_equal(fc1.dense, weight)
    assert np.array_equal(fc1.mask != 0, weight != 0)
    assert set(np.unique(fc1.palette)) >= set(np.unique(weight[weight != 0]))
    assert fc1.palette.size <= 16  # 4-bit indices: the 16-value codebook, no more
    assert np.array_equal(conv.dense, model.conv.weight.detach().numpy()) and conv.palette.size <= 4


def test_compression_makes_the_package_smaller(compressed, tmp_path):
    model, x = compressed
    dense = copy.deepcopy(model)
    with torch.no_grad():
        dense.fc1.weight.add_(torch.randn_like(dense.fc1.weight) * 1e-3)  # no zeros, no shared values
    small = edgeshrink.export(model, tmp_path / "s.mlpackage", format="coreml", verify_data=[x])
    big = edgeshrink.export(dense, tmp_path / "d.mlpackage", format="coreml", verify_data=[x])
    fc1_plain = 4 * model.fc1.weight.numel()
    assert big.bytes - small.bytes > 0.8 * fc1_plain  # fc1 at 10% nonzeros x 4 bits + 1-bit mask


def test_float16_package_holds_the_float16_weights(compressed, tmp_path):
    model, x = compressed
    half = HalfPrecision(copy.deepcopy(model))
    result = edgeshrink.export(half, tmp_path / "h.mlpackage", format="coreml", verify_data=[x])
    assert result.precision == "fp16"
    op = {r["layer"]: r["op"] for r in result.parity["structural"]["layers"]}["fc2"]
    stored = _stored(result.path)[op].dense
    assert stored.dtype == np.float16 and np.array_equal(stored, model.fc2.weight.detach().numpy().astype(np.float16))


def test_batchnorm_is_folded_and_checked_as_folded(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3))
    model[1].running_mean.uniform_(-1, 1)
    model[1].running_var.uniform_(0.5, 2)
    model.eval()
    result = edgeshrink.export(model, tmp_path / "b.mlpackage", torch.randn(1, 1, 8, 8), format="coreml")
    assert result.parity["structural"]["weights_checked"] == 2


def test_a_package_that_decodes_differently_is_not_written(compressed, tmp_path, monkeypatch):
    model, x = compressed
    real = coreml_check.read_package

    def off_by_one_value(package):
        stored = real(package)
        stored[0].dense = stored[0].dense.copy()
        stored[0].dense.flat[0] += 1.0
        return stored

    monkeypatch.setattr(coreml_check, "read_package", off_by_one_value)
    with pytest.raises(ExportError, match="decodes differently"):
        edgeshrink.export(model, tmp_path / "x.mlpackage", format="coreml", verify_data=[x])
    assert not (tmp_path / "x.mlpackage").exists()


class Tied(nn.Module):
    """One shared-weight conv applied twice (weight tying): two MIL ops read one constant."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.fc = nn.Conv2d(1, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.b(torch.relu(self.b(torch.relu(self.a(x))))))
        return self.fc(h.mean((2, 3)))


def test_a_layer_applied_twice_is_compressed_in_both_places(tmp_path):
    """coremltools refused (a raw ValueError) a palette on one of two ops that read the same constant; both get it,
    into a folder that does not exist yet, and each op's weight decodes to the layer's. Oracle: the package as
    written, read back."""
    torch.manual_seed(0)
    model, x = Tied().eval(), torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        model.b.weight.copy_(torch.tensor([-0.2, -0.05, 0.05, 0.2])[torch.randint(0, 4, model.b.weight.shape)])
    result = edgeshrink.export(model, tmp_path / "new" / "t.mlpackage", format="coreml", verify_data=[x])
    readers = [w for w in _stored(result.path).values() if w.dense.shape == model.b.weight.shape]
    assert len(readers) == 2
    for stored in readers:
        assert stored.representation == "palette" and stored.palette.size <= 4
        assert np.array_equal(stored.dense, model.b.weight.detach().numpy())


class VideoAttention(nn.Module):
    """A Conv3d over a clip, then attention over its positions: the layers the weight count once missed
    (it counted Conv1d/2d and Linear only, and refused the package as holding more weights than the model)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv3d(1, 16, 3, padding=1)
        self.attn = nn.MultiheadAttention(16, 2, batch_first=True)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)
        return self.fc(self.attn(h, h, h, need_weights=False)[0].mean(1))


def test_conv3d_and_attention_input_projection_weights_are_each_checked(tmp_path):
    torch.manual_seed(0)
    model, x = VideoAttention().eval(), torch.randn(2, 1, 4, 4, 4)
    with torch.no_grad():
        model.conv.weight.copy_(torch.tensor([-0.2, 0.1, 0.3])[torch.randint(0, 3, model.conv.weight.shape)])
    result = edgeshrink.export(model, tmp_path / "v.mlpackage", format="coreml", verify_data=[x])
    layers = {row["layer"]: row for row in result.parity["structural"]["layers"]}
    assert set(layers) == {"conv", "attn.in_proj", "attn.out_proj", "fc"}
    stored = _stored(result.path)
    conv, in_proj = stored[layers["conv"]["op"]], stored[layers["attn.in_proj"]["op"]]
    assert conv.representation == "palette" and np.array_equal(conv.dense, model.conv.weight.detach().numpy())
    assert np.array_equal(in_proj.dense, model.attn.in_proj_weight.detach().numpy())


def test_an_int8_model_is_refused(compressed, tmp_path):
    model, x = compressed
    q, _ = post_training_quantize(model, [(x, None)], 8, PTQSettings(calibration="percentile"))
    with pytest.raises(ExportError, match="integer grid"):
        edgeshrink.export(q, tmp_path / "q.mlpackage", format="coreml", verify_data=[x])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "weight, expected",
    [
        (np.linspace(-1, 1, 4096, dtype=np.float32), "plain"),  # 4096 distinct values
        (np.tile(np.float32([-0.5, 0.5]), 2048), "palette"),
        (np.where(np.arange(4096) % 10 == 0, np.linspace(-1, 1, 4096), 0).astype(np.float32), "sparse"),
        (np.where(np.arange(4096) % 10 == 0, 0.5, 0).astype(np.float32), "palette+sparse"),
        (np.float32([0.1, 0.2, 0.3, 0.4, 0.5]), "plain"),  # a palette table larger than the tensor saves nothing
    ],
)
def test_the_plan_picks_what_saves_bytes(weight, expected):
    assert plan_weight(weight, 4) == expected

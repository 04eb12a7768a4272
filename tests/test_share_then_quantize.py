"""Weight sharing followed by quantization: the codebook lands on one integer grid per tensor, so the
container is no larger than sharing alone and the exported integers keep at most 2^bits values."""

import numpy as np
import onnx
import torch
from helpers import SmallNet, loaders
from onnx import numpy_helper

import edgeshrink
from edgeshrink.artifact import Artifact
from edgeshrink.io.writer import to_bytes
from edgeshrink.stages.base import StageContext, apply_stage, parse_stage
from edgeshrink.train import TrainConfig, fit

BITS = 3


def _trained():
    """(a trained SmallNet as an artifact, a context that calibrates on the validation inputs, those data)."""
    torch.manual_seed(0)
    train, val = loaders()
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=3, lr=3e-3))
    ctx = StageContext(None, None, example_input=val.inputs[:1], calibration=[(val.inputs, None)])
    return Artifact(model.eval(), example_input=val.inputs[:1]), ctx, val


def _shared_then_quantized():
    art, ctx, val = _trained()
    for stage in (
        {"type": "prune", "method": "sparsity", "sparsity": 0.6, "finetune": {"epochs": 0}},
        {"type": "share", "bits": BITS, "finetune": {"epochs": 0}},
    ):
        art = apply_stage(art, parse_stage(stage), ctx)
    quantized = apply_stage(art, parse_stage({"type": "quantize", "calibration": "minmax"}), ctx)
    return art, quantized, val


def test_share_then_int8_is_no_larger_and_keeps_the_codebook_size(tmp_path):
    shared, quantized, val = _shared_then_quantized()
    assert sorted(quantized.quantization.per_tensor) == ["conv", "fc1", "fc2"]
    # the weights (int8 codes + their one-value scale tensors) take no more bytes than the float codebooks;
    # the header grows by the activation quantizers' records, a few hundred bytes on any model
    keys = {f"{n}.weight" for n in ("conv", "fc1", "fc2")}
    stored = {t.name: t.nbytes for t in to_bytes(quantized).tensors}
    assert sum(v for k, v in stored.items() if k.split("@")[0] in keys) <= sum(
        t.nbytes for t in to_bytes(shared).tensors if t.name in keys
    )
    for name in ("conv", "fc1", "fc2"):  # oracle: the layer's own effective weights
        w = getattr(quantized.model, name).weight.detach()
        nonzero = torch.unique(w[w != 0])
        assert nonzero.numel() <= 2**BITS
    # saved and loaded: the same function, integers stored
    written = edgeshrink.save(quantized, tmp_path / "m.eshrink")
    loaded = edgeshrink.load(written.path, model=SmallNet())
    with torch.no_grad():
        assert torch.equal(loaded.model(val.inputs), quantized.model(val.inputs))
    assert loaded.quantization == quantized.quantization
    # the ONNX file's integer weights: at most 2^bits distinct values per output channel
    result = edgeshrink.export(loaded, tmp_path / "m.onnx", verify_data=[val.inputs], activation_type="uint8")
    assert result.parity["within_tolerance"]
    inits = {i.name: numpy_helper.to_array(i) for i in onnx.load(tmp_path / "m.onnx").graph.initializer}
    weights = [v for k, v in inits.items() if v.dtype == np.int8 and v.ndim >= 2]
    assert len(weights) == 3
    for w in weights:
        per_channel = [np.unique(row[row != 0]).size for row in w.reshape(w.shape[0], -1)]
        assert max(per_channel) <= 2**BITS and np.unique(w[w != 0]).size <= 2**BITS


def test_quantize_then_share_puts_the_codebook_on_one_grid(tmp_path):
    art, ctx, val = _trained()
    art = apply_stage(art, parse_stage({"type": "quantize", "calibration": "minmax"}), ctx)
    quantized_bytes = to_bytes(art).nbytes
    art = apply_stage(art, parse_stage({"type": "share", "bits": BITS, "finetune": {"epochs": 0}}), ctx)
    assert (
        sorted(art.quantization.per_tensor) == ["conv", "fc1", "fc2"] and "one integer grid" in art.records[-1].notes[0]
    )
    assert to_bytes(art).nbytes < quantized_bytes / 2
    for name in ("conv", "fc1", "fc2"):
        layer = getattr(art.model, name)
        w = layer.weight.detach()
        scale = layer.parametrizations.weight[-1].scale
        assert torch.unique(scale).numel() == 1  # one grid for the tensor
        codes = w / scale.reshape(-1, *[1] * (w.dim() - 1))
        assert torch.allclose(codes, codes.round(), atol=1e-4)  # every weight is an integer code of that grid
        assert torch.unique(codes.round()).numel() <= 2**BITS
    loaded = edgeshrink.load(edgeshrink.save(art, tmp_path / "m.eshrink").path, model=SmallNet())
    with torch.no_grad():
        assert torch.equal(loaded.model(val.inputs), art.model(val.inputs))

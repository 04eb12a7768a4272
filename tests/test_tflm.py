"""TensorFlow Lite Micro export: the prune, Huffman and LUT encodings decode, in the real TFLM interpreter, to
exactly the int8 weights they encode; the export of a pruned model is smaller than its plain int8 file,
computes what that file computes, and refuses what TFLM cannot run.

The oracle for the decoders is the interpreter itself: a one-op FULLY_CONNECTED model whose output step
equals its weight step reads the weight matrix back column by column (input e_j gives W[:, j])."""

import copy

import numpy as np
import pytest
import torch
from helpers import SmallNet, loaders
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

pytest.importorskip("tflite_micro")

import edgeshrink  # noqa: E402
from edgeshrink.encode.tflm import huffman_decode, huffman_encode, prune_encode  # noqa: E402
from edgeshrink.errors import ExportError  # noqa: E402
from edgeshrink.exporters.tflite import tflite_bytes  # noqa: E402
from edgeshrink.exporters.tflm import tflm_bytes  # noqa: E402
from edgeshrink.exporters.tflm_compress import compress_tflite  # noqa: E402
from edgeshrink.exporters.tflm_prepare import drop_dead_inputs, drop_dead_outputs, restore_codebooks  # noqa: E402
from edgeshrink.quant.half import HalfPrecision  # noqa: E402
from edgeshrink.runtimes.tflm import (  # noqa: E402
    ARENA_SEARCH_BYTES,
    TFLMSession,
    _runs_with,
    measure_arena,
    minimal_arena,
)
from edgeshrink.train import TrainConfig, fit  # noqa: E402
from edgeshrink.weights import attach_mask, get_shared  # noqa: E402

ROWS, COLS = 24, 40


def readback_model(weights: np.ndarray, per_channel: bool) -> bytes:
    """x int8 [1, COLS] (scale 1) -> FULLY_CONNECTED(W, zero bias) -> y with y's scale = W's: y = W @ x."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    rows, cols = weights.shape
    step = 0.5
    model = me.Model()
    sg = model.add_subgraph()
    if per_channel:  # scales a hair apart (|w| x 1e-4 x rows < 0.5 keeps y = w exact), so they stay per channel
        qw = me.Quantization(scales=[step * (1 + 1e-4 * i) for i in range(rows)], zero_points=[0] * rows, axis=0)
    else:
        qw = me.Quantization(scales=step, zero_points=0)
    x = sg.add_tensor(shape=(1, cols), dtype=fb.TensorType.INT8, quantization=me.Quantization(scales=1.0))
    w = sg.add_tensor(shape=(rows, cols), dtype=fb.TensorType.INT8, data=weights.astype(np.int8), quantization=qw)
    b = sg.add_tensor(shape=(rows,), dtype=fb.TensorType.INT32, data=np.zeros(rows, np.int32), quantization=qw)
    y = sg.add_tensor(shape=(1, rows), dtype=fb.TensorType.INT8, quantization=me.Quantization(scales=step))
    op = sg.add_operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y])
    op._fb.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    op._fb.builtinOptions = fb.FullyConnectedOptionsT()
    sg.inputs, sg.outputs = [x], [y]
    return bytes(model.build())


def read_weights(data: bytes, rows: int, cols: int) -> np.ndarray:
    session = TFLMSession(data)
    out = np.zeros((rows, cols), dtype=np.int8)
    for j in range(cols):
        e = np.zeros((1, cols), dtype=np.int8)
        e[0, j] = 1
        out[:, j] = session.run_raw(e)[0]
    return out


rng = np.random.default_rng(0)
WEIGHTS = {
    "uniform": rng.integers(-127, 128, (ROWS, COLS)),
    "one symbol": np.full((ROWS, COLS), -3),
    "all zero": np.zeros((ROWS, COLS)),
    "long runs of zeros": np.where(rng.random((ROWS, COLS)) < 0.97, 0, rng.integers(-127, 128, (ROWS, COLS))),
    "skewed": np.clip(rng.geometric(0.2, (ROWS, COLS)) - 3, -127, 127),
    "shared (6 values)": rng.choice([-100, -7, 0, 3, 50, 127], (ROWS, COLS)),
}


@pytest.mark.parametrize("per_channel", [True, False], ids=["per-channel", "per-tensor"])
@pytest.mark.parametrize("method", ["huffman", "prune", "lut"])
@pytest.mark.parametrize("case", list(WEIGHTS))
def test_tflm_decodes_each_encoding_to_exactly_the_int8_weights(case, method, per_channel):
    weights = WEIGHTS[case].astype(np.int8)
    plain = readback_model(weights, per_channel)
    assert np.array_equal(read_weights(plain, ROWS, COLS), weights)  # the oracle reads the plain file right
    data, choices = compress_tflite(plain, (method,), force=True)
    if method == "lut" and len(np.unique(weights)) > 128 and not per_channel:
        assert choices[0].method == "plain" and data == plain  # more values than a 7-bit index: not offered
        return
    assert choices[0].method.startswith(method) and data != plain
    assert np.array_equal(read_weights(data, ROWS, COLS), weights)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.integers(-128, 127), min_size=1, max_size=600),
    st.sampled_from([np.int8, np.int16]),
)
def test_python_reading_of_the_huffman_decoder_round_trips(values, dtype):
    x = np.array(values, dtype=dtype)
    enc = huffman_encode(x)
    assert np.array_equal(huffman_decode(enc, x.size, dtype), x)
    assert len(enc.data) % 4 == 0 and len(enc.data) >= 4 * ((x.size + 31) // 32)  # >= 1 bit per element, words


def test_huffman_spends_at_least_one_bit_per_weight_and_prune_wins_when_very_sparse():
    sparse = np.where(rng.random(20000) < 0.99, 0, rng.integers(1, 127, 20000)).astype(np.int8)
    huffman, prune = huffman_encode(sparse), prune_encode(sparse)
    assert len(huffman.data) * 8 >= sparse.size  # a code per element, one bit at the least
    assert prune.bytes == (sparse.size + 7) // 8 + 16 + int(np.count_nonzero(sparse))
    assert prune.bytes < huffman.bytes


@pytest.fixture(scope="module")
def pruned():
    """SmallNet trained on the blobs, 90% of fc1 pruned, and its calibration inputs."""
    train, test = loaders()
    torch.manual_seed(0)
    model = SmallNet()
    fit(model, train, TrainConfig(epochs=3, lr=3e-3))
    fc = [m for m in model.modules() if isinstance(m, nn.Linear)][0]
    threshold = fc.weight.detach().abs().flatten().kthvalue(int(0.9 * fc.weight.numel())).values
    attach_mask(fc, "weight", fc.weight.detach().abs() > threshold)
    return model.eval(), test.inputs


def test_forced_methods_on_every_tensor_compute_what_the_plain_file_computes(pruned):
    model, x = pruned
    plain, _, _ = tflite_bytes(model, x[:1], "int8", [x])
    reference = TFLMSession(plain)
    inputs = [reference.quantize(x[i : i + 1].numpy()) for i in range(32)]
    expected = [reference.run_raw(q) for q in inputs]
    for method in ("huffman", "prune", "lut"):
        data, choices = compress_tflite(plain, (method,), force=True)
        assert any(c.method.startswith(method) for c in choices)
        session = TFLMSession(data)
        assert all(np.array_equal(session.run_raw(q), e) for q, e in zip(inputs, expected, strict=True)), method


def test_export_is_smaller_than_plain_int8_verified_and_measures_its_arena(pruned, tmp_path):
    model, x = pruned
    result = edgeshrink.export(model, tmp_path / "m.tflite", format="tflm", verify_data=[x], calibration=[x])
    e = result.extra
    assert result.bytes == (tmp_path / "m.tflite").stat().st_size < e["uncompressed_int8_bytes"]
    assert result.parity["top1_agreement"] >= 99.0 and result.runtime == "TensorFlow Lite Micro"
    path = tmp_path / "m.tflite"
    assert e["arena_reported_bytes"] == measure_arena(path.read_bytes()) <= e["arena_bytes"]
    assert _runs_with(path, e["arena_bytes"])  # the measured arena is enough ...
    smaller = e["arena_bytes"] - 2 * ARENA_SEARCH_BYTES
    assert smaller < e["arena_reported_bytes"] or not _runs_with(path, smaller)  # ... and no larger than needed
    fc1 = max(result.layers, key=lambda t: t["plain_bytes"])
    assert fc1["method"] != "plain" and fc1["bytes"] == min(fc1["candidates"].values())
    assert e["decode_bytes_max"] == fc1["plain_bytes"]  # the decoded tensor lives in the arena


def test_a_float_model_without_calibration_and_a_float16_model_are_refused_in_one_line(pruned, tmp_path):
    model, x = pruned
    with pytest.raises(ExportError, match="calibration"):
        edgeshrink.export(model, tmp_path / "a.tflite", format="tflm", verify_data=[x])
    with pytest.raises(ExportError, match="TFLite Micro runs integer models"):
        edgeshrink.export(
            HalfPrecision(copy.deepcopy(model)), tmp_path / "b.tflite", format="tflm", verify_data=[x], calibration=[x]
        )
    assert not list(tmp_path.iterdir())


def test_profile_reads_the_compressed_weights_of_a_tflm_file(pruned, tmp_path):
    model, x = pruned
    plain, _, _ = tflite_bytes(model, x[:1], "int8", [x])
    (tmp_path / "plain.tflite").write_bytes(plain)
    for method in ("huffman", "prune", "lut"):
        data, choices = compress_tflite(plain, (method,), force=True)
        (tmp_path / f"{method}.tflite").write_bytes(data)
        p, q = edgeshrink.profile(tmp_path / "plain.tflite"), edgeshrink.profile(tmp_path / f"{method}.tflite")
        assert (p.weights.parameters, p.weights.nonzeros) == (q.weights.parameters, q.weights.nonzeros)  # oracle
        assert p.macs.nonzero == q.macs.nonzero
        largest = max(c.decoded_bytes for c in choices)
        assert q.activations.peak_bytes >= largest > 0  # the decoded tensor lives in the arena
        advice = edgeshrink.profile(tmp_path / f"{method}.tflite", device="cortex-m4", latency=False)
        assert advice.device.fit.deployment.flash_bytes == len(data)
        assert "decoded from flash into the arena" in advice.device.fit.deployment.note
        assert advice.activations.peak_bytes == minimal_arena(data)  # measured in TFLM, not computed
        assert advice.activations.source.startswith("measured")


class _MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.relu, self.fc2, self.fc3 = nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 12), nn.Linear(12, 4)

    def forward(self, x):
        return self.fc3(self.relu(self.fc2(self.relu(self.fc1(x)))))


def test_preparing_for_tflm_narrows_layers_without_changing_the_function():
    torch.manual_seed(0)
    model = _MLP().eval()
    with torch.no_grad():
        model.fc1.weight[:, [0, 3, 7]] = 0  # inputs never read
        model.fc2.weight[:, [2, 5]] = 0  # fc1 outputs never read
        model.fc3.weight.copy_(torch.where(model.fc3.weight > 0, 0.5, -0.5))  # two shared values, no zeros
    x = torch.randn(64, 20)
    expected = model(x)
    prepared = copy.deepcopy(model)
    notes = restore_codebooks(prepared) + drop_dead_outputs(prepared) + drop_dead_inputs(prepared)
    assert torch.allclose(prepared(x), expected, atol=1e-6)  # oracle: the unprepared model
    assert prepared.fc1.fc1.weight.shape == (14, 17) and prepared.fc2.weight.shape == (12, 14)
    assert torch.equal(prepared.fc1.index, torch.tensor([1, 2, 4, 5, 6, 8, *range(9, 20)], dtype=torch.int32))
    assert get_shared(prepared.fc3) is not None and len(notes) == 3


def test_a_shared_layer_is_quantized_on_one_grid_and_keeps_few_values_in_the_file(tmp_path):
    torch.manual_seed(0)
    model = _MLP().eval()
    with torch.no_grad():
        for fc in (model.fc1, model.fc2):
            fc.weight.copy_(torch.round(fc.weight * 8) / 8)  # at most 9 distinct values per layer
    x = torch.randn(128, 20)
    built = tflm_bytes(model, x[:1], [x], ("huffman",))
    layers = {c.layer: c for c in built.choices}
    from tflite_micro.tensorflow.lite.micro.compression import model_editor

    plain = {t.name: t for t in model_editor.read(built.plain).subgraphs[0].tensors}
    compressed = model_editor.read(built.data).subgraphs[0].tensors
    for name in ("fc1", "fc2"):
        weight = plain[layers[name].tensor]
        assert len(np.unique(weight.array)) <= len(np.unique(getattr(model, name).weight.detach()))
        scales = np.atleast_1d(weight.quantization.scales)
        assert np.all(scales == scales[0])  # one grid for the tensor, written once per channel by the converter
        same = [t for t in compressed if tuple(t.shape) == tuple(weight.shape) and t.quantization is not None]
        assert same and all(np.atleast_1d(t.quantization.scales).size == 1 for t in same)  # once in the TFLM file


def test_on_a_microcontroller_a_run_folder_is_judged_by_its_tflm_file_once_exported(pruned, tmp_path):
    model, x = pruned
    edgeshrink.save(model, tmp_path / "model.eshrink", example_input=x[:1])
    container = edgeshrink.profile(tmp_path / "model.eshrink", device="cortex-m4", model=SmallNet(), latency=False)
    assert container.device.fit.deployment.flash_bytes == (tmp_path / "model.eshrink").stat().st_size
    assert any("no TFLite Micro file" in n for n in container.notes)
    art = edgeshrink.load(tmp_path / "model.eshrink", model=SmallNet())
    edgeshrink.export(art, tmp_path / "model.tflm.tflite", format="tflm", verify_data=[x], calibration=[x])
    deployed = edgeshrink.profile(tmp_path / "model.eshrink", device="cortex-m4", model=SmallNet(), latency=False)
    fit = deployed.device.fit
    assert fit.deployment.file.endswith("model.tflm.tflite") and fit.deployment.runtime == "TFLite Micro"
    assert fit.flash.need == (tmp_path / "model.tflm.tflite").stat().st_size
    assert fit.ram.need == minimal_arena((tmp_path / "model.tflm.tflite").read_bytes())  # measured arena
    advice = edgeshrink.advise(tmp_path / "model.eshrink", device="cortex-m4", network="ble", model=SmallNet())
    assert "model.tflm.tflite" in advice.reasons[0]


def test_a_tflm_file_more_than_one_output_step_off_is_not_written(pruned, tmp_path, monkeypatch):
    from edgeshrink.exporters.tflm import TFLMExporter

    model, x = pruned
    real = TFLMExporter.runner

    def two_steps_off(self, data, threads):
        run, step = real(self, data, threads), TFLMSession(data).output["quantization"][0]
        return lambda batch: run(batch) + 2 * float(step)  # same top-1, every output two steps away

    monkeypatch.setattr(TFLMExporter, "runner", two_steps_off)
    with pytest.raises(ExportError, match="output steps"):
        edgeshrink.export(model, tmp_path / "m.tflite", format="tflm", verify_data=[x], calibration=[x])
    assert not (tmp_path / "m.tflite").exists()


def test_a_model_tflm_has_no_kernels_for_is_refused_in_one_line_naming_the_op_and_what_to_export(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 16), nn.GELU(), nn.Linear(16, 4)).eval()
    x = torch.randn(64, 20)
    with pytest.raises(ExportError) as refused:
        edgeshrink.export(model, tmp_path / "m.tflite", format="tflm", verify_data=[x], calibration=[x])
    message = str(refused.value)
    assert "TFLite Micro cannot run this model" in message and "GELU" in message and "--format tflite" in message
    assert "\n" not in message and not (tmp_path / "m.tflite").exists()


class Gates(nn.Module):
    """A sigmoid gate and a tanh gate, each feeding a layer: TFLM's int8 LOGISTIC and TANH write fixed grids."""

    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = nn.Linear(20, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.c(torch.tanh(self.b(torch.sigmoid(self.a(x) - 2.0))))


def test_sigmoid_and_tanh_outputs_are_on_the_grids_tflm_kernels_write(tmp_path):
    torch.manual_seed(0)
    model, x = Gates().eval(), torch.randn(64, 20)  # sigmoid outputs mostly in (0, 0.4): a calibrated grid is finer
    exported = edgeshrink.export(model, tmp_path / "m.tflite", format="tflm", verify_data=[x], calibration=[x])
    assert exported.parity["max_diff_steps"] <= 1.0 + 1e-3  # TFLM against the int8 PyTorch model, to the step

"""Contract of every registered recipe (and a recipe chaining every stage) on the digits task: compress at
the smallest settings that exercise each stage, then every command on the run folder (in this process,
through the real CLI parser) and `load`, `profile`, `advise` and `export` from Python. Zero failures:
every pair succeeds.

Registry-driven: a new recipe, command argument set or export format is covered without editing this."""

import json

import pytest
import torch
from helpers import smallest

import edgeshrink
from edgeshrink.cli import run
from edgeshrink.exporters.base import list_exporters
from edgeshrink.recipes import list_recipes, load_recipe
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import TrainConfig

CHAIN = {
    "name": "chain",
    "description": "channels, prune, share and quantize in one recipe, then Huffman coding",
    "stages": [
        {"type": "channels", "ratio": 0.25},
        {"type": "prune", "method": "sparsity", "sparsity": 0.7},
        {"type": "share", "bits": 5},
        {"type": "quantize", "calibration": "mse"},
    ],
    "encode": {"coding": "huffman"},
}
RECIPES = [*list_recipes(), "chain"]


@pytest.fixture(scope="module")
def digits():
    task = load_task("digits-cnn")
    data = task.data(None)
    torch.manual_seed(0)
    model = task.build_model()
    init = {k: v.clone() for k, v in model.state_dict().items()}  # what lottery tickets rewind to
    edgeshrink.train.fit(model, task.train_loader(data), TrainConfig(epochs=2, optimizer="adam", lr=3e-3))
    return task, data, model, init


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    task, data, model, init = digits
    folder = tmp_path_factory.mktemp("runs")
    out = {}
    for name in RECIPES:
        recipe = smallest(load_recipe(CHAIN if name == "chain" else name))
        loader = task.train_loader(data)
        loader.repeats = 1
        edgeshrink.compress(
            model,
            recipe,
            train_loader=loader,
            val_loader=data.test.loader(1000),
            out=folder / name,
            arch=task.arch,
            progress=False,
            rewind_weights=init if any(getattr(s, "rewind", None) is not None for s in recipe.stages) else None,
        )
        out[name] = folder / name
    return out


COMMANDS = {  # name -> arguments after the run folder
    "evaluate": ["evaluate"],
    "inspect": ["inspect"],
    "profile": ["profile", "--no-latency"],
    "profile-device-json": ["profile", "--device", "cortex-m4", "--json"],
    "advise": ["advise", "--device", "cortex-m4", "--network", "ble"],
    "advise-offline-json": ["advise", "--device", "raspberry-pi-4", "--network", "offline", "--json"],
    "report": ["report"],
    **{f"export-{f}": ["export", "--format", f, "--verify-examples", "60"] for f in list_exporters()},
}
CASES = [(r, c) for r in RECIPES for c in COMMANDS]
# (recipe, format) pairs the format's runtime cannot run: refused in one line that says what to do instead.
QUANTIZED = [r for r in RECIPES if any(s.type == "quantize" for s in load_recipe(CHAIN if r == "chain" else r).stages)]
REFUSED = {
    **{("fp16", f): "TFLite Micro runs integer models" for f in ("tflm", "c")},
    ("fp16", "pte"): "ExecuTorch export writes fp32 or int8 programs",
    **{(r, "ncnn"): "ncnn's int8 path needs its calibration tools" for r in QUANTIZED},
    **{(r, "coreml"): "would not keep edgeshrink's integer grid" for r in QUANTIZED},
}
STRUCTURAL = {"coreml"}  # formats checked structurally here (their runtime does not run on Linux)
# The formats the Python API test writes besides checking every refusal: each other format's file is written and
# verified by the export command above through the same `edgeshrink.export` (writing all twice cost this module about
# 50 of its 240 CPU seconds).
API_WRITES = ("onnx", "tflite", "coreml")


@pytest.mark.parametrize("recipe, command", CASES, ids=[f"{r}-{c}" for r, c in CASES])
def test_every_command_on_every_recipes_output(runs, recipe, command, capsys):
    name, *options = COMMANDS[command]
    args = [name, str(runs[recipe]), *options]
    target = None
    if name == "export":
        suffix = {"ncnn": "param"}.get(options[1], options[1])
        target = runs[recipe] / ("firmware" if options[1] == "c" else f"exported.{suffix}")
        args += ["--out", str(target)]
    status = run(args)
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    refusal = REFUSED.get((recipe, options[1] if name == "export" else None))
    if refusal:
        assert status != 0 and refusal in captured.err and len(captured.err.strip().splitlines()) == 1
        assert not target.exists()
        return
    assert status == 0, f"{' '.join(args)}\n{captured.err}"
    if "--json" in args:
        assert json.loads(captured.out)  # the typed result's to_dict(), as JSON


@pytest.mark.parametrize("recipe", RECIPES)
def test_python_api_on_every_recipes_output(runs, digits, recipe, tmp_path):
    task, data, _, _ = digits
    art = edgeshrink.load(runs[recipe])
    report = json.loads((runs[recipe] / "report.json").read_text())
    x = data.test.inputs[:100]
    acc = edgeshrink.train.evaluate(art.model, data.test.loader(1000))
    assert acc == pytest.approx(report["container"]["accuracy"])  # the model as it was evaluated
    p = edgeshrink.profile(art, device="cortex-m4", latency=False)
    assert p.weights.container == (runs[recipe] / "model.eshrink").stat().st_size
    assert p.device.fit.deployment.flash_bytes == p.weights.container  # the file that sits in flash
    assert p.device.fit.ram.need == p.weights.stored + p.activations.peak_bytes  # decoded weights in RAM
    a = edgeshrink.advise(art, device="cortex-m4", network="wifi")
    assert a.to_dict()["verdict"] == a.verdict and a.file.endswith("model.eshrink")
    calibration = [data.train.inputs[:256]]
    for fmt in list_exporters():
        out = tmp_path / f"m-{fmt}{'' if fmt == 'c' else '.' + {'ncnn': 'param'}.get(fmt, fmt)}"
        if (recipe, fmt) in REFUSED:
            with pytest.raises(edgeshrink.EdgeshrinkError, match=REFUSED[(recipe, fmt)]):
                edgeshrink.export(art, out, format=fmt, verify_data=[x], calibration=calibration)
            assert not out.exists()
            continue
        if fmt not in API_WRITES:
            continue
        result = edgeshrink.export(art, out, format=fmt, verify_data=[x], calibration=calibration)
        assert all(tmp_path.joinpath(f).exists() for f in result.files)
        if fmt in STRUCTURAL:
            assert result.parity["structural"]["weights_checked"] == len(result.layers) > 0
        else:
            assert result.parity["examples"] == 100

"""Every registered recipe on the architectures users bring (issue 15): the zoo's small transformer encoder
(attention, LayerNorm, GELU), its Conv1d + BatchNorm + GRU network and its MobileNetV3-style net
(depthwise, squeeze-excite, hardswish), each built for scikit-learn's 8x8 digits and trained briefly here.

At the smallest settings that exercise each stage, every recipe completes; the report judges its budget
against accuracies the test measures itself; every layer left in float says why; the container loads back
to the same outputs; and its ONNX and TFLite files are written and verified in their runtimes (top-1
agreement >= 99% with the compressed PyTorch model, the issue's bar).

Registry-driven: a new recipe is covered here without editing this file."""

import pytest
import torch
from helpers import smallest

import edgeshrink
from edgeshrink.models.registry import create_model
from edgeshrink.recipes import list_recipes, load_recipe
from edgeshrink.tasks.data import load_digits
from edgeshrink.train import TrainConfig, evaluate, fit

SHAPE = (1, 8, 8)
ARCHITECTURES = ["row-transformer", "row-gru", "mobilenetv3-tiny"]
CASES = [(a, r) for a in ARCHITECTURES for r in list_recipes()]
FORMATS = ("onnx", "tflite")


@pytest.fixture(scope="module")
def digits():
    return load_digits()


@pytest.fixture(scope="module")
def baselines(digits):
    """Each architecture trained a few passes over the digits; the initial weights for lottery tickets."""
    out = {}
    for name in ARCHITECTURES:
        torch.manual_seed(0)
        model = create_model(name, input_shape=SHAPE)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        fit(model, digits.train.loader(64, shuffle=True, repeats=3), TrainConfig(epochs=3, optimizer="adam", lr=3e-3))
        out[name] = (model.eval(), init)
    return out


@pytest.mark.parametrize("arch, recipe", CASES, ids=[f"{a}-{r}" for a, r in CASES])
def test_every_recipe_on_the_architectures_users_bring(baselines, digits, arch, recipe, tmp_path):
    model, init = baselines[arch]
    cfg = smallest(load_recipe(recipe))
    val = digits.test.loader(1000)
    result = edgeshrink.compress(
        model,
        cfg,
        train_loader=digits.train.loader(64, shuffle=True),
        val_loader=val,
        out=tmp_path / "run",
        arch={"model": arch, "input_shape": list(SHAPE)},
        progress=False,
        rewind_weights=init if any(getattr(s, "rewind", None) is not None for s in cfg.stages) else None,
    )
    budget = result.report["budget"]
    baseline, final = evaluate(model, val), evaluate(result.model, val)
    assert budget["baseline"] == pytest.approx(baseline) and budget["final"] == pytest.approx(final)
    assert budget["met"] == (baseline - final <= cfg.max_accuracy_drop + 1e-9)
    for stage in result.report["stages"]:
        for row in stage["layers"]:
            assert row.get("status") != "float" or row.get("reason"), (stage["stage"], row)

    loaded = edgeshrink.load(tmp_path / "run")
    x = digits.test.inputs[:200]
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), result.model(x))
    for fmt in FORMATS:
        exported = edgeshrink.export(loaded, tmp_path / f"model.{fmt}", verify_data=[x])
        parity = exported.parity  # the runtime's outputs against the loaded model's, on 200 test images
        assert exported.path.is_file() and parity["examples"] == len(x)
        assert parity["top1_agreement"] >= 99.0, (fmt, parity)

"""Contract of every registered stage on every zoo model: apply it (smallest settings, no training), save
the artifact, load it from the file alone (zoo model rebuilt, edits and quantizers restored) and get the
same outputs bit for bit, profile it, and export it to ONNX verified in ONNX Runtime.

Registry-driven: a new stage or a new zoo model is tested here without editing this file."""

import pytest
import torch

import edgeshrink
from edgeshrink.architecture import Arch
from edgeshrink.artifact import Artifact
from edgeshrink.mac_count import count_macs
from edgeshrink.models import create_model, list_models, model_entry
from edgeshrink.stages.base import StageContext, apply_stage, list_stages, stage_config_class
from edgeshrink.train import TrainConfig

# The smallest settings that still exercise a stage; any other registered stage runs its defaults.
SMALLEST = {
    "prune": {"method": "sparsity", "sparsity": 0.6},
    "share": {"bits": 3},
    "channels": {"ratio": 0.25},
    "quantize": {"calibration": "minmax", "calibration_batches": 1},
}


def _config(kind: str):
    cls = stage_config_class(kind)
    settings = dict(SMALLEST.get(kind, {}))
    if "finetune" in cls.model_fields:
        settings["finetune"] = TrainConfig(epochs=0)
    return cls(**settings)


def _model(name: str) -> tuple[torch.nn.Module, Arch, tuple[int, ...]]:
    entry = model_entry(name)
    shape = entry.input_shape
    kwargs = {"width": 0.5} if entry.width else {}
    return create_model(name, input_shape=shape, **kwargs), Arch(model=name, model_kwargs=kwargs), shape


CASES = [(stage, name) for stage in list_stages() for name in list_models()]


@pytest.mark.parametrize("stage, name", CASES, ids=[f"{s}-{n}" for s, n in CASES])
def test_stage_on_zoo_model_saves_loads_profiles_and_exports(stage, name, tmp_path):
    torch.manual_seed(0)
    model, arch, shape = _model(name)
    x = torch.randn(16, *shape)
    y = torch.randint(0, 10, (16,))
    ctx = StageContext(None, None, example_input=x[:1], batches=lambda n: [(x, y)], calibration=[(x, y)])
    artifact = apply_stage(Artifact(model.eval(), arch, example_input=x[:1]), _config(stage), ctx)
    assert [r.stage for r in artifact.records] == [stage]

    written = edgeshrink.save(artifact, tmp_path / "m.eshrink")
    loaded = edgeshrink.load(written.path)  # the zoo model, rebuilt from the file alone
    with torch.no_grad():
        assert torch.equal(loaded.model(x), artifact.model(x))
    assert loaded.quantization == artifact.quantization and loaded.precision == artifact.precision

    p = edgeshrink.profile(loaded, latency=False)
    assert p.macs.dense == count_macs(loaded.model, shape)  # graph walk and dispatch counter: same rules
    assert p.weights.container == written.nbytes == (tmp_path / "m.eshrink").stat().st_size
    assert p.activations.peak_bytes > 0

    exported = edgeshrink.export(loaded, tmp_path / "m.onnx", verify_data=[x], activation_type="uint8")
    assert exported.parity["within_tolerance"], exported.parity  # untrained logits: tolerance, not top-1
    assert (tmp_path / "m.onnx").stat().st_size == exported.bytes

import json

import pytest

from edgeshrink.errors import ConfigError
from edgeshrink.recipes import list_recipes, load_recipe
from edgeshrink.stages.base import list_stages, parse_stage, stage_config_class


@pytest.mark.parametrize("name", list(list_recipes()))
def test_every_builtin_recipe_loads(name):
    recipe = load_recipe(name)
    assert recipe.stages and recipe.description


@pytest.mark.parametrize("kind", list_stages())
def test_every_stage_config_round_trips_through_json(kind):
    cfg = stage_config_class(kind)()
    again = parse_stage(json.loads(json.dumps(cfg.model_dump(mode="json"))))
    assert again == cfg


def test_unknown_key_names_the_key_and_stage(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[stages]]\ntype = "prune"\nqualty = 2.0\n')
    with pytest.raises(ConfigError, match=r"stage 1 \(prune\): unknown key 'qualty'") as err:
        load_recipe(path)
    assert "\n" not in str(err.value)


def test_unknown_stage_type_and_recipe():
    with pytest.raises(ConfigError, match="unknown stage type 'prun'"):
        parse_stage({"type": "prun"})
    with pytest.raises(ConfigError, match="unknown recipe 'nope'"):
        load_recipe("nope")


def test_bad_value_is_explained(tmp_path):
    path = tmp_path / "r.toml"
    path.write_text('[[stages]]\ntype = "share"\nbits = 40\n')
    with pytest.raises(ConfigError, match="bits"):
        load_recipe(path)
    path.write_text('name = "x"\nstagez = []\n')
    with pytest.raises(ConfigError, match="unknown key 'stagez'"):
        load_recipe(path)


@pytest.mark.parametrize("name", list(list_recipes()))
def test_every_builtin_recipe_compresses_restores_and_exports(name, tmp_path):
    """End to end for each built-in recipe: the container rebuilds the compressed model exactly, and its
    ONNX export agrees with it in ONNX Runtime."""
    import torch
    from helpers import SmallNet, loaders

    import edgeshrink
    from edgeshrink.train import TrainConfig, fit

    torch.manual_seed(0)
    model = SmallNet()
    train_loader, val_loader = loaders()
    init = {k: v.clone() for k, v in model.state_dict().items()}  # what a lottery ticket rewinds to
    fit(model, train_loader, TrainConfig(epochs=3, lr=3e-3))
    rewinds = any(getattr(s, "rewind", None) is not None for s in load_recipe(name).stages)
    result = edgeshrink.compress(
        model, name, train_loader=train_loader, val_loader=val_loader, out=tmp_path / "run", progress=False,
        rewind_weights=init if rewinds else None,
    )  # fmt: skip
    restored = edgeshrink.unpack(result.path, SmallNet())
    x = val_loader.inputs
    assert torch.allclose(restored(x), result.model(x), atol=1e-6)
    exported = edgeshrink.export(restored, tmp_path / "m.onnx", verify_data=[x])
    assert exported.parity["top1_agreement"] >= 99.5

"""Search spaces, from the registries: every registered stage declares one and every sampled value builds a valid
config that applies to a real model; every searchable zoo family's space builds a model that runs; a sampled recipe
survives its TOML file; the channel multiple follows the CPU."""

import copy
import itertools
import tomllib

import optuna
import pytest
import torch

from edgeshrink.artifact import Artifact
from edgeshrink.autosearch.front import recipe_toml
from edgeshrink.autosearch.space import default_stages, sample_recipe, space_context
from edgeshrink.devices.catalogue import get_device
from edgeshrink.hardware import channel_block, cpu_flags
from edgeshrink.models.registry import create_model, model_entry, searchable_models
from edgeshrink.recipes import recipe_from_dict
from edgeshrink.stages.base import StageContext, apply_stage, list_stages, stage_config_class
from edgeshrink.stages.channels import ChannelsConfig
from edgeshrink.tasks.registry import load_task
from edgeshrink.train import Progress, TrainConfig, evaluate, fit

SAMPLES = 12


def _trials(n: int, seed: int = 0):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [study.ask() for _ in range(n)]


@pytest.fixture(scope="module")
def digits():
    task = load_task("digits-cnn")
    data = task.data(None)
    torch.manual_seed(0)
    model = task.build_model()
    fit(model, task.train_loader(data), TrainConfig(epochs=1, optimizer="adam", lr=3e-3), progress=Progress(False))
    return data, model.eval()


@pytest.fixture(scope="module")
def digits_model(digits):
    return digits[1]


def _context(data, teacher) -> StageContext:
    loader, val = data.train.loader(64, shuffle=True), data.test.loader(500)
    return StageContext(
        finetune=lambda m, cfg, label: fit(m, loader, cfg, progress=Progress(False), teacher=teacher),
        evaluate=lambda m: evaluate(m, val),
        example_input=data.test.inputs[:1],
        batches=lambda n: list(itertools.islice(iter(loader), n)),
        calibration=loader,
    )


@pytest.mark.parametrize("kind", list_stages())
def test_every_stage_declares_a_space_whose_samples_are_valid_configs(kind, digits_model):
    cls = stage_config_class(kind)
    ctx = space_context(digits_model, get_device("cortex-m4"), max_epochs=2, per_layer=True)
    seen = set()
    for trial in _trials(SAMPLES):
        cfg = cls.search_space(trial, ctx, kind)
        assert isinstance(cfg, cls)
        cfg.check(digits_model)  # every per-layer key names a layer of the model
        assert type(cfg).model_validate_json(cfg.model_dump_json()) == cfg
        finetune = cfg.finetune_config()
        assert finetune is None or finetune.epochs <= 2
        seen.add(cfg.model_dump_json())
        # names are prefixed with the stage, so two stages of one recipe never share a parameter
        assert all(name.startswith(f"{kind}.") for name in trial.params)
    assert len(seen) == (1 if kind == "half" else SAMPLES)  # the space really varies (half has nothing to vary)


@pytest.mark.parametrize("kind", list_stages())
def test_a_sampled_config_of_every_stage_applies_to_the_model(kind, digits):
    data, model = digits
    art = Artifact(copy.deepcopy(model), example_input=data.test.inputs[:1])
    space = space_context(model, get_device("cortex-m4"), max_epochs=1, per_layer=True)
    cfg = stage_config_class(kind).search_space(_trials(1, seed=3)[0], space, kind)
    out = apply_stage(art, cfg, _context(data, copy.deepcopy(model)))
    assert out.records[-1].stage == kind and out.records[-1].config == cfg.model_dump(mode="json")


def test_sampled_recipes_survive_their_toml_file(digits_model):
    ctx = space_context(digits_model, get_device("cortex-m7"), max_epochs=3, per_layer=True)
    for i, trial in enumerate(_trials(SAMPLES)):
        recipe = sample_recipe(trial, ("channels", "prune", "share", "quantize"), ctx, f"trial-{i}")
        text = recipe_toml(recipe.model_dump(mode="json"), ["a comment"])
        assert recipe_from_dict(tomllib.loads(text)) == recipe


def test_the_default_template_follows_what_the_device_keeps():
    assert default_stages(get_device("cortex-m4")) == ("channels", "prune", "share")
    assert "quantize" in default_stages(get_device("raspberry-pi-4"))


@pytest.mark.parametrize("family", searchable_models())
def test_every_searchable_family_builds_and_runs_each_sampled_architecture(family):
    entry = model_entry(family)
    for trial in _trials(4, seed=1):
        kwargs = entry.space(trial)
        model = create_model(family, input_shape=(1, 28, 28), num_classes=10, **kwargs).eval()
        out = model(torch.randn(2, 1, 28, 28))
        assert out.shape == (2, 10)
        assert set(trial.params) <= set(kwargs)


def test_the_channel_multiple_follows_the_cpu():
    expected = 16 if "avx512f" in cpu_flags() else 8
    assert channel_block() == expected
    assert ChannelsConfig().multiple() == expected
    assert ChannelsConfig(round_to=4).multiple() == 4

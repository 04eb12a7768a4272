"""Recipes: an ordered list of stage configs plus the writer's settings, read from TOML or JSON.

A recipe file has `[[stages]]` tables (each with a `type`: prune, share, channels, quantize, half) and
an optional `[encode]` table (how the container is written: Huffman or fixed-width codes, index
widths), and an optional top-level `max_accuracy_drop`: the points of validation accuracy the whole
recipe may lose (pipeline/budget.py shares it out among the stages). For files written before
`[encode]` existed, a last `[[stages]]` entry of type "encode" is read as the `[encode]` table.
`Recipe.model_dump_json()` and `Recipe.model_validate_json()` round-trip exactly: stage tables are
dispatched on their `type` through the stage registry (a discriminated union that registered stages
join). Built-ins ship in this folder.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, SerializeAsAny, field_validator

from edgeshrink.config import Config
from edgeshrink.errors import ConfigError
from edgeshrink.io.settings import EncodeConfig
from edgeshrink.stages.base import StageConfig, parse_stage

_TOP_LEVEL = {"name", "description", "stages", "encode", "max_accuracy_drop"}


class Recipe(Config):
    name: str
    description: str = ""
    stages: list[SerializeAsAny[StageConfig]]
    encode: EncodeConfig = EncodeConfig()
    max_accuracy_drop: float | None = Field(None, ge=0, description="points the whole recipe may lose")

    @field_validator("stages", mode="before")
    @classmethod
    def _dispatch(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [parse_stage(s, f"stage {i + 1}") for i, s in enumerate(value)]

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def _split_encode(stages: list, source: str) -> tuple[list, dict | None]:
    """Take a legacy `[[stages]] type = "encode"` entry out of the stage list (it must be the last)."""
    encodes = [i for i, s in enumerate(stages) if isinstance(s, dict) and s.get("type") == "encode"]
    if not encodes:
        return stages, None
    if len(encodes) > 1 or encodes[0] != len(stages) - 1:
        raise ConfigError(f"{source}: an encode entry must be the last stage, and only one is allowed")
    return stages[:-1], stages[-1]


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Validate plain data (a parsed TOML file) into a Recipe; errors name the stage and the key."""
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_TOP_LEVEL))})")
    stages = data.get("stages")
    if not isinstance(stages, list):
        raise ConfigError(f"{source}: needs a list of [[stages]] tables")
    stages, legacy = _split_encode(stages, source)
    if legacy is not None and "encode" in data:
        raise ConfigError(f"{source}: give the writer's settings once, as [encode] (not also as an encode stage)")
    parsed = [parse_stage(s, f"{source}, stage {i + 1}") for i, s in enumerate(stages)]
    encode = EncodeConfig.parse(legacy or data.get("encode") or {}, f"{source}, encode")
    name = str(data.get("name", Path(source).stem))
    return Recipe(
        name=name,
        description=str(data.get("description", "")),
        stages=parsed,
        encode=encode,
        max_accuracy_drop=data.get("max_accuracy_drop"),
    )


def _builtin_path(name: str):
    return resources.files(__package__).joinpath(f"{name}.toml")


def list_recipes() -> dict[str, str]:
    """Built-in recipe names and their descriptions."""
    out = {}
    for entry in sorted(resources.files(__package__).iterdir(), key=lambda p: p.name):
        if entry.name.endswith(".toml"):
            data = tomllib.loads(entry.read_text())
            out[entry.name[:-5]] = str(data.get("description", ""))
    return out


def load_recipe(recipe: str | Path | Recipe | dict) -> Recipe:
    """A built-in recipe by name, a TOML (or JSON) file by path, a Recipe, or its dict form."""
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, dict):
        return recipe_from_dict(recipe)
    path = Path(recipe)
    if path.suffix in (".toml", ".json") or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        if path.suffix == ".json":
            return Recipe.model_validate_json(path.read_text())
        text, source = path.read_text(), str(path)
    else:
        builtin = _builtin_path(str(recipe))
        if not builtin.is_file():
            raise ConfigError(
                f"unknown recipe {recipe!r}: use a built-in ({', '.join(list_recipes())}) or a path to a .toml file"
            )
        text, source = builtin.read_text(), f"recipe {recipe!r}"
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}") from None
    return recipe_from_dict(data, source)


def smallest_settings(recipe: Recipe) -> Recipe:
    """A smoke-test copy of `recipe`: every stage runs, on the least work that exercises it. The recipe with
    at most one epoch of fine-tuning per round, at most two rounds, and at most four
    calibration batches (GPTQ, the saturation replay and bias correction still run, on fewer images)."""
    stages = []
    for cfg in recipe.stages:
        update = {}
        tc = cfg.finetune_config()
        if tc is not None:
            update["finetune"] = tc.model_copy(update={"epochs": min(tc.epochs, 1)})
        for key, cap in (("iterations", 2), ("steps", 1), ("final_epochs", 1), ("calibration_batches", 4)):
            if getattr(cfg, key, None) is not None and key in type(cfg).model_fields:
                update[key] = min(getattr(cfg, key), cap)
        stages.append(cfg.model_copy(update=update))
    return recipe.model_copy(update={"stages": stages})

"""Recipes: an ordered list of stage configs, read from TOML. Built-ins ship in this folder."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from edgeshrink.errors import ConfigError
from edgeshrink.stages.base import StageConfig, parse_stage

_TOP_LEVEL = {"name", "description", "stages"}


class Recipe(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    description: str = ""
    stages: list[StageConfig]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [s.model_dump(mode="json") for s in self.stages],
        }


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    """Validate plain data (a parsed TOML file) into a Recipe; errors name the stage and the key."""
    unknown = sorted(set(data) - _TOP_LEVEL)
    if unknown:
        raise ConfigError(f"{source}: unknown key {unknown[0]!r} (allowed: {', '.join(sorted(_TOP_LEVEL))})")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{source}: needs at least one [[stages]] table")
    parsed = [parse_stage(s, f"{source}, stage {i + 1}") for i, s in enumerate(stages)]
    return Recipe(
        name=str(data.get("name", Path(source).stem)), description=str(data.get("description", "")), stages=parsed
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


def load_recipe(recipe: str | Path | Recipe) -> Recipe:
    """A built-in recipe by name, or a TOML file by path."""
    if isinstance(recipe, Recipe):
        return recipe
    path = Path(recipe)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
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

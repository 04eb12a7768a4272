"""The result of a search: its Pareto front among the candidates that fit the device, how the front compares with
a built-in recipe's result, and a file per front point that reproduces it (a recipe TOML for `compress`, or the
architecture and its checkpoint)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from edgeshrink.autosearch.candidate import Candidate
from edgeshrink.errors import ConfigError
from edgeshrink.files import atomic_write
from edgeshrink.recipes import recipe_from_dict


def candidates(study: Any) -> list[Candidate]:
    """The measured candidates of a study's complete trials, in trial order."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [Candidate.from_dict(t.user_attrs["candidate"]) for t in trials if "candidate" in t.user_attrs]


def _better_or_equal(a: Candidate, b: Candidate, objectives: tuple[str, ...]) -> tuple[bool, bool]:
    """(a is at least as good as b in every objective, a is better in one)."""
    ge, strict = True, False
    for o in objectives:
        x, y = a.value(o), b.value(o)
        if o == "accuracy":
            x, y = -x, -y  # minimise everything
        if x > y:
            ge = False
        elif x < y:
            strict = True
    return ge, strict


def pareto(cands: list[Candidate], objectives: tuple[str, ...]) -> list[Candidate]:
    """The feasible candidates no other feasible candidate dominates (of equal ones, the first), sorted by their
    first cost objective."""
    feasible = [c for c in cands if c.feasible]
    front = []
    for i, c in enumerate(feasible):
        dominated = False
        for j, other in enumerate(feasible):
            ge, strict = _better_or_equal(other, c, objectives)
            if j != i and ge and (strict or j < i):
                dominated = True
                break
        if not dominated:
            front.append(c)
    cost = next((o for o in objectives if o != "accuracy"), "accuracy")
    return sorted(front, key=lambda c: c.value(cost))


def accuracy_for_comparison(c: Candidate) -> float:
    """The accuracy two results are compared on: the test split's when measured, else the validation split's."""
    return c.test_accuracy if c.test_accuracy is not None else c.val_accuracy


def dominating(front: list[Candidate], reference: Candidate, cost: str) -> list[Candidate]:
    """Front points that dominate `reference`: a smaller cost at equal or better accuracy, and fitting the device
    (the reference need not fit)."""
    return [
        c
        for c in front
        if c.value(cost) < reference.value(cost) and accuracy_for_comparison(c) >= accuracy_for_comparison(reference)
    ]


def recipe_toml(recipe: dict, header: list[str]) -> str:
    """The recipe as a TOML file `compress` reads back to the same recipe (checked: a file that would not is
    never written), with `header` as comment lines."""
    import tomli_w

    def plain(value: Any) -> Any:  # TOML has no null: unset (None) keys are left out, their default is None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    text = "".join(f"# {line}\n" for line in header) + tomli_w.dumps(plain(recipe))
    if recipe_from_dict(tomllib.loads(text)).model_dump(mode="json") != recipe_from_dict(recipe).model_dump(
        mode="json"
    ):
        raise ConfigError(f"recipe {recipe.get('name')!r} does not survive TOML; nothing written")
    return text


def write_front_files(front: list[Candidate], out: Path, reproduce: dict[int, str]) -> dict[int, str]:
    """One file per front point in out/front/: trial-N.toml (recipe) or trial-N.json (architecture); returns
    {trial: path}."""
    folder = out / "front"
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for c in front:
        assert c.number is not None
        header = [
            f"edgeshrink search, trial {c.number}: validation {c.val_accuracy:.2f}%"
            + (f", test {c.test_accuracy:.2f}%" if c.test_accuracy is not None else "")
            + f", {c.deployable['format']} file {c.deployable['bytes']:,} B",
            f"reproduce: {reproduce.get(c.number, '')}",
        ]
        if c.recipe is not None:
            path = folder / f"trial-{c.number:04d}.toml"
            atomic_write(path, recipe_toml(c.recipe, header).encode())
        else:
            path = folder / f"trial-{c.number:04d}.json"
            payload = {"comment": header, "arch": c.arch, "checkpoint": str(Path(c.folder) / "model.pt")}
            atomic_write(path, json.dumps(payload, indent=2).encode())
        written[c.number] = str(path)
    return written

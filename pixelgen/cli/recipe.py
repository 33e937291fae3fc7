"""``pixelgen recipe show``: the fully resolved recipe as TOML that ``pixelgen run`` accepts.

The recipe was loaded by the parser; only the registry (for the models' hyperparameters)
loads here, nothing of training, storage or the study.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

import attrs

from pixelgen import registry
from pixelgen.recipe import OutputSection, Recipe, ReportSection, RunSpec, dump_toml, recipe_to_dict
from pixelgen.recipe.convert import takes_none_string
from pixelgen.recipe.schema import public_fields


def cmd_recipe_show(args: argparse.Namespace) -> int:
    """Print the fully resolved recipe, every default filled in, as TOML ``run`` accepts."""
    print(recipe_to_toml(args.loaded_recipe), end="")
    return 0


_UNSET = "\ue000"  # marks an unset value in recipe_to_toml's TOML, followed by its comment's number


def recipe_to_toml(recipe: Recipe) -> str:
    """``recipe`` as TOML with every default shown, for ``pixelgen recipe show``.

    Beyond :func:`~pixelgen.recipe.recipe_to_dict`: each model's hyperparameters with the registry's defaults
    (``in_channels`` as a comment: it is filled in from the data set), and every unset value
    written as ``"none"`` where the schema reads "none" as unset, else as a comment naming the
    key and its help (TOML has no null). :func:`~pixelgen.recipe.overrides.load_recipe` of
    the text gives ``recipe`` back.
    """
    data = recipe_to_dict(recipe)
    comments: list[str] = []
    for table, run in zip(data["runs"] if "runs" in data else [data], recipe.runs):
        _mark_unset(table, RunSpec, comments)
        table["model"]["hyperparameters"] = _hyperparameters(run, comments)
    _mark_unset(data["output"], OutputSection, comments)
    _mark_unset(data["report"], ReportSection, comments)
    text = dump_toml(data)
    return re.sub(rf'^(\s*)(\S+) = "{_UNSET}(\d+)"$', lambda m: f"{m[1]}# {m[2]} {comments[int(m[3])]}",
                  text, flags=re.M)


def _unset(comments: list[str], comment: str) -> str:
    comments.append(comment)
    return f"{_UNSET}{len(comments) - 1}"


def _mark_unset(table: dict[str, Any], cls: type, comments: list[str]) -> None:
    """Write the unset values of ``table`` (the unstructured ``cls``) in place: "none" or a mark."""
    for field in public_fields(cls):
        value = table.get(field.name)
        if value is None and field.name in table:
            help_text = " ".join(field.metadata.get("help", "").split())
            table[field.name] = "none" if takes_none_string(field.type) else _unset(comments, f"= unset: {help_text}")
        elif isinstance(value, dict) and attrs.has(field.type):
            _mark_unset(value, field.type, comments)


def _hyperparameters(run: RunSpec, comments: list[str]) -> dict[str, Any]:
    """The run's hyperparameters over the model's declared defaults, in declaration order."""
    given = dict(run.model.hyperparameters)
    out: dict[str, Any] = {}
    for name, hp in registry.get_model_spec(run.model.name).hyperparameters.items():
        value = given.pop(name, hp.default)
        if name == "in_channels" and name not in run.model.hyperparameters:
            out[name] = _unset(comments, f"= {hp.default!r} unless the data set says otherwise: {hp.help}")
        elif value is None:
            out[name] = _unset(comments, f"= unset: {hp.help}")
        else:
            out[name] = value
    return {**out, **given}

"""Recipes: declarative TOML files that say what to train, on what, and how.

A recipe is data. :func:`~pixelgen.recipe.overrides.load_recipe` parses the TOML with :mod:`tomllib`, applies
``--set dotted.key=value`` overrides, and structures the result with ``cattrs`` into
the frozen attrs classes of ``pixelgen.recipe.schema``, whose validators check every
value. Any problem is a
one-line :class:`~pixelgen.errors.RecipeError` that starts with the dotted key path::

    train.optimizer.lr: expected a positive number, got 'fast'

Defaults live in one place, the attrs classes. :func:`recipe_to_dict` writes every value
back out, defaults included, and :func:`pixelgen.store.runs.write_resolved` stores that in each run directory
(as TOML, written by ``tomli_w``) so that a run can be reproduced from its outputs alone.

A recipe describes either one run, with the top-level tables ``[model] [data] [train]
[eval] [sample] [output]``, or several runs to compare, with ``[[runs]]`` tables whose
``model``/``data``/``train``/``eval``/``sample``/``score`` tables are deep-merged over the top-level
ones (which then act as shared defaults)::

    [data]
    name = "cifar10"
    [train]
    epochs = 20

    [[runs]]
    name = "pixelcnn"
    [runs.model]
    name = "pixelcnn"

    [[runs]]
    name = "row_lstm"
    [runs.model]
    name = "row_lstm"
    [runs.train]
    epochs = 10
"""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import tomli_w

from pixelgen.recipe.convert import converter, dotted, recipe_from_dict
from pixelgen.recipe.overrides import apply_override, load_recipe, parse_value, read_recipe_data
from pixelgen.recipe.schema import (
    SCORE_FEATURES, SCORE_METRICS, DataSection, EvalSection, FrozenTable, ModelSection, OptimizerSection,
    OutputSection, PaperSection, Recipe, ReportSection, RunSpec, SampleSection, SchedulerSection, ScoreSection, TrainSection,
    duration_seconds,
)

__all__ = [
    "SCORE_FEATURES", "SCORE_METRICS",
    "DataSection", "EvalSection", "FrozenTable", "ModelSection", "OptimizerSection",
    "OutputSection", "PaperSection", "Recipe", "ReportSection", "RunSpec", "SampleSection", "SchedulerSection",
    "ScoreSection", "TrainSection",
    "apply_override", "dump_toml", "duration_seconds", "load_recipe", "parse_value", "read_recipe_data",
    "recipe_from_dict", "recipe_to_dict", "run_dir", "single_run",
]


def recipe_to_dict(recipe: Recipe) -> dict[str, Any]:
    """Every value of ``recipe``, defaults included, as plain TOML-ready data.

    A single-run recipe keeps the top-level form; a multi-run recipe lists each run in
    full under ``runs``. ``{recipe}`` in output.dir is replaced by the source file stem, so
    the result reproduces the run wherever it is stored. ``recipe_from_dict`` of the result
    equals ``recipe`` (up to that substitution).
    """
    output = converter.unstructure(recipe.output)
    if recipe.source is not None:
        output["dir"] = output["dir"].replace("{recipe}", Path(recipe.source).stem)
    out: dict[str, Any] = {"description": recipe.description}
    runs = [converter.unstructure(run) for run in recipe.runs]
    if len(runs) == 1:
        out["name"] = runs[0].pop("name")
        out.update(runs[0])
    else:
        out["runs"] = [{"name": r.pop("name"), **r} for r in runs]
    out["output"] = output
    out["report"] = converter.unstructure(recipe.report)
    return out


def _toml_ready(value: Any, path: tuple) -> Any:
    """``value`` without ``None`` in its tables; a TypeError naming the key of anything
    else TOML cannot hold."""
    if isinstance(value, Mapping):
        return {k: _toml_ready(item, path + (k,)) for k, item in value.items() if item is not None}
    if isinstance(value, (list, tuple)):
        return [_toml_ready(item, path + (i,)) for i, item in enumerate(value)]
    if not isinstance(value, (str, int, float)):  # bool is an int
        raise TypeError(f"{dotted(path)}: cannot write {type(value).__name__} value "
                        f"{value!r} as TOML")
    return value


def dump_toml(data: Mapping[str, Any]) -> str:
    """Write ``data`` as TOML: tables, arrays of tables, strings, numbers, booleans and
    arrays of those. ``None`` values are left out (TOML has no null)."""
    return tomli_w.dumps(_toml_ready(data, ()))


def single_run(recipe: Recipe, run: RunSpec) -> Recipe:
    """A single-run recipe for ``run`` whose output.dir is that run's directory."""
    output = attrs.evolve(recipe.output, dir=str(run_dir(recipe, run)))
    return Recipe(runs=(run,), description=recipe.description, output=output,
                  source=recipe.source)


def run_dir(recipe: Recipe, run: RunSpec) -> Path:
    """The directory ``run`` writes to: output.dir with ``{recipe}`` (the recipe file stem,
    or "recipe" without a file) and ``{model}`` filled in, plus a subfolder named after
    the run when the recipe compares several runs."""
    stem = Path(recipe.source).stem if recipe.source is not None else "recipe"
    base = Path(recipe.output.dir.replace("{recipe}", stem).replace("{model}", run.model.name))
    return base / run.name if recipe.compare else base

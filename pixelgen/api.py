"""The Python front door to training: ``pixelgen.train(...)``, no TOML needed, and the
run itself, where planning, training and the study of its end meet.

::

    run_recipe(recipe, ...)     check the Inception weights [score] needs, plan every run
                                (pixelgen.training.plan), then fit each in turn
    fit(plan, report)           one run inside fabric.launch: train it
                                (pixelgen.training.trainer.Trainer), then finish it
                                (pixelgen.study.finish.finish_run: evaluate, sample, score)

    import pixelgen
    results = pixelgen.train("recipes/quickstart.toml", train={"epochs": 1})
    results = pixelgen.train({"model": {"name": "pixelcnn"}, "data": {"name": "fashion_mnist"}})
    results = pixelgen.train(recipe, model=my_module)   # an nn.Module that no plugin registers

It builds the same :class:`~pixelgen.recipe.Recipe` a recipe file does and runs it the way
``pixelgen run`` does (:func:`run_recipe`): every default, check,
checkpoint and archive is the same.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from torch import nn

from pixelgen.errors import RecipeError, Report, silent
from pixelgen.recipe import Recipe, read_recipe_data, recipe_from_dict, recipe_to_dict
from pixelgen.registry import (
    ModelSpec,
    get_registry,
    register_plugin,
    unregister_plugin,
)
from pixelgen.registry.hookspecs import hookimpl
from pixelgen.store.files import read_regular
from pixelgen.store.runs import METRICS_JSON
from pixelgen.study.finish import finish_run
from pixelgen.study.scoring import inception_weights
from pixelgen.training.plan import RunPlan, plan_runs
from pixelgen.training.trainer import Trainer


def run_recipe(
    recipe: Recipe, *, out: str | os.PathLike | None = None, resume: bool = False,
    report: Report | None = None,
) -> list[dict[str, Any] | None]:
    """Train and evaluate every run of ``recipe`` in turn (see
    :func:`pixelgen.training.plan.plan_runs`); per run, the figures of its ``metrics.json``
    (None for a finished run skipped). The Inception weights a run's ``[score]`` needs are
    checked first: missing weights fail now, not after training."""
    for run in recipe.runs:
        if run.score.metrics and run.score.features == "inception":
            inception_weights(run.score.weights_path)
    plans = plan_runs(recipe, out=out, resume=resume)
    return [fit(plan, report) for plan in plans]


def fit(plan: RunPlan, report: Report | None = None) -> dict[str, Any] | None:
    """Train one planned run and finish it (evaluate its best checkpoint, draw and score its
    samples); returns the figures that went into ``metrics.json`` (None for a skipped run).

    Launches the Fabric processes (with ``strategy="ddp"`` the script is re-run for the
    other ranks, which plan the same runs and join here).
    """
    report = report or silent
    if plan.action == "skip":
        figures = json.loads(read_regular(plan.run_dir / METRICS_JSON))
        report(
            f"run {plan.run.name!r} in {plan.run_dir} already finished (epoch "
            f"{plan.checkpoint['epoch']}, {figures.get('split')} bits/dim "
            f"{figures.get('bits_per_dim', float('nan')):.4f}); skipped"
        )
        return None
    return plan.fabric.launch(lambda fabric: _train_and_finish(fabric, plan, report))


def _train_and_finish(fabric: Any, plan: RunPlan, report: Report) -> dict[str, Any]:
    """One run on every rank: the training, then its end, holding the run folder."""
    trainer = Trainer(fabric, plan, report)
    with trainer.holding_the_run():
        trainer.train()
        return finish_run(trainer)


def train(
    recipe: str | os.PathLike | Mapping[str, Any] | Recipe,
    *,
    model: nn.Module | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    report: Report | None = print,
    **overrides: Any,
) -> list[dict[str, Any] | None]:
    """Train, evaluate and sample every run of ``recipe``; the runs' final figures.

    Args:
        recipe: a recipe file, a dict in the recipe's layout, or a :class:`~pixelgen.recipe.Recipe`.
        model: an ``nn.Module`` to train in place of the recipe's registered model (it
            must follow the model contract of :class:`pixelgen.nn.blocks.AutoregressiveModel`:
            ``in_channels``, ``n_classes``, ``forward(x, labels=None)``). It is registered
            for this call only, so its checkpoints load in this process alone.
        out, resume: as ``pixelgen run --out DIR --resume``.
        report: where progress lines go (``None``: nowhere).
        overrides: recipe sections to merge over the recipe's, e.g. ``train={"epochs": 3}``,
            or dotted keys through ``**{"train.optimizer.lr": 1e-3}``.

    Returns:
        per run, the figures written to its ``metrics.json`` (None for a finished run skipped).
    """
    data = _as_dict(recipe)
    for key, value in overrides.items():
        _merge(data, key.split("."), value)
    if model is None:
        return run_recipe(recipe_from_dict(data), out=out, resume=resume, report=report or _quiet)
    name = _model_name(model)
    data["model"] = {"name": name}
    for run in data.get("runs", []):
        run.pop("model", None)
    plugin = _SingleModule(name, model)
    register_plugin(plugin, name=f"pixelgen.train:{name}")
    try:
        return run_recipe(recipe_from_dict(data), out=out, resume=resume, report=report or _quiet)
    finally:
        unregister_plugin(f"pixelgen.train:{name}")


def _quiet(line: str) -> None:
    pass


def _as_dict(recipe: str | os.PathLike | Mapping[str, Any] | Recipe) -> dict[str, Any]:
    if isinstance(recipe, Recipe):
        return recipe_to_dict(recipe)
    if isinstance(recipe, Mapping):
        return _plain(recipe)
    return read_recipe_data(recipe)  # a regular file of a recipe's size, as pixelgen run reads it


def _plain(value: Any) -> Any:
    """A deep copy of nested mappings and lists as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _merge(data: dict[str, Any], keys: list[str], value: Any) -> None:
    """Set ``data[k1][k2]... = value``; a mapping value is merged into what is there."""
    for key in keys[:-1]:
        data = data.setdefault(key, {})
    if isinstance(value, Mapping) and isinstance(data.get(keys[-1]), dict):
        for sub_key, sub_value in value.items():
            _merge(data[keys[-1]], [sub_key], sub_value)
    else:
        data[keys[-1]] = _plain(value)


def _model_name(model: nn.Module) -> str:
    name = "".join(c if c.isalnum() else "_" for c in type(model).__name__).lower()
    if name in get_registry().models:
        name = f"{name}_module"
    return name


class _SingleModule:
    """A plugin that provides one already-built module under ``name``."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.spec = ModelSpec(
            name, lambda **_: module, f"{type(module).__name__}, given to pixelgen.train",
            hyperparameters={}, receptive_field=f"{type(module).__name__}: not described.",
        )
        self.in_channels = getattr(module, "in_channels", None)
        if not isinstance(self.in_channels, int):
            raise RecipeError(f"model: {type(module).__name__} has no integer in_channels; "
                              f"set it (the number of colours) on the module")

    @hookimpl
    def pixelgen_models(self) -> list[ModelSpec]:
        return [self.spec]


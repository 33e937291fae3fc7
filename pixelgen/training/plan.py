"""Planning the runs of a recipe: every run checked before any is trained.

::

    plan_runs(recipe, out, resume)     check every run of a recipe before training any:
                                       run folders, checkpoints, data, model, Fabric
    build_model(run, shape, n_classes) a run's model, as the recipe says

Each plan is then trained (:class:`pixelgen.training.trainer.Trainer`) and finished
(:func:`pixelgen.study.finish.finish_run`) by :func:`pixelgen.api.run_recipe`.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import attrs
import torch
from lightning_fabric import Fabric
from lightning_fabric.loggers import CSVLogger, TensorBoardLogger
from torch import nn
from torch.utils.data import Dataset

from pixelgen.data import load_data, max_value
from pixelgen.errors import (
    CheckpointError,
    PixelgenError,
    RecipeError,
)
from pixelgen.limits import MAX_MODEL_PARAMETERS
from pixelgen.nn.blocks import N_LEVELS, n_classes_of, n_levels_of
from pixelgen.recipe import Recipe, RunSpec, recipe_to_dict, run_dir, single_run
from pixelgen.registry import create_model, get_model_spec
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.files import FileReadError, read_regular
from pixelgen.store.runs import BEST, CSV_LOGS, LAST, METRICS_JSON, TENSORBOARD
from pixelgen.training.trainer import TrainingError, finished

__all__ = ["RunPlan", "TrainingError", "build_model", "check_levels", "make_fabric", "plan_runs"]


def build_model(run: RunSpec, shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """``create_model`` with the recipe's hyperparameters; ``in_channels`` defaults to the
    data's colours. A model with ``n_classes > 0`` is class-conditional and must cover the
    data set's labels."""
    hyper = ckpt_io.plain(dict(run.model.hyperparameters))
    if "in_channels" in get_model_spec(run.model.name).hyperparameters:
        hyper.setdefault("in_channels", shape[0])
    if hyper.get("in_channels", shape[0]) != shape[0]:
        raise RecipeError(
            f"model.hyperparameters.in_channels: {hyper['in_channels']} colours, but the "
            f"{run.data.name!r} images have {shape[0]}; remove the key to take the data's"
        )
    try:
        _count_parameters(run.model.name, hyper)  # before any weight is allocated
        model = create_model(run.model.name, **hyper)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model.hyperparameters: {run.model.name!r} cannot be built: {exc}") from None
    if getattr(model, "in_channels", shape[0]) != shape[0]:
        raise RecipeError(f"model: {run.model.name!r} takes {model.in_channels} colours, but the "
                          f"{run.data.name!r} images have {shape[0]}")
    conditional = n_classes_of(model)
    if 0 < conditional < n_classes:
        raise RecipeError(
            f"model.hyperparameters.n_classes: {conditional} classes, but {run.data.name!r} "
            f"has {n_classes}; use {n_classes} (or 0 for an unconditional model)"
        )
    return model


def _count_parameters(name: str, hyper: dict[str, Any]) -> int:
    """The parameters ``create_model(name, **hyper)`` would hold, counted on the meta device
    (which allocates no memory); RecipeError above MAX_MODEL_PARAMETERS, before any weight is
    allocated. A model that cannot be built on the meta device is counted as 0: its real
    build is the check."""
    try:
        with torch.device("meta"):
            n_parameters = sum(p.numel() for p in create_model(name, **hyper).parameters())
    except (RuntimeError, NotImplementedError):  # e.g. .item() on a meta tensor while building a mask
        return 0
    if n_parameters > MAX_MODEL_PARAMETERS:
        raise RecipeError(f"model.hyperparameters: {name!r} would have {n_parameters:,} parameters, more than "
                          f"{MAX_MODEL_PARAMETERS:,}; use fewer or narrower layers")
    return n_parameters


def check_levels(run: RunSpec, data: dict[str, Dataset], model: nn.Module) -> None:
    """RecipeError when a split holds a value the model cannot predict: a model with
    ``n_levels`` levels predicts 0..n_levels-1 (a binary model 0/1), and uint8 data hold
    0..255, so only models with fewer than 256 levels are checked, on every item."""
    n_levels = n_levels_of(model)
    if n_levels >= N_LEVELS:
        return
    for split in ("train", "val", "test"):
        largest = max_value(data[split])
        if largest >= n_levels:
            raise RecipeError(
                f"model.hyperparameters.n_levels: {n_levels} levels (values 0..{n_levels - 1}), but the "
                f"{split} split of {run.data.name!r} holds the value {largest}; train on data of those values "
                f"(binarized_mnist_static, or data.options.binarize = true) or set n_levels = 256"
            )


def make_fabric(train: Any, loggers: list | None = None, devices: Any = None):
    """A ``lightning_fabric.Fabric`` from a recipe's ``[train]`` section.

    Raises:
        RecipeError: Fabric refuses the accelerator/devices/strategy/precision given.
    """
    devices = train.devices if devices is None else devices
    try:
        return Fabric(
            accelerator=train.accelerator,
            devices=devices,
            num_nodes=train.num_nodes,
            strategy=train.strategy,
            precision=train.precision,
            loggers=loggers,
        )
    except Exception as exc:  # Fabric raises ValueError, RuntimeError or its own types
        raise RecipeError(
            f"train: Lightning Fabric refuses accelerator={train.accelerator!r}, "
            f"devices={devices!r}, strategy={train.strategy!r}, precision={train.precision!r}: "
            + " ".join(str(exc).split())[:240]
        ) from None


# --------------------------------------------------------------------------- planning


@attrs.define
class RunPlan:
    """One run, checked and ready to train.

    ``action`` is ``"train"`` (from scratch), ``"resume"`` (from ``checkpoint``),
    ``"evaluate"`` (training finished, the final evaluation did not) or ``"skip"``
    (finished and evaluated).
    """

    recipe: Recipe  # single-run recipe; output.dir is run_dir
    run: RunSpec
    run_dir: pathlib.Path
    data: dict[str, Dataset]
    model: nn.Module
    fabric: Any
    action: str
    checkpoint: dict[str, Any] | None = None


def _check_same_model(path: pathlib.Path, stored: dict, built: dict) -> None:
    """CheckpointError naming what differs between a checkpoint's model and the recipe's.

    A hyperparameter the checkpoint lacks was added to the model later (``n_levels``):
    it counts as its default, which reproduces the model the checkpoint was written by,
    just as :func:`pixelgen.store.checkpoint.model_from_checkpoint` rebuilds it.
    """
    stored, built = ckpt_io.plain(stored), ckpt_io.plain(built)
    if stored["name"] == built["name"]:
        defaults = ckpt_io.plain(get_model_spec(stored["name"]).defaults())
        stored["hyperparameters"] = {**defaults, **stored["hyperparameters"]}
    if stored == built:
        return
    if stored["name"] != built["name"]:
        change = f"model {stored['name']!r}, the recipe {built['name']!r}"
    else:
        old, new = stored["hyperparameters"], built["hyperparameters"]
        change = ", ".join(
            f"{key} {old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)
        )
    raise CheckpointError(
        f"{path}: the recipe's model differs from the checkpoint's ({change}); resume with "
        f"the recipe it was trained with, or pass --out DIR to train the new model elsewhere"
    )


def plan_runs(
    recipe: Recipe, *, out: str | os.PathLike | None = None, resume: bool = False
) -> list[RunPlan]:
    """Check every run of ``recipe`` before any is trained; nothing is written.

    With ``resume`` a run folder is continued from ``last.ckpt``, and a folder without
    one (a run killed before its first checkpoint, or never started) starts from step 0,
    so that the same command after a kill at any moment finishes the run.

    Raises:
        PixelgenError: a run folder holds checkpoints and ``resume`` is false; a
            checkpoint that is corrupt, of another model or of other data; missing data;
            a model or Fabric setting that cannot be built.
    """
    if out is not None:
        recipe = attrs.evolve(recipe, output=attrs.evolve(recipe.output, dir=str(out)))
    plans, data_cache = [], {}
    for run in recipe.runs:
        folder = run_dir(recipe, run)
        if folder.exists() and not folder.is_dir():
            raise PixelgenError(f"{folder}: exists and is not a folder; pass --out DIR to write elsewhere")
        state, resumed_from = _resume_point(folder, resume)
        if state is not None:
            _check_same_data(resumed_from, state["recipe"], recipe, run)
        archive_path = folder / recipe.output.archive
        RunArchive.check_reusable(archive_path)  # a foreign folder fails here, before any training
        key = repr((run.data, run.train.seed))
        if key not in data_cache:
            data_cache[key] = load_data(run)
        data = data_cache[key]
        if len(data[run.eval.split]) == 0:
            raise RecipeError(
                f"eval.split: the {run.eval.split!r} split of {run.data.name!r} is empty; "
                f"choose another split or raise data.validation_fraction"
            )
        train_set = data["train"]
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global state untouched
            torch.manual_seed(run.train.seed)
            model = build_model(run, tuple(train_set.shape), train_set.n_classes)
        check_levels(run, data, model)
        action = "train"
        if state is not None:
            _check_same_model(resumed_from, state["model"], model.pixelgen_config)
            ckpt_io.check_resumable(resumed_from, state, model)  # every entry, before any is used
            action = _action(folder, run, state)
        loggers = [
            TensorBoardLogger(root_dir=str(folder), name=TENSORBOARD, default_hp_metric=False),
            CSVLogger(root_dir=str(folder), name=CSV_LOGS, flush_logs_every_n_steps=1),
        ]
        fabric = make_fabric(run.train, loggers)
        plans.append(RunPlan(single_run(recipe, run), run, folder, data, model, fabric, action, state))
    return plans


def _resume_point(folder: pathlib.Path, resume: bool) -> tuple[dict[str, Any] | None, pathlib.Path | None]:
    """The checkpoint a run continues from and its file (None, None: a fresh start)."""
    held = [name for name in (LAST, BEST) if (folder / name).exists()]
    if held and not resume:
        raise PixelgenError(
            f"{folder} already holds {' and '.join(held)} from an earlier run; pass --resume "
            f"to continue it, or --out DIR to train into another folder"
        )
    if not held:
        return None, None
    path = folder / (LAST if LAST in held else BEST)
    state = ckpt_io.load_checkpoint(path)
    if state.get("quantization") is not None:
        raise CheckpointError(f"{folder}: its checkpoint is quantized ({state['quantization'].get('to')}) and "
                              f"keeps no optimizer state; resume from the original, or pass --out DIR")
    if BEST in held and LAST in held:
        best = ckpt_io.load_checkpoint(folder / BEST)  # damaged? say so now, not after training
        if best["epoch"] > state["epoch"]:
            raise CheckpointError(f"{folder / BEST}: epoch {best['epoch']} is newer than last.ckpt's "
                                  f"{state['epoch']}: the folder mixes two runs; pass --out DIR")
    return state, path


def _action(folder: pathlib.Path, run: RunSpec, state: dict[str, Any]) -> str:
    """What a run with checkpoint ``state`` (checked resumable) does: ``resume``,
    ``evaluate`` (trained, not yet evaluated) or ``skip`` (finished)."""
    if not finished(state["epoch"], state["step"], state["early_stopping"]["stopped"], run,
                    state.get("train_time_s", 0.0)):
        return "resume"
    return "skip" if _finished_figures(folder) else "evaluate"


def _finished_figures(folder: pathlib.Path) -> dict[str, Any] | None:
    """The run's ``metrics.json`` if it is whole, else None (evaluate again)."""
    try:
        figures = json.loads(read_regular(folder / METRICS_JSON))
    except (OSError, ValueError, FileReadError):
        return None
    return figures if isinstance(figures, dict) and "bits_per_dim" in figures else None


# Keys of [data] whose change makes a checkpoint's run another experiment.
_DATA_KEYS = ("name", "root", "options", "image_size", "validation_fraction", "limit_train", "limit_val", "flips")


def _check_same_data(path: pathlib.Path, stored_recipe: dict[str, Any], recipe: Recipe, run: RunSpec) -> None:
    """CheckpointError naming the ``[data]`` settings a resume would change."""
    stored = stored_recipe.get("data", {}) if isinstance(stored_recipe, dict) else {}
    now = recipe_to_dict(single_run(recipe, run))["data"]
    changed = [key for key in _DATA_KEYS if ckpt_io.plain(stored.get(key)) != ckpt_io.plain(now.get(key))]
    if changed:
        detail = ", ".join(f"data.{k} {stored.get(k)!r} -> {now.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"{path}: the recipe's data differ from the checkpoint's ({detail}); resume with the "
            f"data it was trained on, or pass --out DIR to train on the new data elsewhere"
        )

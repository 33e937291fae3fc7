"""Reading trained runs for a comparison: what a run folder or a checkpoint holds.

::

    read_run(run_dir)             a run folder: its best checkpoint and its archive
    read_checkpoint(path)         a checkpoint on its own (no archive)
    unique_names(records)         the runs' names, made unique for the tables
    load_run_data(record)         the run's data splits, if they can be read here

Everything a comparison uses of a run is read here, before anything is measured
(:mod:`pixelgen.study.measure`), so that a damaged file fails first.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from pixelgen.data import HorizontalFlip, load_data
from pixelgen.errors import PixelgenError, Report, silent
from pixelgen.recipe import Recipe, RunSpec, recipe_from_dict
from pixelgen.registry import get_model_spec
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.runs import final_checkpoint
from pixelgen.study.options import CompareOptions


class ReportError(PixelgenError):
    """A folder is not a pixelgen run, or runs cannot be compared."""


# ------------------------------------------------------------------ reading runs


@attrs.frozen(kw_only=True)
class ArchiveRecord:
    """What a run archive (:class:`pixelgen.store.archive.RunArchive`) holds, read once."""

    path: Path
    metrics: dict[str, np.ndarray]  # RunArchive.metrics()
    test: dict[str, Any]  # RunArchive.test_metrics()
    samples: list[tuple[str, dict[str, Any]]]  # RunArchive.sample_batches(): (key, settings)
    scores: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # RunArchive.scores(); {} if never scored
    last_samples: np.ndarray | None = None  # the images of the newest batch, uint8 (N, C, H, W)

    @classmethod
    def read(cls, path: Path) -> ArchiveRecord:
        """Everything a comparison uses, read before anything is measured: a damaged array
        fails here, before a measurement or its cache writes anything."""
        archive = RunArchive.open(path)
        samples = archive.sample_batches()
        return cls(path=path, metrics=archive.metrics(), test=archive.test_metrics(), samples=samples,
                   scores=archive.scores(), last_samples=archive.read_samples(samples[-1][0]) if samples else None)


@attrs.frozen(kw_only=True)
class RunRecord:
    """One trained model as read: its checkpoint and, for a run folder, its archive."""

    name: str  # the run's name, unique among the runs compared
    run_dir: Path  # the folder holding the checkpoint
    run: RunSpec
    recipe: dict[str, Any]  # the resolved single-run recipe, as stored
    model_config: dict[str, Any]  # {"name", "hyperparameters"} with every default
    checkpoint: Path  # best.ckpt, else last.ckpt, or the checkpoint given
    state: dict[str, Any]  # the checkpoint's contents
    archive: ArchiveRecord | None  # None for a checkpoint read on its own

    @property
    def archive_path(self) -> Path | None:
        """The run archive's folder; None for a checkpoint read on its own."""
        return self.archive.path if self.archive is not None else None


def _read_checkpoint(path: Path) -> tuple[RunRecord, Recipe]:
    state = ckpt_io.load_checkpoint(path)
    recipe = recipe_from_dict(state["recipe"])
    record = RunRecord(name=recipe.runs[0].name, run_dir=path.parent, run=recipe.runs[0], recipe=state["recipe"],
                       model_config=state["model"], checkpoint=path, state=state, archive=None)
    return record, recipe


def read_checkpoint(path: str | os.PathLike) -> RunRecord:
    """A checkpoint on its own, without the archive of its run (``archive`` is None).

    Raises:
        CheckpointError: the checkpoint is missing, corrupt or foreign.
    """
    return _read_checkpoint(Path(path))[0]


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run folder written by ``pixelgen run``: its best checkpoint and its archive.

    Raises:
        ReportError: no checkpoint or no archive in the folder.
        CheckpointError: the checkpoint is corrupt or foreign.
    """
    folder = Path(run_dir)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such run folder")
    chosen = final_checkpoint(folder)
    if chosen is None:
        raise ReportError(
            f"{folder}: no best.ckpt or last.ckpt; pass run folders written by `pixelgen run`"
        )
    record, recipe = _read_checkpoint(chosen)
    archive_name = recipe.output.archive
    if not (folder / archive_name).exists():
        raise ReportError(f"{folder}: a checkpoint but no {archive_name}; was the run interrupted?")
    return attrs.evolve(record, run_dir=folder, archive=ArchiveRecord.read(folder / archive_name))


def unique_names(records: Sequence[RunRecord]) -> list[RunRecord]:
    """Runs of different recipes may share a name: fall back to folder names (with the file
    name for a checkpoint read on its own, e.g. a quantized copy), then indices."""
    names = [r.name for r in records]
    if len(set(names)) < len(names):
        names = [r.run_dir.name if r.archive is not None else f"{r.run_dir.name}/{r.checkpoint.name}"
                 for r in records]
    if len(set(names)) < len(names):
        names = [f"{i}:{r.name}" for i, r in enumerate(records)]
    return [attrs.evolve(r, name=n) for r, n in zip(records, names)]


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_of(record: RunRecord) -> dict[str, Any]:
    """A run's settings as dotted keys: the model with every hyperparameter (defaults
    included) and the recipe's data, train, eval and sample tables."""
    recipe = {k: v for k, v in record.recipe.items() if k in ("data", "train", "eval", "sample")}
    return {
        "model.name": record.model_config["name"],
        **{f"model.hyperparameters.{k}": v for k, v in _hyperparameters(record.model_config).items()},
        **_flatten(recipe),
    }


def _hyperparameters(model_config: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's hyperparameters with today's default for any it predates (a run saved
    before ``likelihood`` existed has none), as the model is rebuilt when it loads."""
    try:
        defaults = get_model_spec(model_config["name"]).defaults()
    except PixelgenError:
        defaults = {}  # a model no longer installed: its recorded values only
    return {**defaults, **model_config["hyperparameters"]}


def differing_settings(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Dotted keys whose values are not the same for every run: key -> value per run."""
    settings = [settings_of(r) for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return {k: [s.get(k) for s in settings] for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1}


def paper_figure(model: str, dataset: str) -> float | None:
    """The published test bits/dim of ``model`` on ``dataset`` (its ModelSpec's), if any."""
    try:
        return get_model_spec(model).paper_bits_per_dim.get(dataset)
    except PixelgenError:
        return None  # a run of a model no longer installed: no figure to show


#: The source shown for a model's own published figure (its ModelSpec's paper_bits_per_dim).
MODEL_FIGURE_SOURCE = "the model's published test figure"


def run_paper_figure(record: RunRecord) -> tuple[float | None, str]:
    """The published figure a run is shown beside, and its source: the recipe's ``[paper]``
    when it gives one, else the model's own figure on the run's data set (its ModelSpec's)."""
    paper = record.run.paper
    if paper.bits_per_dim is not None:
        return paper.bits_per_dim, paper.source
    figure = paper_figure(record.model_config["name"], record.run.data.name)
    return figure, (paper.source or MODEL_FIGURE_SOURCE) if figure is not None else ""


# ------------------------------------------------------------------ the run's data


def load_run_data(record: RunRecord, report: Report = silent) -> dict[str, Any] | None:
    """The run's splits (``pixelgen.training.plan.load_data``), or None (with a note) when its data
    cannot be found here."""
    try:
        return load_data(record.run)
    except PixelgenError as exc:
        report(f"  {record.name}: data not available, data-based measurements skipped ({exc})")
        return None


def stack_images(dataset: Any, limit: int) -> tuple[np.ndarray, torch.Tensor]:
    """The first ``limit`` items of a dataset as uint8 ``(N, C, H, W)`` and labels ``(N,)``.

    Random training flips are undone (the images as stored), so measurements repeat.
    """
    while isinstance(dataset, HorizontalFlip):
        dataset = dataset.dataset
    n = min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    images = torch.stack([image for image, _ in items]).numpy()
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels


def image_shape(
    record: RunRecord, data: Mapping[str, Any] | None, model: nn.Module, options: CompareOptions
) -> tuple[int, int, int]:
    """``(C, H, W)`` of the run's images: from its data, else its archived samples; a
    checkpoint read on its own, without its data, is measured on the receptive-field canvas."""
    if data is not None:
        return tuple(data["train"].shape)
    if record.archive is None:
        return (model.in_channels, options.field_size, options.field_size)
    if record.archive.last_samples is not None:
        return tuple(record.archive.last_samples.shape[1:])
    raise ReportError(f"{record.run_dir}: neither its data nor any sample gives the image size")

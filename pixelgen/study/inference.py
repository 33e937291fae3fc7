"""A trained model's samples, kept in its run archive.

::

    sample_to_archive(model, archive, n, H, W)      pixelgen.sample in batches, appended to
                                                    a run archive with its settings
    draw_from_checkpoint(model, archive, ...)       the same with a checkpoint's [sample]
                                                    settings and provenance
    archived_batch(archive, n, **attributes)        such a batch drawn before, if any
    archived_score_batch(archive, checkpoint, ...)  the batch drawn to score a checkpoint
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelgen.nn.blocks import n_classes_of, n_levels_of
from pixelgen.recipe import SampleSection
from pixelgen.sampling import SamplingError, sample_batched, sampler_used
from pixelgen.store.archive import RunArchive


def sample_to_archive(
    model: nn.Module,
    archive: str | os.PathLike,
    n: int,
    height: int,
    width: int,
    /,
    *,
    batch_size: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = 0,
    sampler: str = "fast",
    labels: Tensor | int | None = None,
    prefix: Tensor | None = None,
    progress: bool = False,
    **attributes: Any,
) -> tuple[Tensor, str]:
    """Generate ``n`` images with :func:`~pixelgen.sampling.sample_batched` and append
    them to a run archive.

    The batch is stored (see :meth:`pixelgen.store.archive.RunArchive.append_samples`) with the
    sampling settings (``sampler``: the one that ran, see
    :func:`~pixelgen.sampling.sampler_used`), ``n_levels`` (the images' values are
    0..n_levels-1), ``seconds_per_image`` (wall clock) and
    ``attributes`` (the caller's ``model``, ``checkpoint``, ``recipe``, ...); ``labels``
    and the number of given ``prefix_rows`` too where used. ``seed=None`` draws a random
    seed and records it.

    Returns:
        the images, uint8 ``(n, C, height, width)`` on the CPU, and the batch's key.
    """
    store = RunArchive.create_or_open(Path(archive))  # fails before the slow part
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    start = time.perf_counter()
    images = sample_batched(
        model, n, height, width, batch_size=batch_size, temperature=temperature, top_p=top_p,
        seed=seed, sampler=sampler, labels=labels, prefix=prefix, progress=progress,
    )
    settings = dict(
        temperature=temperature, top_p=top_p, seed=seed, sampler=sampler_used(model, sampler),
        batch_size=batch_size, seconds_per_image=(time.perf_counter() - start) / n,
        n_levels=n_levels_of(model),  # the images hold values 0..n_levels-1
    )
    if labels is not None:
        settings["labels"] = torch.as_tensor(labels).expand(n).tolist()
    if prefix is not None:
        settings["prefix_rows"] = prefix.shape[2]
    key = store.append_samples(images, **settings, **attributes)
    return images, key


def archived_batch(archive: RunArchive, n: int, **attributes: Any) -> str | None:
    """The key of the newest archived sample batch of ``n`` images whose attributes include
    ``attributes`` (e.g. ``source="score", checkpoint=Path(...), epoch=..., seed=...``), or None:
    samples an interrupted or earlier command drew are used again, not drawn twice."""
    for key, found in reversed(archive.sample_batches()):
        if all(_same(found.get(name), value) for name, value in attributes.items()):
            if len(archive.read_samples(key)) == n:
                return key
    return None


def _same(stored: Any, wanted: Any) -> bool:
    """An archived attribute equals ``wanted``; a path matches a stored path naming the same file."""
    if isinstance(wanted, Path):
        return isinstance(stored, str) and Path(stored).resolve() == wanted.resolve()
    return stored == wanted


def class_labels(model: nn.Module, n: int, label: int | None = None) -> Tensor | None:
    """One class per image of a class-conditional model: ``label`` for all, else the classes
    in turn (0, 1, 2, ...); None for an unconditional model."""
    n_classes = n_classes_of(model)
    if not n_classes:
        if label is not None:
            raise SamplingError(f"--label {label}: this model is not class-conditional")
        return None
    return torch.full((n,), label) if label is not None else torch.arange(n) % n_classes


def draw_from_checkpoint(
    model: nn.Module, archive: str | os.PathLike, checkpoint: str | os.PathLike, state: dict[str, Any],
    settings: SampleSection, height: int, width: int, *, labels: Tensor | None = None,
    prefix: Tensor | None = None, progress: bool = False, source: str | None = None,
) -> tuple[Tensor, str]:
    """:func:`sample_to_archive` of ``settings.n`` images of ``model``, the model of checkpoint
    ``state`` (read from ``checkpoint``), with the ``[sample]`` ``settings``; the batch records
    the model's name, the checkpoint, its recipe and epoch, and ``source`` where given
    (``"run"``: a run's own samples; ``"score"``: samples drawn to be scored)."""
    return sample_to_archive(
        model, archive, settings.n, height, width, batch_size=settings.batch_size,
        temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed, sampler=settings.sampler,
        labels=labels, prefix=prefix, progress=progress, model=state["model"]["name"],
        checkpoint=str(checkpoint), recipe=state["recipe"], epoch=state["epoch"],
        **({"source": source} if source is not None else {}),
    )


def archived_score_batch(archive: RunArchive, checkpoint: str | os.PathLike, epoch: int,
                         settings: SampleSection) -> str | None:
    """The key of ``settings.n`` samples of checkpoint ``checkpoint`` (at ``epoch``) drawn
    before to be scored with these seed, temperature and top-p (by a run's ``[score]`` or by
    ``pixelgen score``), or None."""
    return archived_batch(archive, settings.n, source="score", checkpoint=Path(checkpoint), epoch=epoch,
                          seed=settings.seed, temperature=settings.temperature, top_p=settings.top_p)

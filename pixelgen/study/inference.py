"""A trained model's samples, kept in its run archive.

::

    sample_to_archive(model, archive, n, H, W)      pixelgen.sample in batches, appended to
                                                    a run archive with its settings
    archived_batch(archive, n, **attributes)        such a batch drawn before, if any
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelgen.nn.blocks import n_levels_of
from pixelgen.sampling import sample_batched, sampler_used
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

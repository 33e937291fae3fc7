"""A trained model's two outputs: its likelihood on a data set and its samples, as files.

::

    evaluate(model, dataset, batch_size, fabric)    NLL in nats/image and bits/dim, overall
                                                    and per colour (pixelgen.metrics)
    sample_to_archive(model, archive, n, H, W)      pixelgen.sample in batches, appended to
                                                    a run archive with its settings
    archived_batch(archive, n, **attributes)        such a batch drawn before, if any
    save_grid(images, path, n_levels)               a PNG grid, upscaled for small images
    read_image(path, channels, n_levels)            an image file as uint8 (C, H, W)
    to_display / from_display                       a model's levels <-> 0..255 pixel values

A model predicts ``n_levels`` values per sub-pixel (256, or 2 for binary data). Images are
stored in archives as those values (a binary model's samples are 0/1); image files hold
0..255, so PNGs written here map level ``k`` to ``round(255 k / (n_levels - 1))`` (0/1 to
0/255) and images read for completion are mapped back to the nearest level.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning_fabric.wrappers import _FabricModule
from PIL import Image, UnidentifiedImageError
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.utils import make_grid
from tqdm import tqdm

from pixelgen.archive import RunArchive
from pixelgen.blocks import N_LEVELS, call_model, n_classes_of, n_levels_of
from pixelgen.errors import DataError
from pixelgen.files import atomic_writer
from pixelgen.metrics import nats_to_bits_per_dim, nll_nats
from pixelgen.sampling import SamplingError, sample_batched, sampler_used

#: Grids of small images are upscaled by a whole factor so that each image is at least this wide.
MIN_GRID_IMAGE_PX = 112


def bare_module(model: nn.Module) -> nn.Module:
    """The user's module inside Fabric's wrapper and ``torch.compile``'s, if any."""
    while isinstance(model, _FabricModule) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, _FabricModule) else model._orig_mod
    return model


def progress_bar_enabled() -> bool:
    """Progress bars on stderr: only on a terminal, and not with ``PIXELGEN_PROGRESS=0``
    (elsewhere the epoch lines are the plain progress)."""
    return os.environ.get("PIXELGEN_PROGRESS", "1") != "0" and sys.stderr.isatty()


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``, or by default one per two CPU cores (on a
    2-core machine one thread per process measured several times faster than two, since
    the data loading and Python overhead want the other core). Returns the number set."""
    n = threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(n)
    return n


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    fabric: Any = None,
    *,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Negative log-likelihood of ``dataset`` under ``model``.

    Args:
        model: a pixelgen model, bare or set up by Fabric; it is put in eval mode for the
            pass and back in its previous mode after.
        dataset: items ``(uint8 (C, H, W), label)``.
        batch_size: images per forward pass.
        fabric: with several processes each evaluates every ``world_size``-th image (no
            padding, no duplicates) and the sums are all-reduced, so the figures equal a
            single-process pass. Without it the model's own device is used.

    Returns:
        ``{"n_images", "nll_nats" (per image), "bits_per_dim",
        "bits_per_dim_per_channel" (list, one per colour)}``.
    """
    net = bare_module(model)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    device = fabric.device if fabric is not None else next(net.parameters()).device
    if len(dataset) == 0:
        raise DataError("evaluate: the split has no images (check data.validation_fraction and data.limit_*)")
    channels, height, width = dataset[0][0].shape
    loader = DataLoader(Subset(dataset, range(rank, len(dataset), world)),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers)
    totals = _summed_nll(net, loader, channels, device, fabric)  # (C + 1,): nats per colour, count
    if world > 1:
        totals = fabric.all_reduce(totals, reduce_op="sum")
    totals = totals.cpu().tolist()
    n_images = int(totals[-1])
    per_channel = [nats / n_images for nats in totals[:-1]]  # nats per image, per colour
    nll = sum(per_channel)
    return {
        "n_images": n_images,
        "nll_nats": nll,
        "bits_per_dim": nats_to_bits_per_dim(nll, channels * height * width),
        "bits_per_dim_per_channel": [nats_to_bits_per_dim(v, height * width) for v in per_channel],
    }


def _summed_nll(net: nn.Module, loader: DataLoader, channels: int, device: Any, fabric: Any) -> Tensor:
    """NLL in nats summed over the loader's images per colour, and the image count."""
    totals = torch.zeros(channels + 1, dtype=torch.float64, device=device)
    conditional = n_classes_of(net) > 0
    autocast = fabric.autocast() if fabric is not None else contextlib.nullcontext()
    was_training = net.training
    net.eval()
    try:
        # The bare module, not a DDP wrapper: shards may differ by one batch, and DDP's
        # forward would wait for a partner that has finished.
        with torch.no_grad(), autocast:
            for x, labels in tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, leave=False,
                                  disable=not progress_bar_enabled()):
                x, labels = x.to(device), labels.to(device)
                logits = call_model(net, x, labels if conditional else None)  # (B, n_levels, C, H, W)
                for c in range(channels):
                    totals[c] += nll_nats(logits[:, :, c : c + 1], x[:, c : c + 1]).double().sum()
                totals[-1] += len(x)
    finally:
        net.train(was_training)
    return totals


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

    The batch is stored (see :meth:`pixelgen.archive.RunArchive.append_samples`) with the
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


def to_display(images: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """A model's values 0..n_levels-1 as uint8 pixel values 0..255 (0/1 -> 0/255; 256
    levels unchanged)."""
    if n_levels == N_LEVELS:
        return images
    return (images.float() * (255 / (n_levels - 1))).round().to(torch.uint8)


def from_display(images: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """Pixel values 0..255 as the nearest of a model's levels 0..n_levels-1 (0..127 -> 0,
    128..255 -> 1 for two levels; 256 levels unchanged)."""
    if n_levels == N_LEVELS:
        return images
    return torch.floor(images.float() * ((n_levels - 1) / 255) + 0.5).to(torch.uint8)


def read_image(path: str | os.PathLike, channels: int, n_levels: int = N_LEVELS) -> Tensor:
    """An image file (PNG, JPEG) as uint8 ``(C, H, W)``, converted to grey (``C = 1``) or
    RGB (``C = 3``) and to a model's ``n_levels`` (see :func:`from_display`)."""
    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise SamplingError(f"completion needs a grey or RGB model, this one has {channels} colours")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(modes[channels]), dtype=np.uint8)  # (H, W[, C])
    except (OSError, UnidentifiedImageError) as exc:
        raise SamplingError(f"{path}: cannot read the image to complete: {exc}") from None
    image = torch.from_numpy(pixels.reshape(*pixels.shape[:2], channels).copy()).permute(2, 0, 1)  # (C, H, W)
    return from_display(image, n_levels)


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` as a file an image can be written to: not a folder, with an extension."""
    path = Path(path)
    if path.is_dir():
        raise SamplingError(f"{path}: is a folder; name a PNG file, e.g. {path / 'samples.png'}")
    if not path.suffix:
        raise SamplingError(f"{path}: the PNG file name needs an extension, e.g. {path}.png")
    return path


def save_grid(images: Tensor, path: str | os.PathLike, n_levels: int = N_LEVELS) -> Path:
    """Write uint8 images ``(n, C, H, W)`` of values 0..n_levels-1 as one PNG grid, about
    square, atomically; the values are mapped to 0..255 (:func:`to_display`: a binary
    model's 0/1 become black and white).

    Small images are upscaled by a whole factor (nearest neighbour) so that each is at
    least :data:`MIN_GRID_IMAGE_PX` pixels wide; grey stays grey.
    """
    path = check_image_path(path)
    images = to_display(images, n_levels)
    scale = max(1, math.ceil(MIN_GRID_IMAGE_PX / images.shape[-1]))
    big = images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)  # (n, C, sH, sW)
    grid = make_grid(big, nrow=math.ceil(math.sqrt(len(images))), padding=scale, pad_value=255)  # (3, H', W')
    pixels = grid[0] if images.shape[1] == 1 else grid.permute(1, 2, 0)  # (H', W') or (H', W', 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        Image.fromarray(pixels.cpu().numpy()).save(handle, format="PNG")
    return path

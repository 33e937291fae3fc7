"""Sampling: one loop for every model, sub-pixel by sub-pixel (Pixel RNN, section 2).

An image is generated in the order the models factorise it: rows top to bottom, pixels
left to right, and inside a pixel R -> G -> B. Each sub-pixel is drawn from its 256-way
softmax (temperature, optional nucleus truncation), never taken by argmax::

    for i in rows, for j in columns:
        for c in colours:
            logits = state.logits(x, i, j)[:, :, c]     (n, 256), given x up to (i, j, c-1)
            x[:, c, i, j] = draw(logits)

What differs between models is only how ``state.logits`` is computed. A model offers a
:class:`SamplingState` through ``model.sampling_state(n, height, width, labels)``:

* :class:`ReferenceState` (any model with a ``forward``) recomputes the whole forward
  pass for every sub-pixel and slices out pixel ``(i, j)``: ``C * H * W`` full passes.
* a fast state caches what earlier pixels computed and evaluates only pixel ``(i, j)``'s
  column through the layers (Ramachandran et al. 2017, "Fast generation for
  convolutional autoregressive models"); see :class:`pixelgen.model.ResidualStackState`.

Both give the same logits up to float rounding, so with the same seed the same images
(bit for bit in float64; in float32 a draw that falls within rounding of a boundary of the
cumulative distribution can, rarely, go the other way).
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from pixelgen.errors import PixelgenError
from pixelgen.layers import N_LEVELS

SAMPLERS = ("fast", "reference")


class SamplingError(PixelgenError):
    """Bad arguments to :func:`sample`: sizes, labels, prefix, temperature, top_p, sampler."""


class SamplingState:
    """What a model computes, incrementally, while one batch of images is generated.

    The sampling loop visits every pixel once in raster order and, for a pixel it
    generates, calls :meth:`logits` once per colour, R first; for a pixel that is given
    (completion) it calls :meth:`observe` once. A state may therefore cache whatever
    earlier pixels computed. Calls for the same pixel must be idempotent: a later call
    sees more colours of that pixel filled in and overwrites what an earlier one cached.
    """

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        """Logits ``(n, 256, C)`` of pixel ``(i, j)``.

        Args:
            x: images ``(n, C, H, W)`` (uint8) holding every sub-pixel before ``(i, j, c)``
                in the order; later sub-pixels hold arbitrary values.
            i, j: the pixel; colour ``c``'s logits ``[:, :, c]`` are exact given the
                colours before ``c``, later colours' are not.
        """
        raise NotImplementedError

    def observe(self, x: Tensor, i: int, j: int) -> None:
        """Pixel ``(i, j)`` of ``x`` is given, not sampled: update the caches."""
        self.logits(x, i, j)


class ReferenceState(SamplingState):
    """The slow, obviously right state: one full forward pass per call.

    Works for any ``model(x[, labels]) -> (n, 256, C, H, W)``.
    """

    def __init__(self, model: nn.Module, labels: Tensor | None) -> None:
        self.model = model
        self.labels = labels

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        out = self.model(x) if self.labels is None else self.model(x, self.labels)
        return out[..., i, j]  # (n, 256, C)

    def observe(self, x: Tensor, i: int, j: int) -> None:
        pass  # nothing is cached


def _state(model: nn.Module, sampler: str, n: int, height: int, width: int, labels: Tensor | None) -> SamplingState:
    """The model's own (cached) state for ``sampler="fast"`` where it has one, else the reference."""
    make_state = getattr(model, "sampling_state", None)
    if sampler == "fast" and make_state is not None:
        return make_state(n, height, width, labels)
    return ReferenceState(model, labels)


def sampler_used(model: nn.Module, sampler: str) -> str:
    """``"fast"`` if :func:`sample` with ``sampler`` runs ``model``'s cached state, else
    ``"reference"`` (asked for, or the fallback of a model without a cached state)."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else None
    labels = torch.zeros(1, dtype=torch.long, device=device) if getattr(model, "n_classes", 0) else None
    state = _state(model, sampler, 1, 1, 1, labels)
    return "reference" if isinstance(state, ReferenceState) else "fast"


def draw(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator) -> Tensor:
    """One value per row of ``logits`` ``(n, 256)``, drawn from ``softmax(logits / temperature)``.

    With ``top_p < 1`` only the nucleus is kept: the smallest set of values, most likely
    first, whose probability reaches ``top_p`` (Holtzman et al. 2020). The draw is by
    inverse CDF over the values in their natural order 0..255, from one uniform per row,
    so that logits that differ only by rounding give the same value almost surely.

    Returns:
        long tensor ``(n,)``.
    """
    work_dtype = torch.float64 if logits.device.type != "mps" else torch.float32
    probs = torch.softmax(logits.to(work_dtype) / temperature, dim=-1)  # (n, 256)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (n, 256)
        keep_sorted = mass_before < top_p  # always keeps the most likely value
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = probs * keep
    cdf = probs.cumsum(dim=-1)  # (n, 256), unnormalised after truncation
    uniform = torch.rand(len(logits), 1, generator=generator, device=logits.device, dtype=work_dtype)
    values = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)[:, 0]  # (n,)
    # uniform * total rounds up to total about never; then take the last possible value.
    last_possible = N_LEVELS - 1 - (probs.flip(-1) > 0).to(torch.uint8).argmax(dim=-1)
    return torch.minimum(values, last_possible)


def _channels_of(model: nn.Module) -> int:
    channels = getattr(model, "in_channels", None)
    if not isinstance(channels, int) or channels < 1:
        raise SamplingError(
            f"{type(model).__name__} has no in_channels; sampling needs the number of colours "
            "(subclass pixelgen.model.AutoregressiveModel)"
        )
    return channels


def _check_labels(model: nn.Module, labels: Tensor | int | None, n: int, device: torch.device) -> Tensor | None:
    n_classes = getattr(model, "n_classes", 0)
    if labels is None:
        if n_classes:
            raise SamplingError(f"this model is class-conditional ({n_classes} classes): pass labels")
        return None
    if not n_classes:
        raise SamplingError("labels given, but this model is not class-conditional (n_classes = 0)")
    labels = torch.as_tensor(labels, device=device)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise SamplingError(f"labels must be integers, got {labels.dtype}")
    labels = labels.long().expand(n) if labels.dim() == 0 else labels.long()
    if labels.shape != (n,):
        raise SamplingError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise SamplingError(f"labels must lie in 0..{n_classes - 1}, got {labels.tolist()}")
    return labels


def _check_prefix(prefix: Tensor | None, n: int, channels: int, height: int, width: int) -> int:
    if prefix is None:
        return 0
    if not isinstance(prefix, Tensor) or prefix.dtype != torch.uint8:
        raise SamplingError(f"prefix must be a uint8 tensor, got {getattr(prefix, 'dtype', type(prefix))}")
    if prefix.dim() != 4 or prefix.shape[0] != n or prefix.shape[1] != channels or prefix.shape[3] != width:
        raise SamplingError(
            f"prefix must have shape ({n}, {channels}, rows, {width}), got {tuple(prefix.shape)}"
        )
    if prefix.shape[2] > height:
        raise SamplingError(f"prefix has {prefix.shape[2]} rows; the images have only {height}")
    return prefix.shape[2]


def sample(
    model: nn.Module,
    n: int,
    height: int,
    width: int,
    *,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    sampler: str = "fast",
    labels: Tensor | int | None = None,
    prefix: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """Generate ``n`` images, sub-pixel by sub-pixel.

    Args:
        model: a pixelgen model (``in_channels``, ``n_classes``, ``forward``); its own
            ``sampling_state`` is used for ``sampler="fast"`` where it has one.
        n, height, width: number and size of the images.
        temperature: divides the logits; below 1 sharpens, towards 0 approaches argmax.
        top_p: nucleus sampling; 1 draws from the full softmax.
        seed: seeds this call's own ``torch.Generator`` (on the model's device); the
            global RNG is neither used nor changed. ``None``: a fresh random seed.
        sampler: ``"fast"`` (the model's cached state) or ``"reference"`` (a full forward
            pass per sub-pixel). Both give the same images for the same seed.
        labels: ``(n,)`` class labels, or one int for all, for class-conditional models.
        prefix: uint8 ``(n, C, rows, width)``: completion; these top rows are kept bit
            for bit and the rest is generated.
        progress: a progress bar over rows on stderr.

    Returns:
        uint8 tensor ``(n, C, height, width)`` on the model's device.
    """
    if sampler not in SAMPLERS:
        raise SamplingError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0 and math.isfinite(temperature)):
        raise SamplingError(f"temperature must be a positive number, got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise SamplingError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if n < 1 or height < 1 or width < 1:
        raise SamplingError(f"n, height and width must be positive, got {n}, {height}, {width}")
    channels = _channels_of(model)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    labels = _check_labels(model, labels, n, device)
    given_rows = _check_prefix(prefix, n, channels, height, width)

    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    x = torch.zeros(n, channels, height, width, dtype=torch.uint8, device=device)
    if given_rows:
        x[:, :, :given_rows] = prefix.to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            state = _state(model, sampler, n, height, width, labels)
            if sampler == "fast" and isinstance(state, ReferenceState):
                warnings.warn(
                    f"{type(model).__name__} has no cached sampling state: the fast sampler falls back "
                    "to the reference one (a full forward pass per sub-pixel)",
                    stacklevel=2,
                )
            rows = range(height)
            if progress:
                from tqdm import tqdm

                rows = tqdm(rows, desc=f"sampling {n}x{channels}x{height}x{width}", unit="row", file=sys.stderr)
            for i in rows:
                for j in range(width):
                    if i < given_rows:
                        state.observe(x, i, j)
                        continue
                    for c in range(channels):
                        logits = state.logits(x, i, j)[:, :, c]  # (n, 256)
                        x[:, c, i, j] = draw(logits, temperature, top_p, generator).to(torch.uint8)
    finally:
        model.train(was_training)
    return x


def batch_seed(seed: int, batch: int) -> int:
    """Seed of batch ``batch`` of :func:`sample_batched`: batch 0 uses ``seed`` itself, and
    the batches of seeds ``0 .. 2**32 - 1`` never share a stream."""
    return seed + (batch << 32)


def sample_batched(
    model: nn.Module,
    n: int,
    height: int,
    width: int,
    *,
    batch_size: int = 16,
    seed: int | None = None,
    labels: Tensor | int | None = None,
    prefix: Tensor | None = None,
    **options: Any,
) -> Tensor:
    """:func:`sample` in batches of at most ``batch_size`` images, concatenated on the CPU.

    Batch ``k`` is seeded with :func:`batch_seed` ``(seed, k)``, so the images depend on
    ``seed`` and ``batch_size`` only, and a single batch equals ``sample(..., seed=seed)``.
    ``labels`` ``(n,)`` and ``prefix`` ``(n, C, rows, width)`` are split like the images;
    ``options`` are the other keyword arguments of :func:`sample`.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise SamplingError(f"batch_size must be a positive integer, got {batch_size!r}")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    if isinstance(labels, Tensor) and labels.dim() == 1 and len(labels) != n:
        raise SamplingError(f"labels must have shape ({n},), got {tuple(labels.shape)}")
    batches = []
    for k, start in enumerate(range(0, n, batch_size)):
        stop = min(start + batch_size, n)
        batch_labels = labels[start:stop] if isinstance(labels, Tensor) and labels.dim() == 1 else labels
        batch_prefix = prefix[start:stop] if prefix is not None else None
        images = sample(
            model, stop - start, height, width, seed=batch_seed(seed, k),
            labels=batch_labels, prefix=batch_prefix, **options,
        )
        batches.append(images.cpu())
    return torch.cat(batches)


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
    """Generate ``n`` images with :func:`sample_batched` and append them to a run archive.

    The batch is stored (see :meth:`pixelgen.archive.RunArchive.append_samples`) with the
    sampling settings (``sampler``: the one that ran, see :func:`sampler_used`), ``seconds_per_image`` (wall clock) and ``attributes`` (the caller's
    ``model``, ``checkpoint``, ``recipe``, ...); ``labels`` and the number of given
    ``prefix_rows`` too where used. ``seed=None`` draws a random seed and records it.

    Returns:
        the images, uint8 ``(n, C, height, width)`` on the CPU, and the batch's key.
    """
    from pixelgen.archive import RunArchive

    store = RunArchive.create_or_open(Path(archive))  # fails before the slow part
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    start = time.perf_counter()
    images = sample_batched(
        model, n, height, width, batch_size=batch_size, temperature=temperature, top_p=top_p,
        seed=seed, sampler=sampler, labels=labels, prefix=prefix, progress=progress,
    )
    seconds_per_image = (time.perf_counter() - start) / n
    settings = dict(
        temperature=temperature, top_p=top_p, seed=seed, sampler=sampler_used(model, sampler), batch_size=batch_size,
        seconds_per_image=seconds_per_image,
    )
    if labels is not None:
        settings["labels"] = torch.as_tensor(labels).expand(n).tolist()
    if prefix is not None:
        settings["prefix_rows"] = prefix.shape[2]
    key = store.append_samples(images, **settings, **attributes)
    return images, key


# ----------------------------------------------------------------------- from a checkpoint


def read_image(path: str | os.PathLike, channels: int) -> Tensor:
    """An image file (PNG, JPEG) as uint8 ``(C, H, W)``, converted to grey (``C = 1``) or
    RGB (``C = 3``)."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    modes = {1: "L", 3: "RGB"}
    if channels not in modes:
        raise SamplingError(f"completion needs a grey or RGB model, this one has {channels} colours")
    try:
        with Image.open(path) as image:
            pixels = np.asarray(image.convert(modes[channels]), dtype=np.uint8)  # (H, W[, C])
    except (OSError, UnidentifiedImageError) as exc:
        raise SamplingError(f"{path}: cannot read the image to complete: {exc}") from None
    return torch.from_numpy(pixels.reshape(*pixels.shape[:2], channels).copy()).permute(2, 0, 1)  # (C, H, W)


def save_grid(images: Tensor, path: str | os.PathLike) -> Path:
    """Write uint8 images ``(n, C, H, W)`` as one PNG grid, about square."""
    from torchvision.utils import save_image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(images.float() / 255, path, nrow=math.ceil(math.sqrt(len(images))), padding=1)
    return path


def _image_size_of_run(state: dict[str, Any]) -> tuple[int, int]:
    """Height and width of the images the checkpoint's run trained on (reads its data)."""
    import attrs

    from pixelgen.recipe import recipe_from_dict
    from pixelgen.train import load_data

    try:
        run = recipe_from_dict(state["recipe"]).runs[0]
        run = attrs.evolve(run, data=attrs.evolve(run.data, download=False))
        shape = load_data(run)["train"].shape  # (C, H, W)
    except (PixelgenError, OSError, KeyError) as exc:
        raise SamplingError(
            f"the image size is not recorded in the checkpoint and its data set cannot be read "
            f"({exc}); pass the size (--size HxW)"
        ) from None
    return shape[1], shape[2]


def sample_checkpoint(
    checkpoint: str | os.PathLike,
    n: int,
    *,
    size: tuple[int, int] | None = None,
    batch_size: int = 16,
    temperature: float = 1.0,
    top_p: float = 1.0,
    seed: int | None = None,
    sampler: str = "fast",
    label: int | None = None,
    complete: str | os.PathLike | None = None,
    rows: int | None = None,
    archive: str | os.PathLike | bool = True,
    png: str | os.PathLike | bool = True,
    device: str | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """What ``pixelgen sample`` does: load a checkpoint, sample, archive, write a PNG grid.

    Args:
        checkpoint: a ``.ckpt`` written by ``pixelgen run`` (read with weights_only).
        n: number of images.
        size: ``(height, width)``; default: the completion image's, else the run's data.
        label: class of every image for a class-conditional model; default: the classes
            in turn (0, 1, 2, ...).
        complete, rows: keep the top ``rows`` rows of this image file in every sample.
        archive: ``True``: the run's archive next to the checkpoint (the recipe's
            ``output.archive``, ``archive.zarr``); a path; ``False``: none.
        png: ``True``: ``samples-<key>.png`` next to the checkpoint (``samples.png``
            without an archive); a path; ``False``: none.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA where available.
        batch_size, temperature, top_p, seed, sampler, progress: as for :func:`sample_batched`;
            ``seed=None`` draws a seed, which is recorded.

    Returns:
        ``{"images", "seed", "seconds_per_image", "archive", "key", "png"}`` (paths or None).
    """
    from pixelgen import checkpoint as ckpt_io

    checkpoint = Path(checkpoint)
    state = ckpt_io.load_checkpoint(checkpoint)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = ckpt_io.model_from_checkpoint(state).to(device)
    channels = _channels_of(model)
    if (complete is None) != (rows is None):
        raise SamplingError("completion needs both the image and the number of rows to keep (--complete, --rows)")
    prefix = None
    if complete is not None:
        image = read_image(complete, channels)  # (C, H, W)
        height, width = size or image.shape[1:]
        if image.shape[2] != width or not 0 < rows <= min(height, image.shape[1]):
            raise SamplingError(
                f"{complete}: a {image.shape[1]}x{image.shape[2]} image; the samples are "
                f"{height}x{width}: the widths must agree and rows be in 1..{min(height, image.shape[1])}"
            )
        prefix = image[None, :, :rows].expand(n, -1, -1, -1)  # (n, C, rows, W)
    else:
        height, width = size or _image_size_of_run(state)
    labels = None
    n_classes = getattr(model, "n_classes", 0)
    if n_classes:
        labels = torch.full((n,), label) if label is not None else torch.arange(n) % n_classes
    elif label is not None:
        raise SamplingError(f"--label {label}: this model is not class-conditional")
    if seed is None:
        seed = int.from_bytes(os.urandom(4), "little")
    options = dict(
        batch_size=batch_size, temperature=temperature, top_p=top_p, seed=seed, sampler=sampler,
        labels=labels, prefix=prefix, progress=progress,
    )
    result: dict[str, Any] = {"seed": seed, "archive": None, "key": None, "png": None}
    if archive is not False:
        recipe = state["recipe"]
        name = recipe.get("output", {}).get("archive", "archive.zarr") if isinstance(recipe, dict) else "archive.zarr"
        result["archive"] = checkpoint.parent / name if archive is True else Path(archive)
        start = time.perf_counter()
        images, result["key"] = sample_to_archive(
            model, result["archive"], n, height, width, model=state["model"]["name"],
            checkpoint=str(checkpoint), recipe=recipe, epoch=state["epoch"], **options,
        )
    else:
        start = time.perf_counter()
        images = sample_batched(model, n, height, width, **options)
    result["seconds_per_image"] = (time.perf_counter() - start) / n
    if png is not False:
        default = f"samples-{result['key']}.png" if result["key"] is not None else "samples.png"
        result["png"] = save_grid(images, checkpoint.parent / default if png is True else png)
    result["images"] = images
    return result

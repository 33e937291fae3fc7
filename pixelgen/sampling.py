"""Sampling: one loop for every model, sub-pixel by sub-pixel (Pixel RNN, section 2).

An image is generated in the order the model factorises it: rows top to bottom, pixels
left to right, and inside a pixel R -> G -> B, unless the model's ``generation_order``
says otherwise (a multi-scale model generates its subsampled image first; see
:func:`pixelgen.nn.blocks.generation_order_of`). Each sub-pixel is drawn from the
distribution the model's likelihood gives it (:mod:`pixelgen.nn.likelihoods`; by default
its ``n_levels``-way softmax, 256 values for 8-bit images, 2 for binary ones; temperature,
optional nucleus truncation), never taken by argmax::

    for (i, j) in pixels, in the model's order (raster by default):
        for c in colours:
            outputs = state.logits(x, i, j)      the likelihood's outputs at (i, j), given x
                                                 up to (i, j, c-1); once per pixel for a
                                                 per-pixel likelihood
            x[:, c, i, j] = likelihood.sample(outputs, x[:, :, i, j], c, ...)

What differs between models is only how ``state.logits`` is computed. A model offers a
:class:`~pixelgen.nn.blocks.SamplingState` through ``model.sampling_state(n, height, width, labels)``:

* :class:`~pixelgen.nn.blocks.ReferenceState` (any model with a ``forward``) recomputes the whole forward
  pass for every sub-pixel and slices out pixel ``(i, j)``: ``C * H * W`` full passes.
* a fast state caches what earlier pixels computed and evaluates only pixel ``(i, j)``'s
  column through the layers (Ramachandran et al. 2017, "Fast generation for
  convolutional autoregressive models"); see :class:`pixelgen.nn.blocks.ResidualStackState`.

Both give the same logits up to float rounding, so with the same seed the same images
(bit for bit in float64; in float32 a draw that falls within rounding of a boundary of the
cumulative distribution can, rarely, go the other way).
"""

from __future__ import annotations

import contextlib
import math
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pixelgen.errors import PixelgenError
from pixelgen.limits import MIN_TEMPERATURE
from pixelgen.nn.blocks import (
    ReferenceState,
    SamplingState,
    generation_order_of,
    likelihood_of,
    n_classes_of,
    n_levels_of,
)
from pixelgen.nn.likelihoods import Likelihood, draw_from, work_dtype

SAMPLERS = ("fast", "reference")

#: A batch of at most this many images is sampled on the CPU with one torch thread. Each step
#: of the sampler is a handful of small operations, too small to share out: on a busy
#: 2-core machine, 4 images of 8x8 from a Diagonal BiLSTM took 2 s with one thread and
#: 60 to 77 s with two (the threads wait on each other; benchmarks/getting_started.py).
ONE_THREAD_BATCH = 16


def default_threads() -> int:
    """torch threads for a pixelgen process: one per two CPU cores (on a 2-core machine one
    thread per process measured several times faster than two, since the data loading and
    Python overhead want the other core)."""
    return max(1, (os.cpu_count() or 2) // 2)


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op threads: ``threads``, or by default :func:`default_threads`.
    Returns the number set."""
    n = threads or default_threads()
    torch.set_num_threads(n)
    return n


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``threads`` inside the block and the caller's number
    put back after it (None: left as they are)."""
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def sampling_threads(n: int, device: torch.device) -> int | None:
    """The torch threads :func:`sample` draws ``n`` images with on ``device``: one for a small
    batch on the CPU (:data:`ONE_THREAD_BATCH`), else None (the caller's setting)."""
    return 1 if device.type == "cpu" and n <= ONE_THREAD_BATCH else None


class SamplingError(PixelgenError):
    """Bad arguments to :func:`sample`: sizes, labels, prefix, temperature, top_p, sampler."""


def sampler_state(model: nn.Module, sampler: str, n: int, height: int, width: int,
                  labels: Tensor | None) -> SamplingState:
    """The state :func:`sample` runs for ``n`` images of ``height x width`` (``labels``
    ``(n,)`` or None, as :func:`check_labels` gives them): for ``sampler="fast"`` the
    model's own cached state where it has one, else the :class:`~pixelgen.nn.blocks.ReferenceState`."""
    make_state = getattr(model, "sampling_state", None)
    if sampler == "fast" and make_state is not None:
        return make_state(n, height, width, labels)
    return ReferenceState(model, labels)


def _state_warning_on_fallback(
    model: nn.Module, sampler: str, n: int, height: int, width: int, labels: Tensor | None
) -> SamplingState:
    """:func:`sampler_state` for :func:`sample`, with a warning (pointing at the caller of
    :func:`sample`) when ``sampler="fast"`` falls back to the reference state."""
    state = sampler_state(model, sampler, n, height, width, labels)
    if sampler == "fast" and isinstance(state, ReferenceState):
        warnings.warn(f"{type(model).__name__} has no cached sampling state: the fast sampler falls "
                      "back to the reference one (a full forward pass per sub-pixel)", stacklevel=3)
    return state


def sampler_used(model: nn.Module, sampler: str) -> str:
    """``"fast"`` if :func:`sample` with ``sampler`` runs ``model``'s cached state, else
    ``"reference"`` (asked for, or the fallback of a model without a cached state)."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else None
    labels = torch.zeros(1, dtype=torch.long, device=device) if n_classes_of(model) else None
    state = sampler_state(model, sampler, 1, 1, 1, labels)
    return "reference" if isinstance(state, ReferenceState) else "fast"


def draw(logits: Tensor, temperature: float, top_p: float, generator: torch.Generator) -> Tensor:
    """One value per row of ``logits`` ``(n, V)``, drawn from ``softmax(logits / temperature)``
    (the categorical likelihood's draw, :func:`pixelgen.nn.likelihoods.draw_from`).

    With ``top_p < 1`` only the nucleus is kept: the smallest set of values, most likely
    first, whose probability reaches ``top_p`` (Holtzman et al. 2020). The draw is by
    inverse CDF over the values in their natural order 0..V-1, from one uniform per row,
    so that logits that differ only by rounding give the same value almost surely. ``V``
    is the model's number of levels (256, or 2 for a binary model).

    Returns:
        long tensor ``(n,)``.
    """
    probs = torch.softmax(logits.to(work_dtype(logits.device)) / temperature, dim=-1)  # (n, V)
    return draw_from(probs, top_p, generator)


def channels_of(model: nn.Module) -> int:
    """The number of colours ``C`` of ``model``'s images (its ``in_channels``).

    Raises:
        SamplingError: the model has no positive integer ``in_channels``.
    """
    channels = getattr(model, "in_channels", None)
    if not isinstance(channels, int) or channels < 1:
        raise SamplingError(
            f"{type(model).__name__} has no in_channels; sampling needs the number of colours "
            "(subclass pixelgen.nn.blocks.AutoregressiveModel)"
        )
    return channels


def check_labels(model: nn.Module, labels: Tensor | int | None, n: int, device: torch.device) -> Tensor | None:
    """The classes of ``n`` images of a class-conditional ``model`` as a long tensor ``(n,)``
    on ``device`` (one int or a 0-d tensor stands for all), or None for a model without classes.

    Raises:
        SamplingError: labels missing for a class-conditional model, given for another
            model, not integers, of another shape, or outside ``0..n_classes-1``.
    """
    n_classes = n_classes_of(model)
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


def _check_prefix(prefix: Tensor | None, n: int, channels: int, height: int, width: int, n_levels: int) -> int:
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
    if prefix.numel() and int(prefix.max()) >= n_levels:
        raise SamplingError(
            f"prefix holds the value {int(prefix.max())}, but the model predicts 0..{n_levels - 1}; "
            f"map the image to those levels first (pixelgen.store.images.from_display)"
        )
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
            for bit and the rest is generated (in the model's order, which may reach a
            given pixel after some it generates: those do not see it).
        progress: a progress bar over rows on stderr.

    On the CPU a batch of at most :data:`ONE_THREAD_BATCH` images is drawn with one torch
    thread (:func:`sampling_threads`); the caller's thread count is put back afterwards.

    Returns:
        uint8 tensor ``(n, C, height, width)`` on the model's device, values
        0..n_levels-1 (0/1 for a binary model).
    """
    _check_settings(sampler, temperature, top_p, n, height, width)
    likelihood = likelihood_of(model)
    if top_p < 1.0 and not likelihood.top_p_defined:
        raise SamplingError(f"top_p is not defined for the {likelihood.name} likelihood; use top_p = 1")
    channels = channels_of(model)
    device = _device_of(model)
    labels = check_labels(model, labels, n, device)
    given_rows = _check_prefix(prefix, n, channels, height, width, n_levels_of(model))

    generator = seeded_generator(seed, device)
    x = torch.zeros(n, channels, height, width, dtype=torch.uint8, device=device)
    if given_rows:
        x[:, :, :given_rows] = prefix.to(device)

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch_threads(sampling_threads(n, device)):
            state = _state_warning_on_fallback(model, sampler, n, height, width, labels)
            rows = tqdm(visiting_order(model, channels, height, width), unit="row", file=sys.stderr,
                        desc=f"sampling {n}x{channels}x{height}x{width}", disable=not progress)
            pick = _picker(likelihood, temperature, top_p, generator)
            for pixels in rows:
                fill_pixels(state, likelihood, x, pixels, pick, given_rows)
    finally:
        model.train(was_training)
    return x


def seeded_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """A generator of its own on ``device``, seeded with ``seed`` (None: a fresh random seed)."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


def _device_of(model: nn.Module) -> torch.device:
    """Where ``model``'s parameters live (the CPU for a model without any)."""
    parameter = next(model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _check_settings(sampler: str, temperature: float, top_p: float, n: int, height: int, width: int) -> None:
    if sampler not in SAMPLERS:
        raise SamplingError(f"sampler must be one of {', '.join(SAMPLERS)}, got {sampler!r}")
    if not (isinstance(temperature, (int, float)) and MIN_TEMPERATURE <= temperature and math.isfinite(temperature)):
        raise SamplingError(f"temperature must be a number of at least {MIN_TEMPERATURE:g}, got {temperature!r}")
    if not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise SamplingError(f"top_p must be a number in (0, 1], got {top_p!r}")
    if n < 1 or height < 1 or width < 1:
        raise SamplingError(f"n, height and width must be positive, got {n}, {height}, {width}")


def visiting_order(model: nn.Module, channels: int, height: int, width: int) -> list[list[tuple[int, int]]]:
    """The pixels ``(i, j)`` in the order :func:`sample` visits them, the model's generation
    order (:func:`~pixelgen.nn.blocks.generation_order_of`), cut into ``height`` runs of
    ``width`` pixels: the rows, for raster order.

    Raises:
        SamplingError: if the order does not keep the colours of a pixel together, R first.
    """
    order = generation_order_of(model, channels, height, width)  # (C, H, W)
    first = order[0]  # (H, W): rank of each pixel's first colour
    if not torch.equal(order, first + torch.arange(channels)[:, None, None]):
        raise SamplingError(
            f"{type(model).__name__}.generation_order must rank the colours of a pixel one after "
            "another, R first: sampling draws a pixel's colours together"
        )
    pixels = [divmod(int(k), width) for k in first.flatten().argsort()]  # (i, j) in generation order
    return [pixels[r * width : (r + 1) * width] for r in range(height)]


#: What fills a sub-pixel, ``pick(outputs, x_pixel, c, i, j) -> values``, long or uint8
#: ``(n,)`` for colour ``c`` of pixel ``(i, j)`` given the likelihood's outputs there and
#: the pixel ``x_pixel`` ``(n, C)`` so far (a draw for the sampler, a decoded value for the codec).
Pick = Callable[[Tensor, Tensor, int, int, int], Tensor]


def _picker(likelihood: Likelihood, temperature: float, top_p: float, generator: torch.Generator) -> Pick:
    """``pick``: sub-pixel ``c`` drawn from ``likelihood``."""
    return lambda outputs, x_pixel, c, i, j: likelihood.sample(outputs, x_pixel, c, temperature, top_p, generator)


def fill_pixels(state: SamplingState, likelihood: Likelihood, x: Tensor, pixels: list[tuple[int, int]],
                pick: Pick, given_rows: int = 0) -> None:
    """Fill ``pixels`` ``[(i, j), ...]`` of ``x`` uint8 ``(n, C, H, W)`` in that order, colour
    by colour, with what ``pick`` gives (pixels in rows above ``given_rows`` are given: the
    state only observes them). The state is asked once per colour, or once per pixel for a
    per-pixel likelihood, whose colours then see the pixel's colours picked before them:
    the loop of :func:`sample` and of the codec (:mod:`pixelgen.study.codec`)."""
    for i, j in pixels:
        if i < given_rows:
            state.observe(x, i, j)
            continue
        outputs = None
        for c in range(x.shape[1]):
            if outputs is None or not likelihood.per_pixel:
                outputs = state.logits(x, i, j)  # the likelihood's outputs at (i, j)
            x[:, c, i, j] = pick(outputs, x[:, :, i, j], c, i, j).to(torch.uint8)


def reference_seconds_per_subpixel(
    model: nn.Module, n: int, height: int, width: int, *, n_subpixels: int = 8, labels: Tensor | int | None = None
) -> float:
    """Seconds the reference sampler (``sample(..., sampler="reference")``) spends on one
    sub-pixel of ``n`` images of ``height x width``: the median over the pixels that hold
    the last ``n_subpixels`` sub-pixels (at least one pixel), each generated as
    :func:`sample` generates it, after one untimed pixel.

    Every sub-pixel costs the reference sampler one full forward pass of the whole
    ``(n, C, height, width)`` image (every pixel one, for a per-pixel likelihood: the
    time is the pixel's shared by its colours), whatever the image holds, so this time
    multiplied by ``C * height * width`` is the time of a whole image (see
    :func:`pixelgen.study.measure.sampling_seconds`).
    """
    _check_settings("reference", 1.0, 1.0, n, height, width)
    channels = channels_of(model)
    device = _device_of(model)
    labels = check_labels(model, labels, n, device)
    generator = seeded_generator(0, device)
    likelihood = likelihood_of(model)
    pick = _picker(likelihood, 1.0, 1.0, generator)
    x = torch.zeros(n, channels, height, width, dtype=torch.uint8, device=device)
    pixels = [p for row in visiting_order(model, channels, height, width) for p in row]
    n_pixels = min(len(pixels), max(1, math.ceil(n_subpixels / channels)))
    timed = pixels[-n_pixels:]
    warm_up = pixels[-n_pixels - 1] if len(pixels) > n_pixels else timed[0]

    def seconds(pixel: tuple[int, int]) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fill_pixels(state, likelihood, x, [pixel], pick)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            state = ReferenceState(model, labels)
            seconds(warm_up)  # the first pass pays for allocations and kernels
            per_pixel = statistics.median(seconds(pixel) for pixel in timed)
    finally:
        model.train(was_training)
    return per_pixel / channels


_BATCH_STRIDE = 0x9E3779B9  # odd, so batch -> batch * stride is one-to-one modulo 2**32


def batch_seed(seed: int, batch: int) -> int:
    """Seed of batch ``batch`` of :func:`sample_batched`: batch 0 uses ``seed`` itself, and
    the batches of one seed differ in the low 32 bits, the only ones torch's CPU generator
    reads (its Mersenne Twister is seeded with ``seed mod 2**32``), so no two batches of a
    call share a stream. The high bits of ``seed`` are kept for generators that read them."""
    low = (seed + batch * _BATCH_STRIDE) & 0xFFFFFFFF
    return (seed & ~0xFFFFFFFF) | low


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

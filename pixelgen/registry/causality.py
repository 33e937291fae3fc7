"""Conformance checks any plugin author can run: is a model exactly autoregressive?

:func:`check_causality` computes the full Jacobian (float64) of every output with
respect to every input sub-pixel and fails, naming the first offending pair, if an
output depends on a sub-pixel at or after it in the model's generation order: raster
order (row, column, colour) unless the model's ``generation_order`` says otherwise
(:func:`pixelgen.nn.blocks.generation_order_of`; a multi-scale model generates its
subsampled image first). The structure inside a pixel is the likelihood's
(:func:`pixelgen.nn.blocks.likelihood_of`): sub-pixel by sub-pixel for the categorical;
for a per-pixel likelihood every output of a pixel may depend on earlier pixels only.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from pixelgen.errors import CausalityError
from pixelgen.nn.blocks import (
    call_model,
    generation_order_of,
    likelihood_of,
    n_levels_of,
    raster_order,
)
from pixelgen.registry import create_model, get_model_spec

COLOUR_NAMES = {1: ("grey",), 3: ("R", "G", "B")}
#: Draws (a random image and fresh random weights each) whose Jacobian supports a
#: measurement unites, unless told otherwise. Four make the narrowed models of
#: :func:`narrow_model` see what their declared widths see (tests/test_check_narrow.py).
N_DRAWS = 4


def subpixel_name(c: int, i: int, j: int, channels: int) -> str:
    """``"(row 2, column 3, G)"`` for sub-pixel ``(c, i, j)`` of a ``channels``-colour image."""
    names = COLOUR_NAMES.get(channels)
    colour = names[c] if names else f"channel {c}"
    return f"(row {i}, column {j}, {colour})"


def allowed_dependencies(
    channels: int, height: int, width: int, order: Tensor | None = None, *, per_pixel: bool = False
) -> Tensor:
    """Which input sub-pixels each output sub-pixel may depend on.

    Args:
        channels, height, width: the image shape.
        order: long ``(C, H, W)``, the rank of each sub-pixel in the generation order
            (a model's :func:`~pixelgen.nn.blocks.generation_order_of`); ``None``: raster
            order with R -> G -> B inside a pixel.
        per_pixel: the likelihood's structure (``per_pixel`` of :class:`~pixelgen.nn.likelihoods.Likelihood`):
            every output of a pixel may depend only on sub-pixels before the pixel's first.

    Returns:
        bool tensor ``(C, H, W, C, H, W)``: ``[c, i, j, c2, i2, j2]`` is True exactly when
        sub-pixel ``(i2, j2, c2)`` comes strictly before ``(i, j, c)`` in the order (before
        ``(i, j)``'s first colour, ``per_pixel``).
    """
    if order is None:
        order = raster_order(channels, height, width)  # (C, H, W) position in the generation order
    out_rank = order.min(dim=0, keepdim=True).values.expand_as(order) if per_pixel else order  # (C, H, W)
    return out_rank[..., None, None, None] > order[None, None, None]


def _jacobian_support(
    model: nn.Module, x: Tensor, labels: Tensor | None, chunk: int = 128, bar: tqdm | None = None
) -> Tensor:
    """``(C, H, W, C, H, W)`` bool: non-zero entries of d logits / d x for one image ``x``.

    Reverse mode, one Jacobian row per batch element: copy ``k`` of the image is a probe
    for output sub-pixel ``k``, and one backward pass of the sum over ``k`` of copy ``k``'s
    logits at sub-pixel ``k`` gives every row at once, since batch elements never interact
    in these models (``chunk`` probes at a time to bound memory). The outputs of a
    sub-pixel (the likelihood's :meth:`~pixelgen.nn.likelihoods.Likelihood.by_subpixel`;
    for the categorical its ``n_levels`` logits) are first projected on random Gaussian weights: the projection's
    gradient is zero exactly when no logit depends on the input, except on a set of
    weights of measure zero. Reverse mode, rather than forward mode with one tangent per
    input sub-pixel, because torch's forward-mode rules of plain arithmetic import
    ``torch._dynamo`` on first use (seconds, more than the Jacobian of a narrow model),
    and every trainable model has the backward rules reverse mode needs.
    """
    n = x.numel()
    generator = torch.Generator().manual_seed(0)
    weights = None
    rows = []
    for start in range(0, n, chunk):
        positions = torch.arange(start, min(start + chunk, n))  # output sub-pixels probed
        probes = x.detach().expand(len(positions), *x.shape).clone().requires_grad_(True)  # (k, C, H, W)
        out = call_model(model, probes, None if labels is None else labels.expand(len(positions)))
        out = likelihood_of(model).by_subpixel(out, x.shape[0])  # (k, P, C, H, W)
        if weights is None:
            weights = torch.randn(out.shape[1], generator=generator, dtype=out.dtype)
        projected = torch.einsum("kv...,v->k...", out, weights).flatten(1)  # (k, C*H*W)
        (gradient,) = torch.autograd.grad(projected[torch.arange(len(positions)), positions].sum(), probes)
        rows.append(gradient.flatten(1) != 0)  # (k: output sub-pixel, C*H*W: input sub-pixel)
        if bar is not None:
            bar.update(len(positions))
    return torch.cat(rows).view(*x.shape, *x.shape)


def dependency_map(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    *,
    n_inputs: int = N_DRAWS,
    perturb: bool = True,
    seed: int = 0,
    labels: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """Measured dependencies of a model's outputs on its inputs, from Jacobians in float64.

    Args:
        model: maps ``(B, C, H, W)`` images (floats in [0, n_levels - 1] accepted) to
            its likelihood's outputs (for the categorical, logits ``(B, n_levels, C, H, W)``).
        channels, height, width: image shape to test.
        n_inputs: draws whose Jacobian supports are united, each a random image and a
            fresh perturbation of the weights: a ReLU unit that is off for one draw can
            hide a dependency that another draw shows.
        perturb: flip the signs of a copy of every parameter at random and add
            Gaussian noise, afresh for each draw, so that weights initialised to zero
            (biases, initial states) hide no dependency, nor do the same few ReLU units
            stay off in every draw.
        seed: seed of the images and the perturbations.
        labels: ``(1,)`` class label for class-conditional models.
        progress: a bar on stderr over the output sub-pixels probed.

    Returns:
        bool tensor ``(C, H, W, C, H, W)``: ``[c, i, j, c2, i2, j2]`` is True where output
        sub-pixel ``(i, j, c)`` depends on input sub-pixel ``(i2, j2, c2)``.
    """
    support = torch.zeros(channels, height, width, channels, height, width, dtype=torch.bool)
    total = n_inputs * channels * height * width
    with tqdm(total=total, desc="Jacobian", unit="row", file=sys.stderr, leave=False, disable=not progress) as bar:
        for probe, x in _draws(model, (channels, height, width), n_inputs, perturb, seed):
            support |= _jacobian_support(probe, x, labels, bar=bar)
    return support


def _draws(
    model: nn.Module, shape: tuple[int, int, int], n_inputs: int, perturb: bool, seed: int
) -> Iterator[tuple[nn.Module, Tensor]]:
    """``n_inputs`` pairs ``(probe, x)``: a float64 copy of ``model`` in eval mode, its
    parameters perturbed afresh for each pair if asked, and a random image ``x`` of
    ``shape`` ``(C, H, W)``, values uniform in [0, n_levels - 1].

    A fresh perturbation per image, not one for all: a ReLU unit whose weights keep it
    off for every input cuts the paths through it, and at narrow widths (a few units per
    colour group, :func:`narrow_model`) all the units of a group can be off at once; new
    weights for each image switch them on again, where new images alone, on the same
    weights, mostly do not.
    """
    generator = torch.Generator().manual_seed(seed)
    for _ in range(n_inputs):
        probe = _probe(model, perturb, generator)
        yield probe, torch.rand(shape, generator=generator, dtype=torch.float64) * (n_levels_of(model) - 1)


def _probe(model: nn.Module, perturb: bool, generator: torch.Generator) -> nn.Module:
    """A float64 copy of ``model`` in eval mode (gradients of the input only), its
    parameters perturbed if asked: every entry's sign flipped at random, then Gaussian
    noise added. The random signs make the draws' weights independent where noise alone
    would keep them close to the model's (a unit that some large input keeps off in one
    draw is then off in every draw)."""
    probe = copy.deepcopy(model).double().eval().requires_grad_(False)
    if perturb:
        with torch.no_grad():
            for param in probe.parameters():
                signs = torch.randint(0, 2, param.shape, generator=generator, dtype=param.dtype) * 2 - 1
                param.mul_(signs).add_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return probe


def pixel_dependencies(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    pixel: tuple[int, int],
    *,
    n_inputs: int = N_DRAWS,
    perturb: bool = True,
    seed: int = 0,
    labels: Tensor | None = None,
) -> Tensor:
    """``dependency_map(...)[:, i, j]`` for one output pixel ``(i, j)``, by ``C`` backward
    passes per draw instead of the whole Jacobian (the same images and perturbations).

    Each backward pass differentiates a random projection of the sub-pixel's ``n_levels``
    logits: zero exactly where its logits do not depend on an input, almost surely
    non-zero where they do.

    Returns:
        bool tensor ``(C, C, H, W)``: ``[c, c2, i2, j2]`` is True where output sub-pixel
        ``(i, j, c)`` depends on input sub-pixel ``(i2, j2, c2)``.
    """
    i, j = pixel
    support = torch.zeros(channels, channels, height, width, dtype=torch.bool)
    for probe, x in _draws(model, (channels, height, width), n_inputs, perturb, seed):
        x = x[None].requires_grad_(True)
        out = probe(x, labels) if labels is not None else probe(x)
        out = likelihood_of(probe).by_subpixel(out, channels)[0, :, :, i, j]  # (P, C), categorical: (n_levels, C)
        weights = torch.randn(out.shape[0], dtype=out.dtype, generator=torch.Generator().manual_seed(0))
        projected = weights @ out  # (C,)
        for c in range(channels):
            support[c] |= torch.autograd.grad(projected[c], x, retain_graph=c + 1 < channels)[0][0] != 0
    return support


def check_causality(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    *,
    n_inputs: int = N_DRAWS,
    seed: int = 0,
    labels: Tensor | None = None,
    progress: bool = False,
) -> Tensor:
    """Fail loudly if any output depends on a sub-pixel at or after it in the model's
    generation order (:func:`~pixelgen.nn.blocks.generation_order_of`: raster order unless
    the model has its own ``generation_order``).

    Raises:
        CausalityError: naming the first offending output sub-pixel (in generation
            order), the first input sub-pixel it wrongly depends on, and the number of
            violations.

    Returns:
        the measured dependency map ``(C, H, W, C, H, W)`` (see :func:`dependency_map`).
    """
    support = dependency_map(
        model, channels, height, width, n_inputs=n_inputs, seed=seed, labels=labels, progress=progress
    )
    order = generation_order_of(model, channels, height, width)  # (C, H, W)
    per_pixel = likelihood_of(model).per_pixel
    violations = support & ~allowed_dependencies(channels, height, width, order, per_pixel=per_pixel)
    if violations.any():
        pairs = violations.nonzero()  # rows (c, i, j, c2, i2, j2)
        # The first offending pair by the output's, then the input's, generation order.
        out_rank, in_rank = order[tuple(pairs[:, :3].t())], order[tuple(pairs[:, 3:].t())]
        c, i, j, c2, i2, j2 = pairs[(out_rank * order.numel() + in_rank).argmin()].tolist()
        which = f"pixel (row {i}, column {j})" if per_pixel else f"sub-pixel {subpixel_name(c, i, j, channels)}"
        raise CausalityError(
            f"not autoregressive: output {which} depends on "
            f"input sub-pixel {subpixel_name(c2, i2, j2, channels)}, which is not before it "
            f"({len(pairs)} forbidden dependencies in all)"
        )
    return support


def narrow_model(
    name: str, colours: int, hyperparameters: dict[str, Any] | None = None, *, per_group: int = 4
) -> tuple[nn.Module, dict[str, int]]:
    """Registered model ``name`` for ``colours`` colours at its real depth and kernel sizes
    but narrow widths, to check its causal structure cheaply.

    Every width (:meth:`~pixelgen.registry.ModelSpec.widths`) not in ``hyperparameters``
    becomes the smallest multiple ``k * colours``, ``k >= per_group``, that the model
    builds with: ``k`` channels in every colour group. Every other hyperparameter keeps
    its given or declared value.

    Why width cannot change which dependencies exist: every mask and scan acts per colour
    group, connecting group to group by kernel position, so the graph of which (group,
    position) of one layer feeds which of the next is the same at any width with every
    group non-empty. An output depends on an input exactly when a path joins them in
    that graph, through the model's depth and kernel shapes; at random, perturbed weights
    a path contributes a non-zero term unless a unit on it is switched off.

    Why a few channels per group rather than one, and why fresh weights per draw: a ReLU
    unit whose incoming weights keep it off for every input cuts every path through it,
    and with few channels per group all of a group's units can be off at one position
    (with one channel per group a one-channel output head then hides everything). Four
    per group give each path alternatives, and :func:`dependency_map` unites
    :data:`N_DRAWS` draws, each with its own random image and its own random weights (the
    model's, signs flipped at random, plus noise), so that a group switched off in one
    draw is on in another. Measured (at six seeds of the initial weights): the
    narrowed models see exactly the dependencies their declared widths see, for every
    built-in model, C = 1 and 3, at the defaults on ``pixelgen check``'s 6x7 image and at
    two layers on 4x6 (``tests/test_check_narrow.py``); one perturbation for all draws,
    as before, missed up to 475 of them, and fresh noise without the random signs 712.

    Returns:
        ``(model, narrowed)``: the model and ``{width: value}`` of the widths narrowed
        (empty when the model builds with none narrower than declared).
    """
    given = dict(hyperparameters or {})
    declared = get_model_spec(name).defaults()
    free = [w for w in get_model_spec(name).widths() if w not in given]
    for k in range(per_group, 4 * per_group + 1):
        narrowed = {w: k * colours for w in free if k * colours < declared[w]}
        if not narrowed:
            break
        try:
            return create_model(name, **{**given, **narrowed, "in_channels": colours}), narrowed
        except ValueError:  # e.g. fewer channels per stack than colour groups
            continue
    return create_model(name, **{**given, "in_channels": colours}), {}

"""Conformance checks any plugin author can run: is a model exactly autoregressive?

:func:`check_causality` computes the full Jacobian (float64) of every output logit with
respect to every input sub-pixel and fails, naming the first offending pair, if an
output depends on a sub-pixel at or after it in the model's generation order: raster
order (row, column, colour) unless the model's ``generation_order`` says otherwise
(:func:`pixelgen.nn.blocks.generation_order_of`; a multi-scale model generates its
subsampled image first).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn

from pixelgen.errors import CausalityError
from pixelgen.nn.blocks import generation_order_of, n_levels_of, raster_order

COLOUR_NAMES = {1: ("grey",), 3: ("R", "G", "B")}


def subpixel_name(c: int, i: int, j: int, channels: int) -> str:
    """``"(row 2, column 3, G)"`` for sub-pixel ``(c, i, j)`` of a ``channels``-colour image."""
    names = COLOUR_NAMES.get(channels)
    colour = names[c] if names else f"channel {c}"
    return f"(row {i}, column {j}, {colour})"


def allowed_dependencies(channels: int, height: int, width: int, order: Tensor | None = None) -> Tensor:
    """Which input sub-pixels each output sub-pixel may depend on.

    Args:
        channels, height, width: the image shape.
        order: long ``(C, H, W)``, the rank of each sub-pixel in the generation order
            (a model's :func:`~pixelgen.nn.blocks.generation_order_of`); ``None``: raster
            order with R -> G -> B inside a pixel.

    Returns:
        bool tensor ``(C, H, W, C, H, W)``: ``[c, i, j, c2, i2, j2]`` is True exactly when
        sub-pixel ``(i2, j2, c2)`` comes strictly before ``(i, j, c)`` in the order.
    """
    if order is None:
        order = raster_order(channels, height, width)  # (C, H, W) position in the generation order
    return order[..., None, None, None] > order[None, None, None]


def _jacobian_support(model: nn.Module, x: Tensor, labels: Tensor | None, chunk: int = 16) -> Tensor:
    """``(C, H, W, C, H, W)`` bool: non-zero entries of d logits / d x for one image ``x``.

    Forward mode, one Jacobian column per batch element: copy ``k`` of the image carries
    the tangent of sub-pixel ``k``. Batch elements never interact in these models, so a
    batch of ``C * H * W`` copies, ``chunk`` at a time to bound memory, gives the whole
    Jacobian in a few forward passes.
    """
    import torch.autograd.forward_ad as fwAD

    n = x.numel()
    basis = torch.eye(n, dtype=x.dtype).view(n, *x.shape)  # (n, C, H, W)
    columns = []
    try:
        with warnings.catch_warnings():
            # torch's forward-mode decompositions still call the deprecated torch.jit.script
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            for start in range(0, n, chunk):
                tangents = basis[start : start + chunk]
                with fwAD.dual_level():
                    dual = fwAD.make_dual(x.expand_as(tangents).clone(), tangents)
                    out = model(dual, labels.expand(len(tangents))) if labels is not None else model(dual)
                    columns.append(fwAD.unpack_dual(out).tangent != 0)  # (chunk, n_levels, C, H, W)
        support = torch.cat(columns).any(dim=1)  # (n: input sub-pixel, C, H, W: output)
        return support.view(*x.shape, *x.shape).permute(3, 4, 5, 0, 1, 2).contiguous()
    except (RuntimeError, NotImplementedError):
        pass
    # Some operation has no forward-mode rule: one backward pass per output sub-pixel of a
    # random projection of its n_levels logits (zero exactly when the sub-pixel's logits do not
    # depend on the input, almost surely non-zero otherwise).
    x = x.detach()[None].requires_grad_(True)
    out = (model(x, labels) if labels is not None else model(x))[0]  # (n_levels, C, H, W)
    weights = torch.randn(out.shape[0], dtype=out.dtype, generator=torch.Generator().manual_seed(0))
    projected = torch.einsum("v...,v->...", out, weights)  # (C, H, W)
    rows = [torch.autograd.grad(value, x, retain_graph=True)[0][0] != 0 for value in projected.flatten()]
    return torch.stack(rows).view(*projected.shape, *x.shape[1:])


def dependency_map(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    *,
    n_inputs: int = 2,
    perturb: bool = True,
    seed: int = 0,
    labels: Tensor | None = None,
) -> Tensor:
    """Measured dependencies of a model's outputs on its inputs, from Jacobians in float64.

    Args:
        model: maps ``(B, C, H, W)`` images (floats in [0, n_levels - 1] accepted) to
            logits ``(B, n_levels, C, H, W)``.
        channels, height, width: image shape to test.
        n_inputs: random images whose Jacobian supports are united (a ReLU that is off
            for one image can hide a dependency that another image shows).
        perturb: add Gaussian noise to a copy of every parameter first, so that weights
            initialised to zero (biases, initial states) hide no dependency.
        seed: seed of the images and the perturbation.
        labels: ``(1,)`` class label for class-conditional models.

    Returns:
        bool tensor ``(C, H, W, C, H, W)``: ``[c, i, j, c2, i2, j2]`` is True where output
        sub-pixel ``(i, j, c)`` depends on input sub-pixel ``(i2, j2, c2)``.
    """
    generator = torch.Generator().manual_seed(seed)
    probe = _probe(model, perturb, generator)
    support = torch.zeros(channels, height, width, channels, height, width, dtype=torch.bool)
    for _ in range(n_inputs):
        x = torch.rand(channels, height, width, generator=generator, dtype=torch.float64) * (n_levels_of(model) - 1)
        support |= _jacobian_support(probe, x, labels)
    return support


def _probe(model: nn.Module, perturb: bool, generator: torch.Generator) -> nn.Module:
    """A float64 copy of ``model`` in eval mode, its parameters perturbed if asked."""
    probe = copy.deepcopy(model).double().eval()
    if perturb:
        with torch.no_grad():
            for param in probe.parameters():
                param.add_(0.1 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return probe


def pixel_dependencies(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    pixel: tuple[int, int],
    *,
    n_inputs: int = 2,
    perturb: bool = True,
    seed: int = 0,
    labels: Tensor | None = None,
) -> Tensor:
    """``dependency_map(...)[:, i, j]`` for one output pixel ``(i, j)``, by ``C`` backward
    passes per image instead of the whole Jacobian (the same images and perturbation).

    Each backward pass differentiates a random projection of the sub-pixel's ``n_levels``
    logits: zero exactly where its logits do not depend on an input, almost surely
    non-zero where they do.

    Returns:
        bool tensor ``(C, C, H, W)``: ``[c, c2, i2, j2]`` is True where output sub-pixel
        ``(i, j, c)`` depends on input sub-pixel ``(i2, j2, c2)``.
    """
    i, j = pixel
    generator = torch.Generator().manual_seed(seed)
    probe = _probe(model, perturb, generator)
    support = torch.zeros(channels, channels, height, width, dtype=torch.bool)
    for _ in range(n_inputs):
        x = torch.rand(channels, height, width, generator=generator, dtype=torch.float64) * (n_levels_of(model) - 1)
        x = x[None].requires_grad_(True)
        out = (probe(x, labels) if labels is not None else probe(x))[0, :, :, i, j]  # (n_levels, C)
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
    n_inputs: int = 2,
    seed: int = 0,
    labels: Tensor | None = None,
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
    support = dependency_map(model, channels, height, width, n_inputs=n_inputs, seed=seed, labels=labels)
    order = generation_order_of(model, channels, height, width)  # (C, H, W)
    violations = support & ~allowed_dependencies(channels, height, width, order)
    if violations.any():
        pairs = violations.nonzero()  # rows (c, i, j, c2, i2, j2)
        # The first offending pair by the output's, then the input's, generation order.
        out_rank, in_rank = order[tuple(pairs[:, :3].t())], order[tuple(pairs[:, 3:].t())]
        c, i, j, c2, i2, j2 = pairs[(out_rank * order.numel() + in_rank).argmin()].tolist()
        raise CausalityError(
            f"not autoregressive: output sub-pixel {subpixel_name(c, i, j, channels)} depends on "
            f"input sub-pixel {subpixel_name(c2, i2, j2, channels)}, which is not before it "
            f"({len(pairs)} forbidden dependencies in all)"
        )
    return support

"""Negative log-likelihood in nats per image and bits per dimension: defined once, here.

The images are the discrete values as stored (0..255, or 0/1 for a binary model's data),
never re-quantised; the dimensions are the sub-pixels, C * H * W per image, whatever the
number of levels: a two-level model that predicts 1/2 everywhere scores exactly 1 bit/dim.
"""

from __future__ import annotations

import math

from torch import Tensor

from pixelgen.nn.likelihoods import Categorical, Likelihood


def nll_nats(outputs: Tensor, x: Tensor, likelihood: Likelihood | None = None) -> Tensor:
    """Negative log-likelihood of each image in nats: ``-likelihood.log_prob`` summed.

    Args:
        outputs: the model's outputs, laid out as ``likelihood`` says; for the default
            categorical the logits ``(B, n_levels, C, H, W)``.
        x: integer images ``(B, C, H, W)`` with values 0..n_levels-1.
        likelihood: the model's (:func:`pixelgen.nn.blocks.likelihood_of`); ``None``: the
            categorical of ``outputs``' ``n_levels`` logits.

    Returns:
        float tensor ``(B,)``.
    """
    likelihood = likelihood if likelihood is not None else Categorical(outputs.shape[1])
    return -likelihood.log_prob(outputs, x).flatten(1).sum(1)  # (B, C, H, W) -> (B,)


def bits_per_dim(outputs: Tensor, x: Tensor, likelihood: Likelihood | None = None) -> Tensor:
    """Mean negative log2-likelihood per sub-pixel over the batch (a 0-d tensor);
    arguments as :func:`~pixelgen.nn.metrics.nll_nats`'."""
    return nll_nats(outputs, x, likelihood).mean() / (x[0].numel() * math.log(2))


def nats_to_bits_per_dim(nll_nats_per_image: float, dims_per_image: int) -> float:
    """Convert an NLL in nats per image to bits per dimension."""
    return nll_nats_per_image / (dims_per_image * math.log(2))

"""Negative log-likelihood in nats per image and bits per dimension: defined once, here.

The images are the discrete values as stored (0..255, or 0/1 for a binary model's data),
never re-quantised; the dimensions are the sub-pixels, C * H * W per image, whatever the
number of levels: a two-level model that predicts 1/2 everywhere scores exactly 1 bit/dim.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor


def nll_nats(logits: Tensor, x: Tensor) -> Tensor:
    """Negative log-likelihood of each image in nats.

    Args:
        logits: ``(B, n_levels, C, H, W)``.
        x: integer images ``(B, C, H, W)`` with values 0..n_levels-1.

    Returns:
        float tensor ``(B,)``.
    """
    per_subpixel = F.cross_entropy(logits.float(), x.long(), reduction="none")  # (B, C, H, W)
    return per_subpixel.flatten(1).sum(1)


def bits_per_dim(logits: Tensor, x: Tensor) -> Tensor:
    """Mean negative log2-likelihood per sub-pixel over the batch (a 0-d tensor)."""
    return nll_nats(logits, x).mean() / (x[0].numel() * math.log(2))


def nats_to_bits_per_dim(nll_nats_per_image: float, dims_per_image: int) -> float:
    """Convert an NLL in nats per image to bits per dimension."""
    return nll_nats_per_image / (dims_per_image * math.log(2))

"""PixelCNN (Pixel RNN, section 3.5 and table 1).

A 7x7 mask-A convolution, then residual blocks of (section 3.3, figure 5)::

    2h --ReLU, 1x1--> h --ReLU, 3x3 mask B--> h --ReLU--> [1x1 --> 2h, + residual]

then the shared output head. The 3x3 mask B over one pixel's neighbourhood::

    1 1 1
    1 x 0        x: the current pixel, colours R -> G -> B by colour group
    0 0 0

Stacking such masks grows a field that misses pixels above and to the right of the
current one: the PixelCNN *blind spot*. It is a property of the architecture, not a
bug; the causality tests pin its exact shape.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

import pixelgen
from pixelgen.blocks import (
    ConvStep,
    Hyperparameter,
    LayerStep,
    MaskedConv2d,
    ResidualStack,
    stack_hyperparameters,
)


class PixelCNNBlock(nn.Module):
    """ReLU, 1x1 mask B (2h -> h), ReLU, 3x3 mask B (h -> h), ReLU: ``(B, 2h, H, W) -> (B, h, H, W)``."""

    def __init__(self, hidden_channels: int, colours: int, kernel_size: int = 3) -> None:
        super().__init__()
        h = hidden_channels
        self.reduce = MaskedConv2d(2 * h, h, 1, "B", colours)
        self.conv = MaskedConv2d(h, h, kernel_size, "B", colours)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.conv(F.relu(self.reduce(F.relu(x)))))

    def sampling_step(self, n: int, height: int, width: int) -> LayerStep:
        """``forward`` at one pixel: ``(n, 2h)`` at ``(i, j)`` -> ``(n, h)``; the 3x3 conv
        reads the cached outputs of ``reduce`` above and to the left of the pixel."""
        reduce, conv = ConvStep(self.reduce, n, height, width), ConvStep(self.conv, n, height, width)
        return lambda v, i, j: F.relu(conv(F.relu(reduce(F.relu(v), i, j)), i, j))


class PixelCNN(ResidualStack):
    """PixelCNN of table 1: a :class:`~pixelgen.blocks.ResidualStack` of
    :class:`PixelCNNBlock` layers with ``kernel_size`` x ``kernel_size`` mask-B
    convolutions; the other hyperparameters are the stack's (see :data:`SPEC`)."""

    def __init__(self, *, kernel_size: int = 3, **stack: Any) -> None:
        super().__init__(lambda h, colours: PixelCNNBlock(h, colours, kernel_size), **stack)

    def sequential_steps(self, height: int, width: int) -> int:
        """One step: every position of a layer is one convolution, all at once."""
        return 1


SPEC = pixelgen.ModelSpec(
    "pixelcnn",
    PixelCNN,
    "PixelCNN: masked 3x3 residual convolutions (Pixel RNN, 3.5)",
    hyperparameters={
        **stack_hyperparameters(n_layers=15),
        "kernel_size": Hyperparameter(3, "size of each block's mask-B convolution (paper: 3)"),
    },
    paper_bits_per_dim={"cifar10": 3.14},
    receptive_field=(
        "PixelCNN: a field that grows by one pixel per 3x3 layer in each direction but "
        "misses the pixels above and to the right of the current one (the blind spot of "
        "stacked masked convolutions)."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

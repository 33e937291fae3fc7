"""PixelCNN++ (Salimans, Karpathy, Chen and Kingma, ICLR 2017), after openai/pixel-cnn's
``pixel_cnn_pp/model.py``.

Two streams of gated resnet blocks (section 2.4-2.5), both made causal by shifting rather
than masking (:mod:`pixelgen.nn.shifts`): ``u`` sees the rows strictly above a pixel,
``ul`` the rows above and the pixels to its left in its own row. Their fields together
are exactly the pixels before it in raster order, with no blind spot::

    u  (down-shifted 2x3)     ul (down-right-shifted 2x2)     together
      # # # # #                 # # # # #                       # # # # #
      # # # # #                 # # # # #                       # # # # #
      . . x . .                 # # x . .                       # # x

The network is a U-net over three resolutions (section 2.3: downsampling by strided
convolutions, section 2.4: short-cut connections)::

    x (B, C, H, W) -> [-1, 1], a channel of ones   (B, C + 1, H, W)
      -> u: down_shift(2x3 conv);  ul: down_shift(1x3 conv) + right_shift(2x1 conv)
      -> up:   n_resnet blocks, stride-2 conv,  n_resnet blocks, stride-2 conv,  n_resnet
               blocks, every output pushed on a stack           H -> H/2 -> H/4
      -> down: n_resnet blocks, stride-2 deconv, n_resnet + 1 blocks, stride-2 deconv,
               n_resnet + 1 blocks, each taking a pushed map as a shortcut   H/4 -> H
      -> ELU, 1x1 conv -> the likelihood's outputs   (B, n_outputs(C), H, W)

Each gated resnet block (section 2.5; ``a``: the shortcut, ``h``: the class)::

    x -> concat_elu -> conv -> (+ 1x1 conv of concat_elu(a)) -> concat_elu -> dropout
      -> conv to 2F -> (+ class bias) -> split a, b -> a * sigmoid(b) -> + x

The output is a per-pixel likelihood (by default the paper's mixture of 10 discretized
logistics, :class:`~pixelgen.nn.likelihoods.LogisticMixture`): every output of pixel
``(i, j)`` depends on the pixels before it only, none of its own colours.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pixelgen
from pixelgen.blocks import (
    N_LEVELS,
    AutoregressiveModel,
    ClassBias,
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    Hyperparameter,
    Likelihood,
    LogisticMixture,
    concat_elu,
    down_shift,
    right_shift,
    scale_input,
)

N_RESOLUTIONS = 3  # H, H/2, H/4: two downsamplings (section 2.3)


class GatedResnet(nn.Module):
    """A gated resnet block: ``(B, F, H, W)`` (and a shortcut ``(B, a_channels, H, W)``)
    to ``(B, F, H, W)``; ``conv`` is a shifted convolution class, which keeps it causal."""

    def __init__(self, filters: int, conv: Callable[[int, int], nn.Module], a_channels: int,
                 dropout: float, n_classes: int) -> None:
        super().__init__()
        self.conv_in = conv(2 * filters, filters)
        self.shortcut = nn.Conv2d(2 * a_channels, filters, 1) if a_channels else None
        self.dropout = nn.Dropout(dropout)
        self.conv_out = conv(2 * filters, 2 * filters)
        self.class_bias = ClassBias(n_classes, 2 * filters)

    def forward(self, x: Tensor, a: Tensor | None = None, labels: Tensor | None = None) -> Tensor:
        c = self.conv_in(concat_elu(x))  # (B, F, H, W)
        if self.shortcut is not None:
            c = c + self.shortcut(concat_elu(a))
        c = self.conv_out(self.dropout(concat_elu(c))) + self.class_bias(labels)  # (B, 2F, H, W)
        a_half, b_half = c.chunk(2, dim=1)  # (B, F, H, W) each
        return x + a_half * torch.sigmoid(b_half)


def _blocks(filters: int, n: int, a_factor: tuple[int, int], dropout: float, n_classes: int) -> tuple[nn.ModuleList, nn.ModuleList]:
    """``n`` blocks of the ``u`` stream and ``n`` of the ``ul`` stream; their shortcuts
    have ``a_factor * filters`` channels."""
    u = nn.ModuleList(GatedResnet(filters, DownShiftedConv2d, a_factor[0] * filters, dropout, n_classes) for _ in range(n))
    ul = nn.ModuleList(GatedResnet(filters, DownRightShiftedConv2d, a_factor[1] * filters, dropout, n_classes) for _ in range(n))
    return u, ul


class PixelCNNpp(AutoregressiveModel):
    """PixelCNN++ (see the module docstring and :data:`SPEC`'s hyperparameters).

    ``forward(x, labels=None)``: images ``(B, C, H, W)`` -> the likelihood's outputs
    ``(B, n_outputs(C), H, W)`` (any ``H, W >= 1``; three resolutions at any size, the
    coarser ones rounded up). A likelihood that is not per pixel (the categorical, whose
    R -> G -> B order needs colour-group masks) is accepted for one colour only.
    """

    def __init__(self, *, in_channels: int = 3, hidden_channels: int = 160, n_resnet: int = 5,
                 dropout: float = 0.5, n_classes: int = 0, n_levels: int = N_LEVELS,
                 likelihood: Likelihood | None = None) -> None:
        super().__init__()
        likelihood = likelihood if likelihood is not None else LogisticMixture(n_levels, 10)
        if not isinstance(likelihood, Likelihood) or likelihood.n_levels != n_levels:
            raise ValueError(f"likelihood must be a pixelgen Likelihood of {n_levels} levels, got {likelihood!r}")
        if not likelihood.per_pixel and in_channels > 1:
            raise ValueError(f"pixelcnn_pp needs a per-pixel likelihood (such as logistic_mixture) for "
                             f"{in_channels} colours: it has no colour-group masks; got {likelihood.name}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        f = hidden_channels
        self.in_channels, self.n_classes, self.n_levels, self.likelihood = in_channels, n_classes, n_levels, likelihood
        self.n_resnet = n_resnet
        self.u_input = DownShiftedConv2d(in_channels + 1, f, (2, 3))
        self.ul_input_above = DownShiftedConv2d(in_channels + 1, f, (1, 3))
        self.ul_input_left = DownRightShiftedConv2d(in_channels + 1, f, (2, 1))
        blocks = [_blocks(f, n_resnet, (0, 1), dropout, n_classes) for _ in range(N_RESOLUTIONS)]
        self.up_u, self.up_ul = nn.ModuleList(b[0] for b in blocks), nn.ModuleList(b[1] for b in blocks)
        self.down_u_convs = nn.ModuleList(DownShiftedConv2d(f, f, (2, 3), 2) for _ in range(N_RESOLUTIONS - 1))
        self.down_ul_convs = nn.ModuleList(DownRightShiftedConv2d(f, f, (2, 2), 2) for _ in range(N_RESOLUTIONS - 1))
        # Going down, the coarsest resolution takes n_resnet shortcuts, the others n_resnet + 1
        # (the n_resnet block outputs and the map the stride-2 convolution was given).
        blocks = [_blocks(f, n_resnet + (k > 0), (1, 2), dropout, n_classes) for k in range(N_RESOLUTIONS)]
        self.down_u, self.down_ul = nn.ModuleList(b[0] for b in blocks), nn.ModuleList(b[1] for b in blocks)
        self.up_u_convs = nn.ModuleList(DownShiftedConvTranspose2d(f, f, (2, 3), 2) for _ in range(N_RESOLUTIONS - 1))
        self.up_ul_convs = nn.ModuleList(DownRightShiftedConvTranspose2d(f, f, (2, 2), 2) for _ in range(N_RESOLUTIONS - 1))
        self.output = nn.Conv2d(f, likelihood.n_outputs(in_channels), 1)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        if self.n_classes and labels is None:
            raise ValueError("this model is class-conditional: pass labels (B,) with every call")
        x = scale_input(x, self.output.weight, self.n_levels)  # (B, C, H, W) in [-1, 1]
        x = torch.cat([x, torch.ones_like(x[:, :1])], dim=1)  # (B, C + 1, H, W): ones tell image from padding
        u = down_shift(self.u_input(x))  # (B, F, H, W): rows above
        ul = down_shift(self.ul_input_above(x)) + right_shift(self.ul_input_left(x))  # above, and left in the row
        us, uls = self._up(u, ul, labels)
        return self._down(us, uls, labels)  # (B, n_outputs(C), H, W)

    def _up(self, u: Tensor, ul: Tensor, labels: Tensor | None) -> tuple[list[Tensor], list[Tensor]]:
        """Every map of the up pass, in order: the stacks the shortcuts pop from."""
        us, uls = [u], [ul]
        for k in range(N_RESOLUTIONS):
            if k:  # (B, F, h, w) -> (B, F, ceil(h / 2), ceil(w / 2))
                us.append(self.down_u_convs[k - 1](us[-1]))
                uls.append(self.down_ul_convs[k - 1](uls[-1]))
            for u_block, ul_block in zip(self.up_u[k], self.up_ul[k]):
                us.append(u_block(us[-1], None, labels))
                uls.append(ul_block(uls[-1], us[-1], labels))
        return us, uls

    def _down(self, us: list[Tensor], uls: list[Tensor], labels: Tensor | None) -> Tensor:
        u, ul = us.pop(), uls.pop()
        for k in range(N_RESOLUTIONS):
            if k:  # (B, F, h, w) -> (B, F, 2h, 2w) cropped to the shortcut's size
                size = us[-1].shape[-2:]
                u, ul = self.up_u_convs[k - 1](u, size), self.up_ul_convs[k - 1](ul, size)
            for u_block, ul_block in zip(self.down_u[k], self.down_ul[k]):
                u = u_block(u, us.pop(), labels)
                ul = ul_block(ul, torch.cat([u, uls.pop()], dim=1), labels)  # shortcut (B, 2F, h, w)
        raw = self.output(F.elu(ul))  # (B, n_outputs(C), H, W)
        return self.likelihood.arrange(raw, self.in_channels)  # logistic mixture: as is; categorical: (B, V, C, H, W)


SPEC = pixelgen.ModelSpec(
    "pixelcnn_pp",
    PixelCNNpp,
    "PixelCNN++: gated resnet U-net of shifted convolutions, logistic mixture (Salimans et al. 2017)",
    hyperparameters={
        "in_channels": Hyperparameter(3, "colours C of the images (filled in from the data set)"),
        "hidden_channels": Hyperparameter(160, "F, filters of every map and block (paper: nr_filters 160)"),
        "n_resnet": Hyperparameter(5, "gated resnet blocks per resolution in the up pass (paper: nr_resnet 5)"),
        "dropout": Hyperparameter(0.5, "dropout probability inside every gated resnet block, training only (paper: 0.5)"),
        "n_classes": Hyperparameter(0, "> 0: class-conditional, a learned per-class bias in every block"),
        "n_levels": Hyperparameter(N_LEVELS, "values per sub-pixel, 0..n_levels-1 (256 for 8-bit images)"),
        "likelihood": Hyperparameter(
            {"name": "logistic_mixture", "n_mixtures": 10},
            "output distribution, a per-pixel one for C > 1 (paper: a mixture of 10 discretized logistics)"),
    },
    paper_bits_per_dim={"cifar10": 2.92},
    receptive_field=(
        "PixelCNN++: every pixel before the current one in raster order, with no blind spot: "
        "a down-shifted stream sees the rows above, a down-right-shifted one the pixels to the "
        "left in the same row; two downsamplings make the field cover the image within a few blocks."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

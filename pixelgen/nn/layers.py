"""Shared building blocks of every pixelgen model.

One masked convolution (spatial mask A/B and colour groups), one skew/unskew pair, the LSTM
cell update, the class-conditional bias and the output head. Plugins build their models
from these so that each idea lives in one place.

Colour groups (Pixel RNN, section 3.4): the feature maps of every layer are split into C
groups, one per colour, in order R, G, B. Channel ``k`` of an ``n``-channel map belongs to
colour ``k * C // n``. A map made of ``stacks`` concatenated blocks (the four LSTM gates)
is split the same way inside each block, so that the gate split and the colour split line
up: the R part of the input gate drives the R part of the cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from pixelgen.nn.hyperparameters import N_LEVELS  # 0..255; a model's ``n_levels`` may be fewer
from pixelgen.nn.likelihoods import Categorical, Likelihood


def colour_groups(channels: int, colours: int, stacks: int = 1) -> Tensor:
    """Colour index (0..colours-1) of each of ``channels`` channels.

    Args:
        channels: number of channels of the map, a multiple of ``stacks``.
        colours: number of colours C (1 for grey, 3 for RGB).
        stacks: number of concatenated blocks that are each split into colours.

    Returns:
        long tensor ``(channels,)``.
    """
    if channels % stacks:
        raise ValueError(f"{channels} channels do not split into {stacks} equal stacks")
    per_stack = channels // stacks
    if per_stack < colours:
        raise ValueError(
            f"{per_stack} channels per stack cannot hold {colours} colour groups; "
            f"use at least {colours}"
        )
    return (torch.arange(channels) % per_stack) * colours // per_stack


def conv_mask(
    out_channels: int,
    in_channels: int,
    kernel_size: tuple[int, int],
    mask_type: str,
    colours: int,
    out_stacks: int = 1,
    in_stacks: int = 1,
) -> Tensor:
    """The autoregressive mask of a convolution kernel, ``(out, in, kh, kw)`` of 0/1.

    For a 5x5 kernel centred on the current pixel ``x``::

        1 1 1 1 1
        1 1 1 1 1
        1 1 x 0 0
        0 0 0 0 0
        0 0 0 0 0

    Every position above the centre row and left of the centre sees all colours; the
    centre itself connects input colour ``ci`` to output colour ``co`` only if ``ci < co``
    (mask A, first layer: a sub-pixel never sees itself) or ``ci <= co`` (mask B, later
    layers: a feature may use the same colour group, which already excludes the sub-pixel).
    """
    if mask_type not in ("A", "B"):
        raise ValueError(f"mask_type must be 'A' or 'B', got {mask_type!r}")
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"masked convolutions need odd kernel sizes, got {kernel_size}")
    ch, cw = kh // 2, kw // 2
    mask = torch.zeros(out_channels, in_channels, kh, kw)
    mask[:, :, :ch, :] = 1
    mask[:, :, ch, :cw] = 1
    out_colour = colour_groups(out_channels, colours, out_stacks)[:, None]
    in_colour = colour_groups(in_channels, colours, in_stacks)[None, :]
    centre = in_colour < out_colour if mask_type == "A" else in_colour <= out_colour
    mask[:, :, ch, cw] = centre.float()
    return mask


class MaskedConv2d(nn.Conv2d):
    """A convolution that sees only earlier pixels, and earlier colours of this one.

    Args:
        in_channels, out_channels: channel counts; each is split into ``colours`` groups
            (per stack, see :func:`colour_groups`).
        kernel_size: odd ``k`` or ``(kh, kw)``; padded so that the output has the input's
            height and width.
        mask_type: ``"A"`` (first layer) or ``"B"`` (later layers), see :func:`conv_mask`.
        colours: number of colours C of the image.
        out_stacks, in_stacks: blocks that are colour-split separately (4 for LSTM gates).

    Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H, W)``. The mask is a
    buffer multiplied into the weight once per forward call.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        mask_type: str,
        colours: int,
        out_stacks: int = 1,
        in_stacks: int = 1,
        bias: bool = True,
    ) -> None:
        kh, kw = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
        super().__init__(in_channels, out_channels, (kh, kw), padding=(kh // 2, kw // 2), bias=bias)
        self.mask_type = mask_type
        self.colours = colours
        self.register_buffer(
            "mask",
            conv_mask(out_channels, in_channels, (kh, kw), mask_type, colours, out_stacks, in_stacks),
            persistent=False,
        )

    def masked_weight(self) -> Tensor:
        """The weight with the mask applied, ``(out, in, kh, kw)``."""
        return self.weight * self.mask

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.masked_weight(), self.bias, padding=self.padding)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_type={self.mask_type}, colours={self.colours}"


def skew(x: Tensor) -> Tensor:
    """Shift row ``i`` right by ``i``: ``(B, C, H, W) -> (B, C, H, W + H - 1)``.

    Pixel ``(i, j)`` lands in column ``i + j``, so that column ``t`` of the result holds
    the diagonal ``i + j = t`` and a left-to-right scan over columns visits every pixel
    after its left and upper neighbours (Pixel RNN, section 3.2, figure 3)::

        a b c        a b c . .
        d e f   ->   . d e f .
        g h i        . . g h i
    """
    b, c, h, w = x.shape
    x = F.pad(x, (0, h))  # (B, C, H, W+H): each row padded with H zeros
    x = rearrange(x, "b c h w -> b c (h w)")[..., : h * (w + h - 1)]  # drop the last H
    return rearrange(x, "b c (h w) -> b c h w", h=h)  # (B, C, H, W+H-1)


def unskew(x: Tensor, width: int) -> Tensor:
    """Inverse of :func:`skew`: ``(B, C, H, width + H - 1) -> (B, C, H, width)``."""
    b, c, h, skewed_width = x.shape
    if skewed_width != width + h - 1:
        raise ValueError(f"skewed width {skewed_width} does not match width {width} and height {h}")
    x = rearrange(x, "b c h w -> b c (h w)")
    x = F.pad(x, (0, h))  # (B, C, H*(W+H))
    return rearrange(x, "b c (h w) -> b c h w", h=h)[..., :width]  # (B, C, H, W)


def diagonal_order(height: int, width: int, device: torch.device | None = None) -> tuple[Tensor, list[int]]:
    """The pixels in the order a left-to-right scan of the skewed map visits them.

    Column ``t`` of :func:`skew`'s output holds the diagonal ``i + j = t``; listing each
    column's real pixels top to bottom (the skew's zero padding dropped) gives this order.

    Returns:
        ``(order, sizes)``: ``order`` ``(H * W,)`` long, the flat index ``i * W + j`` of
        each pixel in scan order; ``sizes[t]`` the number of pixels on diagonal ``t``
        (rows ``max(0, t - W + 1) .. min(H - 1, t)``).
    """
    order, sizes = [], []
    for t in range(height + width - 1):
        first, last = max(0, t - width + 1), min(height - 1, t)
        order.extend(i * width + (t - i) for i in range(first, last + 1))
        sizes.append(last - first + 1)
    return torch.tensor(order, device=device), sizes


def lstm_update(gates: Tensor, cell: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step from pre-activations (Pixel RNN, equation 3).

    Args:
        gates: ``(B, 4h, ...)``, the stacks in order input, forget, output, content.
        cell: previous cell state ``(B, h, ...)``.

    Returns:
        ``(hidden, cell)``, each ``(B, h, ...)``. The content ``g`` uses tanh, the gates
        sigmoid.
    """
    i, f, o, g = gates.chunk(4, dim=1)
    cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
    hidden = torch.sigmoid(o) * torch.tanh(cell)
    return hidden, cell


def lstm_update_(gates: Tensor, cell_prev: Tensor, cell: Tensor, hidden: Tensor) -> None:
    """:func:`lstm_update` in place for one position of ``n`` images, channels first: few
    operations, as fast sampling takes one such step per pixel and layer.

    Args:
        gates: ``(4h, n)`` contiguous pre-activations (input, forget, output, content);
            overwritten with the activations.
        cell_prev: ``(h, n)`` previous cell state.
        cell, hidden: ``(h, n)``, written (views into a cache, typically).
    """
    h = gates.shape[0] // 4
    gates[: 3 * h].sigmoid_()
    i, f, o, g = gates.view(4, h, -1).unbind(0)  # (h, n) each
    g.tanh_()
    torch.mul(f, cell_prev, out=cell).addcmul_(i, g)
    torch.tanh(cell, out=hidden).mul_(o)


def torch_lstm(w_input: Tensor, w_hidden: Tensor, bias: Tensor) -> nn.LSTM:
    """A one-layer :class:`torch.nn.LSTM` holding these weights (a snapshot), so that a whole
    sequence of steps is one call into torch's own LSTM rather than a step per call.

    Args:
        w_input: ``(4h, in)`` input-to-state weight, w_hidden ``(4h, h)`` state-to-state
            weight, bias ``(4h,)``, the gates in pixelgen's order (input, forget, output,
            content: :func:`lstm_update`); torch's order (input, forget, content, output) is
            taken care of here.

    Returns:
        the module: ``(L, n, in)`` and ``(h0, c0)`` ``(1, n, h)`` each -> ``(L, n, h)``
        hidden states and the last state.
    """
    h = w_hidden.shape[1]
    order = torch.cat([torch.arange(2 * h), torch.arange(3 * h, 4 * h), torch.arange(2 * h, 3 * h)])
    # built on the meta device: no random initialisation, so sampling leaves the global generator alone
    lstm = nn.LSTM(w_input.shape[1], h, dtype=w_input.dtype, device="meta").to_empty(device=w_input.device)
    with torch.no_grad():
        for name, value in (("weight_ih_l0", w_input), ("weight_hh_l0", w_hidden), ("bias_ih_l0", bias)):
            getattr(lstm, name).copy_(value[order.to(value.device)])
        lstm.bias_hh_l0.zero_()
    return lstm.requires_grad_(False)


class ClassBias(nn.Module):
    """A learned per-class bias added to a layer (conditional PixelCNN, van den Oord 2016).

    ``n_classes = 0`` makes it a no-op. Called with labels ``(B,)`` it returns
    ``(B, channels, 1, 1)``; with ``None`` it returns 0.
    """

    def __init__(self, n_classes: int, channels: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.embedding = nn.Embedding(n_classes, channels) if n_classes > 0 else None
        if self.embedding is not None:
            nn.init.zeros_(self.embedding.weight)

    def forward(self, labels: Tensor | None) -> Tensor | float:
        if self.embedding is None:
            return 0.0
        if labels is None:
            raise ValueError("this model is class-conditional: pass labels (B,) with every call")
        return self.embedding(labels)[:, :, None, None]  # (B, channels, 1, 1)


class OutputHead(nn.Module):
    """ReLU, 1x1 mask-B conv, ReLU, 1x1 mask-B conv to the outputs of a likelihood.

    By default an ``n_levels``-way softmax per colour (:class:`~pixelgen.nn.likelihoods.Categorical`):
    ``n_levels`` is 256 for 8-bit images; 2 gives the paper's binary output for binarized
    MNIST (Pixel RNN, section 4: a sigmoid, here the equivalent two-way softmax). Input
    ``(B, in_channels, H, W)``; output ``likelihood.arrange`` of ``(B, n_outputs(C), H, W)``,
    for the categorical the logits ``(B, n_levels, C, H, W)``. The masks have the
    likelihood's colour groups (:meth:`~pixelgen.nn.likelihoods.Likelihood.mask_colours`).
    """

    def __init__(self, in_channels: int, head_channels: int, colours: int, n_levels: int = N_LEVELS,
                 likelihood: Likelihood | None = None) -> None:
        super().__init__()
        self.colours = colours
        self.likelihood = likelihood if likelihood is not None else Categorical(n_levels)
        self.n_levels = self.likelihood.n_levels
        groups = self.likelihood.mask_colours(colours)
        self.hidden = MaskedConv2d(in_channels, head_channels, 1, "B", groups)
        self.logits = MaskedConv2d(head_channels, self.likelihood.n_outputs(colours), 1, "B", groups)

    def forward(self, x: Tensor) -> Tensor:
        x = self.logits(F.relu(self.hidden(F.relu(x))))  # (B, n_outputs(C), H, W)
        return self.likelihood.arrange(x, self.colours)  # categorical: (B, n_levels, C, H, W)


def scale_input(x: Tensor, like: Tensor, n_levels: int = N_LEVELS) -> Tensor:
    """Map sub-pixel values 0..n_levels-1 to [-1, 1] in ``like``'s dtype (0..255 by default,
    0/1 for a binary model).

    ``x`` may be an integer tensor (the usual case) or a float tensor of values in
    [0, n_levels - 1], which lets :func:`pixelgen.registry.causality.check_causality` differentiate
    through it.
    """
    dtype = x.dtype if x.is_floating_point() else like.dtype
    return x.to(dtype) / ((n_levels - 1) / 2) - 1.0  # 256 levels: / 127.5, as always

"""Gated PixelCNN (van den Oord et al. 2016, "Conditional Image Generation with PixelCNN
Decoders": section 2.1 gated convolutional layers, 2.2 the blind spot and the two stacks
that remove it, 2.3 conditioning; figure 2 is one layer).

Each layer runs two stacks side by side. The *vertical* stack sees the rows above the
current pixel, the *horizontal* stack the current row up to the pixel. One layer with
kernel ``k = 5`` (``r = k // 2 = 2``) at output position ``(i, j)``::

    vertical: (r+1) x k conv over a          horizontal: 1 x k masked conv
    top-padded input (no mask needed)        (mask A in the first layer, B after)

        row i-2:  1 1 1 1 1
        row i-1:  1 1 1 1 1
        row i  :  1 1 1 1 1                      1 1 x 0 0     (row i)

                                             x: colours R -> G -> B by colour group

The vertical features of row ``i`` see all of row ``i``, the current pixel included; they
are harmless only because the horizontal stack reads them *one row down* (row ``i`` gets
the vertical features of row ``i - 1``) through a 1x1 convolution, and nothing flows back
from the horizontal stack into the vertical one. After ``L`` layers the field of output
pixel ``x`` is, with ``R = L * r`` (here ``L = 2``, ``k = 3``, so ``R = 2``)::

    v v v v v        rows i-1-R .. i-1, columns j-R .. j+R: the vertical stack
    v v v v v
    v v v v v
    h h x            row i, columns j-R .. j-1 (and the earlier colours of x): horizontal

a full rectangle: no blind spot, unlike stacked 3x3 mask-B convolutions (Pixel RNN's
PixelCNN), whose field misses a triangle above and to the right. Every layer computes the
gated unit ``tanh(W_f * x) * sigmoid(W_g * x)`` (equation 2) from one convolution to
``2p`` channels split in halves f, g; a class-conditional model adds a learned class bias
to both halves of both stacks (equation 4). The horizontal stack is residual; the
vertical one is not (section 2.2). The last horizontal features feed pixelgen's shared
output head: a 256-way softmax per colour.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pixelgen
from pixelgen.layers import ClassBias, MaskedConv2d, OutputHead, scale_input
from pixelgen.model import AutoregressiveModel


def gate(pre_activation: Tensor) -> Tensor:
    """The gated unit of equation 2: ``(B, 2p, H, W) -> (B, p, H, W)``.

    The first ``p`` channels are the tanh (content) half f, the last ``p`` the sigmoid
    (gate) half g; masked convolutions feeding this use ``out_stacks=2`` so that channel
    ``k`` of f and channel ``k`` of g belong to the same colour group.
    """
    f, g = pre_activation.chunk(2, dim=1)  # (B, p, H, W) each
    return torch.tanh(f) * torch.sigmoid(g)


def shift_down(x: Tensor) -> Tensor:
    """Row ``i`` of the result is row ``i - 1`` of ``x``, row 0 is zeros: ``(B, ch, H, W)``."""
    return F.pad(x, (0, 0, 1, 0))[:, :, :-1]  # (B, ch, H+1, W) -> (B, ch, H, W)


class VerticalConv(nn.Module):
    """A ``(k//2 + 1) x k`` convolution whose output row ``i`` sees input rows ``i - k//2 .. i``.

    Causal by its shape and padding (``k//2`` rows on top, none below), so it needs no
    mask. Input ``(B, in_channels, H, W)``; output ``(B, out_channels, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.reach = kernel_size // 2
        self.conv = nn.Conv2d(in_channels, out_channels, (self.reach + 1, kernel_size))

    def forward(self, x: Tensor) -> Tensor:
        r = self.reach
        return self.conv(F.pad(x, (r, r, r, 0)))  # (B, in, H+r, W+2r) -> (B, out, H, W)


class GatedLayer(nn.Module):
    """One layer of figure 2: ``(v, h) -> (v', h')``, each stack ``(B, p, H, W)``.

    Args:
        in_channels: channels of both stacks' inputs (C for the first layer, else p).
        hidden_channels: p, the features of each stack.
        kernel_size: odd k of the ``(k//2+1) x k`` vertical and ``1 x k`` horizontal convs.
        colours: colours C of the image, for the horizontal stack's colour groups.
        n_classes: > 0 adds a learned class bias to both stacks.
        first: the first layer reads the image: mask A and no residual connection (a
            residual would pass each sub-pixel straight to its own logits).
    """

    def __init__(
        self, in_channels: int, hidden_channels: int, kernel_size: int, colours: int, n_classes: int, first: bool
    ) -> None:
        super().__init__()
        p = hidden_channels
        self.first = first
        self.vertical = VerticalConv(in_channels, 2 * p, kernel_size)
        self.horizontal = MaskedConv2d(
            in_channels, 2 * p, (1, kernel_size), "A" if first else "B", colours, out_stacks=2
        )
        # The vertical features come from rows strictly above once shifted down: every
        # colour group of the horizontal stack may see all of them, so no mask.
        self.vertical_to_horizontal = nn.Conv2d(2 * p, 2 * p, 1)
        self.horizontal_out = MaskedConv2d(p, p, 1, "B", colours)
        self.vertical_bias = ClassBias(n_classes, 2 * p)
        self.horizontal_bias = ClassBias(n_classes, 2 * p)

    def forward(self, v: Tensor, h: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        v_pre = self.vertical(v)  # (B, 2p, H, W); row i sees rows <= i, its own included
        link = self.vertical_to_horizontal(shift_down(v_pre))  # (B, 2p, H, W); rows < i only
        h_pre = self.horizontal(h) + link  # (B, 2p, H, W)
        v_out = gate(v_pre + self.vertical_bias(labels))  # (B, p, H, W)
        h_out = self.horizontal_out(gate(h_pre + self.horizontal_bias(labels)))  # (B, p, H, W)
        return v_out, (h_out if self.first else h + h_out)


class GatedPixelCNN(AutoregressiveModel):
    """Gated PixelCNN: ``n_layers`` gated layers of two stacks, then the shared output head.

    Every output sees ``R = n_layers * (kernel_size // 2)`` pixels to its left, and the
    rows up to ``R + 1`` above it, ``R`` pixels either side: an ``H x W`` image is seen whole
    when ``R >= max(W - 1, H - 2)``.

    Args:
        in_channels: colours C (3 for CIFAR-10, 1 for grey).
        hidden_channels: p, features of each stack (the paper's CIFAR-10 model: 384).
        n_layers: gated layers, the first with mask A (paper, CIFAR-10: 20). The default
            16 is the fewest with 5x5 kernels (R = 32) that see the whole of a 32x32 image.
        kernel_size: odd k (paper: 5).
        head_channels: width of the output head (Pixel RNN: 1024).
        n_classes: > 0 makes the model class-conditional: pass ``labels`` ``(B,)``.

    ``model(x, labels=None)``: ``x`` ``(B, C, H, W)``, integers 0..255 or floats in
    [0, 255] -> logits ``(B, 256, C, H, W)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        hidden_channels: int = 128,
        n_layers: int = 16,
        kernel_size: int = 5,
        head_channels: int = 1024,
        n_classes: int = 0,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if n_layers < 1:
            raise ValueError(f"n_layers must be at least 1 (the first layer reads the image), got {n_layers}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            # An even kernel has no centre column: the horizontal stack would reach right.
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        c, p = in_channels, hidden_channels
        self.in_channels = c
        self.hidden_channels = p
        self.n_layers = n_layers
        self.kernel_size = kernel_size
        self.n_classes = n_classes
        self.layers = nn.ModuleList(
            GatedLayer(c if i == 0 else p, p, kernel_size, c, n_classes, first=i == 0) for i in range(n_layers)
        )
        self.head = OutputHead(p, head_channels, c)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        v = h = scale_input(x, self.head.hidden.weight)  # (B, C, H, W) in [-1, 1]
        for layer in self.layers:
            v, h = layer(v, h, labels)  # (B, p, H, W) each
        return self.head(h)  # (B, 256, C, H, W)


@pixelgen.hookimpl
def pixelgen_models():
    return [
        pixelgen.ModelSpec(
            "gated_pixelcnn",
            GatedPixelCNN,
            "Gated PixelCNN: vertical and horizontal gated stacks, no blind spot (van den Oord 2016)",
        )
    ]

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

Fast sampling (Ramachandran et al. 2017): :class:`GatedSamplingState` evaluates only what
pixel ``(i, j)`` needs. Row ``i`` reads the vertical stack of rows ``< i`` alone, so the
vertical stack runs once per row, for the whole row, when the row above is complete; the
horizontal stack runs at one position from a cache of the current row's earlier inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pixelgen
from pixelgen.blocks import (
    AutoregressiveModel,
    ClassBias,
    ConvStep,
    Hyperparameter,
    MaskedConv2d,
    OutputHead,
    SamplingState,
    scale_input,
)


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

    def sampling_state(self, n: int, height: int, width: int, labels: Tensor | None = None) -> SamplingState:
        """An exact, cached state: see :class:`GatedSamplingState`."""
        return GatedSamplingState(self, n, height, width, labels)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        v = h = scale_input(x, self.head.hidden.weight)  # (B, C, H, W) in [-1, 1]
        for layer in self.layers:
            v, h = layer(v, h, labels)  # (B, p, H, W) each
        return self.head(h)  # (B, 256, C, H, W)


def at_one_pixel(bias: Tensor | float) -> Tensor | float:
    """A :class:`ClassBias` value ``(n, ch, 1, 1)`` (or 0.0) as ``(n, ch)`` for one pixel."""
    return bias if isinstance(bias, float) else bias[:, :, 0, 0]


class GatedSamplingState(SamplingState):
    """Fast, exact sampling state of a :class:`GatedPixelCNN` (see pixelgen.sampling).

    Vertical stack, once per row: when row ``i`` is first asked for, image row ``i - 1``
    is final, and each layer's ``(r+1) x k`` convolution is run over the ``r + 1`` cached
    rows of its input ending at ``i - 1``, giving the links row ``i`` reads and the next
    layer's input row. Horizontal stack, once per call: each layer's ``1 x k`` masked
    convolution at ``(i, j)`` reads the cached inputs at ``j - r .. j`` (:class:`ConvStep`).
    Hidden features of pixel ``(i, j)`` never depend on its last colour (mask A), so those
    cached by the call for that colour are final; the image itself is cached for the first
    layer again one pixel later, once the last colour is drawn.
    """

    def __init__(self, model: GatedPixelCNN, n: int, height: int, width: int, labels: Tensor | None) -> None:
        self.model = model
        self.like = model.head.hidden.weight  # dtype and device of the caches
        self.reach = r = model.kernel_size // 2
        self.rows_done = 0  # image rows whose vertical features are cached
        # Vertical inputs of every layer, padded as VerticalConv pads them: (n, in, H + r, W + 2r)
        self.vertical_inputs = [
            self.like.new_zeros(n, layer.vertical.conv.in_channels, height + r, width + 2 * r)
            for layer in model.layers
        ]
        # Links of the current row (n, 2p, 1, W); row 0 reads only the shifted-in zero row.
        self.links = [
            layer.vertical_to_horizontal(self.like.new_zeros(n, 2 * model.hidden_channels, 1, width))
            for layer in model.layers
        ]
        self.vertical_biases = [layer.vertical_bias(labels) for layer in model.layers]  # (n, 2p, 1, 1) or 0
        self.horizontal_biases = [at_one_pixel(layer.horizontal_bias(labels)) for layer in model.layers]
        self.horizontals = [ConvStep(layer.horizontal, n, height, width) for layer in model.layers]
        self.horizontal_outs = [ConvStep(layer.horizontal_out, n, height, width) for layer in model.layers]
        self.head_hidden = ConvStep(model.head.hidden, n, height, width)
        self.head_logits = ConvStep(model.head.logits, n, height, width)

    def complete_row(self, x: Tensor, row: int) -> None:
        """Image row ``row`` is final: run the vertical stack on it and cache the links of row ``row + 1``."""
        r, width = self.reach, x.shape[-1]
        v = scale_input(x[:, :, row], self.like)  # (n, C, W)
        for k, layer in enumerate(self.model.layers):
            padded = self.vertical_inputs[k]
            padded[:, :, row + r, r : r + width] = v  # padded row row + r holds image row `row`
            v_pre = layer.vertical.conv(padded[:, :, row : row + r + 1])  # (n, in, r+1, W+2r) -> (n, 2p, 1, W)
            self.links[k] = layer.vertical_to_horizontal(v_pre)  # (n, 2p, 1, W), read by row `row + 1`
            v = gate(v_pre + self.vertical_biases[k])[:, :, 0]  # (n, p, W)

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        while self.rows_done < i:
            self.complete_row(x, self.rows_done)
            self.rows_done += 1
        if j:  # the loop fills a pixel's last colour after its last call: cache it now
            self.horizontals[0].write(scale_input(x[:, :, i, j - 1], self.like), i, j - 1)
        h = scale_input(x[:, :, i, j], self.like)  # (n, C)
        for k, layer in enumerate(self.model.layers):
            h_pre = self.horizontals[k](h, i, j) + self.links[k][:, :, 0, j]  # (n, 2p)
            h_out = self.horizontal_outs[k](gate(h_pre + self.horizontal_biases[k]), i, j)  # (n, p)
            h = h_out if layer.first else h + h_out
        out = self.head_logits(F.relu(self.head_hidden(F.relu(h), i, j)), i, j)  # (n, C*256), colour-major
        return out.view(len(out), self.model.in_channels, -1).transpose(1, 2)  # (n, 256, C)


SPEC = pixelgen.ModelSpec(
    "gated_pixelcnn",
    GatedPixelCNN,
    "Gated PixelCNN: vertical and horizontal gated stacks, no blind spot (van den Oord 2016)",
    hyperparameters={
        "in_channels": Hyperparameter(3, "colours C of the images (filled in from the data set)"),
        "hidden_channels": Hyperparameter(128, "p, features of each stack"),
        "n_layers": Hyperparameter(16, "gated layers (16 reach a whole 32x32 image with 5x5 kernels)"),
        "kernel_size": Hyperparameter(5, "odd size of the vertical and horizontal kernels"),
        "head_channels": Hyperparameter(1024, "width of the output head"),
        "n_classes": Hyperparameter(0, "> 0: class-conditional"),
    },
    receptive_field=(
        "Gated PixelCNN: every pixel above and to the left within its kernel's reach per "
        "layer, with no blind spot (the vertical stack feeds the horizontal one)."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

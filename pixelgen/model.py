"""The layout every PixelRNN-family model shares (Pixel RNN, table 1).

::

    x (B, C, H, W) ints 0..255
      -> scale to [-1, 1]
      -> 7x7 conv, mask A                         (B, 2h, H, W)
      -> n_layers x [ layer: 2h -> h features      e.g. a Row LSTM, a Diagonal BiLSTM,
                      1x1 conv, mask B: h -> 2h         or PixelCNN's 1x1 / 3x3 / 1x1 block
                      + residual connection, + class bias ]
      -> (sum of learnable 1x1 skip connections, optional)
      -> ReLU, 1x1 conv mask B, ReLU, 1x1 conv mask B -> logits (B, 256, C, H, W)

A plugin subclasses :class:`ResidualStack` and says only what one layer computes
(:meth:`ResidualStack.make_layer`). Every map is split into colour groups (see
:mod:`pixelgen.layers`), so output colour R never sees G or B of its own pixel.
"""

from __future__ import annotations

from torch import Tensor, nn

from pixelgen.layers import ClassBias, MaskedConv2d, OutputHead, scale_input


class AutoregressiveModel(nn.Module):
    """Base class of pixelgen models.

    Contract: ``model(x, labels=None)`` maps images ``x`` ``(B, C, H, W)`` (integers
    0..255, or floats in [0, 255] for differentiation) to logits ``(B, 256, C, H, W)``
    such that ``F.cross_entropy(logits, x)`` is the per-sub-pixel NLL, and logits of
    sub-pixel ``(i, j, c)`` depend only on sub-pixels before it in the order
    (row, column, colour). ``labels`` ``(B,)`` are required when ``n_classes > 0``.
    """

    in_channels: int
    n_classes: int

    def sequential_steps(self, height: int, width: int) -> int:
        """Steps one layer must take one after another on an ``height x width`` image.

        The measure of parallelism the paper compares (section 3): 1 when every position
        of a layer is computed at once, as in a convolution. Models with a recurrence
        override it with the length of their scan.
        """
        return 1


class ResidualStack(AutoregressiveModel):
    """The shared skeleton: mask-A input conv, residual layers, skip connections, head.

    Args:
        in_channels: colours C of the images (1 or 3).
        hidden_channels: h; the residual stream has 2h channels.
        n_layers: number of residual layers after the input convolution.
        head_channels: width of the output head (paper: 1024).
        n_classes: > 0 adds a learned per-class bias to every layer.
        residual: add each layer's output to its input (paper: yes).
        skip: feed the sum of learnable 1x1 projections of every layer's output to the
            head instead of the last layer's output alone.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int,
        n_layers: int,
        head_channels: int,
        n_classes: int,
        residual: bool,
        skip: bool,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if n_layers < 0:
            raise ValueError(f"n_layers must be non-negative, got {n_layers}")
        c, h = in_channels, hidden_channels
        self.in_channels = c
        self.hidden_channels = h
        self.n_layers = n_layers
        self.n_classes = n_classes
        self.residual = residual
        self.skip = skip
        self.input_conv = MaskedConv2d(c, 2 * h, 7, "A", c)
        self.input_bias = ClassBias(n_classes, 2 * h)
        self.layers = nn.ModuleList(self.make_layer() for _ in range(n_layers))
        self.out_convs = nn.ModuleList(MaskedConv2d(h, 2 * h, 1, "B", c) for _ in range(n_layers))
        self.layer_biases = nn.ModuleList(ClassBias(n_classes, 2 * h) for _ in range(n_layers))
        self.skip_convs = nn.ModuleList(
            MaskedConv2d(2 * h, 2 * h, 1, "B", c) for _ in range(n_layers if skip else 0)
        )
        self.head = OutputHead(2 * h, head_channels, c)

    def make_layer(self) -> nn.Module:
        """One layer mapping the residual stream ``(B, 2h, H, W)`` to ``(B, h, H, W)``."""
        raise NotImplementedError

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        stream = self.input_conv(scale_input(x, self.input_conv.weight))  # (B, 2h, H, W)
        stream = stream + self.input_bias(labels)
        skips = 0.0
        for layer, out_conv, bias, i in zip(self.layers, self.out_convs, self.layer_biases, range(self.n_layers)):
            update = out_conv(layer(stream))  # (B, h, H, W) -> (B, 2h, H, W)
            stream = (stream + update if self.residual else update) + bias(labels)
            if self.skip:
                skips = skips + self.skip_convs[i](stream)
        return self.head(skips if self.skip and self.n_layers else stream)  # (B, 256, C, H, W)

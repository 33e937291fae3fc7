"""The building blocks of pixelgen models: the public API for plugin authors.

Everything a model plugin needs comes from this one module, imported under its public name
:mod:`pixelgen.blocks` (it imports torch and einops, nothing of pixelgen's pipeline)::

    from pixelgen.blocks import MaskedConv2d, ResidualStack, stack_hyperparameters

The layout every PixelRNN-family model shares (Pixel RNN, section 3.3 and table 1)::

    x (B, C, H, W) ints 0..n_levels-1 (0..255; 0/1 for binary data)
      -> scale to [-1, 1]
      -> 7x7 conv, mask A                         (B, 2h, H, W)
      -> n_layers x [ layer: 2h -> h features      e.g. a Row LSTM, a Diagonal BiLSTM,
                      1x1 conv, mask B: h -> 2h         or PixelCNN's 1x1 / 3x3 / 1x1 block
                      + residual connection, + class bias ]
      -> (sum of learnable 1x1 skip connections, optional)
      -> ReLU, 1x1 conv mask B, ReLU, 1x1 conv mask B -> the likelihood's outputs: by
                                                    default logits (B, n_levels, C, H, W)

A plugin builds a :class:`ResidualStack` with its own layer factory, a callable
``make_layer(hidden_channels, colours) -> nn.Module`` that says what one layer computes.
Every map is split into colour groups (see :func:`colour_groups`), so output colour R
never sees G or B of its own pixel; with a per-pixel likelihood (a
:class:`~pixelgen.nn.likelihoods.Likelihood` such as the logistic mixture) there is one
group, and no feature of a pixel sees any of its colours.

Sampling (Pixel RNN, section 2): :func:`pixelgen.sample` asks a model for a
:class:`SamplingState` and calls its ``logits(x, i, j)`` once per sub-pixel (once per
pixel for a per-pixel likelihood) in the model's generation order (raster order unless
the model's ``generation_order`` says otherwise, as a multi-scale model's does; see
:func:`generation_order_of`).
:class:`ReferenceState` works for any model (a full forward pass per call);
:class:`ResidualStackState` is the fast, exact one (Ramachandran et al. 2017): everything
but the layers is 1x1, or the 7x7 input convolution, evaluated at one position from a
cache of its input (:class:`ConvStep`); a layer that is a :class:`SteppableLayer` (has
``sampling_step(n, height, width)``) supplies its own one-pixel step, and a stack with
any layer lacking one samples with the reference state.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelgen.nn.hyperparameters import Hyperparameter, stack_hyperparameters
from pixelgen.nn.likelihoods import Categorical, Likelihood, LogisticMixture
from pixelgen.nn.layers import (
    N_LEVELS,
    ClassBias,
    MaskedConv2d,
    OutputHead,
    colour_groups,
    conv_mask,
    diagonal_order,
    lstm_update,
    lstm_update_,
    scale_input,
    skew,
    torch_lstm,
    unskew,
)
from pixelgen.nn.scans import diagonal_bilstm_scan, row_lstm_scan
from pixelgen.nn.shifts import (
    DownRightShiftedConv2d,
    DownRightShiftedConvTranspose2d,
    DownShiftedConv2d,
    DownShiftedConvTranspose2d,
    concat_elu,
    down_shift,
    right_shift,
)

__all__ = [
    "N_LEVELS",
    "AutoregressiveModel",
    "Categorical",
    "ClassBias",
    "ConvStep",
    "DownRightShiftedConv2d",
    "DownRightShiftedConvTranspose2d",
    "DownShiftedConv2d",
    "DownShiftedConvTranspose2d",
    "Hyperparameter",
    "LayerStep",
    "Likelihood",
    "LogisticMixture",
    "MaskedConv2d",
    "OutputHead",
    "ReferenceState",
    "ResidualStack",
    "ResidualStackState",
    "SamplingState",
    "SteppableLayer",
    "call_model",
    "colour_groups",
    "concat_elu",
    "conv_mask",
    "diagonal_bilstm_scan",
    "diagonal_order",
    "down_shift",
    "generation_order_of",
    "likelihood_of",
    "lstm_update",
    "lstm_update_",
    "n_classes_of",
    "row_lstm_scan",
    "n_levels_of",
    "raster_order",
    "right_shift",
    "scale_input",
    "skew",
    "stack_hyperparameters",
    "torch_lstm",
    "unskew",
]

LayerStep = Callable[[Tensor, int, int], Tensor]  # (input at (i, j) (n, 2h), i, j) -> (n, h)


def n_classes_of(model: nn.Module) -> int:
    """The number of classes a model is conditioned on (0: unconditional)."""
    return int(getattr(model, "n_classes", 0) or 0)


def n_levels_of(model: nn.Module) -> int:
    """The number of values a model predicts per sub-pixel (256 unless it says otherwise)."""
    return int(getattr(model, "n_levels", N_LEVELS) or N_LEVELS)


def likelihood_of(model: nn.Module) -> Likelihood:
    """The model's :class:`~pixelgen.nn.likelihoods.Likelihood`: its ``likelihood``, or for a
    model without one (written before likelihoods were plugins) the ``n_levels``-way
    categorical its logits ``(B, n_levels, C, H, W)`` define."""
    likelihood = getattr(model, "likelihood", None)
    return likelihood if isinstance(likelihood, Likelihood) else Categorical(n_levels_of(model))


def raster_order(channels: int, height: int, width: int) -> Tensor:
    """Rank of every sub-pixel in raster order: rows top to bottom, pixels left to right,
    R -> G -> B inside a pixel. Long ``(C, H, W)``, a permutation of ``0 .. C*H*W - 1``."""
    c, i, j = torch.meshgrid(torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij")
    return (i * width + j) * channels + c  # (C, H, W)


def generation_order_of(model: nn.Module, channels: int, height: int, width: int) -> Tensor:
    """The order ``model`` generates a ``channels x height x width`` image in: its own
    ``generation_order(channels, height, width)`` where it has one, else
    :func:`raster_order`. Long ``(C, H, W)``: the rank of each sub-pixel, checked to be a
    permutation of ``0 .. C*H*W - 1``."""
    method = getattr(model, "generation_order", None)
    if method is None:
        return raster_order(channels, height, width)
    order = torch.as_tensor(method(channels, height, width))
    size = channels * height * width
    if order.shape != (channels, height, width) or not torch.equal(order.flatten().sort().values, torch.arange(size)):
        raise ValueError(
            f"{type(model).__name__}.generation_order({channels}, {height}, {width}) must rank every "
            f"sub-pixel once: a ({channels}, {height}, {width}) permutation of 0..{size - 1}"
        )
    return order


def call_model(model: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """``model(x)``, or ``model(x, labels)`` for a class-conditional model."""
    return model(x) if labels is None else model(x, labels)


@runtime_checkable
class SamplingState(Protocol):
    """What a model computes, incrementally, while one batch of images is generated.

    The sampling loop visits every pixel once in the model's generation order (raster
    order unless the model says otherwise: :func:`generation_order_of`) and, for a pixel it
    generates, calls :meth:`logits` once per colour, R first; for a pixel that is given
    (completion) it calls :meth:`observe` once. A state may therefore cache whatever
    earlier pixels computed. Calls for the same pixel must be idempotent: a later call
    sees more colours of that pixel filled in and overwrites what an earlier one cached.
    """

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        """The likelihood's outputs at pixel ``(i, j)``, ``outputs[..., i, j]``: for the
        categorical the logits ``(n, n_levels, C)``.

        Args:
            x: images ``(n, C, H, W)`` (uint8) holding every sub-pixel before ``(i, j, c)``
                in the order; later sub-pixels hold arbitrary values.
            i, j: the pixel; colour ``c``'s logits ``[:, :, c]`` are exact given the
                colours before ``c``, later colours' are not. A per-pixel likelihood's
                outputs are exact at the pixel's first call (they see no colour of it).
        """
        ...

    def observe(self, x: Tensor, i: int, j: int) -> None:
        """Pixel ``(i, j)`` of ``x`` is given, not sampled: update the caches (by default
        by computing its logits; states that subclass this protocol inherit that)."""
        self.logits(x, i, j)


class ReferenceState(SamplingState):
    """The slow, obviously right state: one full forward pass per call.

    Works for any ``model(x[, labels])`` returning outputs whose last dimensions are ``(H, W)``.
    """

    def __init__(self, model: nn.Module, labels: Tensor | None) -> None:
        self.model = model
        self.labels = labels

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        return call_model(self.model, x, self.labels)[..., i, j]  # categorical: (n, n_levels, C)

    def observe(self, x: Tensor, i: int, j: int) -> None:
        pass  # nothing is cached


@runtime_checkable
class SteppableLayer(Protocol):
    """A layer of a :class:`ResidualStack` that fast sampling can run one pixel at a time."""

    def sampling_step(self, n: int, height: int, width: int) -> LayerStep:
        """A fresh step function for ``n`` images of ``height x width``: called once per
        pixel in raster order with the layer's input at that pixel ``(n, 2h)``, it returns
        the layer's output there ``(n, h)``, exactly what ``forward`` computes."""
        ...


class AutoregressiveModel(nn.Module):
    """Base class of pixelgen models.

    Contract: ``model(x, labels=None)`` maps images ``x`` ``(B, C, H, W)`` (integers
    0..n_levels-1, or floats in that range for differentiation) to the outputs of its
    ``likelihood`` such that ``-model.likelihood.log_prob(outputs, x)`` is the
    per-sub-pixel NLL (by default the logits ``(B, n_levels, C, H, W)`` of an
    ``n_levels``-way softmax), and the outputs of sub-pixel ``(i, j, c)`` depend only on
    sub-pixels before it in the model's :meth:`generation_order` (by default raster: row,
    column, colour); for a per-pixel likelihood, those of pixel ``(i, j)`` only on
    earlier pixels. ``labels`` ``(B,)`` are required when ``n_classes > 0``. ``n_levels``
    is 256 for 8-bit images, 2 for binary ones.
    """

    in_channels: int
    n_classes: int = 0
    n_levels: int = N_LEVELS
    likelihood: Likelihood

    def sampling_state(self, n: int, height: int, width: int, labels: Tensor | None = None) -> SamplingState:
        """The state :func:`pixelgen.sample` generates ``n`` images with. This default
        recomputes the whole forward pass per sub-pixel; models override it with a
        cached, exact one."""
        return ReferenceState(self, labels)

    def generation_order(self, channels: int, height: int, width: int) -> Tensor:
        """Rank of every sub-pixel in the order the model generates it, long ``(C, H, W)``.

        Raster order (:func:`raster_order`) by default. A model that generates in another
        order overrides it, and both :func:`pixelgen.registry.causality.check_causality` and
        :func:`pixelgen.sample` follow it; the colours of one pixel must stay consecutive,
        R first, for sampling.
        """
        return raster_order(channels, height, width)

    def sequential_steps(self, height: int, width: int) -> int:
        """Steps one layer must take one after another on an ``height x width`` image.

        The measure of parallelism the paper compares (section 3): 1 when every position
        of a layer is computed at once, as in a convolution. Models with a recurrence
        override it with the length of their scan.
        """
        return 1

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters grouped by depth, input first, for gradient-flow plots: by default
        one group per top-level child module."""
        return {name: list(child.parameters()) for name, child in self.named_children()
                if any(True for _ in child.parameters())}


class ResidualStack(AutoregressiveModel):
    """The shared skeleton: mask-A input conv, residual layers, skip connections, head.

    Args:
        make_layer: ``make_layer(hidden_channels, colours)`` returns one layer mapping the
            residual stream ``(B, 2h, H, W)`` to ``(B, h, H, W)``; called ``n_layers`` times.
        in_channels: colours C of the images (1 or 3).
        hidden_channels: h; the residual stream has 2h channels.
        n_layers: number of residual layers after the input convolution.
        head_channels: width of the output head (paper: 1024).
        n_classes: > 0 adds a learned per-class bias to every layer.
        residual: add each layer's output to its input (paper: yes).
        skip: feed the sum of learnable 1x1 projections of every layer's output to the
            head instead of the last layer's output alone.
        n_levels: values per sub-pixel, 2..256: the softmax size and the input scale
            (256 for 8-bit images; 2 for binary data such as binarized MNIST).
        likelihood: the output distribution (:mod:`pixelgen.nn.likelihoods`); ``None``:
            the ``n_levels``-way :class:`~pixelgen.nn.likelihoods.Categorical`. Its
            ``n_levels`` must be the stack's. A per-pixel likelihood masks every map with
            one colour group. (:func:`pixelgen.create_model` builds it from the model's
            ``likelihood`` hyperparameter.)

    The defaults are :func:`stack_hyperparameters`' (the paper's CIFAR-10 settings).

    ``forward`` and :class:`ResidualStackState` take an optional ``layer_bias``: one map
    ``(B, 2h, H, W)`` per layer, added to the residual stream just before that layer. It
    is how another network conditions the stack on something known in advance (the
    conditional network of a multi-scale PixelRNN, section 3.6); without it the stack
    computes exactly what it computes alone.
    """

    def __init__(
        self,
        make_layer: Callable[[int, int], nn.Module],
        *,
        in_channels: int = 3,
        hidden_channels: int = 128,
        n_layers: int = 12,
        head_channels: int = 1024,
        n_classes: int = 0,
        residual: bool = True,
        skip: bool = False,
        n_levels: int = N_LEVELS,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"in_channels must be at least 1, got {in_channels}")
        if not isinstance(n_levels, int) or isinstance(n_levels, bool) or not 2 <= n_levels <= N_LEVELS:
            raise ValueError(f"n_levels must be an integer in 2..{N_LEVELS} (images are stored as uint8), got {n_levels!r}")
        if n_layers < 0:
            raise ValueError(f"n_layers must be non-negative, got {n_layers}")
        likelihood = likelihood if likelihood is not None else Categorical(n_levels)
        if not isinstance(likelihood, Likelihood) or likelihood.n_levels != n_levels:
            raise ValueError(f"likelihood must be a pixelgen Likelihood of {n_levels} levels, got {likelihood!r}")
        c, h = in_channels, hidden_channels
        g = likelihood.mask_colours(c)  # colour groups of every mask
        self.in_channels = c
        self.hidden_channels = h
        self.n_layers = n_layers
        self.n_classes = n_classes
        self.residual = residual
        self.skip = skip
        self.n_levels = n_levels
        self.likelihood = likelihood
        self.input_conv = MaskedConv2d(c, 2 * h, 7, "A", g)
        self.input_bias = ClassBias(n_classes, 2 * h)
        self.layers = nn.ModuleList(make_layer(h, g) for _ in range(n_layers))
        self.out_convs = nn.ModuleList(MaskedConv2d(h, 2 * h, 1, "B", g) for _ in range(n_layers))
        self.layer_biases = nn.ModuleList(ClassBias(n_classes, 2 * h) for _ in range(n_layers))
        self.skip_convs = nn.ModuleList(
            MaskedConv2d(2 * h, 2 * h, 1, "B", g) for _ in range(n_layers if skip else 0)
        )
        self.head = OutputHead(2 * h, head_channels, c, n_levels, likelihood)

    @property
    def steppable(self) -> bool:
        """Whether every layer has a one-pixel step, so that :class:`ResidualStackState` applies."""
        return all(isinstance(layer, SteppableLayer) for layer in self.layers)

    def sampling_state(self, n: int, height: int, width: int, labels: Tensor | None = None) -> SamplingState:
        if not self.steppable:
            return super().sampling_state(n, height, width, labels)
        return ResidualStackState(self, n, height, width, labels)

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``input_conv`` (with its class bias), ``layers.0`` ... (each layer with its 1x1
        output convolution, class bias and skip convolution) and ``head``."""
        groups = {"input_conv": [*self.input_conv.parameters(), *self.input_bias.parameters()]}
        for k in range(self.n_layers):
            parts = [self.layers[k], self.out_convs[k], self.layer_biases[k]]
            if self.skip:
                parts.append(self.skip_convs[k])
            groups[f"layers.{k}"] = [p for part in parts for p in part.parameters()]
        groups["head"] = list(self.head.parameters())
        return groups

    def forward(self, x: Tensor, labels: Tensor | None = None, layer_bias: Sequence[Tensor] | None = None) -> Tensor:
        _check_layer_bias(self, layer_bias)
        stream = self.input_conv(scale_input(x, self.input_conv.weight, self.n_levels))  # (B, 2h, H, W)
        stream = stream + self.input_bias(labels)
        skips = 0.0
        for layer, out_conv, bias, i in zip(self.layers, self.out_convs, self.layer_biases, range(self.n_layers)):
            if layer_bias is not None:
                stream = stream + layer_bias[i]  # (B, 2h, H, W)
            update = out_conv(layer(stream))  # (B, h, H, W) -> (B, 2h, H, W)
            stream = (stream + update if self.residual else update) + bias(labels)
            if self.skip:
                skips = skips + self.skip_convs[i](stream)
        return self.head(skips if self.skip and self.n_layers else stream)  # categorical: (B, n_levels, C, H, W)


def _check_layer_bias(model: ResidualStack, layer_bias: Sequence[Tensor] | None) -> None:
    """Fail loudly unless ``layer_bias`` is ``None`` or one map per layer of ``model``."""
    if layer_bias is not None and len(layer_bias) != model.n_layers:
        raise ValueError(f"layer_bias must hold one map per layer ({model.n_layers}), got {len(layer_bias)}")


class ConvStep:
    """A masked convolution evaluated at one position, ``(n, in) -> (n, out)``.

    The output at ``(i, j)`` is a dot product of the masked weight with the input window
    around ``(i, j)``; rows below the centre are masked out, so the window is the
    ``kh // 2 + 1`` rows ending at row ``i``. The input is cached, zero-padded as
    ``forward`` pads it, one position per call; a 1x1 convolution needs no cache.
    The masked weight is taken once: the state is a snapshot of the model.
    """

    def __init__(self, conv: MaskedConv2d, n: int, height: int, width: int) -> None:
        kh, kw = conv.kernel_size
        self.rows, self.pad_w, self.kw = kh // 2 + 1, kw // 2, kw
        weight = conv.masked_weight()[:, :, : self.rows]  # (out, in, kh // 2 + 1, kw)
        self.weight = weight.flatten(1).t()  # (in * rows * kw, out)
        self.bias = conv.bias
        self.cache = None
        if (kh, kw) != (1, 1):  # (n, in, H + kh // 2, W + 2 (kw // 2)): top, left, right pads
            self.cache = weight.new_zeros(n, conv.in_channels, height + self.rows - 1, width + 2 * self.pad_w)

    def write(self, v: Tensor, i: int, j: int) -> None:
        """Cache the input ``v`` ``(n, in)`` at ``(i, j)`` without computing anything."""
        self.cache[:, :, i + self.rows - 1, j + self.pad_w] = v

    def __call__(self, v: Tensor, i: int, j: int) -> Tensor:
        if self.cache is not None:
            self.write(v, i, j)
            v = self.cache[:, :, i : i + self.rows, j : j + self.kw].reshape(len(v), -1)  # (n, in*rows*kw)
        return v @ self.weight if self.bias is None else torch.addmm(self.bias, v, self.weight)


def _class_bias(bias: ClassBias, labels: Tensor | None) -> Tensor | float:
    value = bias(labels)
    return value if isinstance(value, float) else value[:, :, 0, 0]  # (n, channels)


class ResidualStackState(SamplingState):
    """Fast, exact sampling state of a :class:`ResidualStack`: one pixel's column per call.

    Each call evaluates the stack of the module docstring at pixel ``(i, j)`` only: the
    input convolution and each layer's step read what earlier calls cached, and write
    pixel ``(i, j)``'s values. No feature of pixel ``(i, j)`` depends on its last colour
    (mask A), so the features cached by the call for that colour are final; the image
    itself is cached again one pixel later, once that colour is drawn. (With a per-pixel
    likelihood no feature sees any colour of the pixel, and one call per pixel suffices.)

    ``layer_bias``: the stack's optional per-layer maps ``(n, 2h, H, W)`` (see
    :class:`ResidualStack`), known in full before sampling starts.
    """

    def __init__(
        self, model: ResidualStack, n: int, height: int, width: int, labels: Tensor | None,
        layer_bias: Sequence[Tensor] | None = None,
    ) -> None:
        _check_layer_bias(model, layer_bias)
        self.model = model
        self.layer_bias = layer_bias
        self.input_conv = ConvStep(model.input_conv, n, height, width)
        self.input_bias = _class_bias(model.input_bias, labels)
        self.steps = [layer.sampling_step(n, height, width) for layer in model.layers]
        self.out_convs = [ConvStep(conv, n, height, width) for conv in model.out_convs]
        self.layer_biases = [_class_bias(bias, labels) for bias in model.layer_biases]
        self.skip_convs = [ConvStep(conv, n, height, width) for conv in model.skip_convs]
        self.head_hidden = ConvStep(model.head.hidden, n, height, width)
        self.head_logits = ConvStep(model.head.logits, n, height, width)

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        model = self.model
        if j or i:  # the loop fills a pixel's last colour after its last call: cache it now
            before_i, before_j = (i, j - 1) if j else (i - 1, x.shape[-1] - 1)
            before = scale_input(x[:, :, before_i, before_j], self.input_conv.weight, model.n_levels)  # (n, C)
            self.input_conv.write(before, before_i, before_j)
        pixel = scale_input(x[:, :, i, j], self.input_conv.weight, model.n_levels)  # (n, C)
        stream = self.input_conv(pixel, i, j) + self.input_bias  # (n, 2h)
        skips = 0.0
        for k, (step, out_conv, bias) in enumerate(zip(self.steps, self.out_convs, self.layer_biases)):
            if self.layer_bias is not None:
                stream = stream + self.layer_bias[k][:, :, i, j]  # (n, 2h)
            update = out_conv(step(stream, i, j), i, j)  # (n, h) -> (n, 2h)
            stream = (stream + update if model.residual else update) + bias
            if model.skip:
                skips = skips + self.skip_convs[k](stream, i, j)
        stream = skips if model.skip and model.n_layers else stream
        out = self.head_logits(F.relu(self.head_hidden(F.relu(stream), i, j)), i, j)  # (n, n_outputs(C))
        return model.likelihood.arrange(out[:, :, None, None], model.in_channels)[..., 0, 0]  # categorical: (n, n_levels, C)

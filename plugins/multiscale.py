"""Multi-Scale PixelRNN (Pixel RNN, section 3.6).

Two networks share one image. An unconditional network generates an ``s x s`` image
subsampled from the ``n x n`` one (every ``factor``-th row and column); a conditional
network then generates the other pixels, each of its layers biased by an upsampled map
of the small image (a deconvolution, then an unmasked 1x1 convolution per layer)::

    x (B, C, H, W) --------------------------------------------+
      | x[:, :, ::f, ::f]                                        |
      v                                                          v
    small image (B, C, s, s)                     conditional network (base): a ResidualStack,
      |-> unconditional network (small_base)       layer k's input += bias map k
      |     -> logits of the grid pixels                -> logits of every other pixel
      |-> 3x3 conv, ReLU, deconv (stride f), ReLU  (B, c, H, W)
      '-> layer k: 1x1 conv -> bias map k          (B, 2h, H, W)

Generation order (``generation_order``), f = 2 on a 4x4 image, the rank of each pixel
(colours R -> G -> B inside a pixel): the grid pixels first, in raster order, then every
other pixel in raster order::

     0  4  1  5
     6  7  8  9
     2 10  3 11
    12 13 14 15

The likelihood is exact: ``-log p(x) = -log p_small(x[::f, ::f]) - sum over the pixels off
the grid of log p_conditional(sub-pixel | small image, earlier pixels in raster order)``.
``forward`` returns the small network's logits at the grid pixels and the conditional
network's elsewhere, so that ``-likelihood.log_prob(forward(x), x)`` summed is that NLL and
bits/dim are over the full image's ``C * H * W`` sub-pixels. (The paper's conditional
network generates the whole larger image; here it never predicts a grid pixel, which the
small network has already given, so that no sub-pixel is counted twice.)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import pixelgen
from pixelgen import registry
from pixelgen.blocks import (
    AutoregressiveModel,
    Categorical,
    Hyperparameter,
    Likelihood,
    ResidualStack,
    ResidualStackState,
    SamplingState,
    call_model,
    scale_input,
    stack_hyperparameters,
)


def _is_stack(name: str) -> bool:
    factory = registry.get_model_spec(name).factory
    return isinstance(factory, type) and issubclass(factory, ResidualStack)


def build_part(name: str, role: str, **hyperparameters: Any) -> ResidualStack:
    """The registered model ``name`` built as one network of the multi-scale model;
    ``role`` is the hyperparameter that named it (``"base"`` or ``"small_base"``)."""
    if not _is_stack(name):
        stacks = ", ".join(n for n in registry.list_models() if _is_stack(n))
        raise ValueError(f"{role} = {name!r} is not a ResidualStack model; choose one of: {stacks}")
    return registry.create_model(name, **hyperparameters)


def on_grid(full: Tensor, grid: Tensor, factor: int) -> Tensor:
    """``full`` ``(..., H, W)`` with ``grid`` ``(..., ceil(H / f), ceil(W / f))`` at every
    ``f``-th row and column, out of place (an in-place write into a view of a network's
    output breaks the backward hooks Lightning Fabric registers on it)."""
    rows = full[..., ::factor, :].slice_scatter(grid, dim=-1, step=factor)  # (..., ceil(H / f), W)
    return full.slice_scatter(rows, dim=-2, step=factor)  # (..., H, W)


class Upsampler(nn.Module):
    """Section 3.6's upsampling and biasing: the small image to one bias map per layer::

        small (B, C, s_h, s_w) -> scale to [-1, 1] -> 3x3 conv, ReLU      (B, c, s_h, s_w)
          -> deconvolution, kernel and stride f, ReLU, cropped             (B, c, H, W)
          -> layer k: unmasked 1x1 conv                                    (B, 2h, H, W)

    Nothing is masked: the whole small image is known before the conditional network
    starts. The 3x3 convolution lets each ``f x f`` block see the small pixels around
    its own, the later ones (right, below) included.
    """

    def __init__(self, colours: int, channels: int, factor: int, stream_channels: int, n_layers: int,
                 n_levels: int) -> None:
        super().__init__()
        self.n_levels = n_levels
        self.context = nn.Conv2d(colours, channels, 3, padding=1)
        self.deconv = nn.ConvTranspose2d(channels, channels, factor, stride=factor)
        self.to_layers = nn.ModuleList(nn.Conv2d(channels, stream_channels, 1) for _ in range(n_layers))

    def forward(self, small: Tensor, height: int, width: int) -> list[Tensor]:
        features = F.relu(self.context(scale_input(small, self.context.weight, self.n_levels)))  # (B, c, s_h, s_w)
        features = F.relu(self.deconv(features))[:, :, :height, :width]  # (B, c, f s_h, f s_w) -> (B, c, H, W)
        return [conv(features) for conv in self.to_layers]  # n_layers x (B, 2h, H, W)


class MultiScaleState(SamplingState):
    """Fast, exact sampling: the two networks' own cached states, one after the other.

    The sampling loop visits the grid pixels first; each goes to the small network's state
    at ``(i // f, j // f)`` of the subsampled view of ``x``. At the first other pixel the
    small image is complete: the bias maps are computed once and the conditional
    network's :class:`~pixelgen.blocks.ResidualStackState` starts. That state must see
    every position in raster order, so before each pixel it is shown the grid pixels
    since the last one (given, complete).
    """

    def __init__(self, model: MultiScalePixelRNN, n: int, height: int, width: int, labels: Tensor | None) -> None:
        self.model, self.n, self.height, self.width, self.labels = model, n, height, width, labels
        small_height, small_width = model.small_size(height, width)
        self.small = model.small.sampling_state(n, small_height, small_width, labels)
        self.conditional: ResidualStackState | None = None
        self.next_position = 0  # raster index of the first position the conditional state has not seen

    def logits(self, x: Tensor, i: int, j: int) -> Tensor:
        f = self.model.factor
        if i % f == 0 and j % f == 0:
            return self.small.logits(self.model.small_image(x), i // f, j // f)  # (n, n_levels, C)
        return self._conditional_state(x, i, j).logits(x, i, j)

    def observe(self, x: Tensor, i: int, j: int) -> None:
        f = self.model.factor
        if i % f == 0 and j % f == 0:
            self.small.observe(self.model.small_image(x), i // f, j // f)
        else:
            self._conditional_state(x, i, j).observe(x, i, j)

    def _conditional_state(self, x: Tensor, i: int, j: int) -> ResidualStackState:
        """The conditional network's state, shown every position before ``(i, j)``."""
        if self.conditional is None:
            layer_bias = self.model.upsample(self.model.small_image(x), self.height, self.width)
            self.conditional = ResidualStackState(
                self.model.conditional, self.n, self.height, self.width, self.labels, layer_bias
            )
        position = i * self.width + j
        for earlier in range(self.next_position, position):  # grid pixels: given by the small network
            self.conditional.observe(x, *divmod(earlier, self.width))
        self.next_position = max(self.next_position, position + 1)
        return self.conditional


class MultiScalePixelRNN(AutoregressiveModel):
    """Multi-Scale PixelRNN of section 3.6 (see the module docstring and :data:`SPEC`).

    Both networks are registered :class:`~pixelgen.blocks.ResidualStack` models, built
    through the registry with the shared sizes (``hidden_channels``, ``head_channels``,
    ``residual``, ``skip``, ``n_classes``, ``n_levels``), one likelihood and their own depths.
    """

    def __init__(
        self,
        *,
        base: str = "row_lstm",
        small_base: str = "pixelcnn",
        factor: int = 2,
        in_channels: int = 3,
        hidden_channels: int = 128,
        n_layers: int = 12,
        small_n_layers: int = 15,
        head_channels: int = 1024,
        upsample_channels: int = 128,
        n_classes: int = 0,
        residual: bool = True,
        skip: bool = False,
        n_levels: int = 256,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(factor, int) or isinstance(factor, bool) or factor < 2:
            raise ValueError(f"factor must be an integer of at least 2, got {factor!r}")
        self.in_channels, self.n_classes, self.n_levels, self.factor = in_channels, n_classes, n_levels, factor
        shared = dict(in_channels=in_channels, hidden_channels=hidden_channels, head_channels=head_channels,
                      n_classes=n_classes, residual=residual, skip=skip, n_levels=n_levels,
                      likelihood=likelihood if likelihood is not None else Categorical(n_levels))
        self.small = build_part(small_base, "small_base", n_layers=small_n_layers, **shared)
        self.upsample = Upsampler(in_channels, upsample_channels, factor, 2 * hidden_channels, n_layers, n_levels)
        self.conditional = build_part(base, "base", n_layers=n_layers, **shared)
        self.likelihood = self.conditional.likelihood  # both networks share it

    def small_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the subsampled image of a ``height x width`` one."""
        return -(-height // self.factor), -(-width // self.factor)

    def small_image(self, x: Tensor) -> Tensor:
        """The subsampled image, a view: ``(B, C, H, W) -> (B, C, ceil(H / f), ceil(W / f))``."""
        return x[:, :, :: self.factor, :: self.factor]

    def generation_order(self, channels: int, height: int, width: int) -> Tensor:
        """The grid pixels in raster order, then the others in raster order; R -> G -> B
        inside a pixel. Long ``(C, H, W)``."""
        raster = torch.arange(height * width).view(height, width)  # (H, W)
        off_grid = torch.ones(height, width, dtype=torch.bool)
        off_grid[:: self.factor, :: self.factor] = False
        key = raster + off_grid * height * width  # grid pixels sort first
        pixel_rank = key.flatten().argsort().argsort().view(height, width)  # (H, W)
        return pixel_rank * channels + torch.arange(channels)[:, None, None]  # (C, H, W)

    def forward(self, x: Tensor, labels: Tensor | None = None) -> Tensor:
        height, width = x.shape[-2:]
        small = self.small_image(x)  # (B, C, s_h, s_w)
        conditional = self.conditional(x, labels, layer_bias=self.upsample(small, height, width))  # outputs (B, ..., H, W)
        # The grid pixels are the small network's: the conditional network's logits there go unused.
        return on_grid(conditional, call_model(self.small, small, labels), self.factor)  # categorical: (B, n_levels, C, H, W)

    def sampling_state(self, n: int, height: int, width: int, labels: Tensor | None = None) -> SamplingState:
        if not (self.small.steppable and self.conditional.steppable):
            return super().sampling_state(n, height, width, labels)
        return MultiScaleState(self, n, height, width, labels)

    def sequential_steps(self, height: int, width: int) -> int:
        """The longer scan of the two networks: in training both run at once, each on its image."""
        return max(self.small.sequential_steps(*self.small_size(height, width)),
                   self.conditional.sequential_steps(height, width))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """The small network's groups (``small.input_conv`` ...), ``upsample``, then the
        conditional network's (``conditional.input_conv`` ...)."""
        groups = {f"small.{name}": params for name, params in self.small.parameter_groups().items()}
        groups["upsample"] = list(self.upsample.parameters())
        groups.update({f"conditional.{name}": params for name, params in self.conditional.parameter_groups().items()})
        return groups


SPEC = pixelgen.ModelSpec(
    "multiscale",
    MultiScalePixelRNN,
    "Multi-Scale PixelRNN: a subsampled image, then the rest conditioned on it (Pixel RNN, 3.6)",
    hyperparameters={
        **stack_hyperparameters(n_layers=12),
        "hidden_channels": Hyperparameter(128, "h of both networks; each residual stream has 2h (paper: 128)"),
        "n_layers": Hyperparameter(12, "layers of the conditional network (base)"),
        "head_channels": Hyperparameter(1024, "width of both networks' output heads (paper: 1024)"),
        "base": Hyperparameter("row_lstm", "registered ResidualStack model of the conditional network"),
        "small_base": Hyperparameter("pixelcnn", "registered ResidualStack model of the unconditional network"),
        "small_n_layers": Hyperparameter(15, "layers of the unconditional network (small_base)"),
        "factor": Hyperparameter(2, "subsampling factor f: the small image is x[:, :, ::f, ::f]"),
        "upsample_channels": Hyperparameter(128, "c, features of the upsampled map of the small image "
                                                 "(the paper does not give it)"),
    },
    receptive_field=(
        "Multi-Scale: a pixel of the subsampled grid sees what the small network sees of the small "
        "image; any other pixel sees what its base network sees of the earlier pixels in raster "
        "order and, through the upsampled map, the grid pixels around its own block, later ones too."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

"""Likelihoods: the distribution a model's outputs define over the values of an image.

A model's network computes *outputs*; its :class:`Likelihood` turns them into
probabilities of integer images. Everything downstream goes through it: the NLL and
bits/dim (:mod:`pixelgen.nn.metrics`), both samplers (:mod:`pixelgen.sampling`) and the
causality check (:mod:`pixelgen.registry.causality`). Two are built in, registered
through the ``pixelgen_likelihoods`` hook like any plugin's:

* :class:`Categorical` (``"categorical"``): an ``n_levels``-way softmax per sub-pixel,
  R -> G -> B inside a pixel (Pixel RNN, section 2); outputs ``(B, n_levels, C, H, W)``.
* :class:`LogisticMixture` (``"logistic_mixture"``): a discretized mixture of ``K``
  logistics over whole pixels with linear channel coupling (PixelCNN++, Salimans et al.
  2017, section 2.1-2.2); outputs ``(B, n_outputs(C), H, W)``.

Both are torch only; the registry names them (:mod:`pixelgen.registry.builtin`).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from pixelgen.limits import MAX_MIXTURES
from pixelgen.nn.hyperparameters import N_LEVELS

__all__ = ["Categorical", "Likelihood", "LogisticMixture", "draw_from", "work_dtype"]


def work_dtype(device: torch.device) -> torch.dtype:
    """float64 for the probabilities a value is drawn from, except where the device has
    none (Apple's MPS: float32)."""
    return torch.float64 if device.type != "mps" else torch.float32


def draw_from(probs: Tensor, top_p: float, generator: torch.Generator) -> Tensor:
    """One value per row of ``probs`` ``(n, V)`` (summing to 1 per row), by inverse CDF.

    With ``top_p < 1`` only the nucleus is kept: the smallest set of values, most likely
    first, whose probability reaches ``top_p`` (Holtzman et al. 2020). The draw is by
    inverse CDF over the values in their natural order 0..V-1, from one uniform per row,
    so that probabilities that differ only by rounding give the same value almost surely.

    Returns:
        long tensor ``(n,)``.
    """
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (n, V)
        keep_sorted = mass_before < top_p  # always keeps the most likely value
        keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
        probs = probs * keep
    cdf = probs.cumsum(dim=-1)  # (n, V), unnormalised after truncation
    uniform = torch.rand(len(probs), 1, generator=generator, device=probs.device, dtype=probs.dtype)
    values = torch.searchsorted(cdf, uniform * cdf[:, -1:], right=True)[:, 0]  # (n,)
    # uniform * total rounds up to total about never; then take the last possible value.
    last_possible = probs.shape[-1] - 1 - (probs.flip(-1) > 0).to(torch.uint8).argmax(dim=-1)
    return torch.minimum(values, last_possible)


class Likelihood:
    """The distribution a model's outputs define over integer images: the plugin interface.

    A model ends in an output head of ``n_outputs(C)`` channels per pixel; ``arrange``
    lays them out as the likelihood's *outputs*, any tensor whose last two dimensions are
    the image's ``(H, W)``. Everything else reads outputs only through this class:

    * ``log_prob(outputs, x)``: natural-log probabilities ``(B, C, H, W)`` of integer
      images ``x`` (values ``0..n_levels-1``), one per sub-pixel. A per-pixel likelihood
      splits its pixel's log-probability over the sub-pixels by the chain rule, so that
      for every sub-pixel ``c``, with the pixel's earlier sub-pixels fixed, the
      probabilities of its ``n_levels`` values sum to 1, and the sum over ``c`` is the
      pixel's log-probability.
    * ``subpixel_probabilities(at_pixel, x_pixel, c, temperature)``: the distribution
      ``(n, n_levels)`` of sub-pixel ``c`` given the pixel's outputs ``outputs[..., i, j]``
      and its earlier sub-pixels ``x_pixel[:, :c]``: what a sampler draws from and an
      entropy coder codes with; ``exp(log_prob)`` at temperature 1.
    * ``sample(at_pixel, x_pixel, c, temperature, top_p, generator)``: one value of
      sub-pixel ``c`` per image, drawn from those probabilities (``top_p < 1`` only where
      ``top_p_defined``).
    * ``per_pixel``: the dependency structure inside a pixel. False: sub-pixel ``c``'s
      outputs may see sub-pixels ``< c`` of its own pixel (R -> G -> B colour groups,
      and the sampler asks the model once per sub-pixel). True: all outputs of a pixel
      depend on earlier pixels only (the network is masked with one colour group, the
      sampler asks once per pixel and draws R, then G given R, then B given R and G from
      the same outputs) and the likelihood couples the sub-pixels itself.
    * ``by_subpixel(outputs, C)``: the outputs as ``(B, P, C, H, W)``, those that sub-pixel
      ``c`` is drawn from at ``[:, :, c]``, for the causality check's Jacobian.

    A subclass sets ``name`` and implements ``n_outputs``, ``arrange``, ``log_prob``,
    ``subpixel_probabilities`` and ``by_subpixel``; ``n_levels`` (2..256) is the number of
    values per sub-pixel; ``options()`` names what it was built with (the codec records it).
    None of pixelgen's analyses needs an entropy: no method for it.
    """

    name = "likelihood"
    per_pixel = False
    top_p_defined = True

    def __init__(self, n_levels: int = N_LEVELS) -> None:
        if not isinstance(n_levels, int) or isinstance(n_levels, bool) or not 2 <= n_levels <= N_LEVELS:
            raise ValueError(f"n_levels must be an integer in 2..{N_LEVELS} (images are stored as uint8), got {n_levels!r}")
        self.n_levels = n_levels

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_levels={self.n_levels})"

    def options(self) -> dict[str, Any]:
        """The options it was built with, ``{option: value}``: its constructor's keyword
        parameters other than ``n_levels``, read from the attributes of the same names
        (``{"n_mixtures": 10}``; ``{}`` for the categorical). A subclass that keeps an
        option under another name overrides this."""
        parameters = inspect.signature(type(self).__init__).parameters
        return {name: getattr(self, name) for name, parameter in parameters.items()
                if name not in ("self", "n_levels") and hasattr(self, name)
                and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}

    def mask_colours(self, channels: int) -> int:
        """Colour groups of the network's masks: ``channels`` (R -> G -> B), or 1 for a
        per-pixel likelihood (no feature of a pixel sees any of its sub-pixels)."""
        return 1 if self.per_pixel else channels

    def n_outputs(self, channels: int) -> int:
        """Output channels per pixel the model's head must produce for ``channels`` colours."""
        raise NotImplementedError

    def arrange(self, raw: Tensor, channels: int) -> Tensor:
        """The head's ``(B, n_outputs(C), H, W)`` as this likelihood's outputs."""
        raise NotImplementedError

    def by_subpixel(self, outputs: Tensor, channels: int) -> Tensor:
        """The outputs as ``(B, P, C, H, W)``: ``[:, :, c]`` those sub-pixel ``c`` is drawn from."""
        raise NotImplementedError

    def log_prob(self, outputs: Tensor, x: Tensor) -> Tensor:
        """Natural-log probabilities ``(B, C, H, W)`` (float32 or wider) of integer images ``x``."""
        raise NotImplementedError

    def subpixel_probabilities(self, at_pixel: Tensor, x_pixel: Tensor, c: int, temperature: float = 1.0) -> Tensor:
        """Probabilities ``(n, n_levels)`` (float64; float32 on MPS) of sub-pixel ``c``.

        Args:
            at_pixel: the outputs at one pixel, ``outputs[..., i, j]``.
            x_pixel: the pixel ``(n, C)``; only sub-pixels ``< c`` are read.
            c: the colour.
            temperature: > 0; 1 is the model's distribution, lower sharpens it.
        """
        raise NotImplementedError

    def sample(self, at_pixel: Tensor, x_pixel: Tensor, c: int, temperature: float, top_p: float,
               generator: torch.Generator) -> Tensor:
        """Sub-pixel ``c`` drawn from :meth:`subpixel_probabilities`: long ``(n,)``."""
        if top_p < 1.0 and not self.top_p_defined:
            raise ValueError(f"top_p is not defined for the {self.name} likelihood; use top_p = 1")
        return draw_from(self.subpixel_probabilities(at_pixel, x_pixel, c, temperature), top_p, generator)


class Categorical(Likelihood):
    """An ``n_levels``-way softmax per sub-pixel (Pixel RNN, section 2): outputs are the
    logits ``(B, n_levels, C, H, W)``, channel ``c``'s computed from colour group ``c``."""

    name = "categorical"

    def n_outputs(self, channels: int) -> int:
        return self.n_levels * channels

    def arrange(self, raw: Tensor, channels: int) -> Tensor:
        return rearrange(raw, "b (c v) h w -> b v c h w", c=channels)  # colour-major head

    def by_subpixel(self, outputs: Tensor, channels: int) -> Tensor:
        return outputs

    def log_prob(self, outputs: Tensor, x: Tensor) -> Tensor:
        return -F.cross_entropy(outputs.float(), x.long(), reduction="none")  # (B, C, H, W), float32 as ever

    def subpixel_probabilities(self, at_pixel: Tensor, x_pixel: Tensor, c: int, temperature: float = 1.0) -> Tensor:
        logits = at_pixel[:, :, c]  # (n, n_levels)
        return torch.softmax(logits.to(work_dtype(logits.device)) / temperature, dim=-1)


class LogisticMixture(Likelihood):
    """A discretized mixture of ``n_mixtures`` logistics per pixel (PixelCNN++, 2.1-2.2).

    Values ``v`` are scaled to ``x = 2 v / (V - 1) - 1`` in [-1, 1], ``V = n_levels``. Each
    component ``k`` draws the whole pixel; colour ``c``'s mean is coupled linearly to the
    pixel's earlier colours (for RGB: ``mu_G + a x_R``, ``mu_B + b x_R + g x_G``)::

        p(pixel) = sum_k pi_k prod_c [ sigma((x_c + 1/(V-1) - m_kc) / s_kc)
                                      - sigma((x_c - 1/(V-1) - m_kc) / s_kc) ]

    with the edge bins open: ``v = 0`` takes everything below, ``v = V - 1`` everything
    above. Each bin's log-probability is computed as
    ``log sigma(u) + log sigma(-l) + log(1 - exp(l - u))``, exact and finite in float32 at any
    mean and scale (no fallback to a density as PixelCNN++'s code has).

    Outputs ``(B, P, H, W)``, ``P = n_outputs(C) = K (1 + 2C + C(C-1)/2)``: mixture logits
    ``K``, means ``(C, K)``, log-scales ``(C, K)`` (clamped below at -7 as in PixelCNN++),
    coupling coefficients ``(C(C-1)/2, K)`` through tanh, pairs ``(c, c')``, ``c' < c``, in
    the order (1, 0), (2, 0), (2, 1), ...

    Per sub-pixel, ``log_prob`` is the chain rule's term ``log p(x_c | x_<c)``: the mixture
    over components weighted by their posterior given the earlier colours. Temperature
    ``T`` divides the mixture logits and multiplies the scales when sampling.
    """

    name = "logistic_mixture"
    per_pixel = True
    MIN_LOG_SCALE = -7.0

    def __init__(self, n_levels: int = N_LEVELS, n_mixtures: int = 10) -> None:
        super().__init__(n_levels)
        if not isinstance(n_mixtures, int) or isinstance(n_mixtures, bool) or not 1 <= n_mixtures <= MAX_MIXTURES:
            raise ValueError(f"n_mixtures must be an integer in 1..{MAX_MIXTURES}, got {n_mixtures!r}")
        self.n_mixtures = n_mixtures

    def __repr__(self) -> str:
        return f"LogisticMixture(n_levels={self.n_levels}, n_mixtures={self.n_mixtures})"

    def n_outputs(self, channels: int) -> int:
        return self.n_mixtures * (1 + 2 * channels + channels * (channels - 1) // 2)

    def arrange(self, raw: Tensor, channels: int) -> Tensor:
        return raw  # (B, P, H, W)

    def by_subpixel(self, outputs: Tensor, channels: int) -> Tensor:
        return outputs.unsqueeze(2).expand(-1, -1, channels, -1, -1)  # every colour reads them all

    def _parameters(self, params: Tensor, channels: int, temperature: float = 1.0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``params`` ``(..., P)`` split: log-weights ``(..., K)``, means, log-scales
        ``(..., C, K)`` and coefficients ``(..., C(C-1)/2, K)``."""
        k, pairs = self.n_mixtures, channels * (channels - 1) // 2
        logits, means, log_scales, coefficients = params.split([k, channels * k, channels * k, pairs * k], dim=-1)
        log_weights = torch.log_softmax(logits / temperature, dim=-1)  # (..., K)
        log_scales = log_scales.unflatten(-1, (channels, k)).clamp(min=self.MIN_LOG_SCALE) + math.log(temperature)
        return log_weights, means.unflatten(-1, (channels, k)), log_scales, torch.tanh(coefficients.unflatten(-1, (pairs, k)))

    def _scaled(self, v: Tensor, dtype: torch.dtype) -> Tensor:
        return v.to(dtype) * (2 / (self.n_levels - 1)) - 1.0

    def _coupled_mean(self, means: Tensor, coefficients: Tensor, x_scaled: Tensor, c: int) -> Tensor:
        """Colour ``c``'s means ``(..., K)``: its own plus the coupling to ``x_scaled[..., :c]``."""
        mean = means[..., c, :]
        first_pair = c * (c - 1) // 2  # pairs (c, 0), (c, 1), ... follow those of earlier colours
        for earlier in range(c):
            mean = mean + coefficients[..., first_pair + earlier, :] * x_scaled[..., earlier, None]
        return mean

    def _log_bins(self, v: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
        """Log-probability ``(..., K)`` of integer values ``v`` ``(...)`` under each
        component's discretized logistic (``mean``, ``log_scale`` ``(..., K)``)."""
        v = v[..., None]
        inverse_scale = torch.exp(-log_scale)
        half_bin = 1 / (self.n_levels - 1)
        centred = self._scaled(v, mean.dtype) - mean
        upper, lower = inverse_scale * (centred + half_bin), inverse_scale * (centred - half_bin)
        first, last = v == 0, v == self.n_levels - 1
        # sigma(u) - sigma(l) = sigma(u) sigma(-l) (1 - exp(l - u)); the edge bins drop a factor.
        log_below_upper = torch.where(last, 0.0, F.logsigmoid(upper))
        log_above_lower = torch.where(first, 0.0, F.logsigmoid(-lower))
        width = 2 * half_bin * inverse_scale  # u - l, exactly
        log_width = torch.where(first | last, 0.0, torch.log(-torch.expm1(-width)))
        return log_below_upper + log_above_lower + log_width

    def log_prob(self, outputs: Tensor, x: Tensor) -> Tensor:
        channels = x.shape[1]
        dtype = torch.promote_types(outputs.dtype, torch.float32)
        params = rearrange(outputs.to(dtype), "b p h w -> b h w p")
        log_weights, means, log_scales, coefficients = self._parameters(params, channels)
        pixels = rearrange(x.long(), "b c h w -> b h w c")
        x_scaled = self._scaled(pixels, dtype)  # (B, H, W, C)
        per_colour = torch.stack([  # (B, H, W, C, K): log p_k(x_c | x_<c)
            self._log_bins(pixels[..., c], self._coupled_mean(means, coefficients, x_scaled, c), log_scales[..., c, :])
            for c in range(channels)
        ], dim=-2)
        after = log_weights[..., None, :] + per_colour.cumsum(dim=-2)  # log pi_k p_k(x_<=c)
        before = torch.cat([log_weights[..., None, :], after[..., :-1, :]], dim=-2)  # log pi_k p_k(x_<c)
        chain = torch.logsumexp(after, dim=-1) - torch.logsumexp(before, dim=-1)  # (B, H, W, C)
        return rearrange(chain, "b h w c -> b c h w")

    def subpixel_probabilities(self, at_pixel: Tensor, x_pixel: Tensor, c: int, temperature: float = 1.0) -> Tensor:
        channels = x_pixel.shape[1]
        params = at_pixel.to(work_dtype(at_pixel.device))  # (n, P)
        log_weights, means, log_scales, coefficients = self._parameters(params, channels, temperature)
        pixels = x_pixel.long()  # (n, C)
        x_scaled = self._scaled(pixels, params.dtype)
        for earlier in range(c):  # the components' posterior given the earlier colours
            mean = self._coupled_mean(means, coefficients, x_scaled, earlier)
            log_weights = log_weights + self._log_bins(pixels[:, earlier], mean, log_scales[:, earlier])
        values = torch.arange(self.n_levels, device=params.device)[None, :]  # (1, V)
        mean = self._coupled_mean(means, coefficients, x_scaled, c)[:, None]  # (n, 1, K)
        log_bins = self._log_bins(values, mean, log_scales[:, None, c])  # (n, V, K)
        log_probs = torch.logsumexp(log_weights[:, None] + log_bins, dim=-1)  # (n, V)
        return torch.softmax(log_probs, dim=-1)  # exactly normalised: the bins sum to 1 up to rounding

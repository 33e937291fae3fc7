"""Smaller weights for a trained model: int8, float16 or bfloat16 state dicts.

A quantized checkpoint (``pixelgen quantize``) stores the model's state dict in a smaller
form and says how in its ``quantization`` entry; :func:`dequantize_state` turns it back
into the float32 state dict the model loads, so evaluation and sampling run the float
model's code on the rounded weights.

``int8``: per-output-channel symmetric weight-only quantization of every convolution and
linear weight (the bulk of every pixelgen model)::

    scale[o] = max |W[o, ...]| / 127        one float32 per output channel
    Q[o, ...] = round(W[o, ...] / scale[o])  int8 in -127..127, zero point 0
    W ~ Q * scale

A linear map a model keeps as a bare parameter of two or more dimensions (the Diagonal
BiLSTM's state-to-state matrices, ``(2, 4h, 2h)``, applied with ``bmm``) is quantized the
same way with one scale per row of its last dimension: per output channel of each matrix.
Biases and class embeddings (a few hundred numbers) stay float32. ``float16`` and
``bfloat16`` cast every floating tensor.

Why by hand rather than with ``torch.ao.quantization``: its dynamic quantization covers
``nn.Linear`` and the recurrent modules, not the masked convolutions every pixelgen model
is made of; its static quantization needs the model rewritten around quant stubs and
quantized kernels for the mask-multiplied weights; and PyTorch 2.14 deprecates the
quantized tensor types (``torch.quantize_per_channel`` warns). Weight-only int8 with float
compute is what serves CPU inference here: the file shrinks about fourfold and the model
runs unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: ``--to`` choices and the scheme each records in the checkpoint.
SCHEMES = {
    "int8": "per-output-channel symmetric weight-only (convolution and linear weights, and bare "
            "matrices per row; biases, embeddings and learned initial states float32)",
    "float16": "every floating tensor cast to float16",
    "bfloat16": "every floating tensor cast to bfloat16",
}
_CAST = {"float16": torch.float16, "bfloat16": torch.bfloat16}
_INT8_MAX = 127
_QUANTIZED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


class QuantizationError(ValueError):
    """An unknown target format, or a quantized state dict that does not fit its record."""


def quantizable_weights(model: nn.Module) -> dict[str, int]:
    """The int8 targets of ``model``: state-dict name -> how many leading dimensions index
    its output channels (1 for a convolution or linear weight, all but the last for a bare
    matrix parameter)."""
    owners = dict(model.named_modules())
    found = {}
    for name, parameter in model.named_parameters():
        owner = owners[name.rpartition(".")[0]]
        if isinstance(owner, _QUANTIZED_MODULES):
            if name.endswith(".weight") or name == "weight":
                found[name] = 1
        elif isinstance(owner, nn.Embedding) or name.rpartition(".")[2].startswith("initial_"):
            continue  # class embeddings and learned initial states (vectors, like biases) stay float32
        elif parameter.dim() >= 2:
            found[name] = parameter.dim() - 1
    return found


def int8_per_channel(weight: torch.Tensor, channel_dims: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Q, scale)``: int8 ``Q`` of ``weight``'s shape and float32 ``scale`` of shape
    ``weight.shape[:channel_dims]`` with ``weight ~ Q * scale`` per output channel; an
    all-zero channel gets scale 1."""
    channels = weight.shape[:channel_dims]
    flat = weight.detach().float().reshape(channels.numel(), -1)  # (channels, the rest)
    scale = flat.abs().amax(dim=1) / _INT8_MAX  # (channels,)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(flat / scale[:, None]).clamp(-_INT8_MAX, _INT8_MAX).to(torch.int8)
    return q.reshape(weight.shape), scale.reshape(channels)


def quantize_state(model: nn.Module, state: dict[str, torch.Tensor], to: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``state`` (``model``'s float state dict) in format ``to``.

    Returns:
        the stored state dict and the checkpoint's ``quantization`` record:
        ``{"to", "scheme"}`` plus, for int8, ``"scales"`` (name -> float32 ``(out,)``).
    """
    if to not in SCHEMES:
        raise QuantizationError(f"--to {to!r}: choose one of {', '.join(SCHEMES)}")
    record: dict[str, Any] = {"to": to, "scheme": SCHEMES[to]}
    if to in _CAST:
        return {k: v.to(_CAST[to]) if v.is_floating_point() else v for k, v in state.items()}, record
    stored, scales = dict(state), {}
    for name, channel_dims in quantizable_weights(model).items():
        if name in stored and stored[name].is_floating_point():
            stored[name], scales[name] = int8_per_channel(stored[name], channel_dims)
    record["scales"] = scales
    return stored, record


def dequantize_state(state: dict[str, torch.Tensor], record: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The float32 state dict a quantized one (:func:`quantize_state`) stands for."""
    to = record.get("to") if isinstance(record, dict) else None
    if to not in SCHEMES:
        raise QuantizationError(f"unknown quantization {to!r}; this pixelgen reads {', '.join(SCHEMES)}")
    if to in _CAST:
        return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    scales = record.get("scales")
    if not isinstance(scales, dict) or set(scales) - set(state):
        raise QuantizationError("int8 checkpoint without a scale for each quantized weight")
    out = dict(state)
    for name, scale in scales.items():
        q = state[name]
        if q.dtype != torch.int8 or not isinstance(scale, torch.Tensor) or q.shape[:scale.dim()] != scale.shape:
            raise QuantizationError(f"int8 weight {name}: expected int8 values and one scale per output channel")
        out[name] = q.float() * scale.float().reshape(*scale.shape, *([1] * (q.dim() - scale.dim())))  # (out..., rest)
    return out

"""Receptive fields written down from the paper's equations, independently of the models.

Each function propagates dependency sets through the architecture: a feature map is a
bool tensor ``(G, H, W, C, H, W)`` saying, for colour group ``g`` at position ``(i, j)``,
which input sub-pixels ``(c2, i2, j2)`` it depends on. The tests compare these with the
Jacobians that :func:`pixelgen.registry.causality.dependency_map` measures on the real models.
"""

from __future__ import annotations

import torch
from torch import Tensor


def image_input(c: int, h: int, w: int) -> Tensor:
    """The input itself: group ``g`` at ``(i, j)`` is sub-pixel ``(g, i, j)``."""
    return torch.eye(c * h * w, dtype=torch.bool).view(c, h, w, c, h, w)


def all_groups(d: Tensor) -> Tensor:
    """What any group of a position depends on, broadcast back to every group."""
    return d.any(0, keepdim=True).expand_as(d)


def shifted(d: Tensor, di: int, dj: int) -> Tensor:
    """``out[:, i, j] = d[:, i + di, j + dj]``, empty outside the image."""
    out = torch.zeros_like(d)
    _, h, w = d.shape[:3]
    rows = slice(max(0, -di), min(h, h - di))
    cols = slice(max(0, -dj), min(w, w - dj))
    src_rows = slice(rows.start + di, rows.stop + di)
    src_cols = slice(cols.start + dj, cols.stop + dj)
    out[:, rows, cols] = d[:, src_rows, src_cols]
    return out


def centre(d: Tensor, mask_type: str) -> Tensor:
    """The centre tap: group ``g`` sees groups ``< g`` (mask A) or ``<= g`` (mask B)."""
    out = torch.zeros_like(d)
    for g in range(d.shape[0]):
        upto = g if mask_type == "A" else g + 1
        if upto:
            out[g] = d[:upto].any(0)
    return out


def masked_conv(d: Tensor, kh: int, kw: int, mask_type: str) -> Tensor:
    """A masked ``kh x kw`` convolution: every tap above or left of the centre, all groups."""
    out = centre(d, mask_type)
    every = all_groups(d)
    for di in range(-(kh // 2), kh // 2 + 1):
        for dj in range(-(kw // 2), kw // 2 + 1):
            if di < 0 or (di == 0 and dj < 0):
                out |= shifted(every, di, dj)
    return out


def stack(d: Tensor, n_layers: int, layer) -> Tensor:
    """7x7 mask A, then residual layers (layer output through a 1x1 mask B), then the head."""
    stream = masked_conv(d, 7, 7, "A")
    for _ in range(n_layers):
        stream = stream | centre(layer(stream), "B")
    head = centre(centre(stream, "B"), "B")
    return head  # (C, H, W, C, H, W) with the groups as output colours


def pixelcnn_field(c: int, h: int, w: int, n_layers: int) -> Tensor:
    def block(stream: Tensor) -> Tensor:
        return masked_conv(centre(stream, "B"), 3, 3, "B")

    return stack(image_input(c, h, w), n_layers, block)


def row_lstm_field(c: int, h: int, w: int, n_layers: int) -> Tensor:
    def layer(stream: Tensor) -> Tensor:
        gates = masked_conv(stream, 1, 3, "B")  # (G, H, W, ...)
        hidden = torch.zeros_like(stream)
        for i in range(h):
            row = gates[:, i].clone()
            if i > 0:
                above = all_groups(hidden[:, i - 1 : i])[:, 0]  # state-to-state, all groups
                for dj in (-1, 0, 1):
                    row |= shifted(above[:, None], 0, dj)[:, 0]
                row |= hidden[:, i - 1]  # the cell state of the row above, same group
            hidden[:, i] = row
        return hidden

    return stack(image_input(c, h, w), n_layers, layer)


def diagonal_bilstm_field(c: int, h: int, w: int, n_layers: int) -> Tensor:
    def direction(gates: Tensor, step: int) -> Tensor:
        # step = -1: state from the left neighbour and the pixel above (left to right);
        # step = +1: from the right neighbour and the pixel above (right to left).
        state = torch.zeros_like(gates)
        columns = range(w) if step == -1 else range(w - 1, -1, -1)
        for i in range(h):
            for j in columns:
                s = gates[:, i, j].clone()
                if 0 <= j + step < w:
                    s |= state[:, i, j + step].any(0, keepdim=True).expand_as(s)
                if i > 0:
                    s |= state[:, i - 1, j].any(0, keepdim=True).expand_as(s)
                state[:, i, j] = s
        return state

    def layer(stream: Tensor) -> Tensor:
        gates = centre(stream, "B")  # 1x1 mask-B input-to-state
        backward = direction(gates, +1)
        return direction(gates, -1) | shifted(backward, -1, 0)  # right-to-left shifted down a row

    return stack(image_input(c, h, w), n_layers, layer)


FIELDS = {
    "pixelcnn": pixelcnn_field,
    "row_lstm": row_lstm_field,
    "diagonal_bilstm": diagonal_bilstm_field,
}

"""Diagonal BiLSTM (Pixel RNN, section 3.2, figure 3 and table 1).

The input map is skewed so that each diagonal of the image becomes a column (see
:func:`pixelgen.nn.layers.skew`); an LSTM then moves over the columns left to right. Per
column ``t`` of the skewed map, for every row ``r`` at once::

    gates(r, t) = K_is (*) x(r, t)  +  K_ss (*) [h(r-1, t-1); h(r, t-1)]

    input-to-state K_is: 1x1, mask B       state-to-state K_ss: 2x1 over the previous
                                            column, rows r-1 and r (never r+1):
                                                  t-1   t
                                            r-1 [ 1 ]   .
                                            r   [ 1 ]   x

In image coordinates ``h(r, t-1)`` is the left neighbour and ``h(r-1, t-1)`` the pixel
above, so one direction sees everything above and to the left. The second direction runs
on the mirrored image (right to left); its output at row ``i`` would see row ``i`` to
the right of the pixel, so it is shifted down one row before the two are added::

    out(i, j) = h_left_to_right(i, j) + h_right_to_left(i - 1, j)

Together they cover every earlier pixel: the full context, save one corner the paper's
layout implies (the last sub-pixel of a row is unseen by the next row's pixels more than
three columns to its left; ``tests/test_causality.py`` pins it). Both directions are
advanced in one loop, :func:`pixelgen.nn.scans.diagonal_bilstm_scan`, which has its own
backward pass: per column and direction the gates are one matrix product of
``[K_is | K_ss]`` with the column's operands (its input pixels, the states above and
beside them), and only the image's own pixels are computed, not the skewed map's padding
(:func:`pixelgen.nn.layers.diagonal_order` lists them in scan order).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

import pixelgen
from pixelgen.blocks import (
    ConvStep,
    LayerStep,
    MaskedConv2d,
    ResidualStack,
    diagonal_bilstm_scan,
    lstm_update,
    stack_hyperparameters,
)


class DiagonalBiLSTMLayer(nn.Module):
    """One Diagonal BiLSTM layer: ``(B, 2h, H, W) -> (B, h, H, W)``, with a learned initial
    state per direction (Pixel RNN, section 5: the initial recurrent states are learned)."""

    # Version 2 added the learned initial state; a checkpoint written before (version 1, or no
    # version recorded) loads with it zero, which is what those layers computed.
    _version = 2

    def __init__(self, hidden_channels: int, colours: int) -> None:
        super().__init__()
        h = hidden_channels
        self.hidden_channels = h
        # Both directions' 1x1 input-to-state in one conv: 2 directions x 4 gates = 8 stacks.
        self.input_to_state = MaskedConv2d(2 * h, 8 * h, 1, "B", colours, out_stacks=8)
        # Per direction, the 2x1 kernel as one matrix over [h(r-1); h(r)] of the last column.
        self.state_to_state = nn.Parameter(torch.empty(2, 4 * h, 2 * h))
        nn.init.uniform_(self.state_to_state, -(2 * h) ** -0.5, (2 * h) ** -0.5)
        # Per direction, the state above row 0 and beside the first pixel of every row.
        self.initial_hidden = nn.Parameter(torch.zeros(2, h))
        self.initial_cell = nn.Parameter(torch.zeros(2, h))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:
        if local_metadata.get("version", 1) < 2:  # saved before the initial state was learned
            for name in ("initial_hidden", "initial_cell"):
                state_dict.setdefault(prefix + name, torch.zeros_like(getattr(self, name)))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)

    def forward(self, x: Tensor) -> Tensor:
        h = self.hidden_channels
        w_in = self.input_to_state.masked_weight().view(2, 4 * h, 2 * h)  # (8h, 2h, 1, 1) -> per direction
        b_in = self.input_to_state.bias.view(2, 4 * h)  # (8h,) -> (2, 4h)
        return diagonal_bilstm_scan(x, w_in, b_in, self.state_to_state,
                                    self.initial_hidden, self.initial_cell)  # (B, h, H, W)

    def sampling_step(self, n: int, height: int, width: int) -> LayerStep:
        """``forward`` at one pixel: ``(n, 2h)`` at ``(i, j)`` -> ``(n, h)``.

        Unskewed, the left-to-right direction is a recurrence over image positions::

            gates(i, j) = K_is x(i, j) + K_ss [h(i-1, j); h(i, j-1)],  cell from c(i, j-1)

        (the initial state above row 0 and left of every row), so it advances one pixel per
        step. The right-to-left direction is the same recurrence mirrored,
        from ``h(i-1, j)`` and ``h(i, j+1)``; its row ``i - 1`` is what pixel ``(i, j)``
        reads, so it is run over a whole row once that row is complete.
        """
        h = self.hidden_channels
        input_to_state = ConvStep(self.input_to_state, n, height, width)  # 1x1: no cache
        forward_weight, backward_weight = (w.t() for w in self.state_to_state)  # (2h, 4h) each
        backward_in = forward_weight.new_zeros(n, 4 * h, height, width)  # right-to-left gate inputs
        # Padded maps: forward_hidden[i + 1, j + 1] = h(i, j), forward_cell[i, j + 1] = c(i, j),
        # backward_hidden[i + 1, j] = h(i, j); the extra row and column hold the initial state.
        (forward_h0, backward_h0), (forward_c0, backward_c0) = self.initial_hidden, self.initial_cell  # (h,)
        forward_hidden = forward_h0[None, :, None, None].repeat(n, 1, height + 1, width + 1)
        forward_cell = forward_c0[None, :, None, None].repeat(n, 1, height, width + 1)
        backward_hidden = backward_h0[None, :, None, None].repeat(n, 1, height + 1, width + 1)
        rows_done = 0  # rows whose right-to-left pass has run

        def right_to_left(r: int) -> None:
            cell = backward_c0.expand(n, h)
            for j in reversed(range(width)):
                previous = torch.cat([backward_hidden[:, :, r, j], backward_hidden[:, :, r + 1, j + 1]], dim=1)
                hidden, cell = lstm_update(torch.addmm(backward_in[:, :, r, j], previous, backward_weight), cell)
                backward_hidden[:, :, r + 1, j] = hidden  # (n, h)

        def step(v: Tensor, i: int, j: int) -> Tensor:
            nonlocal rows_done
            gates_in = input_to_state(v, i, j)  # (n, 8h): both directions
            forward_in, backward_in[:, :, i, j] = gates_in.chunk(2, dim=1)  # (n, 4h) each
            while rows_done < i:  # row i - 1 is complete
                right_to_left(rows_done)
                rows_done += 1
            previous = torch.cat([forward_hidden[:, :, i, j + 1], forward_hidden[:, :, i + 1, j]], dim=1)
            hidden, cell = lstm_update(torch.addmm(forward_in, previous, forward_weight), forward_cell[:, :, i, j])
            forward_hidden[:, :, i + 1, j + 1], forward_cell[:, :, i, j + 1] = hidden, cell
            return hidden + backward_hidden[:, :, i, j]  # + right-to-left h(i - 1, j), its initial state for row 0

        return step


class DiagonalBiLSTM(ResidualStack):
    """Diagonal BiLSTM of table 1: a :class:`~pixelgen.blocks.ResidualStack` of
    :class:`DiagonalBiLSTMLayer` layers (hyperparameters: see :data:`SPEC`)."""

    def __init__(self, **stack: Any) -> None:
        super().__init__(DiagonalBiLSTMLayer, **stack)

    def sequential_steps(self, height: int, width: int) -> int:
        """One step per diagonal: the skewed map has ``width + height - 1`` columns."""
        return width + height - 1


SPEC = pixelgen.ModelSpec(
    "diagonal_bilstm",
    DiagonalBiLSTM,
    "Diagonal BiLSTM: skewed bidirectional LSTM, full context (Pixel RNN, 3.2)",
    hyperparameters=stack_hyperparameters(n_layers=12),
    paper_bits_per_dim={"cifar10": 3.00},
    receptive_field=(
        "Diagonal BiLSTM: the whole context above and to the left, save one corner the "
        "paper's layout implies: with one colour the last pixel of the row above is unseen "
        "when it is more than three columns to the right, since it reaches the network only "
        "through the 7x7 input convolution one row down."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

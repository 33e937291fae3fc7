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
    LayerStep,
    MaskedConv2d,
    ResidualStack,
    diagonal_bilstm_scan,
    lstm_update_,
    stack_hyperparameters,
    torch_lstm,
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
        step: one matrix product of ``[K_is | K_ss]`` with the pixel's operands and the cell
        update in place. The right-to-left direction is the same recurrence mirrored, from
        ``h(i-1, j)`` and ``h(i, j+1)``; its row ``i - 1`` is what pixel ``(i, j)`` reads,
        so it runs over a whole row once that row is complete, as one call of
        :class:`torch.nn.LSTM` over the row read right to left (:func:`torch_lstm`).

        Each pixel keeps the operands of both directions in one column of a cache
        (channels first, images last), pixel ``(i, j)`` at ``[i, j + 1]``::

            [ hb(i-1, j) | x(i, j) | hf(i-1, j) | hf(i, j-1) ]      (5h, n)
              right-to-left: [0, 3h)   left-to-right: [h, 5h)
        """
        h = self.hidden_channels
        w_in = self.input_to_state.masked_weight().view(2, 4 * h, 2 * h)  # per direction
        forward_weight = torch.cat([w_in[0], self.state_to_state[0]], dim=1)  # (4h, 4h): x, above, left
        forward_bias, backward_bias = self.input_to_state.bias.view(2, 4 * h)
        above_b, beside_b = self.state_to_state[1].split(h, dim=1)  # (4h, h) each
        backward = torch_lstm(torch.cat([above_b, w_in[1]], dim=1), beside_b, backward_bias)  # above, x
        (forward_h0, backward_h0), (forward_c0, backward_c0) = self.initial_hidden, self.initial_cell  # (h,)
        backward_state = tuple(v.expand(1, n, h).contiguous() for v in (backward_h0, backward_c0))  # right of a row
        operands = forward_weight.new_zeros(height + 1, width + 2, 5 * h, n)  # row H, columns 0, W+1: spill
        operands[0, :, :h] = backward_h0[:, None]  # hb above row 0: also what row 0's pixels add
        operands[0, :, 3 * h : 4 * h] = forward_h0[:, None]  # hf above row 0
        operands[:, 1, 4 * h :] = forward_h0[:, None]  # hf left of every row
        forward_cell = forward_weight.new_empty(height, width + 1, h, n)  # [i, j + 1]: c(i, j)
        forward_cell[:, 0] = forward_c0[:, None]
        rows_done = 0  # rows whose right-to-left pass has run

        def right_to_left(r: int) -> None:
            row = operands[r, 1 : width + 1, : 3 * h].flip(0).permute(0, 2, 1)  # (W, n, 3h), right to left
            hidden, _ = backward(row, backward_state)  # (W, n, h)
            operands[r + 1, 1 : width + 1, :h] = hidden.flip(0).permute(0, 2, 1)  # above row r + 1

        def step(v: Tensor, i: int, j: int) -> Tensor:
            nonlocal rows_done
            while rows_done < i:  # row i - 1 is complete
                right_to_left(rows_done)
                rows_done += 1
            column = operands[i, j + 1]  # (5h, n)
            column[h : 3 * h] = v.t()
            gates = torch.addmm(forward_bias[:, None], forward_weight, column[h:])  # (4h, n)
            hidden = operands[i + 1, j + 1, 3 * h : 4 * h]  # hf(i, j): above (i + 1, j)
            lstm_update_(gates, forward_cell[i, j], forward_cell[i, j + 1], hidden)
            operands[i, j + 2, 4 * h :] = hidden  # left of (i, j + 1)
            return (hidden + column[:h]).t()  # + right-to-left h(i - 1, j), its initial state for row 0

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

"""Row LSTM (Pixel RNN, section 3.1, figure 2 and table 1).

The image is processed one row at a time, top to bottom. Every position of a row is
computed at once from two convolutions::

    gates(i, :) = K_is (*) x(i, :)  +  K_ss (*) h(i-1, :)        (B, 4h, W)

    input-to-state K_is, 3x1 along the row, mask B    state-to-state K_ss, 3x1
    over the current row (columns j-1, j):            over the previous row's hidden
                                                      state (columns j-1, j, j+1):
        row i-1:  .   .   .                               row i-1:  1   1   1
        row i  :  1   x   0                               row i  :  .   x   .

followed by the LSTM update (input, forget, output gates sigmoid, content tanh). The
receptive field of ``h(i, j)`` is a triangle above the pixel, widening by one column on
each side per row, plus ``n_layers`` pixels to its left on its own row; it misses the
rest of the context. Per row, both convolutions are one matrix product over the row's
input (columns j-1, j: the masked tap j+1 is skipped) and the row above's hidden state
(columns j-1, j, j+1), followed by the cell update: :func:`pixelgen.nn.scans.row_lstm_scan`,
which has its own backward pass.
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
    lstm_update_,
    row_lstm_scan,
    stack_hyperparameters,
)


class RowLSTMLayer(nn.Module):
    """One Row LSTM layer: ``(B, 2h, H, W) -> (B, h, H, W)``, with a learned initial state."""

    def __init__(self, hidden_channels: int, colours: int) -> None:
        super().__init__()
        h = hidden_channels
        self.hidden_channels = h
        # 3x1 along the row = kernel (1, 3); the four gates are colour-split separately.
        self.input_to_state = MaskedConv2d(2 * h, 4 * h, (1, 3), "B", colours, out_stacks=4)
        self.state_to_state = nn.Conv1d(h, 4 * h, 3, padding=1)
        self.initial_hidden = nn.Parameter(torch.zeros(h))
        self.initial_cell = nn.Parameter(torch.zeros(h))

    def forward(self, x: Tensor) -> Tensor:
        # The mask zeroes the 1x3 kernel's tap j+1; the scan takes taps j-1 and j only.
        w_in = self.input_to_state.masked_weight()[:, :, 0, :2]  # (4h, 2h, 1, 3) -> (4h, 2h, 2)
        bias = self.input_to_state.bias + self.state_to_state.bias  # (4h,): both convolutions'
        return row_lstm_scan(x, w_in, bias, self.state_to_state.weight, self.initial_hidden, self.initial_cell)

    def sampling_step(self, n: int, height: int, width: int) -> LayerStep:
        """``forward`` at one pixel: ``(n, 2h)`` at ``(i, j)`` -> ``(n, h)``.

        Both convolutions are one matrix product over three columns of a cache of operands,
        each column ``[x(i, j'); h(i-1, j')]`` (channels first, images last), so a pixel's
        step is one copy, one product and the cell update in place::

            operands[i, j + 1] = [x(i, j) (2h); h(i-1, j) (h)]     (3h, n)
            gates(i, j) = [K_is | K_ss] @ operands[i, j : j + 3]     taps j-1, j, j+1

        Tap ``j+1`` of ``K_is`` is masked to zero, so the not yet written ``x(i, j+1)``
        does not count; the pad columns are zero (the convolutions' padding), and row 0
        holds the initial state.
        """
        h = self.hidden_channels
        w_in = self.input_to_state.masked_weight()[:, :, 0]  # (4h, 2h, 3): taps j-1, j, j+1
        weight = torch.cat([w_in, self.state_to_state.weight], dim=1)  # (4h, 3h, 3)
        weight = weight.permute(0, 2, 1).reshape(4 * h, 9 * h)  # (4h, 3 columns x 3h): the cache's order
        bias = (self.input_to_state.bias + self.state_to_state.bias)[:, None]  # (4h, 1)
        operands = weight.new_zeros(height + 1, width + 2, 3 * h, n)  # row i + 1 holds h(i, :)
        operands[0, 1:-1, 2 * h :] = self.initial_hidden[:, None]
        cell = weight.new_empty(height + 1, width, h, n)  # row i + 1 holds c(i, :)
        cell[0] = self.initial_cell[:, None]

        def step(v: Tensor, i: int, j: int) -> Tensor:
            operands[i, j + 1, : 2 * h] = v.t()  # (2h, n)
            gates = torch.addmm(bias, weight, operands[i, j : j + 3].flatten(0, 1))  # (4h, n)
            hidden = operands[i + 1, j + 1, 2 * h :]  # (h, n)
            lstm_update_(gates, cell[i, j], cell[i + 1, j], hidden)
            return hidden.t()  # (n, h)

        return step


class RowLSTM(ResidualStack):
    """Row LSTM of table 1: a :class:`~pixelgen.blocks.ResidualStack` of
    :class:`RowLSTMLayer` layers (hyperparameters: see :data:`SPEC`)."""

    def __init__(self, **stack: Any) -> None:
        super().__init__(RowLSTMLayer, **stack)

    def sequential_steps(self, height: int, width: int) -> int:
        """One step per row: the rows of a layer are computed top to bottom."""
        return height


SPEC = pixelgen.ModelSpec(
    "row_lstm",
    RowLSTM,
    "Row LSTM: row-by-row LSTM, triangular field (Pixel RNN, 3.1)",
    hyperparameters=stack_hyperparameters(n_layers=12),
    paper_bits_per_dim={"cifar10": 3.07},
    receptive_field=(
        "Row LSTM: a triangle above the pixel, widening by one column on each side per row, "
        "plus a few pixels to its left on its own row; it misses the rest of the context."
    ),
)


@pixelgen.hookimpl
def pixelgen_models():
    return [SPEC]

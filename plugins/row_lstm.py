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
    ConvStep,
    LayerStep,
    MaskedConv2d,
    ResidualStack,
    lstm_update,
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

        The states of every row are kept, row ``i`` of the padded maps holding row
        ``i - 1`` of the image, so that pixel ``(i, j)`` reads ``h(i-1, j-1..j+1)`` and
        ``c(i-1, j)`` and writes its own.
        """
        h = self.hidden_channels
        input_to_state = ConvStep(self.input_to_state, n, height, width)
        weight = self.state_to_state.weight.flatten(1).t()  # (h * 3, 4h): columns j-1, j, j+1
        bias = self.state_to_state.bias
        hidden = weight.new_zeros(n, h, height + 1, width + 2)  # zero columns: conv1d's padding
        hidden[:, :, 0, 1:-1] = self.initial_hidden[:, None]
        cell = weight.new_zeros(n, h, height + 1, width)
        cell[:, :, 0] = self.initial_cell[:, None]

        def step(v: Tensor, i: int, j: int) -> Tensor:
            above = hidden[:, :, i, j : j + 3].reshape(n, -1)  # (n, h * 3)
            gates = input_to_state(v, i, j) + torch.addmm(bias, above, weight)  # (n, 4h)
            new_hidden, new_cell = lstm_update(gates, cell[:, :, i, j])  # (n, h) each
            hidden[:, :, i + 1, j + 1], cell[:, :, i + 1, j] = new_hidden, new_cell
            return new_hidden

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

"""The hand-written scans (pixelgen.nn.scans) compute what the op-by-op scans computed.

The references below are the layers' forward passes as they were written before the
scans had their own backward (pixelgen 0.1.0): every step spelled out with torch ops, the
derivatives left to autograd. Outputs, gradients (input, every parameter) and
forward-mode derivatives must agree in float64 to rounding, at perturbed weights (zero
biases and initial states would hide mistakes), for grey and RGB colour groups, odd and
non-square sizes, batches of three; in float32 (where the products run through oneDNN)
to float32 rounding.
"""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from einops import rearrange
from pixelgen_plugins.diagonal_bilstm import DiagonalBiLSTMLayer
from pixelgen_plugins.row_lstm import RowLSTMLayer
from torch import Tensor, nn
from torch.func import functional_call

from pixelgen.nn.layers import diagonal_order, lstm_update, lstm_update_, torch_lstm
from pixelgen.nn.scans import matmul

SIZES = [(5, 6), (4, 7), (7, 4), (1, 5), (5, 1), (3, 3)]


def reference_row_lstm(layer: RowLSTMLayer, x: Tensor) -> Tensor:
    """Row LSTM: one conv1d and one cell update per row."""
    b, _, _, width = x.shape
    gates_in = rearrange(layer.input_to_state(x), "b g h w -> h b g w")  # (H, B, 4h, W)
    hidden = layer.initial_hidden[None, :, None].expand(b, -1, width)  # (B, h, W)
    cell = layer.initial_cell[None, :, None].expand(b, -1, width)  # (B, h, W)
    rows = []
    for gates_row in gates_in.unbind(0):
        gates = gates_row + layer.state_to_state(hidden)  # (B, 4h, W)
        hidden, cell = lstm_update(gates, cell)
        rows.append(hidden)
    return torch.stack(rows, dim=2)  # (B, h, H, W)


def inverse_permutation(order: Tensor) -> Tensor:
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    return inverse


def shift_down(x: Tensor) -> Tensor:
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]


def reference_diagonal_bilstm(layer: DiagonalBiLSTMLayer, x: Tensor) -> Tensor:
    """Diagonal BiLSTM: both directions stacked, one bmm and one cell update per column."""
    b, _, height, width = x.shape
    h = layer.hidden_channels
    order, sizes = diagonal_order(height, width, x.device)  # (L,), L = H*W
    mirrored = order // width * width + (width - 1 - order % width)
    gates_in = layer.input_to_state(x).view(b, 2, 4 * h, height * width).permute(1, 2, 3, 0)  # (2, 4h, HW, B)
    gates_in = torch.stack([gates_in[0].index_select(1, order), gates_in[1].index_select(1, mirrored)])
    initial_hidden = layer.initial_hidden[:, :, None, None].expand(2, h, 1, b)  # above row 0, left of a row
    initial_cell = layer.initial_cell[:, :, None, None].expand(2, h, 1, b)
    hidden = cell = x.new_zeros(2, h, 0, b)  # (2, h, rows of the last column, B)
    first_row = 0
    columns = []
    for t, gates_t in enumerate(gates_in.split(sizes, dim=2)):  # gates_t: (2, 4h, n, B)
        first, last = max(0, t - width + 1), min(height - 1, t)
        n = last - first + 1
        new_row = last >= first_row + hidden.shape[2]
        window = [initial_hidden if first == 0 else hidden[:, :, first - 1 - first_row : first - first_row]]
        window += [hidden[:, :, first - first_row :]] + ([initial_hidden] if new_row else [])
        window = torch.cat(window, dim=2)  # (2, h, n+1, B)
        previous = torch.cat([window[:, :, :-1], window[:, :, 1:]], dim=1)  # (2, 2h, n, B)
        state = torch.bmm(layer.state_to_state, previous.view(2, 2 * h, n * b)).view(2, 4 * h, n, b)
        cell = cell[:, :, first - first_row :]
        if new_row:
            cell = torch.cat([cell, initial_cell], dim=2)
        hidden, cell = lstm_update(gates_t + state, cell)  # (2, h, n, B)
        columns.append(hidden)
        first_row = first
    out = torch.cat(columns, dim=2)  # (2, h, L, B) in scan order
    forward_out = out[0].index_select(1, inverse_permutation(order))
    backward_out = out[1].index_select(1, inverse_permutation(mirrored))
    forward_out = rearrange(forward_out, "k (i j) b -> b k i j", i=height)  # (B, h, H, W)
    backward_out = rearrange(backward_out, "k (i j) b -> b k i j", i=height)
    above_row_0 = layer.initial_hidden[1][None, :, None, None].expand(b, h, 1, width)
    return forward_out + torch.cat([above_row_0, backward_out[:, :, :-1]], dim=2)  # shifted down a row


LAYERS = {
    "row_lstm": (RowLSTMLayer, reference_row_lstm),
    "diagonal_bilstm": (DiagonalBiLSTMLayer, reference_diagonal_bilstm),
}


class Reference(nn.Module):
    """The reference forward pass of ``layer``, as a module with the same parameter names."""

    def __init__(self, name: str, layer: nn.Module) -> None:
        super().__init__()
        self.forward_pass, self.layer = LAYERS[name][1], layer

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_pass(self.layer, x)


def perturbed_layer(name: str, hidden: int, colours: int, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(0)
    layer = LAYERS[name][0](hidden, colours).to(dtype)
    with torch.no_grad():
        for param in layer.parameters():
            param.add_(0.5 * torch.randn_like(param))
    return layer


def outputs_and_gradients(forward, layer: nn.Module, x: Tensor) -> list[Tensor]:
    x = x.detach().requires_grad_(True)
    out = forward(x)
    weights = torch.randn(out.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(out.dtype)
    grads = torch.autograd.grad((out * weights).sum(), [x, *layer.parameters()])
    return [out, *grads]


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_scan_equals_the_op_by_op_reference(name, colours, size):
    layer = perturbed_layer(name, 6, colours)
    x = torch.randn(3, 12, *size, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    got = outputs_and_gradients(layer, layer, x)
    want = outputs_and_gradients(lambda v: LAYERS[name][1](layer, v), layer, x)
    names = ["output", "input", *(n for n, _ in layer.named_parameters())]
    for label, g, w in zip(names, got, want):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10, msg=label)


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # torch's forward-mode decompositions
@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("colours", [1, 3])
@pytest.mark.parametrize("size", [(5, 6), (4, 7)])
def test_forward_mode_derivative_equals_the_reference(name, colours, size):
    layer = perturbed_layer(name, 6, colours)
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(3, 12, *size, dtype=torch.float64, generator=generator)
    # Inside a model the tangents depend on weights that require grad, so they do too.
    tangent = torch.randn(x.shape, dtype=x.dtype, generator=generator).requires_grad_()
    params = {k: v.detach() for k, v in layer.named_parameters()}
    with fwAD.dual_level():
        dual_x = fwAD.make_dual(x, tangent)
        dual_params = {k: fwAD.make_dual(v, torch.randn(v.shape, dtype=v.dtype, generator=generator))
                       for k, v in params.items()}
        got = fwAD.unpack_dual(functional_call(layer, dual_params, (dual_x,))).tangent
        want = fwAD.unpack_dual(functional_call(Reference(name, layer), {f"layer.{k}": v for k, v in
                                                                         dual_params.items()}, (dual_x,))).tangent
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_float32_scan_equals_the_reference_to_float32_rounding(name):
    layer = perturbed_layer(name, 8, 1, torch.float32)
    x = torch.randn(4, 16, 6, 5, generator=torch.Generator().manual_seed(4))
    got = outputs_and_gradients(layer, layer, x)
    want = outputs_and_gradients(Reference(name, layer.double()), layer, x.double())
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w.float(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("transposed", [False, True])
def test_matmul_is_the_matrix_product(dtype, transposed):
    generator = torch.Generator().manual_seed(5)
    a = torch.randn(24, 40, dtype=dtype, generator=generator)
    b = torch.randn(40, 72, dtype=dtype, generator=generator)
    b = b.t().contiguous().t() if transposed else b
    torch.testing.assert_close(matmul(a, b), a @ b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_under_autocast_the_scan_runs_in_float32(name):
    layer = perturbed_layer(name, 8, 1, torch.float32)
    x = torch.randn(2, 16, 4, 5, generator=torch.Generator().manual_seed(6)).bfloat16()  # an autocast conv's output
    want = layer(x.float())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x.requires_grad_())
        got.sum().backward()
    assert got.dtype == torch.float32 and x.grad.dtype == torch.bfloat16
    torch.testing.assert_close(got, want)


def test_the_sampling_cells_compute_lstm_update():
    """lstm_update_ (in place, channels first) and torch_lstm (torch's LSTM over a sequence,
    gates reordered) compute exactly the steps of lstm_update, in pixelgen's gate order."""
    h, n, k, steps = 3, 2, 5, 4
    generator = torch.Generator().manual_seed(0)
    w_input, w_hidden, bias = (torch.randn(*shape, generator=generator, dtype=torch.float64)
                               for shape in ((4 * h, k), (4 * h, h), (4 * h,)))
    inputs = torch.randn(steps, n, k, generator=generator, dtype=torch.float64)
    hidden0, cell0 = torch.randn(2, 1, n, h, generator=generator, dtype=torch.float64)
    hidden, cell, expected = hidden0[0], cell0[0], []
    for t in range(steps):
        gates = inputs[t] @ w_input.t() + hidden @ w_hidden.t() + bias  # (n, 4h)
        in_place = torch.empty(2, h, n, dtype=torch.float64)
        lstm_update_(gates.t().contiguous(), cell.t(), in_place[0], in_place[1])
        hidden, cell = lstm_update(gates, cell)
        torch.testing.assert_close(in_place, torch.stack([cell.t(), hidden.t()]), rtol=1e-14, atol=1e-14)
        expected.append(hidden)
    with torch.no_grad():
        got, _ = torch_lstm(w_input, w_hidden, bias)(inputs, (hidden0, cell0))  # (steps, n, h)
    torch.testing.assert_close(got, torch.stack(expected), rtol=1e-13, atol=1e-13)

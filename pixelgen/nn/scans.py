"""The LSTM scans of the Row LSTM and the Diagonal BiLSTM, with a hand-written backward.

Both recurrences (Pixel RNN, sections 3.1 and 3.2) take many short sequential steps: one
per row, or one per diagonal, each a few small matrix products and the LSTM cell
(equation 3). Written op by op, every step allocates its windows, gates and states, and
autograd records each slice, concatenation and activation and replays it backwards. Here
each scan is one ``torch.autograd.Function`` that computes the same numbers:

* a step's gates are one matrix product: the input-to-state and state-to-state kernels
  side by side, ``(4h, K)``, times the step's *operands*, ``(K, positions * B)``: the
  input pixels the input-to-state kernel reads, then the previous states the
  state-to-state kernel reads (zero beyond the image). The operands of each step are one
  contiguous tensor of their own (one buffer of all steps, ~30 MB at 28x28 and batch 32,
  would be mapped and page-faulted in afresh by the allocator on every call), written as
  the scan goes and kept for the backward pass, where the weight gradient is the gate
  gradients times the same blocks;
* the cell update (:func:`cell_forward_`) works in place on the step's gates and writes
  the cell and hidden states into buffers allocated once per call;
* the backward pass runs the recurrence in reverse (:func:`cell_backward_`), from the
  activated gates and cell states of the forward pass, recomputing only tanh(c).

tanh(z) is computed as ``2 sigmoid(2z) - 1`` (torch's CPU tanh is several times slower
than its sigmoid): the content gate's weights are doubled for the forward pass, which is
exact in floating point. Matrix products go through oneDNN where torch offers it for the
dtype (:func:`matmul`).

Buffers are channel-major with the batch innermost, ``(channels, positions, B)``.
"""

from __future__ import annotations

from functools import cache, lru_cache, reduce, wraps

import torch
from torch import Tensor

from pixelgen.nn.layers import diagonal_order


@cache
def _onednn_matmul(device_type: str, dtype: torch.dtype) -> bool:
    """Whether oneDNN's inner product (``torch.ops.mkldnn._linear_pointwise``, which torch
    keeps for its compiler's CPU backend) runs for ``dtype`` and agrees with ``torch.mm``."""
    if device_type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    a, b = torch.arange(6.0).view(2, 3), torch.arange(12.0).view(3, 4)
    try:
        return torch.equal(torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], ""), a @ b)
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


def matmul(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` for a contiguous ``a`` ``(M, K)`` and a contiguous or transposed ``b`` ``(K, N)``.

    On the CPU in float32 it runs oneDNN's inner product, about twice as fast as
    ``torch.mm`` (MKL) at these shapes on one thread; elsewhere, and under
    ``torch.compile`` (whose lowering of that op takes constant weights only), ``torch.mm``.
    """
    fast = b.is_contiguous() or b.t().is_contiguous()
    if fast and not torch.compiler.is_compiling() and _onednn_matmul(a.device.type, a.dtype):
        return torch.ops.mkldnn._linear_pointwise(a, b.t(), None, "none", [], "")
    return a @ b


def _outside_autocast(method):
    """Run a scan's ``forward``, ``backward`` or ``jvp`` with autocast off on the device of
    its first tensor: the scans write into buffers of one dtype (see :func:`_apply`)."""

    @wraps(method)
    def wrapped(ctx, first, *rest):
        with torch.autocast(first.device.type, enabled=False):
            return method(ctx, first, *rest)

    return wrapped


def _apply(function: type[torch.autograd.Function], *tensors: Tensor) -> Tensor:
    """``function.apply`` in the common dtype of ``tensors`` (float32 for a bfloat16 input
    from autocast and float32 weights: the cell states keep full precision)."""
    dtype = reduce(torch.promote_types, (t.dtype for t in tensors))
    return function.apply(*(t.to(dtype) for t in tensors))


def _gates(gates: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split ``(..., 4h, N)`` into the four ``(..., h, N)`` stacks: input, forget, output, content."""
    return gates.unflatten(-2, (4, -1)).unbind(-3)


def _tanh(x: Tensor, out: Tensor) -> Tensor:
    """``out = tanh(x) = 2 sigmoid(2x) - 1``; ``out`` may not overlap ``x``."""
    torch.mul(x, 2, out=out).sigmoid_()
    return out.mul_(2).sub_(1)


def _content_doubled(weight: Tensor, dim: int) -> Tensor:
    """A copy of ``weight`` with the content gate's quarter of dimension ``dim`` (size 4h) doubled."""
    quarter = weight.shape[dim] // 4
    doubled = weight.clone(memory_format=torch.contiguous_format)
    doubled.narrow(dim, 3 * quarter, quarter).mul_(2)
    return doubled


def cell_forward_(gates: Tensor, cell_prev: Tensor, cell: Tensor, hidden: Tensor) -> None:
    """One LSTM step in place (Pixel RNN, equation 3), for ``N`` positions at once.

    Args:
        gates: ``(..., 4h, N)`` pre-activations (input, forget, output, content), the
            content doubled; on return the activations ``i, f, o`` (sigmoid), ``g`` (tanh).
        cell_prev: ``(..., h, N)`` previous cell state.
        cell, hidden: ``(..., h, N)``, written.
    """
    gates.sigmoid_()
    i, f, o, g = _gates(gates)
    g.mul_(2).sub_(1)  # tanh(z) from sigmoid(2z)
    torch.mul(f, cell_prev, out=cell).addcmul_(i, g)
    _tanh(cell, out=hidden).mul_(o)


def cell_backward_(
    gates: Tensor, cell_prev: Tensor, cell: Tensor, d_hidden: Tensor, d_cell: Tensor,
    d_cell_prev: Tensor, d_gates: Tensor, scratch: Tensor,
) -> None:
    """The backward pass of :func:`cell_forward_`; reads ``gates``, ``cell_prev`` and ``cell`` only.

    Args:
        gates: ``(..., 4h, N)`` activations as :func:`cell_forward_` left them.
        cell_prev, cell: ``(..., h, N)`` the step's input and output cell states.
        d_hidden: ``(..., h, N)`` gradient of the step's hidden state.
        d_cell: ``(..., h, N)`` gradient reaching the cell from later steps; on return
            the cell's whole gradient.
        d_cell_prev: ``(..., h, N)``, written: gradient of ``cell_prev``.
        d_gates: ``(..., 4h, N)``, written: gradient of the pre-activations (content undoubled).
        scratch: ``(..., 2h, N)`` work space.
    """
    i, f, o, g = _gates(gates)
    di, df, do, dg = _gates(d_gates)
    tanh_cell, tmp = scratch.unflatten(-2, (2, -1)).unbind(-3)
    _tanh(cell, out=tanh_cell)
    torch.mul(tanh_cell, tanh_cell, out=tmp).sub_(1).mul_(o)  # o (tanh(c)^2 - 1)
    d_cell.addcmul_(d_hidden, tmp, value=-1)  # += d_hidden * o * (1 - tanh(c)^2)
    torch.mul(d_cell, f, out=d_cell_prev)
    one = torch.ones((), dtype=g.dtype, device=g.device)
    torch.addcmul(one, g, g, value=-1, out=dg).mul_(i).mul_(d_cell)  # dc * i * (1 - g^2)
    ifo, d_ifo = gates[..., : 3 * i.shape[-2], :], d_gates[..., : 3 * i.shape[-2], :]
    torch.addcmul(ifo, ifo, ifo, value=-1, out=d_ifo)  # sigmoid'
    di.mul_(g).mul_(d_cell)
    df.mul_(cell_prev).mul_(d_cell)
    do.mul_(tanh_cell).mul_(d_hidden)


def cell_tangent(
    gates: Tensor, cell_prev: Tensor, cell: Tensor, gates_dot: Tensor, cell_prev_dot: Tensor
) -> tuple[Tensor, Tensor]:
    """Forward-mode derivative of :func:`cell_forward_`: the tangents of ``(hidden, cell)``.

    Args:
        gates: ``(..., 4h, N)`` activations as :func:`cell_forward_` left them.
        cell_prev, cell: ``(..., h, N)`` the step's input and output cell states.
        gates_dot: ``(..., 4h, N)`` tangent of the pre-activations (content undoubled).
        cell_prev_dot: ``(..., h, N)`` tangent of ``cell_prev``.
    """
    i, f, o, g = _gates(gates)
    ifo = gates[..., : 3 * i.shape[-2], :]
    di, df, do, dg = _gates(gates_dot * torch.cat([ifo * (1 - ifo), 1 - g * g], dim=-2))  # sigmoid', tanh'
    tanh_cell = torch.tanh(cell)
    cell_dot = df * cell_prev + f * cell_prev_dot + di * g + i * dg
    return do * tanh_cell + o * (1 - tanh_cell * tanh_cell) * cell_dot, cell_dot


# ----------------------------------------------------------------------------- Row LSTM


def _row_block(x: Tensor, r: int, h: int) -> Tensor:
    """The operands of row ``r``'s gate product, ``(7h, W, B)``, its states still to be written.

    The input at columns ``j-1`` and ``j`` (2h each), then the states of row ``r-1`` at
    columns ``j-1``, ``j``, ``j+1`` (h each; zero beyond the edges). Row ``H`` has no
    input (its states are the last row's output).
    """
    batch, channels, height, width = x.shape
    block = x.new_empty(2 * channels + 3 * h, width, batch)  # (7h, W, B)
    left, here, states = block[:channels], block[channels : 2 * channels], block[2 * channels :]
    if r < height:
        here.copy_(x[:, :, r].permute(1, 2, 0))  # (2h, W, B)
        left[:, 0] = 0
        left[:, 1:] = here[:, :-1]
    states[:h, 0] = 0
    states[2 * h :, -1] = 0
    return block


def _row_weight(w_in: Tensor, w_state: Tensor) -> Tensor:
    """The taps of both convolutions as one ``(4h, 7h)`` matrix in the order of :func:`_row_block`."""
    return torch.cat([*w_in.unbind(2), *w_state.unbind(2)], dim=1)


class _RowScan(torch.autograd.Function):
    """The Row LSTM layer's recurrence; see :func:`row_lstm_scan`."""

    @staticmethod
    @_outside_autocast
    def forward(ctx, x, w_in, b, w_state, hidden0, cell0):
        batch, _, height, width = x.shape
        h = hidden0.shape[0]
        weight = _content_doubled(_row_weight(w_in, w_state), 0)  # (4h, 7h)
        bias = _content_doubled(b[:, None], 0)  # (4h, 1)
        cell = x.new_empty(height + 1, h, width, batch)  # (H+1, h, W, B): row r+1 holds image row r
        cell[0] = cell0[:, None, None]
        operands = [_row_block(x, 0, h)]  # per row (7h, W, B); row 0's states: the initial state
        operands[0][-3 * h : -2 * h, 1:] = operands[0][-2 * h : -h] = operands[0][-h:, :-1] = hidden0[:, None, None]
        out = x.new_empty(batch, h, height, width)
        gates = []
        for r in range(height):
            row_gates = matmul(weight, operands[r].flatten(1)).add_(bias)  # (4h, W*B)
            operands.append(_row_block(x, r + 1, h))
            states = operands[r + 1][-3 * h :]  # (3h, W, B): the next row's state taps
            cell_forward_(row_gates, cell[r].flatten(1), cell[r + 1].flatten(1), states[h : 2 * h].flatten(1))
            states[:h, 1:] = states[h : 2 * h, :-1]  # tap j-1
            states[2 * h :, :-1] = states[h : 2 * h, 1:]  # tap j+1
            out[:, :, r] = states[h : 2 * h].permute(2, 0, 1)  # (B, h, W)
            gates.append(row_gates)
        ctx.save_for_backward(w_in, w_state, cell, *operands, *gates)
        ctx.save_for_forward(w_in, w_state, cell, *operands, *gates)
        return out

    @staticmethod
    @_outside_autocast
    def jvp(ctx, x_dot, w_in_dot, b_dot, w_state_dot, hidden0_dot, cell0_dot):
        w_in, w_state, cell, *saved = ctx.saved_tensors
        operands, gates = saved[: len(saved) // 2 + 1], saved[len(saved) // 2 + 1 :]
        h, (width, batch) = w_state.shape[1], cell.shape[2:]
        weight, weight_dot = _row_weight(w_in, w_state), _row_weight(w_in_dot, w_state_dot)  # (4h, 7h)
        block = _row_block(x_dot, 0, h)  # the operands' tangents, row by row
        block[-3 * h : -2 * h, 1:] = block[-2 * h : -h] = block[-h:, :-1] = hidden0_dot[:, None, None]
        cell_dot = cell0_dot[:, None].expand(h, width * batch)
        out = x_dot.new_empty(batch, h, len(gates), width)
        for r in range(len(gates)):
            gates_dot = weight @ block.flatten(1) + weight_dot @ operands[r].flatten(1) + b_dot[:, None]
            hidden_dot, cell_dot = cell_tangent(gates[r], cell[r].flatten(1), cell[r + 1].flatten(1),
                                                gates_dot, cell_dot)  # (h, W*B) each
            block = _row_block(x_dot, r + 1, h)
            states = block[-3 * h :]  # (3h, W, B)
            states[h : 2 * h] = hidden_dot.view(h, width, batch)
            states[:h, 1:] = states[h : 2 * h, :-1]
            states[2 * h :, :-1] = states[h : 2 * h, 1:]
            out[:, :, r] = states[h : 2 * h].permute(2, 0, 1)  # (B, h, W)
        return out

    @staticmethod
    @_outside_autocast
    def backward(ctx, grad):
        w_in, w_state, cell, *saved = ctx.saved_tensors
        operands, gates = saved[: len(saved) // 2 + 1], saved[len(saved) // 2 + 1 :]  # H+1 and H
        h, channels, (width, batch) = w_state.shape[1], w_in.shape[1], cell.shape[2:]
        weight_t = _row_weight(w_in, w_state).t().contiguous()  # (7h, 4h)
        d_weight, d_bias = weight_t.new_zeros(weight_t.shape[::-1]), weight_t.new_zeros(4 * h)
        d_inputs = grad.new_empty(len(gates), channels, width, batch)  # (H, 2h, W, B)
        grad_rows = grad.permute(2, 1, 3, 0)  # (H, h, W, B)
        d_hidden = grad_rows[-1].clone()  # (h, W, B), of the row being processed
        d_cell, d_cell_prev = grad.new_zeros(h, width * batch), grad.new_empty(h, width * batch)
        d_gates, scratch = grad.new_empty(4 * h, width * batch), grad.new_empty(2 * h, width * batch)
        for r in reversed(range(len(gates))):
            cell_backward_(gates[r], cell[r].flatten(1), cell[r + 1].flatten(1), d_hidden.flatten(1),
                           d_cell, d_cell_prev, d_gates, scratch)
            d_weight += matmul(d_gates, operands[r].flatten(1).t())
            d_bias += d_gates.sum(1)
            left, here, states = matmul(weight_t, d_gates).view(-1, width, batch).split([channels, channels, 3 * h])
            d_inputs[r] = here
            d_inputs[r, :, :-1] += left[:, 1:]
            d_hidden.copy_(grad_rows[r - 1]) if r else d_hidden.zero_()  # then the row above's share:
            d_hidden += states[h : 2 * h]
            d_hidden[:, :-1] += states[:h, 1:]
            d_hidden[:, 1:] += states[2 * h :, :-1]
            d_cell, d_cell_prev = d_cell_prev, d_cell
        d_w_in = torch.stack(d_weight[:, : 2 * channels].split(channels, dim=1), dim=2)  # (4h, 2h, 2)
        d_w_state = torch.stack(d_weight[:, 2 * channels :].split(h, dim=1), dim=2)  # (4h, h, 3)
        d_x = d_inputs.permute(3, 1, 0, 2)  # (B, 2h, H, W)
        return d_x, d_w_in, d_bias, d_w_state, d_hidden.sum((1, 2)), d_cell.sum(1)


def row_lstm_scan(
    x: Tensor, w_in: Tensor, b: Tensor, w_state: Tensor, hidden0: Tensor, cell0: Tensor
) -> Tensor:
    """The Row LSTM recurrence (Pixel RNN, section 3.1) over all rows of a layer.

    Row ``r`` of the output is ``h(r)`` with ``gates(r) = w_in (*) x(r) + w_state (*) h(r-1) + b``.

    Args:
        x: ``(B, 2h, H, W)`` input.
        w_in: ``(4h, 2h, 2)`` input-to-state taps at columns ``j-1, j`` (the masked 1x3
            kernel without its zero tap ``j+1``).
        b: ``(4h,)`` bias of both convolutions.
        w_state: ``(4h, h, 3)`` state-to-state taps at columns ``j-1, j, j+1`` of the row above.
        hidden0, cell0: ``(h,)`` initial state, the same at every column.

    Returns:
        ``(B, h, H, W)``, the hidden states.
    """
    return _apply(_RowScan, x, w_in, b, w_state, hidden0, cell0)


# ----------------------------------------------------------------------- Diagonal BiLSTM


class DiagonalPlan:
    """Where each pixel of an ``height x width`` image lives during the diagonal scan.

    States are kept per column of the skewed map, top to bottom, each column between two
    pad slots, after two pad slots for "column -1"; the pads hold the learned initial state
    (``s``)::

        slot:  0 1 | 2  3 .. 2+n0  3+n0 | ...
               s s | s  column 0    s   | s  column 1  s | ...

    The state-to-state window of column ``t`` (rows ``first - 1 .. last`` of column
    ``t - 1``, the initial state above row 0 and left of column 0) is then always ``n + 1``
    consecutive slots; its top ``n`` slots are the rows ``r - 1``, its bottom ``n`` the
    rows ``r``.

    Attributes:
        steps: per column ``(n, position, slot, window)``: its pixel count, first scan
            position, first slot and first window slot.
        slots: number of slots.
        order: ``(2, H*W)`` the flat pixel of each scan position, left to right and mirrored.
        out_slots: ``(2, H*W)`` the slot each output pixel reads: its own, and the
            mirrored direction's pixel above it (a pad slot, the initial state, in row 0).
        grad_pixels: ``(2, slots)`` the output pixel each slot's state feeds
            (``H*W`` for none).
        pad_slots: the slots outside the image.
    """

    def __init__(self, height: int, width: int, device: torch.device) -> None:
        self.height, self.width = height, width
        order, sizes = diagonal_order(height, width)
        mirrored = order // width * width + (width - 1 - order % width)
        self.order = torch.stack([order, mirrored])
        self.steps, position_slots = [], []
        slot, position, previous = 2, 0, 0  # "column -1": slots 0 and 1
        for t, n in enumerate(sizes):
            window = previous + (t >= width)  # skip the pad above row 0 once row 0 has ended
            self.steps.append((n, position, slot + 1, window))
            position_slots += range(slot + 1, slot + 1 + n)
            previous, slot, position = slot, slot + n + 2, position + n
        self.slots = slot
        pads = torch.ones(slot, dtype=torch.bool)
        pads[position_slots] = False
        self.pad_slots = pads.nonzero().flatten()  # the states outside the image: the initial state
        own = torch.empty_like(self.order)  # (2, H*W): slot of each pixel
        own.scatter_(1, self.order, torch.tensor(position_slots).expand(2, -1))
        above = torch.cat([torch.zeros(width, dtype=torch.long), own[1, :-width]])  # a pad slot for row 0
        self.out_slots = torch.stack([own[0], above])
        pixels = torch.arange(height * width)
        below = torch.where(pixels < (height - 1) * width, pixels + width, height * width)
        self.grad_pixels = torch.full((2, self.slots), height * width)
        self.grad_pixels[0, own[0]] = pixels
        self.grad_pixels[1, own[1]] = below
        self.order, self.out_slots, self.grad_pixels, self.pad_slots = (
            t.to(device) for t in (self.order, self.out_slots, self.grad_pixels, self.pad_slots)
        )


@lru_cache(maxsize=32)
def diagonal_plan(height: int, width: int, device: torch.device) -> DiagonalPlan:
    """The :class:`DiagonalPlan` of a shape, made once per shape and device."""
    return DiagonalPlan(height, width, device)


class _DiagonalScan(torch.autograd.Function):
    """The Diagonal BiLSTM layer's two recurrences; see :func:`diagonal_bilstm_scan`."""

    @staticmethod
    @_outside_autocast
    def forward(ctx, x, w_in, b_in, w_state, hidden0, cell0):
        batch, channels, height, width = x.shape
        h = w_state.shape[2] // 2
        plan = diagonal_plan(height, width, x.device)
        pixels = x.permute(1, 2, 3, 0).contiguous().view(channels, height * width, batch)  # (2h, H*W, B)
        weight = _content_doubled(torch.cat([w_in, w_state], dim=2), 1)  # (2, 4h, 4h)
        bias = _content_doubled(b_in, 1)[..., None]  # (2, 4h, 1)
        hidden = hidden0[:, :, None, None].repeat(1, 1, plan.slots, batch)  # (2, h, slots, B): DiagonalPlan
        cell = cell0[:, :, None, None].repeat(1, 1, plan.slots, batch)
        operands, gates = [], []  # per column (2, 4h, n*B), kept for the backward pass
        for n, position, slot, window in plan.steps:
            column = x.new_empty(2, 4 * h, n, batch)  # per direction: input (2h), states above, beside
            for d in range(2):
                torch.index_select(pixels, 1, plan.order[d, position : position + n], out=column[d, :channels])
            column[:, channels : channels + h] = hidden[:, :, window : window + n]  # rows r-1
            column[:, channels + h :] = hidden[:, :, window + 1 : window + n + 1]  # rows r
            column, column_gates = column.flatten(2), x.new_empty(2, 4 * h, n * batch)  # (2, 4h, n*B)
            for d in range(2):
                torch.add(matmul(weight[d], column[d]), bias[d], out=column_gates[d])
            cell_forward_(column_gates, cell[:, :, window + 1 : window + n + 1].flatten(2),
                          cell[:, :, slot : slot + n].flatten(2), hidden[:, :, slot : slot + n].flatten(2))
            operands.append(column)
            gates.append(column_gates)
        out = hidden[0].index_select(1, plan.out_slots[0])  # (h, H*W, B)
        out += hidden[1].index_select(1, plan.out_slots[1])  # mirrored, from the row above
        ctx.save_for_backward(w_in, w_state, cell, *operands, *gates)
        ctx.save_for_forward(w_in, w_state, cell, *operands, *gates)
        ctx.plan = plan
        return out.view(h, height, width, batch).permute(3, 0, 1, 2)  # (B, h, H, W)

    @staticmethod
    @_outside_autocast
    def jvp(ctx, x_dot, w_in_dot, b_in_dot, w_state_dot, hidden0_dot, cell0_dot):
        w_in, w_state, cell, *saved = ctx.saved_tensors
        plan, (_, h, slots, batch), channels = ctx.plan, cell.shape, w_in.shape[2]
        operands, gates = saved[: len(plan.steps)], saved[len(plan.steps) :]
        weight, weight_dot = torch.cat([w_in, w_state], dim=2), torch.cat([w_in_dot, w_state_dot], dim=2)
        pixels = x_dot.permute(1, 2, 3, 0).reshape(channels, -1, batch)  # (2h, H*W, B)
        hidden_dot, cell_dot = (v[:, :, None, None].repeat(1, 1, slots, batch) for v in (hidden0_dot, cell0_dot))
        for t, (n, position, slot, window) in enumerate(plan.steps):
            column = x_dot.new_empty(2, 4 * h, n, batch)  # the operands' tangents
            for d in range(2):
                column[d, :channels] = pixels[:, plan.order[d, position : position + n]]
            column[:, channels : channels + h] = hidden_dot[:, :, window : window + n]
            column[:, channels + h :] = hidden_dot[:, :, window + 1 : window + n + 1]
            gates_dot = weight @ column.flatten(2) + weight_dot @ operands[t] + b_in_dot[..., None]
            hidden_dot[:, :, slot : slot + n], cell_dot[:, :, slot : slot + n] = (
                v.view(2, h, n, batch) for v in cell_tangent(
                    gates[t], cell[:, :, window + 1 : window + n + 1].flatten(2),
                    cell[:, :, slot : slot + n].flatten(2), gates_dot,
                    cell_dot[:, :, window + 1 : window + n + 1].flatten(2)))
        out = hidden_dot[0].index_select(1, plan.out_slots[0]) + hidden_dot[1].index_select(1, plan.out_slots[1])
        return out.view(h, plan.height, plan.width, batch).permute(3, 0, 1, 2)  # (B, h, H, W)

    @staticmethod
    @_outside_autocast
    def backward(ctx, grad):
        w_in, w_state, cell, *saved = ctx.saved_tensors
        plan, (_, h, slots, batch), channels = ctx.plan, cell.shape, w_in.shape[2]
        operands, gates = saved[: len(plan.steps)], saved[len(plan.steps) :]
        weight_t = torch.cat([w_in, w_state], dim=2).transpose(1, 2).contiguous()  # (2, 4h, 4h)
        d_weight, d_bias = weight_t.new_zeros(weight_t.shape), weight_t.new_zeros(2, 4 * h)
        d_hidden, d_cell = _DiagonalScan._output_grad(plan, grad, h, slots, batch), torch.zeros_like(cell)
        d_pixels = grad.new_zeros(channels, plan.height * plan.width, batch)  # (2h, H*W, B)
        largest = max(step[0] for step in plan.steps) * batch
        d_gates, scratch = grad.new_empty(2 * 4 * h * largest), grad.new_empty(2, 2 * h, largest)
        for t in reversed(range(len(plan.steps))):
            n, position, slot, window = plan.steps[t]
            column_d_gates = d_gates[: 2 * 4 * h * n * batch].view(2, 4 * h, n * batch)
            own, left = slice(slot, slot + n), slice(window + 1, window + n + 1)  # a column's slots; its left's
            cell_backward_(gates[t], cell[:, :, left].flatten(2), cell[:, :, own].flatten(2),
                           d_hidden[:, :, own].flatten(2), d_cell[:, :, own].flatten(2),
                           d_cell[:, :, left].flatten(2), column_d_gates, scratch[:, :, : n * batch])
            d_bias += column_d_gates.sum(2)
            for d in range(2):
                d_weight[d] += matmul(column_d_gates[d], operands[t][d].t())
                d_column = matmul(weight_t[d], column_d_gates[d]).view(4 * h, n, batch)
                d_pixels.index_add_(1, plan.order[d, position : position + n], d_column[:channels])
                d_hidden[d, :, window : window + n] += d_column[channels : channels + h]
                d_hidden[d, :, window + 1 : window + n + 1] += d_column[channels + h :]
        d_x = d_pixels.view(channels, plan.height, plan.width, batch).permute(3, 0, 1, 2)  # (B, 2h, H, W)
        d_hidden0 = d_hidden.index_select(2, plan.pad_slots).sum((2, 3))  # (2, h)
        d_hidden0[1] += grad[:, :, 0].sum((0, 2))  # row 0 reads the mirrored direction's initial state
        d_cell0 = d_cell.index_select(2, plan.pad_slots).sum((2, 3))
        return d_x, d_weight[:, :, :channels], d_bias, d_weight[:, :, channels:], d_hidden0, d_cell0

    @staticmethod
    def _output_grad(plan: DiagonalPlan, grad: Tensor, h: int, slots: int, batch: int) -> Tensor:
        """The gradient of every slot's hidden state from the layer's output, ``(2, h, slots, B)``."""
        grad_pixels = grad.new_zeros(h, plan.height * plan.width + 1, batch)  # (h, H*W + 1, B): last a zero
        grad_pixels[:, :-1] = grad.permute(1, 2, 3, 0).flatten(1, 2)
        d_hidden = grad.new_empty(2, h, slots, batch)
        for d in range(2):
            torch.index_select(grad_pixels, 1, plan.grad_pixels[d], out=d_hidden[d])
        return d_hidden


def diagonal_bilstm_scan(
    x: Tensor, w_in: Tensor, b_in: Tensor, w_state: Tensor, hidden0: Tensor, cell0: Tensor
) -> Tensor:
    """The two recurrences of a Diagonal BiLSTM layer (Pixel RNN, section 3.2).

    Args:
        x: ``(B, 2h, H, W)`` input.
        w_in: ``(2, 4h, 2h)`` per direction, the 1x1 input-to-state weight.
        b_in: ``(2, 4h)`` its bias.
        w_state: ``(2, 4h, 2h)`` per direction, the 2x1 state-to-state kernel as one
            matrix over ``[h(r-1); h(r)]`` of the previous column.
        hidden0, cell0: ``(2, h)`` per direction, the initial state: the state above row 0
            and left of (for the mirrored direction: right of) every row.

    Returns:
        ``(B, h, H, W)``: the left-to-right hidden states plus the right-to-left ones
        shifted down one row (row 0 gets the right-to-left initial hidden state).
    """
    return _apply(_DiagonalScan, x, w_in, b_in, w_state, hidden0, cell0)

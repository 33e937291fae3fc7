"""Shifted convolutions: causality by padding and shifting instead of masks (PixelCNN++,
Salimans et al. 2017, section 2.5; the gated PixelCNN's vertical and horizontal stacks,
van den Oord et al. 2016).

A down-shifted convolution sees only the rows at and above the output's; a
down-right-shifted one only the rows above and, in the output's own row, the columns at
and left of it. A shift by one row (:func:`down_shift`) or one column
(:func:`right_shift`) then makes the field strictly earlier. For an output at ``x``::

    down-shifted 2x3       down-right-shifted 2x2      down_shift / right_shift
      # # #                  # #                        moves the map one row down /
      . x .                  # x                        one column right, zeros in

The transposed versions upsample by the stride and crop so that output ``(r, c)`` reads
only inputs whose field ends at or before ``(r, c)`` in the same sense. All of them keep
``(B, C, H, W)`` maps; stride 2 halves ``H`` and ``W``, rounding up. Torch only.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DownRightShiftedConv2d",
    "DownRightShiftedConvTranspose2d",
    "DownShiftedConv2d",
    "DownShiftedConvTranspose2d",
    "ShiftedConvTranspose2d",
    "concat_elu",
    "down_shift",
    "right_shift",
]


def down_shift(x: Tensor) -> Tensor:
    """``x`` ``(B, C, H, W)`` moved one row down, a row of zeros on top."""
    return F.pad(x, (0, 0, 1, 0))[..., :-1, :]  # (B, C, H, W)


def right_shift(x: Tensor) -> Tensor:
    """``x`` ``(B, C, H, W)`` moved one column right, a column of zeros on the left."""
    return F.pad(x, (1, 0))[..., :-1]  # (B, C, H, W)


def concat_elu(x: Tensor) -> Tensor:
    """``elu([x, -x])`` along channels: ``(B, C, H, W) -> (B, 2C, H, W)`` (PixelCNN++)."""
    return F.elu(torch.cat([x, -x], dim=1))


class DownShiftedConv2d(nn.Conv2d):
    """A ``kh x kw`` convolution (``kw`` odd) padded with ``kh - 1`` rows on top and
    ``kw // 2`` columns either side: output ``(i, j)`` sees rows ``i - kh + 1 .. i`` (times
    the stride), columns ``j - kw // 2 .. j + kw // 2``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride)
        kh, kw = kernel_size
        self.padding_lrtb = (kw // 2, kw // 2, kh - 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))  # (B, out, ceil(H / s), ceil(W / s))


class DownRightShiftedConv2d(nn.Conv2d):
    """A ``kh x kw`` convolution padded with ``kh - 1`` rows on top and ``kw - 1`` columns
    on the left: output ``(i, j)`` sees rows ``i - kh + 1 .. i``, columns ``j - kw + 1 .. j``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 1) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride)
        kh, kw = kernel_size
        self.padding_lrtb = (kw - 1, 0, kh - 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self.padding_lrtb))  # (B, out, ceil(H / s), ceil(W / s))


class ShiftedConvTranspose2d(nn.ConvTranspose2d):
    """A transposed convolution upsampling by ``stride``, the base of the two below:
    ``forward(x, size)`` crops its output to ``size = (H, W)``, keeping the top rows and
    the columns from ``left`` on."""

    left = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int], stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride, output_padding=stride - 1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        height, width = size
        out = super().forward(x)  # (B, out, (h - 1) s + kh + s - 1, (w - 1) s + kw + s - 1)
        if out.shape[-2] < height or out.shape[-1] < self.left + width:
            raise ValueError(f"cannot upsample {tuple(x.shape[-2:])} to {size} by {self.stride}")
        return out[..., :height, self.left : self.left + width]  # (B, out, H, W)


class DownShiftedConvTranspose2d(ShiftedConvTranspose2d):
    """The transpose of :class:`DownShiftedConv2d` (``kw`` odd): ``(B, in, h, w) -> (B, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 3), stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride)
        self.left = kernel_size[1] // 2  # centre the odd kernel's columns


class DownRightShiftedConvTranspose2d(ShiftedConvTranspose2d):
    """The transpose of :class:`DownRightShiftedConv2d`: ``(B, in, h, w) -> (B, out, H, W)``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int] = (2, 2), stride: int = 2) -> None:
        super().__init__(in_channels, out_channels, kernel_size, stride)

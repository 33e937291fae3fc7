"""Every registered model is exactly autoregressive, with the receptive field the paper says.

The Jacobian (float64) of every output sub-pixel with respect to every input sub-pixel is
measured at random, perturbed weights and compared with the field written down from the
paper's equations in ``receptive_fields.py``.
"""

from __future__ import annotations

import pytest
import torch
from receptive_fields import FIELDS

import pixelgen
from pixelgen.blocks import generation_order_of
from pixelgen.errors import CausalityError
from pixelgen.registry.causality import (
    allowed_dependencies,
    check_causality,
    dependency_map,
)

SIZES = [(5, 5), (4, 7)]  # square and non-square
TINY = dict(hidden_channels=12, n_layers=2, head_channels=32)


def tiny_model(name: str, channels: int, seed: int = 0):
    torch.manual_seed(seed)
    hyper = {k: v for k, v in TINY.items() if k in pixelgen.registry.get_model_spec(name).defaults()}
    return pixelgen.create_model(name, in_channels=channels, **hyper)


def measured(name: str, channels: int, height: int, width: int):
    return dependency_map(tiny_model(name, channels), channels, height, width, n_inputs=6)


@pytest.mark.parametrize("name", pixelgen.list_models())
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_every_registered_model_is_causal(name, channels, size):
    model = tiny_model(name, channels)
    support = check_causality(model, channels, *size)
    order = generation_order_of(model, channels, *size)  # raster order unless the model has its own
    assert not (support & ~allowed_dependencies(channels, *size, order)).any()
    assert support.any()


@pytest.mark.parametrize("name", sorted(FIELDS))
@pytest.mark.parametrize("channels", [1, 3])
def test_two_level_models_are_causal_with_the_papers_field(name, channels):
    """A binary model (n_levels = 2, binarized MNIST) changes only the head's width and
    the input scale: no forbidden dependency, and the same field as the 256-level one."""
    torch.manual_seed(0)
    model = pixelgen.create_model(name, in_channels=channels, n_levels=2, **TINY)
    check_causality(model, channels, 5, 5)
    got = dependency_map(model, channels, 5, 5, n_inputs=6)
    assert torch.equal(got, FIELDS[name](channels, 5, 5, TINY["n_layers"]))


@pytest.mark.parametrize("name", sorted(FIELDS))
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_receptive_field_matches_the_paper(name, channels, size):
    expected = FIELDS[name](channels, *size, TINY["n_layers"])
    got = measured(name, channels, *size)
    missing = (expected & ~got).nonzero().tolist()[:5]
    extra = (got & ~expected).nonzero().tolist()[:5]
    assert torch.equal(got, expected), f"missing {missing}, unexpected {extra}"


@pytest.mark.parametrize("name", sorted(FIELDS))
def test_colour_order_inside_a_pixel(name):
    support = measured(name, 3, 4, 4)
    for i in range(4):
        for j in range(4):
            own = support[:, i, j, :, i, j]  # (output colour, input colour) at the same pixel
            assert own.tolist() == [[False, False, False], [True, False, False], [True, True, False]]


def test_pixelcnn_blind_spot_lies_above_right():
    h, w = 5, 7
    support = measured("pixelcnn", 1, h, w)[0, :, :, 0]  # (H, W, H, W)
    blind = (allowed_dependencies(1, h, w)[0, :, :, 0] & ~support).nonzero().tolist()
    assert blind, "a stacked 3x3 mask-B PixelCNN must miss some context"
    reach = 3 + TINY["n_layers"]  # 7x7 input conv, then one pixel per 3x3 layer
    for i, j, i2, j2 in blind:
        # Within reach, the context a PixelCNN misses is above and to the right.
        if max(i - i2, abs(j - j2)) <= reach:
            assert i2 < i and j2 > j, f"({i2}, {j2}) missed by ({i}, {j})"
    # The blind spot proper: a nearer pixel above-right is missed while a farther one
    # in the same column is seen.
    assert not support[4, 2, 3, 6]
    assert support[4, 2, 2, 6]


def test_row_lstm_field_is_a_triangle():
    h, w = 5, 7
    support = measured("row_lstm", 1, h, w)[0, :, :, 0]  # (H, W, H, W)
    # On its own row a pixel sees 3 pixels (7x7 mask A) + one per layer to its left.
    reach = 3 + TINY["n_layers"]
    assert support[h - 1, w - 1, h - 1, w - 1 - reach]
    assert not support[h - 1, w - 1, h - 1, w - 2 - reach]
    # Going up, the field widens: every row above sees at least as many pixels.
    seen_per_row = support[h - 1, 0].sum(dim=1).tolist()  # rows 0..h-1 for the pixel (h-1, 0)
    assert seen_per_row[:-1] == sorted(seen_per_row[:-1], reverse=True)
    assert not support[h - 1, 0, h - 2, w - 1], "too far right for a triangle"
    assert support[h - 1, 0, 0, w - 1], "but reached four rows up"


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", SIZES)
def test_diagonal_bilstm_sees_the_whole_context(channels, size):
    """Every earlier sub-pixel, with one exception that the paper's layout implies.

    The last sub-pixel of a row's last pixel reaches the network only through the 7x7
    mask-A convolution one row down (no later position of its own row exists, and the
    right-to-left direction is shifted down), so pixels of the next row more than three
    columns to its left cannot see it, at any depth.
    """
    h, w = size
    expected = allowed_dependencies(channels, h, w).clone()
    for i in range(1, h):
        expected[:, i, : max(0, w - 4), channels - 1, i - 1, w - 1] = False
    assert torch.equal(measured("diagonal_bilstm", channels, h, w), expected)


class LeakyConv(torch.nn.Module):
    """A plain 3x3 convolution: every output sees its own and later sub-pixels."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.conv = torch.nn.Conv2d(channels, 256 * channels, 3, padding=1)

    def forward(self, x):
        x = x.to(self.conv.weight.dtype) / 127.5 - 1
        out = self.conv(x)  # (B, C*256, H, W)
        return out.view(x.shape[0], self.channels, 256, *x.shape[2:]).transpose(1, 2)


def test_a_leaky_model_is_rejected_with_the_offending_positions():
    with pytest.raises(CausalityError) as info:
        check_causality(LeakyConv(3), 3, 4, 5)
    message = str(info.value)
    assert "output sub-pixel (row 0, column 0, R)" in message
    assert "input sub-pixel (row 0, column 0, R)" in message
    assert "\n" not in message

"""``n_levels``: every built-in model predicts 256 values per sub-pixel, or 2 for binary data.

The paper models binarized MNIST with a sigmoid output (Pixel RNN, section 4); here that is
a two-way softmax, ``n_levels = 2``. These tests pin what must hold for it: uniform logits
cost exactly 1 bit per sub-pixel, samples are 0/1, the input is scaled from 0..1, and a
256-level model is bit for bit what it was before the hyperparameter existed.
"""

from __future__ import annotations

import math

import pytest
import torch

import pixelgen
from pixelgen import registry
from pixelgen.blocks import n_levels_of
from pixelgen.nn.layers import scale_input
from pixelgen.sampling import SamplingError, draw, sample
from pixelgen.store.images import from_display, to_display
from pixelgen.training.evaluation import evaluate

BUILTIN = ["pixelcnn", "row_lstm", "diagonal_bilstm"]
TINY = dict(hidden_channels=6, n_layers=2, head_channels=16)


def binary_model(name: str, channels: int = 1, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pixelgen.create_model(name, in_channels=channels, n_levels=2, **TINY).eval()


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return self.images[index], 0


def test_uniform_two_level_logits_give_exactly_one_bit_per_dim():
    x = torch.randint(0, 2, (4, 3, 5, 6))
    logits = torch.zeros(4, 2, 3, 5, 6)
    assert pixelgen.bits_per_dim(logits, x).item() == pytest.approx(1.0, abs=1e-6)
    assert torch.allclose(pixelgen.nll_nats(logits, x), torch.full((4,), 90 * math.log(2)))


@pytest.mark.parametrize("name", BUILTIN)
def test_a_two_level_model_that_predicts_one_half_scores_one_bit_per_dim(name):
    model = binary_model(name)
    with torch.no_grad():  # the last 1x1 convolution outputs zeros: logits (0, 0) everywhere
        model.head.logits.weight.zero_()
        model.head.logits.bias.zero_()
    data = Images(torch.randint(0, 2, (5, 1, 4, 4), dtype=torch.uint8))
    figures = evaluate(model, data, batch_size=2)
    assert figures["bits_per_dim"] == pytest.approx(1.0, abs=1e-6)  # over C*H*W = 16 sub-pixels
    assert figures["nll_nats"] == pytest.approx(16 * math.log(2), rel=1e-6)


@pytest.mark.parametrize("name", BUILTIN)
def test_every_builtin_model_declares_n_levels_with_256_by_default(name):
    spec = registry.get_model_spec(name)
    assert spec.defaults()["n_levels"] == 256 and "binar" in spec.hyperparameters["n_levels"].help
    assert n_levels_of(pixelgen.create_model(name, **TINY)) == 256
    model = binary_model(name, channels=3)
    assert n_levels_of(model) == 2
    assert model(torch.randint(0, 2, (2, 3, 4, 5))).shape == (2, 2, 3, 4, 5)
    assert model.pixelgen_config["hyperparameters"]["n_levels"] == 2


@pytest.mark.parametrize("n_levels, needle", [
    (1, "n_levels must be an integer in 2..256"), (257, "n_levels must be an integer in 2..256"),
    (2.0, "n_levels: expected an integer in 1..16,384, got 2.0"),  # the rule every model shares, as in a recipe
    (True, "n_levels: expected an integer in 1..16,384, got True"),
])
def test_n_levels_outside_2_to_256_is_refused(n_levels, needle):
    with pytest.raises(ValueError, match=needle) as refused:  # a ValueError, and one line for the command line
        pixelgen.create_model("pixelcnn", n_levels=n_levels, **TINY)
    assert isinstance(refused.value, pixelgen.PixelgenError)


@pytest.mark.parametrize("name", BUILTIN)
@pytest.mark.parametrize("channels", [1, 3])
def test_samples_of_a_two_level_model_are_zeros_and_ones(name, channels):
    images = sample(binary_model(name, channels), 4, 4, 5, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (4, channels, 4, 5)
    assert set(images.unique().tolist()) == {0, 1}


def test_draw_reads_the_number_of_levels_from_the_logits():
    generator = torch.Generator().manual_seed(0)
    values = draw(torch.tensor([[0.0, 0.0]]).expand(4000, -1), 1.0, 1.0, generator)
    assert set(values.tolist()) == {0, 1} and abs(values.double().mean().item() - 0.5) < 0.05
    only_one = draw(torch.tensor([[-math.inf, 0.0]]).expand(50, -1), 1.0, 1.0, generator)
    assert only_one.tolist() == [1] * 50


def test_scale_input_maps_the_levels_onto_minus_one_to_one():
    like = torch.zeros(1)
    assert scale_input(torch.tensor([0, 1]), like, 2).tolist() == [-1.0, 1.0]
    levels = torch.arange(256)
    assert torch.equal(scale_input(levels, like), levels.float() / 127.5 - 1.0)  # the 256-level scale, unchanged
    assert torch.equal(scale_input(levels, like, 256), scale_input(levels, like))


def test_a_prefix_outside_the_models_levels_is_refused_in_one_line():
    prefix = torch.full((1, 1, 1, 4), 255, dtype=torch.uint8)
    with pytest.raises(SamplingError, match="value 255, but the model predicts 0..1") as info:
        sample(binary_model("pixelcnn"), 1, 3, 4, prefix=prefix)
    assert "\n" not in str(info.value)
    completed = sample(binary_model("pixelcnn"), 1, 3, 4, prefix=from_display(prefix, 2), seed=0)
    assert completed[0, 0, 0].tolist() == [1, 1, 1, 1]


def test_display_values_map_levels_to_0_255_and_back():
    binary = torch.tensor([0, 1], dtype=torch.uint8)
    assert to_display(binary, 2).tolist() == [0, 255]
    assert from_display(torch.tensor([0, 127, 128, 255], dtype=torch.uint8), 2).tolist() == [0, 0, 1, 1]
    everything = torch.arange(256, dtype=torch.uint8)
    assert torch.equal(to_display(everything, 256), everything)
    assert torch.equal(from_display(everything, 256), everything)
    four = torch.arange(4, dtype=torch.uint8)
    assert to_display(four, 4).tolist() == [0, 85, 170, 255]
    assert torch.equal(from_display(to_display(four, 4), 4), four)

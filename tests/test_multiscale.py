"""Multi-Scale PixelRNN (Pixel RNN, section 3.6): exact likelihood, its own order, exact sampling.

The likelihood is the small network's NLL of the subsampled image plus the conditional
network's NLL of every other sub-pixel, sub-pixel for sub-pixel; causality is measured by
the Jacobian in the model's own order (the grid pixels first), and a model that leaks is
caught; the fast sampler follows that order and draws the reference sampler's images.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from datafiles import write_tiny_mnist
from torch import nn

import pixelgen
from pixelgen import cli
from pixelgen.blocks import ReferenceState, generation_order_of, raster_order
from pixelgen.errors import CausalityError
from pixelgen.recipe import dump_toml
from pixelgen.registry.causality import (
    allowed_dependencies,
    check_causality,
    dependency_map,
)
from pixelgen.sampling import SamplingError, sample, visiting_order

TINY = dict(hidden_channels=6, n_layers=2, small_n_layers=2, head_channels=16, upsample_channels=4)
PAIRS = [("row_lstm", "pixelcnn"), ("pixelcnn", "row_lstm"), ("diagonal_bilstm", "diagonal_bilstm")]


def tiny_model(channels: int = 1, *, seed: int = 0, perturb: bool = True, **extra) -> nn.Module:
    """A tiny multi-scale model in float64, its weights perturbed (zero-initialised class
    biases and initial states would hide mistakes)."""
    torch.manual_seed(seed)
    model = pixelgen.create_model("multiscale", in_channels=channels, **{**TINY, **extra}).double()
    if perturb:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model.eval()


def images(n: int, channels: int, height: int, width: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (n, channels, height, width), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def off_grid(height: int, width: int, factor: int = 2) -> torch.Tensor:
    rest = torch.ones(height, width, dtype=torch.bool)
    rest[::factor, ::factor] = False
    return rest  # (H, W)


# ------------------------------------------------------------------ likelihood


@pytest.mark.parametrize("factor", [2, 3])
def test_the_nll_is_the_small_images_plus_the_rests_under_the_conditional_network(factor):
    model = tiny_model(3, n_classes=2, factor=factor)
    x, labels = images(2, 3, 5, 7), torch.tensor([1, 0])
    with torch.no_grad():
        per_subpixel = F.cross_entropy(model(x, labels), x.long(), reduction="none")  # (B, C, H, W)
        small = x[:, :, ::factor, ::factor]
        small_nll = F.cross_entropy(model.small(small, labels), small.long(), reduction="none")
        layer_bias = model.upsample(small, 5, 7)
        conditional = model.conditional(x, labels, layer_bias=layer_bias)
        conditional_nll = F.cross_entropy(conditional, x.long(), reduction="none")  # (B, C, H, W)
    rest = off_grid(5, 7, factor)
    assert torch.equal(per_subpixel[..., ::factor, ::factor], small_nll)
    assert torch.equal(per_subpixel[..., rest], conditional_nll[..., rest])
    nll = small_nll.flatten(1).sum(1) + conditional_nll[..., rest].flatten(1).sum(1)  # (B,)
    torch.testing.assert_close(pixelgen.nll_nats(model(x, labels), x), nll.float())
    torch.testing.assert_close(per_subpixel.sum(), nll.sum(), rtol=1e-14, atol=0)  # only the sums' order differs
    bits = pixelgen.bits_per_dim(model(x, labels), x)  # over the full image's C * H * W
    torch.testing.assert_close(bits, (nll.mean() / (3 * 5 * 7 * math.log(2))).float())


def test_the_conditional_network_is_biased_by_the_small_image_in_every_layer():
    model = tiny_model(1)
    x = images(1, 1, 4, 6)
    with torch.no_grad():
        base = model.conditional(x)
        zero = [torch.zeros(1, 12, 4, 6, dtype=torch.float64)] * 2
        assert torch.equal(model.conditional(x, layer_bias=zero), base)  # no bias: the stack alone
        biased = model.conditional(x, layer_bias=model.upsample(x[:, :, ::2, ::2], 4, 6))
    assert not torch.isclose(biased, base).any(dim=1).all()
    with pytest.raises(ValueError, match="one map per layer"):
        model.conditional(x, layer_bias=zero[:1])


# ------------------------------------------------------------------ order and causality


def test_generation_order_is_the_small_image_first():
    model = tiny_model(1)
    assert model.generation_order(1, 4, 4)[0].tolist() == [
        [0, 4, 1, 5],
        [6, 7, 8, 9],
        [2, 10, 3, 11],
        [12, 13, 14, 15],
    ]
    order = generation_order_of(model, 3, 5, 3)  # odd sizes: a 3x2 grid; R, G, B one after another
    assert order[:, 0, 0].tolist() == [0, 1, 2] and order[:, 0, 2].tolist() == [3, 4, 5]
    assert order[:, 4, 2].tolist() == [15, 16, 17] and order[:, 0, 1].tolist() == [18, 19, 20]
    assert [pixel for run in visiting_order(model, 3, 5, 3) for pixel in run][:7] == [
        (0, 0), (0, 2), (2, 0), (2, 2), (4, 0), (4, 2), (0, 1)
    ]


@pytest.mark.parametrize("base, small_base", PAIRS)
@pytest.mark.parametrize("channels", [1, 3])
def test_causal_in_its_own_order_and_not_in_raster_order(base, small_base, channels):
    model = tiny_model(channels, base=base, small_base=small_base)
    # Probe seed 1: at seed 0's probe weights the RGB Diagonal BiLSTM pair's red output at
    # (0, 1) depends on nothing (its head's ReLUs are off for every probe image).
    support = check_causality(model, channels, 5, 4, seed=1)
    grid = ~off_grid(5, 4)
    # The small network's sub-pixels see the grid alone.
    assert not support[:, grid][..., ~grid].any()
    # The others see grid pixels after them in raster order (through the upsampled map):
    # (0, 1) sees (2, 2); allowed in the model's order, not in raster order.
    assert support[0, 0, 1, 0, 2, 2]
    assert (support & ~allowed_dependencies(channels, 5, 4)).any()


def test_class_labels_reach_both_networks():
    model = tiny_model(1, n_classes=3)
    x = images(1, 1, 4, 4)
    with torch.no_grad():
        by_label = [model(x, torch.tensor([k])) for k in (0, 2)]
    changed = ~torch.isclose(*by_label).all(dim=1)[0, 0]  # (H, W)
    assert changed[::2, ::2].all() and changed[off_grid(4, 4)].all()
    check_causality(model, 1, 4, 4, labels=torch.tensor([2]))


def test_a_leak_from_the_rest_into_the_small_image_is_caught():
    model = tiny_model(1, perturb=False)
    model.small_image = lambda x: x.roll(-1, dims=-1)[:, :, ::2, ::2]  # reads the pixels right of the grid
    # The second grid pixel, (0, 2), is predicted from the first small pixel, now (0, 1): a later one.
    with pytest.raises(CausalityError, match=r"output sub-pixel \(row 0, column 2, grey\) depends on input "
                                             r"sub-pixel \(row 0, column 1, grey\)"):
        check_causality(model, 1, 4, 4)


def test_the_order_is_what_makes_it_causal():
    model = tiny_model(1, perturb=False)
    model.generation_order = lambda channels, height, width: raster_order(channels, height, width)
    with pytest.raises(CausalityError, match="not autoregressive"):
        check_causality(model, 1, 4, 4)


def test_pixelgen_check_proves_it_in_the_models_order(capsys):
    argv = ["check", "multiscale", "--channels", "1", "--height", "4", "--width", "5"]
    for key, value in TINY.items():
        argv += ["--hp", f"{key}={value}"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "multiscale: causal for C=1 at 4x5" in out and "none forbidden" in out
    # Pixel (3, 2): every grid pixel and the rows above come before it, (3, 3) and (3, 4) after.
    assert out.rstrip().splitlines()[-4:] == [
        "    # # # # #",
        "    # # # # #",
        "    # # # # #",
        "    # # x",
    ]


# ------------------------------------------------------------------ sampling


@pytest.mark.parametrize("base, small_base", PAIRS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_logits_equal_reference_at_every_step_in_the_models_order(base, small_base, channels):
    n_classes, skip = (3, True) if channels == 3 else (0, False)
    model = tiny_model(channels, base=base, small_base=small_base, n_classes=n_classes, skip=skip)
    labels = torch.tensor([2, 0]) if n_classes else None
    height, width = 5, 4
    target = images(2, channels, height, width)
    fast, reference = model.sampling_state(2, height, width, labels), ReferenceState(model, labels)
    assert not isinstance(fast, ReferenceState)
    x = torch.zeros_like(target)  # filled sub-pixel by sub-pixel, in the model's order
    with torch.no_grad():
        for i, j in (pixel for run in visiting_order(model, channels, height, width) for pixel in run):
            for c in range(channels):
                got, want = fast.logits(x, i, j)[:, :, c], reference.logits(x, i, j)[:, :, c]
                torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"pixel ({i}, {j}), colour {c}")
                x[:, c, i, j] = target[:, c, i, j]


@pytest.mark.parametrize("channels", [1, 3])
def test_fast_and_reference_draw_the_same_images(channels):
    model = tiny_model(channels, n_classes=4, factor=3)
    options = dict(seed=7, labels=torch.tensor([3, 1]), temperature=1.5)
    fast = sample(model, 2, 5, 7, sampler="fast", **options)
    assert fast.dtype == torch.uint8 and fast.shape == (2, channels, 5, 7)
    assert torch.equal(fast, sample(model, 2, 5, 7, sampler="reference", **options))
    assert len(fast.unique()) > 5  # drawn, not constant


def test_completion_keeps_the_given_rows():
    model = tiny_model(3)
    prefix = images(2, 3, 2, 4, seed=3)
    fast = sample(model, 2, 5, 4, seed=1, prefix=prefix)
    assert torch.equal(fast[:, :, :2], prefix)
    assert torch.equal(fast, sample(model, 2, 5, 4, seed=1, prefix=prefix, sampler="reference"))
    other = sample(model, 2, 5, 4, seed=1, prefix=255 - prefix)
    assert not torch.equal(fast[:, :, 2:], other[:, :, 2:])  # the given rows were read


class ColourMajor(nn.Module):
    """Generates all R sub-pixels, then all G: a valid order, but not one the loop can draw."""

    in_channels = 3

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(256))

    def forward(self, x):
        return self.bias[None, :, None, None, None].expand(len(x), 256, *x.shape[1:])

    def generation_order(self, channels, height, width):
        return torch.arange(channels * height * width).view(channels, height, width)


def test_an_order_that_splits_a_pixels_colours_cannot_be_sampled():
    with pytest.raises(SamplingError, match="colours of a pixel one after another"):
        sample(ColourMajor(), 1, 2, 2, seed=0, sampler="reference")
    model = ColourMajor()
    model.generation_order = lambda channels, height, width: torch.zeros(channels, height, width, dtype=torch.long)
    with pytest.raises(ValueError, match="must rank every sub-pixel once"):
        generation_order_of(model, 3, 2, 2)


# ------------------------------------------------------------------ building


def test_parts_are_registered_residual_stacks_built_with_the_shared_sizes():
    model = tiny_model(3, base="diagonal_bilstm", small_base="row_lstm", perturb=False)
    assert model.conditional.pixelgen_config["name"] == "diagonal_bilstm"
    assert model.small.pixelgen_config["name"] == "row_lstm"
    assert model.conditional.n_layers == TINY["n_layers"] and model.small.n_layers == TINY["small_n_layers"]
    assert model.small.hidden_channels == model.conditional.hidden_channels == TINY["hidden_channels"]
    assert model.sequential_steps(28, 28) == 28 + 28 - 1  # the longer scan: the Diagonal BiLSTM's
    groups = list(model.parameter_groups())
    assert groups[0] == "small.input_conv" and "upsample" in groups and groups[-1] == "conditional.head"
    assert sum(len(p) for p in model.parameter_groups().values()) == len(list(model.parameters()))


@pytest.mark.parametrize(
    "hyper, error, message",
    [
        (dict(base="multiscale"), ValueError, "base = 'multiscale' is not a ResidualStack model; choose one of: "
                                              "diagonal_bilstm, pixelcnn, row_lstm"),
        (dict(small_base="no_such_model"), pixelgen.PixelgenError, "unknown model 'no_such_model'"),
        (dict(factor=1), ValueError, "factor must be an integer of at least 2"),
    ],
)
def test_bad_hyperparameters_fail_with_a_message(hyper, error, message):
    with pytest.raises(error, match=message):
        pixelgen.create_model("multiscale", in_channels=1, **{**TINY, **hyper})


def test_dependency_map_of_the_small_network_is_the_small_images_alone():
    """Measured on the small image alone, the grid sub-pixels' field is the small network's
    own: the multi-scale model adds nothing to it."""
    model = tiny_model(1, small_base="row_lstm")
    whole = dependency_map(model, 1, 6, 6)[0, ::2, ::2, 0, ::2, ::2]  # (3, 3, 3, 3)
    alone = dependency_map(model.small, 1, 3, 3)[0, :, :, 0]
    assert torch.equal(whole, alone)


def test_a_recipe_trains_evaluates_and_samples_it(tmp_path, monkeypatch, capsys):
    """Through Fabric (which hooks the model's output), checkpoints (string
    hyperparameters), evaluation and the fast sampler at the end of the run."""
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    write_tiny_mnist(tmp_path / "data", n_train=10, n_test=4)
    out = tmp_path / "run"
    recipe = {
        "model": {"name": "multiscale", "hyperparameters": {**TINY, "small_base": "row_lstm"}},
        "data": {"name": "fashion_mnist", "root": str(tmp_path / "data"), "batch_size": 4,
                 "validation_fraction": 0.2, "download": False},
        "train": {"epochs": 1, "accelerator": "cpu", "seed": 0, "optimizer": {"lr": 0.01}},
        "sample": {"n": 1, "tensorboard_n": 0},
        "output": {"dir": str(out)},
    }
    (tmp_path / "tiny.toml").write_text(dump_toml(recipe))
    assert cli.main(["run", str(tmp_path / "tiny.toml")]) == 0
    figures = json.loads((out / "metrics.json").read_text())
    assert figures["n_images"] == 4 and 0 < figures["bits_per_dim"] < 9
    capsys.readouterr()
    assert cli.main(["eval", str(out / "best.ckpt"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["bits_per_dim"] == pytest.approx(figures["bits_per_dim"], rel=1e-12)
    assert (out / "samples.png").is_file()

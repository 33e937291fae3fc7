"""PixelCNN++ (plugins/pixelcnn_pp.py) and the shifted convolutions it is made of.

The properties: exactly causal per pixel (C = 1 and 3, odd sizes), a full receptive field
with no blind spot, every sub-pixel's probabilities summing to 1 through the model, dropout
only in training, a gradient for every parameter, the paper's parameter count, and a run
that trains, evaluates, samples and compares from a recipe.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import warnings

import pytest
import torch
from datafiles import write_tiny_run_recipe

import pixelgen
from pixelgen import cli
from pixelgen.nn.shifts import DownRightShiftedConvTranspose2d, DownShiftedConv2d, DownShiftedConvTranspose2d
from pixelgen.registry.causality import allowed_dependencies, check_causality, dependency_map
from pixelgen.study import classifier

TINY = dict(hidden_channels=4, n_resnet=1, dropout=0.5)


def tiny(channels: int, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return pixelgen.create_model("pixelcnn_pp", in_channels=channels, **{**TINY, "hidden_channels": 4 * channels, **extra})


@pytest.mark.parametrize("channels, size", [(1, (5, 7)), (3, (4, 5)), (1, (3, 1)), (3, (1, 4))])
def test_causal_with_the_full_field_no_blind_spot(channels, size):
    """Every output of pixel (i, j) depends on exactly the pixels before it in raster
    order (all their colours): nothing later, nothing of its own, and nothing earlier
    missed (the PixelCNN blind spot above and to the right is gone)."""
    support = check_causality(tiny(channels), channels, *size, n_inputs=2)
    assert torch.equal(support, allowed_dependencies(channels, *size, per_pixel=True))


def test_the_field_reaches_no_further_than_the_depth_allows():
    """A finite field, no blind spot: at one block per resolution on 7x9, the missing
    earlier pixels of row 1 are exactly the far ends of the two rows (the top row's right
    end for the first pixels, the row's own left end for the last), as in every odd row
    (openai/pixel-cnn's model at 32x32 likewise misses 9 pixels of row 30 from (31, 0))."""
    support = dependency_map(tiny(1), 1, 7, 9, n_inputs=2)[0, 1, :, 0]  # (W, H, W): row 1's outputs
    missing = allowed_dependencies(1, 7, 9, per_pixel=True)[0, 1, :, 0] & ~support
    assert [tuple(p) for p in missing.nonzero().tolist()] == [(0, 0, 7), (0, 0, 8), (1, 0, 8), (7, 1, 0), (8, 1, 0), (8, 1, 1)]


@pytest.mark.parametrize("channels", [1, 3])
def test_every_subpixel_sums_to_one_through_the_model(channels):
    """At sub-pixel (c, i, j) of a random image, the model's probabilities of its 256
    values (the earlier sub-pixels fixed) sum to 1."""
    model = tiny(channels).double().eval()
    x = torch.randint(0, 256, (1, channels, 3, 4), generator=torch.Generator().manual_seed(1))
    for c, i, j in [(0, 0, 0), (channels - 1, 2, 1), (channels // 2, 1, 3)]:
        images = x.repeat(256, 1, 1, 1)
        images[:, c, i, j] = torch.arange(256)
        with torch.no_grad():
            log_prob = model.likelihood.log_prob(model(images), images)[:, c, i, j]  # (256,)
        assert log_prob.exp().sum().item() == pytest.approx(1.0, abs=1e-9)


def test_dropout_acts_in_training_only():
    model = tiny(3)
    x = torch.randint(0, 256, (2, 3, 4, 4))
    with torch.no_grad():
        assert not torch.equal(model.train()(x), model(x))
        model.eval()
        assert torch.equal(model(x), model(x))
        assert torch.equal(tiny(3, dropout=0.0).eval()(x), model(x))  # same weights, no dropout layer effect


def test_the_gradient_reaches_every_parameter():
    model = tiny(3, n_classes=2)
    x = torch.randint(0, 256, (4, 3, 5, 5))
    labels = torch.tensor([0, 1, 0, 1])
    pixelgen.nll_nats(model(x, labels), x, model.likelihood).sum().backward()
    silent = [name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert silent == []


def test_the_defaults_are_the_papers_model():
    """nr_filters 160, nr_resnet 5, 10 logistics: openai/pixel-cnn's CIFAR-10 model has
    53.6 million parameters (this count, without weight normalisation's gains)."""
    model = pixelgen.create_model("pixelcnn_pp", in_channels=3)
    assert model.likelihood.n_mixtures == 10 and model.output.out_channels == 100
    assert sum(p.numel() for p in model.parameters()) == 53_618_660
    assert pixelgen.registry.get_model_spec("pixelcnn_pp").paper_bits_per_dim == {"cifar10": 2.92}


def test_a_categorical_needs_one_colour():
    """No colour-group masks: a sub-pixel-order likelihood is refused for RGB, with a
    message naming the fix, and works for grey images (one sub-pixel per pixel)."""
    with pytest.raises(ValueError, match="needs a per-pixel likelihood"):
        pixelgen.create_model("pixelcnn_pp", in_channels=3, likelihood="categorical", **TINY)
    model = pixelgen.create_model("pixelcnn_pp", in_channels=1, n_levels=2, likelihood="categorical", **TINY)
    assert model(torch.zeros(3, 1, 4, 5, dtype=torch.long)).shape == (3, 2, 1, 4, 5)  # the logits' layout
    support = check_causality(model, 1, 4, 5, n_inputs=2)
    assert torch.equal(support, allowed_dependencies(1, 4, 5))


@pytest.mark.parametrize("size", [(8, 8), (7, 5), (1, 1), (2, 3)])
def test_shifted_down_and_up_sampling_round_trip_the_size(size):
    """Stride 2 rounds up; the transposed convolutions crop back to the finer map's size."""
    x = torch.randn(1, 2, *size)
    down = DownShiftedConv2d(2, 3, (2, 3), 2)(x)
    assert down.shape[-2:] == tuple(-(-s // 2) for s in size)
    assert DownShiftedConvTranspose2d(3, 2, (2, 3), 2)(down, size).shape == x.shape
    assert DownRightShiftedConvTranspose2d(3, 2, (2, 2), 2)(down, size).shape == x.shape


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def test_a_recipe_trains_evaluates_samples_and_compares(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    recipe = write_tiny_run_recipe(tmp_path, tmp_path / "run", epochs=1)
    text = recipe.read_text().replace('name = "pixelcnn"', 'name = "pixelcnn_pp"')
    text = text.replace("n_layers = 1", "n_resnet = 1").replace("head_channels = 8", 'likelihood = {name = "logistic_mixture", n_mixtures = 2}')
    recipe.write_text(text.replace("[sample]\n", '[sample]\nsampler = "reference"\n'))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_cli("run", str(recipe))
    assert not [w for w in caught if "falls back" in str(w.message)]  # the recipe's sampler, every epoch too
    figures = json.loads(run_cli("eval", str(tmp_path / "run" / "best.ckpt"), "--json"))
    assert 0 < figures["bits_per_dim"] < 16
    run_cli("sample", str(tmp_path / "run" / "best.ckpt"), "-n", "2", "--no-archive", "--png", str(tmp_path / "grid.png"),
            "--sampler", "reference")
    assert (tmp_path / "grid.png").stat().st_size > 0
    run_cli("compare", str(tmp_path / "run"), "--out", str(tmp_path / "compare"), "--field-size", "5", "--timing-images", "1")
    assert "pixelcnn_pp" in (tmp_path / "compare" / "report.md").read_text()
    quick = classifier.TrainingSettings(epochs=1, batch_size=8)
    monkeypatch.setattr(classifier, "TrainingSettings", lambda: quick)
    scored = json.loads(run_cli("score", str(tmp_path / "run" / "best.ckpt"), "--features", "classifier", "--n", "10",
                                "--metrics", "fid,kid", "--json"))
    assert scored["n_samples"] == 10 and math.isfinite(scored["fid"]) and math.isfinite(scored["kid"])

"""Sampling: the fast states are exact, and the draws follow the softmax they are given.

The models are tiny and in float64 with perturbed weights (zero-initialised class biases
and initial states would hide mistakes), so that fast and reference logits agree to
rounding and the same seed must give the same images bit for bit.
"""

from __future__ import annotations

import math
import os

import pytest
import torch
from torch import nn

import pixelgen
from pixelgen.blocks import ReferenceState, ResidualStack, ResidualStackState
from pixelgen.cli import main
from pixelgen.nn.layers import MaskedConv2d
from pixelgen.recipe import recipe_from_dict, recipe_to_dict
from pixelgen.sampling import SamplingError, batch_seed, draw, sample, sample_batched
from pixelgen.store.checkpoint import plain, save_checkpoint

MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm"]
TINY = dict(hidden_channels=6, n_layers=2, head_channels=16)


def tiny_model(name: str, channels: int, n_classes: int = 0, seed: int = 0, **extra) -> nn.Module:
    torch.manual_seed(seed)
    model = pixelgen.create_model(name, in_channels=channels, n_classes=n_classes, **TINY, **extra).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model.eval()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(3, 5), (4, 4), (5, 2)])
def test_fast_logits_equal_reference_at_every_step(name, channels, size):
    height, width = size
    n_classes, skip = (3, True) if channels == 3 else (0, False)  # conditional and skip paths too
    model = tiny_model(name, channels, n_classes, skip=skip)
    labels = torch.tensor([2, 0]) if n_classes else None
    target = torch.randint(0, 256, (2, channels, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    fast = model.sampling_state(2, height, width, labels)
    reference = ReferenceState(model, labels)
    assert isinstance(fast, ResidualStackState)
    x = torch.zeros_like(target)  # filled sub-pixel by sub-pixel, as the sampling loop does
    with torch.no_grad():
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    got, want = fast.logits(x, i, j)[:, :, c], reference.logits(x, i, j)[:, :, c]
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"pixel ({i}, {j}), colour {c}")
                    x[:, c, i, j] = target[:, c, i, j]


@pytest.mark.parametrize("name", ["row_lstm", "diagonal_bilstm"])
@pytest.mark.parametrize("size", [(1, 1), (1, 4), (4, 1), (2, 3)])
def test_fast_recurrent_samplers_equal_reference_at_edge_sizes_and_in_float32(name, size):
    """One row, one column (a right-to-left pass of one pixel), and float32, where torch's
    LSTM may run its own kernels: the images of both samplers are the same."""
    height, width = size
    model = tiny_model(name, 3, n_classes=2)
    assert torch.equal(sample(model, 2, height, width, seed=3, labels=1),
                       sample(model, 2, height, width, seed=3, labels=1, sampler="reference"))
    model = model.float()
    target = torch.randint(0, 256, (2, 3, height, width), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fast, reference = model.sampling_state(2, height, width, torch.tensor([0, 1])), ReferenceState(model, torch.tensor([0, 1]))
    with torch.no_grad():
        for i in range(height):
            for j in range(width):
                got, want = fast.logits(target, i, j), reference.logits(target, i, j)
                torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4, msg=f"pixel ({i}, {j})")


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_logits_equal_reference_for_a_two_level_model(name, channels):
    """n_levels = 2 (binarized MNIST): the head is two logits per colour, the input 0/1."""
    model = tiny_model(name, channels, n_levels=2)
    target = torch.randint(0, 2, (2, channels, 4, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fast, reference = model.sampling_state(2, 4, 3), ReferenceState(model, None)
    assert isinstance(fast, ResidualStackState)
    x = torch.zeros_like(target)
    with torch.no_grad():
        for i in range(4):
            for j in range(3):
                for c in range(channels):
                    got, want = fast.logits(x, i, j)[:, :, c], reference.logits(x, i, j)[:, :, c]
                    assert got.shape == (2, 2)
                    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12, msg=f"pixel ({i}, {j}), colour {c}")
                    x[:, c, i, j] = target[:, c, i, j]
    images = sample(model, 3, 4, 3, seed=5)
    assert torch.equal(images, sample(model, 3, 4, 3, seed=5, sampler="reference"))
    assert set(images.unique().tolist()) == {0, 1}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_and_reference_draw_the_same_images(name, channels):
    model = tiny_model(name, channels, n_classes=4)
    options = dict(seed=7, labels=torch.tensor([3, 1]), temperature=1.5)
    fast = sample(model, 2, 3, 5, sampler="fast", **options)
    reference = sample(model, 2, 3, 5, sampler="reference", **options)
    assert fast.dtype == torch.uint8 and fast.shape == (2, channels, 3, 5)
    assert torch.equal(fast, reference)
    assert len(fast.unique()) > 5  # drawn, not constant


@pytest.mark.parametrize("name", MODELS)
def test_completion_keeps_the_given_rows(name):
    model = tiny_model(name, 3)
    prefix = torch.randint(0, 256, (2, 3, 2, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    fast = sample(model, 2, 4, 4, seed=1, prefix=prefix)
    reference = sample(model, 2, 4, 4, seed=1, prefix=prefix, sampler="reference")
    assert torch.equal(fast[:, :, :2], prefix)
    assert torch.equal(fast, reference)
    # The completion depends on the given rows (the fast state did read them).
    other = sample(model, 2, 4, 4, seed=1, prefix=255 - prefix)
    assert not torch.equal(fast[:, :, 2:], other[:, :, 2:])


def test_a_whole_image_as_prefix_is_returned_unchanged():
    model = tiny_model("pixelcnn", 1)
    image = torch.randint(0, 256, (1, 1, 3, 3), dtype=torch.uint8)
    assert torch.equal(sample(model, 1, 3, 3, prefix=image), image)


def test_labels_reach_every_layer():
    model = tiny_model("row_lstm", 1, n_classes=2)
    by_label = [sample(model, 3, 3, 3, seed=0, labels=k) for k in (0, 1)]
    assert not torch.equal(*by_label)
    assert torch.equal(by_label[0], sample(model, 3, 3, 3, seed=0, labels=torch.zeros(3, dtype=torch.long)))


def test_seed_fixes_the_images_and_leaves_the_global_rng_alone():
    model = tiny_model("diagonal_bilstm", 3)
    before = torch.get_rng_state()
    first = sample(model, 2, 3, 3, seed=11)
    assert torch.equal(torch.get_rng_state(), before)
    torch.manual_seed(123)  # the global seed plays no part
    assert torch.equal(sample(model, 2, 3, 3, seed=11), first)
    assert not torch.equal(sample(model, 2, 3, 3, seed=12), first)


def test_batches_are_seeded_so_that_one_batch_equals_sample():
    model = tiny_model("pixelcnn", 1)
    whole = sample_batched(model, 3, 2, 3, batch_size=4, seed=5)
    assert torch.equal(whole, sample(model, 3, 2, 3, seed=5))
    split = sample_batched(model, 3, 2, 3, batch_size=2, seed=5)
    assert torch.equal(split[:2], sample(model, 2, 2, 3, seed=5))
    assert torch.equal(split[2:], sample(model, 1, 2, 3, seed=batch_seed(5, 1)))
    assert not torch.equal(split[2:], sample(model, 1, 2, 3, seed=6))  # seeds' batches do not overlap


def test_the_batches_of_one_call_are_different_images():
    """torch's CPU generator reads the low 32 bits of a seed only: batch seeds that differed
    in their high bits alone (``seed + (k << 32)``) repeated batch 0 in every batch."""
    model = tiny_model("pixelcnn", 1)
    images = sample_batched(model, 8, 3, 3, batch_size=2, seed=5)  # (8, 1, 3, 3): four batches
    assert len({tuple(batch.flatten().tolist()) for batch in images.split(2)}) == 4
    streams = [torch.rand(3, generator=torch.Generator().manual_seed(batch_seed(5, k))) for k in range(100)]
    assert len({tuple(s.tolist()) for s in streams}) == 100
    assert batch_seed(2**40 + 5, 0) == 2**40 + 5 and batch_seed(2**40 + 5, 1) >> 32 == 2**8  # high bits kept


def greedy(model: nn.Module, channels: int, height: int, width: int) -> torch.Tensor:
    """Argmax decoding, written out with full forward passes."""
    x = torch.zeros(1, channels, height, width, dtype=torch.uint8)
    with torch.no_grad():
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    x[0, c, i, j] = model(x)[0, :, c, i, j].argmax()
    return x


@pytest.mark.parametrize("name", MODELS)
def test_temperature_towards_zero_is_argmax_decoding(name):
    model = tiny_model(name, 3)
    expected = greedy(model, 3, 3, 4)
    for seed in range(3):
        assert torch.equal(sample(model, 1, 3, 4, seed=seed, temperature=1e-4), expected)


def chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


def test_draws_follow_the_softmax_and_high_temperature_is_uniform():
    logits = torch.randn(256, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 2
    generator = torch.Generator().manual_seed(0)
    n = 40_000
    # 255 degrees of freedom: mean 255, standard deviation 22.6; 400 is 6.4 of them.
    at_one = draw(logits.expand(n, -1), 1.0, 1.0, generator)
    assert chi_square(torch.bincount(at_one, minlength=256).double(), torch.softmax(logits, 0)) < 400
    hot = draw(logits.expand(n, -1), 1e4, 1.0, generator)
    assert chi_square(torch.bincount(hot, minlength=256).double(), torch.full((256,), 1 / 256.0)) < 400
    # A sharp temperature concentrates the draws on the most likely value.
    cold = draw(logits.expand(1000, -1), 0.05, 1.0, generator)
    assert (cold == logits.argmax()).float().mean() > 0.9


def nucleus(logits: torch.Tensor, top_p: float) -> set[int]:
    """The smallest set of most likely values whose probability reaches top_p."""
    probs = torch.softmax(logits, 0)
    order = probs.argsort(descending=True).tolist()
    kept, mass = set(), 0.0
    for value in order:
        kept.add(value)
        mass += float(probs[value])
        if mass >= top_p:
            break
    return kept


@pytest.mark.parametrize("top_p", [0.05, 0.5, 0.9])
def test_top_p_never_leaves_the_nucleus(top_p):
    logits = torch.randn(256, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2
    allowed = nucleus(logits, top_p)
    drawn = draw(logits.expand(20_000, -1), 1.0, top_p, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == allowed  # inside it always, and all of it reachable
    # Inside the nucleus the draws keep the softmax's proportions.
    values = sorted(allowed)
    counts = torch.bincount(drawn, minlength=256)[values].double()
    probs = torch.softmax(logits, 0)[values]
    if len(values) > 1:
        assert chi_square(counts, probs / probs.sum()) < len(values) + 6 * math.sqrt(2 * len(values))


def test_sampled_images_stay_inside_each_sub_pixels_nucleus():
    model = tiny_model("pixelcnn", 3)
    images = sample(model, 2, 3, 4, seed=0, top_p=0.3, temperature=2.0)
    with torch.no_grad():
        logits = model(images) / 2.0  # causal: exactly the logits each sub-pixel was drawn from
    for b, c, i, j in torch.cartesian_prod(*(torch.arange(s) for s in images.shape)).tolist():
        assert images[b, c, i, j].item() in nucleus(logits[b, :, c, i, j], 0.3)


class Plain(nn.Module):
    """Not a pixelgen model: a forward and ``in_channels`` are all the reference needs."""

    in_channels = 1

    def __init__(self) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(256))
        with torch.no_grad():
            self.bias[42] = 100.0

    def forward(self, x):
        return self.bias[None, :, None, None, None].expand(len(x), 256, *x.shape[1:])


def test_any_model_with_a_forward_samples_with_the_reference_state():
    assert torch.equal(sample(Plain(), 2, 2, 2, seed=0), torch.full((2, 1, 2, 2), 42, dtype=torch.uint8))


class NoStepStack(ResidualStack):
    """A residual stack whose layer (a 1x1 mask-B convolution) has no ``sampling_step``."""

    def __init__(self, **stack) -> None:
        super().__init__(lambda h, colours: MaskedConv2d(2 * h, h, 1, "B", colours), **stack)


def test_a_stack_whose_layers_have_no_step_falls_back_to_the_reference():
    model = NoStepStack(in_channels=1, hidden_channels=2, n_layers=1, head_channels=4, n_classes=0, residual=True, skip=False)
    assert isinstance(model.sampling_state(1, 2, 2), ReferenceState)
    with pytest.warns(UserWarning, match="NoStepStack has no cached sampling state"):
        assert sample(model, 1, 2, 2, seed=0).shape == (1, 1, 2, 2)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=0.0), "temperature"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(sampler="quick"), "sampler"),
        (dict(labels=1), "not class-conditional"),
        (dict(prefix=torch.zeros(2, 1, 1, 3, dtype=torch.uint8)), "prefix must have shape"),
        (dict(prefix=torch.zeros(2, 1, 1, 4)), "uint8"),
    ],
)
def test_bad_arguments_fail_with_a_message(kwargs, message):
    with pytest.raises(SamplingError, match=message):
        sample(tiny_model("pixelcnn", 1), 2, 3, 4, **kwargs)


def test_a_conditional_model_needs_labels_in_range():
    model = tiny_model("pixelcnn", 1, n_classes=3)
    with pytest.raises(SamplingError, match="class-conditional"):
        sample(model, 2, 2, 2)
    with pytest.raises(SamplingError, match="0..2"):
        sample(model, 2, 2, 2, labels=torch.tensor([0, 3]))


# ----------------------------------------------------------------------- CLI and archive


@pytest.fixture
def checkpoint(tmp_path):
    """A real checkpoint file of a tiny conditional grey PixelCNN, in its run folder."""
    from pixelgen.recipe import recipe_from_dict, recipe_to_dict
    from pixelgen.store.checkpoint import plain, save_checkpoint

    torch.manual_seed(0)
    model = pixelgen.create_model("pixelcnn", in_channels=1, n_classes=2, **TINY)
    recipe = recipe_from_dict({"model": {"name": "pixelcnn"}, "data": {"name": "mnist"}})
    path = tmp_path / "run" / "best.ckpt"
    path.parent.mkdir()
    save_checkpoint(path, {
        "model": plain(model.pixelgen_config), "model_state": model.state_dict(),
        "recipe": recipe_to_dict(recipe), "epoch": 3,
    })
    return path


def test_cli_sample_appends_to_the_run_archive_and_writes_a_grid(checkpoint, capsys):
    from pixelgen.cli import main
    from pixelgen.store.archive import RunArchive
    from pixelgen.store.checkpoint import load_checkpoint, model_from_checkpoint

    argv = ["sample", str(checkpoint), "-n", "3", "--size", "3x4", "--seed", "5", "--top-p", "0.9",
            "--temperature", "0.8", "--batch-size", "2", "--label", "1", "--device", "cpu"]
    assert main(argv) == 0
    archive = RunArchive.open(checkpoint.parent / "archive.zarr")
    [(key, attrs)] = archive.sample_batches()
    images = archive.read_samples(key)
    assert images.dtype == "uint8" and images.shape == (3, 1, 3, 4)
    assert attrs["model"] == "pixelcnn" and attrs["checkpoint"] == str(checkpoint)
    assert attrs["recipe"]["data"]["name"] == "mnist"
    assert (attrs["temperature"], attrs["top_p"], attrs["seed"], attrs["sampler"]) == (0.8, 0.9, 5, "fast")
    assert attrs["labels"] == [1, 1, 1] and attrs["seconds_per_image"] > 0
    # The archived images are exactly what the library draws from the same settings.
    model = model_from_checkpoint(load_checkpoint(checkpoint))
    expected = sample_batched(model, 3, 3, 4, batch_size=2, seed=5, top_p=0.9, temperature=0.8, labels=1)
    assert torch.equal(torch.from_numpy(images), expected)
    assert (checkpoint.parent / f"samples-{key}.png").is_file()
    assert "samples/000000" in capsys.readouterr().out
    # A second call appends a second batch.
    assert main(argv + ["--sampler", "reference", "-n", "1"]) == 0
    assert [k for k, _ in archive.sample_batches()] == ["000000", "000001"]


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_cli_sample_runs_with_the_threads_of_the_recipe(tmp_path, monkeypatch, threads):
    """``train.threads`` holds for ``pixelgen sample`` as for training and evaluation
    (unset: one per two cores): on two busy cores one thread samples the quickstart's 16
    images some 40 times faster than torch's default of two."""
    model = pixelgen.create_model("pixelcnn", in_channels=1, **TINY)
    recipe = recipe_from_dict({"model": {"name": "pixelcnn"}, "data": {"name": "mnist"},
                               "train": {} if threads is None else {"threads": threads}})
    path = tmp_path / "run" / "best.ckpt"
    path.parent.mkdir()
    save_checkpoint(path, {"model": plain(model.pixelgen_config), "model_state": model.state_dict(),
                           "recipe": recipe_to_dict(recipe), "epoch": 1})
    set_to = []
    monkeypatch.setattr(torch, "set_num_threads", set_to.append)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as if torch kept its default of two
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    assert main(["sample", str(path), "-n", "1", "--size", "2x2", "--no-archive", "--device", "cpu"]) == 0
    assert set_to == [threads or 4, 1], "the process's threads, then one while drawing a small batch"


def test_cli_completes_an_image_keeping_its_top_rows(checkpoint, tmp_path):
    from PIL import Image

    from pixelgen.cli import main
    from pixelgen.store.images import read_image

    picture = torch.randint(0, 256, (1, 4, 5), dtype=torch.uint8)
    Image.fromarray(picture[0].numpy()).save(tmp_path / "digit.png")
    grid = tmp_path / "grid.png"
    argv = ["sample", str(checkpoint), "-n", "2", "--complete", str(tmp_path / "digit.png"), "--rows", "2",
            "--no-archive", "--png", str(grid), "--seed", "0", "--device", "cpu"]
    assert main(argv) == 0
    assert not (checkpoint.parent / "archive.zarr").exists()
    tiles = read_image(grid, 1)  # 2 images side by side, each 5 px wide upscaled x23, 23 px of padding
    scale = 23  # ceil(112 / 5): every image at least 112 px wide
    kept = tiles[:, scale : 3 * scale : scale, scale : scale + 5 * scale : scale]  # image 0's top rows, every 23rd pixel
    assert torch.equal(kept, picture[:, :2])
    second = tiles[:, scale : 3 * scale : scale, 7 * scale : 12 * scale : scale]  # image 1 starts after 5 + 1 pads
    assert torch.equal(second, picture[:, :2])


def test_cli_sample_errors_are_one_line(checkpoint, capsys):
    from pixelgen.cli import main

    assert main(["sample", str(checkpoint), "--size", "3x3", "--rows", "2", "--no-archive"]) == 2
    assert "--complete" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:  # the parser checks the path, before torch loads
        main(["sample", str(checkpoint.parent / "missing.ckpt"), "--size", "3x3"])
    assert info.value.code == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_a_recipe_run_ends_by_archiving_its_sample_section(tmp_path, monkeypatch, capsys):
    """``pixelgen run`` draws the recipe's [sample] images; ``pixelgen sample`` finds the size."""
    from datafiles import write_tiny_mnist

    from pixelgen.cli import main
    from pixelgen.recipe import dump_toml
    from pixelgen.store.archive import RunArchive

    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    write_tiny_mnist(tmp_path / "data", n_train=8, n_test=2)
    recipe = {
        "model": {"name": "row_lstm", "hyperparameters": {**TINY, "n_layers": 1, "n_classes": 10}},
        "data": {"name": "mnist", "root": str(tmp_path / "data"), "batch_size": 4, "download": False},
        "train": {"epochs": 1, "accelerator": "cpu"},
        "sample": {"n": 3, "seed": 4, "batch_size": 2, "temperature": 0.9},
        "output": {"dir": str(tmp_path / "run")},
    }
    (tmp_path / "recipe.toml").write_text(dump_toml(recipe))
    assert main(["run", str(tmp_path / "recipe.toml")]) == 0
    archive = RunArchive.open(tmp_path / "run" / "archive.zarr")
    [(key, attrs)] = archive.sample_batches()
    assert archive.read_samples(key).shape == (3, 1, 28, 28)
    assert attrs["model"] == "row_lstm" and attrs["labels"] == [0, 1, 2]
    assert (attrs["seed"], attrs["batch_size"], attrs["temperature"], attrs["sampler"]) == (4, 2, 0.9, "fast")
    assert attrs["recipe"]["sample"]["n"] == 3
    checkpoint = attrs["checkpoint"]
    capsys.readouterr()
    # The CLI reads the image size from the run's data set when not told.
    assert main(["sample", checkpoint, "-n", "2", "--seed", "4", "--temperature", "0.9", "--device", "cpu"]) == 0
    new = archive.read_samples(archive.sample_batches()[-1][0])
    assert (new == archive.read_samples(key)[:2]).all()  # the run's first batch, labels 0, 1


def test_the_archive_records_the_sampler_that_ran(tmp_path):
    from pixelgen.sampling import sampler_used
    from pixelgen.store.archive import RunArchive
    from pixelgen.study.inference import sample_to_archive

    fast = tiny_model("row_lstm", 1, n_classes=2)
    slow = NoStepStack(in_channels=1, hidden_channels=2, n_layers=1, head_channels=4, n_classes=0, residual=True, skip=False)
    assert (sampler_used(fast, "fast"), sampler_used(fast, "reference"), sampler_used(slow, "fast")) == (
        "fast", "reference", "reference")
    with pytest.warns(UserWarning, match="falls back"):
        _, key = sample_to_archive(slow, tmp_path / "a.zarr", 1, 2, 2, sampler="fast")
    assert dict(RunArchive.open(tmp_path / "a.zarr").sample_batches())[key]["sampler"] == "reference"


@pytest.mark.parametrize("n, threads_inside", [(2, 1), (pixelgen.sampling.ONE_THREAD_BATCH, 1),
                                              (pixelgen.sampling.ONE_THREAD_BATCH + 1, 3)])
def test_a_small_batch_is_sampled_with_one_thread_and_the_callers_count_comes_back(n, threads_inside):
    model = pixelgen.create_model("pixelcnn", in_channels=1, hidden_channels=4, n_layers=1, head_channels=8)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(torch.get_num_threads()))
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        sample(model, n, 1, 2, seed=0, sampler="reference")
        assert set(seen) == {threads_inside} and torch.get_num_threads() == 3
        with pytest.raises(SamplingError):
            sample(model, n, 1, 2, temperature=-1.0)
        assert torch.get_num_threads() == 3, "and after a refusal"
    finally:
        torch.set_num_threads(before)


def test_torch_threads_puts_the_count_back_after_an_error():
    before = torch.get_num_threads()
    with pytest.raises(KeyError), pixelgen.sampling.torch_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        raise KeyError
    assert torch.get_num_threads() == before

"""The third-party Gated PixelCNN plugin (examples/pixelgen-gated) through pixelgen's public API.

Installed with ``pip install -e examples/pixelgen-gated``; without it this module is skipped.
Its Jacobian must be exactly autoregressive and, unlike PixelCNN's, have no blind spot:
the field of output pixel ``(i, j)`` is the rectangle of rows ``i-1-R .. i-1`` and columns
``j-R .. j+R`` (vertical stack) plus columns ``j-R .. j-1`` of row ``i`` (horizontal
stack), with ``R = n_layers * (kernel_size // 2)``.
"""

from __future__ import annotations

import ast
import inspect
import warnings

import pytest
import torch
import torch.nn.functional as F

pixelgen_gated = pytest.importorskip("pixelgen_gated")

import pixelgen  # noqa: E402
from pixelgen.blocks import AutoregressiveModel  # noqa: E402
from pixelgen.cli import main  # noqa: E402
from pixelgen.registry.causality import (  # noqa: E402
    allowed_dependencies,
    check_causality,
    dependency_map,
)

TINY = dict(hidden_channels=16, head_channels=32)  # narrower maps let ReLUs hide dependencies


def tiny_model(channels: int, n_layers: int = 2, kernel_size: int = 3, seed: int = 0, **hyper):
    torch.manual_seed(seed)
    return pixelgen.create_model(
        "gated_pixelcnn", in_channels=channels, n_layers=n_layers, kernel_size=kernel_size, **TINY, **hyper
    )


def gated_field(channels: int, height: int, width: int, reach: int) -> torch.Tensor:
    """The field written down from the architecture (section 2.2), ``(C, H, W, C, H, W)``.

    Vertical stack: L layers of (r+1) x k convolutions reach L*r rows up and L*r columns
    either side, read one row down. Horizontal stack: L layers of 1 x k reach L*r columns
    left. Colours inside a pixel follow the autoregressive order.
    """
    _, rows, cols = torch.meshgrid(torch.arange(channels), torch.arange(height), torch.arange(width), indexing="ij")
    i, j = rows[..., None, None, None], cols[..., None, None, None]  # output position
    i2, j2 = rows[None, None, None], cols[None, None, None]  # input position
    above = (i2 < i) & (i - 1 - i2 <= reach) & ((j2 - j).abs() <= reach)
    same_row = (i2 == i) & (j - j2 <= reach)
    return allowed_dependencies(channels, height, width) & (above | same_row)


def test_registered_through_the_entry_point():
    assert "gated_pixelcnn" in pixelgen.list_models()
    assert "gated_pixelcnn" not in pixelgen.plugin_failures()
    model = tiny_model(3)
    assert isinstance(model, pixelgen_gated.GatedPixelCNN)
    assert isinstance(model, AutoregressiveModel)  # so the core's reference sampler applies
    assert model(torch.randint(0, 256, (2, 3, 4, 5))).shape == (2, 256, 3, 4, 5)


def test_uses_only_public_pixelgen_names():
    tree = ast.parse(inspect.getsource(pixelgen_gated.model))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pixelgen"):
            assert not any(part.startswith("_") for part in node.module.split(".")), node.module
            assert not any(alias.name.startswith("_") for alias in node.names), ast.dump(node)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "pixelgen":
            assert not node.attr.startswith("_"), node.attr


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(5, 5), (4, 7)])
def test_causal(channels, size):
    support = check_causality(tiny_model(channels), channels, *size)
    assert support.any()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(5, 5), (4, 5), (6, 4)])
def test_no_blind_spot_every_earlier_subpixel_is_seen(channels, size):
    """Kernel 3 and 4 layers reach R = 4 >= max(W - 1, H - 2): the whole context, exactly."""
    got = dependency_map(tiny_model(channels, n_layers=4), channels, *size, n_inputs=6)
    expected = allowed_dependencies(channels, *size)
    missing = (expected & ~got).nonzero().tolist()[:5]
    assert torch.equal(got, expected), f"missing {missing}"


@pytest.mark.parametrize("channels", [1, 3])
def test_field_is_a_rectangle_above_and_a_segment_left(channels):
    """Where the image is larger than the reach R = 2, the field is exactly the architecture's."""
    h, w, reach = 5, 7, 2
    got = dependency_map(tiny_model(channels, n_layers=2), channels, h, w, n_inputs=6)
    expected = gated_field(channels, h, w, reach)
    missing = (expected & ~got).nonzero().tolist()[:5]
    extra = (got & ~expected).nonzero().tolist()[:5]
    assert torch.equal(got, expected), f"missing {missing}, unexpected {extra}"
    field = got[:, 4, 3].any(0).any(0)  # (H, W): pixels that output pixel (4, 3) sees
    assert field.int().tolist() == [
        [0, 0, 0, 0, 0, 0, 0],  # R + 1 = 3 rows up at most
        [0, 1, 1, 1, 1, 1, 0],  # columns 3 - R .. 3 + R, right of the pixel included:
        [0, 1, 1, 1, 1, 1, 0],  # where a stacked mask-B PixelCNN is blind
        [0, 1, 1, 1, 1, 1, 0],
        [0, 1, 1, int(channels > 1), 0, 0, 0],  # R pixels to the left; itself: earlier colours
    ]


def test_class_conditional():
    model = tiny_model(3, n_classes=4)
    labels = torch.tensor([2])
    with torch.no_grad():
        for layer in model.layers:  # class biases start at zero; make them count
            layer.horizontal_bias.embedding.weight.normal_()
    x = torch.randint(0, 256, (1, 3, 4, 5))
    assert not torch.equal(model(x, labels), model(x, torch.tensor([1])))
    check_causality(model, 3, 4, 5, labels=labels)
    with pytest.raises(ValueError, match="labels"):
        model(x)


@pytest.mark.parametrize("hyper", [dict(kernel_size=4), dict(kernel_size=0), dict(n_layers=0)])
def test_bad_hyperparameters_fail_loudly(hyper):
    with pytest.raises((ValueError, pixelgen.PixelgenError), match=next(iter(hyper))):  # the plugin, or the size rule
        pixelgen.create_model("gated_pixelcnn", **{**TINY, **hyper})


def test_cli_check_exits_0_and_sees_the_whole_context(capsys):
    # Kernel 5 and 3 layers reach R = 6 >= max(7 - 1, 6 - 2): the CLI's 6x7 image is seen whole.
    argv = ["check", "gated_pixelcnn", "--hp", "hidden_channels=16", "--hp", "head_channels=32"]
    argv += ["--hp", "n_layers=3", "--hp", "kernel_size=5"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "C=1 at 6x7: 861 of 861 allowed" in out and "C=3 at 6x7: 7875 of 7875 allowed" in out
    picture = out.split("unseen):\n", 1)[1]
    assert "#" in picture and "." not in picture


def test_a_few_adam_steps_reduce_the_loss():
    torch.manual_seed(0)
    model = tiny_model(3, n_layers=2)
    x = torch.randint(0, 256, (2, 3, 4, 4))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        loss = F.cross_entropy(model(x), x)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] - 0.03, losses  # ln 256 = 5.55 nats at the start


def float64_model(channels: int, n_classes: int = 0, n_layers: int = 2, kernel_size: int = 3, seed: int = 0):
    """A tiny model in float64 with perturbed weights: zero-initialised class biases would
    hide mistakes, and fast and reference logits must agree to rounding."""
    model = tiny_model(channels, n_layers=n_layers, kernel_size=kernel_size, seed=seed, n_classes=n_classes).double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.3 * torch.randn(param.shape, generator=generator, dtype=param.dtype))
    return model.eval()


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [(4, 4), (5, 3)])
@pytest.mark.parametrize("n_classes", [0, 3])
def test_fast_logits_equal_reference_at_every_step(channels, size, n_classes):
    """The cached state against a full forward pass per sub-pixel, sub-pixel by sub-pixel.

    Kernel 3 and 3 layers (R = 3): the vertical stack reaches rows the cache must hold
    and the padding on both sides of the narrow image.
    """
    from pixelgen.blocks import ReferenceState, SamplingState

    height, width = size
    model = float64_model(channels, n_classes, n_layers=3)
    labels = torch.tensor([2, 0]) if n_classes else None
    target = torch.randint(0, 256, (2, channels, height, width), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    fast = model.sampling_state(2, height, width, labels)
    reference = ReferenceState(model, labels)
    assert isinstance(fast, SamplingState) and not isinstance(fast, ReferenceState)
    x = torch.zeros_like(target)  # filled sub-pixel by sub-pixel, as the sampling loop does
    with torch.no_grad():
        for i in range(height):
            for j in range(width):
                for c in range(channels):
                    got, want = fast.logits(x, i, j)[:, :, c], reference.logits(x, i, j)[:, :, c]
                    torch.testing.assert_close(got, want, rtol=0, atol=1e-10, msg=f"pixel ({i}, {j}), colour {c}")
                    x[:, c, i, j] = target[:, c, i, j]


@pytest.mark.parametrize("channels", [1, 3])
def test_fast_and_reference_draw_the_same_images(channels):
    model = float64_model(channels, n_classes=4, kernel_size=5)
    options = dict(seed=7, labels=torch.tensor([3, 1]), temperature=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the reference sampler
        fast = pixelgen.sample(model, 2, 5, 4, sampler="fast", **options)
    reference = pixelgen.sample(model, 2, 5, 4, sampler="reference", **options)
    assert fast.dtype == torch.uint8 and fast.shape == (2, channels, 5, 4)
    assert torch.equal(fast, reference)
    assert len(fast.unique()) > 5  # drawn, not constant
    assert pixelgen.sampling.sampler_used(model, "fast") == "fast"


def test_completion_with_the_fast_state_keeps_the_given_rows():
    model = float64_model(3)
    prefix = torch.randint(0, 256, (2, 3, 2, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    fast = pixelgen.sample(model, 2, 4, 4, seed=1, prefix=prefix)
    assert torch.equal(fast[:, :, :2], prefix)
    assert torch.equal(fast, pixelgen.sample(model, 2, 4, 4, seed=1, prefix=prefix, sampler="reference"))


def test_trains_and_samples_through_the_real_run_command(tmp_path, capsys, monkeypatch):
    """The whole user path with a third-party model: recipe -> run -> checkpoint -> sample."""
    from datafiles import write_tiny_mnist

    from pixelgen.recipe import dump_toml
    from pixelgen.store.archive import RunArchive

    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    write_tiny_mnist(tmp_path / "data", n_train=24, n_test=4)
    out = tmp_path / "run"
    recipe = {
        "model": {"name": "gated_pixelcnn",
                  "hyperparameters": {"hidden_channels": 8, "n_layers": 2, "kernel_size": 3, "head_channels": 16}},
        "data": {"name": "mnist", "root": str(tmp_path / "data"), "batch_size": 8,
                 "validation_fraction": 0.25, "download": False},
        "train": {"epochs": 2, "accelerator": "cpu", "seed": 0, "optimizer": {"lr": 0.01}},
        "sample": {"n": 2, "sampler": "fast"},
        "output": {"dir": str(out)},
    }
    (tmp_path / "gated.toml").write_text(dump_toml(recipe))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["run", str(tmp_path / "gated.toml")]) == 0
    assert not [w for w in caught if "falls back to the reference" in str(w.message)]
    assert (out / "best.ckpt").is_file() and (out / "last.ckpt").is_file()
    archive = RunArchive.open(out / "archive.zarr")
    train_bpd = archive.metrics()["train_bits_per_dim"]
    assert len(train_bpd) == 2 and train_bpd[1] < train_bpd[0]
    (key, attributes), = archive.sample_batches()
    assert archive.read_samples(key).shape == (2, 1, 28, 28)
    assert attributes["model"] == "gated_pixelcnn"
    assert attributes["sampler"] == "fast"  # the plugin's own cached state ran

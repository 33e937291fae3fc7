"""``pixelgen check`` narrows the widths of a model and nothing else, and still finds a leak
that the model's full depth hides in its last layer."""

from __future__ import annotations

import pytest
import torch
from pixelgen_plugins.pixelcnn import PixelCNN
from torch import nn

import pixelgen
from pixelgen import cli, registry
from pixelgen.blocks import Hyperparameter, stack_hyperparameters
from pixelgen.registry.causality import dependency_map, narrow_model

WIDTHS = {
    "pixelcnn": ["hidden_channels", "head_channels"],
    "row_lstm": ["hidden_channels", "head_channels"],
    "diagonal_bilstm": ["hidden_channels", "head_channels"],
    "multiscale": ["hidden_channels", "head_channels", "upsample_channels"],
    "gated_pixelcnn": ["hidden_channels", "head_channels"],
    "pixelcnn_pp": ["hidden_channels"],
}


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_the_width_rule_names_each_models_widths(name):
    if name not in pixelgen.list_models():
        pytest.skip(f"{name} is not installed")
    assert registry.get_model_spec(name).widths() == WIDTHS[name]


@pytest.mark.parametrize("name", ["pixelcnn", "row_lstm", "diagonal_bilstm", "multiscale"])
@pytest.mark.parametrize("colours", [1, 3])
def test_narrowing_keeps_every_other_hyperparameter(name, colours):
    declared = registry.get_model_spec(name).defaults()
    model, narrowed = narrow_model(name, colours)
    built = model.pixelgen_config["hyperparameters"]
    assert set(narrowed) == set(WIDTHS[name])
    for key, value in narrowed.items():  # 4 channels in every colour group
        assert value == 4 * colours < declared[key] and built[key] == value
    kept = {k: v for k, v in declared.items() if k not in narrowed}
    assert {k: v for k, v in built.items() if k not in narrowed} == {**kept, "in_channels": colours}


def test_a_width_given_by_the_user_wins():
    model, narrowed = narrow_model("pixelcnn", 3, {"hidden_channels": 30, "n_layers": 2})
    assert narrowed == {"head_channels": 12}
    built = model.pixelgen_config["hyperparameters"]
    assert built["hidden_channels"] == 30 and built["n_layers"] == 2 and built["kernel_size"] == 3


class LastLayerLeaks(nn.Module):
    """A layer whose output at ``(i, j)`` is the wrapped layer's at ``(i, j + 1)``."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x):
        return self.layer(x).roll(-1, dims=-1)  # (B, h, H, W), one column ahead


def deep_leaky_pixelcnn(**hyperparameters) -> PixelCNN:
    """A PixelCNN whose last layer reads one pixel ahead: a leak only at full depth."""
    model = PixelCNN(**hyperparameters)
    model.layers[-1] = LastLayerLeaks(model.layers[-1])
    return model


class DeepLeakPlugin:
    @pixelgen.hookimpl
    def pixelgen_models(self):
        hyperparameters = {**stack_hyperparameters(n_layers=15), "kernel_size": Hyperparameter(3, "k")}
        return [pixelgen.ModelSpec("deep_leak", deep_leaky_pixelcnn, "leaks in layer 15", hyperparameters)]


def test_check_at_narrow_width_finds_a_leak_in_the_last_of_15_layers(capsys):
    # The initial weights decide which of the leak's paths a narrow model keeps alive (see
    # the note below on ReLU units): seeded, so that the first violation named is the same
    # whatever ran before.
    torch.manual_seed(0)
    registry.register_plugin(DeepLeakPlugin(), name="deep_leak_plugin")
    try:
        model, narrowed = narrow_model("deep_leak", 1)
        torch.manual_seed(0)
        assert len(model.layers) == 15 and isinstance(model.layers[-1], LastLayerLeaks)
        assert narrowed == {"hidden_channels": 4, "head_channels": 4}
        assert cli.main(["check", "deep_leak", "--channels", "1"]) == 2
    finally:
        registry.unregister_plugin("deep_leak_plugin")
    err = capsys.readouterr().err
    # Output (0, 0) now reads the layer's features at (0, 1), which see input (0, 0).
    assert "output sub-pixel (row 0, column 0, grey) depends on input sub-pixel (row 0, column 0, grey)" in err


def test_pixelgen_check_says_what_it_narrowed(capsys, monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    argv = ["check", "row_lstm", "--hp", "n_layers=2", "--hp", "head_channels=20", "--channels", "3",
            "--height", "3", "--width", "4"]
    assert cli.main(argv) == 0
    captured = capsys.readouterr()
    assert "at narrowed widths hidden_channels=12 (declared 128);" in captured.out
    assert "head_channels" not in captured.out and captured.err == ""


BUILT_IN = ["pixelcnn", "row_lstm", "diagonal_bilstm", "multiscale", "gated_pixelcnn", "pixelcnn_pp"]
# Two layers and two levels per sub-pixel (the logits of 256 make the declared widths slow),
# the multi-scale model's unconditional network as shallow, one block per resolution for
# PixelCNN++; the gated example has 256 levels.
SHALLOW = {"n_layers": 2, "n_levels": 2}
TWO_LAYERS = {name: SHALLOW for name in BUILT_IN} | {
    "multiscale": {**SHALLOW, "small_n_layers": 2}, "gated_pixelcnn": {"n_layers": 2},
    "pixelcnn_pp": {"n_resnet": 1, "n_levels": 2}}


def seen_at_both_widths(name: str, colours: int, hyperparameters: dict, height: int, width: int):
    """``(narrow, full)``: the dependencies ``pixelgen check`` sees at narrowed widths and at
    the declared ones (``--full-width``), the same initial weights' seed for both."""
    if name not in pixelgen.list_models():
        pytest.skip(f"{name} is not installed")
    torch.manual_seed(0)
    narrow, _ = narrow_model(name, colours, hyperparameters)
    torch.manual_seed(0)
    full = registry.create_model(name, **{**hyperparameters, "in_channels": colours})
    return dependency_map(narrow, colours, height, width), dependency_map(full, colours, height, width)


@pytest.mark.parametrize("name", [*BUILT_IN[:-1], pytest.param("pixelcnn_pp", marks=pytest.mark.slow)])  # 160 filters: minutes
@pytest.mark.parametrize("colours", [1, 3])
def test_narrow_and_declared_widths_see_the_same_dependencies(name, colours):
    """Two layers on a 4x6 image (where no model sees every allowed dependency): the
    narrowed model sees exactly what the declared widths see."""
    narrow, full = seen_at_both_widths(name, colours, TWO_LAYERS[name], 4, 6)
    assert torch.equal(narrow, full), (int(narrow.sum()), int(full.sum()), int((full & ~narrow).sum()))


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_IN[:-1])  # PixelCNN++ at its declared 160 filters: tens of minutes here
@pytest.mark.parametrize("colours", [1, 3])
def test_pixelgen_check_sees_at_narrowed_widths_what_full_width_sees(name, colours):
    """``pixelgen check NAME`` against ``--full-width`` at the defaults and the check's 6x7
    image: the same set of dependencies seen (docs/models.md states this guarantee)."""
    narrow, full = seen_at_both_widths(name, colours, {}, 6, 7)
    assert torch.equal(narrow, full), (int(narrow.sum()), int(full.sum()), int((full & ~narrow).sum()))

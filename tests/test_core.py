"""The core building blocks, pinned: masks, colour groups, skew, metrics, the registry."""

from __future__ import annotations

import math
import types

import pytest
import torch

import pixelgen
from pixelgen import registry
from pixelgen.blocks import Hyperparameter
from pixelgen.errors import RegistryError
from pixelgen.nn.layers import (
    MaskedConv2d,
    colour_groups,
    conv_mask,
    diagonal_order,
    skew,
    unskew,
)


def test_colour_groups_split_each_stack():
    assert colour_groups(6, 3).tolist() == [0, 0, 1, 1, 2, 2]
    assert colour_groups(8, 3).tolist() == [0, 0, 0, 1, 1, 1, 2, 2]  # uneven: 3, 3, 2
    assert colour_groups(12, 3, stacks=2).tolist() == [0, 0, 1, 1, 2, 2] * 2
    assert colour_groups(4, 1).tolist() == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        colour_groups(2, 3)


def test_mask_a_3x3_rgb_pattern():
    mask = conv_mask(3, 3, (3, 3), "A", colours=3)  # (out, in, 3, 3), one channel per colour
    spatial = mask.amax(dim=(0, 1))
    assert spatial.tolist() == [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    # Every output colour sees all colours above and to the left.
    assert mask[:, :, 0].eq(1).all() and mask[:, :, 1, 0].eq(1).all()
    # Centre: R sees nothing, G sees R, B sees R and G.
    assert mask[:, :, 1, 1].tolist() == [[0, 0, 0], [1, 0, 0], [1, 1, 0]]


def test_mask_b_centre_includes_own_colour_group():
    mask = conv_mask(6, 3, (1, 1), "B", colours=3)
    assert mask[:, :, 0, 0].tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 1, 1]]


def test_mask_of_a_row_kernel_and_gate_stacks():
    mask = conv_mask(8, 2, (1, 3), "B", colours=1, out_stacks=4)
    assert mask[0, 0].tolist() == [[1, 1, 0]]  # left neighbour, itself, not the right one
    gates = conv_mask(12, 3, (1, 1), "B", colours=3, out_stacks=4)[:, :, 0, 0]
    # Each of the four gates is split R, G, B on its own.
    assert gates.tolist() == [[1, 0, 0], [1, 1, 0], [1, 1, 1]] * 4


def test_masks_reject_even_kernels():
    with pytest.raises(ValueError, match="odd"):
        conv_mask(1, 1, (2, 1), "B", colours=1)


def test_masked_conv_applies_mask_in_forward_without_touching_weights():
    conv = MaskedConv2d(1, 1, 3, "A", colours=1, bias=False)
    torch.nn.init.ones_(conv.weight)
    weight_before = conv.weight.detach().clone()
    x = torch.zeros(1, 1, 3, 3)
    x[0, 0, 1, 2] = 1.0  # right of the centre: invisible
    x[0, 0, 2, 1] = 1.0  # below: invisible
    x[0, 0, 1, 1] = 1.0  # the centre itself, mask A: invisible
    assert conv(x)[0, 0, 1, 1] == 0
    x[0, 0, 0, 2] = 1.0  # above-right: visible
    assert conv(x)[0, 0, 1, 1] == 1
    assert torch.equal(conv.weight, weight_before)


def test_skew_example_and_round_trip():
    x = torch.arange(1, 7).view(1, 1, 2, 3)
    assert skew(x)[0, 0].tolist() == [[1, 2, 3, 0], [0, 4, 5, 6]]
    y = torch.randn(2, 4, 5, 7)
    assert skew(y).shape == (2, 4, 5, 11)
    assert torch.equal(unskew(skew(y), 7), y)
    with pytest.raises(ValueError):
        unskew(skew(y), 6)


@pytest.mark.parametrize("height, width", [(1, 4), (3, 3), (4, 6), (6, 2)])
def test_diagonal_order_is_the_skewed_column_scan(height, width):
    """The Diagonal BiLSTM's gather visits pixels as a column scan of skew() would, padding dropped."""
    numbers = torch.arange(1, height * width + 1).view(1, 1, height, width)
    columns = skew(numbers)[0, 0].t()  # (W + H - 1, H): column t of the skewed map
    order, sizes = diagonal_order(height, width)
    assert (order + 1).tolist() == [v for column in columns.tolist() for v in column if v]
    assert sizes == [int((column > 0).sum()) for column in columns]


def test_uniform_logits_give_exactly_eight_bits_per_dim():
    x = torch.randint(0, 256, (4, 3, 5, 6))
    logits = torch.zeros(4, 256, 3, 5, 6)
    assert pixelgen.bits_per_dim(logits, x).item() == pytest.approx(8.0, abs=1e-6)
    assert torch.allclose(pixelgen.nll_nats(logits, x), torch.full((4,), 90 * math.log(256)))


def test_nll_matches_cross_entropy_per_subpixel():
    x = torch.randint(0, 256, (2, 1, 3, 3))
    logits = torch.randn(2, 256, 1, 3, 3)
    per_subpixel = torch.nn.functional.cross_entropy(logits, x, reduction="none")
    assert torch.allclose(pixelgen.nll_nats(logits, x), per_subpixel.sum(dim=(1, 2, 3)))


@pytest.mark.parametrize("name", ["pixelcnn", "row_lstm", "diagonal_bilstm"])
def test_builtin_models_follow_the_contract(name):
    model = pixelgen.create_model(name, in_channels=3, hidden_channels=6, n_layers=1, head_channels=12)
    x = torch.randint(0, 256, (2, 3, 4, 5))
    logits = model(x)
    assert logits.shape == (2, 256, 3, 4, 5) and logits.dtype == torch.float32
    assert model.pixelgen_config == {
        "name": name,
        "hyperparameters": {**registry.get_model_spec(name).defaults(),
                            "in_channels": 3, "hidden_channels": 6, "n_layers": 1, "head_channels": 12},
    }


def test_paper_defaults_are_the_documented_hyperparameters():
    defaults = {name: registry.get_model_spec(name).defaults() for name in pixelgen.list_models()}
    assert defaults["pixelcnn"]["n_layers"] == 15
    assert defaults["row_lstm"]["n_layers"] == defaults["diagonal_bilstm"]["n_layers"] == 12
    for name in ("pixelcnn", "row_lstm", "diagonal_bilstm"):
        assert defaults[name]["hidden_channels"] == 128 and defaults[name]["head_channels"] == 1024


def test_builtins_come_from_entry_points_not_imports():
    reg = registry.get_registry()
    assert {n: reg.models[n][1] for n in ("pixelcnn", "row_lstm", "diagonal_bilstm")} == {
        "pixelcnn": "pixelcnn", "row_lstm": "row_lstm", "diagonal_bilstm": "diagonal_bilstm"
    }
    import pathlib
    core = pathlib.Path(pixelgen.__file__).parent
    for source in core.glob("*.py"):
        assert "pixelgen_plugins" not in source.read_text(), f"{source.name} imports the plugins by name"


def test_unknown_model_and_hyperparameter_errors_list_what_exists():
    with pytest.raises(RegistryError, match="available models: .*pixelcnn.*row_lstm"):
        pixelgen.create_model("pixelrnn")
    with pytest.raises(RegistryError, match="no hyperparameter 'depth'; available: in_channels=3, hidden_channels=128"):
        pixelgen.create_model("pixelcnn", depth=3)


def test_a_broken_plugin_is_reported_and_does_not_break_the_others(monkeypatch):
    real = registry.importlib.metadata.entry_points

    class Broken:
        name, group, value = "broken_plugin", "pixelgen", "no_such_module_xyz"

        def load(self):
            raise ImportError("No module named 'no_such_module_xyz'")

    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [*real(group=group), Broken()])
    monkeypatch.setattr(registry, "_REGISTRY", None)
    assert {"pixelcnn", "row_lstm", "diagonal_bilstm"} <= set(pixelgen.list_models())
    assert "broken_plugin" in pixelgen.plugin_failures()
    assert "no_such_module_xyz" in pixelgen.plugin_failures()["broken_plugin"]
    with pytest.raises(RegistryError, match="failed to load: broken_plugin"):
        pixelgen.create_model("broken")
    monkeypatch.setattr(registry, "_REGISTRY", None)  # the next test loads afresh


def test_a_plugin_registered_at_run_time_joins_the_registry():
    class Tiny(torch.nn.Module):
        def __init__(self, in_channels: int = 1, width: int = 2) -> None:
            super().__init__()

    plugin = types.SimpleNamespace(
        pixelgen_models=pixelgen.hookimpl(lambda: [pixelgen.ModelSpec(
            "tiny_runtime", Tiny, "test",
            hyperparameters={"in_channels": Hyperparameter(1, "colours"), "width": Hyperparameter(2, "width")},
        )])
    )
    registry.register_plugin(plugin, name="tiny_runtime_plugin")
    try:
        assert "tiny_runtime" in pixelgen.list_models()
        assert registry.plugin_of("tiny_runtime") == "tiny_runtime_plugin"
        assert registry.get_model_spec("tiny_runtime").defaults() == {"in_channels": 1, "width": 2}
    finally:
        registry.unregister_plugin("tiny_runtime_plugin")
    assert "tiny_runtime" not in pixelgen.list_models()


def test_cli_plugins_lists_models_plugins_and_defaults(capsys):
    from pixelgen.cli import main

    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "pixelcnn  (plugin pixelcnn)" in out and "n_layers = 15" in out
    assert "diagonal_bilstm  (plugin diagonal_bilstm)" in out and "cifar10" in out


def test_cli_check_passes_and_unknown_model_is_one_line(capsys):
    from pixelgen.cli import main

    assert main(["check", "row_lstm", "--hp", "hidden_channels=6", "--hp", "n_layers=1",
                 "--hp", "head_channels=8", "--height", "4", "--width", "5"]) == 0
    assert "row_lstm: causal for C=3 at 4x5" in capsys.readouterr().out
    assert main(["check", "pixelrnn"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'pixelrnn'" in err

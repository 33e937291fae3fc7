"""Quantized checkpoints: smaller files that every command loads like any other."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import pytest
import torch
from datafiles import write_tiny_mnist

from pixelgen import cli
from pixelgen.errors import CheckpointError
from pixelgen.recipe import dump_toml
from pixelgen.registry import create_model
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.quantization import int8_per_channel, quantizable_weights

TINY_MODEL = {"hidden_channels": 8, "n_layers": 1, "head_channels": 16}
MEASURE = ["--scaling-sizes", "4", "--scaling-depths", "1", "--field-size", "5", "--timing-images", "1"]


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny Row LSTM on Fashion-MNIST-format data, trained with an average of its weights."""
    root = tmp_path_factory.mktemp("quantize")
    write_tiny_mnist(root / "data", n_train=24, n_test=8)
    recipe = {
        "model": {"name": "row_lstm", "hyperparameters": dict(TINY_MODEL)},
        "data": {"name": "fashion_mnist", "root": str(root / "data"), "batch_size": 8, "download": False,
                 "validation_fraction": 0.25},
        "train": {"epochs": 2, "accelerator": "cpu", "seed": 0, "ema_decay": 0.5, "optimizer": {"lr": 0.01}},
        "output": {"dir": str(root / "run")},
    }
    (root / "run.toml").write_text(dump_toml(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELGEN_PROGRESS", "0")
        run_cli("run", str(root / "run.toml"))
    return root


def test_int8_rounds_each_weight_to_its_output_channels_grid():
    torch.manual_seed(0)
    weight = torch.randn(4, 3, 3, 3)
    weight[2] = 0.0
    q, scale = int8_per_channel(weight)
    assert q.dtype == torch.int8 and q.shape == weight.shape and scale.shape == (4,)
    assert q.abs().max() == 127 and (q[2] == 0).all() and scale[2] == 1.0
    error = (weight - q.float() * scale[:, None, None, None]).abs()
    assert (error <= scale[:, None, None, None] / 2 + 1e-7).all()
    for o in (0, 1, 3):  # the largest weight of a channel lands on +-127 exactly
        assert scale[o] == pytest.approx(weight[o].abs().max().item() / 127)


def test_int8_per_channel_takes_several_channel_dimensions():
    torch.manual_seed(1)
    matrices = torch.randn(2, 6, 4)  # two (out, in) maps, as the Diagonal BiLSTM's state-to-state
    q, scale = int8_per_channel(matrices, channel_dims=2)
    assert scale.shape == (2, 6)
    assert torch.equal(q.abs().amax(dim=2), torch.full((2, 6), 127, dtype=torch.int8))
    assert ((matrices - q.float() * scale[..., None]).abs() <= scale[..., None] / 2 + 1e-7).all()


def test_int8_quantizes_every_convolution_weight_and_the_bare_state_to_state_matrices():
    model = create_model("diagonal_bilstm", in_channels=3, n_classes=2, **TINY_MODEL)
    found = quantizable_weights(model)
    convolutions = {f"{name}.weight": 1 for name, module in model.named_modules()
                    if isinstance(module, torch.nn.Conv2d | torch.nn.Conv1d)}
    assert found == {**convolutions, "layers.0.state_to_state": 2}
    assert all(value.dim() < 2 or "embedding" in name or ".initial_" in name  # biases, embeddings, initial states
               for name, value in model.named_parameters() if name not in found)


def quantize(trained, to: str, *extra: str) -> tuple[dict, str]:
    out = trained / f"run/best-{to}.ckpt"  # written by several tests of the module's one run: --force
    printed = run_cli("quantize", str(trained / "run/best.ckpt"), "--to", to, "--out", str(out), "--force", *extra)
    return ckpt_io.load_checkpoint(out), printed


def test_int8_checkpoint_is_small_weights_only_and_digested(trained):
    state, printed = quantize(trained, "int8")
    original = trained / "run/best.ckpt"
    small = trained / "run/best-int8.ckpt"
    assert small.stat().st_size < 0.3 * original.stat().st_size and "int8" in printed
    assert set(state) >= {"model", "model_state", "recipe", "epoch", "quantization", "model_digest"}
    assert not set(state) & {"optimizer", "rng", "ema_state", "scheduler"}
    record = state["quantization"]
    assert record["to"] == "int8" and record["weights"] == "ema" and "per-output-channel symmetric" in record["scheme"]
    for name in quantizable_weights(ckpt_io.model_from_checkpoint(state)):
        assert state["model_state"][name].dtype == torch.int8 and record["scales"][name].dtype == torch.float32
    assert torch.load(small, weights_only=True)["model_digest"] == state["model_digest"]


def test_quantized_weights_are_the_rounded_average_and_give_close_logits(trained):
    original = ckpt_io.load_checkpoint(trained / "run/best.ckpt")
    float_model = ckpt_io.model_from_checkpoint(original)  # the average (ema) by default
    x = torch.randint(0, 256, (2, 1, 6, 6))
    for to, tolerance in (("int8", 0.05), ("float16", 0.01), ("bfloat16", 0.05)):
        state, _ = quantize(trained, to)
        model = ckpt_io.model_from_checkpoint(state)
        for name, value in model.state_dict().items():
            assert value.dtype == float_model.state_dict()[name].dtype, name  # float32 again on load
        with torch.no_grad():
            assert torch.allclose(model(x), float_model(x), atol=tolerance * float_model(x).abs().max().item())
    assert state["model_state"]["head.logits.weight"].dtype == torch.bfloat16


def test_eval_sample_analyse_and_compare_load_a_quantized_checkpoint(trained, tmp_path):
    quantize(trained, "int8")
    small = str(trained / "run/best-int8.ckpt")
    before = json.loads(run_cli("eval", str(trained / "run/best.ckpt"), "--json"))
    after = json.loads(run_cli("eval", small, "--json"))
    assert after["weights"] == "ema" and abs(after["bits_per_dim"] - before["bits_per_dim"]) < 0.01
    assert "2 samples" in run_cli("sample", small, "-n", "2", "--no-archive", "--png", str(tmp_path / "g.png"))
    assert "analysis.md" in run_cli("analyse", small, "--out", str(tmp_path / "analysis"), *MEASURE)
    compared = json.loads(run_cli("compare", str(trained / "run"), small, "--out", str(tmp_path / "cmp"), "--json", *MEASURE))
    assert [r["run"] for r in compared["runs"]] == ["run", "run/best-int8.ckpt"]
    assert compared["runs"][1]["test_bits_per_dim"] is None  # a checkpoint alone has no archive


def test_a_quantized_checkpoint_refuses_other_weights_requantizing_and_resuming(trained, tmp_path, capsys):
    quantize(trained, "float16")
    small = trained / "run/best-float16.ckpt"
    assert cli.main(["eval", str(small), "--weights", "raw"]) == 2
    assert "holds the ema weights only" in capsys.readouterr().err
    assert cli.main(["quantize", str(small), "--to", "int8"]) == 2
    assert "already quantized" in capsys.readouterr().err
    folder = tmp_path / "copy"
    shutil.copytree(trained / "run", folder)
    shutil.copy(small, folder / "last.ckpt")
    assert cli.main(["run", str(trained / "run.toml"), "--resume", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert "quantized" in err and "resume from the original" in err and err.count("\n") == 1


def test_bad_targets_are_one_line(trained, capsys):
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error, one line
        cli.main(["quantize", str(trained / "run/best.ckpt"), "--to", "int4"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2
    assert err.count("\n") == 1 and "int4" in err and "int8" in err
    with pytest.raises(CheckpointError, match="choose one of int8, float16, bfloat16"):
        ckpt_io.quantized_checkpoint(ckpt_io.load_checkpoint(trained / "run/best.ckpt"), "int4")
    assert cli.main(["quantize", str(trained / "run/best.ckpt"), "--to", "int8", "--out", str(trained / "run")]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_the_digest_covers_the_stored_int8_values_and_scales(trained, tmp_path):
    state, _ = quantize(trained, "int8")
    name = next(iter(state["quantization"]["scales"]))
    tampered = {**state, "quantization": {**state["quantization"], "scales": {
        **state["quantization"]["scales"], name: state["quantization"]["scales"][name] * 2}}}
    torch.save(tampered, tmp_path / "edited.ckpt")  # the old digest kept
    with pytest.raises(CheckpointError, match="its 'quantization' entry does not match its recorded digest"):
        ckpt_io.load_checkpoint(tmp_path / "edited.ckpt")
    tampered["quantization"]["scales"][name] = torch.full_like(tampered["quantization"]["scales"][name], float("nan"))
    ckpt_io.save_checkpoint(tmp_path / "nan.ckpt", {k: v for k, v in tampered.items() if k not in ("format", "format_version")})
    with pytest.raises(CheckpointError, match="non-finite weights in scale:"):
        ckpt_io.load_checkpoint(tmp_path / "nan.ckpt")

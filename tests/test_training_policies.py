"""Time budget, weight averaging (EMA), learning-rate warm-up and gradient accumulation,
through the real command line on tiny IDX data."""

from __future__ import annotations

import json
import pathlib
import shutil

import pytest
import torch
from datafiles import working_copy

from pixelgen import cli
from pixelgen.recipe import dump_toml
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive

DATA = pathlib.Path(__file__).parent / "fixtures" / "legacy_v0_1" / "data"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    return working_copy(DATA, tmp_path / "data", monkeypatch, cwd=tmp_path)


def recipe(path: str = "r.toml", **train) -> str:
    pathlib.Path(path).write_text(dump_toml({
        "model": {"name": "pixelcnn", "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8}},
        "data": {"name": "fashion_mnist", "root": "data", "batch_size": 4, "validation_fraction": 0.25,
                 "download": False},
        "train": {"epochs": 2, "accelerator": "cpu", "seed": 0, "optimizer": {"lr": 0.01}, **train},
        "sample": {"n": 1},
        "output": {"dir": "run"},
    }))
    return path


def test_a_time_budget_stops_evaluates_samples_and_resumes(folder):
    # Budgets of 1 s and 2 s: the budget counts training time only, and each of the many
    # tiny epochs also validates and commits files, so the wall time is several times more.
    assert cli.main(["run", recipe(epochs=100000, max_time=1, early_stopping_patience=0)]) == 0
    state = ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")
    assert 1.0 <= state["train_time_s"] < 60 and state["epoch"] < 100000
    figures = json.loads((folder / "run" / "metrics.json").read_text())
    assert figures["n_images"] == 6 and figures["bits_per_dim"] < 8.5
    assert len(RunArchive.open(folder / "run" / "archive.zarr").sample_batches()) == 1
    # the same budget: finished; a larger one: training continues from where it stopped
    assert cli.main(["run", recipe(epochs=100000, max_time=1, early_stopping_patience=0), "--resume"]) == 0
    assert ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")["step"] == state["step"]
    assert cli.main(["run", recipe(epochs=100000, max_time="00:00:02", early_stopping_patience=0), "--resume"]) == 0
    resumed = ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")
    assert resumed["step"] > state["step"] and resumed["train_time_s"] >= 2.0


def test_ema_weights_are_kept_beside_the_raw_ones_and_used_by_default(folder, capsys):
    assert cli.main(["run", recipe(ema_decay=0.9)]) == 0
    best = folder / "run" / "best.ckpt"
    state = ckpt_io.load_checkpoint(best)
    raw, ema = state["model_state"], ckpt_io.ema_weights(state["ema_state"])
    assert raw.keys() == ema.keys() and not torch.equal(raw["input_conv.weight"], ema["input_conv.weight"])
    in_run = json.loads((folder / "run" / "metrics.json").read_text())
    assert in_run["weights"] == "ema"
    figures = {}
    for weights in ("auto", "ema", "raw"):
        capsys.readouterr()
        assert cli.main(["eval", str(best), "--json", "--weights", weights, "--accelerator", "cpu"]) == 0
        figures[weights] = json.loads(capsys.readouterr().out)["bits_per_dim"]
    assert figures["auto"] == figures["ema"] == pytest.approx(in_run["bits_per_dim"], rel=1e-9)
    assert figures["raw"] != figures["ema"]


def test_ema_resume_is_exact(folder):
    assert cli.main(["run", recipe(ema_decay=0.9)]) == 0
    whole = ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")
    shutil.rmtree(folder / "run")
    assert cli.main(["run", recipe(ema_decay=0.9, epochs=1)]) == 0
    assert cli.main(["run", recipe(ema_decay=0.9), "--resume"]) == 0
    pieces = ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")
    for key in whole["ema_state"]:
        assert torch.equal(whole["ema_state"][key], pieces["ema_state"][key]), key


def test_eval_weights_ema_without_an_average_is_one_line(folder, capsys):
    assert cli.main(["run", recipe(epochs=1)]) == 0
    assert cli.main(["eval", "run/best.ckpt", "--weights", "ema"]) == 2
    assert "ema_decay" in capsys.readouterr().err


def steps_of(folder: pathlib.Path, **train) -> dict:
    shutil.rmtree(folder / "run", ignore_errors=True)
    assert cli.main(["run", recipe(**train)]) == 0
    return ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")


def test_warmup_raises_the_rate_linearly(folder):
    # 18 training images, batch 4: 5 steps an epoch; warm-up over 8 steps ends in epoch 2
    state = steps_of(folder, epochs=1, warmup_steps=8)
    assert state["step"] == 5
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01 * 5 / 8)
    state = steps_of(folder, epochs=2, warmup_steps=8)
    assert state["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.01)


def test_accumulating_two_batches_of_two_equals_one_batch_of_four(folder):
    def one_step(**over) -> dict:
        pathlib.Path("acc.toml").write_text(pathlib.Path(recipe(epochs=1, max_steps=1, **over.pop("train", {}))).read_text()
                                            .replace("batch_size = 4", f"batch_size = {over['batch']}"))
        shutil.rmtree(folder / "run", ignore_errors=True)
        assert cli.main(["run", "acc.toml"]) == 0
        return ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")["model_state"]

    whole = one_step(batch=4, train={"gradient_clip_norm": "none"})
    halves = one_step(batch=2, train={"accumulate_grad_batches": 2, "gradient_clip_norm": "none"})
    for key in whole:
        torch.testing.assert_close(halves[key], whole[key], rtol=0, atol=1e-6, msg=key)

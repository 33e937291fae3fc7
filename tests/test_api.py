"""The Python front door: ``pixelgen.train`` with a recipe file, a dict and overrides, and
an ``nn.Module`` that no plugin registers."""

from __future__ import annotations

import json
import pathlib

import pytest
import torch
from datafiles import working_copy

import pixelgen
from pixelgen.blocks import MaskedConv2d, ResidualStack
from pixelgen.store import checkpoint as ckpt_io

DATA = pathlib.Path(__file__).parent / "fixtures" / "legacy_v0_1" / "data"

RECIPE = {
    "model": {"name": "pixelcnn", "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8}},
    "data": {"name": "fashion_mnist", "root": "data", "batch_size": 6, "download": False},
    "train": {"epochs": 1, "accelerator": "cpu"},
    "sample": {"n": 2, "tensorboard_n": 0},
    "output": {"dir": "run"},
}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    return working_copy(DATA, tmp_path / "data", monkeypatch, cwd=tmp_path)


def test_train_a_dict_with_overrides_as_pixelgen_run_would(folder):
    (result,) = pixelgen.train(RECIPE, train={"epochs": 2}, report=None, **{"train.optimizer.lr": 0.005})
    assert result == json.loads((folder / "run" / "metrics.json").read_text())
    state = ckpt_io.load_checkpoint(folder / "run" / "last.ckpt")
    assert state["epoch"] == 2 and state["recipe"]["train"]["optimizer"]["lr"] == 0.005
    assert (folder / "run" / "samples.png").is_file()


def test_train_an_unregistered_module(folder):
    module = ResidualStack(lambda h, colours: MaskedConv2d(2 * h, h, 3, "B", colours),
                           in_channels=1, hidden_channels=4, n_layers=1, head_channels=8)
    (result,) = pixelgen.train(RECIPE, model=module, report=None)
    assert result["model"] == "residualstack" and result["n_images"] == 6
    assert "residualstack" not in pixelgen.list_models()  # registered for the call only
    trained = ckpt_io.load_checkpoint(folder / "run" / "best.ckpt")["model_state"]
    assert all((trained[k] == v).all() for k, v in module.state_dict().items())


def test_a_module_without_in_channels_is_refused_in_one_line(folder):
    with pytest.raises(pixelgen.PixelgenError, match="in_channels"):
        pixelgen.train(RECIPE, model=torch.nn.Linear(2, 2), report=None)

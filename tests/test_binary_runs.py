"""Binary data end to end: a two-level model trained on binarized MNIST through the CLI,
its samples archived and drawn as 0/255 PNGs, and data a binary model cannot predict
refused when the run is planned."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
from datafiles import write_idx, write_tiny_static_mnist
from PIL import Image

from pixelgen import cli
from pixelgen.errors import RecipeError
from pixelgen.recipe import dump_toml, recipe_from_dict
from pixelgen.store.archive import RunArchive
from pixelgen.training.plan import plan_runs

TINY_MODEL = {"hidden_channels": 6, "n_layers": 1, "head_channels": 16, "n_levels": 2}


@pytest.fixture(autouse=True)
def _no_progress_bar(monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")


def recipe(data_root: pathlib.Path, out: pathlib.Path, dataset: str, **options) -> dict:
    return {
        "description": "binary",
        "model": {"name": "pixelcnn", "hyperparameters": dict(TINY_MODEL)},
        "data": {"name": dataset, "root": str(data_root), "batch_size": 4, "download": False,
                 "validation_fraction": 0.25, "options": options},
        "train": {"epochs": 1, "accelerator": "cpu", "seed": 0, "log_every_n_steps": 1},
        "sample": {"n": 2, "batch_size": 2},
        "output": {"dir": str(out)},
    }


def test_a_binary_model_trains_on_static_mnist_and_reports_nats(tmp_path, capsys):
    write_tiny_static_mnist(tmp_path / "data", n_train=8, n_val=4, n_test=3)
    out = tmp_path / "run"
    path = tmp_path / "bin.toml"
    path.write_text(dump_toml(recipe(tmp_path / "data", out, "binarized_mnist_static")))
    assert cli.main(["run", str(path)]) == 0

    figures = json.loads((out / "metrics.json").read_text())
    assert figures["n_images"] == 3  # the test file; validation on the valid file's 4
    assert figures["nll_nats"] == pytest.approx(figures["bits_per_dim"] * 784 * math.log(2))
    assert 0 < figures["bits_per_dim"] < 1.5  # random 0/1 images: about 1 bit per sub-pixel
    archive = RunArchive.open(out / "archive.zarr")
    assert archive.metrics()["step"].tolist() == [2]  # all 8 training images, batch 4
    (key, settings), = archive.sample_batches()
    assert settings["n_levels"] == 2
    assert set(np.unique(archive.read_samples(key)).tolist()) <= {0, 1}

    capsys.readouterr()
    assert cli.main(["sample", str(out / "best.ckpt"), "-n", "2", "--seed", "3", "--device", "cpu"]) == 0
    (png,) = out.glob("samples-*.png")
    assert set(np.unique(np.asarray(Image.open(png))).tolist()) == {0, 255}  # 0/1 drawn black and white


def test_data_outside_a_binary_models_levels_is_refused_when_planned(tmp_path):
    levels = np.array([0, 64, 191, 255], dtype=np.uint8)
    images = np.broadcast_to(levels.repeat(7)[None, :, None], (8, 28, 28))
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / "data" / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / "data" / f"{prefix}-labels-idx1-ubyte", np.arange(8, dtype=np.uint8))
    plain = recipe_from_dict(recipe(tmp_path / "data", tmp_path / "a", "fashion_mnist"))
    with pytest.raises(RecipeError) as caught:
        plan_runs(plain)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("model.hyperparameters.n_levels: 2 levels (values 0..1), but the train split "
                              "of 'fashion_mnist' holds the value 255")
    assert "data.options.binarize = true" in message
    (plan,) = plan_runs(recipe_from_dict(recipe(tmp_path / "data", tmp_path / "b", "fashion_mnist", binarize=True)))
    assert plan.model.n_levels == 2
    dynamic = recipe_from_dict(recipe(tmp_path / "data", tmp_path / "c", "binarized_mnist"))
    with pytest.raises(RecipeError, match="holds the value 255"):  # dynamic binarization gives 0/255
        plan_runs(dynamic)

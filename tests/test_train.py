"""Training, checkpoints, resume, evaluation and DDP, end to end through the real CLI.

The data sets are written in their real on-disk formats (CIFAR-10 python batches, IDX)
and read by the real loaders. Models are tiny (h=6, one layer, head 16), so each run takes
a second or two on a CPU.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import pickle
import subprocess
import sys

import attrs
import numpy as np
import pytest
import torch
from datafiles import (
    CIFAR10_BATCHES,
    _py2_pickle,
    md5_of,
    trust_tiny_cifar10,
    write_tiny_cifar10,
    write_tiny_mnist,
)

import pixelgen
from pixelgen import cli
from pixelgen.errors import CheckpointError
from pixelgen.recipe import dump_toml
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.training import evaluation
from pixelgen.training import trainer

FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")
TINY_MODEL = {"hidden_channels": 6, "n_layers": 1, "head_channels": 16}


@pytest.fixture(autouse=True)
def _no_progress_bar(monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")


def write_learnable_cifar10(root: pathlib.Path, n_train: int, n_test: int):
    """:func:`write_tiny_cifar10`, with every sub-pixel divided by 16 (values 0..15).

    Uniform random images sit at 8 bits/dim whatever a model learns; these have 4 bits/dim
    of entropy, so a model that learns shows it within a few steps. The batch files are
    rewritten in the same Python 2 pickle format and their md5s recomputed.
    """
    tiny = write_tiny_cifar10(root, n_train, n_test)
    folder = root / CIFAR10_BATCHES
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        entry = pickle.loads((folder / name).read_bytes(), encoding="bytes")
        entry[b"data"] = entry[b"data"] // 16  # (N, 3072) uint8
        (folder / name).write_bytes(_py2_pickle(entry))
    md5 = {**tiny.md5, **{p.name: md5_of(p) for p in folder.iterdir()}}
    return attrs.evolve(
        tiny, train_images=tiny.train_images // 16, test_images=tiny.test_images // 16, md5=md5
    )


@pytest.fixture
def cifar_root(tmp_path, monkeypatch):
    root = tmp_path / "data"
    tiny = write_learnable_cifar10(root, n_train=20, n_test=6)
    trust_tiny_cifar10(monkeypatch, tiny)
    return root


def write_recipe(path: pathlib.Path, data: dict) -> pathlib.Path:
    path.write_text(dump_toml(data))
    return path


def tiny_recipe(data_root, out, model="pixelcnn", *, dataset="cifar10", **train_over) -> dict:
    return {
        "model": {"name": model, "hyperparameters": dict(TINY_MODEL)},
        "data": {"name": dataset, "root": str(data_root), "batch_size": 4,
                 "validation_fraction": 0.2, "download": False},
        "train": {"epochs": 2, "accelerator": "cpu", "seed": 0, "log_every_n_steps": 1,
                  "optimizer": {"lr": 0.02}, **train_over},
        "output": {"dir": str(out)},
    }


def run_cli(*argv: str) -> None:
    assert cli.main(list(argv)) == 0


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("model", ["pixelcnn", "row_lstm", "diagonal_bilstm"])
def test_train_end_to_end(tmp_path, cifar_root, capsys, model):
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(cifar_root, out, model))
    run_cli("run", str(recipe))

    for name in ("last.ckpt", "best.ckpt", "recipe.toml", "metrics.json"):
        assert (out / name).is_file(), name
    assert list((out / "tensorboard").glob("version_0/events.out.tfevents.*"))
    csv_text = (out / "csv" / "version_0" / "metrics.csv").read_text()
    assert "val_bits_per_dim" in csv_text.splitlines()[0]
    assert len(csv_text.splitlines()) == 1 + 2  # header + one row per epoch

    archive = RunArchive.open(out / "archive.zarr")
    rows = archive.metrics()
    assert rows["epoch"].tolist() == [1, 2]
    assert rows["step"].tolist() == [4, 8]  # 16 training images, batch 4
    assert rows["train_bits_per_dim"][1] < rows["train_bits_per_dim"][0]  # it learns
    assert rows["val_bits_per_dim"][1] < rows["val_bits_per_dim"][0]
    for column in ("val_nll_nats", "lr", "epoch_time_s", "images_per_s", "peak_memory_mb"):
        assert np.all(np.isfinite(rows[column])) and np.all(rows[column] > 0), column

    figures = json.loads((out / "metrics.json").read_text())
    assert figures["split"] == "test" and figures["n_images"] == 6
    assert figures["bits_per_dim"] < 8.0
    assert archive.test_metrics()["bits_per_dim"] == figures["bits_per_dim"]
    assert sum(figures["bits_per_dim_per_channel"]) / 3 == pytest.approx(figures["bits_per_dim"])
    assert figures["nll_nats"] == pytest.approx(figures["bits_per_dim"] * 3 * 32 * 32 * math.log(2))

    # The checkpoint rebuilds its model on its own, and `pixelgen eval` repeats the figures.
    capsys.readouterr()
    run_cli("eval", str(out / "best.ckpt"), "--json")
    again = json.loads(capsys.readouterr().out)
    for key in ("n_images", "nll_nats", "bits_per_dim", "bits_per_dim_per_channel"):
        assert again[key] == pytest.approx(figures[key], rel=1e-12), key
    val = json.loads(_eval_json(capsys, out / "best.ckpt", "val"))
    best_epoch = int(np.argmin(rows["val_bits_per_dim"]))
    assert val["n_images"] == 4
    assert val["bits_per_dim"] == pytest.approx(rows["val_bits_per_dim"][best_epoch], rel=1e-12)


def test_class_conditional_training_uses_the_labels(tmp_path, cifar_root):
    """n_classes > 0: the data set's labels reach every layer's class bias during training."""
    out = tmp_path / "run"
    recipe = tiny_recipe(cifar_root, out, "row_lstm", epochs=1)
    recipe["model"]["hyperparameters"]["n_classes"] = 10
    run_cli("run", str(write_recipe(tmp_path / "cond.toml", recipe)))
    model = ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(out / "best.ckpt"))
    assert model.n_classes == 10
    biases = [model.input_bias, *model.layer_biases]
    # Class biases start at zero; only gradients through the labels move them.
    assert all(bias.embedding.weight.abs().sum() > 0 for bias in biases)
    x = torch.randint(0, 256, (2, 3, 4, 4))
    assert not torch.equal(model(x, torch.tensor([0, 0])), model(x, torch.tensor([1, 1])))


def _eval_json(capsys, path, split: str) -> str:
    capsys.readouterr()
    run_cli("eval", str(path), "--split", split, "--json")
    return capsys.readouterr().out


def test_evaluate_matches_metrics_definition():
    """evaluate() is the mean of pixelgen.bits_per_dim over images, split per colour."""
    torch.manual_seed(0)
    model = pixelgen.create_model("pixelcnn", in_channels=3, **TINY_MODEL)
    images = torch.randint(0, 256, (5, 3, 4, 3), dtype=torch.uint8)
    dataset = [(img, 0) for img in images]
    figures = evaluation.evaluate(model, dataset, batch_size=2)
    with torch.no_grad():
        logits = model(images)
    assert figures["n_images"] == 5
    assert figures["bits_per_dim"] == pytest.approx(pixelgen.bits_per_dim(logits, images).item(), rel=1e-6)
    assert figures["nll_nats"] == pytest.approx(pixelgen.nll_nats(logits, images).mean().item(), rel=1e-6)
    red = pixelgen.bits_per_dim(logits[:, :, :1], images[:, :1]).item()
    assert figures["bits_per_dim_per_channel"][0] == pytest.approx(red, rel=1e-6)


# --------------------------------------------------------------------------- resume


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_resume_repeats_an_uninterrupted_run_exactly(tmp_path, cifar_root, capsys):
    # Flips draw from the global torch RNG: exact only if the random state is restored.
    common = tiny_recipe(cifar_root, tmp_path / "unused")
    common["data"]["flips"] = True
    recipe = write_recipe(tmp_path / "tiny.toml", common)
    straight, pieces = tmp_path / "straight", tmp_path / "pieces"
    run_cli("run", str(recipe), "--out", str(straight))
    run_cli("run", str(recipe), "--out", str(pieces), "--set", "train.epochs=1")
    assert RunArchive.open(pieces / "archive.zarr").n_epochs == 1
    # A kill after the archive row of epoch 2 but before its checkpoint leaves an extra row.
    RunArchive.open(pieces / "archive.zarr", mode="r+").append_metrics({"epoch": 2, "train_bits_per_dim": 99.0})
    run_cli("run", str(recipe), "--out", str(pieces), "--resume", "--set", "train.epochs=2")

    for name in ("last.ckpt", "best.ckpt"):
        a, b = ckpt_io.load_checkpoint(straight / name), ckpt_io.load_checkpoint(pieces / name)
        assert (a["epoch"], a["step"]) == (b["epoch"], b["step"])
        _states_equal(a["model_state"], b["model_state"])
        for (ka, va), (kb, vb) in zip(a["optimizer"]["state"].items(), b["optimizer"]["state"].items()):
            _states_equal(va, vb)
        assert a["scheduler"] == b["scheduler"] and a["early_stopping"] == b["early_stopping"]
    rows_a = RunArchive.open(straight / "archive.zarr").metrics()
    rows_b = RunArchive.open(pieces / "archive.zarr").metrics()
    for column in ("epoch", "step", "train_bits_per_dim", "val_nll_nats", "val_bits_per_dim", "lr"):
        assert rows_a[column].tolist() == rows_b[column].tolist(), column
    assert json.loads((straight / "metrics.json").read_text())["bits_per_dim"] == \
        json.loads((pieces / "metrics.json").read_text())["bits_per_dim"]

    # Resuming a finished run reports it and touches nothing.
    before = {p: p.read_bytes() for p in pieces.glob("*.ckpt")}
    capsys.readouterr()
    run_cli("run", str(recipe), "--out", str(pieces), "--resume")
    assert "already finished" in capsys.readouterr().out
    assert before == {p: p.read_bytes() for p in pieces.glob("*.ckpt")}


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, cifar_root, monkeypatch, capsys):
    real = trainer.bits_per_dim
    calls = {"n": 0}

    def poisoned(logits, x):  # finite for epoch 1 (4 steps), NaN from then on
        calls["n"] += 1
        loss = real(logits, x)
        return loss if calls["n"] <= 4 else loss * float("nan")

    monkeypatch.setattr(trainer, "bits_per_dim", poisoned)
    out = tmp_path / "run"
    recipe = write_recipe(tmp_path / "tiny.toml", tiny_recipe(cifar_root, out))
    assert cli.main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nan" in err and "epoch 2" in err and "last.ckpt" in err
    assert ckpt_io.load_checkpoint(out / "last.ckpt")["epoch"] == 1
    assert RunArchive.open(out / "archive.zarr").n_epochs == 1
    assert not (out / "metrics.json").exists()

    # As the message suggests: resume with a lower learning rate, which takes effect.
    monkeypatch.setattr(trainer, "bits_per_dim", real)
    run_cli("run", str(recipe), "--resume", "--set", "train.optimizer.lr=0.01")
    resumed = ckpt_io.load_checkpoint(out / "last.ckpt")
    assert resumed["epoch"] == 2
    assert resumed["optimizer"]["param_groups"][0]["lr"] == 0.01
    assert "now 0.01 (was 0.02)" in capsys.readouterr().out


# --------------------------------------------------------------------------- checkpoints


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    ckpt_io.save_checkpoint(path, {"epoch": 1})
    before = path.read_bytes()

    def killed(obj, handle, *args, **kwargs):
        handle.write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt  # a kill in the middle of the write

    monkeypatch.setattr(torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        ckpt_io.save_checkpoint(path, {"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (str(_Payload.target),))


def test_loading_never_executes_code(tmp_path):
    _Payload.target = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"format": ckpt_io.FORMAT, "payload": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="evil.ckpt is not a pixelgen checkpoint.*mkdir, which a weights-only load refuses"):
        ckpt_io.load_checkpoint(evil)
    assert not _Payload.target.exists()


def test_rng_state_round_trip():
    import random

    state = ckpt_io.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.rand(5), np.random.rand(5), random.random()
    ckpt_io.set_rng_state(state)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]


# --------------------------------------------------------------------------- slow checks


def _subprocess_env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    env.update(PIXELGEN_PROGRESS="0", OMP_NUM_THREADS="1")
    return env


def _train_on_two_processes(tmp_path: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """One epoch with Fabric strategy "ddp" on two CPU processes (gloo), through the real
    command in a fresh process; returns the recipe and the run folder."""
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=24, n_test=10)
    out = tmp_path / "ddp"
    recipe = tiny_recipe(root, out, dataset="fashion_mnist", strategy="ddp", devices=2, epochs=1)
    recipe["data"]["validation_fraction"] = 0.25
    path = write_recipe(tmp_path / "ddp.toml", recipe)
    done = subprocess.run(
        [sys.executable, "-m", "pixelgen.cli", "run", str(path)],
        env=_subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return path, out


@pytest.mark.slow
def test_ddp_two_cpu_processes_agree_with_one(tmp_path, capsys):
    """Fabric strategy "ddp" on two CPU processes (gloo): the sharded evaluation in the
    run equals a one-process `pixelgen eval` of the same checkpoint."""
    _, out = _train_on_two_processes(tmp_path)
    state = ckpt_io.load_checkpoint(out / "last.ckpt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["step"] == 3  # 18 images over 2 processes, batch 4: ceil(9 / 4)

    in_run = json.loads((out / "metrics.json").read_text())
    alone = json.loads(_eval_json(capsys, out / "best.ckpt", "test"))
    assert in_run["n_images"] == alone["n_images"] == 10  # no padding, no duplicates
    # Per-image NLLs are float32 reductions over batches that differ between the sharded
    # and the single pass (4 + 1 images per shard vs 5 + 5): equal to float32 rounding.
    for key in ("nll_nats", "bits_per_dim"):
        assert in_run[key] == pytest.approx(alone[key], rel=1e-6), key
    val_alone = json.loads(_eval_json(capsys, out / "best.ckpt", "val"))
    val_in_run = RunArchive.open(out / "archive.zarr").metrics()["val_bits_per_dim"][0]
    assert val_alone["n_images"] == 6
    assert val_alone["bits_per_dim"] == pytest.approx(val_in_run, rel=1e-9)


@pytest.mark.slow
def test_a_two_process_checkpoint_resumes_in_one_process(tmp_path, capsys):
    """A run trained by two processes continues in one (docs/distributed.md): the weights
    and the epoch continue, the shards follow the new world size, and it says so."""
    path, out = _train_on_two_processes(tmp_path)
    two = ckpt_io.load_checkpoint(out / "last.ckpt")
    capsys.readouterr()
    run_cli("run", str(path), "--resume", "--set", "train.epochs=2", "--set", "train.devices=1",
            "--set", "train.strategy=auto")
    printed = capsys.readouterr().out
    assert ("note: checkpoint written by 2 processes, resuming on 1: the data order continues, "
            "the random streams do not") in printed
    assert "resume, epoch 1 of 2" in printed
    one = ckpt_io.load_checkpoint(out / "last.ckpt")
    assert one["world_size"] == 1 and len(one["rng"]) == 1 and one["epoch"] == 2
    assert one["step"] == two["step"] + 5  # 18 images in one process, batch 4: ceil(18 / 4)
    assert RunArchive.open(out / "archive.zarr").n_epochs == 2
    assert json.loads((out / "metrics.json").read_text())["epoch"] in (1, 2)


@pytest.mark.slow
def test_torchrun_starts_the_processes_as_docs_distributed_says(tmp_path):
    """``torchrun ... -m pixelgen run`` (docs/distributed.md): Fabric takes the ranks from
    torchrun's environment and joins its processes instead of starting its own."""
    root = tmp_path / "data"
    write_tiny_mnist(root, n_train=24, n_test=10)
    out = tmp_path / "torchrun"
    recipe = tiny_recipe(root, out, dataset="fashion_mnist", epochs=1)
    recipe["data"]["validation_fraction"] = 0.25
    path = write_recipe(tmp_path / "torchrun.toml", recipe)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "-m", "pixelgen", "run", str(path), "--set", "train.devices=2", "--set", "train.strategy=ddp"],
        env=_subprocess_env(), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("epoch 1/1") == 1  # one progress line: rank 0 speaks for both
    state = ckpt_io.load_checkpoint(out / "last.ckpt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert state["step"] == 3  # 18 images over 2 processes, batch 4: ceil(9 / 4)
    assert json.loads((out / "metrics.json").read_text())["n_images"] == 10


@pytest.mark.slow
def test_real_fashion_mnist_learns(tmp_path):
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"Fashion-MNIST not installed at {FASHION_MNIST} (Debian: dataset-fashion-mnist)")
    out = tmp_path / "fmnist"
    recipe = tiny_recipe(FASHION_MNIST, out, dataset="fashion_mnist", epochs=1)
    recipe["model"]["hyperparameters"] = {"hidden_channels": 16, "n_layers": 2, "head_channels": 32}
    recipe["data"].update(batch_size=32, limit_train=1280, limit_val=128, limit_test=256)
    recipe["train"]["optimizer"]["lr"] = 0.005
    run_cli("run", str(write_recipe(tmp_path / "fmnist.toml", recipe)))
    figures = json.loads((out / "metrics.json").read_text())
    assert figures["n_images"] == 256
    assert figures["bits_per_dim"] < 5.0  # uniform is 8; a learned PixelCNN gets well below


def test_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    model = pixelgen.create_model("pixelcnn", in_channels=1, hidden_channels=4, n_layers=1, head_channels=8)

    def broken_compile(module):
        def call(*args):
            raise RuntimeError("no C++ compiler found\nlong backend log")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(UserWarning, match=r"train.compile: torch.compile failed \(RuntimeError: no C\+\+ compiler found\); training without it"):
        assert trainer.compiled(model, (1, 4, 4), conditional=False) is model
    assert all(p.grad is None for p in model.parameters())

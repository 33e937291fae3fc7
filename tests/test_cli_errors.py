"""Bad input through the real command line: one line on stderr, status 2, no traceback,
and nothing already written changes.

The data are tiny Fashion-MNIST IDX files read by the real loader; one tiny run is trained
once per module and copied into each test that needs a finished run folder.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import torch
from datafiles import write_tiny_mnist

from pixelgen import cli
from pixelgen.recipe import dump_toml


@pytest.fixture(autouse=True)
def _no_progress_bar(monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")


def recipe_data(data_root, out, **model_hp) -> dict:
    return {
        "model": {"name": "pixelcnn",
                  "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8, **model_hp}},
        "data": {"name": "fashion_mnist", "root": str(data_root), "batch_size": 4,
                 "validation_fraction": 0.25, "download": False},
        "train": {"epochs": 1, "accelerator": "cpu"},
        "output": {"dir": str(out)},
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run: (data root, recipe file, run folder)."""
    base = tmp_path_factory.mktemp("trained")
    write_tiny_mnist(base / "data", n_train=8, n_test=4)
    recipe = base / "tiny.toml"
    recipe.write_text(dump_toml(recipe_data(base / "data", base / "run")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELGEN_PROGRESS", "0")
        assert cli.main(["run", str(recipe)]) == 0
    return base / "data", recipe, base / "run"


@pytest.fixture
def run_copy(tmp_path, trained):
    """A private copy of the trained run folder: (recipe file, run folder)."""
    _, recipe, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return recipe, copy


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fails_cleanly(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI; expect status 2 and one line on stderr containing every needle."""
    capsys.readouterr()
    try:
        status = cli.main(argv)
    except SystemExit as exc:  # argparse usage errors
        status = exc.code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert status == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert "error" in lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write(tmp_path, data: dict, name: str = "recipe.toml") -> str:
    path = tmp_path / name
    path.write_text(dump_toml(data))
    return str(path)


# --------------------------------------------------------------------------- recipes


def test_malformed_toml(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text("[model\nname = 'pixelcnn'\n")
    fails_cleanly(capsys, ["run", str(path)], "bad.toml", "invalid TOML")


def test_missing_recipe_file(tmp_path, capsys):
    fails_cleanly(capsys, ["run", str(tmp_path / "nowhere.toml")], "no such recipe file")


def test_unknown_model(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out")
    data["model"]["name"] = "pixelgan"
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "model.name", "pixelgan")
    assert not (tmp_path / "out").exists()


def test_unknown_hyperparameter(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out", n_heads=4)
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "model.hyperparameters.n_heads")


def test_wrong_type(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out")
    data["train"]["epochs"] = "three"
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "train.epochs", "'three'")


def test_negative_learning_rate(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out")
    data["train"]["optimizer"] = {"lr": -0.001}
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "train.optimizer.lr", "positive")


def test_unknown_set_key(tmp_path, trained, capsys):
    path = write(tmp_path, recipe_data(trained[0], tmp_path / "out"))
    fails_cleanly(capsys, ["run", path, "--set", "train.epoch=3"], "--set train.epoch", "did you mean 'epochs'")


def test_set_without_value(tmp_path, trained, capsys):
    path = write(tmp_path, recipe_data(trained[0], tmp_path / "out"))
    fails_cleanly(capsys, ["run", path, "--set", "train.epochs"], "KEY=VALUE")


def test_bad_precision(tmp_path, trained, capsys):
    path = write(tmp_path, recipe_data(trained[0], tmp_path / "out"))
    fails_cleanly(capsys, ["run", path, "--set", "train.precision=8-bit"], "train.precision")


def test_accelerator_fabric_refuses(tmp_path, trained, capsys):
    path = write(tmp_path, recipe_data(trained[0], tmp_path / "out"))
    fails_cleanly(capsys, ["run", path, "--set", "train.accelerator=abacus"], "Lightning Fabric refuses", "abacus")
    assert not (tmp_path / "out").exists()


def test_in_channels_do_not_match_the_data(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out", in_channels=3)
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "in_channels", "have 1")


def test_too_few_classes_for_a_conditional_model(tmp_path, trained, capsys):
    data = recipe_data(trained[0], tmp_path / "out", n_classes=2)
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "n_classes", "has 10")


# --------------------------------------------------------------------------- data


def test_data_root_empty_no_download(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    data = recipe_data(tmp_path / "empty", tmp_path / "out")
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "fashion_mnist", "download=False", "put ")
    assert not (tmp_path / "out").exists()


def test_data_root_empty_download_impossible(tmp_path, capsys, monkeypatch):
    import socket

    def no_network(*args, **kwargs):
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    (tmp_path / "empty").mkdir()
    data = recipe_data(tmp_path / "empty", tmp_path / "out")
    data["data"]["download"] = True
    fails_cleanly(capsys, ["run", write(tmp_path, data)], "download failed", "put ")


def test_eval_with_empty_data_root(tmp_path, run_copy, capsys):
    (tmp_path / "empty").mkdir()
    fails_cleanly(capsys, ["eval", str(run_copy[1] / "best.ckpt"), "--data-root", str(tmp_path / "empty")],
                  "fashion_mnist")


# --------------------------------------------------------------------------- run folders


def test_existing_run_without_resume_is_not_overwritten(run_copy, capsys):
    recipe, run = run_copy
    before = snapshot(run)
    fails_cleanly(capsys, ["run", str(recipe), "--out", str(run)], str(run), "--resume", "--out")
    assert snapshot(run) == before


def test_resume_from_truncated_checkpoint(run_copy, capsys):
    recipe, run = run_copy
    last = run / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])
    before = snapshot(run)
    fails_cleanly(capsys, ["run", str(recipe), "--out", str(run), "--resume"],
                  "last.ckpt is not a pixelgen checkpoint (truncated or foreign file)", "zip archive")
    assert snapshot(run) == before


def test_resume_with_another_model(run_copy, capsys):
    recipe, run = run_copy
    before = snapshot(run)
    fails_cleanly(capsys, ["run", str(recipe), "--out", str(run), "--resume", "--set",
                           "model.hyperparameters.hidden_channels=5", "--set", "train.epochs=2"],
                  "hidden_channels 4 -> 5", "--out")
    assert snapshot(run) == before


def test_archive_path_is_a_foreign_folder(tmp_path, trained, capsys):
    out = tmp_path / "out"
    (out / "archive.zarr").mkdir(parents=True)
    (out / "archive.zarr" / "notes.txt").write_text("mine")
    before = snapshot(out)
    fails_cleanly(capsys, ["run", str(trained[1]), "--out", str(out)], "archive.zarr")
    assert snapshot(out) == before


def test_out_is_a_file(tmp_path, trained, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    fails_cleanly(capsys, ["run", str(trained[1]), "--out", str(target)], "not a folder")
    assert target.read_text() == "keep me"


# --------------------------------------------------------------------------- checkpoints


def test_eval_missing_file(tmp_path, capsys):
    fails_cleanly(capsys, ["eval", str(tmp_path / "gone.ckpt")], "gone.ckpt", "no such checkpoint file")


def test_eval_a_directory(tmp_path, capsys):
    fails_cleanly(capsys, ["eval", str(tmp_path)], "is a directory")


def test_eval_random_bytes(tmp_path, capsys):
    path = tmp_path / "noise.ckpt"
    path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
    fails_cleanly(capsys, ["eval", str(path)], "noise.ckpt is not a pixelgen checkpoint", "pass another file")


def test_eval_truncated_checkpoint(run_copy, capsys):
    best = run_copy[1] / "best.ckpt"
    best.write_bytes(best.read_bytes()[: len(best.read_bytes()) // 2])
    fails_cleanly(capsys, ["eval", str(best)], "best.ckpt is not a pixelgen checkpoint (truncated or foreign file)")


def test_eval_foreign_torch_file(tmp_path, capsys):
    path = tmp_path / "resnet.pt"
    torch.save({"state_dict": {"fc.weight": torch.zeros(2, 2)}}, path)
    fails_cleanly(capsys, ["eval", str(path)], "resnet.pt is not a pixelgen checkpoint", "no pixelgen format marker")


def test_eval_bad_split(run_copy, capsys):
    fails_cleanly(capsys, ["eval", str(run_copy[1] / "best.ckpt"), "--split", "validation"],
                  "--split", "invalid choice")


def test_eval_negative_limit(run_copy, capsys):
    fails_cleanly(capsys, ["eval", str(run_copy[1] / "best.ckpt"), "--limit", "-3"], "--limit")


# --------------------------------------------------------------------------- a real process


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["run", "missing-recipe.toml"], "no such recipe file"),
        (["eval", "missing.ckpt"], "no such checkpoint file"),
    ],
)
def test_subprocess_prints_one_line_and_no_traceback(tmp_path, argv, needle):
    done = subprocess.run(
        [sys.executable, "-m", "pixelgen.cli", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and needle in done.stderr
    assert done.stdout == ""


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """`pixelgen plugins | head -1`: the closed pipe is no error to report (exit 141, as a
    shell reports SIGPIPE), not "Broken pipe; free space or choose another path"."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before the first line is written
    try:
        done = subprocess.run([sys.executable, "-m", "pixelgen", "plugins"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert done.stderr == ""

"""Nothing lost, ever: a real tiny run killed at points spread over its whole life, inside
file commits included, finishes with ``--resume`` exactly as an uninterrupted run does.

The kills are made by ``tests/killpoint.py`` (``os._exit`` just before or just after the
k-th ``os.replace``/``os.rename``, i.e. between any two files written: checkpoints, the
archive's metrics rows and sample batches, the resolved recipe, metrics.json), and by
SIGKILL, SIGTERM and SIGINT at moments during training.

The default run takes a sample: two kill points (one before a commit early in the run, one
after a commit late in it) and SIGTERM. The rest of the sweep (nine points, before and
after, and SIGKILL and SIGINT) is marked ``slow``: ``python3 -m pytest -m slow``, which CI
runs after the default suite.
"""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from datafiles import write_tiny_run_recipe

from pixelgen import cli
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive

KILLPOINT = pathlib.Path(__file__).parent / "killpoint.py"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tiny data, a 3-epoch recipe and the uninterrupted reference run."""
    base = tmp_path_factory.mktemp("kill")
    recipe = write_tiny_run_recipe(base, base / "ref", epochs=3, optimizer={"lr": 0.01})
    env = {**os.environ, "PIXELGEN_PROGRESS": "0", "OMP_NUM_THREADS": "1", "KILL_AT": "0"}
    done = subprocess.run([sys.executable, str(KILLPOINT), "run", str(recipe)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    commits = int(done.stderr.strip().splitlines()[-1].split()[-1])
    return base, recipe, commits, env


def outcome(folder: pathlib.Path) -> dict:
    """What a finished run leaves: weights, figures, the archive's rows and samples."""
    archive = RunArchive.open(folder / "archive.zarr")
    metrics = archive.metrics()
    batches = archive.sample_batches()
    return {
        "last": ckpt_io.load_checkpoint(folder / "last.ckpt")["model_state"],
        "best": ckpt_io.load_checkpoint(folder / "best.ckpt")["model_state"],
        "figures": {k: v for k, v in __import__("json").loads((folder / "metrics.json").read_text()).items()},
        "epochs": metrics["epoch"].tolist(),
        "train": metrics["train_bits_per_dim"].tolist(),
        "val": metrics["val_bits_per_dim"].tolist(),
        "samples": [archive.read_samples(key) for key, _ in batches],
        "test": archive.test_metrics(),
        "temporary": sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp")),
    }


def assert_same(got: dict, want: dict) -> None:
    for key in ("last", "best"):
        assert got[key].keys() == want[key].keys()
        assert all(torch.equal(got[key][k], want[key][k]) for k in want[key]), key
    for key in ("figures", "epochs", "train", "val", "test", "temporary"):
        assert got[key] == want[key], key
    assert len(got["samples"]) == len(want["samples"]) == 1
    assert np.array_equal(got["samples"][0], want["samples"][0])


def resume_until_done(recipe: pathlib.Path, out: pathlib.Path, monkeypatch) -> None:
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    assert cli.main(["run", str(recipe), "--out", str(out), "--resume"]) == 0


FRACTIONS = [0.0, 0.1, 0.2, 0.35, 0.5, 0.65, 0.8, 0.9, 1.0]
SAMPLED = {(0.35, "before"), (0.65, "after")}  # the default run's kill points


@pytest.mark.parametrize("fraction, when", [
    pytest.param(fraction, when, marks=() if (fraction, when) in SAMPLED else pytest.mark.slow)
    for fraction in FRACTIONS for when in ("before", "after")
])
def test_a_kill_at_any_commit_then_resume_finishes_identically(setup, tmp_path, monkeypatch, when, fraction):
    base, recipe, commits, env = setup
    k = max(1, round(fraction * commits))
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, str(KILLPOINT), "run", str(recipe), "--out", str(out)],
                            env={**env, "KILL_AT": str(k), "KILL_WHEN": when}, capture_output=True, text=True, timeout=300)
    assert killed.returncode == 137 or (k == commits and when == "after"), killed.stderr
    resume_until_done(recipe, out, monkeypatch)
    assert_same(outcome(out), outcome(base / "ref"))


@pytest.mark.parametrize("signum, code", [
    pytest.param(signal.SIGKILL, -9, marks=pytest.mark.slow),
    (signal.SIGTERM, 143),
    pytest.param(signal.SIGINT, 130, marks=pytest.mark.slow),
])
def test_a_signal_during_training_then_resume_finishes_identically(setup, tmp_path, monkeypatch, signum, code):
    base, recipe, commits, env = setup
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "pixelgen", "run", str(recipe), "--out", str(out)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "last.ckpt").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)  # into epoch 2: one checkpoint written, the next being trained
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    if process.returncode != 0:  # not already finished when the signal came
        assert process.returncode == code, err
        if signum != signal.SIGKILL:
            lines = [line for line in err.strip().splitlines() if line]
            assert len(lines) == 1 and signal.Signals(signum).name in lines[0] and "Traceback" not in err, err
    resume_until_done(recipe, out, monkeypatch)
    assert_same(outcome(out), outcome(base / "ref"))


def test_resume_in_an_empty_folder_is_a_fresh_run(setup, tmp_path, monkeypatch):
    base, recipe, commits, env = setup
    resume_until_done(recipe, tmp_path / "run", monkeypatch)
    assert_same(outcome(tmp_path / "run"), outcome(base / "ref"))

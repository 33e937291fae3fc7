"""Run folders and checkpoints written by pixelgen 0.1.0 keep working.

``tests/fixtures/legacy_v0_1`` was written by main before the redesign (commit cb5baef):
``pixelgen run legacy.toml`` on tiny IDX data, one epoch of a PixelCNN and a Row LSTM. Its
checkpoints must still evaluate to the figure they recorded, sample, compare and resume.
"""

from __future__ import annotations

import json
import pathlib

import pytest
from datafiles import working_copy

from pixelgen import cli
from pixelgen.registry import get_model_spec
from pixelgen.store.archive import RunArchive
from pixelgen.study.records import read_run, settings_of

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "legacy_v0_1"


@pytest.fixture
def legacy(tmp_path, monkeypatch):
    """A writable copy of the fixture, as the working directory (its recipe's paths are relative)."""
    return working_copy(FIXTURE, tmp_path / "legacy", monkeypatch)


@pytest.mark.parametrize("run", ["pixelcnn", "row_lstm"])
def test_legacy_checkpoint_evaluates_to_its_recorded_figure(legacy, run, capsys):
    recorded = json.loads((legacy / "runs" / run / "metrics.json").read_text())
    assert cli.main(["eval", f"runs/{run}/best.ckpt", "--json", "--accelerator", "cpu"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["n_images"] == recorded["n_images"] == 6
    assert figures["bits_per_dim"] == pytest.approx(recorded["bits_per_dim"], rel=1e-6)


def test_legacy_checkpoint_samples_into_its_archive(legacy):
    before = len(RunArchive.open(legacy / "runs/pixelcnn/archive.zarr").sample_batches())
    assert cli.main(["sample", "runs/pixelcnn/best.ckpt", "-n", "2", "--seed", "1"]) == 0
    batches = RunArchive.open(legacy / "runs/pixelcnn/archive.zarr").sample_batches()
    assert len(batches) == before + 1
    images = RunArchive.open(legacy / "runs/pixelcnn/archive.zarr").read_samples(batches[-1][0])
    assert images.shape == (2, 1, 28, 28)


def test_legacy_runs_compare(legacy, capsys):
    assert cli.main(["compare", "runs/pixelcnn", "runs/row_lstm", "--out", "report", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert [row["run"] for row in table["runs"]] == ["pixelcnn", "row_lstm"]
    for row in table["runs"]:
        recorded = json.loads((legacy / "runs" / row["run"] / "metrics.json").read_text())
        assert row["test_bits_per_dim"] == pytest.approx(recorded["bits_per_dim"], rel=1e-12)
    assert (legacy / "report" / "report.md").is_file()


@pytest.mark.parametrize("run", ["pixelcnn", "row_lstm"])
def test_legacy_settings_carry_every_default_of_today(legacy, run):
    """A comparison of a run saved before a hyperparameter existed (``likelihood``) with a
    new one must not list it as a setting that differs: the old run is read, as it loads,
    with today's default for what it lacks."""
    record = read_run(legacy / "runs" / run)
    assert "likelihood" not in record.model_config["hyperparameters"], "the fixture predates likelihoods"
    settings = settings_of(record)
    spec = get_model_spec(record.model_config["name"])
    for key, default in spec.defaults().items():
        recorded = record.model_config["hyperparameters"].get(key, default)
        assert settings[f"model.hyperparameters.{key}"] == recorded
    assert settings["model.hyperparameters.likelihood"] == "categorical"


def test_legacy_run_resumes_for_a_second_epoch(legacy):
    assert cli.main(["run", "legacy.toml", "--resume", "--set", "train.epochs=2"]) == 0
    for run in ("pixelcnn", "row_lstm"):
        archive = RunArchive.open(legacy / "runs" / run / "archive.zarr")
        assert list(archive.metrics()["epoch"]) == [1, 2]
        assert json.loads((legacy / "runs" / run / "metrics.json").read_text())["epoch"] in (1, 2)


def test_a_legacy_archive_has_no_scores_until_scored_and_then_compares_with_them(legacy, capsys):
    archive = legacy / "runs/pixelcnn/archive.zarr"
    assert RunArchive.open(archive).scores() == {}  # written before scoring existed: no score group
    assert cli.main(["score", "runs/pixelcnn", "--features", "classifier", "--metrics", "fid,is",
                     "--n", "10", "--device", "cpu"]) == 0
    assert set(RunArchive.open(archive).scores()["classifier"]) >= {"fid", "inception_score", "n_samples", "label"}
    capsys.readouterr()
    assert cli.main(["compare", "runs/pixelcnn", "runs/row_lstm", "--out", "report", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["runs"]
    assert "fid" in rows[0]["scores"]["classifier"] and "scores" not in rows[1]


# ``tests/fixtures/diagonal_v0_2``: a Diagonal BiLSTM run written by main at c59d046, before
# the layer's initial state was learned (its checkpoints have no initial_hidden/initial_cell).
DIAGONAL_FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "diagonal_v0_2"


@pytest.fixture
def old_diagonal(tmp_path, monkeypatch):
    return working_copy(DIAGONAL_FIXTURE, tmp_path / "diagonal", monkeypatch)


def test_a_diagonal_bilstm_saved_before_its_initial_state_was_learned_evaluates_as_before(old_diagonal, capsys):
    recorded = json.loads((old_diagonal / "runs" / "metrics.json").read_text())
    assert cli.main(["eval", "runs/best.ckpt", "--json", "--accelerator", "cpu"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["bits_per_dim"] == pytest.approx(recorded["bits_per_dim"], rel=1e-9)
    assert cli.main(["sample", "runs/best.ckpt", "-n", "2", "--png", "samples.png", "--no-archive"]) == 0


def test_a_diagonal_bilstm_run_saved_before_its_initial_state_was_learned_resumes(old_diagonal, capsys):
    assert cli.main(["run", "legacy.toml", "--resume", "--set", "train.epochs=2"]) == 0
    assert "the optimizer's moments start afresh" in capsys.readouterr().out
    assert list(RunArchive.open(old_diagonal / "runs" / "archive.zarr").metrics()["epoch"]) == [1, 2]

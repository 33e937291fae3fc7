"""`pixelgen compare` and `pixelgen analyse` on runs really trained by `pixelgen run`.

Two tiny runs (PixelCNN, Row LSTM with skip connections; h=6, one layer, 8x8 grey images
of an image folder written by the fixtures) are trained once for the module; the tests
then check that every table row and figure is in the report and that its numbers are
the archives' numbers.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import io
import json
import math

import attrs
import numpy as np
import pytest
from datafiles import write_tiny_image_folder

from pixelgen import cli
from pixelgen.errors import DataError
from pixelgen.recipe import PaperSection, dump_toml
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.study import measure, options, render, report

TINY_MODEL = {"hidden_channels": 6, "n_layers": 1, "head_channels": 16}
MEASURE = ["--scaling-sizes", "4", "8", "--scaling-depths", "1", "2", "--field-size", "7", "--timing-images", "1"]
PNG = b"\x89PNG\r\n\x1a\n"


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Train the two-run recipe with `pixelgen run`; its compare call is recorded, not run."""
    root = tmp_path_factory.mktemp("report")
    write_tiny_image_folder(root / "data", per_class=8, size=(8, 8))
    recipe = {
        "data": {"name": "image_folder", "root": str(root / "data"), "batch_size": 4, "download": False,
                 "validation_fraction": 0.25, "image_size": 8, "options": {"channels": 1}},
        "train": {"epochs": 2, "accelerator": "cpu", "seed": 0, "optimizer": {"lr": 0.02}},
        "sample": {"n": 4},
        "model": {"hyperparameters": dict(TINY_MODEL)},
        "output": {"dir": str(root / "runs")},
        "runs": [
            {"name": "cnn", "model": {"name": "pixelcnn"}},
            {"name": "rows", "model": {"name": "row_lstm", "hyperparameters": {"skip": True}}},
        ],
    }
    path = root / "tiny.toml"
    path.write_text(dump_toml(recipe))
    calls = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELGEN_PROGRESS", "0")
        mp.setattr(report, "compare", lambda dirs, out, options, say: calls.append(dirs) or {"out": "X"})
        printed = run_cli("run", str(path))
    dirs = [root / "runs" / "cnn", root / "runs" / "rows"]
    return {"root": root, "dirs": dirs, "compare_calls": calls, "run_output": printed}


@pytest.fixture(scope="module")
def compared(runs):
    out = runs["root"] / "compare"
    printed = run_cli("compare", *map(str, runs["dirs"]), "--out", str(out), "--json", *MEASURE)
    comparison = json.loads((out / "comparison.json").read_text())
    return {"out": out, "printed": json.loads(printed), "comparison": comparison,
            "markdown": (out / "report.md").read_text(), "html": (out / "report.html").read_text()}


def test_pixelgen_run_compares_the_runs_of_a_multi_run_recipe(runs):
    assert runs["compare_calls"] == [runs["dirs"]]
    assert "comparison: X/report.md" in runs["run_output"]


def test_every_table_row_and_figure_is_in_the_report(compared):
    markdown, page = compared["markdown"], compared["html"]
    for key, label, _ in report.TABLE_ROWS:
        label = label.format(split="test", size="8x8")
        if key == "paper_bits_per_dim":
            assert label not in markdown, "the paper's numbers are for CIFAR-10 only"
        else:
            assert f"| {label} |" in markdown, label
    figures = compared["comparison"]["figures"]
    assert set(figures) == {"learning_curves", "receptive_fields", "gradient_flow", "scaling", "samples", "histograms"}
    for name in figures.values():
        assert (compared["out"] / name).read_bytes()[:8] == PNG
        assert f"]({name})" in markdown and f"src='{name}'" in page
    for heading in ("Results", "Learning curves", "Samples", "Sample statistics", "Receptive fields",
                    "Gradient flow", "Scaling", "Settings that differ between runs"):
        assert f"## {heading}" in markdown and f"<h2>{heading}</h2>" in page


def test_table_numbers_are_the_archives_numbers(runs, compared):
    rows = compared["comparison"]["runs"]
    assert compared["printed"]["runs"] == rows, "--json prints the same numbers"
    assert [r["run"] for r in rows] == ["cnn", "rows"]
    for row, folder in zip(rows, runs["dirs"]):
        archive = RunArchive.open(folder / "archive.zarr")
        metrics, test = archive.metrics(), archive.test_metrics()
        assert row["test_bits_per_dim"] == test["bits_per_dim"]
        assert row["test_nll_nats"] == test["nll_nats"]
        assert row["test_bits_per_dim_per_channel"] == test["bits_per_dim_per_channel"]
        best = int(np.nanargmin(metrics["val_bits_per_dim"]))
        assert row["best_val_bits_per_dim"] == metrics["val_bits_per_dim"][best]
        assert row["best_val_epoch"] == metrics["epoch"][best]
        assert row["final_train_bits_per_dim"] == metrics["train_bits_per_dim"][-1]
        assert row["epochs"] == 2
        assert row["epoch_time_s"] == pytest.approx(metrics["epoch_time_s"].mean(), rel=1e-12)
        assert row["train_time_s"] == pytest.approx(metrics["epoch_time_s"].sum(), rel=1e-12)
        assert row["images_per_s"] == pytest.approx(metrics["images_per_s"].mean(), rel=1e-12)
        assert row["peak_memory_mb"] == metrics["peak_memory_mb"].max()
        model = ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(folder / "best.ckpt"))
        assert row["parameters"] == sum(p.numel() for p in model.parameters())
        assert row["paper_bits_per_dim"] is None
        assert row["reference_extrapolated"] and row["reference_rows_timed"] == 1
        assert row["fast_sampling_s_per_image"] > 0 and row["reference_sampling_s_per_image"] > 0
    assert [r["sequential_steps"] for r in rows] == [1, 8]  # PixelCNN; Row LSTM: one step per row
    table = compared["markdown"]
    assert f"| test bits/dim | {rows[0]['test_bits_per_dim']:.4f} | {rows[1]['test_bits_per_dim']:.4f} |" in table
    assert f"| parameters | {rows[0]['parameters']:,} | {rows[1]['parameters']:,} |" in table
    assert "| sequential steps per layer at 8x8 | 1 | 8 |" in table


def test_the_report_shows_the_settings_that_differ(compared):
    differing = compared["comparison"]["differing_settings"]
    assert differing["model.name"] == ["pixelcnn", "row_lstm"]
    assert differing["model.hyperparameters.skip"] == [False, True]
    assert "model.hyperparameters.hidden_channels" not in differing, "shared settings are left out"
    assert "| model.hyperparameters.skip | false | true |" in compared["markdown"]


def test_measurements_are_recorded_per_run(compared):
    c = compared["comparison"]
    for name in ("cnn", "rows"):
        assert [layer for layer, _ in c["gradient_flow"][name]["end"]] == ["input_conv", "layers.0", "head"]
        assert all(norm > 0 and math.isfinite(norm) for _, norm in c["gradient_flow"][name]["start"])
        assert [(r["size"], r["depth"]) for r in c["scaling"][name]["rows"]] == [(4, 1), (8, 1), (4, 2)]
        stats = c["sample_statistics"][name]
        assert stats["n_samples"] == 4 and len(stats["nearest_train_distance"]) == 4
        assert set(stats["artifacts"]) == {"constant_rows", "repeated_rows", "saturated", "duplicate"}


def test_the_paper_numbers_appear_for_cifar10(compared):
    c = dict(compared["comparison"])
    c["dataset"] = "cifar10"
    c["runs"] = [{**r, "paper_bits_per_dim": measure.paper_figure(r["model"], "cifar10")} for r in c["runs"]]
    markdown = render.to_markdown(report.comparison_document(c))
    assert "| published bits/dim [4] | 3.14 | 3.07 |" in markdown
    assert "[4] Published figures" in markdown and "rows: the model's published test figure" in markdown


def test_a_recipes_paper_table_puts_its_figure_beside_the_run(runs, compared):
    record = measure.read_run(runs["dirs"][1])  # the Row LSTM, on an image folder: no published figure
    assert measure.run_paper_figure(record) == (None, "")
    on_cifar = attrs.evolve(record, run=attrs.evolve(record.run, data=attrs.evolve(record.run.data, name="cifar10")))
    assert measure.run_paper_figure(on_cifar) == (3.07, "the model's published test figure")  # its ModelSpec's
    cell = PaperSection(bits_per_dim=3.11, source="Pixel RNN, table 3 (CIFAR-10 validation)")
    assert measure.run_paper_figure(attrs.evolve(on_cifar, run=attrs.evolve(on_cifar.run, paper=cell))) == (
        3.11, "Pixel RNN, table 3 (CIFAR-10 validation)")
    c = dict(compared["comparison"])
    c["runs"] = [c["runs"][0], {**c["runs"][1], "paper_bits_per_dim": 3.11, "paper_source": cell.source}]
    markdown = render.to_markdown(report.comparison_document(c))
    assert "| published bits/dim [4] | - | 3.11 |" in markdown
    assert "[4] Published figures, beside the measured ones (a recipe's [paper] table gives them per run): " \
           "rows: Pixel RNN, table 3 (CIFAR-10 validation)." in markdown


def test_analyse_one_checkpoint(runs):
    out = runs["root"] / "analysis"
    printed = run_cli("analyse", str(runs["dirs"][1] / "best.ckpt"), "--out", str(out), *MEASURE)
    assert f"analysis: {out}/analysis.md" in printed
    summary = json.loads((out / "analysis.json").read_text())
    assert summary["model"] == "row_lstm" and summary["sequential_steps"] == 8
    markdown = (out / "analysis.md").read_text()
    for name in summary["figures"].values():
        assert (out / name).read_bytes()[:8] == PNG and f"]({name})" in markdown
    assert set(summary["figures"]) == {"receptive_field", "gradient_flow", "scaling"}
    assert "| layers.0 |" in markdown


def test_compare_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert cli.main(["compare", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert "no best.ckpt or last.ckpt" in error and error.count("\n") == 1


def test_training_figures_skip_epochs_without_validation():
    metrics = {
        "epoch": np.array([1, 2, 3, 4]),
        "train_bits_per_dim": np.array([5.0, 4.0, 3.5, 3.25]),
        "val_bits_per_dim": np.array([np.nan, 3.9, np.nan, 3.95]),  # validated every 2 epochs
        "epoch_time_s": np.array([1.0, 2.0, 3.0, 4.0]),
        "images_per_s": np.array([10.0, 20.0, 30.0, 40.0]),
        "peak_memory_mb": np.array([5.0, 7.0, 6.0, 6.0]),
    }
    figures = measure.training_figures(metrics, {"bits_per_dim": 3.8, "nll_nats": 100.0})
    assert figures["best_val_bits_per_dim"] == 3.9 and figures["best_val_epoch"] == 2
    assert figures["final_train_bits_per_dim"] == 3.25 and figures["epochs"] == 4
    assert (figures["epoch_time_s"], figures["train_time_s"]) == (2.5, 10.0)
    assert (figures["images_per_s"], figures["peak_memory_mb"]) == (25.0, 7.0)
    assert figures["test_bits_per_dim"] == 3.8 and figures["test_bits_per_dim_per_channel"] is None
    without_val = measure.training_figures({k: v for k, v in metrics.items() if k != "val_bits_per_dim"}, {})
    assert without_val["best_val_bits_per_dim"] is None and without_val["best_val_epoch"] is None


# ------------------------------------------------------------------ one measurement, typed records

OPTIONS = options.CompareOptions(field_size=7, scaling_sizes=(4, 8), scaling_depths=(1, 2), timing_images=1)
RANDOM_IMAGES_NOTE = "The run's data was not found: gradient flow on random images."


def no_data(run):
    raise DataError("no data here")


def test_the_report_is_rendered_from_comparison_json_alone(compared):
    blocks = report.comparison_document(compared["comparison"])
    assert render.to_markdown(blocks) == compared["markdown"]
    assert render.to_html(blocks, "pixelgen comparison: cnn, rows") == compared["html"]


def test_a_run_row_keeps_its_keys_in_order(compared):
    assert list(compared["comparison"]["runs"][0]) == [
        "run", "run_dir", "checkpoint", "model", "parameters", "test_nll_nats", "test_bits_per_dim",
        "test_bits_per_dim_per_channel", "best_val_bits_per_dim", "best_val_epoch", "final_train_bits_per_dim",
        "epochs", "epoch_time_s", "train_time_s", "images_per_s", "peak_memory_mb", "paper_bits_per_dim",
        "paper_source",
        "image_shape", "sequential_steps", "fast_sampling_s_per_image", "reference_sampling_s_per_image",
        "reference_extrapolated", "reference_rows_timed",
    ]


def test_analyse_measures_as_compare_does(runs, compared, tmp_path):
    summary = report.analyse(runs["dirs"][1] / "best.ckpt", tmp_path, OPTIONS)
    row = compared["comparison"]["runs"][1]
    assert (summary["parameters"], summary["sequential_steps"]) == (row["parameters"], row["sequential_steps"])
    assert summary["image_shape"] == row["image_shape"] == [1, 8, 8]
    flow = compared["comparison"]["gradient_flow"]["rows"]
    assert summary["gradient_flow"] == {"fresh (start)": flow["start"], "best.ckpt (end)": flow["end"]}
    scaling = compared["comparison"]["scaling"]["rows"]["rows"]
    assert [(r["size"], r["depth"], r["saved_bytes"]) for r in summary["scaling"]["rows"]] == [
        (r["size"], r["depth"], r["saved_bytes"]) for r in scaling]
    assert summary["notes"] == [] and list(summary) == [
        "out", "checkpoint", "model", "hyperparameters", "epoch", "parameters", "sequential_steps", "image_shape",
        "receptive_field_seen", "figures", "gradient_flow", "scaling", "memory_note", "notes"]


def test_analyse_without_data_measures_gradient_flow_on_random_images(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "load_data", no_data)
    summary = report.analyse(runs["dirs"][0] / "best.ckpt", tmp_path, OPTIONS)
    assert summary["notes"] == [RANDOM_IMAGES_NOTE]
    assert summary["image_shape"] == [1, 7, 7], "no data: the receptive-field canvas"
    assert [layer for layer, _ in summary["gradient_flow"]["best.ckpt (end)"]] == ["input_conv", "layers.0", "head"]
    assert RANDOM_IMAGES_NOTE in (tmp_path / "analysis.md").read_text()


def test_compare_without_data_skips_the_data_measurements(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(measure, "load_data", no_data)
    c = report.compare(runs["dirs"], tmp_path, OPTIONS)
    assert c["gradient_flow"] == {} and c["sample_statistics"] == {}, "no random images in a comparison"
    assert set(c["figures"]) == {"learning_curves", "receptive_fields", "scaling", "samples"}
    assert [r["image_shape"] for r in c["runs"]] == [[1, 8, 8]] * 2, "the size of the archived samples"
    assert "## Gradient flow" not in (tmp_path / "report.md").read_text()


def test_a_checkpoint_read_on_its_own_has_no_archive(runs):
    alone = measure.read_checkpoint(runs["dirs"][0] / "best.ckpt")
    assert alone.archive is None and alone.archive_path is None
    assert alone.checkpoint == runs["dirs"][0] / "best.ckpt" and alone.name == "cnn"
    record = measure.read_run(runs["dirs"][0])
    assert record.archive_path == runs["dirs"][0] / "archive.zarr" and record.checkpoint == alone.checkpoint
    assert record.archive.metrics.keys() == RunArchive.open(record.archive_path).metrics().keys()


def test_a_row_without_archive_or_timing_has_every_key_unset():
    row = measure.TableRow(run="r", run_dir="d", checkpoint="c", model="m", parameters=1, training=None,
                           paper_bits_per_dim=None, paper_source="", image_shape=[1, 2, 2], sequential_steps=1,
                           sampling=None)
    json_row = row.to_json()
    assert [k for k, _, _ in report.TABLE_ROWS if k not in json_row] == []
    assert json_row["epochs"] is None and json_row["reference_rows_timed"] is None


@pytest.mark.parametrize("module", [measure, render, report])
def test_no_function_of_the_report_modules_is_long(module):
    tree = ast.parse(inspect.getsource(module))
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, f"{module.__name__}: split these into steps: {long}"

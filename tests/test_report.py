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
import torch
from datafiles import write_tiny_image_folder

import pixelgen
from pixelgen import cli, sampling
from pixelgen.cli import report as cli_report
from pixelgen.errors import DataError, RecipeError
from pixelgen.recipe import PaperSection, dump_toml, load_recipe
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.study import measure, options, records, render, report

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
        label = label.format(split="test", size="8x8", reference=", extrapolated from 8 sub-pixels")
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
        assert row["reference_subpixels_timed"] == 8, "8 sub-pixels of a grey image: its last 8 pixels"
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
    c["runs"] = [{**r, "paper_bits_per_dim": records.paper_figure(r["model"], "cifar10")} for r in c["runs"]]
    markdown = render.to_markdown(report.comparison_document(c))
    assert "| published bits/dim [4] | 3.14 | 3.07 |" in markdown
    assert "[4] Published figures" in markdown and "rows: the model's published test figure" in markdown


def test_a_recipes_paper_table_puts_its_figure_beside_the_run(runs, compared):
    record = records.read_run(runs["dirs"][1])  # the Row LSTM, on an image folder: no published figure
    assert records.run_paper_figure(record) == (None, "")
    on_cifar = attrs.evolve(record, run=attrs.evolve(record.run, data=attrs.evolve(record.run.data, name="cifar10")))
    assert records.run_paper_figure(on_cifar) == (3.07, "the model's published test figure")  # its ModelSpec's
    cell = PaperSection(bits_per_dim=3.11, source="Pixel RNN, table 3 (CIFAR-10 validation)")
    assert records.run_paper_figure(attrs.evolve(on_cifar, run=attrs.evolve(on_cifar.run, paper=cell))) == (
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

OPTIONS = options.CompareOptions(scaling=True, field_size=7, scaling_sizes=(4, 8), scaling_depths=(1, 2), timing_images=1)
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
        "reference_subpixels_timed",
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
    monkeypatch.setattr(records, "load_data", no_data)
    summary = report.analyse(runs["dirs"][0] / "best.ckpt", tmp_path, OPTIONS)
    assert summary["notes"] == [RANDOM_IMAGES_NOTE]
    assert summary["image_shape"] == [1, 7, 7], "no data: the receptive-field canvas"
    assert [layer for layer, _ in summary["gradient_flow"]["best.ckpt (end)"]] == ["input_conv", "layers.0", "head"]
    assert RANDOM_IMAGES_NOTE in (tmp_path / "analysis.md").read_text()


def test_compare_without_data_skips_the_data_measurements(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(records, "load_data", no_data)
    c = report.compare(runs["dirs"], tmp_path, OPTIONS)
    assert c["gradient_flow"] == {} and c["sample_statistics"] == {}, "no random images in a comparison"
    assert set(c["figures"]) == {"learning_curves", "receptive_fields", "scaling", "samples"}
    assert [r["image_shape"] for r in c["runs"]] == [[1, 8, 8]] * 2, "the size of the archived samples"
    assert "## Gradient flow" not in (tmp_path / "report.md").read_text()


def test_a_checkpoint_read_on_its_own_has_no_archive(runs):
    alone = records.read_checkpoint(runs["dirs"][0] / "best.ckpt")
    assert alone.archive is None and alone.archive_path is None
    assert alone.checkpoint == runs["dirs"][0] / "best.ckpt" and alone.name == "cnn"
    record = records.read_run(runs["dirs"][0])
    assert record.archive_path == runs["dirs"][0] / "archive.zarr" and record.checkpoint == alone.checkpoint
    assert record.archive.metrics.keys() == RunArchive.open(record.archive_path).metrics().keys()


def test_a_row_without_archive_or_timing_has_every_key_unset():
    row = measure.TableRow(run="r", run_dir="d", checkpoint="c", model="m", parameters=1, training=None,
                           paper_bits_per_dim=None, paper_source="", image_shape=[1, 2, 2], sequential_steps=1,
                           sampling=None)
    json_row = row.to_json()
    assert [k for k, _, _ in report.TABLE_ROWS if k not in json_row] == []
    assert json_row["epochs"] is None and json_row["reference_subpixels_timed"] is None


@pytest.mark.parametrize("module", [measure, render, report])
def test_no_function_of_the_report_modules_is_long(module):
    tree = ast.parse(inspect.getsource(module))
    long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > 60]
    assert not long, f"{module.__name__}: split these into steps: {long}"


# ------------------------------------------------------------------ the archive's cache of measurements

FAST = options.CompareOptions(scaling=True, field_size=5, scaling_sizes=(4,), scaling_depths=(1,), timing_images=1,
                              timing_repeats=1, gradient_batch=2, max_train_images=8, max_held_out_images=8)


@pytest.fixture
def counted(monkeypatch):
    """Counts of the scaling sweeps and sampler timings measured (not read from a cache)."""
    calls = {"scaling": 0, "sampling": 0}
    scaling, timing = measure._scaling, measure.sampling_seconds

    def count(name, fn):
        def counting(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return counting

    monkeypatch.setattr(measure, "_scaling", count("scaling", scaling))
    monkeypatch.setattr(measure, "sampling_seconds", count("sampling", timing))
    return calls


@pytest.fixture
def run_copy(runs, tmp_path):
    """A copy of the PixelCNN run folder without the cache the module's comparisons left in it."""
    import shutil

    folder = tmp_path / "cnn"
    shutil.copytree(runs["dirs"][0], folder)
    shutil.rmtree(folder / "archive.zarr" / "cache", ignore_errors=True)
    return folder


def test_without_scaling_asked_for_no_sweep_runs_and_the_report_says_so(run_copy, tmp_path, counted):
    c = report.compare([run_copy], tmp_path / "plain", attrs.evolve(FAST, scaling=False))
    assert counted == {"scaling": 0, "sampling": 1}
    assert c["scaling"] == {} and "scaling" not in c["figures"] and c["notes"] == [report.SCALING_SKIPPED]
    markdown = (tmp_path / "plain" / "report.md").read_text()
    assert report.SCALING_SKIPPED in markdown and "Sampling was timed on cpu" in markdown
    summary = report.analyse(run_copy / "best.ckpt", tmp_path / "alone", attrs.evolve(FAST, scaling=False))
    assert summary["scaling"] is None and "scaling" not in summary["figures"]
    assert summary["notes"][-1] == report.SCALING_SKIPPED and counted["scaling"] == 0


def test_the_command_line_asks_for_scaling_with_a_flag_or_its_sizes(run_copy):
    parse = cli.build_parser().parse_args
    assert cli_report._compare_options(parse(["compare", str(run_copy), "--out", "o"])).scaling is False
    assert cli_report._compare_options(parse(["compare", str(run_copy), "--scaling"])).scaling is True
    ckpt = str(run_copy / "best.ckpt")
    assert cli_report._compare_options(parse(["analyse", ckpt, "--scaling-depths", "1", "2"])).scaling is True


@pytest.mark.parametrize("table, scaling, sizes, depths", [
    ("", False, (8, 16, 32), (1, 2, 4)),
    ("[report]\nscaling = true\n", True, (8, 16, 32), (1, 2, 4)),
    ("[report]\nscaling_sizes = [4, 12]\n", True, (4, 12), (1, 2, 4)),
    ("[report]\nscaling_depths = [3]\ntime_reference = true\n", True, (8, 16, 32), (3,)),
])
def test_a_recipe_asks_for_the_scaling_sweep_in_its_report_table(tmp_path, monkeypatch, table, scaling, sizes,
                                                                  depths):
    text = (
        '[model]\nname = "pixelcnn"\n[data]\nname = "image_folder"\nroot = "x"\n'
        '[[runs]]\nname = "a"\n[[runs]]\nname = "b"\n' + table)
    (tmp_path / "r.toml").write_text(text)
    recipe = load_recipe(tmp_path / "r.toml")
    seen = []
    monkeypatch.setattr(report, "compare", lambda dirs, out, chosen, *rest: seen.append(chosen) or {})
    report.compare_recipe(recipe)
    assert (seen[0].scaling, seen[0].scaling_sizes, seen[0].scaling_depths) == (scaling, sizes, depths)
    assert seen[0].time_reference is ("time_reference" in table)
    assert load_recipe(tmp_path / "r.toml").report == recipe.report
    given = attrs.evolve(FAST, scaling=False)
    report.compare_recipe(recipe, options=given)
    assert seen[1] is given, "options given in Python win over the recipe's table"


@pytest.mark.parametrize("table", ["scaling = 1", "scaling_sizes = []", "scaling_sizes = [0]",
                                   "scaling_sizes = [257]", "scaling_depths = [1.5]",
                                   f"scaling_depths = {list(range(1, 18))}", "sweep = true"])
def test_a_report_table_out_of_bounds_is_one_line_naming_its_key(tmp_path, table):
    (tmp_path / "r.toml").write_text('[model]\nname = "pixelcnn"\n[report]\n' + table + "\n")
    with pytest.raises(RecipeError) as caught:
        load_recipe(tmp_path / "r.toml")
    assert str(caught.value).startswith("report.") and "\n" not in str(caught.value)


@pytest.mark.parametrize("steady, expected", [(0.0, 1), (float("inf"), 3)])
def test_the_fast_sampler_is_timed_again_only_while_its_timings_are_short(monkeypatch, steady, expected):
    model = pixelgen.create_model("pixelcnn", in_channels=1, hidden_channels=4, n_layers=1, head_channels=8)
    calls = []
    real = measure.sample
    monkeypatch.setattr(measure, "sample", lambda *a, **k: calls.append(k) or real(*a, **k))
    times = measure.sampling_seconds(model, (1, 3, 3), n_images=1, repeats=3, steady_seconds=steady)
    whole = [k for k in calls if k["sampler"] == "fast" and k["height"] == 3]
    assert len(whole) == expected and times.fast_sampling_s_per_image > 0


def test_measuring_runs_with_the_default_threads_and_puts_the_callers_back(run_copy, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(report, "measure_runs", lambda *a: seen.append(torch.get_num_threads()) or ({}, None))
    monkeypatch.setattr(report, "comparison_figures", lambda *a: {})
    monkeypatch.setattr(report, "comparison_json", lambda *a: {"runs": []})
    monkeypatch.setattr(report, "comparison_document", lambda c: [])
    monkeypatch.setattr(report, "write_report", lambda *a: None)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        report.compare([run_copy], tmp_path / "report", FAST)
        report.compare([run_copy], tmp_path / "report", attrs.evolve(FAST, threads=2))
        assert seen == [sampling.default_threads(), 2] and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_a_second_compare_reads_the_scaling_sweep_and_timings_from_the_archive(run_copy, tmp_path, counted):
    first = report.compare([run_copy], tmp_path / "one", FAST)
    assert counted == {"scaling": 1, "sampling": 1}
    lines = []
    second = report.compare([run_copy], tmp_path / "two", FAST, lines.append)
    assert counted == {"scaling": 1, "sampling": 1}, "nothing measured again"
    assert json.dumps(second["scaling"]) == json.dumps(first["scaling"]), "the same numbers (NaN exponents too)"
    assert second["runs"][0] == first["runs"][0]
    assert any("scaling read from" in line for line in lines) and any("sampling read from" in line for line in lines)
    cache = RunArchive.open(run_copy / "archive.zarr")
    key = measure.scaling_cache_key(records.read_run(run_copy), 1, FAST)
    assert cache.cached("scaling@best.ckpt", key)["rows"] == first["scaling"]["cnn"]["rows"]


def test_a_changed_checkpoint_or_changed_settings_are_measured_again(run_copy, tmp_path, counted):
    import os

    report.compare([run_copy], tmp_path / "one", FAST)
    report.compare([run_copy], tmp_path / "two", attrs.evolve(FAST, scaling_sizes=(4, 6)))
    assert counted == {"scaling": 2, "sampling": 1}, "new sizes: a new sweep; the timings stand"
    report.compare([run_copy], tmp_path / "three", attrs.evolve(FAST, scaling_sizes=(4, 6), timing_images=2))
    assert counted == {"scaling": 2, "sampling": 2}
    checkpoint = run_copy / "best.ckpt"
    stat = checkpoint.stat()
    os.utime(checkpoint, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # rewritten, e.g. by a resumed run
    report.compare([run_copy], tmp_path / "four", attrs.evolve(FAST, scaling_sizes=(4, 6), timing_images=2))
    assert counted == {"scaling": 3, "sampling": 3}


def test_a_damaged_cache_is_measured_again_never_read(run_copy, tmp_path, counted):
    report.compare([run_copy], tmp_path / "one", FAST)
    archive = RunArchive.open(run_copy / "archive.zarr", mode="r+")
    record = records.read_run(run_copy)
    key = measure.scaling_cache_key(record, 1, FAST)
    archive.set_cached("scaling@best.ckpt", key, {"rows": [{"size": 4, "depth": 1, "seconds": "fast"}]})
    again = report.compare([run_copy], tmp_path / "two", FAST)
    assert counted["scaling"] == 2 and isinstance(again["scaling"]["cnn"]["rows"][0]["seconds"], float)
    (run_copy / "archive.zarr" / "cache" / "zarr.json").write_text("{not json")
    report.compare([run_copy], tmp_path / "three", FAST)
    assert counted == {"scaling": 3, "sampling": 2}, "an unreadable cache group: both measured again"
    assert RunArchive.open(run_copy / "archive.zarr").cached("scaling@best.ckpt", key) is not None, "and kept anew"
    assert RunArchive.open(run_copy / "archive.zarr").test_metrics(), "the rest of the archive untouched"


def test_a_compare_of_checkpoint_files_caches_nothing(run_copy, tmp_path, counted):
    report.compare([run_copy / "best.ckpt"], tmp_path / "one", FAST)
    report.compare([run_copy / "best.ckpt"], tmp_path / "two", FAST)
    assert counted == {"scaling": 2, "sampling": 2}
    assert not (run_copy / "archive.zarr" / "cache").exists()


def test_a_run_in_use_is_measured_but_not_cached(run_copy, tmp_path, counted):
    from pixelgen.store.files import RunLock

    lines = []
    with RunLock(run_copy):  # another writer holds the run: the comparison does not wait or fail
        report.compare([run_copy], tmp_path / "one", FAST, lines.append)
    assert any("scaling not cached" in line and "in use" in line for line in lines)
    assert not (run_copy / "archive.zarr" / "cache").exists()


# ------------------------------------------------------------------ the reference sampler's timing


def test_the_reference_time_extrapolated_from_sub_pixels_is_near_the_measured_one():
    """Each sub-pixel costs the reference sampler one whole forward pass: the time of a few,
    scaled to the image, is within a factor 2 of timing whole images."""
    import torch

    from pixelgen.registry import create_model

    torch.manual_seed(0)
    model = create_model("pixelcnn", hidden_channels=8, n_layers=2, head_channels=16, in_channels=3).eval()
    shape = (3, 8, 8)
    extrapolated = measure.sampling_seconds(model, shape, n_images=2, reference_subpixels=6)
    measured = measure.sampling_seconds(model, shape, n_images=2, time_reference=True)
    assert extrapolated.reference_subpixels_timed == 6 and measured.reference_subpixels_timed is None
    ratio = extrapolated.reference_sampling_s_per_image / measured.reference_sampling_s_per_image
    assert 0.5 < ratio < 2, f"extrapolated / measured = {ratio:.2f}"


def test_time_reference_times_whole_images_and_says_so(runs, tmp_path):
    out = tmp_path / "whole"
    run_cli("compare", str(runs["dirs"][0]), "--out", str(out), *MEASURE, "--time-reference")
    row = json.loads((out / "comparison.json").read_text())["runs"][0]
    assert row["reference_subpixels_timed"] is None and row["reference_sampling_s_per_image"] > 0
    assert "| reference sampler (s/image, whole images) [2] |" in (out / "report.md").read_text()
    summary = report.analyse(runs["dirs"][0] / "best.ckpt", tmp_path / "analysis",
                             attrs.evolve(OPTIONS, time_reference=True))
    assert summary["sampling"]["reference_subpixels_timed"] is None
    assert "reference sampler" in (tmp_path / "analysis" / "analysis.md").read_text()

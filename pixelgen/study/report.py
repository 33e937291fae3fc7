"""The comparison report: the paper's table, its figures and the trade-offs, from run folders.

::

    compare(run_dirs, out)        read each run's archive and checkpoint, measure, and write
                                  out/report.md, out/report.html, out/comparison.json and
                                  the PNG figures they show
    compare_recipe(recipe, out)   the same for every run of a multi-run recipe
    analyse(checkpoint, out)      one model: receptive field, gradient flow, scaling

What a run folder holds (written by :mod:`pixelgen.training.plan`): ``best.ckpt`` and
``last.ckpt`` (:mod:`pixelgen.store.checkpoint`: the model, its hyperparameters and the
resolved recipe) and the run archive (:mod:`pixelgen.store.archive`: per-epoch metrics, the
final evaluation, sample batches). :mod:`pixelgen.study.measure` reads and measures each run
(:func:`compare` and :func:`analyse` measure with the same
:func:`~pixelgen.study.measure.measure_run`); this module draws the figures, writes the JSON
and the prose, and :mod:`pixelgen.study.render` renders the prose to Markdown and HTML.

The prose is a function of the JSON alone (:func:`comparison_document` of
comparison.json, :func:`analysis_document` of analysis.json), so a report can be
rewritten from its JSON without measuring again.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch

from pixelgen.errors import PixelgenError, Report, silent
from pixelgen.recipe import ReportSection, run_dir
from pixelgen.registry import get_model_spec
from pixelgen.sampling import default_threads, torch_threads
from pixelgen.store.files import atomic_write_json
from pixelgen.store.runs import beside, check_output_folder
from pixelgen.study import analysis
from pixelgen.study.figures import comparison_figures, score_cells
from pixelgen.study.measure import RunMeasurement, measure_run, measure_runs, scaling_json
from pixelgen.study.options import ANALYSIS_JSON, COMPARISON_JSON, CompareOptions
from pixelgen.study.records import (
    MODEL_FIGURE_SOURCE,
    ReportError,
    RunRecord,
    differing_settings,
    load_run_data,
    read_checkpoint,
    read_run,
    unique_names,
)
from pixelgen.study.render import Block, format_value, write_markdown, write_report
from pixelgen.study.scoring import metric_label

# ------------------------------------------------------------------ compare



def _write_json(path: Path, data: Any) -> None:
    atomic_write_json(path, data, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def default_compare_dir(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``compare/`` next to the first run: inside a multi-run recipe's output folder (in the
    current folder for a zoo model: :func:`~pixelgen.store.runs.beside`)."""
    return beside(Path(run_dirs[0]).resolve()) / "compare"


def _timing(options: CompareOptions) -> dict[str, Any]:
    """Where and under what load the timings are taken (read before measuring starts)."""
    return {"device": options.device, "torch_threads": torch.get_num_threads(),
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def _one_or_all(values: set[str]) -> str | list[str]:
    ordered = sorted(values)
    return ordered[0] if len(ordered) == 1 else ordered


def comparison_json(
    records: Sequence[RunRecord],
    measured: Mapping[str, RunMeasurement],
    figures: Mapping[str, str],
    out_dir: Path,
    timing: Mapping[str, Any],
    scaling_asked: bool = True,
) -> dict[str, Any]:
    """The content of comparison.json (see :func:`compare`); ``scaling_asked``: whether the
    scaling sweep was asked for (:attr:`~pixelgen.study.options.CompareOptions.scaling`)."""
    return {
        "out": str(out_dir),
        "dataset": _one_or_all({r.run.data.name for r in records}),
        "eval_split": _one_or_all({r.run.eval.split for r in records}),
        "runs": [m.row.to_json() for m in measured.values()],
        "differing_settings": differing_settings(records) if len(records) > 1 else {},
        "figures": dict(figures),
        "sample_statistics": {n: m.sample_statistics.to_json() for n, m in measured.items()
                              if m.sample_statistics is not None},
        "gradient_flow": {n: m.gradient_flow.to_json() for n, m in measured.items() if m.gradient_flow is not None},
        "scaling": {n: scaling_json(m.scaling) for n, m in measured.items() if m.scaling is not None},
        "memory_note": analysis.MEMORY_NOTE,
        "timing": dict(timing),
        "notes": _scaling_notes(measured, scaling_asked),
    }


def _scaling_notes(measured: Mapping[str, RunMeasurement], scaling_asked: bool) -> list[str]:
    if not scaling_asked:
        return [SCALING_SKIPPED]
    return [f"{n}: the model has no n_layers hyperparameter; no depth scaling"
            for n, m in measured.items() if m.scaling is None]


#: The report's note where the scaling sweep was not asked for.
SCALING_SKIPPED = ("Scaling (time and activation memory against image size and depth) was not measured; "
                   "pixelgen compare --scaling (or analyse --scaling) measures it.")


def compare(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    options: CompareOptions | None = None,
    report: Report | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """Compare trained runs: write report.md, report.html, comparison.json and figures.

    Args:
        run_dirs: run folders written by ``pixelgen run``, or checkpoint files (measured
            without an archive: no training figures, samples or scores).
        out: output folder; default :func:`default_compare_dir`. Never a run folder; a
            folder of other files only with ``force``
            (:func:`~pixelgen.store.runs.check_output_folder`).
        options: how much to measure (:class:`~pixelgen.study.measure.CompareOptions`).
        report: called with one line per step (progress), e.g. ``print``.

    Returns:
        the content of comparison.json: ``out``, ``dataset``, ``runs`` (one dict of table
        numbers per run, in order), ``differing_settings``, ``figures`` (name -> file in
        ``out``), ``sample_statistics``, ``gradient_flow``, ``scaling``, ``notes``.
    """
    if not run_dirs:
        raise ReportError("compare: pass at least one run folder")
    options = options or CompareOptions()
    say = report or silent
    out_dir = check_output_folder(out if out is not None else default_compare_dir(run_dirs), COMPARISON_JSON,
                                  force=force)
    records = unique_names([read_checkpoint(d) if Path(d).is_file() else read_run(d) for d in run_dirs])
    out_dir.mkdir(parents=True, exist_ok=True)  # once the runs read, before anything is measured
    with torch_threads(options.threads or default_threads()):
        timing = _timing(options)
        measured, test_images = measure_runs(records, options, say)

    say(f"compare: writing figures and the report to {out_dir}")
    figures = comparison_figures(records, measured, test_images, out_dir)
    comparison = comparison_json(records, measured, figures, out_dir, timing, options.scaling)
    _write_json(out_dir / COMPARISON_JSON, comparison)
    title = "pixelgen comparison: " + ", ".join(r.name for r in records)
    write_report(out_dir, comparison_document(comparison), title)
    return comparison


def compare_recipe(
    recipe: Any,
    out: str | os.PathLike | None = None,
    options: CompareOptions | None = None,
    report: Report | None = None,
    run_out: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """:func:`compare` every run of ``recipe`` (a :class:`pixelgen.recipe.Recipe`).

    ``run_out`` is the ``--out`` the runs were trained with, if any (it replaces the
    recipe's output.dir); the report goes to ``out``, default ``compare/`` beside the runs.
    ``options`` default to the recipe's ``[report]`` table.
    """
    if run_out is not None:
        recipe = attrs.evolve(recipe, output=attrs.evolve(recipe.output, dir=str(run_out)))
    if options is None:
        options = report_options(recipe.report)
    return compare([run_dir(recipe, run) for run in recipe.runs], out, options, report)


def report_options(section: ReportSection) -> CompareOptions:
    """The :class:`~pixelgen.study.options.CompareOptions` a recipe's ``[report]`` table
    asks for: the sweep where ``scaling`` is true or its sizes or depths are set, the
    defaults for what it leaves unset."""
    given = {name: getattr(section, name) for name in ("scaling_sizes", "scaling_depths")
             if getattr(section, name) is not None}
    scaling = section.scaling or bool(given)
    return CompareOptions(scaling=scaling, time_reference=section.time_reference, **given)


# ------------------------------------------------------------------ the comparison's prose


# Table rows: key, label, format. None values print as "-".
TABLE_ROWS = (
    ("model", "model", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("test_nll_nats", "{split} NLL (nats/image)", "{:.2f}"),
    ("test_bits_per_dim", "{split} bits/dim", "{:.4f}"),
    ("test_bits_per_dim_per_channel", "{split} bits/dim per channel", "{:.4f}"),
    ("paper_bits_per_dim", "published bits/dim [4]", "{:.2f}"),
    ("best_val_bits_per_dim", "best validation bits/dim", "{:.4f}"),
    ("best_val_epoch", "epoch of best validation", "{}"),
    ("final_train_bits_per_dim", "final train bits/dim", "{:.4f}"),
    ("epochs", "epochs trained", "{}"),
    ("epoch_time_s", "training time per epoch (s, mean)", "{:.2f}"),
    ("train_time_s", "training time in all (s)", "{:.1f}"),
    ("images_per_s", "throughput (training images/s, mean)", "{:.1f}"),
    ("peak_memory_mb", "peak memory in training (MiB) [1]", "{:.0f}"),
    ("sequential_steps", "sequential steps per layer at {size}", "{}"),
    ("fast_sampling_s_per_image", "fast sampler (s/image; - if the model has none)", "{:.3f}"),
    ("reference_sampling_s_per_image", "reference sampler (s/image{reference}) [2]", "{:.3f}"),
)


def _receptive_field_prose(models: Sequence[str]) -> str:
    """Each model's own description of its receptive field (its ModelSpec's), once per model."""
    texts = []
    for name in dict.fromkeys(models):
        try:
            texts.append(get_model_spec(name).receptive_field)
        except PixelgenError:
            continue
    return " ".join(t for t in texts if t)


def _names(c: Mapping[str, Any]) -> list[str]:
    return [r["run"] for r in c["runs"]]


def _title_section(c: Mapping[str, Any]) -> list[Block]:
    runs, shape = c["runs"], c["runs"][0]["image_shape"]
    return [
        Block("h1", "Comparison: " + ", ".join(_names(c))),
        Block("p", f"Data set: {c['dataset']}; images {shape[0]}x{shape[1]}x{shape[2]} (C x H x W). "
                   "Run folders: " + ", ".join(f"{r['run']} = {r['run_dir']}" for r in runs) + "."),
    ]


def _settings_section(c: Mapping[str, Any]) -> list[Block]:
    if not c["differing_settings"]:
        return []
    rows = tuple((key, *(json.dumps(v) for v in values)) for key, values in c["differing_settings"].items())
    return [Block("h2", "Settings that differ between runs"), Block("table", header=("setting", *_names(c)), rows=rows)]


def _results_table(c: Mapping[str, Any]) -> Block:
    runs, shape = c["runs"], c["runs"][0]["image_shape"]
    split = c["eval_split"] if isinstance(c["eval_split"], str) else "eval"
    rows = []
    for key, label, fmt in TABLE_ROWS:
        if key == "paper_bits_per_dim" and all(r[key] is None for r in runs):
            continue  # no published figure for these runs (the models' own are for CIFAR-10)
        label = label.format(split=split, size=f"{shape[1]}x{shape[2]}", reference=_reference_timed(runs))
        rows.append((label, *(format_value(r.get(key), fmt) for r in runs)))
    for space, name in score_cells(runs):
        figures = [(r.get("scores") or {}).get(space, {}) for r in runs]
        rows.append((metric_label(name, space) + " [3]", *(format_value(f.get(name), "{:.4g}") for f in figures)))
    return Block("table", header=("", *_names(c)), rows=tuple(rows))


def _reference_timed(runs: Sequence[Mapping[str, Any]]) -> str:
    """How the reference sampler was timed, for its table row: ", extrapolated from 8
    sub-pixels", ", whole images", or nothing for runs not timed."""
    if all(r.get("reference_sampling_s_per_image") is None for r in runs):
        return ""
    counts = {r.get("reference_subpixels_timed") for r in runs}
    if "reference_rows_timed" in runs[0]:  # comparison.json written before sub-pixel timing
        return ", extrapolated from " + "/".join(map(str, sorted({r["reference_rows_timed"] for r in runs}))) + " row(s)"
    if counts == {None}:
        return ", whole images"
    return ", extrapolated from " + "/".join(map(str, sorted(counts - {None}))) + " sub-pixels"


def _table_footnotes(c: Mapping[str, Any]) -> Block:
    if any(r.get("reference_subpixels_timed") is not None or r.get("reference_extrapolated") for r in c["runs"]):
        reference = ("[2] Extrapolated: the reference sampler recomputes the whole forward pass for every sub-pixel, "
                     "the same pass whatever the image holds, so every sub-pixel costs it the same; it generated only "
                     "the last sub-pixels (the count is in the row's label) and its median time per sub-pixel was "
                     "multiplied by the sub-pixels of an image (pixelgen compare --time-reference times whole images). ")
    else:
        reference = "[2] The reference sampler (one full forward pass per sub-pixel) was timed on whole images. "
    return Block("p", (
        "[1] The training loop's peak_memory_mb, the largest over the epochs: "
        "torch.cuda.max_memory_allocated on CUDA; on the CPU the process's peak resident set "
        "size in the epoch (Linux VmHWM, reset at the start of every epoch), which includes the "
        "process's own baseline (Python, PyTorch, the data set in memory). " + reference +
        "The fast sampler was timed on whole images: the median of up to three timings, one where it took a quarter "
        "of a second or more. Sequential steps: steps one "
        "layer takes one after another (each model's own sequential_steps: 1 for a convolution, the length of the "
        "scan for a recurrence)."))


def _timing_note(c: Mapping[str, Any]) -> Block:
    t = c["timing"]
    load = t["load_average_1min"]
    return Block("p", (
        f"Sampling{' and scaling were' if c['scaling'] else ' was'} timed on {t['device']} "
        f"with {t['torch_threads']} torch threads"
        + (f", at a load average of {load:.1f} when measuring began" if load is not None else "")
        + "; timings on a machine shared with other work vary from run to run (training "
        "times are the training loop's own, measured while it ran)."))


def _paper_note(c: Mapping[str, Any]) -> list[Block]:
    """Footnote [4]: where each run's published figure comes from, when any run has one."""
    sources = [(r["run"], r.get("paper_source") or MODEL_FIGURE_SOURCE)  # rows written before paper_source
               for r in c["runs"] if r.get("paper_bits_per_dim") is not None]
    if not sources:
        return []
    return [Block("p", "[4] Published figures, beside the measured ones (a recipe's [paper] table gives them "
                       "per run): " + "; ".join(f"{run}: {source}" for run, source in sources) + ".")]


def _score_note(c: Mapping[str, Any]) -> list[Block]:
    """Footnote [3] and the figure of the sample-quality rows, when any run was scored."""
    cells = score_cells(c["runs"])
    if not cells:
        return []
    counts = sorted({f"{f['n_samples']} samples against {f['n_reference']} training images"
                     for r in c["runs"] for f in (r.get("scores") or {}).values() if "n_samples" in f})
    note = ("[3] Sample quality by torch-fidelity (pixelgen score, or the recipe's [score]): "
            + "; ".join(counts) + ". FID and KID: lower is better; IS, precision and recall: higher is "
            "better. Classifier features come from a small classifier pixelgen trained on the data set's "
            "labels: they rank these runs but are not comparable with published FID, which is measured in "
            "Inception-v3 features.")
    blocks = [Block("p", note)]
    if "scores" in c["figures"]:
        blocks.append(Block("figure", c["figures"]["scores"], ("sample quality",)))
    return blocks


def _results_section(c: Mapping[str, Any]) -> list[Block]:
    return [Block("h2", "Results"), _results_table(c), _table_footnotes(c), *_score_note(c), *_paper_note(c),
            _timing_note(c)]


def _curves_and_samples_section(c: Mapping[str, Any]) -> list[Block]:
    figures = c["figures"]
    blocks = [Block("h2", "Learning curves"), Block("figure", figures["learning_curves"], ("learning curves",))]
    if "samples" in figures:
        blocks += [Block("h2", "Samples"), Block("figure", figures["samples"], ("samples",))]
    if "histograms" in figures:
        blocks += [Block("p", "Sub-pixel values of the samples against the test images (log scale)."),
                   Block("figure", figures["histograms"], ("histograms",))]
    return blocks


def _statistics_table(stats: Mapping[str, Mapping[str, Any]]) -> Block:
    names = list(stats)
    first = stats[names[0]]

    def per_run(fn: Callable[[Mapping[str, Any]], str]) -> tuple[str, ...]:
        return tuple(fn(stats[n]) for n in names)

    def numbers(key: str, fmt: str) -> tuple[str, ...]:
        return per_run(lambda s: format_value(s[key], fmt))

    rows = [
        ("samples (archive batch)", *per_run(lambda s: f"{s['n_samples']} ({s['batch']})")),
        ("mean per channel: samples", *numbers("sample_mean", "{:.1f}")),
        ("mean per channel: data", *numbers("data_mean", "{:.1f}")),
        ("std per channel: samples", *numbers("sample_std", "{:.1f}")),
        ("std per channel: data", *numbers("data_std", "{:.1f}")),
        ("diversity (mean pairwise L2): samples", *numbers("sample_diversity", "{:.3f}")),
        ("diversity (mean pairwise L2): data", *numbers("data_diversity", "{:.3f}")),
        ("nearest training image, mean: samples", *numbers("nearest_train_distance_mean", "{:.3f}")),
        ("nearest training image, min: samples", *numbers("nearest_train_distance_min", "{:.3f}")),
        ("nearest training image, mean: test images",  # no test images: no baseline
         *per_run(lambda s: format_value(s.get("held_out_nearest_train_distance_mean"), "{:.3f}"))),
    ]
    for flag in first["artifacts"]:
        rows.append((f"{flag.replace('_', ' ')}: samples / data",
                     *per_run(lambda s, f=flag: f"{s['artifacts'][f]:.2f} / {s['data_artifacts'][f]:.2f}")))
    return Block("table", header=("", *names), rows=tuple(rows))


def _statistics_section(c: Mapping[str, Any]) -> list[Block]:
    if not c["sample_statistics"]:
        return []
    return [Block("h2", "Sample statistics"), _statistics_table(c["sample_statistics"]), Block("p", (
        "Distances are L2 over all sub-pixels scaled to [0, 1]. A sample much closer to its "
        "nearest training image than the test images are to theirs suggests memorisation. "
        "Flags: constant rows (over half the rows one value), repeated rows (over half the "
        "rows equal to the row above), saturated (over half the sub-pixels 0 or 255), "
        "duplicate (equal to another sample); the data column is the same share among "
        "training images."))]


def _receptive_fields_section(c: Mapping[str, Any]) -> list[Block]:
    return [
        Block("h2", "Receptive fields"),
        Block("p", "Input pixels the centre output pixel depends on, measured by the Jacobian at "
                   "perturbed weights (the architecture's field; compare figure 4 of the paper). "
                   + _receptive_field_prose([row["model"] for row in c["runs"]])),
        Block("figure", c["figures"]["receptive_fields"], ("receptive fields",)),
    ]


def _gradient_flow_section(c: Mapping[str, Any]) -> list[Block]:
    if "gradient_flow" not in c["figures"]:
        return []
    return [
        Block("h2", "Gradient flow"),
        Block("p", "Norm of the gradient of the loss (bits/dim, one batch of training images) "
                   "with respect to each residual layer's weights, from the input convolution "
                   "to the output head: at initialisation (a fresh model with the run's "
                   "hyperparameters and seed) and at the best checkpoint."),
        Block("figure", c["figures"]["gradient_flow"], ("gradient flow",)),
    ]


_EXPONENTS = ("seconds_vs_size", "saved_bytes_vs_size", "seconds_vs_depth", "saved_bytes_vs_depth")


def _scaling_section(c: Mapping[str, Any]) -> list[Block]:
    if not c["scaling"]:
        return []
    rows = tuple((n, *(format_value(s["exponents"].get(k), "{:.2f}") for k in _EXPONENTS)) for n, s in c["scaling"].items())
    return [
        Block("h2", "Scaling"),
        Block("table", header=("run", "time vs size", "memory vs size", "time vs depth", "memory vs depth"), rows=rows),
        Block("p", "Fitted exponents k of y ~ x^k (log-log least squares) for one forward + "
                   "backward pass on random images. " + c["memory_note"]),
        Block("figure", c["figures"]["scaling"], ("scaling",)),
    ]


def _notes_section(c: Mapping[str, Any]) -> list[Block]:
    return [Block("p", note) for note in c["notes"]]


_COMPARISON_SECTIONS = (
    _title_section, _settings_section, _results_section, _curves_and_samples_section, _statistics_section,
    _receptive_fields_section, _gradient_flow_section, _scaling_section, _notes_section,
)


def comparison_document(c: Mapping[str, Any]) -> list[Block]:
    """The blocks of report.md / report.html for the content of comparison.json."""
    return [block for section in _COMPARISON_SECTIONS for block in section(c)]


# ------------------------------------------------------------------ analyse one model


def _analysis_figures(measured: RunMeasurement, name: str, checkpoint: str, out_dir: Path) -> dict[str, str]:
    """Write the figures of one model's analysis into ``out_dir``: name -> file name."""
    figures = {"receptive_field": analysis.receptive_field_figure(
        {name: measured.field}, out_dir / "receptive_field.png").name}
    figures["gradient_flow"] = analysis.gradient_flow_figure(
        {name: measured.gradient_flow.panels(checkpoint)}, out_dir / "gradient_flow.png").name
    if measured.scaling is not None:
        figures["scaling"] = analysis.scaling_figure({name: measured.scaling}, out_dir / "scaling.png").name
    return figures


def analysis_json(
    record: RunRecord, measured: RunMeasurement, figures: Mapping[str, str], out_dir: Path, scaling_asked: bool = True
) -> dict[str, Any]:
    """The content of analysis.json (see :func:`analyse`); ``scaling_asked`` as for :func:`comparison_json`."""
    row, flow = measured.row, measured.gradient_flow
    notes = ["The run's data was not found: gradient flow on random images."] if flow.random_images else []
    return {
        "out": str(out_dir), "checkpoint": str(record.checkpoint), "model": row.model,
        "hyperparameters": dict(record.model_config["hyperparameters"]), "epoch": record.state["epoch"],
        "parameters": row.parameters, "sequential_steps": row.sequential_steps, "image_shape": row.image_shape,
        "receptive_field_seen": int(measured.field.sum()), "figures": dict(figures),
        "gradient_flow": {k: [list(p) for p in v] for k, v in flow.panels(record.checkpoint.name).items()},
        "scaling": scaling_json(measured.scaling) if measured.scaling is not None else None,
        "memory_note": analysis.MEMORY_NOTE,
        "notes": notes + ([] if scaling_asked else [SCALING_SKIPPED]),
        **({"sampling": attrs.asdict(row.sampling)} if row.sampling is not None else {}),  # --time-reference only
    }


def _scaling_blocks(summary: Mapping[str, Any]) -> list[Block]:
    scaling = summary["scaling"]
    if scaling is None:
        return []
    rows = tuple((str(r["size"]), str(r["depth"]), f"{r['seconds']:.4f}", f"{r['saved_bytes']:,}") for r in scaling["rows"])
    return [
        Block("h2", "Scaling"),
        Block("table", header=("size", "depth", "seconds", "saved bytes"), rows=rows),
        Block("p", "Fitted exponents: " + ", ".join(f"{k} {v:.2f}" for k, v in scaling["exponents"].items())
                   + ". " + summary["memory_note"]),
        Block("figure", summary["figures"]["scaling"], ("scaling",)),
    ]


def _sampling_blocks(summary: Mapping[str, Any]) -> list[Block]:
    """The samplers' seconds per image, where they were timed (``--time-reference``)."""
    sampling = summary.get("sampling")
    if sampling is None:
        return []
    fast = sampling["fast_sampling_s_per_image"]
    return [Block("p", "Sampling, seconds per image: reference sampler "
                       f"{format_value(sampling['reference_sampling_s_per_image'], '{:.3f}')} (whole images), "
                       f"fast sampler {format_value(fast, '{:.3f}') if fast is not None else 'none'}.")]


def analysis_document(summary: Mapping[str, Any], canvas: tuple[int, int]) -> list[Block]:
    """The blocks of analysis.md for the content of analysis.json; ``canvas`` is the
    ``(height, width)`` the receptive field was measured on."""
    _, h, w = summary["image_shape"]
    flow = summary["gradient_flow"]
    layers = [layer for layer, _ in next(iter(flow.values()))]
    return [
        Block("h1", f"Analysis of {summary['model']} ({summary['checkpoint']})"),
        Block("p", f"Epoch {summary['epoch']}, {summary['parameters']:,} parameters; hyperparameters: "
                   + ", ".join(f"{k}={v!r}" for k, v in summary["hyperparameters"].items()) + "."),
        Block("p", f"Sequential steps per layer on {h}x{w} images: {summary['sequential_steps']}."),
        *_sampling_blocks(summary),
        Block("h2", "Receptive field"),
        Block("p", f"The centre pixel of a {canvas[0]}x{canvas[1]} canvas sees {summary['receptive_field_seen']} "
                   "pixels (any colour), measured by the Jacobian at perturbed weights."),
        Block("figure", summary["figures"]["receptive_field"], ("receptive field",)),
        Block("h2", "Gradient flow"),
        Block("table", header=("layer", *flow),
              rows=tuple((layer, *(f"{dict(f)[layer]:.3g}" for f in flow.values())) for layer in layers)),
        Block("figure", summary["figures"]["gradient_flow"], ("gradient flow",)),
        *_scaling_blocks(summary),
        *(Block("p", note) for note in summary["notes"]),
    ]


def analyse(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    options: CompareOptions | None = None,
    report: Report | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """One model's receptive field, gradient flow and (``options.scaling``) scaling, with a short analysis.md.

    The checkpoint is measured as :func:`compare` measures each run
    (:func:`~pixelgen.study.measure.measure_run`), without timing its samplers unless
    ``options.time_reference`` asks for their whole-image timings; without the run's data, its
    gradient flow is measured on random images.

    Args:
        checkpoint: a ``.ckpt`` written by ``pixelgen run``.
        out: output folder; default ``analysis/`` beside the checkpoint (in the current
            folder for a zoo model: :func:`~pixelgen.store.runs.beside`). Never a run
            folder; a folder of other files only with ``force``.

    Returns:
        the content of analysis.json (figures, sequential steps, gradient flow, scaling).
    """
    options = options or CompareOptions()
    say = report or silent
    record = read_checkpoint(checkpoint)
    out_dir = check_output_folder(out if out is not None else beside(record.checkpoint.resolve()) / "analysis",
                                  ANALYSIS_JSON, force=force)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_run_data(record, say)
    name = record.model_config["name"]
    say(f"analyse: measuring {name} (receptive field, gradient flow{', scaling' if options.scaling else ''})")
    with torch_threads(options.threads or default_threads()):
        measured = measure_run(record, data, None, options, time_samplers=options.time_reference,
                               random_images_without_data=True)
    figures = _analysis_figures(measured, name, record.checkpoint.name, out_dir)
    summary = analysis_json(record, measured, figures, out_dir, options.scaling)
    _write_json(out_dir / ANALYSIS_JSON, summary)
    write_markdown(out_dir / "analysis.md", analysis_document(summary, tuple(measured.field.shape)))
    return summary

"""The comparison report's figures (:func:`pixelgen.study.report.compare`): the runs'
learning curves, their samples side by side, their sample-quality scores, and the
measured figures of :mod:`pixelgen.study.analysis`.
"""

from __future__ import annotations

import math
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from pixelgen.errors import progress_bar_enabled
from pixelgen.store.images import to_display
from pixelgen.study import analysis
from pixelgen.study.measure import RunMeasurement
from pixelgen.study.records import RunRecord
from pixelgen.study.scoring import FIGURES, metric_label

# ------------------------------------------------------------------ figures of the runs


def learning_curves_figure(records: Sequence[RunRecord], path: Path) -> Path:
    """Train (solid) and validation (dashed) bits/dim against epoch and training time."""
    fig, axes = analysis.new_figure(2, figsize=(12, 4))
    colours = [f"C{i % 10}" for i in range(len(records))]
    for record, colour in zip(records, colours):
        m = record.archive.metrics if record.archive is not None else {}
        epochs = np.asarray(m.get("epoch", []))
        wall = np.cumsum(np.nan_to_num(np.asarray(m.get("epoch_time_s", np.zeros(len(epochs))), dtype=float)))
        for column, style in (("train_bits_per_dim", "-"), ("val_bits_per_dim", "--")):
            if column not in m:
                continue
            kind = "train" if column.startswith("train") else "val"
            axes[0, 0].plot(epochs, m[column], style, color=colour, marker=".", label=f"{record.name} {kind}")
            axes[0, 1].plot(wall, m[column], style, color=colour, marker=".", label=f"{record.name} {kind}")
    axes[0, 0].set_xlabel("epoch")
    axes[0, 1].set_xlabel("training time (s, sum of epoch_time_s)")
    for ax in axes[0]:
        ax.set_ylabel("bits/dim")
        ax.legend(fontsize=7)
    return analysis.save_figure(fig, path)


def sample_grid_figure(samples: Mapping[str, np.ndarray], path: Path, per_side: int = 4) -> Path:
    """Up to ``per_side**2`` samples of each run as a grid, runs side by side."""
    fig, axes = analysis.new_figure(len(samples), figsize=(3.2 * len(samples), 3.6))
    for ax, (name, images) in zip(axes[0], samples.items()):
        images = images[: per_side * per_side]
        n, c, h, w = images.shape
        rows = math.ceil(n / per_side)
        canvas = np.full((c, rows * (h + 1) - 1, per_side * (w + 1) - 1), 255, dtype=np.uint8)
        for k, image in enumerate(images):
            r, q = divmod(k, per_side)
            canvas[:, r * (h + 1) : r * (h + 1) + h, q * (w + 1) : q * (w + 1) + w] = image
        if c == 1:
            ax.imshow(canvas[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        else:
            ax.imshow(canvas[:3].transpose(1, 2, 0), interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    return analysis.save_figure(fig, path)


def score_cells(runs: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """``(feature space, figure)`` pairs that some run of ``runs`` (comparison.json rows) was scored on."""
    found = {(space, name) for r in runs for space, figures in (r.get("scores") or {}).items()
             for name in FIGURES if name in figures}
    return sorted(found, key=lambda cell: (cell[0], FIGURES.index(cell[1])))


def scores_figure(runs: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """One bar chart per sample-quality figure, a bar per run, labelled with its feature space."""
    cells = score_cells(runs)
    fig, axes = analysis.new_figure(len(cells), figsize=(3.6 * len(cells), 3.4))
    names = [r["run"] for r in runs]
    for ax, (space, name) in zip(axes[0], cells):
        figures = [(r.get("scores") or {}).get(space, {}) for r in runs]
        values = [f.get(name, np.nan) for f in figures]
        spread = [f.get(f"{name}_std", 0.0) for f in figures]
        ax.bar(range(len(names)), values, yerr=spread, color=[f"C{i % 10}" for i in range(len(names))])
        if np.nanmin(values) >= 0:
            ax.set_ylim(bottom=0)
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(textwrap.fill(metric_label(name, space), 36), fontsize=8)
    return analysis.save_figure(fig, path)


def comparison_figures(
    records: Sequence[RunRecord],
    measured: Mapping[str, RunMeasurement],
    test_images: np.ndarray | None,
    out_dir: Path,
) -> dict[str, str]:
    """Write the figures of the comparison into ``out_dir``: name -> file name (a progress
    bar on stderr, one step per figure, where progress bars are on)."""
    steps = _figure_steps(records, measured, test_images, out_dir)
    bar = tqdm(steps, desc="figures", unit="figure", file=sys.stderr, leave=False, disable=not progress_bar_enabled())
    return {name: draw().name for name, draw in bar}


def _figure_steps(
    records: Sequence[RunRecord],
    measured: Mapping[str, RunMeasurement],
    test_images: np.ndarray | None,
    out_dir: Path,
) -> list[tuple[str, Callable[[], Path]]]:
    """The comparison's figures as ``(name, draw)``, ``draw()`` writing one into ``out_dir``."""
    steps = [
        ("learning_curves", lambda: learning_curves_figure(records, out_dir / "learning_curves.png")),
        ("receptive_fields", lambda: analysis.receptive_field_figure(
            {n: m.field for n, m in measured.items()}, out_dir / "receptive_fields.png")),
    ]
    checkpoints = {r.name: r.checkpoint.name for r in records}
    panels = {n: m.gradient_flow.panels(checkpoints[n]) for n, m in measured.items() if m.gradient_flow is not None}
    if panels:
        steps.append(("gradient_flow", lambda: analysis.gradient_flow_figure(panels, out_dir / "gradient_flow.png")))
    results = {n: m.scaling for n, m in measured.items() if m.scaling is not None}
    if results:
        steps.append(("scaling", lambda: analysis.scaling_figure(results, out_dir / "scaling.png")))
    rows = [m.row.to_json() for m in measured.values()]
    if score_cells(rows):
        steps.append(("scores", lambda: scores_figure(rows, out_dir / "scores.png")))
    grids = {n: m.samples for n, m in measured.items() if m.samples is not None}
    if grids:
        levels = {r.name: r.model_config["hyperparameters"].get("n_levels", 256) for r in records}
        shown = {n: to_display(torch.from_numpy(np.asarray(g)), levels[n]).numpy() for n, g in grids.items()}
        steps.append(("samples", lambda: sample_grid_figure(shown, out_dir / "samples.png")))
        comparable = {n: g for n, g in grids.items() if test_images is not None and g.shape[1:] == test_images.shape[1:]}
        if comparable:
            steps.append(("histograms", lambda: analysis.histogram_figure(comparable, test_images,
                                                                          out_dir / "histograms.png")))
    return steps



"""The comparison report: the paper's table, its figures and the trade-offs, from run folders.

::

    compare(run_dirs, out)        read each run's archive and checkpoint, measure, and write
                                  out/report.md, out/report.html, out/comparison.json and
                                  the PNG figures they show
    compare_recipe(recipe, out)   the same for every run of a multi-run recipe
    analyse(checkpoint, out)      one model: receptive field, gradient flow, scaling

What a run folder holds (written by :mod:`pixelgen.train`): ``best.ckpt`` and
``last.ckpt`` (:mod:`pixelgen.checkpoint`: the model, its hyperparameters and the
resolved recipe) and the run archive (:mod:`pixelgen.archive`: per-epoch metrics, the
final evaluation, sample batches). Numbers in the table are read from the archive as
stored; the measurements (receptive fields, gradient flow, scaling, sampling speed,
sample statistics) come from :mod:`pixelgen.analysis` on the best checkpoint.

The report is built once as a list of blocks (headings, paragraphs, tables, figures) and
rendered twice, to Markdown and to HTML, so the two never disagree.
"""

from __future__ import annotations

import functools
import html
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn

from pixelgen import analysis
from pixelgen import checkpoint as ckpt_io
from pixelgen.archive import RunArchive
from pixelgen.data import HorizontalFlip
from pixelgen.recipe import recipe_from_dict, run_dir
from pixelgen.registry import create_model, get_model_spec
from pixelgen.sampling import sample, sampler_used
from pixelgen.train import load_data
from pixelgen.errors import PixelgenError
from pixelgen.inference import to_display
from pixelgen.files import atomic_write_json, atomic_write_text

# Pixel RNN (van den Oord et al. 2016), table 3: test NLL on CIFAR-10 in bits/dim.

Report = Callable[[str], None]


def _silent(line: str) -> None:
    pass


class ReportError(PixelgenError):
    """A folder is not a pixelgen run, or runs cannot be compared."""


@attrs.frozen(kw_only=True)
class CompareOptions:
    """How much measuring :func:`compare` and :func:`analyse` do; the defaults live here.

    Attributes:
        field_size: side of the canvas the receptive fields are measured on (capped at
            the image size).
        gradient_batch: training images in the batch of the gradient-flow measurement.
        scaling_sizes, scaling_depths: image sizes and numbers of layers timed.
        scaling_batch, scaling_repeats: images per timed pass, timed passes per point.
        timing_images: images generated to time each sampler.
        timing_repeats: timings of each sampler; the median is reported.
        reference_rows: image rows the reference sampler generates for its timing; the
            time per image is extrapolated to the whole image from these rows.
        max_train_images: training images searched for each sample's nearest neighbour.
        max_held_out_images: test images used as the baseline of that search.
        device: where the measurements run ("cpu", "cuda", ...).
    """

    field_size: int = 15
    gradient_batch: int = 8
    scaling_sizes: tuple[int, ...] = (8, 16, 32)
    scaling_depths: tuple[int, ...] = (1, 2, 4)
    scaling_batch: int = 4
    scaling_repeats: int = 3
    timing_images: int = 2
    timing_repeats: int = 3
    reference_rows: int = 1
    max_train_images: int = 2000
    max_held_out_images: int = 500
    device: str = "cpu"


# ------------------------------------------------------------------ reading run folders


@attrs.frozen
class RunRecord:
    """What one run folder holds, read once."""

    name: str  # the run's name, unique among the runs compared
    run_dir: Path
    run: Any  # pixelgen.recipe.RunSpec
    recipe: dict[str, Any]  # the resolved single-run recipe, as stored
    model_config: dict[str, Any]  # {"name", "hyperparameters"} with every default
    checkpoint: Path  # best.ckpt, else last.ckpt
    state: dict[str, Any]  # the checkpoint's contents
    metrics: dict[str, np.ndarray]
    test: dict[str, Any]
    samples: list[tuple[str, dict[str, Any]]]
    archive_path: Path


def read_run(run_dir: str | os.PathLike) -> RunRecord:
    """Read a run folder written by ``pixelgen run``.

    Raises:
        ReportError: no checkpoint or no archive in the folder.
        CheckpointError: the checkpoint is corrupt or foreign.
    """

    folder = Path(run_dir)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such run folder")
    chosen = next((folder / name for name in ("best.ckpt", "last.ckpt") if (folder / name).is_file()), None)
    if chosen is None:
        raise ReportError(
            f"{folder}: no best.ckpt or last.ckpt; pass run folders written by `pixelgen run`"
        )
    state = ckpt_io.load_checkpoint(chosen)
    recipe = recipe_from_dict(state["recipe"])
    archive_path = folder / recipe.output.archive
    if not archive_path.exists():
        raise ReportError(f"{folder}: a checkpoint but no {recipe.output.archive}; was the run interrupted?")
    archive = RunArchive.open(archive_path)
    return RunRecord(
        name=recipe.runs[0].name,
        run_dir=folder,
        run=recipe.runs[0],
        recipe=state["recipe"],
        model_config=state["model"],
        checkpoint=chosen,
        state=state,
        metrics=archive.metrics(),
        test=archive.test_metrics(),
        samples=archive.sample_batches(),
        archive_path=archive_path,
    )


def _unique_names(records: list[RunRecord]) -> list[RunRecord]:
    """Runs of different recipes may share a name: fall back to folder names, then indices."""
    names = [r.name for r in records]
    if len(set(names)) < len(names):
        names = [r.run_dir.name for r in records]
    if len(set(names)) < len(names):
        names = [f"{i}:{r.name}" for i, r in enumerate(records)]
    return [attrs.evolve(r, name=n) for r, n in zip(records, names)]


def _model(record: RunRecord, device: str) -> nn.Module:

    return ckpt_io.model_from_checkpoint(record.state).to(device).eval()


def _fresh_model(record: RunRecord, device: str) -> nn.Module:
    """A newly initialised model with the run's hyperparameters and seed."""

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(record.run.train.seed)
        model = create_model(record.model_config["name"], **record.model_config["hyperparameters"])
    return model.to(device)


def _image_shape(record: RunRecord, data: Mapping[str, Any] | None) -> tuple[int, int, int]:
    if data is not None:
        return tuple(data["train"].shape)
    if record.samples:

        key, _ = record.samples[-1]
        return tuple(RunArchive.open(record.archive_path).read_samples(key).shape[1:])
    raise ReportError(f"{record.run_dir}: neither its data nor any sample gives the image size")


def _load_data(record: RunRecord, report: Report) -> dict[str, Any] | None:
    """The run's splits, or None (with a note) when its data cannot be found here."""

    try:
        return load_data(record.run)
    except PixelgenError as exc:
        report(f"  {record.name}: data not available, data-based measurements skipped ({exc})")
        return None


def _stack_images(dataset: Any, limit: int) -> tuple[np.ndarray, torch.Tensor]:
    """The first ``limit`` items of a dataset as uint8 ``(N, C, H, W)`` and labels ``(N,)``.

    Random training flips are undone (the images as stored), so measurements repeat.
    """
    while isinstance(dataset, HorizontalFlip):
        dataset = dataset.dataset
    n = min(limit, len(dataset))
    items = [dataset[i] for i in range(n)]
    images = torch.stack([image for image, _ in items]).numpy()
    labels = torch.tensor([label for _, label in items], dtype=torch.long)
    return images, labels


# ------------------------------------------------------------------ the table


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def training_figures(metrics: Mapping[str, np.ndarray], test: Mapping[str, Any]) -> dict[str, Any]:
    """The table numbers a run's archive gives, exactly as stored (no rounding).

    Args:
        metrics: :meth:`~pixelgen.archive.RunArchive.metrics` (columns ``epoch``, ``train_bits_per_dim``,
            ``val_bits_per_dim``, ``epoch_time_s``, ``images_per_s``, ``peak_memory_mb``).
        test: :meth:`~pixelgen.archive.RunArchive.test_metrics` (``nll_nats``, ``bits_per_dim``,
            ``bits_per_dim_per_channel``).
    """
    def column(name: str) -> np.ndarray:
        return np.asarray(metrics.get(name, np.full(len(metrics.get("epoch", [])), np.nan)), dtype=float)

    epochs = np.asarray(metrics.get("epoch", []))
    val, times = column("val_bits_per_dim"), column("epoch_time_s")
    has_val = bool(np.isfinite(val).any())
    best = int(np.nanargmin(val)) if has_val else None
    return {
        "test_nll_nats": test.get("nll_nats"),
        "test_bits_per_dim": test.get("bits_per_dim"),
        "test_bits_per_dim_per_channel": test.get("bits_per_dim_per_channel"),
        "best_val_bits_per_dim": float(val[best]) if has_val else None,
        "best_val_epoch": int(epochs[best]) if has_val else None,
        "final_train_bits_per_dim": _nan_to_none(column("train_bits_per_dim")[-1]) if len(epochs) else None,
        "epochs": int(epochs[-1]) if len(epochs) else 0,
        "epoch_time_s": _nan_to_none(float(np.nanmean(times))) if np.isfinite(times).any() else None,
        "train_time_s": float(np.nansum(times)) if len(times) else None,
        "images_per_s": _nan_to_none(float(np.nanmean(column("images_per_s")))) if len(epochs) else None,
        "peak_memory_mb": _nan_to_none(float(np.nanmax(column("peak_memory_mb")))) if np.isfinite(column("peak_memory_mb")).any() else None,
    }


def sampling_seconds(
    model: nn.Module,
    shape: tuple[int, int, int],
    *,
    n_images: int = 2,
    reference_rows: int = 1,
    repeats: int = 3,
    labels: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Seconds per image of the fast and the reference sampler (:func:`pixelgen.sample`).

    The fast sampler generates ``n_images`` whole images. The reference sampler (one full
    forward pass per sub-pixel, the same cost for every row) generates only the last
    ``reference_rows`` rows under a given prefix, and its time is scaled by
    ``height / reference_rows``: ``reference_extrapolated`` says so. Each is the median
    of ``repeats`` timings after an untimed warm-up. A model without a cached sampling
    state has no fast sampler: its ``fast_sampling_s_per_image`` is None.
    """

    channels, height, width = shape
    rows = max(1, min(reference_rows, height))
    device = next(model.parameters()).device
    prefix = torch.zeros(n_images, channels, height - rows, width, dtype=torch.uint8, device=device)

    def seconds(**kwargs: Any) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        sample(model, n_images, seed=0, labels=labels, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    has_fast = sampler_used(model, "fast") == "fast"
    # Warm-up, untimed, on one-row images: the first passes pay for allocations and kernels.
    for sampler in ("fast", "reference") if has_fast else ("reference",):
        seconds(height=1, width=width, sampler=sampler)
    fast = statistics.median(
        seconds(height=height, width=width, sampler="fast") for _ in range(repeats)) / n_images if has_fast else None
    reference = statistics.median(
        seconds(height=height, width=width, sampler="reference", prefix=prefix) for _ in range(repeats)
    ) / n_images * height / rows
    return {
        "fast_sampling_s_per_image": fast,
        "reference_sampling_s_per_image": reference,
        "reference_extrapolated": rows < height,
        "reference_rows_timed": rows,
    }


# Table rows: key, label, format. None values print as "-".
TABLE_ROWS = (
    ("model", "model", "{}"),
    ("parameters", "parameters", "{:,}"),
    ("test_nll_nats", "{split} NLL (nats/image)", "{:.2f}"),
    ("test_bits_per_dim", "{split} bits/dim", "{:.4f}"),
    ("test_bits_per_dim_per_channel", "{split} bits/dim per channel", "{:.4f}"),
    ("paper_bits_per_dim", "paper, CIFAR-10 test bits/dim (table 3)", "{:.2f}"),
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
    ("reference_sampling_s_per_image", "reference sampler (s/image) [2]", "{:.3f}"),
)


def _format(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (list, tuple)):
        return " / ".join(_format(v, fmt) for v in value)
    return fmt.format(value)


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in table.items():
        if isinstance(value, Mapping):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def settings_of(record: RunRecord) -> dict[str, Any]:
    """A run's settings as dotted keys: the model with every hyperparameter (defaults
    included) and the recipe's data, train, eval and sample tables."""
    recipe = {k: v for k, v in record.recipe.items() if k in ("data", "train", "eval", "sample")}
    return {
        "model.name": record.model_config["name"],
        **{f"model.hyperparameters.{k}": v for k, v in record.model_config["hyperparameters"].items()},
        **_flatten(recipe),
    }


def differing_settings(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Dotted keys whose values are not the same for every run: key -> value per run."""
    settings = [settings_of(r) for r in records]
    keys = list(dict.fromkeys(k for s in settings for k in s))
    return {k: [s.get(k) for s in settings] for k in keys if len({json.dumps(s.get(k)) for s in settings}) > 1}


# ------------------------------------------------------------------ figures of the runs


def learning_curves_figure(records: Sequence[RunRecord], path: Path) -> Path:
    """Train (solid) and validation (dashed) bits/dim against epoch and training time."""
    fig, axes = analysis.new_figure(2, figsize=(12, 4))
    colours = [f"C{i % 10}" for i in range(len(records))]
    for record, colour in zip(records, colours):
        m = record.metrics
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
    """Up to ``per_side**2`` samples of each run as a grid, runs side by side; the samples
    are pixel values 0..255 (a binary model's are mapped by :func:`~pixelgen.inference.to_display`)."""
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


# ------------------------------------------------------------------ the document


@attrs.frozen
class Block:
    """One piece of the report: ``kind`` is "h1", "h2", "p", "table" or "figure"."""

    kind: str
    text: str = ""
    header: tuple[str, ...] = ()
    rows: tuple[tuple[str, ...], ...] = ()


def to_markdown(blocks: Sequence[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind == "h1":
            out.append(f"# {b.text}")
        elif b.kind == "h2":
            out.append(f"## {b.text}")
        elif b.kind == "p":
            out.append(b.text)
        elif b.kind == "figure":
            out.append(f"![{b.header[0] if b.header else b.text}]({b.text})")
        elif b.kind == "table":
            cells = [[c.replace("|", "\\|") for c in row] for row in (b.header, *b.rows)]
            out.append("| " + " | ".join(cells[0]) + " |")
            out.append("|" + "---|" * len(b.header))
            out.extend("| " + " | ".join(row) + " |" for row in cells[1:])
        out.append("")
    return "\n".join(out)


_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:.25em .6em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}"
)


def to_html(blocks: Sequence[Block], title: str) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
           f"<style>{_STYLE}</style></head><body>"]
    for b in blocks:
        if b.kind in ("h1", "h2", "p"):
            out.append(f"<{b.kind}>{esc(b.text)}</{b.kind}>")
        elif b.kind == "figure":
            alt = b.header[0] if b.header else b.text
            out.append(f"<figure><img src='{esc(b.text)}' alt='{esc(alt)}'></figure>")
        elif b.kind == "table":
            out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in b.header) + "</tr>")
            out.extend("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _write_report(out: Path, blocks: list[Block], title: str, stem: str = "report") -> None:
    atomic_write_text(out / f"{stem}.md", to_markdown(blocks))
    atomic_write_text(out / f"{stem}.html", to_html(blocks, title))


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


# ------------------------------------------------------------------ compare


def _with_depth(name: str, hyperparameters: Mapping[str, Any], depth: int) -> nn.Module:
    """The registered model ``name`` with ``hyperparameters`` but ``depth`` layers."""

    return create_model(name, **{**hyperparameters, "n_layers": depth})


def _paper_figure(model: str, dataset: str) -> float | None:
    """The published test bits/dim of ``model`` on ``dataset`` (its ModelSpec's), if any."""
    try:
        return get_model_spec(model).paper_bits_per_dim.get(dataset)
    except PixelgenError:
        return None  # a run of a model no longer installed: no figure to show


def _receptive_field_prose(models: Sequence[str]) -> str:
    """Each model's own description of its receptive field (its ModelSpec's), once per model."""
    texts = []
    for name in dict.fromkeys(models):
        try:
            texts.append(get_model_spec(name).receptive_field)
        except PixelgenError:
            continue
    return " ".join(t for t in texts if t)


def measure_run(
    record: RunRecord,
    data: Mapping[str, Any] | None,
    images: tuple[np.ndarray, np.ndarray] | None,
    options: CompareOptions,
) -> dict[str, Any]:
    """Everything :func:`compare` measures on one run.

    Args:
        record: the run (:func:`read_run`).
        data: its splits (``pixelgen.train.load_data``), or None when not found here.
        images: (training images, test images) of its data set, uint8 ``(N, C, H, W)``.
        options: how much to measure.

    Returns:
        ``row`` (the table numbers), ``field`` (receptive-field map), ``notes`` and, where
        they can be measured, ``gradient_flow`` ({"start", "end"}), ``scaling``,
        ``samples`` (the run's last archived batch) and ``sample_statistics``.
    """
    device = options.device
    model = _model(record, device)
    shape = _image_shape(record, data)
    c, h, w = shape
    conditional = getattr(model, "n_classes", 0) > 0
    row = {"run": record.name, "run_dir": str(record.run_dir), "checkpoint": str(record.checkpoint),
           "model": record.model_config["name"], "parameters": sum(p.numel() for p in model.parameters())}
    row.update(training_figures(record.metrics, record.test))
    row["paper_bits_per_dim"] = _paper_figure(row["model"], record.run.data.name)
    row["image_shape"] = list(shape)
    row["sequential_steps"] = analysis.sequential_steps(model, h, w)
    row.update(sampling_seconds(
        model, shape, n_images=options.timing_images, reference_rows=options.reference_rows,
        repeats=options.timing_repeats, labels=torch.zeros(options.timing_images, dtype=torch.long, device=device) if conditional else None,
    ))
    out: dict[str, Any] = {"row": row, "notes": []}

    canvas = (min(options.field_size, h), min(options.field_size, w))
    label = torch.zeros(1, dtype=torch.long) if conditional else None
    out["field"] = analysis.receptive_field_map(model.cpu(), c, *canvas, labels=label)  # the Jacobian runs on the CPU
    model.to(device)

    if data is not None:
        batch, labels = _stack_images(data["train"], options.gradient_batch)
        batch_t = torch.from_numpy(batch).to(device)
        labels_t = labels.to(device) if conditional else None
        out["gradient_flow"] = {
            "start": analysis.gradient_flow(_fresh_model(record, device), batch_t, labels_t),
            "end": analysis.gradient_flow(model, batch_t, labels_t),
        }
    if record.samples:

        key, settings = record.samples[-1]
        out["samples"] = RunArchive.open(record.archive_path).read_samples(key)
        if images is not None:
            out["sample_statistics"] = {
                "batch": key, "sampler": settings.get("sampler"), "temperature": settings.get("temperature"),
                **analysis.sample_statistics(out["samples"], *images),
            }

    name, hyper = record.model_config["name"], dict(record.model_config["hyperparameters"])
    out["n_levels"] = hyper.get("n_levels", 256)  # the samples' values are 0..n_levels-1
    if "n_layers" in hyper:
        result = analysis.scaling(
            functools.partial(_with_depth, name, hyper), options.scaling_sizes, options.scaling_depths,
            batch=options.scaling_batch, channels=c, device=device, repeats=options.scaling_repeats,
        )
        out["scaling"] = {"rows": result.rows, "exponents": result.exponents}
    else:
        out["notes"].append(f"{record.name}: the model has no n_layers hyperparameter; no depth scaling")
    return out


def comparison_figures(
    records: Sequence[RunRecord],
    measured: Mapping[str, Mapping[str, Any]],
    test_images: np.ndarray | None,
    out_dir: Path,
) -> dict[str, str]:
    """Write the figures of the comparison into ``out_dir``: name -> file name."""
    figures = {
        "learning_curves": learning_curves_figure(records, out_dir / "learning_curves.png").name,
        "receptive_fields": analysis.receptive_field_figure(
            {n: m["field"] for n, m in measured.items()}, out_dir / "receptive_fields.png").name,
    }
    checkpoints = {r.name: r.checkpoint.name for r in records}
    panels = {n: {"fresh (start)": m["gradient_flow"]["start"], f"{checkpoints[n]} (end)": m["gradient_flow"]["end"]}
              for n, m in measured.items() if "gradient_flow" in m}
    if panels:
        figures["gradient_flow"] = analysis.gradient_flow_figure(panels, out_dir / "gradient_flow.png").name
    results = {n: analysis.ScalingResult(m["scaling"]["rows"], m["scaling"]["exponents"], analysis.MEMORY_NOTE)
               for n, m in measured.items() if "scaling" in m}
    if results:
        figures["scaling"] = analysis.scaling_figure(results, out_dir / "scaling.png").name
    grids = {n: m["samples"] for n, m in measured.items() if "samples" in m}
    if grids:
        shown = {n: to_display(torch.from_numpy(np.asarray(g)), measured[n].get("n_levels", 256)).numpy()
                 for n, g in grids.items()}
        figures["samples"] = sample_grid_figure(shown, out_dir / "samples.png").name
        comparable = {n: g for n, g in grids.items() if test_images is not None and g.shape[1:] == test_images.shape[1:]}
        if comparable:
            figures["histograms"] = analysis.histogram_figure(comparable, test_images, out_dir / "histograms.png").name
    return figures


def default_compare_dir(run_dirs: Sequence[str | os.PathLike]) -> Path:
    """``compare/`` next to the first run: inside a multi-run recipe's output folder."""
    return Path(run_dirs[0]).resolve().parent / "compare"


def compare(
    run_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike | None = None,
    options: CompareOptions | None = None,
    report: Report | None = None,
) -> dict[str, Any]:
    """Compare trained runs: write report.md, report.html, comparison.json and figures.

    Args:
        run_dirs: run folders written by ``pixelgen run``.
        out: output folder; default :func:`default_compare_dir`.
        options: how much to measure (:class:`CompareOptions`).
        report: called with one line per step (progress), e.g. ``print``.

    Returns:
        the content of comparison.json: ``out``, ``dataset``, ``runs`` (one dict of table
        numbers per run, in order), ``differing_settings``, ``figures`` (name -> file in
        ``out``), ``sample_statistics``, ``gradient_flow``, ``scaling``, ``notes``.
    """
    if not run_dirs:
        raise ReportError("compare: pass at least one run folder")
    options = options or CompareOptions()
    say = report or _silent
    out_dir = Path(out) if out is not None else default_compare_dir(run_dirs)
    out_dir.mkdir(parents=True, exist_ok=True)
    records = _unique_names([read_run(d) for d in run_dirs])
    datasets = sorted({r.run.data.name for r in records})
    splits = sorted({r.run.eval.split for r in records})

    timing = {"device": options.device, "torch_threads": torch.get_num_threads(),
              "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    data_cache: dict[str, Any] = {}  # per data section: the splits, or None when missing
    images_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per data section: (train, test)
    measured = {}
    for record in records:
        say(f"compare: measuring {record.name} ({record.model_config['name']}, {record.checkpoint})")
        key = repr(record.run.data)
        if key not in data_cache:
            data_cache[key] = _load_data(record, say)
            if data_cache[key] is not None:
                images_cache[key] = (
                    _stack_images(data_cache[key]["train"], options.max_train_images)[0],
                    _stack_images(data_cache[key]["test"], options.max_held_out_images)[0],
                )
        measured[record.name] = measure_run(record, data_cache[key], images_cache.get(key), options)

    say(f"compare: writing figures and the report to {out_dir}")
    test_images = [test for _, test in images_cache.values()]
    figures = comparison_figures(records, measured, test_images[0] if test_images else None, out_dir)
    flows = {n: m["gradient_flow"] for n, m in measured.items() if "gradient_flow" in m}
    comparison = {
        "out": str(out_dir),
        "dataset": datasets[0] if len(datasets) == 1 else datasets,
        "eval_split": splits[0] if len(splits) == 1 else splits,
        "runs": [m["row"] for m in measured.values()],
        "differing_settings": differing_settings(records) if len(records) > 1 else {},
        "figures": figures,
        "sample_statistics": {n: m["sample_statistics"] for n, m in measured.items() if "sample_statistics" in m},
        "gradient_flow": {n: {k: [list(p) for p in v] for k, v in f.items()} for n, f in flows.items()},
        "scaling": {n: m["scaling"] for n, m in measured.items() if "scaling" in m},
        "memory_note": analysis.MEMORY_NOTE,
        "timing": timing,
        "notes": [note for m in measured.values() for note in m["notes"]],
    }
    _write_json(out_dir / "comparison.json", comparison)
    title = "pixelgen comparison: " + ", ".join(r.name for r in records)
    _write_report(out_dir, comparison_document(comparison), title)
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
    """

    if run_out is not None:
        recipe = attrs.evolve(recipe, output=attrs.evolve(recipe.output, dir=str(run_out)))
    return compare([run_dir(recipe, run) for run in recipe.runs], out, options, report)


def comparison_document(c: Mapping[str, Any]) -> list[Block]:
    """The blocks of report.md / report.html for the content of comparison.json."""
    runs = c["runs"]
    names = [r["run"] for r in runs]
    shape = runs[0]["image_shape"]
    split = c["eval_split"] if isinstance(c["eval_split"], str) else "eval"
    blocks = [
        Block("h1", "Comparison: " + ", ".join(names)),
        Block("p", f"Data set: {c['dataset']}; images {shape[0]}x{shape[1]}x{shape[2]} (C x H x W). "
                   "Run folders: " + ", ".join(f"{r['run']} = {r['run_dir']}" for r in runs) + "."),
    ]
    if c["differing_settings"]:
        blocks += [
            Block("h2", "Settings that differ between runs"),
            Block("table", header=("setting", *names),
                  rows=tuple((k, *(json.dumps(v) for v in vs)) for k, vs in c["differing_settings"].items())),
        ]
    blocks.append(Block("h2", "Results"))
    table_rows = []
    for key, label, fmt in TABLE_ROWS:
        if key == "paper_bits_per_dim" and all(r[key] is None for r in runs):
            continue  # the paper's numbers are for CIFAR-10 only
        label = label.format(split=split, size=f"{shape[1]}x{shape[2]}")
        table_rows.append((label, *(_format(r.get(key), fmt) for r in runs)))
    blocks.append(Block("table", header=("", *names), rows=tuple(table_rows)))
    rows_timed = {r["reference_rows_timed"] for r in runs}
    blocks.append(Block("p", (
        "[1] The training loop's peak_memory_mb, the largest over the epochs: "
        "torch.cuda.max_memory_allocated on CUDA; on the CPU the process's peak resident set "
        "size in the epoch (Linux VmHWM, reset at the start of every epoch), which includes the "
        "process's own baseline (Python, PyTorch, the data set in memory). [2] Extrapolated: the reference sampler (one full forward pass "
        f"per sub-pixel) generated only the last {'/'.join(map(str, sorted(rows_timed)))} row(s) "
        "of each image and its time was scaled to the whole image; the fast sampler was timed "
        "on whole images; both are medians of a few timings. Sequential steps: steps one layer takes one after another "
        "(1 for PixelCNN, H for the Row LSTM, W + H - 1 for the Diagonal BiLSTM).")))
    t = c["timing"]
    load = t["load_average_1min"]
    blocks.append(Block("p", (
        f"Sampling and scaling were timed on {t['device']} with {t['torch_threads']} torch threads"
        + (f", at a load average of {load:.1f} when measuring began" if load is not None else "")
        + "; timings on a machine shared with other work vary from run to run (training "
        "times are the training loop's own, measured while it ran).")))
    blocks += [Block("h2", "Learning curves"), Block("figure", c["figures"]["learning_curves"], ("learning curves",))]
    if "samples" in c["figures"]:
        blocks += [Block("h2", "Samples"), Block("figure", c["figures"]["samples"], ("samples",))]
    if "histograms" in c["figures"]:
        blocks += [Block("p", "Sub-pixel values of the samples against the test images (log scale)."),
                   Block("figure", c["figures"]["histograms"], ("histograms",))]
    if c["sample_statistics"]:
        blocks += [Block("h2", "Sample statistics"), _statistics_table(c["sample_statistics"])]
        blocks.append(Block("p", (
            "Distances are L2 over all sub-pixels scaled to [0, 1]. A sample much closer to its "
            "nearest training image than the test images are to theirs suggests memorisation. "
            "Flags: constant rows (over half the rows one value), repeated rows (over half the "
            "rows equal to the row above), saturated (over half the sub-pixels 0 or 255), "
            "duplicate (equal to another sample); the data column is the same share among "
            "training images.")))
    blocks += [
        Block("h2", "Receptive fields"),
        Block("p", "Input pixels the centre output pixel depends on, measured by the Jacobian at "
                   "perturbed weights (the architecture's field; compare figure 4 of the paper). "
                   + _receptive_field_prose([row["model"] for row in c["runs"]])),
        Block("figure", c["figures"]["receptive_fields"], ("receptive fields",)),
    ]
    if "gradient_flow" in c["figures"]:
        blocks += [
            Block("h2", "Gradient flow"),
            Block("p", "Norm of the gradient of the loss (bits/dim, one batch of training images) "
                       "with respect to each residual layer's weights, from the input convolution "
                       "to the output head: at initialisation (a fresh model with the run's "
                       "hyperparameters and seed) and at the best checkpoint."),
            Block("figure", c["figures"]["gradient_flow"], ("gradient flow",)),
        ]
    if c["scaling"]:
        blocks += [
            Block("h2", "Scaling"),
            Block("table", header=("run", "time vs size", "memory vs size", "time vs depth", "memory vs depth"),
                  rows=tuple((n, *(_format(s["exponents"].get(k), "{:.2f}") for k in (
                      "seconds_vs_size", "saved_bytes_vs_size", "seconds_vs_depth", "saved_bytes_vs_depth")))
                      for n, s in c["scaling"].items())),
            Block("p", "Fitted exponents k of y ~ x^k (log-log least squares) for one forward + "
                       "backward pass on random images. " + c["memory_note"]),
            Block("figure", c["figures"]["scaling"], ("scaling",)),
        ]
    for note in c["notes"]:
        blocks.append(Block("p", note))
    return blocks


def _statistics_table(stats: Mapping[str, Mapping[str, Any]]) -> Block:
    names = list(stats)
    first = stats[names[0]]

    def per_run(fn: Callable[[Mapping[str, Any]], str]) -> tuple[str, ...]:
        return tuple(fn(stats[n]) for n in names)

    rows = [
        ("samples (archive batch)", *per_run(lambda s: f"{s['n_samples']} ({s['batch']})")),
        ("mean per channel: samples", *per_run(lambda s: _format(s["sample_mean"], "{:.1f}"))),
        ("mean per channel: data", *per_run(lambda s: _format(s["data_mean"], "{:.1f}"))),
        ("std per channel: samples", *per_run(lambda s: _format(s["sample_std"], "{:.1f}"))),
        ("std per channel: data", *per_run(lambda s: _format(s["data_std"], "{:.1f}"))),
        ("diversity (mean pairwise L2): samples", *per_run(lambda s: _format(s["sample_diversity"], "{:.3f}"))),
        ("diversity (mean pairwise L2): data", *per_run(lambda s: _format(s["data_diversity"], "{:.3f}"))),
        ("nearest training image, mean: samples", *per_run(lambda s: _format(s["nearest_train_distance_mean"], "{:.3f}"))),
        ("nearest training image, min: samples", *per_run(lambda s: _format(s["nearest_train_distance_min"], "{:.3f}"))),
        ("nearest training image, mean: test images",
         *per_run(lambda s: _format(s.get("held_out_nearest_train_distance_mean"), "{:.3f}"))),
    ]
    for flag in first["artifacts"]:
        rows.append((f"{flag.replace('_', ' ')}: samples / data",
                     *per_run(lambda s, f=flag: f"{s['artifacts'][f]:.2f} / {s['data_artifacts'][f]:.2f}")))
    return Block("table", header=("", *names), rows=tuple(rows))


# ------------------------------------------------------------------ analyse one model


def analyse(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike | None = None,
    options: CompareOptions | None = None,
    report: Report | None = None,
) -> dict[str, Any]:
    """One model's receptive field, gradient flow and scaling, with a short analysis.md.

    Args:
        checkpoint: a ``.ckpt`` written by ``pixelgen run``.
        out: output folder; default ``analysis/`` beside the checkpoint.

    Returns:
        the content of analysis.json (figures, sequential steps, gradient flow, scaling).
    """

    options = options or CompareOptions()
    say = report or _silent
    path = Path(checkpoint)
    state = ckpt_io.load_checkpoint(path)
    run = recipe_from_dict(state["recipe"]).runs[0]
    out_dir = Path(out) if out is not None else path.resolve().parent / "analysis"
    out_dir.mkdir(parents=True, exist_ok=True)
    device = options.device
    model = ckpt_io.model_from_checkpoint(state).to(device).eval()
    name, hyper = state["model"]["name"], dict(state["model"]["hyperparameters"])
    conditional = getattr(model, "n_classes", 0) > 0
    record = RunRecord(name=run.name, run_dir=path.parent, run=run, recipe=state["recipe"], model_config=state["model"],
                       checkpoint=path, state=state, metrics={}, test={}, samples=[], archive_path=path)

    data = _load_data(record, say)
    c = model.in_channels
    h, w = tuple(data["train"].shape[1:]) if data is not None else (options.field_size, options.field_size)
    notes = []
    say(f"analyse: receptive field of {name}")
    canvas = (min(options.field_size, h), min(options.field_size, w))
    label = torch.zeros(1, dtype=torch.long) if conditional else None
    field = analysis.receptive_field_map(model.cpu(), c, *canvas, labels=label)
    model.to(device)
    figures = {"receptive_field": analysis.receptive_field_figure({name: field}, out_dir / "receptive_field.png").name}

    say("analyse: gradient flow")
    if data is not None:
        batch, labels = _stack_images(data["train"], options.gradient_batch)
    else:
        generator = torch.Generator().manual_seed(0)
        batch = torch.randint(0, hyper.get("n_levels", 256), (options.gradient_batch, c, h, w),
                              generator=generator, dtype=torch.uint8).numpy()
        labels = torch.zeros(options.gradient_batch, dtype=torch.long)
        notes.append("The run's data was not found: gradient flow on random images.")
    batch_t = torch.from_numpy(batch).to(device)
    labels_t = labels.to(device) if conditional else None
    flow = {
        "fresh (start)": analysis.gradient_flow(_fresh_model(record, device), batch_t, labels_t),
        f"{path.name} (end)": analysis.gradient_flow(model, batch_t, labels_t),
    }
    figures["gradient_flow"] = analysis.gradient_flow_figure({name: flow}, out_dir / "gradient_flow.png").name

    scaling = None
    if "n_layers" in hyper:
        say("analyse: scaling")
        result = analysis.scaling(functools.partial(_with_depth, name, hyper), options.scaling_sizes, options.scaling_depths,
                                  batch=options.scaling_batch, channels=c, device=device,
                                  repeats=options.scaling_repeats)
        scaling = {"rows": result.rows, "exponents": result.exponents}
        figures["scaling"] = analysis.scaling_figure({name: result}, out_dir / "scaling.png").name

    summary = {
        "out": str(out_dir), "checkpoint": str(path), "model": name, "hyperparameters": hyper, "epoch": state["epoch"],
        "parameters": sum(p.numel() for p in model.parameters()),
        "sequential_steps": analysis.sequential_steps(model, h, w), "image_shape": [c, h, w],
        "receptive_field_seen": int(field.sum()), "figures": figures,
        "gradient_flow": {k: [list(p) for p in v] for k, v in flow.items()},
        "scaling": scaling, "memory_note": analysis.MEMORY_NOTE, "notes": notes,
    }
    _write_json(out_dir / "analysis.json", summary)
    blocks = [
        Block("h1", f"Analysis of {name} ({path})"),
        Block("p", f"Epoch {state['epoch']}, {summary['parameters']:,} parameters; hyperparameters: "
                   + ", ".join(f"{k}={v!r}" for k, v in hyper.items()) + "."),
        Block("p", f"Sequential steps per layer on {h}x{w} images: {summary['sequential_steps']}."),
        Block("h2", "Receptive field"),
        Block("p", f"The centre pixel of a {canvas[0]}x{canvas[1]} canvas sees {summary['receptive_field_seen']} "
                   "pixels (any colour), measured by the Jacobian at perturbed weights."),
        Block("figure", figures["receptive_field"], ("receptive field",)),
        Block("h2", "Gradient flow"),
        Block("table", header=("layer", *flow), rows=tuple(
            (layer, *(f"{dict(f)[layer]:.3g}" for f in flow.values())) for layer, _ in next(iter(flow.values())))),
        Block("figure", figures["gradient_flow"], ("gradient flow",)),
    ]
    if scaling is not None:
        blocks += [
            Block("h2", "Scaling"),
            Block("table", header=("size", "depth", "seconds", "saved bytes"),
                  rows=tuple((str(r["size"]), str(r["depth"]), f"{r['seconds']:.4f}", f"{r['saved_bytes']:,}")
                             for r in scaling["rows"])),
            Block("p", "Fitted exponents: " + ", ".join(f"{k} {v:.2f}" for k, v in scaling["exponents"].items())
                       + ". " + analysis.MEMORY_NOTE),
            Block("figure", figures["scaling"], ("scaling",)),
        ]
    blocks += [Block("p", n) for n in notes]
    (out_dir / "analysis.md").write_text(to_markdown(blocks), encoding="utf-8")
    return summary

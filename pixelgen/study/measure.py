"""Measuring trained runs (read by :mod:`pixelgen.study.records`): what
:mod:`pixelgen.study.report` puts in its tables and figures.

::

    measure_run(record, ...)      everything measured on one run, as a RunMeasurement
    measure_runs(records, ...)    measure_run for each run, each data set loaded once

Numbers of the training itself are read from the run archive as stored
(:class:`TrainingFigures`); the measurements (receptive field, gradient flow, scaling,
sampling speed, sample statistics) come from :mod:`pixelgen.study.analysis` on the checkpoint.
Each result is a frozen record with ``None`` where a measurement was not made; the
records' ``to_json()`` methods (and :func:`scaling_json`) give the plain dicts that
``comparison.json`` and ``analysis.json`` hold.
"""

from __future__ import annotations

import functools
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pixelgen.errors import PixelgenError, Report, progress_bar_enabled, silent
from pixelgen.nn.blocks import n_levels_of
from pixelgen.registry import create_model
from pixelgen.sampling import reference_seconds_per_subpixel, sample, sampler_used
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.files import RunLock
from pixelgen.study import analysis
from pixelgen.study.options import CompareOptions
from pixelgen.study.records import (
    RunRecord,
    image_shape,
    load_run_data,
    run_paper_figure,
    stack_images,
)


# ------------------------------------------------------------------ the records


def _nan_to_none(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@attrs.frozen(kw_only=True)
class TrainingFigures:
    """The table numbers a run's archive gives, exactly as stored (no rounding)."""

    test_nll_nats: float | None
    test_bits_per_dim: float | None
    test_bits_per_dim_per_channel: list[float] | None
    best_val_bits_per_dim: float | None
    best_val_epoch: int | None
    final_train_bits_per_dim: float | None
    epochs: int
    epoch_time_s: float | None
    train_time_s: float | None
    images_per_s: float | None
    peak_memory_mb: float | None

    @classmethod
    def from_archive(cls, metrics: Mapping[str, np.ndarray], test: Mapping[str, Any]) -> TrainingFigures:
        """See :func:`training_figures`."""
        def column(name: str) -> np.ndarray:
            return np.asarray(metrics.get(name, np.full(len(metrics.get("epoch", [])), np.nan)), dtype=float)

        epochs = np.asarray(metrics.get("epoch", []))
        val, times, memory = column("val_bits_per_dim"), column("epoch_time_s"), column("peak_memory_mb")
        has_val = bool(np.isfinite(val).any())
        best = int(np.nanargmin(val)) if has_val else None
        return cls(
            test_nll_nats=test.get("nll_nats"),
            test_bits_per_dim=test.get("bits_per_dim"),
            test_bits_per_dim_per_channel=test.get("bits_per_dim_per_channel"),
            best_val_bits_per_dim=float(val[best]) if has_val else None,
            best_val_epoch=int(epochs[best]) if has_val else None,
            final_train_bits_per_dim=_nan_to_none(column("train_bits_per_dim")[-1]) if len(epochs) else None,
            epochs=int(epochs[-1]) if len(epochs) else 0,
            epoch_time_s=_nan_to_none(float(np.nanmean(times))) if np.isfinite(times).any() else None,
            train_time_s=float(np.nansum(times)) if len(times) else None,
            images_per_s=_nan_to_none(float(np.nanmean(column("images_per_s")))) if len(epochs) else None,
            peak_memory_mb=_nan_to_none(float(np.nanmax(memory))) if np.isfinite(memory).any() else None,
        )


def training_figures(metrics: Mapping[str, np.ndarray], test: Mapping[str, Any]) -> dict[str, Any]:
    """The table numbers a run's archive gives, exactly as stored (no rounding), as a dict.

    Args:
        metrics: :meth:`~pixelgen.store.archive.RunArchive.metrics` (columns ``epoch``, ``train_bits_per_dim``,
            ``val_bits_per_dim``, ``epoch_time_s``, ``images_per_s``, ``peak_memory_mb``).
        test: :meth:`~pixelgen.store.archive.RunArchive.test_metrics` (``nll_nats``, ``bits_per_dim``,
            ``bits_per_dim_per_channel``).
    """
    return attrs.asdict(TrainingFigures.from_archive(metrics, test))


@attrs.frozen(kw_only=True)
class SamplingTimes:
    """Seconds per image of the two samplers (:func:`sampling_seconds`)."""

    fast_sampling_s_per_image: float | None  # None: the model has no fast sampler
    reference_sampling_s_per_image: float
    reference_subpixels_timed: int | None  # extrapolated from this many sub-pixels; None: timed on whole images


@attrs.frozen(kw_only=True)
class TableRow:
    """One run's column of the results table: ``to_json()`` is its ``comparison.json`` row."""

    run: str
    run_dir: str
    checkpoint: str
    model: str
    parameters: int
    training: TrainingFigures | None  # None: no archive was read
    paper_bits_per_dim: float | None
    paper_source: str  # where paper_bits_per_dim is published ("" without one)
    image_shape: list[int]
    sequential_steps: int
    sampling: SamplingTimes | None  # None: the samplers were not timed
    scores: dict[str, dict[str, Any]] = attrs.field(factory=dict)  # feature space -> sample-quality figures

    def to_json(self) -> dict[str, Any]:
        def section(record: Any, cls: type) -> dict[str, Any]:
            return attrs.asdict(record) if record is not None else dict.fromkeys(attrs.fields_dict(cls))

        return {
            "run": self.run, "run_dir": self.run_dir, "checkpoint": self.checkpoint, "model": self.model,
            "parameters": self.parameters, **section(self.training, TrainingFigures),
            "paper_bits_per_dim": self.paper_bits_per_dim, "paper_source": self.paper_source,
            "image_shape": self.image_shape,
            "sequential_steps": self.sequential_steps, **section(self.sampling, SamplingTimes),
            **({"scores": self.scores} if self.scores else {}),  # only for a scored run: older rows stay as they were
        }


@attrs.frozen(kw_only=True)
class GradientFlow:
    """Gradient norm per layer (:func:`pixelgen.study.analysis.gradient_flow`): ``[(layer, norm)]``."""

    start: list[tuple[str, float]]  # a fresh model with the run's hyperparameters and seed
    end: list[tuple[str, float]]  # the checkpoint
    random_images: bool  # measured on random images: the run's data was not found

    def panels(self, checkpoint_name: str) -> dict[str, list[tuple[str, float]]]:
        """The two flows under the names the figures and ``analysis.json`` give them."""
        return {"fresh (start)": self.start, f"{checkpoint_name} (end)": self.end}

    def to_json(self) -> dict[str, list[list[Any]]]:
        return {"start": [list(p) for p in self.start], "end": [list(p) for p in self.end]}


@attrs.frozen(kw_only=True)
class SampleStatistics:
    """:func:`pixelgen.study.analysis.sample_statistics` of one archived sample batch."""

    batch: str  # the archive's sample batch key
    sampler: str | None
    temperature: float | None
    figures: dict[str, Any]  # analysis.sample_statistics(samples, train, test)

    def to_json(self) -> dict[str, Any]:
        return {"batch": self.batch, "sampler": self.sampler, "temperature": self.temperature, **self.figures}


def scaling_json(result: analysis.ScalingResult) -> dict[str, Any]:
    """What ``comparison.json`` and ``analysis.json`` keep of a scaling measurement."""
    return {"rows": result.rows, "exponents": result.exponents}


@attrs.frozen(kw_only=True)
class RunMeasurement:
    """Everything measured on one run; ``None`` where a measurement was not made."""

    row: TableRow
    field: torch.Tensor  # receptive field of the centre pixel, bool (H, W) on the canvas
    gradient_flow: GradientFlow | None  # None: no data to measure it on
    scaling: analysis.ScalingResult | None  # None: not asked for (options.scaling), or the model has no n_layers
    samples: np.ndarray | None  # the archive's last sample batch, uint8 (N, C, H, W)
    sample_statistics: SampleStatistics | None  # None: no samples, or no data to compare with


# ------------------------------------------------------------------ measuring


def sampling_seconds(
    model: nn.Module,
    shape: tuple[int, int, int],
    *,
    n_images: int = 2,
    reference_subpixels: int = 8,
    time_reference: bool = False,
    repeats: int = 3,
    steady_seconds: float = 0.25,
    labels: torch.Tensor | None = None,
) -> SamplingTimes:
    """Seconds per image of the fast and the reference sampler (:func:`pixelgen.sample`).

    The fast sampler generates ``n_images`` whole images after an untimed warm-up: the
    median of up to ``repeats`` timings, stopping once they add up to ``steady_seconds``
    (the idea of ``timeit.Timer.autorange``: a timing that long is steady; only short
    ones are repeated). The reference sampler recomputes the whole forward
    pass for every sub-pixel, so each of its ``C * H * W`` sub-pixels costs the same (the
    pass does not depend on what the image holds): it is timed on the last
    ``reference_subpixels`` sub-pixels only
    (:func:`pixelgen.sampling.reference_seconds_per_subpixel`) and that time is multiplied
    by ``C * H * W``; ``reference_subpixels_timed`` says so. With ``time_reference`` it
    generates whole images instead, timed once (a whole image is long enough to time
    steadily), and ``reference_subpixels_timed`` is None. A model without a cached
    sampling state has no fast sampler: its ``fast_sampling_s_per_image`` is None.
    """
    channels, height, width = shape
    device = next(model.parameters()).device

    def seconds(**kwargs: Any) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        sample(model, n_images, seed=0, labels=labels, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - start

    fast = None
    if sampler_used(model, "fast") == "fast":
        seconds(height=1, width=width, sampler="fast")  # warm-up, untimed, on one-row images
        timings: list[float] = []
        while not timings or (len(timings) < repeats and sum(timings) < steady_seconds):
            timings.append(seconds(height=height, width=width, sampler="fast"))
        fast = statistics.median(timings) / n_images
    if time_reference:
        seconds(height=1, width=width, sampler="reference")
        return SamplingTimes(fast_sampling_s_per_image=fast, reference_subpixels_timed=None,
                             reference_sampling_s_per_image=seconds(height=height, width=width, sampler="reference") / n_images)
    per_subpixel = reference_seconds_per_subpixel(model, n_images, height, width, n_subpixels=reference_subpixels,
                                                  labels=labels)
    timed = min(height * width, max(1, math.ceil(reference_subpixels / channels))) * channels  # whole pixels
    return SamplingTimes(fast_sampling_s_per_image=fast, reference_subpixels_timed=timed,
                         reference_sampling_s_per_image=per_subpixel * channels * height * width / n_images)


def _conditional(model: nn.Module) -> bool:
    return getattr(model, "n_classes", 0) > 0


def _fresh_model(record: RunRecord, device: str) -> nn.Module:
    """A newly initialised model with the run's hyperparameters and seed."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(record.run.train.seed)
        model = create_model(record.model_config["name"], **record.model_config["hyperparameters"])
    return model.to(device)


def _with_depth(name: str, hyperparameters: Mapping[str, Any], depth: int) -> nn.Module:
    """The registered model ``name`` with ``hyperparameters`` but ``depth`` layers."""
    return create_model(name, **{**hyperparameters, "n_layers": depth})


def _table_row(
    record: RunRecord, model: nn.Module, shape: tuple[int, int, int], options: CompareOptions, time_samplers: bool,
    report: Report = silent,
) -> TableRow:
    sampling = _sampling_times(record, model, shape, options, report) if time_samplers else None
    archive = record.archive
    paper_bits_per_dim, paper_source = run_paper_figure(record)
    return TableRow(
        run=record.name, run_dir=str(record.run_dir), checkpoint=str(record.checkpoint),
        model=record.model_config["name"], parameters=sum(p.numel() for p in model.parameters()),
        training=TrainingFigures.from_archive(archive.metrics, archive.test) if archive is not None else None,
        paper_bits_per_dim=paper_bits_per_dim, paper_source=paper_source,
        image_shape=list(shape), sequential_steps=analysis.sequential_steps(model, *shape[1:]), sampling=sampling,
        scores=archive.scores if archive is not None else {},
    )


def _receptive_field(model: nn.Module, shape: tuple[int, int, int], options: CompareOptions) -> torch.Tensor:
    c, h, w = shape
    canvas = (min(options.field_size, h), min(options.field_size, w))
    label = torch.zeros(1, dtype=torch.long) if _conditional(model) else None
    field = analysis.receptive_field_map(model.cpu(), c, *canvas, labels=label)  # the Jacobian runs on the CPU
    model.to(options.device)
    return field


def _gradient_flow(
    record: RunRecord, model: nn.Module, data: Mapping[str, Any] | None, shape: tuple[int, int, int],
    options: CompareOptions, random_images_without_data: bool,
) -> GradientFlow | None:
    if data is not None:
        batch, labels = stack_images(data["train"], options.gradient_batch)
    elif random_images_without_data:
        generator = torch.Generator().manual_seed(0)
        levels = n_levels_of(model)  # random images in the model's own value range
        batch = torch.randint(0, levels, (options.gradient_batch, *shape), generator=generator, dtype=torch.uint8).numpy()
        labels = torch.zeros(options.gradient_batch, dtype=torch.long)
    else:
        return None
    device = options.device
    batch_t = torch.from_numpy(batch).to(device)
    labels_t = labels.to(device) if _conditional(model) else None
    return GradientFlow(start=analysis.gradient_flow(_fresh_model(record, device), batch_t, labels_t),
                        end=analysis.gradient_flow(model, batch_t, labels_t), random_images=data is None)


def _samples(
    record: RunRecord, images: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray | None, SampleStatistics | None]:
    """The archive's last sample batch and, with the data's images, its statistics."""
    if record.archive is None or not record.archive.samples:
        return None, None
    key, settings = record.archive.samples[-1]
    samples = record.archive.last_samples
    if images is None:
        return samples, None
    return samples, SampleStatistics(batch=key, sampler=settings.get("sampler"), temperature=settings.get("temperature"),
                                     figures=analysis.sample_statistics(samples, *images))


def _scaling(record: RunRecord, channels: int, options: CompareOptions) -> analysis.ScalingResult | None:
    name, hyper = record.model_config["name"], dict(record.model_config["hyperparameters"])
    if "n_layers" not in hyper:
        return None
    return analysis.scaling(
        functools.partial(_with_depth, name, hyper), options.scaling_sizes, options.scaling_depths,
        batch=options.scaling_batch, channels=channels, device=options.device, repeats=options.scaling_repeats,
    )


def checkpoint_identity(record: RunRecord) -> dict[str, Any]:
    """What tells a checkpoint file apart from any other one, for a cache key: its name,
    size, modification time, epoch and model (name and hyperparameters)."""
    stat = record.checkpoint.stat()
    return {"file": record.checkpoint.name, "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns,
            "epoch": record.state.get("epoch"), "model": record.model_config}


def scaling_cache_key(record: RunRecord, channels: int, options: CompareOptions) -> dict[str, Any]:
    """What a cached scaling sweep of ``record`` must have been measured on and with: the
    checkpoint (:func:`checkpoint_identity`) and the sweep's settings (sizes, depths, batch,
    repeats, channels, device, torch threads)."""
    return {
        "checkpoint": checkpoint_identity(record),
        "sizes": sorted(set(options.scaling_sizes)), "depths": sorted(set(options.scaling_depths)),
        "batch": options.scaling_batch, "repeats": options.scaling_repeats, "channels": channels,
        "device": options.device, "threads": torch.get_num_threads(),
    }


def _scaling_from_json(value: Mapping[str, Any], key: Mapping[str, Any]) -> analysis.ScalingResult:
    """The cached sweep; ValueError unless it holds every point the key's settings measure,
    with numbers where numbers belong."""
    sizes, depths = key["sizes"], key["depths"]
    points = [(s, depths[0]) for s in sizes] + [(sizes[0], d) for d in depths[1:]]
    rows = [dict(r) for r in value["rows"]]
    if [(r["size"], r["depth"]) for r in rows] != points:
        raise ValueError("not the points of these settings")
    for r in rows:
        if not all(isinstance(r[k], (int, float)) and r[k] >= 0 for k in ("seconds", "saved_bytes")):
            raise ValueError("a time or a size that is not a number")
        if r["peak_bytes"] is not None and not isinstance(r["peak_bytes"], int):
            raise ValueError("a peak that is not a number")
    exponents = {str(k): float("nan") if v is None else float(v) for k, v in value["exponents"].items()}
    return analysis.ScalingResult(rows=rows, exponents=exponents, memory=str(value["memory"]),
                                  threads=int(value["threads"]))


def _scaling_to_json(result: analysis.ScalingResult) -> dict[str, Any]:
    exponents = {k: None if math.isnan(v) else v for k, v in result.exponents.items()}  # JSON has no NaN
    return {"rows": result.rows, "exponents": exponents, "memory": result.memory, "threads": result.threads}


def sampling_cache_key(record: RunRecord, shape: tuple[int, int, int], options: CompareOptions) -> dict[str, Any]:
    """What cached sampler timings of ``record`` must have been measured on and with: the
    checkpoint (:func:`checkpoint_identity`) and the timing's settings."""
    return {
        "checkpoint": checkpoint_identity(record), "image_shape": list(shape), "images": options.timing_images,
        "repeats": options.timing_repeats, "steady_seconds": options.timing_steady_seconds,
        "reference_subpixels": options.reference_subpixels,
        "time_reference": options.time_reference, "device": options.device, "threads": torch.get_num_threads(),
    }


def _sampling_from_json(value: Mapping[str, Any], key: Mapping[str, Any]) -> SamplingTimes:
    times = SamplingTimes(**value)
    numbers = [times.reference_sampling_s_per_image] + [times.fast_sampling_s_per_image] * (
        times.fast_sampling_s_per_image is not None)
    if not all(isinstance(t, (int, float)) and t > 0 for t in numbers):
        raise ValueError("a time that is not a positive number")
    if (times.reference_subpixels_timed is None) != key["time_reference"]:
        raise ValueError("timed otherwise")
    return times


def cached(
    record: RunRecord, measurement: str, key: dict[str, Any], measure: Callable[[], Any],
    to_json: Callable[[Any], dict[str, Any]], from_json: Callable[[Mapping[str, Any], Mapping[str, Any]], Any],
    report: Report = silent,
) -> Any:
    """``measure()``, kept in a run folder's archive (``cache/<measurement>@<checkpoint file>``,
    :meth:`~pixelgen.store.archive.RunArchive.set_cached`) and read back by the next comparison
    that asks with the same ``key``; a missing, mismatched or damaged entry (``from_json``
    raises) is measured again. The archive is written under the run's lock; a run in use by
    another process, or a checkpoint compared without its run folder, is measured and nothing
    is kept."""
    if record.archive is None:
        return measure()
    name = f"{measurement}@{record.checkpoint.name}"
    try:
        value = RunArchive.open(record.archive.path).cached(name, key)
        if value is not None:
            result = from_json(value, key)
            report(f"  {record.name}: {measurement} read from {record.archive.path}/cache")
            return result
    except (PixelgenError, KeyError, TypeError, ValueError, IndexError, AttributeError):
        pass  # damaged: measured again, and the entry replaced
    result = measure()
    try:
        with RunLock(record.run_dir):
            RunArchive.open(record.archive.path, mode="r+").set_cached(name, key, to_json(result))
    except (PixelgenError, OSError) as exc:  # in use, read-only, damaged: the comparison goes on without a cache
        report(f"  {record.name}: {measurement} not cached ({exc})")
    return result


def cached_scaling(
    record: RunRecord, channels: int, options: CompareOptions, report: Report = silent
) -> analysis.ScalingResult | None:
    """``_scaling``, :func:`cached` in the run's archive as ``scaling@<checkpoint>``."""
    if "n_layers" not in record.model_config["hyperparameters"]:
        return None
    return cached(record, "scaling", scaling_cache_key(record, channels, options),
                  lambda: _scaling(record, channels, options), _scaling_to_json, _scaling_from_json, report)


def _sampling_times(
    record: RunRecord, model: nn.Module, shape: tuple[int, int, int], options: CompareOptions, report: Report
) -> SamplingTimes:
    """:func:`sampling_seconds` with ``options``, :func:`cached` in the run's archive as
    ``sampling@<checkpoint>``."""
    labels = torch.zeros(options.timing_images, dtype=torch.long, device=options.device) if _conditional(model) else None

    def measure() -> SamplingTimes:
        return sampling_seconds(model, shape, n_images=options.timing_images,
                                reference_subpixels=options.reference_subpixels,
                                time_reference=options.time_reference, repeats=options.timing_repeats,
                                steady_seconds=options.timing_steady_seconds, labels=labels)

    return cached(record, "sampling", sampling_cache_key(record, shape, options), measure, attrs.asdict,
                  _sampling_from_json, report)


class _Steps:
    """A bar on stderr over one run's measurements (where :func:`~pixelgen.errors.progress_bar_enabled`), naming
    the one under way: sampler timing, receptive field, gradient flow, scaling, statistics."""

    def __init__(self, run: str, n_steps: int) -> None:
        self.bar = tqdm(total=n_steps, desc=f"  {run}", unit="step", file=sys.stderr, leave=False,
                        disable=not progress_bar_enabled())

    def __call__(self, label: str, measure: Callable[..., Any], *args: Any) -> Any:
        self.bar.set_postfix_str(label)
        try:
            return measure(*args)
        finally:
            self.bar.update()


def measure_run(
    record: RunRecord,
    data: Mapping[str, Any] | None,
    images: tuple[np.ndarray, np.ndarray] | None,
    options: CompareOptions,
    *,
    time_samplers: bool = True,
    random_images_without_data: bool = False,
    report: Report = silent,
) -> RunMeasurement:
    """Everything measured on one run, by :func:`~pixelgen.study.report.compare` for each run and
    by :func:`~pixelgen.study.report.analyse` for one checkpoint.

    Args:
        record: the run (:func:`~pixelgen.study.records.read_run`, or
            :func:`~pixelgen.study.records.read_checkpoint`).
        data: its splits (:func:`~pixelgen.study.records.load_run_data`), or None when not found here.
        images: (training images, test images) of its data set, uint8 ``(N, C, H, W)``:
            the reference of the sample statistics; None to skip them.
        options: how much to measure.
        time_samplers: time the fast and the reference sampler for the table.
        random_images_without_data: without data, measure the gradient flow on random
            images rather than not at all.
        report: gets a line where the sampler timings or the scaling sweep are read from,
            or not kept in, the run's archive (:func:`cached`).
    """
    model = ckpt_io.model_from_checkpoint(record.state).to(options.device).eval()
    shape = image_shape(record, data, model, options)
    step = _Steps(record.name, 4 + options.scaling)
    try:
        row = step("sampler timing" if time_samplers else "table", _table_row, record, model, shape, options,
                   time_samplers, report)
        field = step("receptive field", _receptive_field, model, shape, options)
        flow = step("gradient flow", _gradient_flow, record, model, data, shape, options, random_images_without_data)
        scaling = step("scaling", cached_scaling, record, shape[0], options, report) if options.scaling else None
        samples, sample_stats = step("sample statistics", _samples, record, images)
    finally:
        step.bar.close()
    return RunMeasurement(row=row, field=field, gradient_flow=flow, scaling=scaling, samples=samples,
                          sample_statistics=sample_stats)


def measure_runs(
    records: Sequence[RunRecord], options: CompareOptions, report: Report = silent
) -> tuple[dict[str, RunMeasurement], np.ndarray | None]:
    """:func:`measure_run` for each run, loading each data set once (the measuring step of
    :func:`~pixelgen.study.report.compare`; ``report`` gets a line per run, and a bar on
    stderr counts the runs where :func:`~pixelgen.errors.progress_bar_enabled`).

    Returns:
        run name -> its measurement, and the test images of the first data set found
        here (the baseline of the samples' histograms; None when no data was found).
    """
    splits: dict[str, Any] = {}  # per data section: the splits, or None when missing
    images: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # per data section: (train, test)
    measured = {}
    for record in tqdm(records, desc="compare", unit="run", file=sys.stderr, disable=not progress_bar_enabled()):
        report(f"compare: measuring {record.name} ({record.model_config['name']}, {record.checkpoint})")
        key = repr(record.run.data)
        if key not in splits:
            splits[key] = load_run_data(record, report)
            if splits[key] is not None:
                images[key] = (stack_images(splits[key]["train"], options.max_train_images)[0],
                               stack_images(splits[key]["test"], options.max_held_out_images)[0])
        measured[record.name] = measure_run(record, splits[key], images.get(key), options, report=report)
    test_images = [test for _, test in images.values()]
    return measured, test_images[0] if test_images else None

"""What the command line does with a checkpoint: evaluate it, sample from it, score its
samples, quantize it; and :func:`load_model`, the model they use, for Python.

Each needs only the checkpoint file: the model, its hyperparameters and the run's recipe
are stored in it (:mod:`pixelgen.store.checkpoint`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from pixelgen.data import load_data, stack_split
from pixelgen.errors import CheckpointError, PixelgenError, RecipeError, Report, silent
from pixelgen.nn.blocks import n_levels_of
from pixelgen.recipe import SCORE_METRICS, RunSpec, SampleSection, recipe_from_dict
from pixelgen.sampling import SamplingError, channels_of, sample_batched, sampler_used
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.images import check_image_path, read_image, save_grid
from pixelgen.store.runs import (
    beside,
    check_output_file,
    final_checkpoint,
    fresh_path,
    quantized_path,
    writing_into,
)
from pixelgen.store import zoo
from pixelgen.store.zoo import in_zoo
from pixelgen.study.inference import (
    archived_score_batch,
    class_labels,
    draw_from_checkpoint,
)
from pixelgen.study.scoring import (
    ScoreError,
    Scoring,
    histogram_samples,
    official_splits,
    reference_images,
)
from pixelgen.training.evaluation import evaluate, set_threads
from pixelgen.training.plan import make_fabric

def load_model(source: str | os.PathLike, weights: str = "auto") -> torch.nn.Module:
    """The trained model of a run folder, a checkpoint or a zoo name, in eval mode, on the CPU.

    For example::

        model = pixelgen.load_model("runs/quickstart")              # best.ckpt, else last.ckpt
        model = pixelgen.load_model("runs/quickstart/last-int8.ckpt", weights="raw")

    Args:
        source: a run folder written by ``pixelgen run`` (its ``best.ckpt``, else
            ``last.ckpt``: the checkpoint ``pixelgen score`` judges it by), a checkpoint
            file (float or quantized, dequantized to float32) or ``zoo:NAME``
            (:func:`pixelgen.store.zoo.resolve`: its SHA-256 checked).
        weights: ``"ema"`` the run's average of its weights, ``"raw"`` the trained
            weights, ``"auto"`` the average where the run kept one: the weights
            ``pixelgen evaluate`` uses with the same ``--weights``.

    Raises:
        CheckpointError: one line, for a missing path, a folder without a checkpoint, a
            damaged or foreign file, weights the checkpoint does not hold, or an unknown
            ``weights``.
        ZooError: one line, for an unknown zoo name or a zoo file that is not the manifest's.
    """
    if isinstance(source, str) and source.startswith(zoo.PREFIX):
        path = zoo.resolve(source)
    else:
        path = Path(source)
        if not path.exists():
            raise CheckpointError(f"{path}: no such run folder or checkpoint file")
        path, _ = _checkpoint_of(path)
    return ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(path), weights).eval()


def evaluate_checkpoint(
    path: str | os.PathLike,
    split: str = "test",
    *,
    data_root: str | None = None,
    limit: int | None = None,
    accelerator: str = "auto",
    weights: str = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of the data set it was trained on.

    The model and the data settings come from the checkpoint alone; the validation split
    is cut again from the recorded seed and fraction. ``limit`` takes the first N images
    (default: the run's ``data.limit_<split>``; 0: the whole split). ``weights``: see
    :func:`pixelgen.store.checkpoint.model_from_checkpoint` (the average where the run kept one).
    """
    state = ckpt_io.load_checkpoint(path)
    model = ckpt_io.model_from_checkpoint(state, weights)
    run = stored_run(state, path)
    if limit is not None:
        key = {"train": "limit_train", "val": "limit_val", "test": "limit_test"}[split]
        run = attrs.evolve(run, data=attrs.evolve(run.data, **{key: limit or None}))
    set_threads(run.train.threads)
    data = load_data(run, root=data_root)
    fabric = make_fabric(attrs.evolve(run.train, accelerator=accelerator, strategy="auto",
                                      num_nodes=1), devices=1)
    fmodel = fabric.setup_module(model)
    figures = evaluate(fmodel, data[split], run.eval.batch_size, fabric)
    return {
        "checkpoint": str(path), "model": state["model"]["name"], "epoch": state["epoch"],
        "split": split, "weights": ckpt_io.weights_used(state, weights), **figures,
    }


def stored_run(state: dict[str, Any], path: str | os.PathLike) -> RunSpec:
    """The run a checkpoint's stored recipe describes."""
    try:
        return recipe_from_dict(state["recipe"]).runs[0]
    except RecipeError as exc:
        raise CheckpointError(f"{path}: its stored recipe no longer validates: {exc}") from None


def _image_size_of_run(state: dict[str, Any]) -> tuple[int, int]:
    """Height and width of the images the checkpoint's run trained on (reads its data)."""
    try:
        run = recipe_from_dict(state["recipe"]).runs[0]
        run = attrs.evolve(run, data=attrs.evolve(run.data, download=False))
        shape = load_data(run)["train"].shape  # (C, H, W)
    except (PixelgenError, OSError, KeyError) as exc:
        raise SamplingError(
            f"the image size is not recorded in the checkpoint and its data set cannot be read "
            f"({exc}); pass the size (--size HxW)"
        ) from None
    return shape[1], shape[2]


def sample_checkpoint(
    checkpoint: str | os.PathLike,
    settings: SampleSection,
    *,
    size: tuple[int, int] | None = None,
    label: int | None = None,
    complete: str | os.PathLike | None = None,
    rows: int | None = None,
    archive: str | os.PathLike | bool = True,
    png: str | os.PathLike | bool = True,
    device: str | None = None,
    progress: bool = False,
    weights: str = "auto",
    source: str | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """What ``pixelgen sample`` does: load a checkpoint, sample, archive, write a PNG grid.

    Args:
        checkpoint: a ``.ckpt`` written by ``pixelgen run`` (read with weights_only).
        settings: the ``[sample]`` settings of a recipe: ``n`` images, ``batch_size``,
            ``temperature``, ``top_p``, ``seed``, ``sampler`` (see :func:`~pixelgen.sampling.sample_batched`).
        size: ``(height, width)``; default: the completion image's, else the run's data.
        label: class of every image for a class-conditional model; default: the classes
            in turn (0, 1, 2, ...).
        complete, rows: keep the top ``rows`` rows of this image file in every sample.
        archive: ``True``: the run's archive next to the checkpoint (the recipe's
            ``output.archive``, ``archive.zarr``; none for a zoo model); a path; ``False``: none.
        png: ``True``: ``samples-<key>.png`` next to the checkpoint (in the current folder for
            a zoo model: :func:`~pixelgen.store.runs.beside`; ``samples-seed<seed>.png``
            without an archive; ``-2``, ``-3``, ... added to a name taken: it replaces no
            file); a path (never a run's own file, nor an existing file unless ``force``:
            :func:`~pixelgen.store.runs.check_output_file`); ``False``: none.
        device: ``"cpu"``, ``"cuda"``, ...; default: CUDA where available.
        progress: a progress bar on stderr.
        source: recorded with the archived batch (``"score"`` for :func:`score_checkpoint`'s).
        force: replace an existing ``png`` file.

    The archive's and the PNG's run folders are locked while the samples are drawn and
    written (:func:`~pixelgen.store.runs.writing_into`).

    Returns:
        ``{"images", "seed", "seconds_per_image", "archive", "key", "png", "sampler"}`` (paths or None).
    """
    checkpoint = Path(checkpoint)
    state = ckpt_io.load_checkpoint(checkpoint)
    set_threads(_recorded_threads(state))
    model = ckpt_io.model_from_checkpoint(state, weights).to(_device(device))
    if archive is True:  # refused before anything slow; a zoo model has no run archive (its folder is read-only)
        archive = False if in_zoo(checkpoint) else archive_of(checkpoint, state)
    if png not in (True, False):
        png = check_image_path(check_output_file(png, force=force, flag="--png", reading=checkpoint))
    prefix, height, width = _completion(complete, rows, size, settings.n, channels_of(model), n_levels_of(model))
    if prefix is None:
        height, width = size or _image_size_of_run(state)
    labels = class_labels(model, settings.n, label)
    result: dict[str, Any] = {"seed": settings.seed, "png": None, "sampler": sampler_used(model, settings.sampler)}
    result["archive"] = Path(archive) if archive is not False else None
    archive_folders = [result["archive"].parent] if result["archive"] is not None else []
    with writing_into(beside(checkpoint) / "samples.png" if png is True else png or None, folders=archive_folders):
        images, result["key"], result["seconds_per_image"] = _draw(
            model, result["archive"], checkpoint, state, settings, height, width, labels=labels, prefix=prefix,
            progress=progress, source=source)
        if png is not False:
            stem = f"samples-{result['key']}" if result["key"] is not None else f"samples-seed{settings.seed}"
            result["png"] = save_grid(images, fresh_path(beside(checkpoint), stem, ".png") if png is True else png,
                                      n_levels_of(model))
    result["images"] = images
    return result


def _draw(
    model: torch.nn.Module, archive: Path | None, checkpoint: Path, state: dict[str, Any], settings: SampleSection,
    height: int, width: int, **options: Any,
) -> tuple[torch.Tensor, str | None, float]:
    """The samples of :func:`sample_checkpoint`, appended to ``archive`` (whose run folder the
    caller holds locked) unless it is None; their key there, and the seconds per image."""
    start = time.perf_counter()
    if archive is not None:
        images, key = draw_from_checkpoint(model, archive, checkpoint, state, settings, height, width, **options)
    else:
        options.pop("source")
        images, key = sample_batched(model, settings.n, height, width, batch_size=settings.batch_size,
                                     temperature=settings.temperature, top_p=settings.top_p, seed=settings.seed,
                                     sampler=settings.sampler, **options), None
    return images, key, (time.perf_counter() - start) / settings.n


def _recorded_threads(state: dict[str, Any]) -> int | None:
    """``train.threads`` of the checkpoint's recipe; None where it is unset (or unreadable)."""
    recipe = state.get("recipe")
    train = recipe.get("train") if isinstance(recipe, dict) else None
    threads = train.get("threads") if isinstance(train, dict) else None
    return threads if isinstance(threads, int) and not isinstance(threads, bool) and threads > 0 else None


def _device(name: str | None) -> torch.device:
    """``name`` as a device this machine has (default: CUDA where available, else the CPU)."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SamplingError(f"--device {name!r}: not a device; use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SamplingError(f"--device {name!r}: this machine has no CUDA GPU; use --device cpu")
    if device.type not in ("cpu", "cuda"):
        raise SamplingError(f"--device {name!r}: pixelgen samples on cpu or cuda")
    return device


def archive_of(checkpoint: Path, state: dict[str, Any]) -> Path:
    """The run archive beside ``checkpoint``: the recipe's ``output.archive``, a plain
    name inside the checkpoint's folder (a path stored in a checkpoint is never trusted)."""
    recipe = state["recipe"]
    name = recipe.get("output", {}).get("archive", "archive.zarr") if isinstance(recipe, dict) else "archive.zarr"
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", ".."):
        raise CheckpointError(
            f"{checkpoint}: its recipe names the archive {name!r}, not a plain name in the run "
            f"folder; pass --archive PATH (or --no-archive)"
        )
    return checkpoint.parent / name


def _completion(
    complete: str | os.PathLike | None, rows: int | None, size: tuple[int, int] | None, n: int, channels: int,
    n_levels: int,
) -> tuple[torch.Tensor | None, int | None, int | None]:
    """The kept top rows ``(n, C, rows, W)`` of the image to complete (in the model's
    levels), and the sample size."""
    if (complete is None) != (rows is None):
        raise SamplingError("completion needs both the image and the number of rows to keep (--complete, --rows)")
    if complete is None:
        return None, None, None
    image = read_image(complete, channels, n_levels)  # (C, H, W)
    height, width = size or image.shape[1:]
    if image.shape[2] != width or not 0 < rows <= min(height, image.shape[1]):
        raise SamplingError(
            f"{complete}: a {image.shape[1]}x{image.shape[2]} image; the samples are "
            f"{height}x{width}: the widths must agree and rows be in 1..{min(height, image.shape[1])}"
        )
    return image[None, :, :rows].expand(n, -1, -1, -1), height, width  # (n, C, rows, W)


# --------------------------------------------------------------------------- scoring

BASELINES = ("test", "histogram")


def score_checkpoint(
    target: str | os.PathLike,
    metrics: tuple[str, ...] = SCORE_METRICS,
    *,
    n: int = 1000,
    features: str = "inception",
    inception_weights: str | os.PathLike | None = None,
    baseline: str | None = None,
    data_root: str | None = None,
    device: str | None = None,
    seed: int = 0,
    batch_size: int = 16,
    weights: str = "auto",
    progress: bool = False,
    report: Report = silent,
) -> dict[str, Any]:
    """What ``pixelgen score`` does: sample-quality metrics of a model's samples
    (:mod:`pixelgen.study.scoring`) against the first ``n`` training images of its data set.

    Args:
        target: a run folder (its best.ckpt, else last.ckpt: the scored samples and the
            figures go into the run's archive, and archived scored samples are used again)
            or a checkpoint file (samples drawn afresh, figures only returned).
        metrics: of "fid", "is", "kid", "pr".
        features: "inception" (weights from ``inception_weights``, else
            ``$PIXELGEN_INCEPTION_WEIGHTS``, else torch's hub cache) or "classifier".
        baseline: score data instead of the model: "test" (the first ``n`` test images:
            the floor) or "histogram" (the per-position histogram model: a ceiling).
        seed, batch_size, device, weights, progress: of the sampling (see :func:`sample_checkpoint`),
            which takes the temperature, top-p and sampler of the run's ``[sample]``.

    Returns:
        the figures of :func:`pixelgen.study.scoring.score_images` with ``checkpoint``, ``epoch``,
        ``source`` ("model" or the baseline), ``sample_batch`` and ``archive`` (None if not stored).
    """
    if baseline not in (None, *BASELINES):
        raise ScoreError(f"--baseline {baseline!r}: choose one of {', '.join(BASELINES)}")
    checkpoint, in_run_folder = _checkpoint_of(Path(target))
    state = ckpt_io.load_checkpoint(checkpoint)
    run = stored_run(state, checkpoint)
    data = attrs.evolve(run.data, root=data_root) if data_root is not None else run.data
    splits = official_splits(data)
    # the baseline's images before the feature space, which may train and store a classifier:
    # too few of them is an error that leaves no file behind
    baseline_images = _baseline_images(baseline, splits, n, seed) if baseline is not None else None
    scoring = Scoring.prepare(features, data, n, weights_path=inception_weights, report=report,
                              splits=splits)  # before sampling
    archive = archive_of(checkpoint, state) if in_run_folder and baseline is None else None
    if baseline_images is not None:
        samples, key = baseline_images, None
    else:
        settings = attrs.evolve(run.sample, n=n, seed=seed, batch_size=batch_size)
        samples, key = _scored_samples(checkpoint, state, archive, settings, device=device, weights=weights,
                                       progress=progress)
    figures = scoring.score(samples, metrics, _device(device).type)
    figures.update(checkpoint=str(checkpoint), epoch=state["epoch"], source=baseline or "model", sample_batch=key)
    if archive is not None:
        with writing_into(folders=[archive.parent]):
            RunArchive.create_or_open(archive).set_score(features, figures)
    return {**figures, "archive": str(archive) if archive is not None else None}


def _checkpoint_of(target: Path) -> tuple[Path, bool]:
    """The checkpoint a run folder is judged by (or ``target`` itself, not a folder) and
    whether it was named by its run folder."""
    if not target.is_dir():
        return target, False
    chosen = final_checkpoint(target)
    if chosen is None:
        raise CheckpointError(f"{target}: no best.ckpt or last.ckpt; pass a run folder written by pixelgen run "
                              f"or a checkpoint file")
    return chosen, True


def _baseline_images(baseline: str, splits: dict[str, Any], n: int, seed: int) -> torch.Tensor:
    """The floor (test images) or the ceiling (per-position histogram model samples)."""
    if baseline == "test":
        return reference_images(splits, n, "test")
    return histogram_samples(stack_split(splits["train"])[0], n, seed)


def _scored_samples(
    checkpoint: Path, state: dict[str, Any], archive: Path | None, settings: SampleSection, **options: Any
) -> tuple[torch.Tensor, str | None]:
    """``settings.n`` samples to score: an archived batch drawn for scoring before (by the
    run's ``[score]`` or an earlier ``pixelgen score``), else new ones (archived if ``archive``)."""
    if archive is not None and archive.exists() and options["weights"] == "auto":
        store = RunArchive.open(archive)
        key = archived_score_batch(store, checkpoint, state["epoch"], settings)
        if key is not None:
            return torch.from_numpy(store.read_samples(key)), key
    result = sample_checkpoint(checkpoint, settings, archive=archive or False, png=False, source="score", **options)
    return result["images"], result["key"]


# --------------------------------------------------------------------------- quantizing


def quantize_checkpoint(
    path: str | os.PathLike, to: str, out: str | os.PathLike | None = None, *, weights: str = "auto",
    force: bool = False,
) -> dict[str, Any]:
    """What ``pixelgen quantize`` does: write the checkpoint's model with its weights in
    format ``to`` (:data:`pixelgen.store.quantization.SCHEMES`) to ``out`` (default
    ``<stem>-<to>.ckpt`` beside it), then read the new file back as any command would.

    ``out`` is never a run's own file, nor an existing file unless ``force``
    (:func:`~pixelgen.store.runs.check_output_file`); a run folder it lies in is locked
    while it is written.

    Returns:
        ``{"checkpoint", "out", "to", "scheme", "weights", "bytes_before", "bytes_after"}``.
    """
    path = Path(path)
    state = ckpt_io.load_checkpoint(path)
    quantized = ckpt_io.quantized_checkpoint(state, to, weights)
    out = check_output_file(out if out is not None else quantized_path(path, to), force=force, reading=path)
    with writing_into(out):
        ckpt_io.save_checkpoint(out, quantized)
    ckpt_io.model_from_checkpoint(ckpt_io.load_checkpoint(out))  # loads like any other checkpoint
    record = quantized["quantization"]
    return {"checkpoint": str(path), "out": str(out), "to": to, "scheme": record["scheme"],
            "weights": record["weights"], "bytes_before": path.stat().st_size, "bytes_after": out.stat().st_size}

"""Measurements behind the paper's comparison: fields, gradients, cost and samples.

Pure functions: each takes models, tensors or arrays and returns numbers (or writes one
figure to the file it is given); none prints, reads a run directory or touches global
state. :mod:`pixelgen.study.report` assembles them into the comparison report.

* :func:`receptive_field_map` and :func:`receptive_field_figure`: which input pixels one
  output pixel depends on, measured by the Jacobian (Pixel RNN, figure 4: PixelCNN's
  blind spot, the Row LSTM's triangle, the Diagonal BiLSTM's full context).
* :func:`gradient_flow`: the gradient norm reaching each residual layer for one batch.
* :func:`scaling` and :func:`growth_exponent`: forward + backward time and memory against
  image size and depth, with the fitted power law.
* :func:`sequential_steps`: steps one layer takes one after another (the models'
  ``sequential_steps`` method).
* :func:`sample_statistics` and :func:`histogram_figure`: are the samples like the data,
  diverse, not copied from the training set, free of the usual artifacts?
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor, nn

from pixelgen.nn.blocks import likelihood_of, n_levels_of
from pixelgen.nn.metrics import bits_per_dim
from pixelgen.registry.causality import pixel_dependencies
from pixelgen.store.files import atomic_writer

# ------------------------------------------------------------------ receptive fields


def receptive_field_map(
    model: nn.Module,
    channels: int,
    height: int,
    width: int,
    pixel: tuple[int, int] | None = None,
    *,
    n_inputs: int = 2,
    labels: Tensor | None = None,
) -> Tensor:
    """Input pixels that output pixel ``pixel`` depends on, any colour to any colour.

    Measured by :func:`pixelgen.registry.causality.pixel_dependencies`: the gradients of that
    pixel's logits in float64 at perturbed weights (so it shows the architecture's field, not
    what training did), the centre pixel's part of
    :func:`~pixelgen.registry.causality.dependency_map` at the cost of ``C`` backward passes.

    Args:
        model: maps ``(B, C, H, W)`` images to logits ``(B, 256, C, H, W)``.
        channels, height, width: the canvas to measure on.
        pixel: ``(row, column)`` of the output pixel; default the centre
            ``(height // 2, width // 2)``.
        n_inputs: random images whose Jacobian supports are united.
        labels: ``(1,)`` class label for class-conditional models.

    Returns:
        bool tensor ``(height, width)``. With more than one colour the pixel itself is
        in its map: its G sees its R, its B sees R and G.
    """
    i, j = pixel if pixel is not None else (height // 2, width // 2)
    if not (0 <= i < height and 0 <= j < width):
        raise ValueError(f"pixel {(i, j)} lies outside the {height}x{width} canvas")
    support = pixel_dependencies(model, channels, height, width, (i, j), n_inputs=n_inputs, labels=labels)
    return support.any(dim=0).any(dim=0)  # (H, W): any output, any input colour


def receptive_field_figure(
    maps: Mapping[str, Tensor],
    path: str | Path,
    pixel: tuple[int, int] | None = None,
) -> Path:
    """Draw receptive-field maps side by side, like the paper's figure 4.

    Args:
        maps: name -> bool ``(H, W)`` from :func:`receptive_field_map`.
        path: PNG file to write.
        pixel: the output pixel of the maps; default the centre of each.

    Colours: the output pixel red, input pixels it depends on dark blue, earlier pixels
    it does not see (the blind spot, the missed triangle) light orange, later pixels
    white.
    """
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["white", "#fdd49e", "#08519c", "#d7301f"])
    fig, axes = new_figure(len(maps), figsize=(3.2 * len(maps), 3.6))
    for ax, (name, seen) in zip(axes[0], maps.items()):
        seen = torch.as_tensor(seen).bool()
        height, width = seen.shape
        i, j = pixel if pixel is not None else (height // 2, width // 2)
        earlier = _earlier_pixels(height, width, i, j)
        codes = torch.where(earlier, torch.where(seen, 2, 1), 0)
        codes[i, j] = 3
        ax.imshow(codes.numpy(), cmap=cmap, vmin=0, vmax=3)
        ax.set_xticks(np.arange(-0.5, width), minor=True)
        ax.set_yticks(np.arange(-0.5, height), minor=True)
        ax.grid(which="minor", color="#999999", linewidth=0.4)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        n_seen, n_earlier = int((seen & earlier).sum()), int(earlier.sum())
        ax.set_title(f"{name}\n{n_seen} of {n_earlier} earlier pixels seen", fontsize=9)
    return save_figure(fig, path)


def _earlier_pixels(height: int, width: int, i: int, j: int) -> Tensor:
    """Bool ``(H, W)``: pixels before ``(i, j)`` in raster order."""
    order = torch.arange(height * width).view(height, width)
    return order < i * width + j


# ------------------------------------------------------------------ gradient flow


def layer_groups(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """The model's parameters grouped by depth, from input to output: the model's own
    ``parameter_groups()`` (see :class:`pixelgen.nn.blocks.AutoregressiveModel`), else one
    group per top-level child module."""
    if hasattr(model, "parameter_groups"):
        return model.parameter_groups()
    groups = {name: list(child.parameters()) for name, child in model.named_children()}
    return {name: params for name, params in groups.items() if params}


def gradient_flow(
    model: nn.Module, batch: Tensor, labels: Tensor | None = None
) -> list[tuple[str, float]]:
    """Gradient norm of the loss (bits/dim) with respect to each residual layer's weights.

    Args:
        model: a pixelgen model; left unchanged (no ``.grad`` is written).
        batch: integer images ``(B, C, H, W)``.
        labels: ``(B,)`` for class-conditional models.

    Returns:
        ``[(layer name, L2 norm of all its parameters' gradients), ...]`` in the order of
        :func:`layer_groups`. A residual stack that passes gradients well keeps these of
        one order of magnitude from the head down to the input convolution.
    """
    groups = layer_groups(model)
    params = [p for group in groups.values() for p in group]
    outputs = model(batch) if labels is None else model(batch, labels)
    grads = torch.autograd.grad(bits_per_dim(outputs, batch, likelihood_of(model)), params, allow_unused=True)
    by_param = {id(p): g for p, g in zip(params, grads)}
    flow = []
    for name, group in groups.items():
        squares = [by_param[id(p)].double().pow(2).sum() for p in group if by_param[id(p)] is not None]
        flow.append((name, math.sqrt(float(sum(squares))) if squares else 0.0))
    return flow


def gradient_flow_figure(
    panels: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]], path: str | Path
) -> Path:
    """Gradient norm per layer (log scale): one panel per title, one line per named flow.

    Args:
        panels: title -> {line label -> :func:`gradient_flow` result}, e.g.
            ``{"row_lstm": {"start": flow0, "end": flow1}}``.
        path: PNG file to write.
    """
    fig, axes = new_figure(len(panels), figsize=(4.5 * len(panels), 3.8))
    for ax, (title, flows) in zip(axes[0], panels.items()):
        for label, flow in flows.items():
            ax.plot(range(len(flow)), [norm for _, norm in flow], marker="o", label=label)
        longest = max(flows.values(), key=len, default=[])
        ax.set_xticks(range(len(longest)), [layer for layer, _ in longest], rotation=60, fontsize=7)
        ax.set_yscale("log")
        ax.set_ylabel("gradient norm (bits/dim loss)")
        ax.set_title(f"{title}: input -> head", fontsize=9)
        ax.legend(fontsize=7)
    return save_figure(fig, path)


# ------------------------------------------------------------------ cost and scaling


def sequential_steps(model: nn.Module, height: int, width: int) -> int:
    """Steps one layer of ``model`` takes one after another on a ``height x width`` image.

    1 for PixelCNN (every position at once), ``height`` for the Row LSTM (row by row),
    ``width + height - 1`` for the Diagonal BiLSTM (diagonal by diagonal). Each model says
    so itself (:meth:`pixelgen.nn.blocks.AutoregressiveModel.sequential_steps`).
    """
    method = getattr(model, "sequential_steps", None)
    if method is None:
        raise TypeError(
            f"{type(model).__name__} has no sequential_steps(height, width); subclass "
            "pixelgen.nn.blocks.AutoregressiveModel"
        )
    return int(method(height, width))


def growth_exponent(x: Sequence[float], y: Sequence[float]) -> float:
    """Least-squares slope of ``log y`` against ``log x``: ``k`` in ``y ~ a * x**k``.

    Pairs with a non-positive or non-finite value are left out; fewer than two distinct
    ``x`` left gives NaN.
    """
    pairs = [(a, b) for a, b in zip(x, y) if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b)]
    if len({a for a, _ in pairs}) < 2:
        return float("nan")
    log_x, log_y = np.log([a for a, _ in pairs]), np.log([b for _, b in pairs])
    slope, _ = np.polyfit(log_x, log_y, 1)
    return float(slope)


@attrs.frozen
class ScalingResult:
    """What :func:`scaling` measured.

    Attributes:
        rows: one dict per (size, depth): ``size``, ``depth``, ``seconds`` (median
            forward + backward time of one batch), ``saved_bytes`` (activations kept for
            the backward pass), ``peak_bytes`` (CUDA peak allocation during forward +
            backward above what was allocated before; ``None`` off CUDA).
        exponents: fitted power laws: ``seconds_vs_size``, ``saved_bytes_vs_size`` (at
            the smallest depth), ``seconds_vs_depth``, ``saved_bytes_vs_depth`` (at the
            smallest size), plus ``peak_bytes_vs_*`` on CUDA.
        memory: what the memory columns measure, in words.
        threads: ``torch.get_num_threads()`` during the timing (CPU timings on a busy
            machine vary with it).
    """

    rows: list[dict[str, Any]]
    exponents: dict[str, float]
    memory: str
    threads: int = 1


MEMORY_NOTE = (
    "saved_bytes: bytes of the tensors autograd keeps for the backward pass of one batch "
    "(each storage counted once, parameters excluded): the activation memory that grows "
    "with image size and depth, measured exactly on any device. peak_bytes: on CUDA, "
    "torch.cuda.max_memory_allocated during forward + backward minus the allocation "
    "before; absent on the CPU, where no allocator statistic is exact (ru_maxrss is a "
    "high-water mark of the whole process and never goes down)."
)


def saved_activation_bytes(model: nn.Module, batch: Tensor, labels: Tensor | None = None) -> int:
    """Bytes autograd saves for the backward pass of ``model(batch)``.

    Every saved tensor's storage is counted once; parameter storages are left out (they
    exist whether or not a backward follows).
    """
    param_storages = {p.untyped_storage().data_ptr() for p in model.parameters()}
    storages: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in param_storages:
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = model(batch) if labels is None else model(batch, labels)
    del out
    return sum(storages.values())


def time_forward_backward(
    model: nn.Module,
    batch: Tensor,
    labels: Tensor | None = None,
    *,
    repeats: int = 3,
    warmup: int = 1,
) -> float:
    """Median seconds of one forward + backward pass (loss: bits/dim) after ``warmup`` runs."""
    cuda = batch.device.type == "cuda"
    times = []
    for k in range(warmup + repeats):
        if cuda:
            torch.cuda.synchronize(batch.device)
        start = time.perf_counter()
        outputs = model(batch) if labels is None else model(batch, labels)
        bits_per_dim(outputs, batch, likelihood_of(model)).backward()
        if cuda:
            torch.cuda.synchronize(batch.device)
        if k >= warmup:
            times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def _peak_cuda_bytes(model: nn.Module, batch: Tensor, labels: Tensor | None) -> int:
    torch.cuda.synchronize(batch.device)
    before = torch.cuda.memory_allocated(batch.device)
    torch.cuda.reset_peak_memory_stats(batch.device)
    outputs = model(batch) if labels is None else model(batch, labels)
    bits_per_dim(outputs, batch, likelihood_of(model)).backward()
    torch.cuda.synchronize(batch.device)
    peak = torch.cuda.max_memory_allocated(batch.device) - before
    model.zero_grad(set_to_none=True)
    return int(peak)


def scaling(
    model_factory: Callable[[int], nn.Module],
    sizes: Sequence[int] = (16, 32, 64),
    depths: Sequence[int] = (1, 2, 4),
    *,
    batch: int = 4,
    channels: int | None = None,
    device: str | torch.device = "cpu",
    repeats: int = 3,
    warmup: int = 1,
    seed: int = 0,
) -> ScalingResult:
    """Forward + backward time and memory against image size and against depth.

    Measures every size at the smallest depth and every depth at the smallest size (not
    the full grid), on random images.

    Args:
        model_factory: ``n_layers -> model``; called once per depth.
        sizes: square image sizes (pixels per side).
        depths: numbers of residual layers.
        batch: images per forward pass.
        channels: colours of the images; default ``model.in_channels``.
        device: where to run.
        repeats, warmup: timed and untimed passes per point (the median is kept).
        seed: seed of the random images and the model initialisation.

    Returns:
        a :class:`ScalingResult`; exponents come from :func:`growth_exponent`.
    """
    device = torch.device(device)
    sizes, depths = sorted(set(sizes)), sorted(set(depths))
    points = [(s, depths[0]) for s in sizes] + [(sizes[0], d) for d in depths[1:]]
    rows = []
    models: dict[int, nn.Module] = {}
    for size, depth in points:
        if depth not in models:
            torch.manual_seed(seed)
            models[depth] = model_factory(depth).to(device).train()
        model = models[depth]
        c = channels or model.in_channels
        generator = torch.Generator().manual_seed(seed)
        x = torch.randint(0, n_levels_of(model), (batch, c, size, size), generator=generator).to(device)
        labels = torch.zeros(batch, dtype=torch.long, device=device) if getattr(model, "n_classes", 0) else None
        seconds = time_forward_backward(model, x, labels, repeats=repeats, warmup=warmup)
        saved = saved_activation_bytes(model, x, labels)
        peak = _peak_cuda_bytes(model, x, labels) if device.type == "cuda" else None
        rows.append({"size": size, "depth": depth, "seconds": seconds, "saved_bytes": saved, "peak_bytes": peak})
    exponents = {}
    by_size = [r for r in rows if r["depth"] == depths[0]]
    by_depth = [r for r in rows if r["size"] == sizes[0]]
    keys = ["seconds", "saved_bytes"] + (["peak_bytes"] if device.type == "cuda" else [])
    for key in keys:
        exponents[f"{key}_vs_size"] = growth_exponent([r["size"] for r in by_size], [r[key] for r in by_size])
        exponents[f"{key}_vs_depth"] = growth_exponent([r["depth"] for r in by_depth], [r[key] for r in by_depth])
    return ScalingResult(rows=rows, exponents=exponents, memory=MEMORY_NOTE, threads=torch.get_num_threads())


def scaling_figure(results: Mapping[str, ScalingResult], path: str | Path) -> Path:
    """Four log-log panels: time and saved memory against image size and against depth."""
    fig, axes = new_figure(4, figsize=(15, 3.6))
    panels = [("size", "seconds"), ("size", "saved_bytes"), ("depth", "seconds"), ("depth", "saved_bytes")]
    for ax, (axis, key) in zip(axes[0], panels):
        for name, result in results.items():
            fixed = "depth" if axis == "size" else "size"
            smallest = min(r[fixed] for r in result.rows)
            rows = [r for r in result.rows if r[fixed] == smallest]
            k = result.exponents.get(f"{key}_vs_{axis}", float("nan"))
            ax.plot([r[axis] for r in rows], [r[key] for r in rows], marker="o", label=f"{name} (k={k:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("image size (pixels per side)" if axis == "size" else "residual layers")
        ax.set_ylabel("forward+backward seconds" if key == "seconds" else "activation bytes saved")
        ax.legend(fontsize=7)
    fig.suptitle("scaling, fitted y ~ x^k", fontsize=10)
    return save_figure(fig, path)


# ------------------------------------------------------------------ samples


def _as_uint8(images: Any, what: str) -> np.ndarray:
    if hasattr(images, "detach"):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) == 0:
        raise ValueError(f"{what}: expected uint8 images (N, C, H, W), got {images.dtype} {images.shape}")
    return images


def _flat(images: np.ndarray) -> Tensor:
    return torch.from_numpy(images.reshape(len(images), -1)).double() / 255.0  # (N, C*H*W) in [0, 1]


def nearest_distances(queries: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """L2 distance (values scaled to [0, 1]) from each query image to its nearest reference."""
    ref = _flat(reference)
    out = [torch.cdist(_flat(queries[k : k + chunk]), ref).min(dim=1).values for k in range(0, len(queries), chunk)]
    return torch.cat(out).numpy()


def mean_pairwise_distance(images: np.ndarray) -> float:
    """Mean L2 distance (values scaled to [0, 1]) over all pairs of distinct images."""
    if len(images) < 2:
        return float("nan")
    flat = _flat(images)
    d = torch.cdist(flat, flat)
    n = len(images)
    return float(d.sum() / (n * (n - 1)))


def artifact_flags(images: np.ndarray, *, row_share: float = 0.5, saturated_share: float = 0.5) -> dict[str, np.ndarray]:
    """Per-image bool flags of the failure modes autoregressive samplers are known for.

    * ``constant_rows``: more than ``row_share`` of the rows hold one value throughout
      (every sub-pixel of the row equal).
    * ``repeated_rows``: more than ``row_share`` of rows 1..H-1 equal the row above.
    * ``saturated``: more than ``saturated_share`` of the sub-pixels are 0 or 255.
    * ``duplicate``: the image equals another image of the set exactly.
    """
    n, c, h, w = images.shape
    rows = images.transpose(0, 2, 1, 3).reshape(n, h, c * w)  # (N, H, C*W)
    constant = (rows == rows[:, :, :1]).all(axis=2).mean(axis=1)
    repeated = (rows[:, 1:] == rows[:, :-1]).all(axis=2).mean(axis=1) if h > 1 else np.zeros(n)
    saturated = ((images == 0) | (images == 255)).reshape(n, -1).mean(axis=1)
    _, inverse, counts = np.unique(images.reshape(n, -1), axis=0, return_inverse=True, return_counts=True)
    return {
        "constant_rows": constant > row_share,
        "repeated_rows": repeated > row_share,
        "saturated": saturated > saturated_share,
        "duplicate": counts[inverse.reshape(-1)] > 1,
    }


def sample_statistics(
    samples: Any,
    data: Any,
    held_out: Any | None = None,
    *,
    diversity_subset: int = 64,
) -> dict[str, Any]:
    """How generated images compare with the data, as plain JSON-ready numbers.

    Args:
        samples: uint8 ``(N, C, H, W)`` generated images (numpy or torch).
        data: uint8 ``(M, C, H, W)`` training images: the reference for means, stds,
            diversity and the nearest-neighbour search.
        held_out: uint8 test images, optional: their nearest-training distances are the
            baseline a sample that is not a copy should look like.
        diversity_subset: the first this many images enter the pairwise distances.

    Returns:
        a dict with ``n_samples``; ``sample_mean``, ``sample_std``, ``data_mean``,
        ``data_std`` (per channel, on 0..255); ``sample_diversity``, ``data_diversity``
        (mean pairwise L2 on [0, 1] values over a subset of the same size);
        ``nearest_train_distance`` (per sample) and its ``_mean`` / ``_min``, and
        ``held_out_nearest_train_distance`` likewise when ``held_out`` is given;
        ``artifacts`` (share of samples with each flag of :func:`artifact_flags`) and
        ``data_artifacts`` (the same share in the data, the baseline).
    """
    samples = _as_uint8(samples, "samples")
    data = _as_uint8(data, "data")
    if samples.shape[1:] != data.shape[1:]:
        raise ValueError(f"samples {samples.shape[1:]} and data {data.shape[1:]} differ in shape")
    k = min(diversity_subset, len(samples))  # the data's diversity on as many images
    nearest = nearest_distances(samples, data)
    stats: dict[str, Any] = {
        "n_samples": len(samples),
        "sample_mean": samples.mean(axis=(0, 2, 3)).tolist(),
        "sample_std": samples.std(axis=(0, 2, 3)).tolist(),
        "data_mean": data.mean(axis=(0, 2, 3)).tolist(),
        "data_std": data.std(axis=(0, 2, 3)).tolist(),
        "sample_diversity": mean_pairwise_distance(samples[:k]),
        "data_diversity": mean_pairwise_distance(data[:k]),
        "nearest_train_distance": nearest.tolist(),
        "nearest_train_distance_mean": float(nearest.mean()),
        "nearest_train_distance_min": float(nearest.min()),
    }
    if held_out is not None:
        held_out = _as_uint8(held_out, "held_out")
        baseline = nearest_distances(held_out, data)
        stats["held_out_nearest_train_distance"] = baseline.tolist()
        stats["held_out_nearest_train_distance_mean"] = float(baseline.mean())
        stats["held_out_nearest_train_distance_min"] = float(baseline.min())
    stats["artifacts"] = {name: float(flag.mean()) for name, flag in artifact_flags(samples).items()}
    stats["data_artifacts"] = {name: float(flag.mean()) for name, flag in artifact_flags(data).items()}
    return stats


def value_histogram(images: Any) -> np.ndarray:
    """Share of sub-pixels at each value 0..255, per channel: float ``(C, 256)``."""
    images = _as_uint8(images, "images")
    c = images.shape[1]
    counts = np.stack([np.bincount(images[:, k].ravel(), minlength=256) for k in range(c)])
    return counts / counts.sum(axis=1, keepdims=True)


def histogram_figure(samples: Mapping[str, Any], data: Any, path: str | Path, data_name: str = "test data") -> Path:
    """Sub-pixel value histograms of each model's samples against the data, per channel."""
    reference = value_histogram(data)
    c = reference.shape[0]
    names = ("grey",) if c == 1 else ("R", "G", "B") if c == 3 else tuple(f"channel {k}" for k in range(c))
    fig, axes = new_figure(c, figsize=(6 * c, 3.6))
    values = np.arange(256)
    for k, ax in enumerate(axes[0]):
        ax.fill_between(values, reference[k], step="mid", color="#bbbbbb", label=data_name)
        for name, images in samples.items():
            ax.step(values, value_histogram(images)[k], where="mid", linewidth=1, label=name)
        ax.set_yscale("log")
        ax.set_xlabel(f"{names[k]} value")
        ax.set_ylabel("share of sub-pixels")
        ax.legend(fontsize=7)
    return save_figure(fig, path)


# ------------------------------------------------------------------ figure plumbing


def new_figure(ncols: int = 1, nrows: int = 1, figsize: tuple[float, float] = (6, 4)) -> tuple[Any, np.ndarray]:
    """A matplotlib figure and its ``(nrows, ncols)`` axes, drawn by the Agg canvas.

    Built without pyplot: no backend is chosen for the process, nothing is shown, and no
    figure is kept alive by a global registry.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` (PNG), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    with atomic_writer(path) as handle:  # through no link, whole or not at all
        fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")  # never clip a title or a label
    return path

"""Training and evaluation on Lightning Fabric, driven by a recipe.

::

    plan_runs(recipe, out, resume)     check every run of a recipe before training any:
                                       run folders, checkpoints, data, model, Fabric
    fit(plan, report)                  train one run, then evaluate its best checkpoint
    run_recipe(recipe, ...)            plan, then fit each run in turn
    evaluate(model, dataset, ...)      NLL in nats/image and bits/dim, overall and per colour

One epoch of :func:`fit`, in order::

    train (loss = bits/dim of the batch, pixelgen.metrics)  ->  validate  ->  scheduler
    ->  early stopping  ->  loggers + archive row  ->  best.ckpt (if better)  ->  last.ckpt

The archive row is written before the checkpoint, so after a kill the archive may hold one
row more than last.ckpt has seen; ``--resume`` truncates it back. The data order of epoch
``e`` is a function of (seed, e) alone (a seeded ``DistributedSampler``, also with one
process) and every random state is in the checkpoint, so a resumed run repeats an
uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import pathlib
import resource
import sys
import time
import warnings
from typing import Any, Callable

import attrs
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from pixelgen import checkpoint as ckpt_io
from pixelgen.data import DataSubset, load_splits
from pixelgen.errors import CheckpointError, DataError, PixelgenError, RecipeError
from pixelgen.files import atomic_write_json
from pixelgen.metrics import bits_per_dim, nats_to_bits_per_dim, nll_nats
from pixelgen.recipe import Recipe, RunSpec, recipe_to_dict, run_dir, single_run, write_resolved
from pixelgen.registry import create_model

LAST = "last.ckpt"
BEST = "best.ckpt"
METRICS_JSON = "metrics.json"

Report = Callable[[str], None]


class TrainingError(PixelgenError):
    """Training cannot go on: a non-finite loss, or a resume that does not fit the recipe."""


def _silent(line: str) -> None:
    pass


# --------------------------------------------------------------------------- building blocks


def load_data(run: RunSpec, root: str | None = None) -> dict[str, Dataset]:
    """The run's ``{"train", "val", "test"}`` splits with its ``limit_*`` applied.

    The validation split is cut from the official training split by ``train.seed`` and
    ``data.validation_fraction`` (:func:`pixelgen.data.load_splits`); ``root``
    overrides ``data.root``.
    """
    data = run.data
    options = dict(data.options)
    if data.image_size is not None:
        options["image_size"] = data.image_size
    splits = load_splits(
        data.name,
        root or data.root,
        validation_fraction=data.validation_fraction,
        seed=run.train.seed,
        flips=data.flips,
        download=data.download,
        **options,
    )
    limits = {"train": data.limit_train, "val": data.limit_val, "test": data.limit_test}
    for split, limit in limits.items():
        if limit is not None and limit < len(splits[split]):
            splits[split] = DataSubset(splits[split], range(limit))
    if len(splits["train"]) == 0:
        raise DataError(f"data: the training split of {data.name!r} is empty")
    return splits


def build_model(run: RunSpec, shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """``create_model`` with the recipe's hyperparameters; ``in_channels`` defaults to the
    data's colours. A model with ``n_classes > 0`` is class-conditional and must cover the
    data set's labels."""
    hyper = ckpt_io.plain(dict(run.model.hyperparameters))
    hyper.setdefault("in_channels", shape[0])
    if hyper["in_channels"] != shape[0]:
        raise RecipeError(
            f"model.hyperparameters.in_channels: {hyper['in_channels']} colours, but the "
            f"{run.data.name!r} images have {shape[0]}; remove the key to take the data's"
        )
    try:
        model = create_model(run.model.name, **hyper)
    except (ValueError, TypeError) as exc:
        raise RecipeError(f"model.hyperparameters: {run.model.name!r} cannot be built: {exc}") from None
    conditional = getattr(model, "n_classes", 0)
    if 0 < conditional < n_classes:
        raise RecipeError(
            f"model.hyperparameters.n_classes: {conditional} classes, but {run.data.name!r} "
            f"has {n_classes}; use {n_classes} (or 0 for an unconditional model)"
        )
    return model


def make_fabric(train: Any, loggers: list | None = None, devices: Any = None):
    """A ``lightning_fabric.Fabric`` from a recipe's ``[train]`` section.

    Raises:
        RecipeError: Fabric refuses the accelerator/devices/strategy/precision given.
    """
    from lightning_fabric import Fabric

    devices = train.devices if devices is None else devices
    try:
        return Fabric(
            accelerator=train.accelerator,
            devices=devices,
            num_nodes=train.num_nodes,
            strategy=train.strategy,
            precision=train.precision,
            loggers=loggers,
        )
    except Exception as exc:  # Fabric raises ValueError, RuntimeError or its own types
        raise RecipeError(
            f"train: Lightning Fabric refuses accelerator={train.accelerator!r}, "
            f"devices={devices!r}, strategy={train.strategy!r}, precision={train.precision!r}: "
            + " ".join(str(exc).split())[:240]
        ) from None


def _unwrap(model: nn.Module) -> nn.Module:
    from lightning_fabric.wrappers import _FabricModule

    while isinstance(model, _FabricModule) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, _FabricModule) else model._orig_mod
    return model


def _is_conditional(model: nn.Module) -> bool:
    return getattr(_unwrap(model), "n_classes", 0) > 0


# --------------------------------------------------------------------------- evaluation


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    fabric: Any = None,
    *,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Negative log-likelihood of ``dataset`` under ``model``.

    Args:
        model: a pixelgen model, bare or set up by Fabric; it is put in eval mode for the
            pass and back in its previous mode after.
        dataset: items ``(uint8 (C, H, W), label)``.
        batch_size: images per forward pass.
        fabric: with several processes each evaluates every ``world_size``-th image (no
            padding, no duplicates) and the sums are all-reduced, so the figures equal a
            single-process pass. Without it the model's own device is used.

    Returns:
        ``{"n_images", "nll_nats" (per image), "bits_per_dim",
        "bits_per_dim_per_channel" (list, one per colour)}``.
    """
    net = _unwrap(model)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    device = fabric.device if fabric is not None else next(net.parameters()).device
    if len(dataset) == 0:
        raise DataError("evaluate: the split has no images (check data.validation_fraction and data.limit_*)")
    channels, height, width = dataset[0][0].shape
    loader = DataLoader(
        Subset(dataset, range(rank, len(dataset), world)),
        batch_size=batch_size, shuffle=False, num_workers=num_workers,
    )
    conditional = _is_conditional(net)
    nats_per_channel = torch.zeros(channels, dtype=torch.float64, device=device)  # summed over images
    count = torch.zeros(1, dtype=torch.float64, device=device)
    autocast = fabric.autocast() if fabric is not None else contextlib.nullcontext()
    was_training = net.training
    net.eval()
    try:
        # The bare module, not a DDP wrapper: shards may differ by one batch, and DDP's
        # forward would wait for a partner that has finished.
        with torch.no_grad(), autocast:
            for x, labels in loader:
                x, labels = x.to(device), labels.to(device)
                logits = net(x, labels if conditional else None)  # (B, 256, C, H, W)
                for c in range(channels):
                    nats_per_channel[c] += nll_nats(logits[:, :, c : c + 1], x[:, c : c + 1]).double().sum()
                count += len(x)
    finally:
        net.train(was_training)
    totals = torch.cat([nats_per_channel, count])
    if world > 1:
        totals = fabric.all_reduce(totals, reduce_op="sum")
    totals = totals.cpu().tolist()
    n_images = int(totals[-1])
    per_channel = [nats / n_images for nats in totals[:-1]]  # nats per image, per colour
    nll = sum(per_channel)
    return {
        "n_images": n_images,
        "nll_nats": nll,
        "bits_per_dim": nats_to_bits_per_dim(nll, channels * height * width),
        "bits_per_dim_per_channel": [nats_to_bits_per_dim(v, height * width) for v in per_channel],
    }


# --------------------------------------------------------------------------- planning


@attrs.define
class RunPlan:
    """One run, checked and ready to train.

    ``action`` is ``"train"`` (from scratch), ``"resume"`` (from ``checkpoint``),
    ``"evaluate"`` (training finished, the final evaluation did not) or ``"skip"``
    (finished and evaluated).
    """

    recipe: Recipe  # single-run recipe; output.dir is run_dir
    run: RunSpec
    run_dir: pathlib.Path
    data: dict[str, Dataset]
    model: nn.Module
    fabric: Any
    action: str
    checkpoint: dict[str, Any] | None = None


def _finished(epoch: int, step: int, stopped: bool, run: RunSpec) -> bool:
    """Whether a run at ``epoch`` (completed) and ``step`` has nothing left to train under
    ``run``'s settings (``stopped``: early stopping has ended it)."""
    max_steps = run.train.max_steps
    return stopped or epoch >= run.train.epochs or (max_steps is not None and step >= max_steps)


def _check_same_model(path: pathlib.Path, stored: dict, built: dict) -> None:
    """CheckpointError naming what differs between a checkpoint's model and the recipe's."""
    stored, built = ckpt_io.plain(stored), ckpt_io.plain(built)
    if stored == built:
        return
    if stored["name"] != built["name"]:
        change = f"model {stored['name']!r}, the recipe {built['name']!r}"
    else:
        old, new = stored["hyperparameters"], built["hyperparameters"]
        change = ", ".join(
            f"{key} {old.get(key, 'unset')!r} -> {new.get(key, 'unset')!r}"
            for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)
        )
    raise CheckpointError(
        f"{path}: the recipe's model differs from the checkpoint's ({change}); resume with "
        f"the recipe it was trained with, or pass --out DIR to train the new model elsewhere"
    )


def plan_runs(
    recipe: Recipe, *, out: str | os.PathLike | None = None, resume: bool = False
) -> list[RunPlan]:
    """Check every run of ``recipe`` before any is trained; nothing is written.

    Raises:
        PixelgenError: a run folder holds checkpoints and ``resume`` is false; ``resume``
            with no checkpoint anywhere; a checkpoint that is corrupt or of another model;
            missing data; a model or Fabric setting that cannot be built.
    """
    from lightning_fabric.loggers import CSVLogger, TensorBoardLogger

    from pixelgen.archive import RunArchive

    if out is not None:
        recipe = attrs.evolve(recipe, output=attrs.evolve(recipe.output, dir=str(out)))
    plans, data_cache = [], {}
    for run in recipe.runs:
        folder = run_dir(recipe, run)
        if folder.exists() and not folder.is_dir():
            raise PixelgenError(f"{folder}: exists and is not a folder; pass --out DIR to write elsewhere")
        held = [name for name in (LAST, BEST) if (folder / name).exists()]
        state, action = None, "train"
        if held and not resume:
            raise PixelgenError(
                f"{folder} already holds {' and '.join(held)} from an earlier run; pass --resume "
                f"to continue it, or --out DIR to train into another folder"
            )
        if resume and held:
            if LAST not in held:
                raise CheckpointError(f"{folder}: best.ckpt but no last.ckpt; nothing to resume from")
            state = ckpt_io.load_checkpoint(folder / LAST)
            action = "resume"
            if _finished(state["epoch"], state["step"], state["early_stopping"]["stopped"], run):
                action = "skip" if (folder / METRICS_JSON).is_file() else "evaluate"
        archive_path = folder / recipe.output.archive
        if archive_path.exists():
            RunArchive.open(archive_path)  # a foreign folder fails here, before any training

        key = repr((run.data, run.train.seed))
        if key not in data_cache:
            data_cache[key] = load_data(run)
        data = data_cache[key]
        if len(data[run.eval.split]) == 0:
            raise RecipeError(
                f"eval.split: the {run.eval.split!r} split of {run.data.name!r} is empty; "
                f"choose another split or raise data.validation_fraction"
            )
        train_set = data["train"]
        with torch.random.fork_rng(devices=[]):  # seeded initialisation, global state untouched
            torch.manual_seed(run.train.seed)
            model = build_model(run, tuple(train_set.shape), train_set.n_classes)
        if state is not None:
            _check_same_model(folder / LAST, state["model"], model.pixelgen_config)
        loggers = [
            TensorBoardLogger(root_dir=str(folder), name="tensorboard", default_hp_metric=False),
            CSVLogger(root_dir=str(folder), name="csv", flush_logs_every_n_steps=1),
        ]
        fabric = make_fabric(run.train, loggers)
        plans.append(RunPlan(single_run(recipe, run), run, folder, data, model, fabric, action, state))
    if resume and all(plan.checkpoint is None for plan in plans):
        folders = ", ".join(str(plan.run_dir) for plan in plans)
        raise CheckpointError(
            f"--resume: nothing to resume, no {LAST} in {folders}; run without --resume to start"
        )
    return plans


# --------------------------------------------------------------------------- training


@attrs.define
class _Progress:
    """What the checkpoint carries besides the tensors: the loop's own counters."""

    epoch: int = 0  # epochs completed
    step: int = 0  # optimizer steps taken
    monitor: str = "val_bits_per_dim"
    best: float = math.inf
    best_epoch: int = 0
    bad_epochs: int = 0
    stopped: bool = False


def _compiled(model: nn.Module, image_shape: tuple[int, ...], *, conditional: bool) -> nn.Module:
    """``torch.compile(model)`` if it compiles here (tried on one small batch), else the
    model itself with a one-line warning: compilation needs a working compiler toolchain
    (Triton on a GPU, a C++ compiler on the CPU) and helps mostly on a GPU."""
    compiled = torch.compile(model)
    device = next(model.parameters()).device
    x = torch.zeros(2, *image_shape, dtype=torch.long, device=device)
    labels = torch.zeros(2, dtype=torch.long, device=device) if conditional else None
    try:
        compiled(x, labels).sum().backward()
    except Exception as exc:  # any backend failure: train eagerly rather than not at all
        warnings.warn(f"train.compile: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160]}); training without it", stacklevel=2)
        return model
    finally:
        model.zero_grad(set_to_none=True)
    return compiled


def _reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (one per epoch)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere the peak below is the whole process's so far


def _peak_memory_mb(device: torch.device) -> float:
    """Peak memory since :func:`_reset_peak_memory`: CUDA allocations on a GPU, resident
    memory of the process on the CPU (VmHWM; the lifetime peak where it cannot be reset)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _progress_bar_enabled() -> bool:
    return os.environ.get("PIXELGEN_PROGRESS", "1") != "0" and sys.stderr.isatty()


def _gather_rng(fabric: Any) -> list[dict[str, torch.Tensor]]:
    """Every process's random state, rank order (a collective call: all ranks enter it)."""
    state = ckpt_io.rng_state()
    if fabric.world_size == 1:
        return [state]
    gathered = fabric.all_gather({k: v.to(fabric.device) for k, v in state.items()})
    return [{k: v[r].cpu() for k, v in gathered.items()} for r in range(fabric.world_size)]


def fit(plan: RunPlan, report: Report | None = None) -> dict[str, Any] | None:
    """Train one planned run and evaluate its best checkpoint; returns the figures that
    went into ``metrics.json`` (None for a skipped run).

    Launches the Fabric processes (with ``strategy="ddp"`` the script is re-run for the
    other ranks, which plan the same runs and join here).
    """
    report = report or _silent
    if plan.action == "skip":
        figures = json.loads((plan.run_dir / METRICS_JSON).read_text())
        report(
            f"run {plan.run.name!r} in {plan.run_dir} already finished (epoch "
            f"{plan.checkpoint['epoch']}, {figures.get('split')} bits/dim "
            f"{figures.get('bits_per_dim', float('nan')):.4f}); skipped"
        )
        return None
    return plan.fabric.launch(_fit, plan, report)


def _fit(fabric: Any, plan: RunPlan, report: Report) -> dict[str, Any]:
    from lightning_fabric.loggers import TensorBoardLogger
    from lightning_fabric.utilities.seed import pl_worker_init_function
    from tqdm import tqdm

    from pixelgen.archive import RunArchive

    run, folder, state = plan.run, plan.run_dir, plan.checkpoint
    cfg = run.train
    rank0 = fabric.is_global_zero
    say = report if rank0 else _silent
    fabric.seed_everything(cfg.seed, workers=True, verbose=False)

    archive = None
    if rank0:
        write_resolved(plan.recipe, folder)
        archive = RunArchive.create_or_open(folder / plan.recipe.output.archive)
        if state is None:
            archive.truncate_metrics(0)  # rows a crash left before the first checkpoint
        else:
            archive.truncate_metrics(min(state["epoch"], archive.n_epochs))
        if plan.action != "evaluate":
            (folder / METRICS_JSON).unlink(missing_ok=True)
    fabric.barrier()

    train_set, val_set = plan.data["train"], plan.data["val"]
    model = plan.model
    if state is not None:
        model.load_state_dict(state["model_state"])
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optimizer.lr,
        betas=tuple(cfg.optimizer.betas),
        weight_decay=cfg.optimizer.weight_decay,
    )
    scheduler = None
    if cfg.scheduler.name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.scheduler.factor,
            patience=cfg.scheduler.patience, min_lr=cfg.scheduler.min_lr,
        )
    if cfg.compile:
        net = _compiled(model.to(fabric.device), train_set[0][0].shape, conditional=_is_conditional(model))
    else:
        net = model
    fmodel, foptimizer = fabric.setup(net, optimizer)
    conditional = _is_conditional(model)

    sampler = DistributedSampler(
        train_set, num_replicas=fabric.world_size, rank=fabric.global_rank,
        shuffle=True, seed=cfg.seed, drop_last=False,
    )
    # Not fabric.setup_dataloaders: its loader sets the sampler's epoch to the number of
    # times it has been iterated, which restarts at 0 in a resumed process.
    loader = DataLoader(
        train_set, batch_size=run.data.batch_size, sampler=sampler, num_workers=run.data.num_workers,
        worker_init_fn=functools.partial(pl_worker_init_function, rank=fabric.global_rank),
    )

    progress = _Progress(monitor="val_bits_per_dim" if len(val_set) else "train_bits_per_dim")
    if state is not None:
        foptimizer.load_state_dict(state["optimizer"])
        trained_lr = state["recipe"]["train"]["optimizer"]["lr"]
        if trained_lr != cfg.optimizer.lr:  # asked for explicitly, e.g. after a non-finite loss
            for group in foptimizer.param_groups:
                group["lr"] = cfg.optimizer.lr
            say(f"  note: train.optimizer.lr is now {cfg.optimizer.lr:g} (was {trained_lr:g}); "
                f"the resumed run continues at the new rate")
        if scheduler is not None and state.get("scheduler"):
            scheduler.load_state_dict(state["scheduler"])
        if state.get("precision"):
            fabric.strategy.precision.load_state_dict(state["precision"])
        stop = state["early_stopping"]
        progress = _Progress(
            epoch=state["epoch"], step=state["step"], monitor=stop["monitor"], best=stop["best"],
            best_epoch=stop["best_epoch"], bad_epochs=stop["bad_epochs"], stopped=stop["stopped"],
        )
        rngs = state["rng"]
        same_world = len(rngs) == fabric.world_size
        ckpt_io.set_rng_state(rngs[fabric.global_rank] if same_world else rngs[0])
        if not same_world:
            say(f"  note: checkpoint written by {len(rngs)} processes, resuming on "
                f"{fabric.world_size}: the data order continues, the random streams do not")

    def checkpoint_state(row: dict[str, float]) -> dict[str, Any]:
        rng = _gather_rng(fabric)  # collective: every rank calls it
        return {
            "model": ckpt_io.plain(model.pixelgen_config),
            "model_state": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "recipe": recipe_to_dict(plan.recipe),
            "epoch": progress.epoch,
            "step": progress.step,
            "optimizer": foptimizer.state_dict(),
            "scheduler": scheduler.state_dict() if scheduler is not None else {},
            "precision": fabric.strategy.precision.state_dict(),
            "early_stopping": {
                "monitor": progress.monitor, "best": progress.best, "best_epoch": progress.best_epoch,
                "bad_epochs": progress.bad_epochs, "stopped": progress.stopped,
                "patience": cfg.early_stopping_patience,
            },
            "sampler": {"seed": cfg.seed, "epoch": progress.epoch},
            "rng": rng,
            "metrics": row,
            "world_size": fabric.world_size,
        }

    def non_finite(what: str, value: float, epoch: int) -> TrainingError:
        kept = (
            f"the last good checkpoint {folder / LAST} (epoch {saved_epoch}) is kept"
            if saved_epoch else "no checkpoint was written"
        )
        return TrainingError(
            f"run {run.name!r} stopped: {what} became {value} in epoch {epoch}, "
            f"step {progress.step}; {kept}; lower train.optimizer.lr or set "
            f"train.gradient_clip_norm, then --resume or start again"
        )

    saved_epoch = progress.epoch
    tensorboard = [lg for lg in fabric.loggers if isinstance(lg, TensorBoardLogger)]
    say(f"run {run.name!r} ({run.model.name}, {sum(p.numel() for p in model.parameters()):,} "
        f"parameters) -> {folder}: {plan.action}, epoch {progress.epoch} of {cfg.epochs}")
    while not _finished(progress.epoch, progress.step, progress.stopped, run):
        epoch = progress.epoch + 1
        sampler.set_epoch(epoch)
        fmodel.train()
        lr = foptimizer.param_groups[0]["lr"]
        _reset_peak_memory(fabric.device)
        started = time.perf_counter()
        bpd_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
        n_images = 0
        bar = tqdm(loader, desc=f"{run.name} {epoch}/{cfg.epochs}", file=sys.stderr, leave=False,
                   disable=not (rank0 and _progress_bar_enabled()), dynamic_ncols=True)
        for x, labels in bar:
            x, labels = x.to(fabric.device), labels.to(fabric.device)
            logits = fmodel(x, labels if conditional else None)  # (B, 256, C, H, W)
            loss = bits_per_dim(logits, x)
            bad = ~torch.isfinite(loss.detach())
            if fabric.world_size > 1:
                bad = fabric.all_reduce(bad.float(), reduce_op="sum") > 0
            if bad:
                bar.close()
                raise non_finite("the training loss", loss.item(), epoch)
            foptimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            if cfg.gradient_clip_norm is not None:
                fabric.clip_gradients(fmodel, foptimizer, max_norm=cfg.gradient_clip_norm)
            foptimizer.step()
            progress.step += 1
            bpd_sum += loss.detach().double() * len(x)
            n_images += len(x)
            if progress.step % cfg.log_every_n_steps == 0:
                bar.set_postfix(bpd=f"{bpd_sum.item() / n_images:.3f}")
                for logger in tensorboard:
                    logger.log_metrics({"train_bits_per_dim_step": loss.item()}, step=progress.step)
            if cfg.max_steps is not None and progress.step >= cfg.max_steps:
                break
        bar.close()
        totals = torch.stack([bpd_sum, torch.tensor(float(n_images), dtype=torch.float64, device=fabric.device)])
        if fabric.world_size > 1:
            totals = fabric.all_reduce(totals, reduce_op="sum")
        train_bpd, seen = (totals[0] / totals[1]).item(), totals[1].item()
        elapsed = time.perf_counter() - started
        progress.epoch = epoch

        row: dict[str, float] = {"epoch": epoch, "step": progress.step, "train_bits_per_dim": train_bpd}
        monitored = None
        if len(val_set) and epoch % cfg.val_every_n_epochs == 0:
            val = evaluate(fmodel, val_set, run.eval.batch_size, fabric, num_workers=run.data.num_workers)
            if not math.isfinite(val["bits_per_dim"]):
                raise non_finite("the validation loss", val["bits_per_dim"], epoch)
            row.update(val_nll_nats=val["nll_nats"], val_bits_per_dim=val["bits_per_dim"])
            monitored = val["bits_per_dim"]
        elif not len(val_set):
            monitored = train_bpd
        row.update(lr=lr, epoch_time_s=elapsed, images_per_s=seen / elapsed,
                   peak_memory_mb=_peak_memory_mb(fabric.device))

        improved = False
        if monitored is not None:
            if scheduler is not None:
                scheduler.step(monitored)
            improved = monitored < progress.best
            if improved:
                progress.best, progress.best_epoch, progress.bad_epochs = monitored, epoch, 0
            else:
                progress.bad_epochs += 1
            patience = cfg.early_stopping_patience
            progress.stopped = patience > 0 and progress.bad_epochs >= patience

        fabric.log_dict(row, step=progress.step)
        for logger in fabric.loggers:
            logger.save()
        if rank0:
            archive.append_metrics(row)
        state_now = checkpoint_state(row)
        if rank0:
            if improved:
                ckpt_io.save_checkpoint(folder / BEST, state_now)
            ckpt_io.save_checkpoint(folder / LAST, state_now)
        saved_epoch = epoch
        fabric.barrier()
        val_text = f"  val {row['val_bits_per_dim']:.4f}" if "val_bits_per_dim" in row else ""
        say(f"  epoch {epoch}/{cfg.epochs}  train {train_bpd:.4f}{val_text} bits/dim  "
            f"lr {lr:.2e}  {elapsed:.1f} s  {row['images_per_s']:.0f} img/s"
            + ("  (best)" if improved else "")
            + ("  early stopping" if progress.stopped else ""))

    # ------------------------------------------------------------ final evaluation
    chosen = folder / BEST if (folder / BEST).exists() else folder / LAST
    final = ckpt_io.load_checkpoint(chosen)
    model.load_state_dict(final["model_state"])
    split = run.eval.split
    figures = evaluate(fmodel, plan.data[split], run.eval.batch_size, fabric, num_workers=run.data.num_workers)
    result = {
        "run": run.name, "model": run.model.name, "split": split, **figures,
        "checkpoint": chosen.name, "epoch": final["epoch"],
    }
    if rank0:
        archive.set_test_metrics({k: v for k, v in result.items() if k not in ("run", "model", "split", "checkpoint")})
        atomic_write_json(folder / METRICS_JSON, result)
    say(f"  {split}: {figures['bits_per_dim']:.4f} bits/dim ({figures['nll_nats']:.2f} nats/image, "
        f"{figures['n_images']} images) from {chosen.name} (epoch {final['epoch']}) -> {folder / METRICS_JSON}")

    # ------------------------------------------------------------ samples
    # The single call site of pixelgen.sampling.
    if run.sample.n > 0 and rank0:
        _append_samples(model, run, tuple(train_set.shape), archive, chosen, final, say)
    fabric.barrier()
    for logger in fabric.loggers:
        logger.finalize("success")
    return result


def _append_samples(
    model: nn.Module, run: RunSpec, shape: tuple[int, int, int], archive: Any,
    checkpoint: pathlib.Path, state: dict[str, Any], say: Report,
) -> None:
    """Draw the recipe's ``[sample]`` images from the final model into the run archive.

    A class-conditional model draws the classes in turn (0, 1, 2, ...); the labels are
    stored with the batch.
    """
    from pixelgen.sampling import sample_to_archive

    _, height, width = shape
    s = run.sample
    n_classes = getattr(model, "n_classes", 0)
    labels = torch.arange(s.n) % n_classes if n_classes else None
    images, key = sample_to_archive(
        model, archive.path, s.n, height, width, batch_size=s.batch_size,
        temperature=s.temperature, top_p=s.top_p, seed=s.seed, sampler=s.sampler, labels=labels,
        model=run.model.name, checkpoint=str(checkpoint), recipe=state["recipe"], epoch=state["epoch"],
    )
    used = dict(archive.sample_batches())[key]["sampler"]
    say(f"  {s.n} samples ({used} sampler, seed {s.seed}) -> {archive.path}/samples/{key}")


def run_recipe(
    recipe: Recipe, *, out: str | os.PathLike | None = None, resume: bool = False,
    report: Report | None = None,
) -> list[dict[str, Any] | None]:
    """Train and evaluate every run of ``recipe`` in turn (see :func:`plan_runs`)."""
    plans = plan_runs(recipe, out=out, resume=resume)
    return [fit(plan, report) for plan in plans]


def evaluate_checkpoint(
    path: str | os.PathLike,
    split: str = "test",
    *,
    data_root: str | None = None,
    limit: int | None = None,
    accelerator: str = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint on ``split`` of the data set it was trained on.

    The model and the data settings come from the checkpoint alone; the validation split
    is cut again from the recorded seed and fraction. ``limit`` takes the first N images
    (default: the run's ``data.limit_<split>``; 0: the whole split).
    """
    from pixelgen.recipe import recipe_from_dict

    state = ckpt_io.load_checkpoint(path)
    try:
        recipe = recipe_from_dict(state["recipe"])
    except RecipeError as exc:
        raise CheckpointError(f"{path}: its stored recipe no longer validates: {exc}") from None
    run = recipe.runs[0]
    if limit is not None:
        key = {"train": "limit_train", "val": "limit_val", "test": "limit_test"}[split]
        run = attrs.evolve(run, data=attrs.evolve(run.data, **{key: limit or None}))
    data = load_data(run, root=data_root)
    model = ckpt_io.model_from_checkpoint(state)
    fabric = make_fabric(attrs.evolve(run.train, accelerator=accelerator, strategy="auto",
                                      num_nodes=1), devices=1)
    fmodel = fabric.setup_module(model)
    figures = evaluate(fmodel, data[split], run.eval.batch_size, fabric)
    return {
        "checkpoint": str(path), "model": state["model"]["name"], "epoch": state["epoch"],
        "split": split, **figures,
    }

"""The training loop of one run on Lightning Fabric, read top to bottom.

::

    trainer = Trainer(fabric, plan, say)
    trainer.setup()                 optimizer, scheduler, data loader, metric sinks
    trainer.restore(checkpoint)     weights, optimizer, scheduler, early stopping, RNGs
    while not trainer.done():
        row = trainer.train_epoch()         loss = bits/dim of the batch (pixelgen.nn.metrics)
        row |= trainer.validate(epoch)      NLL of the validation split
        trainer.end_epoch(row)              scheduler, early stopping, sinks, checkpoints

The trainer ends at training: evaluating the best checkpoint, drawing and scoring the run's
samples is the study's (:func:`pixelgen.study.finish.finish_run`), inside the same
:meth:`Trainer.holding_the_run`; :func:`pixelgen.api.run_recipe` runs the two in turn.

Checkpoints are written ``last.ckpt`` first, then ``best.ckpt`` when the epoch improved
on the monitored figure, each atomically (:mod:`pixelgen.store.files`): after a kill between
the two, the best epoch is the last one and :meth:`Trainer.restore` copies it over. The
data order of epoch ``e`` is a function of (seed, e) alone (a seeded
``DistributedSampler``, also with one process) and every random state is in the
checkpoint, so a resumed run repeats an uninterrupted one exactly.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import pathlib
import resource
import time
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from lightning_fabric.loggers import TensorBoardLogger
from lightning_fabric.utilities.seed import pl_worker_init_function
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from pixelgen.errors import PixelgenError, Report, silent
from pixelgen.nn.blocks import call_model, likelihood_of, n_classes_of
from pixelgen.nn.likelihoods import Categorical
from pixelgen.nn.metrics import bits_per_dim
from pixelgen.recipe import duration_seconds, recipe_to_dict
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.files import RunLock, remove_temporary_files
from pixelgen.store.runs import BEST, LAST, METRICS_JSON, write_resolved
from pixelgen.training.evaluation import (
    bare_module,
    evaluate,
    progress_bar_enabled,
    set_threads,
)
from pixelgen.training.policies import EarlyStopping, SignalGuard, Warmup
from pixelgen.training.sinks import (
    ArchiveSink,
    ConsoleSink,
    LoggerSink,
    MetricSink,
    RunProgress,
    log_sample_grid,
)


class TrainingError(PixelgenError):
    """Training cannot go on: a non-finite loss, or a resume that does not fit the recipe."""


# --------------------------------------------------------------------------- the trainer


class Trainer:
    """Trains one planned run (:class:`pixelgen.training.plan.RunPlan`) inside ``fabric.launch``."""

    def __init__(self, fabric: Any, plan: Any, report: Report) -> None:
        self.fabric, self.plan, self.run, self.folder = fabric, plan, plan.run, plan.run_dir
        self.cfg = plan.run.train
        self.rank0 = fabric.is_global_zero
        self.say = report if self.rank0 else silent
        self.model = plan.model
        likelihood = likelihood_of(self.model)
        # The loss's likelihood; none for the categorical, bits_per_dim's default, whose call stays as it was.
        self.likelihood_args = () if type(likelihood) is Categorical else (likelihood,)
        self.step = 0
        self.epoch = 0
        self.saved_epoch = 0
        self.signals = SignalGuard(self.folder)
        self.budget_s = duration_seconds(self.cfg.max_time)
        self.train_time_s = 0.0
        self.warmup = Warmup(self.cfg.warmup_steps)
        self.ema: AveragedModel | None = None
        self.bar: RunProgress | None = None
        val_set = plan.data["val"]
        self.stopping = EarlyStopping(
            "val_bits_per_dim" if len(val_set) else "train_bits_per_dim", self.cfg.early_stopping_patience
        )

    # -- setup and restore --------------------------------------------------------------

    def setup(self) -> None:
        """Seed, open the archive, build the optimizer, scheduler, loader and sinks."""
        fabric, cfg = self.fabric, self.cfg
        set_threads(cfg.threads)
        fabric.seed_everything(cfg.seed, workers=True, verbose=False)
        self.archive = RunArchive.create_or_open(self.folder / self.plan.recipe.output.archive) if self.rank0 else None
        if self.rank0:
            remove_temporary_files(self.folder)  # what a kill inside a write left behind
            write_resolved(self.plan.recipe, self.folder)
        fabric.barrier()
        optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optimizer.lr,
                                     betas=tuple(cfg.optimizer.betas), weight_decay=cfg.optimizer.weight_decay)
        self.scheduler = None
        if cfg.scheduler.name == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="min", factor=cfg.scheduler.factor,
                patience=cfg.scheduler.patience, min_lr=cfg.scheduler.min_lr,
            )
        train_set = self.plan.data["train"]
        net = self.model
        if cfg.compile:
            net = compiled(self.model.to(fabric.device), train_set[0][0].shape, conditional=self.conditional)
        self.fmodel, self.optimizer = fabric.setup(net, optimizer)
        if cfg.ema_decay > 0:  # the average of the bare model's weights, on its device
            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True)
        self.sampler = DistributedSampler(train_set, num_replicas=fabric.world_size, rank=fabric.global_rank,
                                          shuffle=True, seed=cfg.seed, drop_last=False)
        # Not fabric.setup_dataloaders: its loader sets the sampler's epoch to the number of
        # times it has been iterated, which restarts at 0 in a resumed process.
        self.loader = DataLoader(
            train_set, batch_size=self.run.data.batch_size, sampler=self.sampler,
            num_workers=self.run.data.num_workers,
            worker_init_fn=functools.partial(pl_worker_init_function, rank=fabric.global_rank),
        )
        self.sinks: list[MetricSink] = [LoggerSink(fabric), ConsoleSink(self.say, cfg.epochs)]
        if self.rank0:
            self.sinks.insert(1, ArchiveSink(self.archive))

    @property
    def eval_model(self) -> nn.Module:
        """The model validation, test and sampling use (the weights' average when it is on)."""
        return self.ema.module if self.ema is not None else self.fmodel

    @property
    def conditional(self) -> bool:
        return n_classes_of(self.model) > 0

    def restore(self, state: dict[str, Any] | None) -> None:
        """Continue from checkpoint ``state`` (None: a fresh start at epoch 0)."""
        if self.rank0:
            self.archive.truncate_metrics(0 if state is None else min(state["epoch"], self.archive.n_epochs))
            if self.plan.action != "evaluate":
                (self.folder / METRICS_JSON).unlink(missing_ok=True)
            if state is not None:
                repair_best(self.folder, state)
        self.fabric.barrier()
        if state is None:
            return
        self.model.load_state_dict(state["model_state"])
        restore_optimizer(self.optimizer, state["optimizer"], self.say)
        apply_new_lr(self.optimizer, state["recipe"]["train"]["optimizer"]["lr"], self.cfg.optimizer.lr, self.say)
        if self.scheduler is not None and state.get("scheduler"):
            self.scheduler.load_state_dict(state["scheduler"])
        if state.get("precision"):
            self.fabric.strategy.precision.load_state_dict(state["precision"])
        self.stopping.load_state_dict(state["early_stopping"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.train_time_s = float(state.get("train_time_s", 0.0))
        if self.ema is not None and state.get("ema_state"):
            self.ema.load_state_dict(state["ema_state"])
        self.saved_epoch = self.epoch
        rngs = state["rng"]
        same_world = len(rngs) == self.fabric.world_size
        ckpt_io.set_rng_state(rngs[self.fabric.global_rank] if same_world else rngs[0])
        if not same_world:
            self.say(f"  note: checkpoint written by {len(rngs)} processes, resuming on "
                     f"{self.fabric.world_size}: the data order continues, the random streams do not")

    # -- the loop -----------------------------------------------------------------------

    def done(self) -> bool:
        """Whether nothing is left to train: early stopping, ``epochs`` or ``max_steps`` reached."""
        return finished(self.epoch, self.step, self.stopping.stopped, self.run, self.train_time_s)

    @contextlib.contextmanager
    def holding_the_run(self) -> Iterator[Trainer]:
        """The run folder's lock (rank 0) held, and SIGINT/SIGTERM turned into a clean stop,
        for training and for whatever finishes the run after it (:mod:`pixelgen.study.finish`)."""
        with RunLock(self.folder) if self.rank0 else contextlib.nullcontext(), self.signals:
            yield self

    def train(self) -> None:
        """The loop of the module docstring, from the plan's checkpoint to the end of training
        (inside :meth:`holding_the_run`)."""
        self.setup()
        self.restore(self.plan.checkpoint)
        parameters = sum(p.numel() for p in self.model.parameters())
        self.say(f"run {self.run.name!r} ({self.run.model.name}, {parameters:,} parameters) -> "
                 f"{self.folder}: {self.plan.action}, epoch {self.epoch} of {self.cfg.epochs}")
        if self.rank0 and progress_bar_enabled() and not self.done():
            self.bar = RunProgress(self.total_steps(), self.step, self.run.name)
        while not self.done():
            row = self.train_epoch()
            row.update(self.validate(int(row["epoch"])))
            self.end_epoch(row)
        if self.bar is not None:
            self.bar.close(self.stop_reason())

    def total_steps(self) -> int:
        """Optimizer steps the run takes if nothing stops it early."""
        per_epoch = math.ceil(len(self.loader) / self.cfg.accumulate_grad_batches)
        total = self.cfg.epochs * per_epoch
        return min(total, self.cfg.max_steps) if self.cfg.max_steps is not None else total

    def stop_reason(self) -> str:
        if self.stopping.stopped:
            return f"early stopping: no improvement in {self.stopping.patience} epochs"
        if self.budget_s is not None and self.train_time_s >= self.budget_s:
            return f"time budget of {self.budget_s:.0f} s spent"
        if self.cfg.max_steps is not None and self.step >= self.cfg.max_steps:
            return f"max_steps {self.cfg.max_steps} reached"
        return "done"

    def train_epoch(self) -> dict[str, float]:
        """One pass over the training split (or up to ``max_steps`` or the time budget);
        the epoch's row so far."""
        fabric, cfg = self.fabric, self.cfg
        epoch = self.epoch + 1
        self.sampler.set_epoch(epoch)
        self.fmodel.train()
        lr = self.optimizer.param_groups[0]["lr"]
        reset_peak_memory(fabric.device)
        started = time.perf_counter()
        bpd_sum = torch.zeros((), dtype=torch.float64, device=fabric.device)
        n_images = 0
        batches = self.loader if self.bar is None else self.bar.epoch(self.loader, epoch)
        for k, (x, labels) in enumerate(batches, start=1):
            loss = self.training_step(x, labels, epoch, last=k % cfg.accumulate_grad_batches == 0 or k == len(self.loader))
            bpd_sum += loss.detach().double() * len(x)
            n_images += len(x)
            if self.bar is not None:
                self.bar.step(self.step, bpd_sum.item() / n_images)
            if self.step % cfg.log_every_n_steps == 0:
                self._log_step(loss)
            if (cfg.max_steps is not None and self.step >= cfg.max_steps) or self.out_of_time(started):
                break
        totals = torch.stack([bpd_sum, torch.tensor(float(n_images), dtype=torch.float64, device=fabric.device)])
        if fabric.world_size > 1:
            totals = fabric.all_reduce(totals, reduce_op="sum")
        elapsed = time.perf_counter() - started
        self.train_time_s += elapsed
        self.epoch = epoch
        return {"epoch": epoch, "step": self.step, "train_bits_per_dim": (totals[0] / totals[1]).item(),
                "lr": lr, "epoch_time_s": elapsed, "images_per_s": totals[1].item() / elapsed,
                "peak_memory_mb": peak_memory_mb(fabric.device)}

    def out_of_time(self, epoch_started: float) -> bool:
        """Whether ``train.max_time`` is spent (training time, summed over resumes)."""
        if self.budget_s is None:
            return False
        spent = self.train_time_s + time.perf_counter() - epoch_started >= self.budget_s
        if self.fabric.world_size > 1:  # every rank stops at the same step
            spent = self.fabric.all_reduce(torch.tensor(float(spent), device=self.fabric.device), reduce_op="sum") > 0
        return bool(spent)

    def training_step(self, x: torch.Tensor, labels: torch.Tensor, epoch: int, last: bool = True) -> torch.Tensor:
        """Forward, non-finite check (on every rank), backward; on the ``last`` batch of an
        accumulation group also warm-up, clip, optimizer step and the weights' average."""
        fabric, cfg = self.fabric, self.cfg
        x, labels = x.to(fabric.device), labels.to(fabric.device)
        with fabric.no_backward_sync(self.fmodel, enabled=not last):
            outputs = call_model(self.fmodel, x, labels if self.conditional else None)
            loss = bits_per_dim(outputs, x, *self.likelihood_args)
            bad = ~torch.isfinite(loss.detach())
            if fabric.world_size > 1:
                bad = fabric.all_reduce(bad.float(), reduce_op="sum") > 0
            if bad:
                raise self.non_finite("the training loss", loss.item(), epoch)
            fabric.backward(loss / cfg.accumulate_grad_batches)
        if not last:
            return loss
        self.warmup.apply(self.optimizer, self.step)
        if cfg.gradient_clip_norm is not None:
            # error_if_nonfinite=False: a non-finite gradient is the loss check's to report
            fabric.clip_gradients(self.fmodel, self.optimizer, max_norm=cfg.gradient_clip_norm,
                                  error_if_nonfinite=False)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update_parameters(self.model)
        self.step += 1
        return loss

    def _log_step(self, loss: torch.Tensor) -> None:
        for logger in self.fabric.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_metrics({"train_bits_per_dim_step": loss.item()}, step=self.step)

    def validate(self, epoch: int) -> dict[str, float]:
        """The validation split's NLL every ``val_every_n_epochs`` epochs (else nothing)."""
        val_set = self.plan.data["val"]
        if not len(val_set) or epoch % self.cfg.val_every_n_epochs:
            return {}
        val = evaluate(self.eval_model, val_set, self.run.eval.batch_size, self.fabric,
                       num_workers=self.run.data.num_workers)
        if not math.isfinite(val["bits_per_dim"]):
            raise self.non_finite("the validation loss", val["bits_per_dim"], epoch)
        return {"val_nll_nats": val["nll_nats"], "val_bits_per_dim": val["bits_per_dim"]}

    def end_epoch(self, row: dict[str, float]) -> None:
        """Scheduler and early stopping on the monitored figure, the sinks, the checkpoints."""
        monitored = row.get(self.stopping.monitor)
        improved = False
        if monitored is not None:
            if self.scheduler is not None:
                self.scheduler.step(monitored)
            improved = self.stopping.update(monitored, self.epoch)
        note = ("  (best)" if improved else "") + ("  early stopping" if self.stopping.stopped else "")
        for sink in self.sinks:
            sink.write(row, note)
        if self.rank0 and self.run.sample.tensorboard_n:
            log_sample_grid(self.fabric, bare_module(self.eval_model), self.plan.data["train"].shape,
                            self.run.sample, self.step)
        state = self.checkpoint_state(row)  # collective: every rank calls it
        if self.rank0:
            with self.signals.deferred():  # a signal waits until both files are whole
                ckpt_io.save_checkpoint(self.folder / LAST, state)
                if improved:
                    ckpt_io.save_checkpoint(self.folder / BEST, state)
        self.saved_epoch = self.epoch
        self.fabric.barrier()

    def checkpoint_state(self, row: dict[str, float]) -> dict[str, Any]:
        """Everything a resume needs (see :mod:`pixelgen.store.checkpoint` for the keys)."""
        return {
            "model": ckpt_io.plain(self.model.pixelgen_config),
            "model_state": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "recipe": recipe_to_dict(self.plan.recipe),
            "epoch": self.epoch,
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else {},
            "precision": self.fabric.strategy.precision.state_dict(),
            "early_stopping": {**self.stopping.state_dict(), "patience": self.cfg.early_stopping_patience},
            "sampler": {"seed": self.cfg.seed, "epoch": self.epoch},
            "rng": gather_rng(self.fabric),
            "metrics": row,
            "world_size": self.fabric.world_size,
            "train_time_s": self.train_time_s,
            **({"ema_state": {k: v.detach().cpu() for k, v in self.ema.state_dict().items()},
                "ema_decay": self.cfg.ema_decay} if self.ema is not None else {}),
        }

    def non_finite(self, what: str, value: float, epoch: int) -> TrainingError:
        kept = (f"the last good checkpoint {self.folder / LAST} (epoch {self.saved_epoch}) is kept"
                if self.saved_epoch else "no checkpoint was written")
        return TrainingError(
            f"run {self.run.name!r} stopped: {what} became {value} in epoch {epoch}, step {self.step}; "
            f"{kept}; lower train.optimizer.lr (or train.gradient_clip_norm), then --resume or start again"
        )

    # -- the weights a study of the run uses ---------------------------------------------

    def use_weights(self, state: dict[str, Any]) -> None:
        """Load checkpoint ``state``'s weights for evaluation and sampling (:attr:`eval_model`):
        the model's, and the average's where the run keeps one (the weights themselves where
        the checkpoint was written before the average was turned on)."""
        self.model.load_state_dict(state["model_state"])
        if self.ema is not None and state.get("ema_state"):
            self.ema.load_state_dict(state["ema_state"])
        elif self.ema is not None:
            self.ema.module.load_state_dict(state["model_state"])


# --------------------------------------------------------------------------- helpers


def finished(epoch: int, step: int, stopped: bool, run: Any, train_time_s: float = 0.0) -> bool:
    """Whether a run at ``epoch`` (completed), ``step`` and ``train_time_s`` seconds of
    training has nothing left to train under ``run``'s settings (``stopped``: early
    stopping has ended it)."""
    max_steps, budget = run.train.max_steps, duration_seconds(run.train.max_time)
    return (stopped or epoch >= run.train.epochs or (max_steps is not None and step >= max_steps)
            or (budget is not None and train_time_s >= budget))


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: dict[str, Any], say: Report) -> None:
    """The optimizer's state, unless the checkpoint's model had fewer parameters (a
    layer's state dict upgraded on load, such as a Diagonal BiLSTM saved before its initial
    state was learned): then its moments start afresh, with a note."""
    sizes = [len(group["params"]) for group in saved["param_groups"]]
    if sizes == [len(group["params"]) for group in optimizer.param_groups]:
        optimizer.load_state_dict(saved)
    else:
        say("  note: the checkpoint's model had fewer parameters (written by an older pixelgen); "
            "its weights are kept, the optimizer's moments start afresh")


def apply_new_lr(optimizer: torch.optim.Optimizer, trained_lr: float, lr: float, say: Report) -> None:
    """A changed ``train.optimizer.lr`` on resume (the advice after a non-finite loss) applies."""
    if trained_lr == lr:
        return
    for group in optimizer.param_groups:
        group["lr"] = lr
    say(f"  note: train.optimizer.lr is now {lr:g} (was {trained_lr:g}); "
        f"the resumed run continues at the new rate")


def repair_best(folder: os.PathLike, state: dict[str, Any]) -> None:
    """Rewrite ``best.ckpt`` from ``last.ckpt``'s ``state`` where a kill came between the two
    writes of an improving epoch (the best epoch is then the last one)."""
    best_epoch = state["early_stopping"]["best_epoch"]
    if best_epoch != state["epoch"]:
        return
    best = pathlib.Path(folder) / BEST
    if best.exists() and ckpt_io.load_checkpoint(best)["epoch"] == best_epoch:
        return
    ckpt_io.save_checkpoint(best, {k: v for k, v in state.items() if k not in ("format", "format_version")})


def compiled(model: nn.Module, image_shape: tuple[int, ...], *, conditional: bool) -> nn.Module:
    """``torch.compile(model)`` if it compiles here (tried on one small batch), else the
    model itself with a one-line warning: compilation needs a working compiler toolchain
    (Triton on a GPU, a C++ compiler on the CPU) and helps mostly on a GPU."""
    compiled_model = torch.compile(model)
    device = next(model.parameters()).device
    x = torch.zeros(2, *image_shape, dtype=torch.long, device=device)
    labels = torch.zeros(2, dtype=torch.long, device=device) if conditional else None
    try:
        compiled_model(x, labels).sum().backward()
    except Exception as exc:  # any backend failure: train eagerly rather than not at all
        warnings.warn(f"train.compile: torch.compile failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0][:160]}); training without it", stacklevel=2)
        return model
    finally:
        model.zero_grad(set_to_none=True)
    return compiled_model


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory measurement (one per epoch)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: "5" resets the process's peak resident set size (VmHWM)
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
    except OSError:
        pass  # elsewhere the peak below is the whole process's so far


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory since :func:`reset_peak_memory`: CUDA allocations on a GPU, resident
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


def gather_rng(fabric: Any) -> list[dict[str, torch.Tensor]]:
    """Every process's random state, rank order (a collective call: all ranks enter it)."""
    state = ckpt_io.rng_state()
    if fabric.world_size == 1:
        return [state]
    gathered = fabric.all_gather({k: v.to(fabric.device) for k, v in state.items()})
    return [{k: v[r].cpu() for k, v in gathered.items()} for r in range(fabric.world_size)]

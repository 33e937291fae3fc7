"""The end of a run: what ``pixelgen run`` does once its training has ended.

::

    finish_run(trainer)     evaluate the best checkpoint on eval.split (every rank), then on
                            rank 0: draw the run's samples into its archive, samples.png,
                            the archive's test figures, [score], and metrics.json last

``metrics.json`` is written last: it marks the run finished. A finish that a kill
interrupts is done again by ``--resume`` (the plan's action "evaluate"); the samples an
interrupted finish archived are found again (:func:`final_batch`,
:func:`~pixelgen.study.inference.archived_score_batch`), never drawn twice. The drawing and
scoring steps are those of ``pixelgen sample`` and ``pixelgen score``
(:mod:`pixelgen.study.inference`, :class:`pixelgen.study.scoring.Scoring`), applied to the
weights the trainer holds.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import attrs
import torch

from pixelgen.nn.blocks import n_levels_of
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.store.archive import RunArchive
from pixelgen.store.files import atomic_write_json
from pixelgen.store.images import save_grid
from pixelgen.store.runs import LAST, METRICS_JSON, SAMPLES_PNG, final_checkpoint
from pixelgen.study.inference import (
    archived_score_batch,
    class_labels,
    draw_from_checkpoint,
)
from pixelgen.study.scoring import FIGURES, Scoring
from pixelgen.training.evaluation import bare_module, evaluate, progress_bar_enabled
from pixelgen.training.trainer import Trainer


def finish_run(trainer: Trainer) -> dict[str, Any]:
    """Evaluate the best checkpoint of ``trainer``'s run on ``eval.split``, write
    ``metrics.json`` and the archive's test figures, draw the run's samples and, with
    ``[score]``, score new ones; the figures of ``metrics.json``.

    Called on every rank inside ``fabric.launch`` after :meth:`~pixelgen.training.trainer.Trainer.train`, within
    :meth:`~pixelgen.training.trainer.Trainer.holding_the_run`: the evaluation is collective, rank 0 writes.
    """
    fabric, run, folder = trainer.fabric, trainer.run, trainer.folder
    chosen = final_checkpoint(folder) or folder / LAST
    final = ckpt_io.load_checkpoint(chosen)
    trainer.use_weights(final)
    split = run.eval.split
    figures = evaluate(trainer.eval_model, trainer.plan.data[split], run.eval.batch_size, fabric,
                       num_workers=run.data.num_workers)
    result = {"run": run.name, "model": run.model.name, "split": split, **figures,
              "checkpoint": chosen.name, "epoch": final["epoch"],
              "weights": "ema" if trainer.ema is not None else "raw"}
    if trainer.rank0 and run.sample.n > 0:
        run_samples(trainer, chosen, final)
        trainer.archive.set_test_metrics({k: v for k, v in result.items()
                                          if k not in ("run", "model", "split", "checkpoint", "weights")})
        if run.score.metrics:
            result["score"] = score_run(trainer, chosen, final)
        atomic_write_json(folder / METRICS_JSON, result)  # last: it marks the run finished
    trainer.say(f"  {split}: {figures['bits_per_dim']:.4f} bits/dim ({figures['nll_nats']:.2f} nats/image, "
                f"{figures['n_images']} images) from {chosen.name} (epoch {final['epoch']}) -> "
                f"{folder / METRICS_JSON}")
    fabric.barrier()
    for logger in fabric.loggers:
        logger.finalize("success")
    return result


def final_batch(archive: RunArchive, checkpoint: os.PathLike, epoch: int, seed: int) -> str | None:
    """The archive key of a run's end-of-run samples of ``checkpoint`` (at ``epoch``, drawn
    with ``seed``), if they were drawn already."""
    for key, a in archive.sample_batches():
        if (a.get("source") == "run" and a.get("checkpoint") == str(checkpoint)
                and a.get("epoch") == epoch and a.get("seed") == seed):
            return key
    return None


def run_samples(trainer: Trainer, checkpoint: Path, state: dict[str, Any]) -> None:
    """The run's ``[sample]`` images of the final model in its archive (unless an earlier,
    interrupted finish drew them) and ``samples.png`` beside it, upscaled."""
    archive, settings = trainer.archive, trainer.run.sample
    if final_batch(archive, checkpoint, state["epoch"], settings.seed) is None:
        _draw(trainer, checkpoint, state, settings, source="run")
    images = torch.from_numpy(archive.read_samples(final_batch(archive, checkpoint, state["epoch"], settings.seed)))
    path = save_grid(images, trainer.folder / SAMPLES_PNG, n_levels_of(trainer.model))
    trainer.say(f"  samples drawn -> {path}")


def score_run(trainer: Trainer, checkpoint: Path, state: dict[str, Any]) -> dict[str, Any]:
    """``[score]``: the metrics of ``score.n`` new samples of the final model (archived
    with source "score", drawn once even if a kill interrupts this) against the first
    ``score.n`` training images; stored in the archive's ``score`` group."""
    run, archive = trainer.run, trainer.archive
    sc = run.score
    scoring = Scoring.prepare(sc.features, run.data, sc.n, weights_path=sc.weights_path, report=trainer.say)
    settings = attrs.evolve(run.sample, n=sc.n, seed=sc.seed)
    key = (archived_score_batch(archive, checkpoint, state["epoch"], settings)
           or _draw(trainer, checkpoint, state, settings, source="score"))
    figures = scoring.score(archive.read_samples(key), sc.metrics, trainer.fabric.device.type)
    figures.update(sample_batch=key, checkpoint=checkpoint.name, epoch=state["epoch"])
    archive.set_score(sc.features, figures)
    shown = ", ".join(f"{name} {figures[name]:.4g}" for name in FIGURES if name in figures)
    trainer.say(f"  score ({scoring.space.label}): {shown}")
    return figures


def _draw(trainer: Trainer, checkpoint: Path, state: dict[str, Any], settings: Any, source: str) -> str:
    """``settings.n`` images of the weights the trainer holds into the run's archive; the
    batch's key. A class-conditional model draws the classes in turn (0, 1, 2, ...)."""
    _, height, width = trainer.plan.data["train"].shape
    model = bare_module(trainer.eval_model)
    _, key = draw_from_checkpoint(model, trainer.archive.path, checkpoint, state, settings, height, width,
                                  labels=class_labels(model, settings.n), progress=progress_bar_enabled(),
                                  source=source)
    used = dict(trainer.archive.sample_batches())[key]["sampler"]
    trainer.say(f"  {settings.n} samples ({used} sampler, seed {settings.seed}) -> "
                f"{trainer.archive.path}/samples/{key}")
    return key

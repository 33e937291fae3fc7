"""Where the training loop's figures go: one progress bar over the run, the sinks of each
epoch's metrics row (Fabric's loggers, the run archive, the console), and a grid of samples
in TensorBoard after each epoch.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Protocol

import attrs
import torch
from lightning_fabric.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelgen.errors import Report
from pixelgen.nn.blocks import n_classes_of, n_levels_of
from pixelgen.sampling import sample
from pixelgen.store.archive import RunArchive
from pixelgen.store.images import to_display


class RunProgress:
    """One bar over the whole run: optimizer steps against the run's step budget
    (``epochs`` x steps per epoch, or ``max_steps`` if fewer), with ETA, epoch and loss.
    Early stopping and the time budget end it early, and it says why."""

    def __init__(self, total_steps: int, done_steps: int, name: str) -> None:
        self.name = name
        self.bar = tqdm(total=total_steps, initial=done_steps, desc=name, unit="step", file=sys.stderr,
                        dynamic_ncols=True, leave=True)

    def epoch(self, loader: DataLoader, epoch: int) -> DataLoader:
        self.bar.set_description_str(f"{self.name} epoch {epoch}")
        return loader

    def step(self, step: int, bits_per_dim: float) -> None:
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix_str(f"train {bits_per_dim:.3f} bits/dim")

    def close(self, why: str = "") -> None:
        if why:
            self.bar.set_postfix_str(why)
        self.bar.close()


class MetricSink(Protocol):
    """Somewhere an epoch's metrics row goes."""

    def write(self, row: dict[str, float], note: str) -> None: ...


@attrs.define
class LoggerSink:
    """Fabric's loggers (TensorBoard and CSV)."""

    fabric: Any

    def write(self, row: dict[str, float], note: str) -> None:
        self.fabric.log_dict(row, step=int(row["step"]))
        for logger in self.fabric.loggers:
            logger.save()


@attrs.define
class ArchiveSink:
    """The run archive's ``metrics`` group (rank 0 only)."""

    archive: RunArchive

    def write(self, row: dict[str, float], note: str) -> None:
        self.archive.append_metrics(row)


@attrs.define
class ConsoleSink:
    """One line per epoch through the run's report function."""

    say: Report
    epochs: int

    def write(self, row: dict[str, float], note: str) -> None:
        val = f"  val {row['val_bits_per_dim']:.4f}" if "val_bits_per_dim" in row else ""
        self.say(f"  epoch {int(row['epoch'])}/{self.epochs}  train {row['train_bits_per_dim']:.4f}{val} "
                 f"bits/dim  lr {row['lr']:.2e}  {row['epoch_time_s']:.1f} s  "
                 f"{row['images_per_s']:.0f} img/s{note}")


def log_sample_grid(fabric: Any, model: nn.Module, shape: tuple[int, int, int], settings: Any, step: int) -> None:
    """``settings.tensorboard_n`` samples of ``model`` (bare, on Fabric's device) as it is after
    an epoch, as one TensorBoard image of images of ``shape`` ``(C, H, W)``, drawn with the
    ``[sample]`` ``settings`` and their own seeded generator: the training's random streams
    are untouched."""
    from torchvision.utils import make_grid  # here: importing torchvision costs about a second

    loggers = [lg for lg in fabric.loggers if isinstance(lg, TensorBoardLogger)]
    if not loggers:
        return
    _, height, width = shape
    n, n_classes = settings.tensorboard_n, n_classes_of(model)
    labels = torch.arange(n, device=fabric.device) % n_classes if n_classes else None
    images = sample(model, n, height, width, seed=settings.seed, temperature=settings.temperature,
                    top_p=settings.top_p, labels=labels, sampler=settings.sampler)
    grid = make_grid(to_display(images.cpu(), n_levels_of(model)), nrow=math.ceil(math.sqrt(n)), padding=1,
                     pad_value=255)  # (3, H', W')
    for logger in loggers:
        logger.experiment.add_image("samples", grid, global_step=step)

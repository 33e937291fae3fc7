"""Where the training loop's figures go: one progress bar over the run, and the sinks of each
epoch's metrics row (Fabric's loggers, the run archive, the console).
"""

from __future__ import annotations

import sys
from typing import Any, Protocol

import attrs
from torch.utils.data import DataLoader
from tqdm import tqdm

from pixelgen.errors import Report
from pixelgen.store.archive import RunArchive


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

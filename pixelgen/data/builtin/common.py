"""What the built-in data sets share: the official split names, the in-memory
:class:`TensorImages`, and downloads that give up after a few seconds without a network and
leave no empty folders behind.
"""

from __future__ import annotations

import contextlib
import pathlib
import socket
from typing import Any, Callable, Iterator, Sequence

import torch
from torch.utils.data import Dataset

from pixelgen.errors import DataError, one_line

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 5.0
#: At most this many characters of an exception are quoted inside a DataError message.
REASON_CHARS = 160


def check_split(dataset_name: str, split: str) -> bool:
    """True for the training split; DataError for anything but "train"/"test"."""
    if split not in SPLITS:
        raise DataError(f"{dataset_name}: split must be 'train' or 'test', got {split!r}")
    return split == "train"



@contextlib.contextmanager
def fail_fast_network(timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give every socket opened inside a short default timeout, restored afterwards.

    Without it a download attempt on a machine with no network can hang for minutes.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def try_download(download: Callable[[], Any], folder: pathlib.Path) -> str | None:
    """Run a torchvision download that writes into ``folder``; None on success, else a
    one-line reason.

    torchvision makes ``folder`` (and any missing parent) before it knows whether the
    download works; after a failure the ones this call created are removed again if they
    are still empty, so a failed attempt leaves no empty folders behind.
    """
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        with fail_fast_network():
            download()
    except Exception as exc:  # any failure (no network, bad checksum, disk full) is reported
        _remove_empty_folders(created)
        return one_line(exc, REASON_CHARS)
    return None


def _remove_empty_folders(folders: Sequence[pathlib.Path]) -> None:
    """``rmdir`` each of ``folders`` in order; a folder that is missing or not empty (a
    partly downloaded file, another process's files) is left alone."""
    for folder in folders:
        with contextlib.suppress(OSError):
            folder.rmdir()


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor ``(N, C, H, W)`` with integer labels."""

    def __init__(self, images: torch.Tensor, targets: Sequence[int], n_classes: int):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"expected uint8 images (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if len(targets) != len(images):
            raise ValueError(f"{len(images)} images but {len(targets)} labels")
        self.images = images
        self.targets = [int(t) for t in targets]
        self.n_classes = n_classes
        self.shape = tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], self.targets[index]

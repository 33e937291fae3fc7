"""CIFAR-10 (Krizhevsky, 2009), read by torchvision from its batch files, the archive, or a
download; every way a file can be wrong is named in one line.
"""

from __future__ import annotations

import pathlib
import pickle
from typing import Sequence

import numpy as np
import torch

from pixelgen.data.builtin.common import REASON_CHARS, TensorImages, check_split, try_download
from pixelgen.errors import DataError, one_line


def cifar10(root: str, split: str, *, download: bool = True) -> TensorImages:
    """CIFAR-10 (Krizhevsky, 2009): 50 000 train / 10 000 test colour images, 10 classes.

    Read by ``torchvision.datasets.CIFAR10``, which verifies the md5 of every batch file.
    An existing ``root/cifar-10-batches-py/`` is used as is; a lone
    ``root/cifar-10-python.tar.gz`` is md5-checked and extracted; otherwise, with
    ``download=True``, torchvision downloads and verifies the archive.

    Returns:
        items ``(uint8 (3, 32, 32) in R, G, B order, label 0..9)``.
    """
    train = check_split("cifar10", split)
    raw = _open_cifar10(pathlib.Path(root), train, download)
    # torchvision keeps HWC numpy data; put channels first without going through PIL.
    images = torch.from_numpy(raw.data).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    return TensorImages(images, raw.targets, n_classes=len(raw.classes))


def _open_cifar10(root: pathlib.Path, train: bool, download: bool):
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, extract_archive

    put_hint = f"put {CIFAR10.filename} from {CIFAR10.url} into {root}"
    raw = _read_cifar10(CIFAR10, root, train, put_hint)
    if raw is not None:
        return raw

    archive = root / CIFAR10.filename
    batches = root / CIFAR10.base_folder
    if archive.is_file():
        if check_integrity(str(archive), CIFAR10.tgz_md5):
            try:
                extract_archive(str(archive), str(root))
            except Exception as exc:
                raise DataError(
                    f"cifar10: {archive} passes its md5 check but cannot be extracted "
                    f"({one_line(exc, REASON_CHARS)}); delete it and {put_hint}"
                ) from None
            raw = _read_cifar10(CIFAR10, root, train, put_hint)
            if raw is None:
                raise DataError(
                    f"cifar10: {archive} passes its md5 check but extracting it did not give a "
                    f"valid {CIFAR10.base_folder}/; delete both and {put_hint}"
                )
            return raw
        if not download:
            raise DataError(
                f"cifar10: {archive} fails its md5 check (expected {CIFAR10.tgz_md5}); "
                f"delete it and {put_hint}"
            )

    state = (
        f"{batches} is incomplete or fails its md5 check"
        if batches.exists()
        else f"no CIFAR-10 under {root}"
    )
    if not download:
        raise DataError(f"cifar10: {state} and download=False; {put_hint}")
    # torchvision's download() fetches the archive, checks its md5 and extracts it.
    reason = try_download(lambda: CIFAR10(str(root), train=train, download=True), batches)
    raw = None if reason is not None else _read_cifar10(CIFAR10, root, train, put_hint)
    if raw is None:
        reason = reason or f"{batches} still fails its md5 check afterwards"
        raise DataError(f"cifar10: {state} and the download failed ({reason}); {put_hint}")
    return raw


def _read_cifar10(cifar10_class: type, root: pathlib.Path, train: bool, put_hint: str):
    """torchvision's CIFAR10 over the batch files under ``root``; None when they are missing
    or fail torchvision's md5 check.

    Raises:
        DataError: the md5s match but a file does not hold what a CIFAR-10 batch holds.
    """
    batches = root / cifar10_class.base_folder
    try:
        raw = cifar10_class(str(root), train=train, download=False)
    except RuntimeError:  # torchvision: "Dataset not found or corrupted"
        return None
    except Exception:  # a KeyError for a missing key, a ValueError for a bad shape, ...
        raw = None
    if raw is None or len(raw.targets) != len(raw.data) or raw.data.dtype != np.uint8:
        listed = cifar10_class.train_list if train else cifar10_class.test_list
        names = [name for name, _ in listed] + [cifar10_class.meta["filename"]]
        problem = _cifar10_problem(batches, names)
        raise DataError(f"cifar10: {problem}; delete {batches} and {put_hint}")
    return raw


# What each CIFAR-10 file must hold (torchvision reads these keys; the batches' "data" is
# uint8 (N, 3072) and "labels" has N entries).
_CIFAR10_BATCH_KEYS = ("data", "labels")
_CIFAR10_META_KEYS = ("label_names",)


def _cifar10_problem(batches: pathlib.Path, names: Sequence[str]) -> str:
    """What is wrong with the first of ``names`` under ``batches`` that is not a CIFAR-10
    file, as "<path> <problem>" on one line."""
    for name in names:
        path = batches / name
        try:
            with open(path, "rb") as handle:
                entry = pickle.load(handle, encoding="latin1")  # as torchvision reads it
        except Exception as exc:  # unpickling a damaged file can raise almost anything
            return f"{path} cannot be unpickled ({one_line(exc, REASON_CHARS)})"
        if not isinstance(entry, dict):
            return f"{path} holds a {type(entry).__name__}, not a dict"
        required = _CIFAR10_META_KEYS if name == "batches.meta" else _CIFAR10_BATCH_KEYS
        missing = [key for key in required if key not in entry]
        if missing:
            keys = ", ".join(sorted(map(str, entry))) or "none"
            return f"{path} lacks the key {missing[0]!r} (its keys: {keys})"
        if name == "batches.meta":
            continue
        data = np.asarray(entry["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            return f"{path} holds 'data' of {data.dtype} {data.shape}, not uint8 (N, 3072)"
        if len(entry["labels"]) != len(data):
            return f"{path} holds {len(data)} images but {len(entry['labels'])} labels"
    return f"{batches} does not read as CIFAR-10"

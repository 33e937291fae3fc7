"""Downsampled ImageNet 32x32 and 64x64 (Chrabaszcz et al. 2017), read lazily from the
``.npz`` release; nothing is downloaded (the files need an image-net.org account).
"""

from __future__ import annotations

import math
import pathlib
import struct
import zipfile
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelgen.data.builtin.common import REASON_CHARS, SPLITS
from pixelgen.errors import DataError, one_line

# The downsampled ImageNet release of Chrabaszcz, Loshchilov and Hutter (2017, "A Downsampled
# Variant of ImageNet as an Alternative to the CIFAR datasets"), from image-net.org (an
# account is required, so nothing is downloaded here). Each .npz holds "data", uint8
# (N, 3 * s * s): the 1024 (or 4096) red values, then green, then blue, each plane row-major,
# as CIFAR-10; and "labels", 1..1000 (stored here as 0..999). Training: 1 281 167 images in
# train_data_batch_1.npz ... train_data_batch_10.npz; validation: 50 000 in val_data.npz.
IMAGENET_TRAIN_FILES = tuple(f"train_data_batch_{k}.npz" for k in range(1, 11))
IMAGENET_VAL_FILE = "val_data.npz"
IMAGENET_SOURCE = "image-net.org, Download, 'Downsampled ImageNet' (an image-net.org account is required)"


def _npy_in_npz(path: pathlib.Path, key: str) -> tuple[tuple[int, ...], np.dtype, int | None]:
    """Shape and dtype of array ``key`` of an .npz file, and the byte offset of its values
    in the file when the member is stored uncompressed (``np.savez``), else None; the
    values themselves are not read."""
    with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran_order, dtype = header(member)
        header_bytes = member.tell()
        info = archive.getinfo(f"{key}.npy")
    if fortran_order or info.compress_type != zipfile.ZIP_STORED:
        return shape, dtype, None
    with open(path, "rb") as handle:  # the local file header: 30 bytes, the name, an extra field
        handle.seek(info.header_offset + 26)
        name_bytes, extra_bytes = struct.unpack("<HH", handle.read(4))
    return shape, dtype, info.header_offset + 30 + name_bytes + extra_bytes + header_bytes


class DownsampledImageNet(Dataset):
    """Downsampled ImageNet read from its .npz batch files on access, not at construction.

    Construction reads each file's header and labels only. The images are memory-mapped
    from files whose arrays are stored uncompressed (``np.savez``), so only the pages an
    item touches are read; a compressed file (``np.savez_compressed``) is decompressed whole
    on its first access and kept. Items: ``(uint8 (3, s, s), label 0..999)``.
    """

    def __init__(self, files: Sequence[pathlib.Path], size: int, dataset_name: str):
        self.files, self.size, self.shape, self.n_classes = list(files), size, (3, size, size), 1000
        self._layout = [_checked_imagenet_file(path, size, dataset_name) for path in self.files]
        labels = [self._labels(path, n) for path, (n, _) in zip(self.files, self._layout)]
        self.offsets = np.cumsum([0] + [len(batch) for batch in labels])  # first item of each file
        self.targets = np.concatenate(labels).astype(np.int64) - 1  # (N,) 0..999
        self._arrays: list[np.ndarray | None] = [None] * len(self.files)

    def _labels(self, path: pathlib.Path, n: int) -> np.ndarray:
        fix = f"replace it with the original from {IMAGENET_SOURCE}"
        try:
            with np.load(path) as archive:
                labels = np.asarray(archive["labels"]).reshape(-1)
        except Exception as exc:  # a missing key, pickled objects, a damaged member
            raise DataError(f"{path}: cannot read its 'labels' ({one_line(exc, REASON_CHARS)}); {fix}") from None
        if len(labels) != n or labels.dtype.kind not in "iu" or (n and (labels.min() < 1 or labels.max() > 1000)):
            raise DataError(f"{path}: 'labels' must be {n} integers 1..1000, got {labels.dtype} "
                            f"{labels.shape} in {labels.min() if n else '-'}..{labels.max() if n else '-'}; {fix}")
        return labels

    def _array(self, k: int) -> np.ndarray:
        if self._arrays[k] is None:
            n, offset = self._layout[k]
            if offset is not None:
                row = 3 * self.size * self.size
                self._arrays[k] = np.memmap(self.files[k], np.uint8, "r", offset=offset, shape=(n, row))
            else:
                with np.load(self.files[k]) as archive:
                    self._arrays[k] = archive["data"]  # (n, 3 s s), decompressed once
        return self._arrays[k]

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers map the files again
        return {**self.__dict__, "_arrays": [None] * len(self.files)}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        k = int(np.searchsorted(self.offsets, index, side="right")) - 1
        row = np.array(self._array(k)[index - self.offsets[k]])  # (3 s s,): a copy, off the map
        return torch.from_numpy(row.reshape(3, self.size, self.size)), int(self.targets[index])  # (3, s, s)


def _checked_imagenet_file(path: pathlib.Path, size: int, dataset_name: str) -> tuple[int, int | None]:
    """``(number of images, offset of the memory-mappable values or None)``; DataError
    for a file that is not a downsampled-ImageNet batch of this size."""
    fix = f"replace it with the original from {IMAGENET_SOURCE}"
    try:
        shape, dtype, offset = _npy_in_npz(path, "data")
    except Exception as exc:  # not a zip, no data.npy, a damaged header
        raise DataError(f"{path}: not a downsampled-ImageNet .npz with a 'data' array ({one_line(exc, REASON_CHARS)}); "
                        f"{fix}") from None
    found = int(round(math.sqrt(shape[1] // 3))) if len(shape) == 2 else 0
    if dtype != np.uint8 or len(shape) != 2 or 3 * found * found != shape[1]:
        raise DataError(f"{path}: 'data' is {dtype} {shape}, not uint8 (N, 3 * s * s); {fix}")
    if found != size:
        raise DataError(f"{path}: holds {found}x{found} images, but {dataset_name} is {size}x{size}; "
                        f"use imagenet{found}, or put the {size}x{size} files there")
    return shape[0], offset


def _find_imagenet_files(root: pathlib.Path, names: Sequence[str], size: int) -> tuple[list[pathlib.Path], list[str]]:
    """``(found, missing)``: each of ``names`` from ``root`` or from a folder under it whose
    name holds the size (``Imagenet32_train_npz/``, ``imagenet64/``), and the names of none."""
    folders = [root, *sorted(p for p in root.iterdir() if p.is_dir() and str(size) in p.name)] if root.is_dir() else []
    found = {name: next((f / name for f in folders if (f / name).is_file()), None) for name in names}
    return [path for path in found.values() if path is not None], [n for n, path in found.items() if path is None]


def _downsampled_imagenet(size: int, root: str, split: str) -> DownsampledImageNet:
    name = f"imagenet{size}"
    if split not in SPLITS:
        raise DataError(f"{name}: split must be 'train' or 'test' (the official validation files), got {split!r}")
    names = IMAGENET_TRAIN_FILES if split == "train" else (IMAGENET_VAL_FILE,)
    root_path = pathlib.Path(root)
    files, missing = _find_imagenet_files(root_path, names, size)
    if missing:
        listed = ", ".join(missing) if len(missing) < 4 else f"{missing[0]} ... {missing[-1]} ({len(missing)} files)"
        raise DataError(
            f"{name}: no {listed} under {root_path}; put the {size}x{size} .npz files from {IMAGENET_SOURCE} "
            f"into {root_path} (nothing is downloaded: the files need an account)"
        )
    return DownsampledImageNet(files, size, name)


def imagenet32(root: str, split: str, *, download: bool = True) -> DownsampledImageNet:
    """Downsampled ImageNet 32x32 (Chrabaszcz et al. 2017): 1 281 167 train / 50 000 test
    images, items ``(uint8 (3, 32, 32) in R, G, B order, label 0..999)``.

    ``"test"`` is the official validation file ``val_data.npz`` (ImageNet's test labels
    are not public; Pixel RNN, section 5.7, reports its ImageNet figures on it too). The
    files are read lazily (see :class:`DownsampledImageNet`). ``download`` is accepted
    and ignored: the files need an image-net.org account.
    """
    return _downsampled_imagenet(32, root, split)


def imagenet64(root: str, split: str, *, download: bool = True) -> DownsampledImageNet:
    """Downsampled ImageNet 64x64: as :func:`imagenet32`, with 64x64 images."""
    return _downsampled_imagenet(64, root, split)

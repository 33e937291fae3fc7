"""The MNIST family: the IDX reader, MNIST and Fashion-MNIST (optionally thresholded once),
dynamically binarized MNIST, and the fixed binarization of Larochelle & Murray (``.amat``).
"""

from __future__ import annotations

import gzip
import math
import os
import pathlib
import struct
import zlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelgen.data.builtin.common import REASON_CHARS, TensorImages, check_split, try_download
from pixelgen.errors import DataError, one_line

# IDX format (LeCun et al.): big-endian; magic = 0x00 0x00 <type> <number of dims>, then one
# uint32 per dimension, then the values in row-major order. MNIST uses type 0x08 (uint8).
#
# Read here rather than by torchvision.datasets.mnist.read_sn3_pascalvincent_tensor, which
# was measured against the files these loaders must accept or refuse (torchvision 0.29):
# it open()s a path, so a .gz file fails (AssertionError) and would need a decompressed
# temporary copy (47 MB, +75 ms for Fashion-MNIST's training images); it reads a float32
# IDX file as data; and a wrong header or size fails by `assert` (gone under `python -O`,
# then a bare KeyError or RuntimeError) naming no file. The header checks below are needed
# for one-line errors either way, and after them only frombuffer + reshape is left.
_IDX_UBYTE = 0x08
_IDX_STEMS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def read_idx(path: str | os.PathLike) -> torch.Tensor:
    """Read an unsigned-byte IDX file (gzipped if its name ends in ``.gz``) as uint8.

    Raises:
        DataError: unreadable, not gzip or corrupt gzip when named .gz, wrong magic
            number, or a payload whose size does not match the dimensions in the header.
    """
    path = pathlib.Path(path)
    raw = _read_idx_bytes(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != _IDX_UBYTE or raw[3] == 0:
        raise DataError(
            f"{path}: not an unsigned-byte IDX file (magic number {raw[:4].hex() or 'missing'}, "
            f"expected 000008xx); replace it"
        )
    n_dims = raw[3]
    header_bytes = 4 + 4 * n_dims
    if len(raw) < header_bytes:
        raise DataError(f"{path}: IDX header truncated; replace it")
    dims = struct.unpack(f">{n_dims}I", raw[4:header_bytes])
    n_values = math.prod(dims)
    if len(raw) - header_bytes != n_values:
        raise DataError(
            f"{path}: IDX header promises {n_values} values {dims} but the file holds "
            f"{len(raw) - header_bytes}; it is truncated or corrupt, replace it"
        )
    if n_values == 0:
        return torch.empty(dims, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw[header_bytes:]), dtype=torch.uint8).reshape(dims)


def _read_idx_bytes(path: pathlib.Path) -> bytes:
    """The file's bytes, decompressed when its name ends in ``.gz``."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            return handle.read()
    except zlib.error as exc:  # a damaged deflate stream: not an OSError
        reason = f"corrupt gzip data: {one_line(exc, REASON_CHARS)}"
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile (bad magic, CRC) is an OSError
        reason = one_line(exc, REASON_CHARS)
    raise DataError(f"{path}: cannot read this IDX file ({reason}); replace it")


def _find_idx_pair(root: pathlib.Path, torchvision_folder: str, stems: Sequence[str]):
    """Paths of the images and labels files, from one folder: ``root`` itself or
    torchvision's ``root/<Class>/raw``; an uncompressed file is preferred to its ``.gz``."""
    for folder in (root, root / torchvision_folder / "raw"):
        found = []
        for stem in stems:
            candidates = [folder / stem, folder / f"{stem}.gz"]
            found.append(next((p for p in candidates if p.is_file()), None))
        if all(found):
            return found
    return None


def _torchvision_class(name: str) -> type:
    """``torchvision.datasets.<name>``, imported only to download or to name a mirror: the files
    are read here, and importing torchvision costs about a second."""
    from torchvision import datasets

    return getattr(datasets, name)


def _mirror(torchvision_name: str) -> str:
    return _torchvision_class(torchvision_name).mirrors[0]


def _read_mnist_like(
    dataset_name: str, title: str, torchvision_name: str, root: str, split: str, download: bool
) -> TensorImages:
    train = check_split(dataset_name, split)
    root_path = pathlib.Path(root)
    stems = _IDX_STEMS[split]
    folder_name = torchvision_name  # torchvision's raw folder: root/<Class>/raw
    files = _find_idx_pair(root_path, folder_name, stems)
    if files is None:
        why = "download=False"
        if download:
            reason = try_download(
                lambda: _torchvision_class(torchvision_name)(str(root_path), train=train, download=True),
                root_path / folder_name / "raw",
            )
            files = _find_idx_pair(root_path, folder_name, stems)
            why = f"the download failed ({reason or 'no files after download'})"
        if files is None:
            names = " and ".join(f"{stem}.gz" for stem in stems)
            raise DataError(
                f"{dataset_name}: no {title} {split} files under {root_path} and {why}; "
                f"put {names} from {_mirror(torchvision_name)} into {root_path}"
            )
    images_path, labels_path = files
    images, labels = read_idx(images_path), read_idx(labels_path)
    def fix() -> str:
        return f"replace it with the original from {_mirror(torchvision_name)}"

    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DataError(
            f"{images_path}: expected 28x28 images, found shape {tuple(images.shape)}; {fix()}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels for {images_path.name}, "
            f"found shape {tuple(labels.shape)}; {fix()}"
        )
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}; {fix()}")
    return TensorImages(images.unsqueeze(1), labels.tolist(), n_classes=10)  # (N, 1, 28, 28)


#: ``binarize = true``: a pixel of this value or more becomes 1, a darker one 0.
BINARIZE_THRESHOLD = 128


def binarized(dataset: TensorImages, threshold: int = BINARIZE_THRESHOLD) -> TensorImages:
    """The images thresholded once, for good: ``1`` where ``value >= threshold``, else ``0``.

    The values are 0/1, the levels of a two-level model (``n_levels = 2``), not 0/255.
    """
    images = (dataset.images >= threshold).to(torch.uint8)  # (N, C, H, W) of 0 / 1
    return TensorImages(images, dataset.targets, dataset.n_classes)


def mnist(root: str, split: str, *, download: bool = True, binarize: bool = False) -> TensorImages:
    """MNIST digits: 60 000 train / 10 000 test images, items ``(uint8 (1, 28, 28), 0..9)``.

    Reads ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte`` (``t10k-...`` for test),
    gzipped or not, from ``root`` or from torchvision's ``root/MNIST/raw``. With
    ``binarize`` the pixels are 0/1, thresholded at :data:`BINARIZE_THRESHOLD` (128), for
    a two-level model; every split the same way.
    """
    images = _read_mnist_like("mnist", "MNIST", "MNIST", root, split, download)
    return binarized(images) if binarize else images


def fashion_mnist(root: str, split: str, *, download: bool = True, binarize: bool = False) -> TensorImages:
    """Fashion-MNIST (Xiao et al., 2017): MNIST's format and sizes, ten kinds of clothing.

    Reads the IDX files from ``root`` or torchvision's ``root/FashionMNIST/raw``.
    ``binarize``: pixels 0/1, thresholded at 128, as for :func:`mnist`.
    """
    images = _read_mnist_like("fashion_mnist", "Fashion-MNIST", "FashionMNIST", root, split, download)
    return binarized(images) if binarize else images


class DynamicallyBinarized(Dataset):
    """Each pixel redrawn on every access: ``255 * Bernoulli(value / 255)``.

    Images therefore take only the two values 0 and 255 (still in the 256-level space the
    models predict), and each epoch sees a fresh binarisation. The draws use torch's global
    random state, which training seeds (and DataLoader seeds per worker).
    """

    def __init__(self, dataset: TensorImages):
        self.dataset = dataset
        self.targets = dataset.targets
        self.n_classes = dataset.n_classes
        self.shape = dataset.shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        on = torch.bernoulli(image.float() / 255.0)  # (C, H, W) of 0.0 / 1.0
        return on.to(torch.uint8) * 255, label


def binarized_mnist(root: str, split: str, *, download: bool = True) -> DynamicallyBinarized:
    """MNIST, dynamically binarised: items ``(uint8 (1, 28, 28) of 0 or 255, 0..9)``.

    The test split is binarised dynamically too, so its NLL is an average over draws.
    """
    return DynamicallyBinarized(mnist(root, split, download=download))



# The fixed binarization of MNIST (Larochelle & Murray, 2011, "The Neural Autoregressive
# Distribution Estimator"): one stochastic binarization drawn once and published, the
# standard benchmark of Pixel RNN's table 4. Each .amat file is text, one image per line:
# 784 values "0" or "1" separated by spaces, rows of 28 top to bottom; no labels.
#: Where the three .amat files of the fixed binarization are published.
STATIC_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist"
STATIC_MNIST_FILES = {
    "train": "binarized_mnist_train.amat",  # 50 000 images
    "val": "binarized_mnist_valid.amat",  # 10 000 images
    "test": "binarized_mnist_test.amat",  # 10 000 images
}
_STATIC_MNIST_FOLDER = "binarized_mnist"  # also looked in: root/binarized_mnist/


def read_amat(path: str | os.PathLike, width: int = 28) -> torch.Tensor:
    """A binarized-MNIST ``.amat`` file as uint8 ``(N, 1, width, width)`` of 0/1.

    Raises:
        DataError: unreadable, a character other than 0, 1 and white space, or a line
            that does not hold ``width * width`` values.
    """
    path = pathlib.Path(path)
    fix = f"replace it with {STATIC_MNIST_URL}/{path.name}"
    try:
        raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    except OSError as exc:
        raise DataError(f"{path}: cannot read it ({one_line(exc, REASON_CHARS)}); {fix}") from None
    if not raw.size:
        raise DataError(f"{path}: the file is empty; {fix}")
    digit = (raw == ord("0")) | (raw == ord("1"))
    newline = raw == ord("\n")
    space = newline | (raw == ord(" ")) | (raw == ord("\t")) | (raw == ord("\r"))
    line_of = np.cumsum(newline) - newline  # (bytes,) 0-based line of every byte
    bad = ~(digit | space) | np.concatenate([digit[:-1] & digit[1:], [False]])  # "2", "0.5" or "01"
    if bad.any():
        first = int(np.argmax(bad))
        raise DataError(f"{path}: line {int(line_of[first]) + 1} holds {bytes(raw[first:first + 8])!r}, "
                        f"not values 0/1 separated by spaces; {fix}")
    counts = np.bincount(line_of[digit], minlength=int(line_of[-1]) + 1)
    if not counts.any():
        raise DataError(f"{path}: the file holds no images; {fix}")
    wrong = np.flatnonzero((counts != width * width) & (counts != 0))  # blank lines are skipped
    if len(wrong):
        raise DataError(f"{path}: line {int(wrong[0]) + 1} holds {int(counts[wrong[0]])} values, "
                        f"not {width * width}; {fix}")
    values = raw[digit] - ord("0")  # (N * 784,) of 0 / 1
    return torch.from_numpy(values.reshape(-1, 1, width, width).copy())  # (N, 1, 28, 28)


def _find_static_mnist(root: pathlib.Path, name: str, download: bool) -> pathlib.Path:
    """The .amat file ``name`` in ``root`` or ``root/binarized_mnist``, downloaded there
    with ``download``; DataError naming the file and its URL otherwise."""
    candidates = [root / name, root / _STATIC_MNIST_FOLDER / name]
    found = next((path for path in candidates if path.is_file()), None)
    if found is not None:
        return found
    why = "download=False"
    if download:
        from torchvision.datasets.utils import download_url

        folder = root / _STATIC_MNIST_FOLDER
        reason = try_download(lambda: download_url(f"{STATIC_MNIST_URL}/{name}", str(folder), name), folder)
        if reason is None and (folder / name).is_file():
            return folder / name
        why = f"the download failed ({reason or 'no file after download'})"
    raise DataError(
        f"binarized_mnist_static: no {name} under {root} and {why}; put {name} from "
        f"{STATIC_MNIST_URL}/{name} into {root}"
    )


def binarized_mnist_static(root: str, split: str, *, download: bool = True) -> TensorImages:
    """MNIST with the standard fixed binarization (Larochelle & Murray, 2011), the data of
    Pixel RNN's table 4: items ``(uint8 (1, 28, 28) of 0/1, 0)``.

    Splits: ``"train"`` (50 000), ``"val"`` (10 000, the ``valid`` file: the validation
    split, not cut from train) and ``"test"`` (10 000), read from
    ``binarized_mnist_{train,valid,test}.amat`` in ``root`` or ``root/binarized_mnist``
    (downloaded from :data:`STATIC_MNIST_URL` there). The files have no labels: every
    label is 0. The values are 0/1: train it with ``n_levels = 2``.
    """
    if split not in STATIC_MNIST_FILES:
        raise DataError(f"binarized_mnist_static: split must be 'train', 'val' or 'test', got {split!r}")
    path = _find_static_mnist(pathlib.Path(root), STATIC_MNIST_FILES[split], download)
    images = read_amat(path)
    return TensorImages(images, [0] * len(images), n_classes=1)

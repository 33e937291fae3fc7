"""Built-in data sets: CIFAR-10, MNIST, Fashion-MNIST, binarized MNIST (dynamic and the
fixed binarization), downsampled ImageNet 32x32 and 64x64, and image folders.

This module is a plugin like any other: it registers through the ``pixelgen`` entry-point
group (``datasets = "pixelgen.data.builtin"``) and the core never imports it by name.

Every factory has the signature ``factory(root, split, *, download=True, **options)`` with
``split`` one of the official splits ``"train"`` or ``"test"`` (or ``"val"`` for a data set
whose spec lists it: binarized MNIST's fixed ``valid`` file), and returns a map-style
dataset of ``(uint8 tensor (C, H, W), int label)`` pairs that also exposes ``n_classes``,
``shape`` (C, H, W) and ``targets`` (the labels, in item order).

Missing or corrupt data raises :class:`~pixelgen.errors.DataError` with a one-line message
that names the files to put where and the URL they come from. Downloads go through
torchvision (so they are checksum-verified exactly as torchvision does) and give up after a
few seconds without a network.

The validation split, carved out of the official training split, and everything else the
data sets share are the core's (:mod:`pixelgen.data`); this module only reads files.
"""

from __future__ import annotations

import contextlib
import gzip
import math
import os
import pathlib
import pickle
import socket
import struct
import zipfile
import zlib
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelgen.errors import DataError
from pixelgen.registry import DatasetSpec
from pixelgen.registry.hookspecs import hookimpl

# torchvision is imported inside the functions that use it: it adds a second to every
# `import pixelgen.data.builtin`, which the registry does just to list plugin names.

SPLITS = ("train", "test")
DOWNLOAD_TIMEOUT_S = 5.0


# --------------------------------------------------------------------------- helpers


def _check_split(dataset_name: str, split: str) -> bool:
    """True for the training split; DataError for anything but "train"/"test"."""
    if split not in SPLITS:
        raise DataError(f"{dataset_name}: split must be 'train' or 'test', got {split!r}")
    return split == "train"


def _one_line(exc: BaseException, limit: int = 160) -> str:
    """An exception as a short single line, for embedding in a DataError message."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _fail_fast_network(timeout_s: float = DOWNLOAD_TIMEOUT_S) -> Iterator[None]:
    """Give every socket opened inside a short default timeout, restored afterwards.

    Without it a download attempt on a machine with no network can hang for minutes.
    """
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout_s)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _try_download(download: Callable[[], Any], folder: pathlib.Path) -> str | None:
    """Run a torchvision download that writes into ``folder``; None on success, else a
    one-line reason.

    torchvision makes ``folder`` (and any missing parent) before it knows whether the
    download works; after a failure the ones this call created are removed again if they
    are still empty, so a failed attempt leaves no empty folders behind.
    """
    created = [path for path in (folder, *folder.parents) if not path.exists()]  # deepest first
    try:
        with _fail_fast_network():
            download()
    except Exception as exc:  # any failure (no network, bad checksum, disk full) is reported
        _remove_empty_folders(created)
        return _one_line(exc)
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


# --------------------------------------------------------------------------- CIFAR-10


def cifar10(root: str, split: str, *, download: bool = True) -> TensorImages:
    """CIFAR-10 (Krizhevsky, 2009): 50 000 train / 10 000 test colour images, 10 classes.

    Read by ``torchvision.datasets.CIFAR10``, which verifies the md5 of every batch file.
    An existing ``root/cifar-10-batches-py/`` is used as is; a lone
    ``root/cifar-10-python.tar.gz`` is md5-checked and extracted; otherwise, with
    ``download=True``, torchvision downloads and verifies the archive.

    Returns:
        items ``(uint8 (3, 32, 32) in R, G, B order, label 0..9)``.
    """
    train = _check_split("cifar10", split)
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
                    f"({_one_line(exc)}); delete it and {put_hint}"
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
    reason = _try_download(lambda: CIFAR10(str(root), train=train, download=True), batches)
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
            return f"{path} cannot be unpickled ({_one_line(exc)})"
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


# --------------------------------------------------------------------------- MNIST family

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
        reason = f"corrupt gzip data: {_one_line(exc)}"
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile (bad magic, CRC) is an OSError
        reason = _one_line(exc)
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


def _read_mnist_like(
    dataset_name: str, title: str, torchvision_class: type, root: str, split: str, download: bool
) -> TensorImages:
    train = _check_split(dataset_name, split)
    root_path = pathlib.Path(root)
    stems = _IDX_STEMS[split]
    folder_name = torchvision_class.__name__  # torchvision's raw folder: root/<Class>/raw
    files = _find_idx_pair(root_path, folder_name, stems)
    if files is None:
        why = "download=False"
        if download:
            reason = _try_download(
                lambda: torchvision_class(str(root_path), train=train, download=True),
                root_path / folder_name / "raw",
            )
            files = _find_idx_pair(root_path, folder_name, stems)
            why = f"the download failed ({reason or 'no files after download'})"
        if files is None:
            names = " and ".join(f"{stem}.gz" for stem in stems)
            raise DataError(
                f"{dataset_name}: no {title} {split} files under {root_path} and {why}; "
                f"put {names} from {torchvision_class.mirrors[0]} into {root_path}"
            )
    images_path, labels_path = files
    images, labels = read_idx(images_path), read_idx(labels_path)
    fix = f"replace it with the original from {torchvision_class.mirrors[0]}"
    if images.ndim != 3 or tuple(images.shape[1:]) != (28, 28):
        raise DataError(
            f"{images_path}: expected 28x28 images, found shape {tuple(images.shape)}; {fix}"
        )
    if labels.ndim != 1 or len(labels) != len(images):
        raise DataError(
            f"{labels_path}: expected {len(images)} labels for {images_path.name}, "
            f"found shape {tuple(labels.shape)}; {fix}"
        )
    if len(labels) and int(labels.max()) > 9:
        raise DataError(f"{labels_path}: labels must be 0..9, found {int(labels.max())}; {fix}")
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
    from torchvision.datasets import MNIST

    images = _read_mnist_like("mnist", "MNIST", MNIST, root, split, download)
    return binarized(images) if binarize else images


def fashion_mnist(root: str, split: str, *, download: bool = True, binarize: bool = False) -> TensorImages:
    """Fashion-MNIST (Xiao et al., 2017): MNIST's format and sizes, ten kinds of clothing.

    Reads the IDX files from ``root`` or torchvision's ``root/FashionMNIST/raw``.
    ``binarize``: pixels 0/1, thresholded at 128, as for :func:`mnist`.
    """
    from torchvision.datasets import FashionMNIST

    images = _read_mnist_like("fashion_mnist", "Fashion-MNIST", FashionMNIST, root, split, download)
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


# --------------------------------------------------------------------------- binarized MNIST, fixed

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
        raise DataError(f"{path}: cannot read it ({_one_line(exc)}); {fix}") from None
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
        reason = _try_download(lambda: download_url(f"{STATIC_MNIST_URL}/{name}", str(folder), name), folder)
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


# --------------------------------------------------------------------------- downsampled ImageNet

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
            raise DataError(f"{path}: cannot read its 'labels' ({_one_line(exc)}); {fix}") from None
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
        raise DataError(f"{path}: not a downsampled-ImageNet .npz with a 'data' array ({_one_line(exc)}); "
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


# --------------------------------------------------------------------------- image folders

# Files are found here rather than by torchvision.datasets.folder's find_classes /
# make_dataset / IMG_EXTENSIONS, which were measured against this loader on the same folders
# and differ where it matters (torchvision 0.29): find_classes makes every first-level
# folder a class, so a folder without images (notes/, .ipynb_checkpoints/) makes
# make_dataset fail or, with allow_empty, shifts n_classes; it refuses images lying
# directly in root; make_dataset lists a class's own files before its subfolders' instead
# of one sorted path order, which moves files between the deterministic train and test
# splits; and IMG_EXTENSIONS adds .bmp/.tif/.webp/.ppm/.pgm, which changes which files a
# folder holds. Any of these would change the splits of folders users already train on.
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolder(Dataset):
    """PNG/JPEG files decoded on access, resized and centre-cropped to ``image_size``."""

    def __init__(
        self,
        files: Sequence[pathlib.Path],
        targets: Sequence[int],
        classes: Sequence[str],
        image_size: tuple[int, int],
        channels: int,
    ):
        self.files = list(files)
        self.targets = list(targets)
        self.classes = list(classes)
        self.n_classes = max(len(self.classes), 1)
        self.image_size = image_size
        self.channels = channels
        self.shape = (channels, *image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _decode(self.files[index], self.channels)  # (C, h, w)
        return _cover_and_centre_crop(image, self.image_size), self.targets[index]


def _decode(path: pathlib.Path, channels: int) -> torch.Tensor:
    """A PNG/JPEG file as uint8 (channels, h, w), through PIL (torchvision.io's decoders
    are deprecated since torchvision 0.29). Alpha is dropped; 16-bit PNGs are scaled
    to 8 bits rather than clipped."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises OSError, ValueError, DecompressionBombError...
        raise DataError(
            f"image_folder: cannot decode {path} ({_one_line(exc)}); replace or delete the file"
        ) from None
    if image.mode.startswith("I"):  # 16-bit grey
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))  # (h, w[, 3])
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # (C, h, w)


def _cover_and_centre_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale ``image`` (C, h, w) so it just covers ``size`` (H, W), then crop the centre.

    For a square ``size`` this is "resize the shorter side, centre-crop".
    """
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    covering = [max(size[0], round(height * scale)), max(size[1], round(width * scale))]
    if covering != [height, width]:
        image = F.resize(image, covering, antialias=True)
    if list(image.shape[-2:]) != list(size):
        image = F.center_crop(image, list(size))
    return image  # (C, H, W)


def image_folder(
    root: str,
    split: str,
    *,
    download: bool = True,
    image_size: int | Sequence[int] = 32,
    channels: int = 3,
) -> ImageFolder:
    """Your own images: every PNG/JPEG under ``root``, searched recursively, in sorted order.

    Labels are the sorted names of the first-level subfolders (as torchvision's
    ``ImageFolder``), or 0 for all when the files sit directly in ``root``. Images are
    resized so the shorter side fits ``image_size`` (an int, or (H, W)) and centre-cropped;
    ``channels`` is 3 (RGB) or 1 (grey).

    Splits: ``"test"`` is files 0, 10, 20, ... of the sorted list (a deterministic 10%)
    and ``"train"`` is every other file. ``download`` is accepted and ignored.
    """
    train = _check_split("image_folder", split)
    size = _image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"image_folder: channels must be 1 or 3, got {channels!r}")
    root_path = pathlib.Path(root)
    files = sorted(
        (p for p in root_path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(root_path).as_posix(),
    )
    if not files:
        raise DataError(
            f"image_folder: no PNG or JPEG files under {root_path}; put images there, one "
            f"subfolder per class (or all directly in it for a single class)"
        )
    top_level = [p.relative_to(root_path).parts for p in files]
    in_root = [parts for parts in top_level if len(parts) == 1]
    if in_root and len(in_root) != len(files):
        raise DataError(
            f"image_folder: {root_path} has images both directly in it (e.g. {in_root[0][0]}) "
            f"and in subfolders; put every image in a class subfolder, or all in the root"
        )
    classes = sorted({parts[0] for parts in top_level if len(parts) > 1})
    class_index = {name: i for i, name in enumerate(classes)}
    labels = [class_index[parts[0]] if len(parts) > 1 else 0 for parts in top_level]
    keep = [i for i in range(len(files)) if (i % 10 == 0) != train]
    return ImageFolder(
        [files[i] for i in keep], [labels[i] for i in keep], classes, size, channels
    )


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (list, tuple))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (image_size[0], image_size[1])
    else:
        size = (0, 0)
    if min(size) <= 0:
        raise DataError(
            f"image_folder: image_size must be a positive int or [height, width], got {image_size!r}"
        )
    return size


@hookimpl
def pixelgen_datasets() -> list[DatasetSpec]:
    return [
        DatasetSpec("cifar10", cifar10, "CIFAR-10: 32x32 RGB, 10 classes, 50k train / 10k test"),
        DatasetSpec("mnist", mnist, "MNIST digits: 28x28 grey, 60k train / 10k test"),
        DatasetSpec(
            "binarized_mnist", binarized_mnist, "MNIST, each pixel redrawn as 0 or 255 on every access"
        ),
        DatasetSpec(
            "fashion_mnist", fashion_mnist, "Fashion-MNIST: 28x28 grey clothing, 60k train / 10k test"
        ),
        DatasetSpec(
            "binarized_mnist_static", binarized_mnist_static,
            "MNIST, fixed binarization (Larochelle & Murray), values 0/1: 50k train / 10k val / 10k test",
            splits=("train", "val", "test"),
        ),
        DatasetSpec(
            "imagenet32", imagenet32, "Downsampled ImageNet 32x32 (npz release): 1.28M train / 50k val as test"
        ),
        DatasetSpec(
            "imagenet64", imagenet64, "Downsampled ImageNet 64x64 (npz release): 1.28M train / 50k val as test"
        ),
        DatasetSpec(
            "image_folder", image_folder, "PNG/JPEG files under root, class per subfolder, 10% test"
        ),
    ]

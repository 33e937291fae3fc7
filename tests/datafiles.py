"""Writers of tiny data sets in the exact on-disk formats the real loaders read.

A plain module, imported by tests as ``from datafiles import ...`` (pytest's default
rootdir-relative import mode puts ``tests/`` on ``sys.path`` for the test files in it).
Every writer returns what it wrote, so a test can compare the loader's output with it
pixel for pixel.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pathlib
import pickle
import shutil
import struct
import tarfile
from typing import Sequence

import attrs
import numpy as np
from PIL import Image

from pixelgen.recipe import dump_toml

CIFAR10_BATCHES = "cifar-10-batches-py"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_LABEL_NAMES = [
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
]


def working_copy(source: pathlib.Path, folder: pathlib.Path, monkeypatch, cwd: pathlib.Path | None = None) -> pathlib.Path:
    """Copy the fixture folder ``source`` to ``folder`` and work in ``cwd`` (default: the
    copy), as a user of the CLI would: relative paths in its recipes resolve there, and
    progress bars are off. Returns the working directory."""
    shutil.copytree(source, folder)
    cwd = folder if cwd is None else cwd
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    return cwd


def md5_of(path: str | pathlib.Path) -> str:
    return hashlib.md5(pathlib.Path(path).read_bytes()).hexdigest()


# --------------------------------------------------------------------------- CIFAR-10


class _Py2Pickler(pickle._Pickler):
    """Writes ``bytes`` as Python 2 ``str`` opcodes (SHORT_BINSTRING / BINSTRING).

    The real CIFAR-10 batches were pickled by Python 2: their dict keys and the array
    buffer are py2 ``str``, which Python 3 reads back as ``str`` with
    ``encoding="latin1"`` (torchvision) or as ``bytes`` (``b"data"``) with
    ``encoding="bytes"`` (the CIFAR web page's recipe). Python 3's own protocol 2 would
    instead write bytes as ``_codecs.encode(...)`` calls, a different file.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def write_cifar10_file(path: str | pathlib.Path, entry: dict) -> pathlib.Path:
    """Pickle ``entry`` (bytes keys, as ``pickle.load(..., encoding="bytes")`` gives them)
    the way the real CIFAR-10 files were pickled, by Python 2."""
    path = pathlib.Path(path)
    path.write_bytes(_py2_pickle(entry))
    return path


@attrs.frozen
class TinyCifar10:
    """What :func:`write_tiny_cifar10` wrote.

    ``train_images``/``test_images``: uint8 (N, 3, 32, 32), channels R, G, B;
    ``md5``: file name (batch files, ``batches.meta``, and the archive if written) -> md5.
    """

    root: pathlib.Path
    train_images: np.ndarray
    train_labels: list[int]
    test_images: np.ndarray
    test_labels: list[int]
    md5: dict[str, str]


def write_tiny_cifar10(
    root: str | pathlib.Path, n_train: int = 10, n_test: int = 5, seed: int = 0, *, archive: bool = False
) -> TinyCifar10:
    """Write a CIFAR-10 with ``n_train``/``n_test`` random images in the real layout.

    ``root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``: pickled dicts
    with keys ``data`` (uint8 (N, 3072): 1024 red, 1024 green, 1024 blue values, each plane
    row-major), ``labels``, ``batch_label`` and ``filenames``. The training images are
    spread over the five batch files in order. With ``archive=True`` the folder is packed
    into ``root/cifar-10-python.tar.gz`` (as distributed) and removed.

    The files' md5s differ from the real ones that torchvision checks; see
    :func:`trust_tiny_cifar10`.
    """
    root = pathlib.Path(root)
    folder = root / CIFAR10_BATCHES
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, size=(n_train, 3, 32, 32), dtype=np.uint8)
    test_images = rng.integers(0, 256, size=(n_test, 3, 32, 32), dtype=np.uint8)
    train_labels = rng.integers(0, 10, size=n_train).tolist()
    test_labels = rng.integers(0, 10, size=n_test).tolist()

    def batch(name: str, images: np.ndarray, labels: list[int], first: int) -> None:
        entry = {
            b"batch_label": f"tiny {name}".encode(),
            b"labels": [int(label) for label in labels],
            b"data": images.reshape(len(images), 3072),  # (N, 3 * 32 * 32), planes R, G, B
            b"filenames": [f"image_{first + i:05d}.png".encode() for i in range(len(images))],
        }
        write_cifar10_file(folder / name, entry)

    bounds = np.linspace(0, n_train, 6).astype(int)
    for k in range(5):
        lo, hi = bounds[k], bounds[k + 1]
        batch(f"data_batch_{k + 1}", train_images[lo:hi], train_labels[lo:hi], lo)
    batch("test_batch", test_images, test_labels, 0)
    meta = {
        b"num_cases_per_batch": int(bounds[1] - bounds[0]),
        b"label_names": [name.encode() for name in CIFAR10_LABEL_NAMES],
        b"num_vis": 3072,
    }
    write_cifar10_file(folder / "batches.meta", meta)
    md5 = {path.name: md5_of(path) for path in sorted(folder.iterdir())}

    if archive:
        with tarfile.open(root / CIFAR10_ARCHIVE, "w:gz") as tar:
            tar.add(folder, arcname=CIFAR10_BATCHES)
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
        md5[CIFAR10_ARCHIVE] = md5_of(root / CIFAR10_ARCHIVE)
    return TinyCifar10(root, train_images, train_labels, test_images, test_labels, md5)


def trust_tiny_cifar10(monkeypatch, tiny: TinyCifar10) -> None:
    """Give torchvision's CIFAR10 the tiny files' md5s in place of the real ones.

    The loader keeps torchvision's integrity checks (the same ones that guard a real
    download); this only changes the expected checksums, for the duration of one test
    (``monkeypatch`` undoes it), so a corrupted tiny file still fails them.
    """
    from torchvision.datasets import CIFAR10

    batches = [f"data_batch_{k}" for k in range(1, 6)]
    monkeypatch.setattr(CIFAR10, "train_list", [[name, tiny.md5[name]] for name in batches])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", tiny.md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": tiny.md5["batches.meta"]})
    if CIFAR10_ARCHIVE in tiny.md5:
        monkeypatch.setattr(CIFAR10, "tgz_md5", tiny.md5[CIFAR10_ARCHIVE])


# --------------------------------------------------------------------------- MNIST family


def write_idx(path: str | pathlib.Path, array: np.ndarray) -> pathlib.Path:
    """Write a uint8 array as an IDX file: magic 00 00 08 <ndim>, big-endian uint32 dims,
    then the bytes. Gzipped when ``path`` ends in ``.gz``."""
    path = pathlib.Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload) if path.suffix == ".gz" else payload)
    return path


@attrs.frozen
class TinyMnist:
    """What :func:`write_tiny_mnist` wrote: uint8 images (N, 28, 28) and labels; ``folder``
    is where the IDX files are."""

    folder: pathlib.Path
    train_images: np.ndarray
    train_labels: list[int]
    test_images: np.ndarray
    test_labels: list[int]


def write_tiny_mnist(
    root: str | pathlib.Path,
    n_train: int = 12,
    n_test: int = 4,
    seed: int = 0,
    *,
    gzipped: bool = True,
    torchvision_folder: str | None = None,
) -> TinyMnist:
    """Write the four MNIST IDX files with random 28x28 images and labels 0..9.

    Into ``root`` directly, or into torchvision's ``root/<torchvision_folder>/raw`` (pass
    ``"MNIST"`` or ``"FashionMNIST"``). Names as distributed
    (``train-images-idx3-ubyte.gz`` ...), without ``.gz`` when ``gzipped=False``.
    """
    root = pathlib.Path(root)
    folder = root / torchvision_folder / "raw" if torchvision_folder else root
    rng = np.random.default_rng(seed)
    data = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.uint8)
        suffix = ".gz" if gzipped else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
        data[prefix] = (images, labels.tolist())
    return TinyMnist(folder, *data["train"], *data["t10k"])


# --------------------------------------------------------------------------- image folders


def write_png(path: str | pathlib.Path, image: np.ndarray) -> pathlib.Path:
    """Write uint8 (H, W) as a grey PNG or (H, W, 3) as an RGB PNG (lossless)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, format="PNG")
    return path


def write_tiny_image_folder(
    root: str | pathlib.Path,
    classes: Sequence[str] = ("cat", "dog"),
    per_class: int = 6,
    size: tuple[int, int] = (8, 8),
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Write ``per_class`` random RGB PNGs of ``size`` (H, W) into ``root/<class>/``.

    Returns ``{relative posix path: uint8 (3, H, W)}`` for every file written.
    """
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    written = {}
    for name in classes:
        for i in range(per_class):
            image = rng.integers(0, 256, size=(*size, 3), dtype=np.uint8)  # (H, W, 3)
            relative = f"{name}/img_{i:03d}.png"
            write_png(root / relative, image)
            written[relative] = image.transpose(2, 0, 1)  # (3, H, W)
    return written


# --------------------------------------------------------------------------- binarized MNIST, fixed


def write_amat(path: str | pathlib.Path, images: np.ndarray) -> pathlib.Path:
    """Write 0/1 images (N, 28, 28) as a binarized-MNIST ``.amat`` file: one image per line,
    784 values separated by single spaces, rows top to bottom (Larochelle & Murray's files)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [" ".join(str(int(v)) for v in image.reshape(-1)) for image in images]
    path.write_text("".join(line + "\n" for line in lines))
    return path


@attrs.frozen
class TinyStaticMnist:
    """What :func:`write_tiny_static_mnist` wrote: 0/1 images (N, 28, 28) per split."""

    folder: pathlib.Path
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def write_tiny_static_mnist(
    root: str | pathlib.Path, n_train: int = 6, n_val: int = 3, n_test: int = 2, seed: int = 0
) -> TinyStaticMnist:
    """Write ``binarized_mnist_{train,valid,test}.amat`` with random 0/1 images into ``root``."""
    root = pathlib.Path(root)
    rng = np.random.default_rng(seed)
    images = {split: rng.integers(0, 2, size=(n, 28, 28), dtype=np.uint8)
              for split, n in (("train", n_train), ("valid", n_val), ("test", n_test))}
    for split, array in images.items():
        write_amat(root / f"binarized_mnist_{split}.amat", array)
    return TinyStaticMnist(root, images["train"], images["valid"], images["test"])


# --------------------------------------------------------------------------- downsampled ImageNet


def write_imagenet_npz(
    path: str | pathlib.Path, images: np.ndarray, labels: Sequence[int], *, compressed: bool = False
) -> pathlib.Path:
    """Write uint8 images (N, 3, s, s) and labels 1..1000 as a downsampled-ImageNet batch:
    ``data`` uint8 (N, 3 * s * s), the R, G and B planes one after the other, and ``labels``
    (the release also stores a ``mean`` image in its training batches). ``np.savez`` as the
    release does; ``np.savez_compressed`` with ``compressed``."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(images), -1)  # (N, 3 s s)
    save = np.savez_compressed if compressed else np.savez
    with open(path, "wb") as handle:  # a file object: np.savez would append .npz to a str path
        save(handle, data=data, labels=np.asarray(labels, dtype=np.int64), mean=data.mean(axis=0))
    return path


@attrs.frozen
class TinyImagenet:
    """What :func:`write_tiny_imagenet` wrote: uint8 images (N, 3, s, s), labels 1..1000."""

    folder: pathlib.Path
    train_images: np.ndarray
    train_labels: list[int]
    val_images: np.ndarray
    val_labels: list[int]


def write_tiny_imagenet(
    folder: str | pathlib.Path, size: int = 32, per_batch: Sequence[int] = (3, 1, 2, 2, 1, 3, 2, 1, 2, 2),
    n_val: int = 4, seed: int = 0, *, compressed: bool = False,
) -> TinyImagenet:
    """Write ``train_data_batch_1.npz`` ... ``_10.npz`` (``per_batch[k]`` images each) and
    ``val_data.npz`` with random ``size`` x ``size`` images into ``folder``."""
    folder = pathlib.Path(folder)
    rng = np.random.default_rng(seed)
    train_images = rng.integers(0, 256, size=(sum(per_batch), 3, size, size), dtype=np.uint8)
    train_labels = rng.integers(1, 1001, size=sum(per_batch)).tolist()
    val_images = rng.integers(0, 256, size=(n_val, 3, size, size), dtype=np.uint8)
    val_labels = rng.integers(1, 1001, size=n_val).tolist()
    bounds = np.cumsum([0, *per_batch])
    for k in range(10):
        lo, hi = bounds[k], bounds[k + 1]
        write_imagenet_npz(folder / f"train_data_batch_{k + 1}.npz", train_images[lo:hi], train_labels[lo:hi],
                           compressed=compressed)
    write_imagenet_npz(folder / "val_data.npz", val_images, val_labels, compressed=compressed)
    return TinyImagenet(folder, train_images, train_labels, val_images, val_labels)


def write_tiny_run_recipe(base: pathlib.Path, out: pathlib.Path, epochs: int, **train) -> pathlib.Path:
    """``base/tiny.toml``: a tiny PixelCNN on tiny Fashion-MNIST files it writes under
    ``base/data`` (24 training and 6 test images), seeded, on the CPU, two samples at the end."""
    write_tiny_mnist(base / "data", n_train=24, n_test=6, seed=5)
    recipe = base / "tiny.toml"
    recipe.write_text(dump_toml({
        "model": {"name": "pixelcnn", "hyperparameters": {"hidden_channels": 4, "n_layers": 1, "head_channels": 8}},
        "data": {"name": "fashion_mnist", "root": str(base / "data"), "batch_size": 6,
                 "validation_fraction": 0.25, "download": False},
        "train": {"epochs": epochs, "accelerator": "cpu", "seed": 0, **train},
        "sample": {"n": 2},
        "output": {"dir": str(out)},
    }))
    return recipe


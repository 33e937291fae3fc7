"""The data sets of the paper's other experiments, read by the real loaders from tiny files
in the real formats: binarized MNIST with its fixed binarization (Pixel RNN, table 4),
downsampled ImageNet 32x32 and 64x64 (table 6), and binarized Fashion-MNIST."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from datafiles import (
    write_amat,
    write_idx,
    write_imagenet_npz,
    write_tiny_imagenet,
    write_tiny_static_mnist,
)

from pixelgen.data import builtin as datasets
from pixelgen.data import load_splits
from pixelgen.errors import DataError
from pixelgen.registry import create_dataset, get_dataset_spec, list_datasets

REAL_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")


def as_array(dataset) -> tuple[np.ndarray, list[int]]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    assert all(image.dtype == torch.uint8 for image in images)
    return torch.stack(images).numpy(), [int(label) for label in labels]


def test_registered_with_their_splits_and_options():
    for name in ("binarized_mnist_static", "imagenet32", "imagenet64"):
        assert name in list_datasets()
    assert get_dataset_spec("binarized_mnist_static").splits == ("train", "val", "test")
    assert get_dataset_spec("imagenet32").splits == get_dataset_spec("cifar10").splits == ("train", "test")
    assert get_dataset_spec("fashion_mnist").options() == {"download": True, "binarize": False}
    assert get_dataset_spec("mnist").options() == {"download": True, "binarize": False}


# --------------------------------------------------------------------------- binarized MNIST, fixed


def test_static_mnist_reads_every_split_as_written(tmp_path):
    tiny = write_tiny_static_mnist(tmp_path, n_train=5, n_val=3, n_test=2)
    for split, expected in (("train", tiny.train), ("val", tiny.val), ("test", tiny.test)):
        dataset = create_dataset("binarized_mnist_static", str(tmp_path), split, download=False)
        images, labels = as_array(dataset)
        np.testing.assert_array_equal(images, expected[:, None])  # (N, 1, 28, 28) of 0 / 1
        assert labels == [0] * len(expected) and dataset.n_classes == 1 and dataset.shape == (1, 28, 28)


def test_static_mnist_rows_are_read_top_to_bottom(tmp_path):
    image = np.zeros((1, 28, 28), dtype=np.uint8)
    image[0, 2, 5] = 1  # value 2 * 28 + 5 = 61 of the line
    path = write_amat(tmp_path / "binarized_mnist_train.amat", image)
    assert path.read_text().split()[61] == "1"
    assert datasets.read_amat(path)[0, 0].nonzero().tolist() == [[2, 5]]


def test_static_mnist_has_its_own_validation_split(tmp_path):
    tiny = write_tiny_static_mnist(tmp_path / "binarized_mnist", n_train=6, n_val=3, n_test=2)
    splits = load_splits("binarized_mnist_static", str(tmp_path), validation_fraction=0.5, seed=3, download=False)
    assert [len(splits[k]) for k in ("train", "val", "test")] == [6, 3, 2]  # the fraction is not used
    np.testing.assert_array_equal(as_array(splits["train"])[0], tiny.train[:, None])
    np.testing.assert_array_equal(as_array(splits["val"])[0], tiny.val[:, None])
    assert splits["val"].targets == [0, 0, 0] and splits["train"].n_classes == 1


@pytest.mark.parametrize("content, problem", [
    ("0 1 2" + " 0" * 781 + "\n", "line 1 holds b'2 0 0 0 '"),
    ("0 1" + " 0" * 782 + "\n" + "0 1 0 1\n", "line 2 holds 4 values, not 784"),
    ("0.0 1" + " 0" * 782 + "\n", "line 1 holds b'.0 1 0 0'"),
    ("01" + " 0" * 782 + "\n", "line 1 holds b'01 0 0 0'"),
    ("", "the file is empty"),
    ("\n\n", "the file holds no images"),
], ids=["digit 2", "short line", "decimal", "no space", "empty", "blank"])
def test_malformed_static_mnist_file_is_one_line(tmp_path, content, problem):
    (tmp_path / "binarized_mnist_test.amat").write_text(content)
    with pytest.raises(DataError) as caught:
        create_dataset("binarized_mnist_static", str(tmp_path), "test", download=False)
    message = str(caught.value)
    assert "\n" not in message and problem in message and "binarized_mnist_test.amat" in message
    assert "replace it with http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/" in message


def test_static_mnist_missing_is_one_line_naming_file_and_url(tmp_path):
    with pytest.raises(DataError) as caught:
        create_dataset("binarized_mnist_static", str(tmp_path), "val", download=False)
    message = str(caught.value)
    assert "\n" not in message and "no binarized_mnist_valid.amat under" in message
    assert ("put binarized_mnist_valid.amat from http://www.cs.toronto.edu/~larocheh/public/datasets/"
            "binarized_mnist/binarized_mnist_valid.amat into") in message
    with pytest.raises(DataError, match="split must be 'train', 'val' or 'test'"):
        create_dataset("binarized_mnist_static", str(tmp_path), "valid", download=False)


def test_static_mnist_failed_download_is_one_line_and_leaves_no_folder(tmp_path, monkeypatch):
    import socket

    def refuse(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    with pytest.raises(DataError, match="the download failed") as caught:
        create_dataset("binarized_mnist_static", str(tmp_path / "data"), "train")
    assert "\n" not in str(caught.value)
    assert not (tmp_path / "data").exists()


# --------------------------------------------------------------------------- binarized Fashion-MNIST


def test_binarize_thresholds_at_128_into_zeros_and_ones(tmp_path):
    levels = np.array([0, 127, 128, 255], dtype=np.uint8)
    images = np.broadcast_to(levels.repeat(7)[None, :, None], (2, 28, 28))  # rows of 4 levels
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.array([3, 8], dtype=np.uint8))
    for name in ("mnist", "fashion_mnist"):
        plain = create_dataset(name, str(tmp_path), "test", download=False)
        binary = create_dataset(name, str(tmp_path), "test", download=False, binarize=True)
        assert binary.targets == plain.targets == [3, 8] and binary.shape == (1, 28, 28)
        expected = (plain.images >= 128).to(torch.uint8)
        assert torch.equal(binary.images, expected)
        assert binary.images[0, 0, :, 0].tolist() == [0] * 14 + [1] * 14


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="real Fashion-MNIST not installed")
def test_real_fashion_mnist_binarized():
    train = datasets.fashion_mnist(str(REAL_FASHION_MNIST), "train", download=False, binarize=True)
    assert set(train.images.unique().tolist()) == {0, 1}
    assert 0.3 < train.images.float().mean().item() < 0.6  # clothing covers about half the frame


# --------------------------------------------------------------------------- downsampled ImageNet


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("compressed", [False, True])
def test_imagenet_reads_planes_and_labels_as_written(tmp_path, size, compressed):
    tiny = write_tiny_imagenet(tmp_path, size=size, compressed=compressed)
    name = f"imagenet{size}"
    train = create_dataset(name, str(tmp_path), "train", download=False)
    test = create_dataset(name, str(tmp_path), "test", download=False)
    assert (len(train), len(test)) == (19, 4) and train.shape == (3, size, size) and train.n_classes == 1000
    images, labels = as_array(train)
    np.testing.assert_array_equal(images, tiny.train_images)  # R, G, B planes, each row-major
    assert labels == [label - 1 for label in tiny.train_labels]  # 1..1000 stored as 0..999
    images, labels = as_array(test)
    np.testing.assert_array_equal(images, tiny.val_images)
    assert labels == [label - 1 for label in tiny.val_labels] and list(test.targets) == labels
    with pytest.raises(IndexError):
        train[19]


def test_imagenet_channel_planes_are_r_g_b(tmp_path):
    image = np.zeros((1, 3, 32, 32), dtype=np.uint8)
    image[0, 0, 0, 1], image[0, 1, 0, 0], image[0, 2, 31, 31] = 10, 20, 30
    folder = tmp_path / "Imagenet32_val_npz"
    write_imagenet_npz(folder / "val_data.npz", image, [7])
    flat = np.load(folder / "val_data.npz")["data"][0]
    assert (flat[1], flat[1024], flat[3071]) == (10, 20, 30)  # red plane, green plane, blue plane
    item, label = create_dataset("imagenet32", str(tmp_path), "test", download=False)[0]
    assert (item[0, 0, 1], item[1, 0, 0], item[2, 31, 31], label) == (10, 20, 30, 6)


def test_imagenet_uncompressed_files_are_memory_mapped_not_loaded(tmp_path):
    write_tiny_imagenet(tmp_path, size=32)
    train = create_dataset("imagenet32", str(tmp_path), "train", download=False)
    assert all(offset is not None for _, offset in train._layout)
    assert train._arrays == [None] * 10  # nothing read at construction
    train[3]
    assert isinstance(train._arrays[1], np.memmap) and train._arrays[0] is None  # batch 2 holds item 3 alone
    state = train.__getstate__()
    assert state["_arrays"] == [None] * 10  # a DataLoader worker maps the files itself


def test_imagenet_construction_reads_no_images(tmp_path):
    """A training set of 10 x 1000 64x64 images (123 MB): building it must not read them.
    Measured in a fresh process after the registry is loaded, so the figure is this
    loader's alone (the real 64x64 training set is 15.7 GB, the 32x32 one 3.9 GB)."""
    per_batch = 1000
    rng = np.random.default_rng(0)
    block = rng.integers(0, 256, size=(per_batch, 3, 64, 64), dtype=np.uint8)
    for k in range(10):
        write_imagenet_npz(tmp_path / f"train_data_batch_{k + 1}.npz", block, [1 + k] * per_batch)
    script = (
        "import resource; from pixelgen.registry import create_dataset, get_registry; get_registry(); "
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        f"d = create_dataset('imagenet64', {str(tmp_path)!r}, 'train', download=False); "
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; "
        "x = d[len(d) - 1]; print(len(d), int(x[1]), (after - before) // 1024)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    n, last_label, grown_mb = map(int, out.stdout.split())
    assert (n, last_label) == (10 * per_batch, 9)
    assert grown_mb < 40, f"building the data set grew the process by {grown_mb} MB"


def test_imagenet_missing_files_are_one_line(tmp_path):
    with pytest.raises(DataError) as caught:
        create_dataset("imagenet32", str(tmp_path), "train", download=False)
    message = str(caught.value)
    assert "\n" not in message
    assert "no train_data_batch_1.npz ... train_data_batch_10.npz (10 files) under" in message
    assert "image-net.org" in message and "account" in message
    write_tiny_imagenet(tmp_path, size=32)
    (tmp_path / "train_data_batch_7.npz").unlink()
    with pytest.raises(DataError, match=r"no train_data_batch_7\.npz under"):
        create_dataset("imagenet32", str(tmp_path), "train", download=False)
    with pytest.raises(DataError, match="split must be 'train' or 'test'"):
        create_dataset("imagenet32", str(tmp_path), "val", download=False)


def test_imagenet_files_of_the_other_size_or_damaged_are_one_line(tmp_path):
    write_tiny_imagenet(tmp_path / "imagenet64", size=64)
    with pytest.raises(DataError, match="no val_data.npz under"):  # imagenet32 does not look in imagenet64/
        create_dataset("imagenet32", str(tmp_path), "test", download=False)
    with pytest.raises(DataError, match="holds 64x64 images, but imagenet32 is 32x32; use imagenet64"):
        create_dataset("imagenet32", str(tmp_path / "imagenet64"), "test", download=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "val_data.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a downsampled-ImageNet .npz"):
        create_dataset("imagenet32", str(tmp_path / "bad"), "test", download=False)
    write_imagenet_npz(tmp_path / "labels" / "val_data.npz", np.zeros((2, 3, 32, 32), np.uint8), [0, 5])
    with pytest.raises(DataError, match="'labels' must be 2 integers 1..1000"):
        create_dataset("imagenet32", str(tmp_path / "labels"), "test", download=False)

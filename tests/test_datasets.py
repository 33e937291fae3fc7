"""The built-in data sets, read by the real loaders from tiny files in the real formats."""

from __future__ import annotations

import gzip
import pathlib
import pickle
import socket

import attrs
import numpy as np
import pytest
import torch
from datafiles import (
    CIFAR10_ARCHIVE,
    md5_of,
    trust_tiny_cifar10,
    write_cifar10_file,
    write_idx,
    write_png,
    write_tiny_cifar10,
    write_tiny_image_folder,
    write_tiny_mnist,
)

from pixelgen.data import (
    HorizontalFlip,
    load_splits,
    resolve_data_root,
    train_val_split,
)
from pixelgen.data import builtin as datasets
from pixelgen.data.builtin import TensorImages
from pixelgen.errors import DataError
from pixelgen.registry import create_dataset, get_dataset_spec, list_datasets

REAL_FASHION_MNIST = pathlib.Path("/usr/share/datasets/fashion-mnist")


def as_array(dataset) -> tuple[np.ndarray, list[int]]:
    images, labels = zip(*(dataset[i] for i in range(len(dataset))))
    for image in images:
        assert image.dtype == torch.uint8
    return torch.stack(images).numpy(), [int(label) for label in labels]


@pytest.fixture
def no_network(monkeypatch):
    """Every name lookup fails at once, as on a machine without a network."""

    def refuse(*args, **kwargs):
        raise socket.gaierror(-3, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)


# --------------------------------------------------------------------------- registry


def test_registered_with_their_options():
    for name in ("cifar10", "mnist", "fashion_mnist", "binarized_mnist", "image_folder"):
        assert name in list_datasets()
    assert get_dataset_spec("image_folder").options() == {
        "download": True, "image_size": 32, "channels": 3,
    }
    assert get_dataset_spec("cifar10").options() == {"download": True}


# --------------------------------------------------------------------------- CIFAR-10
# The loader goes through torchvision's CIFAR10, whose integrity check compares every batch
# file's md5 with the real data set's. The fixture files have other md5s, so each test hands
# torchvision the fixture's checksums (trust_tiny_cifar10, undone after the test) rather
# than the loader growing a "skip verification" switch: the check still runs, as the
# corruption test below shows.


def test_cifar10_pixels_labels_and_channel_order(tmp_path, monkeypatch):
    tiny = write_tiny_cifar10(tmp_path, n_train=7, n_test=3, seed=1)
    trust_tiny_cifar10(monkeypatch, tiny)
    train = create_dataset("cifar10", str(tmp_path), "train", download=False)
    test = create_dataset("cifar10", str(tmp_path), "test", download=False)
    assert (len(train), len(test)) == (7, 3)
    assert train.shape == (3, 32, 32) and train.n_classes == 10
    images, labels = as_array(train)
    np.testing.assert_array_equal(images, tiny.train_images)
    assert labels == tiny.train_labels == train.targets
    images, labels = as_array(test)
    np.testing.assert_array_equal(images, tiny.test_images)
    assert labels == tiny.test_labels
    # Row k of b"data" is 1024 red values, then green, then blue: item (c, y, x) is byte
    # c * 1024 + y * 32 + x of that row (read here the way the CIFAR web page reads it).
    batch = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    row = pickle.loads(batch, encoding="bytes")[b"data"][2]
    assert int(test[2][0][1, 3, 5]) == int(row[1024 + 3 * 32 + 5])


def test_cifar10_extracts_a_lone_archive(tmp_path, monkeypatch):
    tiny = write_tiny_cifar10(tmp_path, n_train=5, n_test=2, archive=True)
    trust_tiny_cifar10(monkeypatch, tiny)
    assert not (tmp_path / "cifar-10-batches-py").exists()
    test = datasets.cifar10(str(tmp_path), "test", download=False)
    np.testing.assert_array_equal(as_array(test)[0], tiny.test_images)
    assert (tmp_path / "cifar-10-batches-py" / "data_batch_5").is_file()


def test_cifar10_archive_with_wrong_md5_is_refused(tmp_path, monkeypatch):
    tiny = write_tiny_cifar10(tmp_path, n_train=5, n_test=2, archive=True)
    trust_tiny_cifar10(monkeypatch, tiny)
    with open(tmp_path / CIFAR10_ARCHIVE, "ab") as handle:
        handle.write(b"x")
    with pytest.raises(DataError, match="fails its md5 check") as caught:
        datasets.cifar10(str(tmp_path), "train", download=False)
    assert "\n" not in str(caught.value)


def test_cifar10_corrupt_batch_fails_torchvision_check(tmp_path, monkeypatch):
    tiny = write_tiny_cifar10(tmp_path, n_train=5, n_test=2)
    trust_tiny_cifar10(monkeypatch, tiny)
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    data = bytearray(batch.read_bytes())
    data[-10] ^= 0xFF
    batch.write_bytes(bytes(data))
    with pytest.raises(DataError, match="incomplete or fails its md5 check"):
        datasets.cifar10(str(tmp_path), "train", download=False)


def test_cifar10_missing_without_network_is_one_line(tmp_path, no_network):
    timeout_before = socket.getdefaulttimeout()
    with pytest.raises(DataError) as caught:
        datasets.cifar10(str(tmp_path / "data"), "train", download=True)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("cifar10: no CIFAR-10 under ")
    assert "the download failed (" in message
    assert "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in message
    assert socket.getdefaulttimeout() == timeout_before


def test_cifar10_missing_with_download_off(tmp_path):
    with pytest.raises(DataError, match="download=False; put cifar-10-python.tar.gz from https://"):
        datasets.cifar10(str(tmp_path), "test", download=False)


def _rewrite_cifar10_file(monkeypatch, tiny, name, change):
    """Rewrite one of the tiny CIFAR-10's files with ``change(entry)`` applied to its dict
    and trust its new md5, so only its content (not torchvision's md5 check) is wrong."""
    path = tiny.root / "cifar-10-batches-py" / name
    entry = pickle.loads(path.read_bytes(), encoding="bytes")
    write_cifar10_file(path, change(entry))
    trust_tiny_cifar10(monkeypatch, attrs.evolve(tiny, md5={**tiny.md5, name: md5_of(path)}))
    return path


@pytest.mark.parametrize(
    ("name", "split", "change", "problem"),
    [
        ("data_batch_2", "train", lambda e: {k: v for k, v in e.items() if k != b"labels"},
         "lacks the key 'labels' (its keys: batch_label, data, filenames)"),
        ("test_batch", "test", lambda e: {k: v for k, v in e.items() if k != b"data"},
         "lacks the key 'data'"),
        ("data_batch_4", "train", lambda e: {**e, b"labels": e[b"labels"][:-1]},
         "holds 2 images but 1 labels"),
        ("data_batch_1", "train", lambda e: {**e, b"data": e[b"data"][:, :100]},
         "holds 'data' of uint8 (2, 100), not uint8 (N, 3072)"),
        ("batches.meta", "test", lambda e: {b"num_vis": 3072}, "lacks the key 'label_names'"),
    ],
)
def test_cifar10_file_without_its_keys_is_one_line(tmp_path, monkeypatch, name, split, change, problem):
    tiny = write_tiny_cifar10(tmp_path, n_train=10, n_test=3)
    path = _rewrite_cifar10_file(monkeypatch, tiny, name, change)
    with pytest.raises(DataError) as caught:
        datasets.cifar10(str(tmp_path), split, download=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"cifar10: {path} {problem}")
    assert f"; delete {path.parent} and put cifar-10-python.tar.gz from https://" in message


def test_cifar10_failed_download_leaves_no_folders(tmp_path, no_network):
    root = tmp_path / "data" / "cifar"
    with pytest.raises(DataError, match="the download failed"):
        datasets.cifar10(str(root), "train", download=True)
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- MNIST family


@pytest.mark.parametrize(
    ("name", "gzipped", "torchvision_folder"),
    [
        ("fashion_mnist", True, None),
        ("fashion_mnist", False, "FashionMNIST"),
        ("mnist", False, None),
        ("mnist", True, "MNIST"),
    ],
)
def test_mnist_like_round_trip(tmp_path, name, gzipped, torchvision_folder):
    tiny = write_tiny_mnist(tmp_path, 9, 4, seed=2, gzipped=gzipped, torchvision_folder=torchvision_folder)
    for split, images, labels in (
        ("train", tiny.train_images, tiny.train_labels),
        ("test", tiny.test_images, tiny.test_labels),
    ):
        dataset = create_dataset(name, str(tmp_path), split, download=False)
        assert dataset.shape == (1, 28, 28) and dataset.n_classes == 10
        got_images, got_labels = as_array(dataset)
        np.testing.assert_array_equal(got_images, images[:, None])  # (N, 1, 28, 28)
        assert got_labels == labels == dataset.targets


def test_torchvision_layout_of_the_other_data_set_is_not_used(tmp_path):
    write_tiny_mnist(tmp_path, 3, 2, torchvision_folder="MNIST")
    with pytest.raises(DataError, match="fashion_mnist: no Fashion-MNIST train files"):
        datasets.fashion_mnist(str(tmp_path), "train", download=False)


def test_idx_header_checks(tmp_path):
    good = write_idx(tmp_path / "ok-idx3-ubyte", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    assert datasets.read_idx(good).tolist() == np.arange(24).reshape(2, 3, 4).tolist()

    wrong_magic = tmp_path / "magic"
    wrong_magic.write_bytes(b"\x00\x00\x0d\x01" + (3).to_bytes(4, "big") + bytes(12))  # float data
    truncated = tmp_path / "truncated.gz"
    truncated.write_bytes(gzip.compress(good.read_bytes()[:-5]))
    not_gzip = tmp_path / "plain.gz"
    not_gzip.write_bytes(good.read_bytes())
    for path, pattern in (
        (wrong_magic, "magic number 00000d01"),
        (truncated, "promises 24 values"),
        (not_gzip, "cannot read this IDX file"),
    ):
        with pytest.raises(DataError, match=pattern) as caught:
            datasets.read_idx(path)
        assert "\n" not in str(caught.value)


def test_corrupt_mnist_file_raises_data_error(tmp_path):
    tiny = write_tiny_mnist(tmp_path, 4, 2, gzipped=False)
    (tiny.folder / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x04\x01")
    with pytest.raises(DataError, match="train-labels-idx1-ubyte: IDX header promises 4 values"):
        datasets.mnist(str(tmp_path), "train", download=False)
    write_idx(tiny.folder / "train-labels-idx1-ubyte", np.array([1, 2, 3], dtype=np.uint8))
    with pytest.raises(DataError, match="expected 4 labels"):
        datasets.mnist(str(tmp_path), "train", download=False)


def _gzip_broken(how: str, payload: bytes) -> bytes:
    """``payload`` gzipped, then damaged the way a bad download or disk damages it."""
    packed = bytearray(gzip.compress(payload))
    if how == "deflate":
        packed[10] = 0xFF  # first deflate block header: BTYPE 11, which is reserved
    elif how == "crc":
        packed[-8] ^= 0xFF  # the CRC-32 in the trailer
    elif how == "truncated":
        packed = packed[: len(packed) // 2]
    return bytes(packed)


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("deflate", "corrupt gzip data: Error -3 while decompressing data: invalid block type"),
        ("crc", "CRC check failed 0x"),
        ("truncated", "Compressed file ended before the end-of-stream marker was reached"),
    ],
)
def test_damaged_gzip_idx_file_is_one_line(tmp_path, how, reason):
    tiny = write_tiny_mnist(tmp_path, 5, 2, gzipped=True)
    images = tiny.folder / "train-images-idx3-ubyte.gz"
    with gzip.open(images, "rb") as handle:
        images.write_bytes(_gzip_broken(how, handle.read()))
    with pytest.raises(DataError) as caught:
        datasets.mnist(str(tmp_path), "train", download=False)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{images}: cannot read this IDX file ({reason}")
    assert message.endswith("); replace it")


def test_truncated_or_wrong_magic_idx_file_through_the_loader(tmp_path):
    tiny = write_tiny_mnist(tmp_path, 5, 2, gzipped=False)
    images = tiny.folder / "t10k-images-idx3-ubyte"
    whole = images.read_bytes()
    images.write_bytes(whole[:-100])  # a download cut short
    with pytest.raises(DataError) as caught:
        datasets.fashion_mnist(str(tmp_path), "test", download=False)
    assert str(caught.value) == (
        f"{images}: IDX header promises 1568 values (2, 28, 28) but the file holds 1468; "
        f"it is truncated or corrupt, replace it"
    )
    images.write_bytes(gzip.compress(whole))  # gzipped, but named without .gz
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: not an unsigned-byte IDX file "
                                        r"\(magic number 1f8b08.., expected 000008xx\); replace it$"):
        datasets.fashion_mnist(str(tmp_path), "test", download=False)
    images.write_bytes(whole)
    labels = tiny.folder / "t10k-labels-idx1-ubyte"
    labels.write_bytes(b"")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte: not an unsigned-byte IDX file "
                                        r"\(magic number missing"):
        datasets.fashion_mnist(str(tmp_path), "test", download=False)


def test_failed_download_creates_no_folders(tmp_path, no_network):
    with pytest.raises(DataError, match="the download failed"):
        datasets.fashion_mnist(str(tmp_path), "train", download=True)
    assert list(tmp_path.iterdir()) == []  # no FashionMNIST/raw left behind
    missing_root = tmp_path / "not" / "yet"
    with pytest.raises(DataError, match="the download failed"):
        datasets.mnist(str(missing_root), "test", download=True)
    assert list(tmp_path.iterdir()) == []
    # Folders that were there before, or hold files, are not touched.
    kept = write_idx(tmp_path / "FashionMNIST" / "raw" / "partial.gz", np.zeros(3, dtype=np.uint8))
    (tmp_path / "MNIST").mkdir()
    with pytest.raises(DataError, match="the download failed"):
        datasets.fashion_mnist(str(tmp_path), "train", download=True)
    with pytest.raises(DataError, match="the download failed"):
        datasets.mnist(str(tmp_path), "train", download=True)
    assert kept.is_file() and (tmp_path / "MNIST").is_dir()
    assert not (tmp_path / "MNIST" / "raw").exists()


def test_fashion_mnist_missing_without_network_is_one_line(tmp_path, no_network):
    with pytest.raises(DataError) as caught:
        datasets.fashion_mnist(str(tmp_path), "test", download=True)
    message = str(caught.value)
    assert "\n" not in message
    assert "the download failed (" in message
    assert "put t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from http" in message


def test_binarized_mnist_takes_two_values_with_the_right_mean(tmp_path):
    folder = tmp_path
    levels = np.array([0, 64, 191, 255], dtype=np.uint8)
    images = np.broadcast_to(levels.repeat(7)[None, :, None], (2, 28, 28))  # rows of 4 levels
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.array([3, 8], dtype=np.uint8))
    dataset = datasets.binarized_mnist(str(folder), "train", download=False)
    assert dataset.shape == (1, 28, 28) and dataset.targets == [3, 8]
    torch.manual_seed(0)
    draws = torch.stack([dataset[0][0] for _ in range(200)]).float()  # (200, 1, 28, 28)
    assert set(draws.unique().tolist()) <= {0.0, 255.0}
    rows = draws[:, 0].mean(dim=(0, 2)).reshape(4, 7).mean(dim=1)  # mean value per level
    assert rows[0] == 0 and rows[3] == 255
    assert abs(rows[1] - 64) < 10 and abs(rows[2] - 191) < 10
    assert not torch.equal(draws[0], draws[1])  # redrawn on every access


@pytest.mark.slow
@pytest.mark.skipif(not REAL_FASHION_MNIST.is_dir(), reason="real Fashion-MNIST not installed")
def test_real_fashion_mnist():
    train = datasets.fashion_mnist(str(REAL_FASHION_MNIST), "train", download=False)
    test = datasets.fashion_mnist(str(REAL_FASHION_MNIST), "test", download=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train[0][0].shape == (1, 28, 28) and train[0][0].dtype == torch.uint8
    assert sorted(set(train.targets)) == sorted(set(test.targets)) == list(range(10))
    assert train.targets[:3] == [9, 0, 0]  # ankle boot, T-shirt, T-shirt: the known start


# --------------------------------------------------------------------------- image folders


def test_image_folder_labels_pixels_and_deterministic_split(tmp_path):
    written = write_tiny_image_folder(tmp_path, classes=("dog", "cat"), per_class=6, size=(8, 8))
    names = sorted(written)  # cat/img_000 ... cat/img_005, dog/img_000 ...
    train = create_dataset("image_folder", str(tmp_path), "train", image_size=8)
    test = create_dataset("image_folder", str(tmp_path), "test", image_size=8)
    assert (len(train), len(test)) == (10, 2)  # files 0 and 10 of 12 are the test split
    assert train.n_classes == 2 and train.shape == (3, 8, 8)
    test_names = [names[0], names[10]]
    train_names = [n for n in names if n not in test_names]
    for dataset, expected in ((test, test_names), (train, train_names)):
        images, labels = as_array(dataset)
        np.testing.assert_array_equal(images, np.stack([written[n] for n in expected]))
        assert labels == [0 if n.startswith("cat/") else 1 for n in expected]


def test_image_folder_resizes_and_centre_crops(tmp_path):
    wide = np.zeros((32, 64, 3), dtype=np.uint8)  # (H, W, 3)
    wide[:, :, 0] = np.arange(64, dtype=np.uint8)[None, :]  # red encodes the column
    write_png(tmp_path / "wide.png", wide)
    write_png(tmp_path / "big.png", np.full((64, 48, 3), 77, dtype=np.uint8))
    write_png(tmp_path / "grey.png", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32) % 256)
    # Sorted: big.png (file 0, so the test split), grey.png, wide.png (train).
    test = datasets.image_folder(str(tmp_path), "test", image_size=32)
    assert [f.name for f in test.files] == ["big.png"]
    big = test[0][0]  # 64x48 -> 43x32 -> centre 32x32
    assert big.shape == (3, 32, 32) and big.eq(77).all()
    train = datasets.image_folder(str(tmp_path), "train", image_size=32)
    assert [f.name for f in train.files] == ["grey.png", "wide.png"]
    assert train.n_classes == 1 and train.targets == [0, 0]
    wide_out = train[1][0]  # 32x64 needs no resize: the centre columns 16..47 are kept
    assert wide_out.shape == (3, 32, 32)
    np.testing.assert_array_equal(wide_out[0].numpy(), np.tile(np.arange(16, 48), (32, 1)))

    grey = datasets.image_folder(str(tmp_path), "train", image_size=(16, 32), channels=1)
    assert grey.shape == (1, 16, 32)
    out = grey[0][0]
    expected = (np.arange(32 * 32).reshape(32, 32) % 256)[8:24]  # 32x32 covers 16x32: crop rows
    np.testing.assert_array_equal(out[0].numpy(), expected)


def test_image_folder_reads_jpeg_and_16_bit_png(tmp_path):
    from PIL import Image

    deep = np.array([[0, 257 * 10], [257 * 200, 65535]], dtype=np.uint16)  # (H, W)
    Image.fromarray(deep).save(tmp_path / "b_deep.png")
    Image.fromarray(np.full((6, 6, 3), 200, dtype=np.uint8)).save(tmp_path / "c_photo.JPG")
    write_png(tmp_path / "a_first.png", np.zeros((2, 2), dtype=np.uint8))  # the test file
    train = datasets.image_folder(str(tmp_path), "train", image_size=2, channels=1)
    assert [f.name for f in train.files] == ["b_deep.png", "c_photo.JPG"]
    assert train[0][0].tolist() == [[[0, 10], [200, 255]]]  # scaled by 1/257, not clipped
    photo = train[1][0]
    assert photo.shape == (1, 2, 2) and (photo.int() - 200).abs().max() <= 3  # JPEG is lossy


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="no PNG or JPEG files under"):
        datasets.image_folder(str(tmp_path), "train")
    write_png(tmp_path / "a" / "x.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="channels must be 1 or 3"):
        datasets.image_folder(str(tmp_path), "train", channels=2)
    (tmp_path / "a" / "y.png").write_bytes(b"not a png")
    broken = datasets.image_folder(str(tmp_path), "train")
    with pytest.raises(DataError, match="cannot decode"):
        broken[0]  # y.png is train (x.png, file 0, is test)
    write_png(tmp_path / "loose.png", np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="both directly in it"):
        datasets.image_folder(str(tmp_path), "train")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("empty.jpg", lambda png: b""),
        ("cut.png", lambda png: png[: len(png) // 2]),  # a copy interrupted half-way
        ("text.png", lambda png: b"not a png"),
    ],
)
def test_image_folder_unreadable_image_is_one_line(tmp_path, name, content):
    png = write_png(tmp_path / "a_ok.png", np.full((16, 16, 3), 7, dtype=np.uint8)).read_bytes()
    write_png(tmp_path / "b_ok.png", np.zeros((16, 16, 3), dtype=np.uint8))
    bad = tmp_path / f"c_{name}"
    bad.write_bytes(content(png))
    train = datasets.image_folder(str(tmp_path), "train", image_size=16)  # a_ok.png is test
    assert [f.name for f in train.files] == ["b_ok.png", bad.name]
    assert train[0][0].eq(0).all()
    with pytest.raises(DataError) as caught:
        train[1]
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"image_folder: cannot decode {bad} (")
    assert message.endswith("); replace or delete the file")


def test_image_folder_finds_files_as_it_always_has(tmp_path):
    # The behaviours for which torchvision's find_classes / make_dataset are not used.
    for relative in ("cat/a.png", "cat/sub/b.png", "cat/z.png", "dog/c.png", "emu/e.PNG"):
        write_png(tmp_path / relative, np.zeros((2, 2), dtype=np.uint8))
    write_png(tmp_path / "dog" / "d.bmp", np.zeros((2, 2), dtype=np.uint8))  # not PNG/JPEG
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    train = datasets.image_folder(str(tmp_path), "train", image_size=2, channels=1)
    test = datasets.image_folder(str(tmp_path), "test", image_size=2, channels=1)
    assert train.classes == ["cat", "dog", "emu"] and train.n_classes == 3  # notes/ is no class
    listed = [f.relative_to(tmp_path).as_posix() for f in test.files + train.files]
    # One sorted path order (sub/b before z), file 0 to test.
    assert listed == ["cat/a.png", "cat/sub/b.png", "cat/z.png", "dog/c.png", "emu/e.PNG"]
    assert test.targets + train.targets == [0, 0, 0, 1, 2]


# --------------------------------------------------------------------------- splits


def test_resolve_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("PIXELGEN_DATA", str(tmp_path / "env"))
    assert resolve_data_root(str(tmp_path / "given")) == tmp_path / "given"
    assert resolve_data_root(None) == tmp_path / "env"
    monkeypatch.delenv("PIXELGEN_DATA")
    assert resolve_data_root(None).parts[-2:] == ("pixelgen", "data")


def test_train_val_split_is_a_seeded_partition():
    train, val = train_val_split(50, 0.2, seed=3)
    assert len(val) == 10 and sorted(train + val) == list(range(50))
    assert train_val_split(50, 0.2, seed=3) == (train, val)
    assert train_val_split(50, 0.2, seed=4) != (train, val)
    assert train_val_split(50, 0.0, seed=3) == (list(range(50)), [])
    with pytest.raises(DataError, match="validation_fraction"):
        train_val_split(50, 1.0, seed=3)


def test_load_splits_flips_train_only(tmp_path):
    # Images whose columns differ, so a flip is visible.
    folder = tmp_path
    images = np.broadcast_to(np.arange(28, dtype=np.uint8)[None, None, :], (20, 28, 28))
    write_idx(folder / "train-images-idx3-ubyte.gz", images)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.arange(20, dtype=np.uint8) % 10)
    write_idx(folder / "t10k-images-idx3-ubyte.gz", images[:5])
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.arange(5, dtype=np.uint8))
    splits = load_splits(
        "mnist", str(folder), validation_fraction=0.25, seed=7, flips=True, download=False
    )
    assert [len(splits[k]) for k in ("train", "val", "test")] == [15, 5, 5]
    assert splits["train"].n_classes == 10 and splits["val"].shape == (1, 28, 28)
    assert sorted(splits["train"].targets + splits["val"].targets) == sorted(
        (np.arange(20) % 10).tolist()
    )
    again = load_splits("mnist", str(folder), validation_fraction=0.25, seed=7, download=False)
    assert again["val"].indices == splits["val"].indices

    original = torch.from_numpy(images[0].copy())[None]  # (1, 28, 28)
    torch.manual_seed(0)
    seen = {torch.equal(splits["train"][0][0], original) for _ in range(30)}
    assert seen == {True, False}  # both orientations occur
    for _ in range(10):
        assert torch.equal(splits["val"][0][0], original)
        assert torch.equal(splits["test"][0][0], original)

    empty = load_splits("mnist", str(folder), validation_fraction=0.0, download=False)
    assert len(empty["val"]) == 0 and len(empty["train"]) == 20


def test_horizontal_flip_is_one_global_coin_per_item():
    # Resume is bit-exact only if the flips are a function of torch's global random state
    # (seeded by training and saved in checkpoints): one uniform draw per item, flipped
    # when it is below p, as pixelgen has always drawn it.
    images = torch.arange(2 * 3 * 4, dtype=torch.uint8).reshape(2, 1, 3, 4)  # (N, C, H, W)
    flipped = HorizontalFlip(TensorImages(images, [0, 1], n_classes=2), p=0.3)
    torch.manual_seed(11)
    got = [flipped[k % 2][0] for k in range(200)]
    torch.manual_seed(11)
    coins = [bool(torch.rand(()) < 0.3) for _ in range(200)]
    expected = [images[k % 2].flip(-1) if coin else images[k % 2] for k, coin in enumerate(coins)]
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    assert 30 < sum(coins) < 90
    assert flipped[1][1] == 1 and flipped.targets == [0, 1] and flipped.shape == (1, 3, 4)

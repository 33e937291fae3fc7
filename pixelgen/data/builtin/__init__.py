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
data sets share are the core's (:mod:`pixelgen.data`); this plugin only reads files, one
module per source: :mod:`~pixelgen.data.builtin.cifar`, :mod:`~pixelgen.data.builtin.mnist`
(the MNIST family), :mod:`~pixelgen.data.builtin.imagenet` and
:mod:`~pixelgen.data.builtin.folder`, with :mod:`~pixelgen.data.builtin.common` for what they
share. This module registers them and re-exports their public names.
"""

from __future__ import annotations

from pixelgen.data.builtin.cifar import cifar10
from pixelgen.data.builtin.common import SPLITS, TensorImages
from pixelgen.data.builtin.folder import ImageFolder, image_folder
from pixelgen.data.builtin.imagenet import (
    IMAGENET_SOURCE,
    IMAGENET_TRAIN_FILES,
    IMAGENET_VAL_FILE,
    DownsampledImageNet,
    imagenet32,
    imagenet64,
)
from pixelgen.data.builtin.mnist import (
    BINARIZE_THRESHOLD,
    STATIC_MNIST_FILES,
    STATIC_MNIST_URL,
    DynamicallyBinarized,
    binarized,
    binarized_mnist,
    binarized_mnist_static,
    fashion_mnist,
    mnist,
    read_amat,
    read_idx,
)
from pixelgen.registry import DatasetSpec
from pixelgen.registry.hookspecs import hookimpl

# torchvision is imported inside the functions that use it: it adds a second to every
# `import pixelgen.data.builtin`, which the registry does just to list plugin names.

__all__ = [
    "SPLITS",
    "TensorImages",
    "cifar10",
    "read_idx",
    "mnist",
    "fashion_mnist",
    "BINARIZE_THRESHOLD",
    "binarized",
    "DynamicallyBinarized",
    "binarized_mnist",
    "STATIC_MNIST_URL",
    "STATIC_MNIST_FILES",
    "read_amat",
    "binarized_mnist_static",
    "IMAGENET_TRAIN_FILES",
    "IMAGENET_VAL_FILE",
    "IMAGENET_SOURCE",
    "DownsampledImageNet",
    "imagenet32",
    "imagenet64",
    "ImageFolder",
    "image_folder",
    "pixelgen_datasets",
]


@hookimpl
def pixelgen_datasets() -> list[DatasetSpec]:
    """The built-in data sets, by the names recipes use (``data.name``)."""
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
            "imagenet32", imagenet32, "Downsampled ImageNet 32x32 (npz release): 1.28M train / 50k val as test",
            downloads=False,
        ),
        DatasetSpec(
            "imagenet64", imagenet64, "Downsampled ImageNet 64x64 (npz release): 1.28M train / 50k val as test",
            downloads=False,
        ),
        DatasetSpec(
            "image_folder", image_folder, "PNG/JPEG files under root, class per subfolder, 10% test",
            downloads=False,
        ),
    ]

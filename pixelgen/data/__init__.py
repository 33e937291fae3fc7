"""The train / validation / test splits every data set shares.

A data set plugin (the built-in ones live in :mod:`pixelgen.data.builtin`) only says how to read
the official ``"train"`` and ``"test"`` splits, and ``"val"`` where the data set ships one
(its :class:`~pixelgen.registry.DatasetSpec` lists ``"val"`` in ``splits``). Everything
after that is the same for all of them and lives here: where data lives
(:func:`resolve_data_root`), the seeded validation split carved out of the official training
split when the data set has none of its own (:func:`train_val_split`), subsets that keep a
data set's ``n_classes`` / ``shape`` / ``targets`` (:class:`DataSubset`), training-time
horizontal flips (:class:`HorizontalFlip`) and the three splits together
(:func:`load_splits`). The test split is never touched for model selection.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

import platformdirs
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from pixelgen.errors import DataError
from pixelgen.registry import create_dataset, get_dataset_spec

# torchvision is imported where it is used: importing it takes about 1.2 s (python -X
# importtime, after torch), which every `import pixelgen.training.plan` would pay, data or not.


def resolve_data_root(root: str | os.PathLike | None) -> pathlib.Path:
    """Where data sets live: ``root`` if given, else ``$PIXELGEN_DATA``, else a user cache.

    The fallback is ``platformdirs.user_cache_dir("pixelgen") / "data"``. Nothing is
    created; the factories (or torchvision's downloader) make folders when they need them.
    """
    if root:
        return pathlib.Path(root).expanduser()
    from_env = os.environ.get("PIXELGEN_DATA")
    if from_env:
        return pathlib.Path(from_env).expanduser()
    return pathlib.Path(platformdirs.user_cache_dir("pixelgen")) / "data"


def train_val_split(n: int, validation_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split indices ``0..n-1`` into (train, validation) by a seeded random permutation.

    ``round(n * validation_fraction)`` indices go to validation. The same ``(n, fraction,
    seed)`` always gives the same split, on any machine (a private ``torch.Generator``; the
    global random state is neither used nor changed). Both lists are returned sorted.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise DataError(
            f"validation_fraction must be in [0, 1), got {validation_fraction!r}"
        )
    n_val = int(round(n * validation_fraction))
    generator = torch.Generator().manual_seed(seed)
    permutation = torch.randperm(n, generator=generator).tolist()
    return sorted(permutation[n_val:]), sorted(permutation[:n_val])


class DatasetWrapper:
    """What pixelgen reads from a data set, passed through from the ``dataset`` a wrapper
    holds: ``n_classes`` and ``shape`` (``targets`` is each wrapper's own)."""

    dataset: Dataset

    @property
    def n_classes(self) -> int:
        return self.dataset.n_classes

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.dataset.shape


class DataSubset(DatasetWrapper, Subset):
    """A :class:`~torch.utils.data.Subset` that keeps ``n_classes``, ``shape`` and ``targets``."""

    @property
    def targets(self) -> list[int]:
        parent = self.dataset.targets
        return [parent[i] for i in self.indices]


class HorizontalFlip(DatasetWrapper, Dataset):
    """Mirror each item left-right with probability ``p``, by torchvision's
    ``transforms.v2.RandomHorizontalFlip``.

    The coin is one ``torch.rand(1)`` from torch's global random state per item, which
    training seeds and checkpoints (and DataLoader seeds per worker), so the flips of an
    epoch repeat exactly on resume. For the training split only: evaluation must see the
    data as it is.
    """

    def __init__(self, dataset: Dataset, p: float = 0.5):
        from torchvision.transforms import v2

        self.dataset = dataset
        self.p = p
        self.flip = v2.RandomHorizontalFlip(p)  # a plain (C, H, W) tensor is an image to v2

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image, label = self.dataset[index]
        return self.flip(image), label  # (C, H, W), W reversed or not

    @property
    def targets(self) -> list[int]:
        return self.dataset.targets


def max_value(dataset: Dataset, batch_size: int = 4096) -> int:
    """The largest sub-pixel value of every item of ``dataset`` (-1 when it is empty).

    Items are read as training reads them; torch's global random state, which flips and
    dynamic binarization draw from, is left as it was.
    """
    largest = -1
    with torch.random.fork_rng(devices=[]):
        for images, _ in DataLoader(dataset, batch_size=batch_size):
            largest = max(largest, int(images.max())) if images.numel() else largest
    return largest


def load_splits(
    name: str,
    root: str | os.PathLike | None,
    *,
    validation_fraction: float = 0.1,
    seed: int = 0,
    flips: bool = False,
    download: bool = True,
    **options: Any,
) -> dict[str, Dataset]:
    """Build the registered data set ``name`` as ``{"train", "val", "test"}`` datasets.

    ``test`` is the official test split. A data set that ships its own validation split
    (``"val"`` in its spec's ``splits``, e.g. binarized MNIST's ``valid`` file) gives
    ``val`` as it is, ``train`` its whole training split, and ``validation_fraction`` is
    not used. Otherwise ``train`` and ``val`` are :class:`DataSubset` s of the official
    training split, cut by :func:`train_val_split` (``validation_fraction=0`` gives an
    empty ``val``). ``flips`` wraps ``train`` alone in :class:`HorizontalFlip`. ``root``
    goes through :func:`resolve_data_root`; ``options`` go to the factory.
    """
    data_root = str(resolve_data_root(root))
    full_train = create_dataset(name, data_root, "train", download=download, **options)
    test = create_dataset(name, data_root, "test", download=download, **options)
    if "val" in get_dataset_spec(name).splits:
        own_val = create_dataset(name, data_root, "val", download=download, **options)
        train: Dataset = DataSubset(full_train, range(len(full_train)))
        val: Dataset = DataSubset(own_val, range(len(own_val)))
    else:
        train_indices, val_indices = train_val_split(len(full_train), validation_fraction, seed)
        train, val = DataSubset(full_train, train_indices), DataSubset(full_train, val_indices)
    if flips:
        train = HorizontalFlip(train)
    return {"train": train, "val": val, "test": test}


def stack_split(dataset: Dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``limit`` items of a split (all by default) as uint8 images ``(N, C, H, W)``
    and long labels ``(N,)``, random training flips undone (the images as stored)."""
    while isinstance(dataset, HorizontalFlip):
        dataset = dataset.dataset
    n = len(dataset) if limit is None else min(limit, len(dataset))
    if n == 0:
        raise DataError("the split has no images (check data.limit_* and data.validation_fraction)")
    batches = list(DataLoader(Subset(dataset, range(n)), batch_size=1024, shuffle=False))
    images = torch.cat([images for images, _ in batches])  # (N, C, H, W)
    labels = torch.cat([torch.as_tensor(labels) for _, labels in batches]).long()  # (N,)
    return images.to(torch.uint8), labels


def load_data(run: Any, root: str | None = None) -> dict[str, Dataset]:
    """The run's ``{"train", "val", "test"}`` splits with its ``limit_*`` applied.

    The validation split is cut from the official training split by ``train.seed`` and
    ``data.validation_fraction`` (``load_splits``); ``root``
    overrides ``data.root``.
    """
    data = run.data
    options = dict(data.options)
    if data.image_size is not None:
        options["image_size"] = data.image_size
    splits = load_splits(
        data.name,
        root or data.root,
        validation_fraction=data.validation_fraction,
        seed=run.train.seed,
        flips=data.flips,
        download=data.download,
        **options,
    )
    limits = {"train": data.limit_train, "val": data.limit_val, "test": data.limit_test}
    for split, limit in limits.items():
        if limit is not None and limit < len(splits[split]):
            splits[split] = DataSubset(splits[split], range(limit))
    if len(splits["train"]) == 0:
        raise DataError(f"data: the training split of {data.name!r} is empty")
    return splits

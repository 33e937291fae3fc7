"""A small classifier of a data set's labels: the second feature space of the sample-quality
metrics (:mod:`pixelgen.study.scoring`, ``--features classifier``).

The standard feature space, Inception-v3 trained on ImageNet, needs a weights file that may
not be at hand and sees 28x28 grey images upscaled to 299x299 colour. A classifier trained
on the data set itself sees them as they are; its penultimate layer (128 numbers) is the
feature vector of FID, KID and precision/recall, and its logits the class probabilities
of the Inception Score. Its figures rank models on one data set; they are not comparable
with published FID, which is measured in Inception features.

It is trained once per data set, on the official training split, and cached as a
weights-only ``torch.save`` file::

    <data root>/pixelgen-classifiers/<data set>-<fingerprint>.pt   beside the data, or
    <user cache>/pixelgen/classifiers/<data set>-<fingerprint>.pt  where that is read-only

The fingerprint is a SHA-256 over the training images and labels and the classifier's
settings, so other data (or other settings) get another file; the file records the
digest of its weights (:func:`pixelgen.store.checkpoint.weights_digest`), checked on every load.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

import attrs
import platformdirs
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pixelgen.data import stack_split
from pixelgen.errors import PixelgenError
from pixelgen.store.checkpoint import weights_digest
from pixelgen.store.files import FileWriteError, atomic_writer

FORMAT = "pixelgen-classifier"
FORMAT_VERSION = 1
CACHE_FOLDER = "pixelgen-classifiers"


class ClassifierError(PixelgenError):
    """A cached classifier file is not one, or was damaged."""


@attrs.frozen(kw_only=True)
class TrainingSettings:
    """How the classifier is trained (part of its fingerprint)."""

    epochs: int = 3
    batch_size: int = 128
    lr: float = 2e-3
    seed: int = 0
    feature_dim: int = 128


class FeatureClassifier(nn.Module):
    """Three 3x3 convolutions with pooling, a 128-wide feature layer, a linear classifier.

    Input uint8 ``(B, C, H, W)``; :meth:`features_and_logits` gives ``(B, feature_dim)``
    and ``(B, n_classes)``.
    """

    def __init__(self, in_channels: int, n_classes: int, feature_dim: int = 128) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 16, H/2, W/2)
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (B, 32, H/4, W/4)
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4),  # (B, 64, 4, 4)
            nn.Flatten(), nn.Linear(64 * 16, feature_dim), nn.ReLU(),  # (B, feature_dim)
        )
        self.classify = nn.Linear(feature_dim, n_classes)

    def features_and_logits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """The feature layer ``(B, feature_dim)`` and the logits ``(B, n_classes)`` of uint8 ``x``."""
        features = self.body(x.float() / 127.5 - 1.0)  # (B, feature_dim)
        return features, self.classify(features)  # (B, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.features_and_logits(x)[1]


def train_classifier(
    train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], n_classes: int, settings: TrainingSettings
) -> tuple[FeatureClassifier, float]:
    """Train on ``train`` = (uint8 images ``(N, C, H, W)``, labels ``(N,)``); returns the
    model and its accuracy on ``test``. Seeded: the same data give the same weights."""
    images, labels = train
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        model = FeatureClassifier(images.shape[1], n_classes, settings.feature_dim)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    generator = torch.Generator().manual_seed(settings.seed)
    model.train()
    for _ in range(settings.epochs):
        for batch in torch.randperm(len(images), generator=generator).split(settings.batch_size):
            loss = F.cross_entropy(model(images[batch]), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return model.eval(), accuracy(model, *test)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1000) -> float:
    """Share of ``images`` whose most likely class is their label."""
    correct = sum(int((model(x).argmax(1) == y).sum()) for x, y in zip(images.split(batch_size), labels.split(batch_size)))
    return correct / len(images)


def fingerprint(name: str, train: tuple[Tensor, Tensor], settings: TrainingSettings) -> str:
    """SHA-256 over the data set's name, its training images and labels, and the settings."""
    digest = hashlib.sha256(json.dumps([FORMAT_VERSION, name, attrs.asdict(settings)]).encode())
    images, labels = train
    digest.update(f"{tuple(images.shape)}|".encode())
    digest.update(images.contiguous().numpy().tobytes())
    digest.update(labels.to(torch.int64).numpy().tobytes())
    return digest.hexdigest()


def cache_folders(data_root: os.PathLike) -> list[Path]:
    """Where classifiers are cached, in order: beside the data, then the user cache."""
    return [Path(data_root) / CACHE_FOLDER, Path(platformdirs.user_cache_dir("pixelgen")) / "classifiers"]


def save_classifier(path: Path, model: FeatureClassifier, info: dict[str, Any]) -> Path:
    """Write ``model`` with ``info`` and the digest of its weights, weights-only, atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_writer(path) as handle:
        torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **info, "state": state,
                    "digest": weights_digest(state)}, handle)
    return path


def read_classifier(path: os.PathLike) -> tuple[FeatureClassifier, dict[str, Any]]:
    """A cached classifier and its record (``dataset``, ``fingerprint``, ``test_accuracy``,
    ...), its weights checked against their digest.

    Raises:
        ClassifierError: not a classifier file, or its weights fail their digest.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or code-carrying files are all refused
        raise ClassifierError(f"{path}: not a pixelgen classifier file ({type(exc).__name__}); delete it") from None
    if not isinstance(saved, dict) or saved.get("format") != FORMAT or saved.get("format_version") != FORMAT_VERSION:
        raise ClassifierError(f"{path}: not a pixelgen classifier file (no {FORMAT} v{FORMAT_VERSION} marker); delete it")
    if saved.get("digest") != weights_digest(saved["state"]):
        raise ClassifierError(f"{path}: the classifier's weights fail their checksum (damaged); delete it")
    model = FeatureClassifier(saved["in_channels"], saved["n_classes"], saved["feature_dim"])
    model.load_state_dict(saved["state"])
    return model.eval(), {k: v for k, v in saved.items() if k not in ("state", "digest")}


def classifier_for(
    name: str, splits: dict[str, Any], data_root: os.PathLike, report: Callable[[str], None],
    settings: TrainingSettings | None = None,
) -> tuple[Path, dict[str, Any]]:
    """The cached classifier file of data set ``name`` (splits ``"train"`` and ``"test"``,
    the official ones), training and caching it first if there is none; ``report`` gets a
    line with its test accuracy when it is trained. Returns the file and its record."""
    settings = settings or TrainingSettings()
    train, test = stack_split(splits["train"]), stack_split(splits["test"])
    key = fingerprint(name, train, settings)
    file_name = f"{name}-{key[:16]}.pt"
    for folder in cache_folders(data_root):
        if (folder / file_name).is_file():
            try:
                return folder / file_name, read_classifier(folder / file_name)[1]
            except ClassifierError as exc:
                report(f"  {exc}: training it again")
    report(f"  training the feature classifier of {name} ({len(train[0])} images, {settings.epochs} epochs) ...")
    model, test_accuracy = train_classifier(train, test, int(splits["train"].n_classes), settings)
    info = {"dataset": name, "fingerprint": key, "in_channels": int(train[0].shape[1]),
            "n_classes": int(splits["train"].n_classes), "feature_dim": settings.feature_dim,
            "train_images": len(train[0]), "test_images": len(test[0]), "test_accuracy": test_accuracy}
    path = _save_somewhere(file_name, model, info, cache_folders(data_root))
    report(f"  feature classifier of {name}: test accuracy {test_accuracy:.2%} "
           f"({len(test[0])} test images) -> {path}")
    return path, info


def _save_somewhere(file_name: str, model: FeatureClassifier, info: dict[str, Any], folders: list[Path]) -> Path:
    """Save into the first of ``folders`` that can be written (a read-only data folder is passed over)."""
    failure = "no folder"
    for folder in folders:
        try:
            return save_classifier(folder / file_name, model, info)
        except (OSError, FileWriteError) as exc:
            failure = getattr(exc, "strerror", None) or str(exc)
    raise ClassifierError(f"cannot cache the feature classifier in {' or '.join(map(str, folders))} "
                          f"({failure}); free space or make one of them writable")

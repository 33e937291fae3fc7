"""Sample quality: Frechet distance (FID), Inception Score (IS), kernel distance (KID) and
precision/recall of generated images against training images, in a chosen feature space.

::

    space = feature_space("classifier", run.data, report=print)   or "inception"
    reference = reference_images(splits, n)         the first n training images
    figures = sample_quality(samples, reference, ("fid", "kid"), space)
    histogram_samples(train_images, n, seed)         the per-position histogram model

The statistics are torch-fidelity's (``torch_fidelity.calculate_metrics``), not ours: it
reproduces the reference TensorFlow implementations of FID, IS and KID to within float
rounding, accepts any feature extractor registered with it
(``torch_fidelity.register_feature_extractor``), and takes in-memory datasets. torchmetrics
would serve too, but needs its own Inception wrapper (torch-fidelity's, through
``torch-fidelity``) for the same numbers; pixelgen goes to the source.

Two feature spaces:

``inception``
    torch-fidelity's Inception-v3 (``inception-v3-compat``), the network published FIDs
    are measured with; grey images are repeated to three channels. Its weights file,
    :data:`INCEPTION_WEIGHTS_FILE`, is read from a local path (nothing is downloaded):
    the given path, then ``$PIXELGEN_INCEPTION_WEIGHTS``, then torch's hub cache.
``classifier``
    a small classifier pixelgen trains once on the data set's labels
    (:mod:`pixelgen.study.classifier`): FID, KID and precision/recall in its 128-wide feature
    layer, IS from its logits. Not comparable with published FID: figures say so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from pixelgen.data import load_splits, resolve_data_root, stack_split
from pixelgen.errors import PixelgenError
from pixelgen.recipe import SCORE_FEATURES, SCORE_METRICS
from pixelgen.study.classifier import classifier_for, read_classifier

#: torch-fidelity's Inception-v3 weights (converted from the TensorFlow graph FID was defined with).
INCEPTION_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"
#: Where that file is published (pixelgen never downloads it).
INCEPTION_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + INCEPTION_WEIGHTS_FILE
#: The environment variable naming the weights file (or its folder).
WEIGHTS_ENV = "PIXELGEN_INCEPTION_WEIGHTS"
#: The feature classifier's name in torch-fidelity's registry.
CLASSIFIER_EXTRACTOR = "pixelgen-classifier"

#: How each metric's figures are named in results: torch-fidelity's key -> pixelgen's.
_FIGURES = {
    "frechet_inception_distance": "fid", "inception_score_mean": "inception_score", "inception_score_std": "inception_score_std",
    "kernel_inception_distance_mean": "kid", "kernel_inception_distance_std": "kid_std",
    "precision": "precision", "recall": "recall",
}
#: pixelgen's metric names -> torch-fidelity's switches (and feature_layer_* suffixes).
_SWITCHES = {"fid": "fid", "is": "isc", "kid": "kid", "pr": "prc"}
#: The figures a score reports, in the order they are shown (each with ``_std`` where kept).
FIGURES = ("fid", "inception_score", "kid", "precision", "recall")
_NAMES = {"fid": "FID", "is": "IS", "inception_score": "IS", "kid": "KID", "precision": "precision", "recall": "recall"}


class ScoreError(PixelgenError):
    """Sample-quality metrics cannot be computed: missing weights, too few images, ..."""


@attrs.frozen(kw_only=True)
class FeatureSpace:
    """Where images are compared: a feature extractor registered with torch-fidelity."""

    name: str  # "inception" or "classifier"
    extractor: str  # its torch-fidelity registry name
    weights_path: Path
    layers: dict[str, str]  # torch-fidelity metric switch -> feature layer
    rgb: bool  # the extractor wants three channels
    label: str  # how figures in this space are labelled
    details: dict[str, Any] = attrs.field(factory=dict)  # e.g. the classifier's test accuracy


def metric_name(figure: str) -> str:
    """A figure's short name, e.g. ``"FID"`` for ``"fid"``."""
    return _NAMES.get(figure, figure)


def metric_label(figure: str, space: str) -> str:
    """A figure's label, e.g. ``"FID (classifier features, not comparable with published FID)"``."""
    name = metric_name(figure)
    if space == "classifier":
        published = name if figure in ("fid", "is", "inception_score", "kid") else "figures"
        return f"{name} (classifier features, not comparable with published {published})"
    return f"{name} ({'Inception-v3' if space == 'inception' else space} features)"


# ------------------------------------------------------------------ feature spaces


def inception_weights(path: str | os.PathLike | None = None) -> Path:
    """The Inception weights file: ``path`` (a file, or a folder holding it) if given, else
    ``$PIXELGEN_INCEPTION_WEIGHTS`` if set, else torch's hub cache (``<hub>/checkpoints/``,
    where torch-fidelity's own download would have put it). A path that is given is used
    or refused, never passed over for another file.

    Raises:
        ScoreError: one line naming the file and where to put it.
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    given = path or os.environ.get(WEIGHTS_ENV)
    where = Path(given).expanduser() if given else hub
    found = where / INCEPTION_WEIGHTS_FILE if where.is_dir() or not given else where
    if found.is_file():
        return found
    raise ScoreError(
        f"Inception weights {INCEPTION_WEIGHTS_FILE} not found at {found}; download it from "
        f"{INCEPTION_WEIGHTS_URL} into {hub}/ or pass its path (--inception-weights, score.weights_path, "
        f"${WEIGHTS_ENV}), or use --features classifier"
    )


def inception_space(weights_path: str | os.PathLike | None = None) -> FeatureSpace:
    """torch-fidelity's Inception-v3 with its standard layers (2048 pool features, logits)."""
    path = inception_weights(weights_path)
    _check_weights_only(path)
    layers = {"fid": "2048", "kid": "2048", "prc": "2048", "isc": "logits_unbiased"}
    return FeatureSpace(name="inception", extractor="inception-v3-compat", weights_path=path, layers=layers,
                        rgb=True, label="Inception-v3 features")


def _check_weights_only(path: Path) -> None:
    """torch-fidelity unpickles the weights file in full; refuse one that is more than tensors."""
    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a damaged file, or one that would run code when unpickled
        raise ScoreError(f"{path}: not a plain weights file ({type(exc).__name__}); download "
                         f"{INCEPTION_WEIGHTS_FILE} again from {INCEPTION_WEIGHTS_URL}") from None


def official_splits(data: Any) -> dict[str, Dataset]:
    """The official ``"train"`` and ``"test"`` splits of a run's data set (a recipe's
    ``[data]`` section): whole, unflipped, without the run's limits or validation cut."""
    options = dict(data.options)
    if data.image_size is not None:
        options["image_size"] = data.image_size
    return load_splits(data.name, data.root, validation_fraction=0.0, download=data.download, **options)


def classifier_space(data: Any, splits: dict[str, Dataset], report: Callable[[str], None]) -> FeatureSpace:
    """The feature classifier of ``data``'s data set (trained now if not cached)."""
    path, info = classifier_for(data.name, splits, resolve_data_root(data.root), report)
    return FeatureSpace(name="classifier", extractor=CLASSIFIER_EXTRACTOR, weights_path=path,
                        layers={"fid": "features", "kid": "features", "prc": "features", "isc": "logits"},
                        rgb=False, label="classifier features, not comparable with published FID",
                        details={"classifier_test_accuracy": info["test_accuracy"], "classifier": str(path)})


def feature_space(
    features: str, data: Any, splits: dict[str, Dataset], *, weights_path: str | None = None,
    report: Callable[[str], None] = lambda line: None,
) -> FeatureSpace:
    """:func:`inception_space` or :func:`classifier_space` by name."""
    if features not in SCORE_FEATURES:
        raise ScoreError(f"--features {features!r}: choose one of {', '.join(SCORE_FEATURES)}")
    return inception_space(weights_path) if features == "inception" else classifier_space(data, splits, report)


# ------------------------------------------------------------------ images


def reference_images(splits: dict[str, Dataset], n: int, split: str = "train") -> Tensor:
    """The first ``n`` images of an official split, uint8 ``(n, C, H, W)``."""
    images, _ = stack_split(splits[split], n)
    if len(images) < n:
        raise ScoreError(f"the {split} split has {len(images)} images; score with --n {len(images)} or fewer")
    return images


def histogram_samples(train_images: Tensor, n: int, seed: int = 0) -> Tensor:
    """``n`` images of the per-position histogram model: every sub-pixel drawn on its own
    from the values the training images have at that position (uint8 ``(n, C, H, W)``)."""
    generator = torch.Generator().manual_seed(seed)
    source = torch.randint(0, len(train_images), (n, *train_images.shape[1:]), generator=generator)  # (n, C, H, W)
    return torch.gather(train_images, 0, source)


class _Images(Dataset):
    """uint8 images ``(N, C, H, W)`` as torch-fidelity reads them, grey made RGB if asked."""

    def __init__(self, images: Tensor | np.ndarray, rgb: bool) -> None:
        self.images = torch.as_tensor(images)
        self.rgb = rgb

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Tensor:
        image = self.images[index]  # (C, H, W)
        return image.expand(3, -1, -1).contiguous() if self.rgb and len(image) == 1 else image


# ------------------------------------------------------------------ the metrics


def sample_quality(
    samples: Tensor | np.ndarray, reference: Tensor | np.ndarray, metrics: Sequence[str], space: FeatureSpace,
    *, device: str = "cpu", seed: int = 2020, batch_size: int = 100,
) -> dict[str, float]:
    """The ``metrics`` ("fid", "is", "kid", "pr") of ``samples`` against ``reference``
    (uint8 ``(N, C, H, W)`` each) in feature space ``space``, by torch-fidelity.

    Returns:
        ``fid``; ``inception_score``, ``inception_score_std`` (over 10 splits); ``kid``, ``kid_std`` (over 100 random
        subsets of ``min(1000, N / 2)`` images, so that they differ); ``precision``,
        ``recall`` (3 nearest neighbours): those asked for.
    """
    torch_fidelity = _torch_fidelity()
    unknown = sorted(set(metrics) - set(SCORE_METRICS))
    if unknown or not metrics:
        raise ScoreError(f"metrics {', '.join(unknown) or '(none)'}: choose from {', '.join(SCORE_METRICS)}")
    n = min(len(samples), len(reference))
    if n < 10:
        raise ScoreError(f"{n} images: sample-quality metrics need at least 10 samples and reference images")
    _register_classifier_extractor()
    binary = any(m in metrics for m in ("fid", "kid", "pr"))
    try:
        raw = torch_fidelity.calculate_metrics(
            input1=_Images(samples, space.rgb), input2=_Images(reference, space.rgb) if binary else None,
            cuda=device.startswith("cuda"), batch_size=batch_size, feature_extractor=space.extractor,
            feature_extractor_weights_path=str(space.weights_path), verbose=False, cache=False,
            save_cpu_ram=True, rng_seed=seed, isc_splits=10, kid_subset_size=min(1000, n // 2),
            **{_SWITCHES[m]: True for m in metrics},
            **{f"feature_layer_{switch}": layer for switch, layer in space.layers.items()},
        )
    except (ValueError, RuntimeError, KeyError) as exc:  # torch-fidelity's checks raise ValueError
        raise ScoreError(f"torch-fidelity could not score in {space.name} features "
                         f"({space.weights_path}): {' '.join(str(exc).split())[:200]}") from None
    return {_FIGURES[k]: float(v) for k, v in raw.items() if k in _FIGURES}


def _torch_fidelity() -> Any:
    """The metrics' library, loaded when scoring runs (an optional dependency: pixelgen[score])."""
    try:
        import torch_fidelity
    except ImportError:
        raise ScoreError("sample-quality metrics need torch-fidelity: pip install 'pixelgen[score]' "
                         "(or pip install torch-fidelity)") from None
    return torch_fidelity


@functools.cache
def _register_classifier_extractor() -> None:
    """Make pixelgen's feature classifier known to torch-fidelity (once per process)."""
    import torch_fidelity
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

    class ClassifierFeatures(torch_fidelity.FeatureExtractorBase):
        """torch-fidelity's view of a :class:`pixelgen.study.classifier.FeatureClassifier` file
        (``feature_extractor_weights_path``): layers "features" and "logits"."""

        def __init__(self, name: str, features_list: list[str], feature_extractor_weights_path: str | None = None,
                     **kwargs: Any) -> None:
            super().__init__(name, features_list)
            self.classifier = read_classifier(feature_extractor_weights_path)[0]

        @staticmethod
        def get_provided_features_list() -> tuple[str, ...]:
            return ("features", "logits")

        @staticmethod
        def get_default_feature_layer_for_metric(metric: str) -> str:
            return "logits" if metric == "isc" else "features"

        @staticmethod
        def can_be_compiled() -> bool:
            return False

        def forward(self, x: Tensor) -> tuple[Tensor, ...]:
            features, logits = self.classifier.features_and_logits(x)  # (B, 128), (B, classes)
            found = {"features": features, "logits": logits}
            return tuple(found[name] for name in self.features_list)

    if CLASSIFIER_EXTRACTOR not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(CLASSIFIER_EXTRACTOR, ClassifierFeatures)


def score_images(
    samples: Tensor | np.ndarray, reference: Tensor, metrics: Sequence[str], space: FeatureSpace, **options: Any
) -> dict[str, Any]:
    """:func:`sample_quality` with what the figures mean: the feature space, its label,
    the numbers of images, and the space's details (the classifier's test accuracy)."""
    figures = sample_quality(samples, reference, metrics, space, **options)
    return {**figures, "features": space.name, "label": space.label, "n_samples": len(samples),
            "n_reference": len(reference), **space.details}


@attrs.frozen
class Scoring:
    """What a model's samples are scored against: the first ``n`` training images of its
    data set, in a feature space. Prepared before any sample is drawn, so that missing
    weights or too few images fail first; used by ``pixelgen score`` and a run's ``[score]``."""

    features: str
    splits: dict[str, Dataset]
    reference: Tensor  # uint8 (n, C, H, W)
    space: FeatureSpace

    @classmethod
    def prepare(cls, features: str, data: Any, n: int, *, weights_path: str | os.PathLike | None = None,
                report: Callable[[str], None] = lambda line: None,
                splits: dict[str, Dataset] | None = None) -> Scoring:
        """The official splits of ``data`` (a recipe's ``[data]``; ``splits`` if read
        already), their reference images and the feature space ``features`` (see
        :func:`feature_space`)."""
        splits = official_splits(data) if splits is None else splits
        reference = reference_images(splits, n)
        return cls(features, splits, reference, feature_space(features, data, splits, weights_path=weights_path,
                                                              report=report))

    def score(self, samples: Tensor | np.ndarray, metrics: Sequence[str], device: str) -> dict[str, Any]:
        """:func:`score_images` of ``samples`` against the reference images."""
        return score_images(samples, self.reference, metrics, self.space, device=device)

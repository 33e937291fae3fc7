"""Sample-quality metrics: torch-fidelity's numbers through pixelgen's plumbing.

The feature extractors here are stand-ins registered with torch-fidelity through its own
interface (``register_feature_extractor``): a lookup table that maps an image to a row of
known features, so that the Frechet distance can be pinned against its closed form, and a
tiny network that reads its "weights" from the Inception weights path pixelgen resolves.
"""

from __future__ import annotations

import json
import math
import pathlib
import sys

import attrs
import numpy as np
import pytest
import scipy.linalg
import torch
import torch_fidelity
from datafiles import write_tiny_mnist
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from pixelgen import cli
from pixelgen.recipe import dump_toml, recipe_from_dict
from pixelgen.store.archive import RunArchive
from pixelgen.study import classifier, scoring

# --------------------------------------------------------------------------- stand-in extractors


class LookupFeatures(torch_fidelity.FeatureExtractorBase):
    """Image ``i`` (pixels ``i // 256, i % 256``) -> row ``i`` of the table stored at
    ``feature_extractor_weights_path``; layers "features" and "logits" (the same rows)."""

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        self.table = torch.load(feature_extractor_weights_path, weights_only=True)

    @staticmethod
    def get_provided_features_list():
        return ("features", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return "logits" if metric == "isc" else "features"

    @staticmethod
    def can_be_compiled():
        return False

    def forward(self, x):
        index = x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()  # (B,)
        return tuple(self.table[index] for _ in self.features_list)


class TinyInception(LookupFeatures):
    """Inception's layer names; reads a small linear map from the weights file and records
    the inputs it was given."""

    seen: list = []

    @staticmethod
    def get_provided_features_list():
        return ("2048", "logits_unbiased")

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        torch_fidelity.FeatureExtractorBase.__init__(self, name, features_list)
        self.linear = torch.nn.Linear(3 * 2 * 2, 4)
        self.linear.load_state_dict(torch.load(feature_extractor_weights_path, weights_only=True))

    def forward(self, x):
        TinyInception.seen.append(tuple(x.shape))
        features = self.linear(x.flatten(1).float() / 255)  # (B, 4)
        return tuple(features for _ in self.features_list)


for _name, _cls in (("test-lookup", LookupFeatures), ("test-tiny-inception", TinyInception)):
    if _name not in FEATURE_EXTRACTORS_REGISTRY:
        torch_fidelity.register_feature_extractor(_name, _cls)


def index_images(n: int, offset: int = 0) -> torch.Tensor:
    """uint8 ``(n, 1, 1, 2)`` images naming rows ``offset .. offset + n - 1`` of a table."""
    i = torch.arange(offset, offset + n)
    return torch.stack([i // 256, i % 256], dim=1).to(torch.uint8)[:, None, None, :]


def lookup_space(tmp_path: pathlib.Path, table: torch.Tensor) -> scoring.FeatureSpace:
    torch.save(table, tmp_path / "table.pt")
    layers = {"fid": "features", "kid": "features", "prc": "features", "isc": "logits"}
    return scoring.FeatureSpace(name="lookup", extractor="test-lookup", weights_path=tmp_path / "table.pt",
                                layers=layers, rgb=False, label="lookup features")


def gaussian_with_exact_moments(rng: np.random.Generator, n: int, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """``n`` points whose sample mean is ``mean`` and sample covariance ``diag(std**2)``, exactly."""
    z = rng.standard_normal((n, len(mean)))
    z -= z.mean(axis=0)
    whitened = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False))).T  # sample covariance I
    return whitened * std + mean


# --------------------------------------------------------------------------- the metrics


def test_frechet_distance_is_the_closed_form_for_known_gaussians(tmp_path):
    rng = np.random.default_rng(0)
    mu1, mu2 = np.array([0.0, 1.0, -2.0, 0.5]), np.array([1.0, 0.5, -1.0, 0.0])
    s1, s2 = np.array([1.0, 2.0, 0.5, 1.5]), np.array([2.0, 1.0, 1.0, 0.5])
    x, y = gaussian_with_exact_moments(rng, 300, mu1, s1), gaussian_with_exact_moments(rng, 300, mu2, s2)
    space = lookup_space(tmp_path, torch.from_numpy(np.concatenate([x, y])))

    figures = scoring.sample_quality(index_images(300), index_images(300, 300), ["fid"], space)

    cov1, cov2 = np.diag(s1**2), np.diag(s2**2)
    closed = np.sum((mu1 - mu2) ** 2) + np.trace(cov1 + cov2 - 2 * scipy.linalg.sqrtm(cov1 @ cov2).real)
    assert closed == pytest.approx(np.sum((mu1 - mu2) ** 2) + np.sum((s1 - s2) ** 2))  # diagonal: (s1 - s2)^2
    assert figures == {"fid": pytest.approx(closed, rel=1e-9)}


def test_identical_sets_score_as_identical_and_confident_balanced_logits_score_the_class_count(tmp_path):
    rng = np.random.default_rng(1)
    features = rng.standard_normal((100, 5))
    # rows 200..1199: every image one class for sure, the 5 classes balanced; 1200..1299: all alike
    logits = np.where(np.eye(5)[np.arange(1000) % 5] > 0, 40.0, 0.0)
    alike = np.tile(rng.standard_normal(5), (100, 1))
    table = np.concatenate([features, features, logits, alike])
    space = lookup_space(tmp_path, torch.from_numpy(np.concatenate([table, features + 3])))

    same = scoring.sample_quality(index_images(100), index_images(100, 100), ["fid", "kid", "pr"], space)
    shifted = scoring.sample_quality(index_images(100, 1300), index_images(100, 100), ["fid", "kid", "pr"], space)
    assert same["fid"] == pytest.approx(0.0, abs=1e-6) and shifted["fid"] == pytest.approx(5 * 3**2, rel=1e-6)
    assert same["kid"] <= 0 < shifted["kid"]  # the unbiased estimate of a zero distance scatters around 0
    assert same["precision"] == same["recall"] == 1.0 and shifted["precision"] < 1.0
    # IS = exp(E KL(p(y|x) || p(y))), the mean over 10 splits: exp(log 5) up to the classes' balance in a split
    assert scoring.sample_quality(index_images(1000, 200), index_images(10), ["is"], space)["inception_score"] == pytest.approx(5.0, rel=0.03)
    assert scoring.sample_quality(index_images(100, 1200), index_images(10), ["is"], space)["inception_score"] == pytest.approx(1.0, abs=1e-9)


def test_score_images_says_what_its_figures_mean_and_refuses_too_few_images(tmp_path):
    space = lookup_space(tmp_path, torch.randn(40, 3, dtype=torch.float64))
    figures = scoring.score_images(index_images(20), index_images(20, 20), ["fid", "kid"], space)
    assert {"fid", "kid", "kid_std"} <= set(figures) and "inception_score" not in figures
    assert figures["n_samples"] == figures["n_reference"] == 20 and figures["label"] == "lookup features"
    with pytest.raises(scoring.ScoreError, match="at least 10"):
        scoring.sample_quality(index_images(5), index_images(5), ["fid"], space)
    with pytest.raises(scoring.ScoreError, match="choose from"):
        scoring.sample_quality(index_images(20), index_images(20), ["fud"], space)


def test_labels_say_classifier_figures_are_not_comparable_with_published_ones():
    assert scoring.metric_label("fid", "classifier") == "FID (classifier features, not comparable with published FID)"
    assert scoring.metric_label("is", "classifier").endswith("not comparable with published IS)")
    assert scoring.metric_label("fid", "inception") == "FID (Inception-v3 features)"


def test_the_histogram_model_draws_each_position_from_its_training_values():
    train = torch.zeros(50, 1, 2, 3, dtype=torch.uint8)
    train[:, 0, 0, 0] = 7  # always 7 here
    train[:25, 0, 1, 2], train[25:, 0, 1, 2] = 10, 20  # half 10, half 20 there
    samples = scoring.histogram_samples(train, 2000, seed=0)
    assert samples.shape == (2000, 1, 2, 3) and samples.dtype == torch.uint8
    assert (samples[:, 0, 0, 0] == 7).all()
    assert set(samples[:, 0, 1, 2].tolist()) == {10, 20}
    assert (samples[:, 0, 1, 2] == 10).float().mean() == pytest.approx(0.5, abs=0.05)
    assert torch.equal(samples, scoring.histogram_samples(train, 2000, seed=0))


# --------------------------------------------------------------------------- Inception weights


@pytest.fixture
def no_inception(tmp_path, monkeypatch):
    """A torch hub cache without the weights, and no environment variable."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(scoring.WEIGHTS_ENV, raising=False)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_missing_inception_weights_are_one_line_naming_the_file_and_where_it_goes(no_inception):
    with pytest.raises(scoring.ScoreError) as caught:
        scoring.inception_space()
    message = str(caught.value)
    assert "\n" not in message and scoring.INCEPTION_WEIGHTS_FILE in message
    assert f"into {no_inception}/" in message and "--inception-weights" in message and "--features classifier" in message


def write_tiny_weights(path: pathlib.Path) -> pathlib.Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torch.nn.Linear(12, 4).state_dict(), path)
    return path


def test_inception_weights_are_found_by_path_environment_and_hub_cache_in_that_order(tmp_path, no_inception, monkeypatch):
    hub = write_tiny_weights(no_inception / scoring.INCEPTION_WEIGHTS_FILE)
    assert scoring.inception_weights() == hub
    env = write_tiny_weights(tmp_path / "env" / scoring.INCEPTION_WEIGHTS_FILE)
    monkeypatch.setenv(scoring.WEIGHTS_ENV, str(env.parent))  # a folder holding the file
    assert scoring.inception_weights() == env
    given = write_tiny_weights(tmp_path / "given.pth")
    assert scoring.inception_weights(given) == given
    with pytest.raises(scoring.ScoreError, match="not found at .*typo.pth"):  # a given path is never passed over
        scoring.inception_weights(tmp_path / "typo.pth")


def test_without_torch_fidelity_scoring_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity", None)  # import fails
    with pytest.raises(scoring.ScoreError, match=r"pip install 'pixelgen\[score\]'"):
        scoring.sample_quality(index_images(20), index_images(20), ["fid"], lookup_space(tmp_path, torch.zeros(20, 2)))


def test_the_resolved_weights_reach_the_extractor_through_torch_fidelity_and_grey_becomes_rgb(tmp_path, no_inception, monkeypatch):
    weights = write_tiny_weights(tmp_path / "w" / scoring.INCEPTION_WEIGHTS_FILE)
    monkeypatch.setenv(scoring.WEIGHTS_ENV, str(weights))
    space = attrs.evolve(scoring.inception_space(), extractor="test-tiny-inception")
    assert space.rgb and space.weights_path == weights
    grey = torch.randint(0, 256, (12, 1, 2, 2), dtype=torch.uint8)
    TinyInception.seen.clear()
    figures = scoring.sample_quality(grey, grey.flip(0), ["fid"], space, batch_size=6)
    assert TinyInception.seen and all(shape[1:] == (3, 2, 2) for shape in TinyInception.seen)
    assert figures["fid"] == pytest.approx(0.0, abs=1e-4)  # the same images, in another order


def test_a_weights_file_that_would_run_code_is_refused_before_torch_fidelity_unpickles_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / scoring.INCEPTION_WEIGHTS_FILE
    torch.save({"w": Payload()}, path)
    with pytest.raises(scoring.ScoreError, match="not a plain weights file"):
        scoring.inception_space(path)


# --------------------------------------------------------------------------- the classifier


def separable_splits(n_train: int = 120, n_test: int = 40) -> dict:
    """8x8 grey images, class 0 dark and class 1 bright, with noise."""
    from pixelgen.data.builtin import TensorImages

    def split(n, seed):
        g = torch.Generator().manual_seed(seed)
        labels = torch.arange(n) % 2
        images = (labels[:, None, None, None] * 150 + torch.randint(0, 100, (n, 1, 8, 8), generator=g))
        return TensorImages(images.to(torch.uint8), labels.tolist(), n_classes=2)

    return {"train": split(n_train, 0), "test": split(n_test, 1)}


FAST = classifier.TrainingSettings(epochs=2, batch_size=16, lr=1e-2)


def test_the_classifier_is_trained_once_cached_beside_the_data_and_checked(tmp_path):
    said = []
    path, info = classifier.classifier_for("toy", separable_splits(), tmp_path / "data", said.append, FAST)
    assert path.parent == tmp_path / "data" / classifier.CACHE_FOLDER
    assert info["test_accuracy"] > 0.9 and any("test accuracy" in line for line in said)
    saved = torch.load(path, weights_only=True)  # weights-only readable
    assert saved["digest"] and saved["fingerprint"] == info["fingerprint"]

    said.clear()
    again, _ = classifier.classifier_for("toy", separable_splits(), tmp_path / "data", said.append, FAST)
    assert again == path and said == []  # from the cache: no training

    saved["state"]["classify.bias"] += 1.0  # damaged: the digest no longer matches
    torch.save(saved, path)
    with pytest.raises(classifier.ClassifierError, match="checksum"):
        classifier.read_classifier(path)
    classifier.classifier_for("toy", separable_splits(), tmp_path / "data", said.append, FAST)
    assert any("training it again" in line for line in said)
    classifier.read_classifier(path)  # repaired


def test_the_classifier_goes_to_the_user_cache_when_the_data_folder_cannot_be_written(tmp_path, monkeypatch):
    monkeypatch.setattr(classifier.platformdirs, "user_cache_dir", lambda name: str(tmp_path / "cache" / name))
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / classifier.CACHE_FOLDER).write_text("a file where the folder would go")
    path, _ = classifier.classifier_for("toy", separable_splits(), tmp_path / "data", lambda line: None, FAST)
    assert path.parent == tmp_path / "cache" / "pixelgen" / "classifiers"


def test_other_data_get_another_classifier():
    splits = separable_splits()
    images, labels = splits["train"].images, torch.tensor(splits["train"].targets)
    key = classifier.fingerprint("toy", (images, labels), FAST)
    assert key != classifier.fingerprint("toy", (images, 1 - labels), FAST)
    assert key != classifier.fingerprint("toy", (images, labels), attrs.evolve(FAST, epochs=3))


# --------------------------------------------------------------------------- end to end


TINY_MODEL = {"hidden_channels": 6, "n_layers": 1, "head_channels": 16}
SCORE = {"metrics": ["fid", "is", "kid", "pr"], "features": "classifier", "n": 10}


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory):
    """A tiny Fashion-MNIST-format run with a [score] section, trained by `pixelgen run`."""
    root = tmp_path_factory.mktemp("scored")
    write_tiny_mnist(root / "data", n_train=40, n_test=12)
    recipe = {
        "model": {"name": "pixelcnn", "hyperparameters": dict(TINY_MODEL)},
        "data": {"name": "fashion_mnist", "root": str(root / "data"), "batch_size": 8, "download": False,
                 "validation_fraction": 0.2},
        "train": {"epochs": 1, "accelerator": "cpu", "seed": 0},
        "sample": {"n": 2, "temperature": 0.9},
        "score": dict(SCORE),
        "output": {"dir": str(root / "run")},
    }
    (root / "run.toml").write_text(dump_toml(recipe))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PIXELGEN_PROGRESS", "0")
        mp.setattr(classifier, "TrainingSettings", lambda: FAST)
        assert cli.main(["run", str(root / "run.toml")]) == 0
    return root


def test_a_run_with_a_score_section_scores_its_final_samples_into_the_archive(scored_run):
    archive = RunArchive.open(scored_run / "run" / "archive.zarr")
    scores = archive.scores()["classifier"]
    for name in ("fid", "inception_score", "inception_score_std", "kid", "kid_std", "precision", "recall"):
        assert math.isfinite(scores[name]), name
    assert scores["n_samples"] == scores["n_reference"] == 10 and scores["checkpoint"] == "best.ckpt"
    batches = dict(archive.sample_batches())
    assert batches[scores["sample_batch"]]["source"] == "score"
    assert batches[scores["sample_batch"]]["temperature"] == 0.9  # the run's [sample] settings
    assert len(archive.read_samples(scores["sample_batch"])) == 10
    metrics = json.loads((scored_run / "run" / "metrics.json").read_text())
    assert metrics["score"]["fid"] == scores["fid"]
    assert set(archive.test_metrics()) == {"n_images", "nll_nats", "bits_per_dim", "bits_per_dim_per_channel", "epoch"}


def test_pixelgen_score_on_the_run_folder_uses_the_archived_samples_again(scored_run, capsys):
    before = len(RunArchive.open(scored_run / "run" / "archive.zarr").sample_batches())
    assert cli.main(["score", str(scored_run / "run"), "--features", "classifier", "--n", "10", "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    stored = RunArchive.open(scored_run / "run" / "archive.zarr")
    assert len(stored.sample_batches()) == before  # nothing drawn again: the same seed, n and [sample] settings
    assert again["fid"] == pytest.approx(stored.scores()["classifier"]["fid"], rel=1e-9)
    assert again["archive"] == str(scored_run / "run" / "archive.zarr")


def test_pixelgen_score_baselines_and_a_checkpoint_file(scored_run, capsys):
    run = scored_run / "run"
    assert cli.main(["score", str(run), "--features", "classifier", "--n", "10", "--baseline", "test", "--json"]) == 0
    floor = json.loads(capsys.readouterr().out)
    assert floor["source"] == "test" and floor["archive"] is None and floor["sample_batch"] is None
    assert cli.main(["score", str(run / "best.ckpt"), "--features", "classifier", "--metrics", "fid",
                     "--n", "10", "--baseline", "histogram"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("not comparable with published") == 1  # said once, on the first line
    assert "\n  FID " in printed
    assert cli.main(["score", str(run), "--features", "classifier", "--n", "20", "--baseline", "test"]) == 2
    assert "the test split has 12 images" in capsys.readouterr().err


def test_a_score_section_with_missing_inception_weights_fails_before_training(tmp_path, no_inception, capsys):
    write_tiny_mnist(tmp_path / "data", n_train=20, n_test=4)
    recipe = {"model": {"name": "pixelcnn", "hyperparameters": dict(TINY_MODEL)},
              "data": {"name": "fashion_mnist", "root": str(tmp_path / "data"), "download": False},
              "score": {"metrics": ["fid"]}, "output": {"dir": str(tmp_path / "run")}}
    (tmp_path / "r.toml").write_text(dump_toml(recipe))
    assert cli.main(["run", str(tmp_path / "r.toml")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and scoring.INCEPTION_WEIGHTS_FILE in err
    assert not (tmp_path / "run" / "last.ckpt").exists()


def test_score_recipe_keys_are_checked():
    base = {"model": {"name": "pixelcnn"}}
    assert recipe_from_dict(base).runs[0].score.metrics == ()  # off by default
    for score, words in (({"metrics": ["fud"]}, "score.metrics"), ({"n": 5}, "score.n: expected an integer in 10.."),
                         ({"features": "vgg"}, "score.features")):
        with pytest.raises(Exception, match=words):
            recipe_from_dict({**base, "score": score})


def test_compare_shows_a_labelled_row_per_score_and_a_figure(scored_run, tmp_path):
    out = tmp_path / "cmp"
    assert cli.main(["compare", str(scored_run / "run"), "--out", str(out), "--scaling-sizes", "4",
                     "--scaling-depths", "1", "--field-size", "5", "--timing-images", "1"]) == 0
    comparison = json.loads((out / "comparison.json").read_text())
    assert comparison["runs"][0]["scores"]["classifier"]["n_samples"] == 10
    assert comparison["figures"]["scores"] == "scores.png" and (out / "scores.png").is_file()
    markdown = (out / "report.md").read_text()
    fid = comparison["runs"][0]["scores"]["classifier"]["fid"]
    assert f"| FID (classifier features, not comparable with published FID) [3] | {fid:.4g} |" in markdown
    assert "10 samples against 10 training images" in markdown and "![sample quality](scores.png)" in markdown

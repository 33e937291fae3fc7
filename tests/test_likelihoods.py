"""Likelihoods as plugins (pixelgen.nn.likelihoods, the pixelgen_likelihoods hook).

The properties: every sub-pixel's probabilities sum to 1 given its context; the logistic
mixture is PixelCNN++'s loss, exact and finite at its edges in float32 and bf16; the
sampler draws from the likelihood (fast == reference, and the frequencies match); the
causality check follows the likelihood's structure; a third-party likelihood installs
the way a model does; a run trains, evaluates and samples with the logistic mixture.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import pathlib
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from datafiles import write_tiny_run_recipe

import pixelgen
from pixelgen import cli, registry
from pixelgen.blocks import AutoregressiveModel, MaskedConv2d, likelihood_of, scale_input
from pixelgen.errors import CausalityError, RecipeError, RegistryError
from pixelgen.nn.likelihoods import Categorical, LogisticMixture
from pixelgen.recipe import recipe_from_dict
from pixelgen.registry.causality import allowed_dependencies, check_causality
from pixelgen.sampling import SamplingError
from pixelgen.store import checkpoint as ckpt_io
from pixelgen.training import evaluation

TINY = dict(hidden_channels=6, n_layers=2, head_channels=12)
MIXTURE = {"name": "logistic_mixture", "n_mixtures": 3}
STACKS = ["pixelcnn", "row_lstm", "diagonal_bilstm"]


def tiny_hyperparameters(name: str) -> dict:
    if name == "pixelcnn_pp":  # no n_layers or head: blocks per resolution
        return dict(hidden_channels=TINY["hidden_channels"], n_resnet=1)
    parts = dict(small_n_layers=1, upsample_channels=4) if name == "multiscale" else {}
    return {**TINY, **parts}


def mixture_model(name: str, channels: int, **extra) -> torch.nn.Module:
    return pixelgen.create_model(name, in_channels=channels, likelihood=MIXTURE, **tiny_hyperparameters(name), **extra)


def every_value(x: torch.Tensor, c: int, i: int, j: int, n_levels: int) -> torch.Tensor:
    """``n_levels`` copies of image ``x`` ``(1, C, H, W)``, copy ``v`` holding ``v`` at ``(c, i, j)``."""
    images = x.repeat(n_levels, 1, 1, 1)
    images[:, c, i, j] = torch.arange(n_levels)
    return images


LIKELIHOODS = [Categorical(2), Categorical(16), Categorical(256),
               LogisticMixture(256, 1), LogisticMixture(256, 4), LogisticMixture(16, 2), LogisticMixture(2, 3)]


@pytest.mark.parametrize("likelihood", LIKELIHOODS, ids=repr)
@pytest.mark.parametrize("channels", [1, 3])
def test_the_values_of_every_subpixel_sum_to_one_given_its_context(likelihood, channels):
    """For random outputs and a random image, at every sub-pixel: sum over its n_levels
    values of exp(log_prob), the rest of the image fixed, is 1; and subpixel_probabilities
    (what the sampler draws from) is exactly that distribution."""
    generator = torch.Generator().manual_seed(channels)
    v = likelihood.n_levels
    raw = 3 * torch.randn(1, likelihood.n_outputs(channels), 2, 3, generator=generator, dtype=torch.float64)
    outputs = likelihood.arrange(raw, channels)
    x = torch.randint(0, v, (1, channels, 2, 3), generator=generator)
    for i, j, c in [(0, 0, 0), (1, 2, channels - 1), (1, 1, channels // 2)]:
        log_prob = likelihood.log_prob(outputs.expand(v, *outputs.shape[1:]), every_value(x, c, i, j, v))
        assert log_prob.shape == (v, channels, 2, 3)  # float32 for the categorical (as NLL always was)
        probs = log_prob[:, c, i, j].double().exp()  # (V,)
        assert probs.sum().item() == pytest.approx(1.0, abs=1e-6)
        drawn_from = likelihood.subpixel_probabilities(outputs[..., i, j], x[:, :, i, j], c)  # (1, V)
        exact = 1e-9 if log_prob.dtype == torch.float64 else 1e-5
        torch.testing.assert_close(drawn_from[0], probs, rtol=exact, atol=exact * 1e-3)


def test_the_mixtures_subpixel_terms_add_up_to_the_pixels_log_probability():
    """The chain rule: sum over c of log p(x_c | x_<c) = log sum_k pi_k prod_c p_k(x_c | x_<c),
    the mixture's probability of the whole pixel written out with sigmoids."""
    k = 2
    generator = torch.Generator().manual_seed(3)
    raw = torch.randn(k * 10, generator=generator, dtype=torch.float64)
    x = torch.tensor([17, 0, 200])
    pixel = LogisticMixture(256, k).log_prob(raw.view(1, -1, 1, 1), x.view(1, 3, 1, 1)).sum()
    logits, means, log_scales, coefficients = raw.split([k, 3 * k, 3 * k, 3 * k])
    means, scales = means.view(3, k), log_scales.view(3, k).clamp(min=-7).exp()
    a, b, g = torch.tanh(coefficients).view(3, k)
    xs = x.double() / 127.5 - 1
    coupled = [means[0], means[1] + a * xs[0], means[2] + b * xs[0] + g * xs[1]]
    probability = torch.softmax(logits, 0)
    for c in range(3):
        upper = torch.sigmoid((xs[c] + 1 / 255 - coupled[c]) / scales[c]) if x[c] < 255 else 1.0
        lower = torch.sigmoid((xs[c] - 1 / 255 - coupled[c]) / scales[c]) if x[c] > 0 else 0.0
        probability = probability * (upper - lower)
    assert pixel.item() == pytest.approx(probability.sum().log().item(), rel=1e-10)


def pixelcnn_pp_loss(x: torch.Tensor, l: torch.Tensor) -> torch.Tensor:
    """PixelCNN++'s discretized_mix_logistic_loss (openai/pixel-cnn, pixel_cnn_pp/nn.py) in
    torch, line by line, per pixel: -log p of ``x`` ``(B, H, W, 3)`` in [-1, 1] under
    ``l`` ``(B, H, W, 10K)``, the paper's layout. Returns ``(B, H, W)``."""
    xs = list(x.shape)
    nr_mix = l.shape[-1] // 10
    logit_probs = l[..., :nr_mix]
    l = l[..., nr_mix:].reshape(xs + [nr_mix * 3])
    means = l[..., :nr_mix]
    log_scales = torch.clamp(l[..., nr_mix:2 * nr_mix], min=-7.0)
    coeffs = torch.tanh(l[..., 2 * nr_mix:3 * nr_mix])
    x = x.reshape(xs + [1]) + torch.zeros(xs + [nr_mix], dtype=x.dtype)
    m2 = (means[..., 1, :] + coeffs[..., 0, :] * x[..., 0, :]).reshape(xs[:3] + [1, nr_mix])
    m3 = (means[..., 2, :] + coeffs[..., 1, :] * x[..., 0, :] + coeffs[..., 2, :] * x[..., 1, :]).reshape(xs[:3] + [1, nr_mix])
    means = torch.cat([means[..., 0, :].reshape(xs[:3] + [1, nr_mix]), m2, m3], dim=3)
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    plus_in = inv_stdv * (centered_x + 1.0 / 255.0)
    cdf_plus = torch.sigmoid(plus_in)
    min_in = inv_stdv * (centered_x - 1.0 / 255.0)
    cdf_min = torch.sigmoid(min_in)
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    cdf_delta = cdf_plus - cdf_min
    mid_in = inv_stdv * centered_x
    log_pdf_mid = mid_in - log_scales - 2.0 * F.softplus(mid_in)
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(
        x > 0.999, log_one_minus_cdf_min, torch.where(
            cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid - math.log(127.5))))
    log_probs = log_probs.sum(3) + torch.log_softmax(logit_probs, dim=-1)
    return -torch.logsumexp(log_probs, dim=-1)


def test_the_logistic_mixture_is_pixelcnn_pp_loss():
    """log_prob summed over a pixel's colours is PixelCNN++'s loss of that pixel, its
    parameters in our layout (logits, means, log-scales, coefficients) rather than its
    per-colour one; the edge values 0 and 255 included."""
    k = 5
    generator = torch.Generator().manual_seed(0)
    b, h, w = 4, 3, 5
    logits = torch.randn(b, h, w, k, generator=generator, dtype=torch.float64)
    means = torch.rand(b, h, w, 3, k, generator=generator, dtype=torch.float64) - 0.5
    log_scales = -1.5 * torch.rand(b, h, w, 3, k, generator=generator, dtype=torch.float64)
    coeffs = 0.6 * torch.rand(b, h, w, 3, k, generator=generator, dtype=torch.float64) - 0.3
    x = torch.randint(0, 256, (b, 3, h, w), generator=generator)
    x[0, :, 0, 0], x[1, :, 1, 1] = 0, 255
    paper_layout = torch.cat([logits, torch.cat([means, log_scales, coeffs], dim=-1).flatten(3)], dim=-1)
    ours = torch.cat([logits, means.flatten(3), log_scales.flatten(3), coeffs.flatten(3)], dim=-1)  # pairs (1,0), (2,0), (2,1)
    likelihood = LogisticMixture(256, k)
    assert likelihood.n_outputs(3) == 10 * k
    nll = -likelihood.log_prob(ours.permute(0, 3, 1, 2), x).sum(1)  # (B, H, W)
    reference = pixelcnn_pp_loss(x.permute(0, 2, 3, 1).double() / 127.5 - 1, paper_layout)
    torch.testing.assert_close(nll, reference, rtol=1e-6, atol=1e-9)


def single_logistic(mean: float, log_scale: float, dtype: torch.dtype) -> torch.Tensor:
    """Outputs ``(1, 3, 1, 1)`` of a one-component grey logistic mixture, in ``dtype``."""
    return torch.tensor([0.0, mean, log_scale], dtype=dtype).view(1, 3, 1, 1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mean", [-60.0, -1.0, 0.3, 1.0, 60.0])
@pytest.mark.parametrize("log_scale", [-9.0, -7.0, 0.0, 6.0])
def test_the_edges_0_and_255_are_exact_and_everything_is_finite_at_extreme_parameters(dtype, mean, log_scale):
    """Bin 0 takes all mass below, bin 255 all above: log sigma(u) and log(1 - sigma(l)),
    as computed in float64 from the same (rounded) parameters; every bin is finite, the
    bins sum to 1 and the gradient is finite, in float32 and from bf16 outputs."""
    likelihood = LogisticMixture(256, 1)
    outputs = single_logistic(mean, log_scale, dtype).requires_grad_(True)
    x = torch.arange(256).view(256, 1, 1, 1)
    log_prob = likelihood.log_prob(outputs.expand(256, -1, -1, -1), x)[:, 0, 0, 0]  # (256,)
    assert log_prob.dtype == torch.float32 and torch.isfinite(log_prob).all()
    assert log_prob.exp().sum().item() == pytest.approx(1.0, abs=1e-4)
    m, s = outputs.detach()[0, 1, 0, 0].double(), outputs.detach()[0, 2, 0, 0].double().clamp(min=-7.0).exp()
    below_one = torch.nn.functional.logsigmoid((-1 + 1 / 255 - m) / s)
    above_254 = torch.nn.functional.logsigmoid(-(1 - 1 / 255 - m) / s)
    torch.testing.assert_close(log_prob[0].double(), below_one, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(log_prob[255].double(), above_254, rtol=1e-5, atol=1e-6)
    (gradient,) = torch.autograd.grad(log_prob.sum(), outputs)
    assert torch.isfinite(gradient).all()


def test_a_per_pixel_likelihood_masks_the_network_with_one_colour_group():
    """No output of a pixel sees any of its colours, so all outputs of pixel (i, j) are
    exact before its R is drawn: the sampler asks once per pixel."""
    model = mixture_model("pixelcnn", 3)
    assert isinstance(model.likelihood, LogisticMixture) and model.likelihood.n_mixtures == 3
    assert model(torch.zeros(2, 3, 4, 5, dtype=torch.long)).shape == (2, 30, 4, 5)
    x = torch.randint(0, 256, (1, 3, 4, 5))
    changed = x.clone()
    changed[:, :, 2, 3] = 255 - changed[:, :, 2, 3]
    with torch.no_grad():
        torch.testing.assert_close(model(x)[..., 2, 3], model(changed)[..., 2, 3], rtol=0, atol=0)


def test_allowed_dependencies_of_a_per_pixel_likelihood_are_the_earlier_pixels():
    allowed = allowed_dependencies(3, 2, 3, per_pixel=True)
    for c, i, j, c2, i2, j2 in torch.cartesian_prod(*map(torch.arange, (3, 2, 3, 3, 2, 3))).tolist():
        assert allowed[c, i, j, c2, i2, j2].item() == ((i2, j2) < (i, j))


@pytest.mark.parametrize("name", [*STACKS, "multiscale", "pixelcnn_pp"])
@pytest.mark.parametrize("likelihood", ["categorical", MIXTURE], ids=["categorical", "mixture"])
def test_every_builtin_model_normalises_every_subpixel(name, likelihood):
    """Through the model: at a sub-pixel of a random image, the probabilities of its
    n_levels values, the rest of the image fixed, sum to 1 (RGB; grey for pixelcnn_pp's
    categorical, which has no colour groups)."""
    channels = 1 if name == "pixelcnn_pp" and likelihood == "categorical" else 3
    torch.manual_seed(0)
    model = pixelgen.create_model(name, in_channels=channels, likelihood=likelihood, **tiny_hyperparameters(name))
    model = model.double().eval()
    x = torch.randint(0, 256, (1, channels, 3, 4), generator=torch.Generator().manual_seed(1))
    for c, i, j in [(0, 0, 0), (channels - 1, 2, 1), (channels // 2, 1, 3)]:
        images = every_value(x, c, i, j, 256)
        with torch.no_grad():
            log_prob = model.likelihood.log_prob(model(images), images)[:, c, i, j]  # (256,)
        assert log_prob.double().exp().sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("name", [*STACKS, "multiscale", "pixelcnn_pp"])
def test_check_passes_for_every_builtin_model_with_the_logistic_mixture(name):
    support = check_causality(mixture_model(name, 3), 3, 4, 5)
    assert support.any()


class ColourMaskedMixture(AutoregressiveModel):
    """A leak: colour-group masks (mask B) under a per-pixel likelihood."""

    def __init__(self) -> None:
        super().__init__()
        self.in_channels, self.likelihood = 3, LogisticMixture(256, 1)
        self.conv = MaskedConv2d(3, self.likelihood.n_outputs(3), 3, "B", 3)

    def forward(self, x):
        return self.conv(scale_input(x, self.conv.weight))  # (B, 10, H, W)


def test_check_catches_outputs_of_a_pixel_that_see_its_own_colours():
    with pytest.raises(CausalityError, match=r"output pixel \(row 0, column 0\) depends on input sub-pixel "
                                             r"\(row 0, column 0, R\)"):
        check_causality(ColourMaskedMixture(), 3, 2, 2)


@pytest.mark.parametrize("name", STACKS)
@pytest.mark.parametrize("channels", [1, 3])
def test_fast_and_reference_sampling_agree_with_the_logistic_mixture(name, channels):
    model = mixture_model(name, channels, n_classes=2)
    prefix = torch.randint(0, 256, (3, channels, 1, 5), dtype=torch.uint8)
    options = dict(seed=4, labels=torch.tensor([0, 1, 1]), temperature=0.8, top_p=0.95, prefix=prefix)
    fast = pixelgen.sample(model, 3, 3, 5, sampler="fast", **options)
    reference = pixelgen.sample(model, 3, 3, 5, sampler="reference", **options)
    assert torch.equal(fast, reference)
    assert torch.equal(fast[:, :, :1], prefix) and len(fast.unique()) > 10


def test_the_sampler_draws_whole_pixels_from_the_mixture():
    """The frequencies of 30,000 one-pixel RGB images of 4 levels match the model's joint
    probabilities of the 64 pixels: R, then G given R, then B given R and G."""
    model = pixelgen.create_model("pixelcnn", in_channels=3, n_levels=4, likelihood=MIXTURE, **TINY)
    with torch.no_grad():
        model.head.logits.bias.copy_(torch.randn(30, generator=torch.Generator().manual_seed(1)))
    images = pixelgen.sample(model, 30_000, 1, 1, seed=0)  # (n, 3, 1, 1)
    codes = (images[:, 0] * 16 + images[:, 1] * 4 + images[:, 2]).flatten().long()
    frequencies = torch.bincount(codes, minlength=64).double() / len(codes)
    every_pixel = torch.cartesian_prod(*[torch.arange(4)] * 3).view(64, 3, 1, 1)
    with torch.no_grad():
        joint = model.likelihood.log_prob(model(every_pixel), every_pixel).sum(1).flatten().double().exp()
    assert joint.sum().item() == pytest.approx(1.0, abs=1e-5)
    assert (frequencies - joint).abs().max().item() < 0.01


def test_nll_and_evaluation_go_through_the_likelihood():
    torch.manual_seed(0)
    model = mixture_model("row_lstm", 3)
    images = torch.randint(0, 256, (5, 3, 4, 3), dtype=torch.uint8)
    figures = evaluation.evaluate(model, [(image, 0) for image in images], batch_size=2)
    with torch.no_grad():
        log_prob = model.likelihood.log_prob(model(images), images)  # (B, C, H, W)
        bits = pixelgen.bits_per_dim(model(images), images, likelihood_of(model)).item()
    assert figures["bits_per_dim"] == pytest.approx(bits, rel=1e-6)
    assert figures["bits_per_dim"] == pytest.approx(-log_prob.mean().item() / math.log(2), rel=1e-6)
    red = -log_prob[:, 0].mean().item() / math.log(2)
    assert figures["bits_per_dim_per_channel"][0] == pytest.approx(red, rel=1e-6)


def test_an_unknown_likelihood_is_one_line_naming_the_choices():
    with pytest.raises(RegistryError, match="unknown likelihood 'logistic_mixtur'; did you mean 'logistic_mixture'"):
        pixelgen.create_model("pixelcnn", likelihood="logistic_mixtur", **TINY)
    with pytest.raises(RegistryError, match="likelihood 'logistic_mixture' has no option 'k'; available: n_mixtures=10"):
        pixelgen.create_model("pixelcnn", likelihood={"name": "logistic_mixture", "k": 2}, **TINY)
    bad = {"model": {"name": "pixelcnn", "hyperparameters": {"likelihood": {"name": "softmax"}}}}
    with pytest.raises(RecipeError, match="model.hyperparameters.likelihood: unknown likelihood 'softmax'"):
        recipe_from_dict(bad)


def run_cli(*argv: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(list(argv)) == 0
    return out.getvalue()


def test_pixelgen_plugins_lists_both_likelihoods_and_check_follows_the_mixture():
    listing = run_cli("plugins")
    assert "\nlikelihoods:\n  categorical  (plugin likelihoods)" in listing
    assert "  logistic_mixture  (plugin likelihoods)" in listing and "[n_mixtures=10]" in listing
    printed = run_cli("check", "pixelcnn", "--height", "3", "--width", "4", "--channels", "3",
                      "--hp", 'likelihood={name = "logistic_mixture", n_mixtures = 2}')
    # per pixel: 3 x 3 colour pairs x (0 + 1 + ... + 11) earlier pixels = 594, not the 630 of sub-pixel order
    assert "pixelcnn: causal for C=3 at 3x4: 594 of 594 allowed" in printed


THIRD_PARTY = '''
"""A third-party likelihood: one discretized logistic per sub-pixel (no nucleus)."""
import pixelgen
import torch
from pixelgen.nn.likelihoods import Likelihood, work_dtype


class Logistic(Likelihood):
    name = "logistic"
    top_p_defined = False

    def n_outputs(self, channels):
        return 2 * channels

    def arrange(self, raw, channels):
        return raw.unflatten(1, (channels, 2)).transpose(1, 2)  # (B, 2, C, H, W): mean, log-scale

    def by_subpixel(self, outputs, channels):
        return outputs

    def _table(self, mean, log_scale):  # (...,) -> (..., V) probabilities of every value
        edges = torch.linspace(-1, 1, self.n_levels + 1, dtype=mean.dtype)[1:-1]
        cdf = torch.sigmoid((edges - mean[..., None]) * torch.exp(-log_scale[..., None]))
        zero, one = torch.zeros_like(cdf[..., :1]), torch.ones_like(cdf[..., :1])
        return torch.cat([cdf, one], -1) - torch.cat([zero, cdf], -1)

    def log_prob(self, outputs, x):
        table = self._table(outputs[:, 0].double(), outputs[:, 1].double())  # (B, C, H, W, V)
        return table.gather(-1, x.long()[..., None])[..., 0].log()

    def subpixel_probabilities(self, at_pixel, x_pixel, c, temperature=1.0):
        at_pixel = at_pixel.to(work_dtype(at_pixel.device))
        return self._table(at_pixel[:, 0, c], at_pixel[:, 1, c] + torch.log(torch.tensor(temperature)))


@pixelgen.hookimpl
def pixelgen_likelihoods():
    return [pixelgen.LikelihoodSpec("logistic", Logistic, "one logistic per sub-pixel")]
'''

USES_IT = '''
import torch, pixelgen
from pixelgen.registry.causality import check_causality
from pixelgen.sampling import SamplingError
model = pixelgen.create_model("row_lstm", in_channels=3, likelihood="logistic",
                              hidden_channels=6, n_layers=1, head_channels=12)
assert type(model.likelihood).__name__ == "Logistic" and model(torch.zeros(1, 3, 2, 2)).shape == (1, 2, 3, 2, 2)
x = torch.randint(0, 256, (1, 3, 2, 2))
images = x.repeat(256, 1, 1, 1)
images[:, 1, 1, 0] = torch.arange(256)
with torch.no_grad():
    total = model.likelihood.log_prob(model(images), images)[:, 1, 1, 0].exp().sum().item()
assert abs(total - 1) < 1e-6, total
check_causality(model, 3, 3, 3)
fast = pixelgen.sample(model, 2, 3, 3, seed=0)
assert torch.equal(fast, pixelgen.sample(model, 2, 3, 3, seed=0, sampler="reference"))
try:
    pixelgen.sample(model, 2, 3, 3, top_p=0.5)
except SamplingError as exc:
    print("refused:", exc)
print("third-party likelihood ok")
'''


def install_third_party(tmp_path: pathlib.Path) -> dict[str, str]:
    """The package of THIRD_PARTY installed under ``tmp_path`` with its entry point in the
    pixelgen group (its dist-info, as pip writes it): the environment of a process that has it."""
    site = tmp_path / "site"
    (site / "pixelgen_logistic").mkdir(parents=True)
    (site / "pixelgen_logistic" / "__init__.py").write_text(textwrap.dedent(THIRD_PARTY))
    info = site / "pixelgen_logistic-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: pixelgen-logistic\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[pixelgen]\nlogistic = pixelgen_logistic\n")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}


def test_a_third_party_likelihood_installs_like_a_model(tmp_path):
    """A package with an entry point in the pixelgen group adds a likelihood that models
    take by name: listed, normalised, causal, sampled."""
    env = install_third_party(tmp_path)
    listing = subprocess.run([sys.executable, "-m", "pixelgen", "plugins"], env=env, capture_output=True,
                             text=True, check=True).stdout
    assert "  logistic  (plugin logistic) one logistic per sub-pixel" in listing
    assert "categorical" in listing and "logistic_mixture" in listing
    used = subprocess.run([sys.executable, "-c", USES_IT], env=env, capture_output=True, text=True)
    assert used.returncode == 0, used.stderr
    assert "refused: top_p is not defined for the logistic likelihood; use top_p = 1" in used.stdout
    assert "third-party likelihood ok" in used.stdout


CODES_WITH_IT = '''
import torch, pixelgen
from pixelgen.study.codec import read_container
torch.manual_seed(0)
for channels in (1, 3):
    model = pixelgen.create_model("pixelcnn", in_channels=channels, likelihood="logistic",
                                  hidden_channels=6, n_layers=2, head_channels=12)
    images = torch.randint(0, 256, (3, channels, 5, 3), dtype=torch.uint8)
    data = pixelgen.compress(model, images, batch_size=2)
    assert torch.equal(pixelgen.decompress(model, data), images)
    assert read_container(data)[0]["likelihood"] == {"name": "logistic"}
    with torch.no_grad():
        nll_bits = -model.likelihood.log_prob(model(images), images).sum().item() / 0.6931471805599453
    payload_bits = 32 * len(read_container(data)[1])
    assert nll_bits - 1 <= payload_bits <= nll_bits + 64 + 0.001 * nll_bits, (payload_bits, nll_bits)
print("third-party likelihood codes")
'''


def test_the_codec_codes_with_a_third_party_likelihood(tmp_path):
    """The codec reads the likelihood's own subpixel_probabilities: a plugin's likelihood
    codes grey and RGB images of odd sizes bit for bit, at their NLL."""
    used = subprocess.run([sys.executable, "-c", CODES_WITH_IT], env=install_third_party(tmp_path),
                          capture_output=True, text=True)
    assert used.returncode == 0, used.stderr
    assert "third-party likelihood codes" in used.stdout


def test_a_run_trains_evaluates_and_samples_with_the_logistic_mixture(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELGEN_PROGRESS", "0")
    recipe = write_tiny_run_recipe(tmp_path, tmp_path / "run", epochs=1)
    text = recipe.read_text() + '\n[model.hyperparameters.likelihood]\nname = "logistic_mixture"\nn_mixtures = 2\n'
    recipe.write_text(text)
    run_cli("run", str(recipe))
    state = ckpt_io.load_checkpoint(tmp_path / "run" / "best.ckpt")
    assert state["model"]["hyperparameters"]["likelihood"] == {"name": "logistic_mixture", "n_mixtures": 2}
    model = ckpt_io.model_from_checkpoint(state)
    assert isinstance(model.likelihood, LogisticMixture) and model.likelihood.n_mixtures == 2
    printed = run_cli("eval", str(tmp_path / "run" / "best.ckpt"), "--json")
    assert '"bits_per_dim"' in printed

"""The built-in likelihoods, registered through the ``pixelgen`` entry-point group like any
plugin's (``likelihoods = "pixelgen.registry.builtin"`` in ``pyproject.toml``): the core
looks likelihoods up by name in the registry and names none itself."""

from __future__ import annotations

from pixelgen.nn.likelihoods import Categorical, LogisticMixture
from pixelgen.registry import LikelihoodSpec
from pixelgen.registry.hookspecs import hookimpl

CATEGORICAL = LikelihoodSpec(
    "categorical", Categorical,
    "an n_levels-way softmax per sub-pixel, R -> G -> B inside a pixel (Pixel RNN, section 2)",
)
LOGISTIC_MIXTURE = LikelihoodSpec(
    "logistic_mixture", LogisticMixture,
    "a discretized mixture of logistics per pixel, channels coupled linearly (PixelCNN++, 2.1-2.2)",
)


@hookimpl
def pixelgen_likelihoods():
    return [CATEGORICAL, LOGISTIC_MIXTURE]

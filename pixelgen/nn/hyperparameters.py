"""What a model declares about its keyword arguments: :class:`Hyperparameter` (a default and a
line of help) and the table every :class:`~pixelgen.nn.blocks.ResidualStack` model shares.

Torch-free on purpose: the registry and the recipe read these tables (``pixelgen plugins``,
``pixelgen recipe show``, a recipe's validation) without loading torch; the plugin API
re-exports them as ``pixelgen.blocks.Hyperparameter`` and ``pixelgen.blocks.stack_hyperparameters``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from pixelgen.limits import MAX_HYPERPARAMETER

N_LEVELS = 256  # values per sub-pixel of 8-bit images; pixelgen.nn.layers re-exports it
LIKELIHOOD = "likelihood"  # the hyperparameter by which a model chooses its likelihood (a name or a table)


class Hyperparameter(NamedTuple):
    """One hyperparameter a model declares on its :class:`pixelgen.ModelSpec`.

    One naming rule carries meaning: an integer hyperparameter named ``*_channels``, other
    than ``in_channels`` (the colours), is a *width*, the number of features of some map
    (``hidden_channels``, ``head_channels``). Widths may change how much a model can learn
    but not which sub-pixels it connects, so ``pixelgen check`` narrows them (see
    :meth:`pixelgen.ModelSpec.widths`); give any other kind of hyperparameter another name.
    """

    default: Any
    help: str

    def refuses(self, value: Any) -> str | None:
        """What ``value`` should have been, or None when it passes the one rule every model
        shares (the core names no model, so the rule reads only the default): a
        hyperparameter whose default is a positive integer (a width, a depth, a kernel size)
        takes integers in 1..:data:`~pixelgen.limits.MAX_HYPERPARAMETER`, one whose default
        is 0 (an off switch such as ``n_classes``) takes 0 too. Anything else is the
        factory's to check."""
        default = self.default
        if not isinstance(default, int) or isinstance(default, bool) or default < 0:
            return None
        low = 1 if default > 0 else 0
        if isinstance(value, int) and not isinstance(value, bool) and low <= value <= MAX_HYPERPARAMETER:
            return None
        return f"an integer in {low}..{MAX_HYPERPARAMETER:,}"


def stack_hyperparameters(**defaults: Any) -> dict[str, Hyperparameter]:
    """The hyperparameters of :class:`~pixelgen.nn.blocks.ResidualStack`, with the paper's CIFAR-10
    defaults (table 1) unless ``defaults`` overrides them, e.g. ``stack_hyperparameters(n_layers=15)``."""
    table = {
        "in_channels": Hyperparameter(3, "colours C of the images (filled in from the data set)"),
        "hidden_channels": Hyperparameter(128, "h, features per layer; the residual stream has 2h (paper: 128)"),
        "n_layers": Hyperparameter(12, "residual layers after the 7x7 input convolution (what depth scaling varies)"),
        "head_channels": Hyperparameter(1024, "width of the output head's hidden 1x1 convolution (paper: 1024)"),
        "n_classes": Hyperparameter(0, "> 0: class-conditional, a learned per-class bias in every layer"),
        "residual": Hyperparameter(True, "residual connections around every layer (paper: yes)"),
        "skip": Hyperparameter(False, "learnable 1x1 skip connections from every layer to the head"),
        "n_levels": Hyperparameter(
            N_LEVELS, "values per sub-pixel, 0..n_levels-1: 256 for 8-bit images, 2 for binary data "
            "(the paper's sigmoid output for binarized MNIST, section 4, as a two-way softmax)"
        ),
        LIKELIHOOD: Hyperparameter(
            "categorical", "output distribution: a registered likelihood's name, or a table "
            "{name = ..., options} (pixelgen plugins lists them), e.g. {name = \"logistic_mixture\", n_mixtures = 10}"
        ),
    }
    unknown = set(defaults) - set(table)
    if unknown:
        raise ValueError(f"not a ResidualStack hyperparameter: {', '.join(sorted(unknown))}")
    return {name: Hyperparameter(defaults.get(name, hp.default), hp.help) for name, hp in table.items()}

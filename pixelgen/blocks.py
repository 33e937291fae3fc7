"""The plugin API under its public name: what a model plugin imports.

``from pixelgen.blocks import MaskedConv2d, ResidualStack, ...`` is the import every plugin
writes; the code lives in :mod:`pixelgen.nn.blocks` (and the layers and scans beside it),
the bottom layer of the package, which loads torch and einops and nothing of the pipeline.
"""

from pixelgen.nn.blocks import *  # noqa: F403
from pixelgen.nn.blocks import __all__  # noqa: F401

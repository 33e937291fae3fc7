"""``pixelgen recipe show``: the fully resolved recipe as TOML that ``pixelgen run`` accepts.

The recipe was loaded by the parser; only the registry (for the models' hyperparameters)
loads here, nothing of training, storage or the study.
"""

from __future__ import annotations

import argparse

from pixelgen.recipe import recipe_to_toml


def cmd_recipe_show(args: argparse.Namespace) -> int:
    """Print the fully resolved recipe, every default filled in, as TOML ``run`` accepts."""
    print(recipe_to_toml(args.loaded_recipe), end="")
    return 0

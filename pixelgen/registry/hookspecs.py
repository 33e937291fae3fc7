"""Hook specifications: what a pixelgen plugin can provide.

A plugin is any module reachable through the ``pixelgen`` entry-point group (see
``pyproject.toml``). It implements one or more of the hooks below, marked with
:data:`pixelgen.hookimpl`::

    # my_package/my_model.py
    import pixelgen

    @pixelgen.hookimpl
    def pixelgen_models():
        return [pixelgen.ModelSpec("my_model", MyModel, "One line on what it is")]

and declares it in its own ``pyproject.toml``::

    [project.entry-points.pixelgen]
    my_model = "my_package.my_model"

The built-in architectures in ``plugins/`` are registered exactly this way.
"""

from __future__ import annotations

import pluggy

PROJECT = "pixelgen"

#: Marks the hook specifications below (pixelgen's own use).
#:
#: :meta hide-value:
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin's hook implementations, e.g. ``@pixelgen.hookimpl`` on ``pixelgen_models``.
#:
#: :meta hide-value:
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def pixelgen_models() -> list:
    """Return a list of :class:`pixelgen.ModelSpec`, one per model the plugin adds."""


@hookspec
def pixelgen_datasets() -> list:
    """Return a list of :class:`pixelgen.DatasetSpec`, one per data set the plugin adds."""


@hookspec
def pixelgen_likelihoods() -> list:
    """Return a list of :class:`pixelgen.registry.LikelihoodSpec`, one per likelihood the
    plugin adds (see :class:`pixelgen.nn.likelihoods.Likelihood`)."""

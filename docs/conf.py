"""Sphinx configuration of the pixelgen documentation.

Build (warnings are errors) and run the code examples::

    python3 -m sphinx -W --keep-going -b html docs docs/_build/html
    python3 -m sphinx -W -b doctest docs docs/_build/doctest

Pages are MyST Markdown. The reference pages (recipe keys, command line, archive layout,
hyperparameter table, API pages) and the model figures are generated from the code at
every build (see ``setup`` below), so they cannot drift from it. A build writes only into
its output folder: generated text replaces ``{generated}`` blocks as Sphinx reads a page,
and the figures are drawn beside the doctree cache.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

from sphinx.directives.patches import Figure

import pixelgen
import pixelgen.blocks

DOCS = Path(__file__).resolve().parent
# The build scripts beside this file, imported without leaving a docs/__pycache__ behind:
# a build writes nothing into docs/.
sys.path.insert(0, str(DOCS))
sys.dont_write_bytecode, _dont_write_before = True, sys.dont_write_bytecode
import make_figures  # noqa: E402
import make_reference  # noqa: E402

sys.dont_write_bytecode = _dont_write_before

project = "pixelgen"
author = "the pixelgen developers"
copyright = "the pixelgen developers"
release = version = pixelgen.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.intersphinx",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "comparison/report.md"]  # included by comparison.md

myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = f"pixelgen {version}"

# ---------------------------------------------------------------------------- autodoc

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
python_maximum_signature_line_length = 88
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# Every cross-reference must resolve (a typo in a role fails the build). Names from
# libraries without an offline inventory are exempt; they render as plain text.
nitpicky = True
nitpick_ignore_regex = [
    ("py:.*", r"(attrs?|pluggy|zarr|numpy|np|lightning_fabric|einops|platformdirs|cattrs)(\..*)?"),
    ("py:class", r"torch\..*\._T_co"),  # the type variable of torch's Dataset[T_co]
]

# ---------------------------------------------------------------------------- intersphinx

# The docs must build without a network (CI has none), and a build is the same online and
# offline: each library's inventory is a small file committed under docs/_inventories/,
# generated for exactly the objects these docs refer to, each pointing at its page online.
# Neither is shipped where a build can rely on it: Python's full inventory is online or in
# Debian's python3.X-doc (an apt install into the system Python), PyTorch's only online.
# * Python: docs/_inventories/python.inv, from docs/make_python_inventory.py.
# * PyTorch: docs/_inventories/torch.inv, from docs/make_torch_inventory.py.
intersphinx_mapping = {
    "python": ("https://docs.python.org/3/", str(DOCS / "_inventories" / "python.inv")),
    "torch": ("https://docs.pytorch.org/docs/stable/", str(DOCS / "_inventories" / "torch.inv")),
}
intersphinx_timeout = 10

# ---------------------------------------------------------------------------- doctest

# The examples run for real (`python3 -m sphinx -b doctest docs docs/_build/doctest`);
# every group starts from the same seed.
doctest_global_setup = """
import torch
import pixelgen
torch.manual_seed(0)
"""


# ---------------------------------------------------------------------------- generated


def _skip_torch_inherited(app, what, name, obj, skip, options):
    """Leave out methods that only inherit torch's docstring (``forward``, ``extra_repr``):
    nn.Module's generic text says nothing about a pixelgen module."""
    if what != "class" or getattr(obj, "__doc__", "") is not None or not callable(obj):
        return None
    owner = getattr(obj, "__qualname__", "").rpartition(".")[0]
    module = sys.modules.get(getattr(obj, "__module__", ""), None)
    cls = getattr(module, owner, None)
    for base in getattr(cls, "__mro__", ())[1:]:
        inherited = base.__dict__.get(name)
        if inherited is not None and getattr(inherited, "__doc__", None):
            return True if base.__module__.startswith("torch") else None
    return None


def _drop_object_base(app, name, obj, options, bases):
    """``Bases: object`` says nothing; show-inheritance lists real base classes only."""
    if object in bases:
        bases.remove(object)


def _resolve_public_name(app, env, node, contnode):
    """A name re-exported by a package (``pixelgen.<name>`` of ``pixelgen.__all__``,
    ``pixelgen.blocks.X``, ``pixelgen.recipe.X``) refers to the object where its module
    documents it: each object is documented once, where it is defined."""
    target = node.get("reftarget", "")
    if node.get("refdomain") != "py" or not target.startswith("pixelgen."):
        return None
    module, _, name = target.rpartition(".")
    if module == "pixelgen" and name in pixelgen.__all__:
        where = f"{make_reference.defining_module(name)}.{name}"
    else:
        where = _defined_at(target)
        if where is None or where == target:
            return None
    return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, node["reftype"], where, node, contnode)


def _defined_at(target: str) -> str | None:
    """``pixelgen.recipe.load_recipe`` -> ``pixelgen.recipe.overrides.load_recipe``: the
    dotted name of a re-exported class or function (or its attribute) where it is defined."""
    parts = target.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module = sys.modules.get(".".join(parts[:cut]))
        obj = getattr(module, parts[cut], None) if module is not None else None
        defined_in = getattr(obj, "__module__", None)
        if isinstance(defined_in, str) and defined_in.startswith("pixelgen"):
            return ".".join([defined_in, getattr(obj, "__qualname__", parts[cut]), *parts[cut + 1:]])
    return None


def _figures_folder(env) -> Path:
    """Where this build's figures are drawn: beside its doctree cache, outside ``docs/``."""
    return Path(env.doctreedir) / "figures"


def _draw_figures(app) -> None:
    make_figures.make_all(_figures_folder(app.env))


class GeneratedFigure(Figure):
    """``{generated-figure} masks.png``: a figure of :mod:`make_figures`, drawn by this
    build; options and caption as for ``{figure}``."""

    def run(self):
        env = self.state.document.settings.env
        name = self.arguments[0]
        if name not in make_figures.DRAWERS:
            raise self.error(f"{name}: not a figure of docs/make_figures.py ({', '.join(make_figures.DRAWERS)})")
        page_folder = Path(env.doc2path(env.docname)).parent
        self.arguments[0] = os.path.relpath(_figures_folder(env) / name, page_folder)
        return super().run()


def _expand_generated(app, docname: str, source: list[str]) -> None:
    """Replace the page's ``{generated}`` blocks by their text (see make_reference)."""
    source[0] = make_reference.expand(source[0])


def _outdated_generated(app, env, added, changed, removed) -> list[str]:
    """Pages whose generated text changed since the last build into this folder (a new
    recipe key, a new option): their source files alone would not tell Sphinx."""
    digests = {}
    for docname in env.found_docs:
        text = Path(env.doc2path(docname)).read_text(encoding="utf-8")
        if make_reference.GENERATED_BLOCK.search(text):
            digests[docname] = hashlib.sha256(make_reference.expand(text).encode()).hexdigest()
    before = getattr(env, "pixelgen_generated_digests", {})
    env.pixelgen_generated_digests = digests
    return [docname for docname, digest in digests.items() if before.get(docname) != digest]


def setup(app):
    # A recipe key as a cross-reference target: {recipe-key}`train.devices`.
    app.add_object_type(
        "recipe-key", "recipe-key", objname="recipe key", indextemplate="pair: %s; recipe key"
    )
    app.add_directive("generated-figure", GeneratedFigure)
    app.connect("builder-inited", _draw_figures)
    app.connect("env-get-outdated", _outdated_generated)
    app.connect("source-read", _expand_generated)
    app.connect("autodoc-skip-member", _skip_torch_inherited)
    app.connect("autodoc-process-bases", _drop_object_base)
    app.connect("missing-reference", _resolve_public_name)
    return {"parallel_read_safe": True}

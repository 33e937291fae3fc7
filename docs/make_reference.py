"""Generate the reference pages from the code, so that they cannot drift from it.

Nothing is written to disk: a page asks for generated text with a block of its own,

````markdown
```{generated} cli
```
````

and ``conf.py`` replaces each such block by :func:`generate`'s text when Sphinx reads the
page (its ``source-read`` event), so a build leaves ``docs/`` as it found it. The
generators, by the name a block gives:

* ``recipe``: every recipe key with its type, default and help, from
  :func:`field_reference`, which reads the attrs fields of :mod:`pixelgen.recipe.schema`
  (their ``help`` metadata and validators; ``reference/recipe.md``);
* ``cli``: every ``pixelgen`` subcommand with its arguments, by walking
  :func:`pixelgen.cli.build_parser` (``reference/cli.md``);
* ``archive``: the run archive layout, from :data:`pixelgen.store.archive.LAYOUT`
  (``reference/archive.md``);
* ``hyperparameters``: the paper models' hyperparameters and defaults, from the registry
  (``models.md``);
* ``multiscale-hyperparameters``: the multi-scale model's, with their help (``models.md``);
* ``pixelcnn_pp-hyperparameters``: PixelCNN++'s, with their help (``models.md``);
* ``api-index`` and ``api MODULE``: the API index and one autodoc page per module of
  :data:`API_MODULES` (``api/index.md``, ``api/<module>.md``: Sphinx needs one source
  file per page, so each page is a committed file holding its one block).

Print one by hand (writes nothing)::

    python3 docs/make_reference.py cli
    python3 docs/make_reference.py api pixelgen.blocks
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import typing
from typing import Any, Callable, Literal

import attrs
import tomli_w

import pixelgen
from pixelgen import registry
from pixelgen.cli import build_parser
from pixelgen.recipe import FrozenTable, OutputSection, Recipe, ReportSection, RunSpec
from pixelgen.recipe.schema import Expect
from pixelgen.store import archive

# The modules with an API page, in the order of the API index: the layers, bottom up
# (docs/architecture.md). Add a module here once it
# exists in the package (and its docstrings build without warnings).
API_MODULES = [
    "pixelgen",
    "pixelgen.errors",
    "pixelgen.limits",
    "pixelgen.blocks",
    "pixelgen.nn",
    "pixelgen.nn.hyperparameters",
    "pixelgen.nn.blocks",
    "pixelgen.nn.layers",
    "pixelgen.nn.scans",
    "pixelgen.nn.shifts",
    "pixelgen.nn.likelihoods",
    "pixelgen.nn.metrics",
    "pixelgen.sampling",
    "pixelgen.registry",
    "pixelgen.registry.hookspecs",
    "pixelgen.registry.causality",
    "pixelgen.registry.builtin",
    "pixelgen.recipe",
    "pixelgen.recipe.schema",
    "pixelgen.recipe.convert",
    "pixelgen.recipe.overrides",
    "pixelgen.data",
    "pixelgen.data.builtin",
    "pixelgen.data.builtin.common",
    "pixelgen.data.builtin.cifar",
    "pixelgen.data.builtin.mnist",
    "pixelgen.data.builtin.imagenet",
    "pixelgen.data.builtin.folder",
    "pixelgen.store",
    "pixelgen.store.files",
    "pixelgen.store.checkpoint",
    "pixelgen.store.checkpoint_schema",
    "pixelgen.store.quantization",
    "pixelgen.store.archive",
    "pixelgen.store.images",
    "pixelgen.store.runs",
    "pixelgen.store.zoo",
    "pixelgen.training",
    "pixelgen.training.evaluation",
    "pixelgen.training.policies",
    "pixelgen.training.sinks",
    "pixelgen.training.trainer",
    "pixelgen.training.plan",
    "pixelgen.study",
    "pixelgen.study.inference",
    "pixelgen.study.from_checkpoint",
    "pixelgen.study.codec",
    "pixelgen.study.finish",
    "pixelgen.study.classifier",
    "pixelgen.study.scoring",
    "pixelgen.study.analysis",
    "pixelgen.study.options",
    "pixelgen.study.records",
    "pixelgen.study.measure",
    "pixelgen.study.render",
    "pixelgen.study.figures",
    "pixelgen.study.report",
    "pixelgen.api",
    "pixelgen.cli",
    "pixelgen.cli.plugins",
    "pixelgen.cli.zoo",
    "pixelgen.cli.check",
    "pixelgen.cli.sample",
    "pixelgen.cli.run",
    "pixelgen.cli.evaluate",
    "pixelgen.cli.report",
    "pixelgen.cli.score",
    "pixelgen.cli.quantize",
    "pixelgen.cli.compress",
    "pixelgen.cli.recipe",
]

# The three architectures of the paper, in its order (the registry may hold more).
PAPER_MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm"]


# ------------------------------------------------------------------------------ helpers


def escape(text: str) -> str:
    """Escape Markdown outside code spans: a help string renders as the plain text it is.

    A long option (``--hp``) becomes a code span: in prose, Sphinx's smartquotes would turn
    its two hyphens into an en dash, and a copied command would fail.
    """
    parts = re.split(r"(`[^`]*`)", text)
    for k in range(0, len(parts), 2):  # even parts are outside code spans
        escaped = re.sub(r"([\\*_<>\[\]|#])", r"\\\1", parts[k])
        parts[k] = re.sub(r"(?<![\w-])--[A-Za-z][\w-]*", lambda m: code(m[0].replace("\\", "")), escaped)
    return "".join(parts)


def code(text: str) -> str:
    """``text`` as an inline code span, whatever backticks it holds."""
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def directive(name: str, argument: str, body: str = "") -> str:
    return f"```{{{name}}} {argument}\n{body.rstrip()}\n```\n" if body else f"```{{{name}}} {argument}\n```\n"


# ------------------------------------------------------------------------------ recipe


def _type_text(tp: Any) -> str:
    """A field's annotation as the reference writes it: ``int``, ``"a" | "b"``, ``[float, float]``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if attrs.has(tp):
        return "table"
    if origin is typing.Union or type(tp).__name__ == "UnionType":
        return " | ".join("none" if m is type(None) else _type_text(m) for m in args)
    if origin is Literal:
        return " | ".join(f'"{c}"' if isinstance(c, str) else str(c) for c in args)
    if origin is tuple and args[-1] is Ellipsis:
        return "array of tables" if attrs.has(args[0]) else f"[{_type_text(args[0])}, ...]"
    if origin is tuple:
        return "[" + ", ".join(_type_text(a) for a in args) + "]"
    if origin is not None:  # Mapping[str, Any]
        return "table (free keys)"
    return {bool: "bool", int: "int", float: "float", str: "str"}[tp]


# What a validator accepts, where the type alone says it all.
_PLAIN = ("an integer", "a string", "true or false")
_SAID_BY_TYPE = ("'", "one of ", "an instance of ", "an array whose items are each one of ")


def _toml_literal(value: Any) -> str:
    """``value`` as TOML writes it, arrays on one line."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_literal(item) for item in value) + "]"
    return tomli_w.dumps({"v": value})[len("v = "):-1]


def _default_text(field: attrs.Attribute) -> str:
    default = field.default
    if "default_doc" in field.metadata:
        return field.metadata["default_doc"]
    if default is attrs.NOTHING:
        return "required"
    if isinstance(default, attrs.Factory):  # a table: a section, or a free table
        return "{}" if default.factory is FrozenTable else ""
    return "unset" if default is None else _toml_literal(default)


def _row(key: str, field: attrs.Attribute) -> tuple[str, str, str, str]:
    type_text, check = _type_text(field.type), field.validator
    if isinstance(check, Expect) and check.words not in _PLAIN and not check.words.startswith(_SAID_BY_TYPE):
        type_text += f" ({check.words})"
    return key, type_text, _default_text(field), field.metadata["help"]


def field_reference() -> list[tuple[str, str, str, str]]:
    """Every recipe key: ``(dotted key, type, default, help)``, from the attrs fields.

    Run keys (``model.*``, ``data.*``, ``train.*``, ``eval.*``, ``sample.*``, ``name``) are
    listed without prefix; they are valid both at the top level and inside ``[[runs]]``.
    """
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        for field in attrs.fields(cls):
            if not field.metadata.get("internal"):
                rows.append(_row(prefix + field.name, field))
                if attrs.has(field.type):
                    walk(field.type, f"{prefix}{field.name}.")

    fields = attrs.fields_dict(Recipe)
    rows.append(_row("description", fields["description"]))
    walk(RunSpec, "")
    rows.append(("output", "table", "", fields["output"].metadata["help"]))
    walk(OutputSection, "output.")
    rows.append(("report", "table", "", fields["report"].metadata["help"]))
    walk(ReportSection, "report.")
    rows.append(("runs", "array of tables", "", fields["runs"].metadata["help"]))
    return rows


def _recipe_groups() -> dict[str, list[tuple[str, str, str, str]]]:
    """field_reference rows grouped by the table that holds them ("" is the top level)."""
    groups: dict[str, list[tuple[str, str, str, str]]] = {"": []}
    for row in field_reference():
        key, type_text = row[0], row[1]
        parent = key.rpartition(".")[0]
        groups.setdefault(parent, []).append(row)
        if type_text == "table":
            groups.setdefault(key, [])
    return groups


def _default_phrase(default: str) -> str:
    if default == "":
        return ""
    if default == "required":
        return "required"
    if default == "unset":
        return "default: unset"
    if re.fullmatch(r"[a-z_]+(\.[a-z_]+)+", default):  # another key, e.g. model.name
        return f"default: the value of {{recipe-key}}`{default}`"
    return f"default: {code(default)}"


def recipe_reference() -> str:
    """The recipe reference page: one ``recipe-key`` entry per key, grouped by table."""
    groups = _recipe_groups()
    out = [
        "(recipe-reference)=\n# Recipe keys\n",
        "Every key a recipe may set, generated from the attrs classes of "
        "{mod}`pixelgen.recipe` (their `help` metadata) when these docs are built. "
        "Run keys (`model`, `data`, `train`, `eval`, `sample`, `name`) are valid both at "
        "the top level of a recipe and inside each `[[runs]]` table, where they are "
        "deep-merged over the top-level ones. `--set dotted.key=value` overrides any of "
        "them on the command line, and every run directory's `recipe.toml` holds all of "
        "them, defaults included.\n",
        "An optional value that is not a string is unset with the string `\"none\"` "
        "(TOML has no null).\n",
    ]
    for table, rows in groups.items():
        if table:
            out.append(f"(recipe-table-{table.replace('.', '-')})=\n## `[{table}]`\n")
        else:
            out.append("## Top level\n")
        for key, type_text, default, help_text in rows:
            facts = f"**{escape(type_text)}**"
            phrase = _default_phrase(default)
            if phrase:
                facts += f"; {phrase}"
            body = f"{facts}\n\n{escape(help_text)}"
            if type_text == "table":
                body += f" See {{ref}}`[{key}] <recipe-table-{key.replace('.', '-')}>`."
            out.append(directive("recipe-key", key, body))
    return "\n".join(out)


# ------------------------------------------------------------------------------ CLI


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """``(name, help, subparser)`` of every subcommand, in the order they were added."""
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help or "" for a in action._choices_actions}
            for name, sub in action.choices.items():
                out.append((name, helps.get(name, ""), sub))
    return out


def _usage(parser: argparse.ArgumentParser, width: int = 88) -> str:
    formatter = argparse.HelpFormatter(parser.prog, width=width)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _option_signature(action: argparse.Action) -> str:
    if not action.option_strings:
        return action.metavar or action.dest
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    if action.metavar is not None:
        metavar = action.metavar
    elif action.choices is not None:
        metavar = "{" + ",".join(str(c) for c in action.choices) + "}"
    else:
        metavar = action.dest.upper()
    args = {"+": f"{metavar} [{metavar} ...]", "*": f"[{metavar} ...]", "?": f"[{metavar}]"}
    arg = args.get(action.nargs, metavar)
    return ", ".join(f"{opt} {arg}" for opt in action.option_strings)


def _option_body(action: argparse.Action) -> str:
    parts = []
    help_text = action.help if action.help not in (None, argparse.SUPPRESS) else ""
    if help_text:
        help_text = argparse.HelpFormatter("pixelgen")._expand_help(action)  # %(default)s etc.
        help_text = help_text[0].upper() + help_text[1:]
        parts.append(escape(help_text if help_text.endswith((".", ")")) else help_text + "."))
    if isinstance(action, argparse._AppendAction) and "repeatable" not in help_text.lower():
        parts.append("Repeatable.")
    if action.choices is not None and action.option_strings:
        parts.append("One of " + ", ".join(code(str(c)) for c in action.choices) + ".")
    default = action.default
    if (
        action.option_strings
        and default not in (None, argparse.SUPPRESS, False, [])
        and action.nargs != 0
        and "default" not in help_text.lower()
    ):
        shown = " ".join(str(d) for d in default) if isinstance(default, (list, tuple)) else str(default)
        parts.append(f"Default: {code(shown)}.")
    return " ".join(parts)


def cli_reference(parser: argparse.ArgumentParser | None = None) -> str:
    """The command-line reference page: every subcommand of ``parser`` with its arguments."""
    if parser is None:
        parser = build_parser()
    out = [
        "(cli-reference)=\n# Command line\n",
        "Generated from `pixelgen.cli.build_parser()` when these docs are built. "
        "Every command is a thin wrapper over library functions; a user error prints one "
        "line, `pixelgen: error: ...`, and exits with status 2.\n",
        "```text\n" + _usage(parser) + "\n```\n",
    ]
    commands = _subcommands(parser)
    for name, help_text, _ in commands:
        out.append(f"- [`{parser.prog} {name}`](#pixelgen-{name}): {escape(help_text)}")
    out.append("")
    for name, help_text, sub in commands:
        out.append(f"(pixelgen-{name})=\n## `{sub.prog}`\n")
        if help_text:
            out.append(escape(help_text[0].upper() + help_text[1:]) + ".\n")
        if sub.description and sub.description.rstrip(".").lower() != help_text.rstrip(".").lower():
            out.append(escape(sub.description) + "\n")
        out.append("```text\n" + _usage(sub) + "\n```\n")
        out.append(directive("program", sub.prog))
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            out.append(directive("option", _option_signature(action), _option_body(action)))
    return "\n".join(out)


# ------------------------------------------------------------------------------ archive


def archive_reference() -> str:
    """The run-archive layout page, from :data:`pixelgen.store.archive.LAYOUT`."""
    rows = [f"* - {code(path)}\n  - {escape(text)}" for path, text in archive.LAYOUT.items()]
    return "\n".join([
        "(archive-reference)=\n# Run archive layout\n",
        "A run archive (`archive.zarr` in every run directory) is a zarr v3 group. Its root "
        f"attributes are `format = {archive.FORMAT!r}`, `format_version = "
        f"{archive.FORMAT_VERSION}` and `layout`, the table below as a mapping (generated "
        "from {data}`pixelgen.store.archive.LAYOUT`, written into every archive). Any zarr v3 "
        "reader can open it; {class}`pixelgen.store.archive.RunArchive` adds crash-safe appends.\n",
        "```{list-table}\n:header-rows: 1\n:widths: 1 3\n\n* - Path\n  - Contents\n"
        + "\n".join(rows) + "\n```\n",
        "Read `metrics/<name>` only up to `metrics.attrs[\"n_epochs\"]`: an interrupted "
        "append may have grown the arrays already, and the row counts only once "
        "`n_epochs` is raised. Sample batch keys count up from `000000`; entries starting "
        "with `.tmp-` are batches being written (or abandoned by a crash).\n",
    ])


# ------------------------------------------------------------------------------ models


def hyperparameter_table() -> str:
    """The paper models' factory hyperparameters and defaults, as the registry reports them."""
    names = [n for n in PAPER_MODELS if n in registry.list_models()]
    specs = {n: registry.get_model_spec(n).defaults() for n in names}
    keys: list[str] = []
    for hyper in specs.values():
        keys += [k for k in hyper if k not in keys]
    header = "* - hyperparameter\n" + "".join(f"  - `{n}`\n" for n in names)
    rows = []
    for key in keys:
        cells = "".join(
            f"  - {code(repr(specs[n][key])) if key in specs[n] else '(none)'}\n" for n in names
        )
        rows.append(f"* - `{key}`\n{cells}")
    return (
        "```{list-table}\n:header-rows: 1\n\n"
        + header
        + "".join(rows)
        + "```\n"
    )


def model_hyperparameters(name: str) -> str:
    """One model's hyperparameters with their defaults and help, as its spec declares them."""
    spec = registry.get_model_spec(name)
    rows = "".join(
        f"* - `{key}`\n  - {code(repr(hp.default))}\n  - {escape(hp.help)}\n"
        for key, hp in spec.hyperparameters.items()
    )
    return (
        "```{list-table}\n:header-rows: 1\n\n"
        + "* - hyperparameter\n  - default\n  - meaning\n"
        + rows
        + "```\n"
    )


# ------------------------------------------------------------------------------ API


# Modules without an API page yet, and why: their docstrings still make the build warn
# (tests/test_docs.py fails for a module in neither list).
API_PENDING: dict[str, str] = {}

# Extra autodoc options for a module's page.
API_OPTIONS = {
    "pixelgen.cli": [":undoc-members:"],  # main, build_parser: the command line is the docs
    # The plugin API's public name re-exports pixelgen.nn.blocks, whose page documents it.
    "pixelgen.blocks": [":ignore-module-all:"],
}


def defining_module(name: str) -> str:
    """The module among :data:`API_MODULES` that defines ``pixelgen.<name>``.

    Classes and functions say so themselves (``__module__``); other objects, such as the
    :data:`pixelgen.hookimpl` marker, are found where a ``#:`` comment documents them.
    """
    from sphinx.pycode import (
        ModuleAnalyzer,  # here, not at the top: the tests run without Sphinx
    )

    obj = getattr(pixelgen, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        return obj.__module__
    for module_name in API_MODULES[1:]:
        if ("", name) in ModuleAnalyzer.for_module(module_name).find_attr_docs():
            return module_name
    raise LookupError(f"pixelgen.{name}: no module of API_MODULES documents it with a #: comment")


def public_names() -> dict[str, str]:
    """``pixelgen.__all__`` names -> the module that defines and documents each."""
    return {name: defining_module(name) for name in pixelgen.__all__}


def _summary(name: str, module_name: str) -> str:
    """The first paragraph of ``pixelgen.<name>``'s documentation."""
    from sphinx.pycode import (
        ModuleAnalyzer,  # here, not at the top: the tests run without Sphinx
    )

    obj = getattr(pixelgen, name)
    if inspect.isclass(obj) or inspect.isfunction(obj):
        doc = inspect.getdoc(obj) or ""
    else:  # documented by a #: comment where it is defined
        doc = "\n".join(ModuleAnalyzer.for_module(module_name).find_attr_docs()[("", name)])
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def api_page(module_name: str) -> str:
    """An autodoc page for one module.

    Every object is documented once, in the module that defines it. The ``pixelgen``
    page lists the names it re-exports with links there; ``conf.py`` resolves
    references to ``pixelgen.<name>`` to the same place.
    """
    lines = [f"# `{module_name}`\n", "```{eval-rst}"]
    if module_name == "pixelgen":
        # The docstrings are reStructuredText, so the table is too.
        lines += [".. automodule:: pixelgen", "   :no-members:", "", ".. rubric:: Public names", "",
                  ".. list-table::", "   :header-rows: 1", "   :widths: 2 5", "",
                  "   * - name", "     - what it is"]
        for name, where in public_names().items():
            lines += [f"   * - :py:obj:`pixelgen.{name} <{where}.{name}>`", f"     - {_summary(name, where)}"]
        lines.append("```\n")
        return "\n".join(lines)
    lines += [f".. automodule:: {module_name}", "   :members:", "   :show-inheritance:"]
    if hasattr(importlib.import_module(module_name), "__path__"):
        # a package's __all__ re-exports its modules' names, which their own pages document
        lines.append("   :ignore-module-all:")
    lines += [f"   {option}" for option in API_OPTIONS.get(module_name, [])]
    lines.append("```\n")
    return "\n".join(lines)


def api_index() -> str:
    """The API index page (``api/index.md``)."""
    entries = "\n".join(API_MODULES)
    return (
        "(api-reference)=\n# Python API\n\n"
        "Generated by autodoc from the docstrings when these docs are built. The names "
        "most programs need are importable from {mod}`pixelgen` itself.\n\n"
        + "```{toctree}\n:maxdepth: 1\n\n" + entries + "\n```\n"
    )


# ------------------------------------------------------------------------------ blocks

#: A page's request for generated text: ```{generated} NAME [ARGUMENT]``` and its closing
#: fence, each on a line of its own.
GENERATED_BLOCK = re.compile(r"^```\{generated\} ([\w-]+)(?: (\S+))?\n```[ \t]*$", re.M)

GENERATORS: dict[str, Callable[..., str]] = {
    "recipe": recipe_reference,
    "cli": cli_reference,
    "archive": archive_reference,
    "hyperparameters": hyperparameter_table,
    "multiscale-hyperparameters": lambda: model_hyperparameters("multiscale"),
    "pixelcnn_pp-hyperparameters": lambda: model_hyperparameters("pixelcnn_pp"),
    "api-index": api_index,
    "api": api_page,
}


def generate(name: str, argument: str | None = None) -> str:
    """The text a ``{generated} NAME [ARGUMENT]`` block stands for."""
    if name not in GENERATORS:
        raise ValueError(f"{{generated}} {name}: no such generator; one of {', '.join(GENERATORS)}")
    if name == "api":
        if argument not in API_MODULES:
            raise ValueError(f"{{generated}} api {argument}: not a module of API_MODULES in docs/make_reference.py")
        return api_page(argument)
    if argument is not None:
        raise ValueError(f"{{generated}} {name} {argument}: {name} takes no argument")
    return GENERATORS[name]()


def expand(text: str) -> str:
    """``text`` with every ``{generated}`` block replaced by its generated text."""
    return GENERATED_BLOCK.sub(lambda m: generate(m[1], m[2]).rstrip("\n"), text)


if __name__ == "__main__":
    print(generate(*sys.argv[1:3]))

"""Raw TOML data to the schema's classes and back, with cattrs.

Errors come from cattrs' exception groups, read with its own ``transform_error``; each
becomes one line that starts with the dotted key path the user wrote and quotes the value
as written. Unknown keys are reported first, with a "did you mean".
"""

from __future__ import annotations

import ast
import difflib
import json
import re
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import cattrs

from pixelgen import registry
from pixelgen.errors import RecipeError, RegistryError
from pixelgen.limits import MAX_RECIPE_DEPTH
from pixelgen.recipe.schema import (
    BadValue,
    FrozenTable,
    OutputSection,
    Recipe,
    ReportSection,
    RunSpec,
    public_fields,
)

_MISSING = object()


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # TOML's bare keys; any other key is written quoted


def dotted(path: Sequence[Any]) -> str:
    """A key path as TOML writes it, ``runs.0.train.epochs``; a key that is not bare is
    quoted with its escapes (``model."a b\\n"``), so that a message stays on one line."""
    return ".".join(json.dumps(p) if isinstance(p, str) and not _BARE_KEY.fullmatch(p) else str(p) for p in path)


def takes_none_string(tp: Any) -> bool:
    """TOML has no null: optional non-string fields take the string "none" for unset."""
    members = typing.get_args(tp)
    return type(None) in members and str not in members


def _as_written(value: Any, tp: Any) -> Any:
    # cattrs' int/str/bool/Literal hooks convert (int(2.5) is 2, str(3) is "3"); a recipe
    # must refuse those, so these values reach the field validators as written.
    return value


def _number(value: Any, tp: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # beyond any float: left as written for the field's validator to refuse
            return value
    return value


def _union(value: Any, tp: Any) -> Any:
    if takes_none_string(tp) and isinstance(value, str) and value.lower() == "none":
        return None
    members = [m for m in typing.get_args(tp) if m is not type(None)]
    return converter.structure(value, members[0]) if len(members) == 1 and value is not None else value


def _tuple(value: Any, tp: Any) -> Any:
    """Arrays become tuples item by item; anything else is left for the validator to refuse."""
    args = typing.get_args(tp)
    if isinstance(value, (list, tuple)) and args[-1] is Ellipsis:
        return tuple(converter.structure(item, args[0]) for item in value)
    if isinstance(value, (list, tuple)) and len(value) == len(args):
        return tuple(converter.structure(item, a) for item, a in zip(value, args))
    return value


def _section(cls: type) -> Any:
    structure = cattrs.gen.make_dict_structure_fn(cls, converter)

    def hook(value: Any, tp: Any) -> Any:
        if not isinstance(value, Mapping):
            raise BadValue(cls.__name__, (), "a table", value)
        return structure(value, cls)

    return hook


def _unstructure_section(cls: type) -> Any:
    """An unset value whose default is set is written "none" (no key would mean the default)."""
    nones = {f.name: cattrs.gen.override(unstruct_hook=lambda x: "none" if x is None else x)
             for f in attrs.fields(cls) if takes_none_string(f.type) and f.default is not None}
    return cattrs.gen.make_dict_unstructure_fn(cls, converter, **nones)


def _free_table(tp: Any) -> bool:
    return typing.get_origin(tp) is Mapping or tp is FrozenTable


converter = cattrs.Converter(forbid_extra_keys=True)
for _tp in (int, str, bool):
    converter.register_structure_hook(_tp, _as_written)
converter.register_structure_hook_func(
    lambda tp: typing.get_origin(tp) is typing.Literal or _free_table(tp), _as_written)
converter.register_structure_hook(float, _number)
converter.register_structure_hook_func(
    lambda tp: typing.get_origin(tp) in (typing.Union, types.UnionType), _union)
converter.register_structure_hook_func(lambda tp: typing.get_origin(tp) is tuple, _tuple)
converter.register_structure_hook_factory(attrs.has, _section)
converter.register_unstructure_hook_func(lambda tp: tp is tuple or typing.get_origin(tp) is tuple,
                                         lambda items: [converter.unstructure(i) for i in items])
converter.register_unstructure_hook_func(_free_table,
                                         lambda table: {k: converter.unstructure(v) for k, v in table.items()})
converter.register_unstructure_hook_factory(attrs.has, _unstructure_section)


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class Problem(Exception):
    """A problem at a key path, rendered into a RecipeError once the path is known."""

    def __init__(self, path: tuple, message: str, known: Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.path, self.message, self.known = path, message, known  # known: for unknown keys

    def render(self, where: Any = dotted) -> str:
        """``where(path)`` turns a key path into the dotted text the user wrote."""
        if self.known is None:
            return f"{where(self.path)}: {self.message}"
        table = where(self.path[:-1]) or "the recipe"
        return f"{where(self.path)}: {unknown_key(str(self.path[-1]), self.known, table)}"


def unknown_key(key: str, known: Sequence[str], table: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known keys of {table}: {', '.join(known)}"
    return f"unknown key; {hint}"


def lookup(raw: Any, path: Sequence[Any], default: Any = _MISSING) -> Any:
    """The raw value at ``path``, or ``default`` where there is none."""
    for key in path:
        if isinstance(raw, Mapping) and key in raw:
            raw = raw[key]
        elif isinstance(raw, (list, tuple)) and isinstance(key, int) and key < len(raw):
            raw = raw[key]
        else:
            return default
    return raw


def _describe(exc: BaseException, tp: Any) -> str:
    """transform_error's text for one failure: what went wrong, then (after a tab) the keys
    below transform_error's path that lead to the value, as a repr'd tuple."""
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key\t{tuple(sorted(exc.extra_fields))!r}"
    if isinstance(exc, KeyError):
        return "required key is missing\t()"
    if isinstance(exc, BadValue):
        return f"expected {exc.expected}\t{exc.keys!r}"
    raise exc


def _path(text: str) -> tuple:
    """transform_error's ``$.train.optimizer[1]['key']`` as ``("train", "optimizer", 1, "key")``."""
    parts = re.findall(r"\.([^.\[]+)|\[((?:'[^']*'|\"[^\"]*\"|\d+))\]", text)
    return tuple(name or ast.literal_eval(index) for name, index in parts)


def structure(raw: Any, cls: type, prefix: tuple = ()) -> Any:
    """``cls`` from raw TOML data, or the first problem (unknown keys first) as a Problem."""
    try:
        return converter.structure(raw, cls)
    except (cattrs.ClassValidationError, BadValue) as group:
        failures = cattrs.transform_error(group, "$", _describe)
    text, _, where = min(failures, key=lambda f: not f.startswith("unknown key")).rpartition(" @ ")
    message, _, keys = text.partition("\t")
    path, keys = _path(where), ast.literal_eval(keys)
    if message == "unknown key":  # the first unknown key written, with the table's keys
        table = lookup(raw, path)
        key = next(k for k in table if k in keys)
        known = [f.name for f in public_fields(_section_at(cls, path))]
        raise Problem(prefix + path + (key,), message, known)
    if message.startswith("expected"):  # the value as written, not as converted
        path += keys
        message += f", got {lookup(raw, path)!r}"
    raise Problem(prefix + path, message)


def _section_at(cls: type, path: tuple) -> type:
    for key in path:
        cls = attrs.fields_dict(cls)[key].type
    return cls


# --------------------------------------------------------------------------------------
# Whole recipes: top-level tables, [[runs]] merging, registry checks.
# --------------------------------------------------------------------------------------

RUN_KEYS = tuple(f.name for f in public_fields(RunSpec))
RUNS_TYPE = attrs.fields(Recipe).runs.type
TOP_TYPES = {"description": str, **{f.name: f.type for f in public_fields(RunSpec)},
             "output": OutputSection, "report": ReportSection, "runs": RUNS_TYPE}  # the keys of a recipe file


def deep_merge(base: Mapping, over: Mapping) -> dict:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def recipe_from_dict(data: Mapping[str, Any], source: str | None = None) -> Recipe:
    """Validate raw recipe data (as parsed from TOML) into a :class:`~pixelgen.recipe.schema.Recipe`.

    Args:
        data: the parsed TOML document.
        source: the recipe file it came from; its stem fills ``{recipe}`` in output.dir.

    Raises:
        RecipeError: one line, starting with the dotted key path of the first problem.
    """
    if not isinstance(data, Mapping):
        raise RecipeError(f"recipe: expected a table, got {data!r}")
    _check_depth(data)
    try:
        for key in data:
            if key not in TOP_TYPES:
                raise Problem((key,), "unknown key", known=list(TOP_TYPES))
        output = structure(data.get("output", {}), OutputSection, ("output",))
        report = structure(data.get("report", {}), ReportSection, ("report",))
        shared = {k: data[k] for k in RUN_KEYS if k in data}
        placed = _runs(data, shared) if "runs" in data else [_build_run(shared, ())]
        # Every key is checked before any name is looked up: the registry loads the plugins,
        # and with them torch, which a misspelt key should not wait for.
        for run, where in placed:
            with where:
                _check_registry(run)
        runs = [_with_eval_batch_size(run) for run, _ in placed]
        description = data.get("description", "")
        return Recipe(runs=tuple(runs), description=description, output=output, report=report,
                      source=source)
    except BadValue as exc:  # the description, which Recipe's own validator checks
        raise RecipeError(f"description: expected {exc.expected}, got {exc.value!r}") from None
    except Problem as exc:
        raise RecipeError(exc.render()) from None


def _check_depth(data: Mapping[str, Any]) -> None:
    """RecipeError naming the first value nested deeper than MAX_RECIPE_DEPTH tables and
    arrays; walked without recursion, so that the check itself cannot overflow the stack."""
    stack: list[tuple[Any, tuple]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_RECIPE_DEPTH:
            raise RecipeError(f"{dotted(path[:8])}...: nested more than {MAX_RECIPE_DEPTH} levels deep; "
                              f"a recipe needs a handful")
        items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
        stack.extend((item, path + (key,)) for key, item in items if isinstance(item, (Mapping, list)))


def _runs(data: Mapping[str, Any], shared: Mapping[str, Any]) -> list[tuple[RunSpec, _RunErrors]]:
    """The ``[[runs]]`` tables, each deep-merged over the shared ones; names must differ."""
    tables = data["runs"]
    if not isinstance(tables, (list, tuple)) or not tables:
        raise Problem(("runs",), f"expected one or more [[runs]] tables, got {tables!r}")
    placed: list[tuple[RunSpec, _RunErrors]] = []
    for i, table in enumerate(tables):
        if not isinstance(table, Mapping):
            raise Problem(("runs", i), f"expected a table, got {table!r}")
        placed.append(_build_run(deep_merge(shared, table), ("runs", i), shared, table))
    runs = [run for run, _ in placed]
    for i, run in enumerate(runs):
        first = next(j for j, other in enumerate(runs) if other.name == run.name)
        if first != i:
            raise Problem(("runs", i, "name"), f"duplicate run name {run.name!r} (also run {first}); "
                          "run names name the run folders and must differ")
    return placed


class _RunErrors:
    """A context in which a Problem becomes a RecipeError naming the table the offending value
    was written in: the run's own ``[[runs]]`` table, or the shared one it inherited."""

    def __init__(self, prefix: tuple, shared: Mapping[str, Any] | None, own: Mapping[str, Any] | None) -> None:
        self.prefix, self.shared, self.own = prefix, shared, own

    def inherited(self, path: tuple) -> bool:
        return (bool(self.prefix) and lookup(self.own, path) is _MISSING
                and lookup(self.shared, path) is not _MISSING)

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if not isinstance(exc, Problem):
            return
        text = exc.render(lambda path: dotted(path if self.inherited(path) else self.prefix + tuple(path)))
        if self.inherited(exc.path):  # a shared value may be wrong for one run only
            text += f" (shared value, inherited by {dotted(self.prefix)})"
        raise RecipeError(text) from None


def _build_run(raw: Mapping[str, Any], prefix: tuple, shared: Mapping[str, Any] | None = None,
               own: Mapping[str, Any] | None = None) -> tuple[RunSpec, _RunErrors]:
    """Structure one run (its names not yet looked up), with the context its errors are told in."""
    where = _RunErrors(prefix, shared, own)
    with where:
        return structure(raw, RunSpec), where


def _with_eval_batch_size(run: RunSpec) -> RunSpec:
    if run.eval.batch_size is None:
        return attrs.evolve(run, eval=attrs.evolve(run.eval, batch_size=run.data.batch_size))
    return run


def _check_registry(run: RunSpec) -> None:
    """The registry's own checks of names, hyperparameters and options, at their key paths."""
    for table, kind, get_spec, given in (
        ("model", "model", registry.get_model_spec, run.model.hyperparameters),
        ("data", "data set", registry.get_dataset_spec, run.data.options),
    ):
        name = getattr(run, table).name
        try:
            spec = get_spec(name)
        except RegistryError as exc:
            raise Problem((table, "name"), str(exc)) from None
        known = spec.defaults() if table == "model" else spec.options()
        for key in given:
            try:
                registry.check_options(kind, name, {key: given[key]}, known)
            except RegistryError as exc:
                free = "hyperparameters" if table == "model" else "options"
                raise Problem((table, free, key), str(exc)) from None
            expected = spec.hyperparameters[key].refuses(given[key]) if table == "model" else None
            if expected is not None:  # before anything builds a model of absurd size
                raise Problem((table, "hyperparameters", key), f"expected {expected}, got {given[key]!r}")
            if table == "model" and key == registry.LIKELIHOOD:
                try:
                    registry.likelihood_choice(given[key])  # a registered likelihood and its options
                except RegistryError as exc:
                    raise Problem((table, "hyperparameters", key), str(exc)) from None

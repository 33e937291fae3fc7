"""Reading recipe files, and ``--set dotted.key=value`` overrides applied before validation."""

import os
import stat
import tomllib
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from pixelgen.errors import RecipeError
from pixelgen.limits import MAX_RECIPE_BYTES, MAX_RECIPE_DEPTH
from pixelgen.recipe.convert import RUNS_TYPE, TOP_TYPES, deep_merge, dotted, recipe_from_dict, unknown_key
from pixelgen.recipe.schema import Recipe, RunSpec, public_fields


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read a TOML recipe, apply ``--set`` overrides, and validate it.

    Args:
        path: the recipe file.
        overrides: ``"dotted.key=value"`` strings, applied in order before validation.
            The value is read by :func:`parse_value`. ``runs.1.train.epochs=3`` sets a key
            of the second ``[[runs]]`` table; keys of the top-level tables apply to every
            run that does not set them itself.

    Raises:
        RecipeError: one line naming the file (for read and TOML errors), the override
            (``--set key: ...``) or the dotted key path of the first invalid value.
    """
    if isinstance(overrides, str):
        raise TypeError("overrides must be a sequence of 'key=value' strings, not a string")
    data = read_recipe_data(path)
    for override in overrides:
        apply_override(data, override)
    return recipe_from_dict(data, source=str(path))


def read_recipe_data(path: str | Path) -> dict[str, Any]:
    """A recipe file's TOML as plain data, not yet validated. Only a regular file (not a FIFO
    or a device, which could block or never end) of at most MAX_RECIPE_BYTES is read.

    Raises:
        RecipeError: one line naming the file, for a file that cannot be read or is not TOML.
    """
    path = Path(path)
    text = _read_recipe_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: invalid TOML: {' '.join(str(exc).split())}") from None
    except RecursionError:
        raise RecipeError(f"{path}: nested too deeply; a recipe nests at most {MAX_RECIPE_DEPTH} levels") from None


def _read_recipe_text(path: Path) -> str:
    """The text of a recipe file: a regular file (not a FIFO or a device, which could block
    or never end) of at most MAX_RECIPE_BYTES, in UTF-8."""
    try:
        with open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NONBLOCK)) as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise RecipeError(f"{path}: not a regular file; name a .toml recipe file")
            if info.st_size > MAX_RECIPE_BYTES:
                raise RecipeError(f"{path}: {info.st_size:,} bytes; a recipe is at most {MAX_RECIPE_BYTES:,}")
            raw = handle.read(MAX_RECIPE_BYTES + 1)
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except IsADirectoryError:
        raise RecipeError(f"{path}: is a folder; name a .toml recipe file") from None
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror})") from None
    if len(raw) > MAX_RECIPE_BYTES:  # it grew while being read
        raise RecipeError(f"{path}: over {MAX_RECIPE_BYTES:,} bytes; a recipe is at most that")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecipeError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def parse_value(text: str) -> Any:
    """A command-line value (``--set``, ``--hp``): a TOML value where ``text`` parses as one
    (``3e-4``, ``true``, ``[0.9, 0.99]``, ``"text"``, ``{lr = 1}``; dates excepted), else the
    bare string (``cpu``, ``/tmp/some data``)."""
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except RecursionError:
        raise RecipeError(f"{text[:40]}...: nested too deeply; a value nests at most {MAX_RECIPE_DEPTH} levels") from None
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, (str, int, float, bool, list, dict)) else text


def apply_override(data: dict[str, Any], override: str) -> None:
    """Apply one ``dotted.key=value`` override to raw recipe data, in place.

    The key is checked against the schema so that a typo fails here, naming the override.
    Keys inside free tables (``model.hyperparameters.*``, ``data.options.*``) are checked
    later, against the registry.
    """
    key, sep, text = override.partition("=")
    key = key.strip()
    if not sep or not key:
        raise RecipeError(f"--set {override}: expected KEY=VALUE, e.g. train.epochs=3")
    try:
        *tables, last = _override_path(data, key.split("."))
        target: Any = data
        for i, part in enumerate(tables):  # creating tables on the way
            target = target[part] if isinstance(part, int) else target.setdefault(part, {})
            if not isinstance(target, (dict, list)):
                raise ValueError(f"{dotted(tables[: i + 1])} is not a table in the recipe")
    except ValueError as exc:
        raise RecipeError(f"--set {key}: {exc}") from None
    value = parse_value(text.strip())
    existing = target[last] if isinstance(target, list) else target.get(last)
    if isinstance(value, dict) and isinstance(existing, dict):
        value = deep_merge(existing, value)  # an inline table adds keys, it keeps the rest
    target[last] = value


def _override_path(data: Mapping[str, Any], parts: list[str]) -> list[str | int]:
    """An override's key, checked against the schema (a ValueError says what is wrong),
    with ``runs.N`` turned into an index into the recipe's ``[[runs]]`` tables."""
    if "" in parts:
        raise ValueError("empty key segment")
    path: list[str | int] = []
    node: Any = TOP_TYPES
    for i, part in enumerate(parts):
        here = dotted(path) or "the recipe"
        if node is RUNS_TYPE:
            runs = data.get("runs")
            if not isinstance(runs, list) or not runs:
                raise ValueError("the recipe has no [[runs]] tables")
            if not part.isdigit() or int(part) >= len(runs):
                raise ValueError(f"runs index must be 0..{len(runs) - 1}, got {part!r}")
            path.append(int(part))
            node = RunSpec
            continue
        if typing.get_origin(node) is Mapping:  # a free table: the registry checks its keys
            if i != len(parts) - 1:
                raise ValueError(f"{here} holds plain values, not tables")
            return path + [part]
        keys = {f.name: f.type for f in public_fields(node)} if attrs.has(node) else node
        if not isinstance(keys, dict):
            raise ValueError(f"{here} is a value, not a table")
        if part not in keys:
            raise ValueError(unknown_key(part, list(keys), here))
        path.append(part)
        node = keys[part]
    return path

"""The model zoo: small pretrained checkpoints shipped with pixelgen, named ``zoo:NAME``.

::

    pixelgen/zoo/                 (or $PIXELGEN_ZOO_DIR: another zoo, e.g. in tests)
      zoo.toml                    the manifest: one [models.NAME] table per model
      fmnist_pixelcnn.ckpt        an int8 checkpoint (pixelgen quantize --to int8)
      ...

Each manifest entry (:class:`ZooModel`) records the file's SHA-256 and size, its weights'
SHA-256 (which a rebuild reproduces exactly), the recipe
and the command that rebuild it (``scripts/build_zoo.py NAME``), its parameter count and
its test bits/dim as a float and as an int8 model. :func:`resolve` turns ``zoo:NAME`` into
the file's path after checking its SHA-256, so a damaged or replaced file is refused
before it is loaded; anything else is returned as the path it names. It reads only the
manifest and the file's bytes (the standard library: no torch), so the command line
resolves a name while it parses.

The zoo folder is read-only to every command: no output lands in it
(:func:`pixelgen.store.runs.check_output_file` refuses it, and the outputs that default
to "beside the checkpoint" go to the current folder for a zoo model).
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import re
import tomllib

import attrs
import cattrs
import tomli_w

from pixelgen.errors import PixelgenError, did_you_mean, one_line
from pixelgen.store.files import atomic_write_text, read_regular

#: The prefix that names a zoo model wherever a checkpoint path is accepted.
PREFIX = "zoo:"
#: The manifest's file name inside the zoo folder.
MANIFEST = "zoo.toml"
#: The environment variable naming another zoo folder (in place of the packaged one).
ZOO_ENV = "PIXELGEN_ZOO_DIR"
#: The zoo installed with pixelgen (package data beside this package).
PACKAGED_ZOO = pathlib.Path(__file__).resolve().parents[1] / "zoo"
#: The largest manifest read (a zoo lists a few models).
MAX_MANIFEST_BYTES = 1 << 20

_HEADER = """\
# The model zoo: pixelgen zoo lists it, zoo:NAME loads a model wherever a checkpoint path is accepted.
# Written by scripts/build_zoo.py (which rebuilds each model from its recipe); do not edit by hand.
"""


class ZooError(PixelgenError):
    """An unknown zoo name, a zoo file that does not match its manifest, or a bad manifest."""


def _plain_file_name(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if pathlib.Path(value).name != value or value in (".", "..") or not value.endswith(".ckpt"):
        raise ValueError(f"{attribute.name}: expected a plain file name ending .ckpt, got {value!r}")


def _hex_digest(instance: object, attribute: attrs.Attribute, value: str) -> None:
    if not re.fullmatch(r"[0-9a-f]{64}", value):
        raise ValueError(f"{attribute.name}: expected 64 lower-case hex digits, got {value!r}")


@attrs.frozen
class ZooModel:
    """One model of the zoo, as its manifest entry records it."""

    #: Its name, the NAME that follows the ``zoo`` prefix.
    name: str = attrs.field(validator=attrs.validators.matches_re(r"[a-z0-9][a-z0-9_]*"))
    #: The checkpoint file in the zoo folder, a plain name.
    file: str = attrs.field(validator=_plain_file_name)
    #: The file's SHA-256, checked whenever the name is resolved.
    sha256: str = attrs.field(validator=_hex_digest)
    #: The SHA-256 of its weights alone (the checkpoint's ``model_digest``): equal for every
    #: rebuild from the recipe, where the file's own digest also covers timings it records.
    weights_sha256: str = attrs.field(validator=_hex_digest)
    #: The file's size in bytes.
    bytes: int = attrs.field(validator=attrs.validators.ge(1))
    #: The registered model (pixelgen plugins lists them).
    model: str
    #: The data set it was trained on.
    data: str
    #: Its number of parameters.
    parameters: int
    #: Bits/dim of the int8 model (the file) on the recipe's test split.
    bits_per_dim: float
    #: Bits/dim of the float model it was quantized from, on the same images.
    bits_per_dim_float: float
    #: The number of test images those figures are over.
    test_images: int
    #: The recipe it was trained by, relative to the repository.
    recipe: str
    #: The command that rebuilds it from its recipe.
    command: str
    #: What it is, one line.
    description: str


_converter = cattrs.Converter(forbid_extra_keys=True)


def zoo_dir() -> pathlib.Path:
    """The zoo folder: ``$PIXELGEN_ZOO_DIR`` where it is set, else the packaged one."""
    return pathlib.Path(os.environ[ZOO_ENV]) if os.environ.get(ZOO_ENV) else PACKAGED_ZOO


def read_manifest(folder: str | os.PathLike | None = None) -> dict[str, ZooModel]:
    """The models of the zoo in ``folder`` (default :func:`zoo_dir`) by name; none where it
    has no manifest.

    Raises:
        ZooError: one line naming the manifest and the entry that does not validate.
    """
    path = pathlib.Path(folder if folder is not None else zoo_dir()) / MANIFEST
    if not path.exists():
        return {}
    try:
        tables = tomllib.loads(read_regular(path, MAX_MANIFEST_BYTES).decode("utf-8")).get("models", {})
        if not isinstance(tables, dict) or not all(isinstance(table, dict) for table in tables.values()):
            raise TypeError("expected a table [models.NAME] for each model")
        return {name: _model(path, name, table) for name, table in tables.items()}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, TypeError) as exc:
        raise ZooError(f"{path}: not a zoo manifest: {one_line(exc)}") from None


def _model(manifest: pathlib.Path, name: str, table: dict) -> ZooModel:
    """The manifest's table ``models.NAME`` as a :class:`ZooModel`; a ZooError naming the
    key that does not validate."""
    try:
        return _converter.structure({"name": name, **table}, ZooModel)
    except cattrs.BaseValidationError as exc:
        failures = cattrs.transform_error(exc, f"models.{name}", _describe)
        raise ZooError(f"{manifest}: not a zoo manifest: {'; '.join(failures)}") from None


def _describe(exc: BaseException, type_: type | None) -> str:
    """cattrs' words for a failure, a validator's own message for a bad value."""
    return str(exc.args[0]) if type(exc) is ValueError and exc.args else cattrs.v.format_exception(exc, type_)


def list_zoo(folder: str | os.PathLike | None = None) -> list[ZooModel]:
    """The zoo's models (``pixelgen zoo`` prints them), by name."""
    return sorted(read_manifest(folder).values(), key=lambda model: model.name)


def sha256_of(path: str | os.PathLike) -> str:
    """The SHA-256 of ``path``'s bytes, in hex."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def resolve(path_or_name: str | os.PathLike) -> pathlib.Path:
    """The checkpoint file ``path_or_name`` names: ``zoo:NAME``'s file in the zoo folder,
    its SHA-256 checked against the manifest; anything else as the path it is.

    Raises:
        ZooError: one line: an unknown name (with the closest one), a missing file, or a
            file whose SHA-256 is not the manifest's.
    """
    text = os.fspath(path_or_name)
    if not text.startswith(PREFIX):
        return pathlib.Path(text)
    name = text[len(PREFIX):]
    models = read_manifest()
    if name not in models:
        known = ", ".join(sorted(models)) or "none installed"
        raise ZooError(f"{text}: no such zoo model; {did_you_mean(name, models)}"
                       f"`pixelgen zoo` lists them ({known})")
    return verified_file(models[name])


def verified_file(model: ZooModel, folder: str | os.PathLike | None = None) -> pathlib.Path:
    """``model``'s file in the zoo folder, its size and SHA-256 checked against the manifest.

    Raises:
        ZooError: one line, for a missing file or one that is not the manifest's.
    """
    path = pathlib.Path(folder if folder is not None else zoo_dir()) / model.file
    if not path.is_file():
        raise ZooError(f"{PREFIX}{model.name}: its file {path} is missing; reinstall pixelgen or rebuild it "
                       f"({model.command})")
    digest = sha256_of(path)
    if digest != model.sha256:
        raise ZooError(f"{PREFIX}{model.name}: {path} has SHA-256 {digest[:16]}..., not the manifest's "
                       f"{model.sha256[:16]}...; refused (damaged or replaced); reinstall pixelgen or rebuild it "
                       f"({model.command})")
    return path


def in_zoo(path: str | os.PathLike) -> bool:
    """Whether ``path`` is or lies in a zoo folder (the packaged one or ``$PIXELGEN_ZOO_DIR``),
    where no command writes."""
    path = pathlib.Path(os.path.realpath(path))
    folders = {pathlib.Path(os.path.realpath(f)) for f in (PACKAGED_ZOO, zoo_dir())}
    return any(path == folder or folder in path.parents for folder in folders)


def write_entry(model: ZooModel, folder: str | os.PathLike | None = None) -> pathlib.Path:
    """Add or replace ``model``'s entry in the manifest of the zoo in ``folder`` (default
    :func:`zoo_dir`), atomically: a reader sees the old manifest or the new one."""
    folder = pathlib.Path(folder if folder is not None else zoo_dir())
    models = {**read_manifest(folder), model.name: model}
    tables = {name: attrs.asdict(models[name], filter=lambda a, _: a.name != "name") for name in sorted(models)}
    return atomic_write_text(folder / MANIFEST, _HEADER + "\n" + tomli_w.dumps({"models": tables}))

"""Write ``docs/_inventories/python.inv``: a small intersphinx inventory for Python itself.

The docs link to the standard library through intersphinx and must build offline (CI has
no network). Python's full ``objects.inv`` is online, or on Debian in the python3.X-doc
package, which ``scripts/setup.sh`` would have to apt-install into the system Python even
inside a virtual environment. So, as ``make_torch_inventory.py`` does for PyTorch, this
script lists the Python objects the docs and docstrings refer to, each with its page and
anchor on https://docs.python.org/3/, and writes them with Sphinx's own inventory writer
(:meth:`sphinx.util.inventory.InventoryFile.dump`). The generated file is committed;
rerun this script after adding an object to ``OBJECTS`` (a build with ``nitpicky`` names
any reference it cannot resolve)::

    python3 docs/make_python_inventory.py

The pages and anchors are those of Python's own inventory (3.11, which the docs build on).
"""

from __future__ import annotations

from pathlib import Path

from make_torch_inventory import dump_inventory  # the writer both inventories share

BASE_URL = "https://docs.python.org/3/"
OUTPUT = Path(__file__).resolve().parent / "_inventories" / "python.inv"

# (name, domain object type, page under BASE_URL, anchor on that page)
OBJECTS: list[tuple[str, str, str, str]] = [
    ("None", "data", "library/constants.html", "None"),
    ("object", "class", "library/functions.html", "object"),
    ("bool", "class", "library/functions.html", "bool"),
    ("int", "class", "library/functions.html", "int"),
    ("float", "class", "library/functions.html", "float"),
    ("str", "class", "library/stdtypes.html", "str"),
    ("tuple", "class", "library/stdtypes.html", "tuple"),
    ("list", "class", "library/stdtypes.html", "list"),
    ("dict", "class", "library/stdtypes.html", "dict"),
    ("Exception", "exception", "library/exceptions.html", "Exception"),
    ("AssertionError", "exception", "library/exceptions.html", "AssertionError"),
    ("OSError", "exception", "library/exceptions.html", "OSError"),
    ("ValueError", "exception", "library/exceptions.html", "ValueError"),
    ("argparse.ArgumentParser", "class", "library/argparse.html", "argparse.ArgumentParser"),
    ("argparse.Namespace", "class", "library/argparse.html", "argparse.Namespace"),
    ("collections.abc.Callable", "class", "library/collections.abc.html", "collections.abc.Callable"),
    ("collections.abc.Iterator", "class", "library/collections.abc.html", "collections.abc.Iterator"),
    ("collections.abc.Mapping", "class", "library/collections.abc.html", "collections.abc.Mapping"),
    ("collections.abc.Sequence", "class", "library/collections.abc.html", "collections.abc.Sequence"),
    ("os.PathLike", "class", "library/os.html", "os.PathLike"),
    ("pathlib.Path", "class", "library/pathlib.html", "pathlib.Path"),
    ("tomllib", "module", "library/tomllib.html", "module-tomllib"),
    ("typing.Any", "data", "library/typing.html", "typing.Any"),
    ("typing.Callable", "data", "library/typing.html", "typing.Callable"),
    ("typing.Literal", "data", "library/typing.html", "typing.Literal"),
    ("typing.IO", "class", "library/typing.html", "typing.IO"),
    ("typing.Iterator", "class", "library/typing.html", "typing.Iterator"),
    ("typing.Mapping", "class", "library/typing.html", "typing.Mapping"),
    ("typing.NamedTuple", "class", "library/typing.html", "typing.NamedTuple"),
    ("typing.Protocol", "class", "library/typing.html", "typing.Protocol"),
    ("typing.Sequence", "class", "library/typing.html", "typing.Sequence"),
]


def write_inventory(path: Path = OUTPUT) -> Path:
    """Write the inventory to ``path`` and return it."""
    return dump_inventory(path, "Python", "3", OBJECTS)


if __name__ == "__main__":
    print(f"wrote {write_inventory()}")

"""Write ``docs/_inventories/torch.inv``: a small intersphinx inventory for PyTorch.

The docs link to PyTorch through intersphinx, but PyTorch's own ``objects.inv`` is only
online and the docs must build offline (CI has no network). No Debian package ships it.
So this script lists the torch objects the docs and docstrings refer to, each with its
page on https://docs.pytorch.org/docs/stable/, and writes them with Sphinx's own
inventory writer (:meth:`sphinx.util.inventory.InventoryFile.dump`). The generated file is
committed; rerun this script after adding a torch object to ``OBJECTS``::

    python3 docs/make_torch_inventory.py

Autodoc names a class by its defining module (``torch.nn.modules.module.Module`` for
``nn.Module``), so such classes are listed under that name as well as the public one;
both point to the same page.
"""

from __future__ import annotations

import types
from pathlib import Path

from sphinx.util.inventory import InventoryFile

BASE_URL = "https://docs.pytorch.org/docs/stable/"
OUTPUT = Path(__file__).resolve().parent / "_inventories" / "torch.inv"

# (public name, domain object type, page under BASE_URL, other names autodoc may use)
OBJECTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("torch.Tensor", "class", "tensors.html", ()),
    ("torch.dtype", "class", "tensor_attributes.html", ()),
    ("torch.device", "class", "tensor_attributes.html", ()),
    ("torch.Generator", "class", "generated/torch.Generator.html", ("torch._C.Generator",)),
    ("torch.nn.Module", "class", "generated/torch.nn.Module.html", ("torch.nn.modules.module.Module",)),
    ("torch.nn.ModuleList", "class", "generated/torch.nn.ModuleList.html",
     ("torch.nn.modules.container.ModuleList",)),
    ("torch.nn.Conv1d", "class", "generated/torch.nn.Conv1d.html", ("torch.nn.modules.conv.Conv1d",)),
    ("torch.nn.Conv2d", "class", "generated/torch.nn.Conv2d.html", ("torch.nn.modules.conv.Conv2d",)),
    ("torch.nn.ConvTranspose2d", "class", "generated/torch.nn.ConvTranspose2d.html",
     ("torch.nn.modules.conv.ConvTranspose2d",)),
    ("torch.nn.LSTM", "class", "generated/torch.nn.LSTM.html", ("torch.nn.modules.rnn.LSTM",)),
    ("torch.nn.Embedding", "class", "generated/torch.nn.Embedding.html",
     ("torch.nn.modules.sparse.Embedding",)),
    ("torch.nn.parameter.Parameter", "class", "generated/torch.nn.parameter.Parameter.html",
     ("torch.nn.Parameter",)),
    ("torch.nn.functional.conv2d", "function", "generated/torch.nn.functional.conv2d.html", ()),
    ("torch.nn.functional.cross_entropy", "function",
     "generated/torch.nn.functional.cross_entropy.html", ()),
    ("torch.autograd.forward_ad.make_dual", "function",
     "generated/torch.autograd.forward_ad.make_dual.html", ()),
    ("torch.utils.data.Dataset", "class", "data.html", ("torch.utils.data.dataset.Dataset",)),
    ("torch.utils.data.Subset", "class", "data.html", ("torch.utils.data.dataset.Subset",)),
    ("torch.utils.data.DataLoader", "class", "data.html", ("torch.utils.data.dataloader.DataLoader",)),
    ("torch.utils.data.distributed.DistributedSampler", "class", "data.html", ()),
    ("torch.optim.Adam", "class", "generated/torch.optim.Adam.html", ("torch.optim.adam.Adam",)),
    ("torch.optim.Optimizer", "class", "optim.html", ("torch.optim.optimizer.Optimizer",)),
    ("torch.optim.lr_scheduler.ReduceLROnPlateau", "class",
     "generated/torch.optim.lr_scheduler.ReduceLROnPlateau.html", ()),
    ("torch.compile", "function", "generated/torch.compile.html", ()),
    ("torch.save", "function", "generated/torch.save.html", ()),
    ("torch.load", "function", "generated/torch.load.html", ()),
]


def dump_inventory(path: Path, project: str, version: str, entries: list[tuple[str, str, str, str]]) -> Path:
    """Write ``entries``, ``(name, domain object type, page, anchor)``, as a Sphinx inventory
    of the ``py`` domain at ``path`` (also used by ``make_python_inventory.py``)."""

    class PythonObjects:  # the part of a Sphinx domain that InventoryFile.dump reads
        name = "py"

        def get_objects(self):
            for name, objtype, page, anchor in entries:
                yield name, name, objtype, page, anchor, 1  # (name, display name, type, page, anchor, priority)

    env = types.SimpleNamespace(config=types.SimpleNamespace(project=project, version=version),
                                domains=types.SimpleNamespace(sorted=lambda: [PythonObjects()]))
    builder = types.SimpleNamespace(get_target_uri=lambda page: page)
    path.parent.mkdir(parents=True, exist_ok=True)
    InventoryFile.dump(path, env, builder)
    return path


def write_inventory(path: Path = OUTPUT) -> Path:
    """Write the inventory to ``path`` and return it: every name of an object (the public one
    and the ones autodoc may use) points to the public name's page and anchor."""
    entries = [(fullname, objtype, page, name) for name, objtype, page, aliases in OBJECTS
               for fullname in (name, *aliases)]
    return dump_inventory(path, "PyTorch", "stable", entries)


if __name__ == "__main__":
    print(f"wrote {write_inventory()}")

"""``pixelgen zoo``: the pretrained models of the zoo, read from its manifest alone (no torch)."""

from __future__ import annotations

import argparse
import json

import attrs

from pixelgen.store.zoo import PREFIX, ZooModel, list_zoo, zoo_dir

COLUMNS = ("name", "model", "data", "params", "size", "test bits/dim", "description")


def _row(model: ZooModel) -> tuple[str, ...]:
    """``model``'s cells of the table, in the order of :data:`COLUMNS`."""
    bits = f"{model.bits_per_dim:.4f} ({model.bits_per_dim_float:.4f} float)"
    return (PREFIX + model.name, model.model, model.data, f"{model.parameters:,}", f"{model.bytes / 1024:.0f} KB",
            bits, model.description)


def cmd_zoo(args: argparse.Namespace) -> int:
    models = list_zoo()
    if args.json:
        print(json.dumps([attrs.asdict(model) for model in models]))
        return 0
    if not models:
        print(f"no models in the zoo ({zoo_dir()}); scripts/build_zoo.py NAME builds one from its recipe")
        return 0
    rows = [COLUMNS, *map(_row, models)]
    widths = [max(len(row[k]) for row in rows) for k in range(len(COLUMNS) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
    print(f"(int8 weights; bits/dim on each recipe's test split; {zoo_dir()})")
    return 0

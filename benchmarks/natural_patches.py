"""A small natural-image set: non-overlapping 32x32 RGB patches of the colour photographs
that scikit-image and scikit-learn ship inside their packages (nothing is downloaded).

    python3 benchmarks/natural_patches.py data/natural-patches     # writes train/ and test/

Patches are cut from the top-left corner of each photograph on a 32-pixel grid (a partial
patch at the right or bottom edge is dropped) and written as PNG files
``<photo>_<row>_<col>.png``. The split is by photograph, so no test patch shares a picture
with a training one: ``train/`` holds the astronaut, coffee and rocket of scikit-image and
the flower of scikit-learn, ``test/`` the cat (chelsea) of scikit-image and the temple
(china) of scikit-learn. ``recipes/natural_patches.toml`` trains on ``train/`` through the
``image_folder`` data set; ``benchmarks/compression.py --images-from .../test`` codes
``test/``. Needs the ``bench`` extra (``pip install 'pixelgen[bench]'``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

PATCH = 32
#: The photographs of each part, by the name they are written under.
SPLITS = {"train": ("astronaut", "coffee", "rocket", "flower"), "test": ("chelsea", "china")}


def photographs() -> dict[str, np.ndarray]:
    """The shipped colour photographs, uint8 ``(H, W, 3)`` each, by name."""
    try:
        import skimage.data
        from sklearn.datasets import load_sample_images
    except ImportError:
        sys.exit("natural_patches.py: error: needs scikit-image and scikit-learn: pip install 'pixelgen[bench]'")
    china, flower = load_sample_images().images  # files inside the sklearn package
    return {"astronaut": skimage.data.astronaut(), "coffee": skimage.data.coffee(), "rocket": skimage.data.rocket(),
            "chelsea": skimage.data.chelsea(), "china": china, "flower": flower}


def patches(photo: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """Non-overlapping ``PATCH`` x ``PATCH`` patches of ``photo`` (H, W, 3), by (row, col)."""
    rows, cols = photo.shape[0] // PATCH, photo.shape[1] // PATCH
    return {(r, c): photo[r * PATCH:(r + 1) * PATCH, c * PATCH:(c + 1) * PATCH]
            for r in range(rows) for c in range(cols)}


def write(out: Path) -> dict[str, int]:
    """Write ``out/train`` and ``out/test``; returns the number of patches of each."""
    photos = photographs()
    counts = {}
    for split, names in SPLITS.items():
        folder = out / split
        folder.mkdir(parents=True)
        counts[split] = 0
        for name in names:
            for (r, c), patch in patches(photos[name]).items():
                Image.fromarray(np.ascontiguousarray(patch)).save(folder / f"{name}_{r:02d}_{c:02d}.png")
                counts[split] += 1
    return counts


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a folder to create (refused if it exists)")
    args = parser.parse_args(argv)
    if args.out.exists():
        print(f"natural_patches.py: error: {args.out}: exists; choose a new folder", file=sys.stderr)
        return 2
    counts = write(args.out)
    print(f"{args.out}: {counts['train']} training patches, {counts['test']} test patches of {PATCH}x{PATCH}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

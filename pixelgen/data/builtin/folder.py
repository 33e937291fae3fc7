"""Your own images: every PNG/JPEG under a folder, one class per first-level subfolder,
resized and centre-cropped on access, with a deterministic 10% test split.
"""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from pixelgen.data.builtin.common import REASON_CHARS, check_split
from pixelgen.errors import DataError, one_line

# Files are found here rather than by torchvision.datasets.folder's find_classes /
# make_dataset / IMG_EXTENSIONS, which were measured against this loader on the same folders
# and differ where it matters (torchvision 0.29): find_classes makes every first-level
# folder a class, so a folder without images (notes/, .ipynb_checkpoints/) makes
# make_dataset fail or, with allow_empty, shifts n_classes; it refuses images lying
# directly in root; make_dataset lists a class's own files before its subfolders' instead
# of one sorted path order, which moves files between the deterministic train and test
# splits; and IMG_EXTENSIONS adds .bmp/.tif/.webp/.ppm/.pgm, which changes which files a
# folder holds. Any of these would change the splits of folders users already train on.
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class ImageFolder(Dataset):
    """PNG/JPEG files decoded on access, resized and centre-cropped to ``image_size``."""

    def __init__(
        self,
        files: Sequence[pathlib.Path],
        targets: Sequence[int],
        classes: Sequence[str],
        image_size: tuple[int, int],
        channels: int,
    ):
        self.files = list(files)
        self.targets = list(targets)
        self.classes = list(classes)
        self.n_classes = max(len(self.classes), 1)
        self.image_size = image_size
        self.channels = channels
        self.shape = (channels, *image_size)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = _decode(self.files[index], self.channels)  # (C, h, w)
        return _cover_and_centre_crop(image, self.image_size), self.targets[index]


def _decode(path: pathlib.Path, channels: int) -> torch.Tensor:
    """A PNG/JPEG file as uint8 (channels, h, w), through PIL (torchvision.io's decoders
    are deprecated since torchvision 0.29). Alpha is dropped; 16-bit PNGs are scaled
    to 8 bits rather than clipped."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
    except Exception as exc:  # PIL raises OSError, ValueError, DecompressionBombError...
        raise DataError(
            f"image_folder: cannot decode {path} ({one_line(exc, REASON_CHARS)}); replace or delete the file"
        ) from None
    if image.mode.startswith("I"):  # 16-bit grey
        wide = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(wide / 257.0), 0, 255).astype(np.uint8))
    pixels = np.asarray(image.convert("RGB" if channels == 3 else "L"))  # (h, w[, 3])
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return torch.from_numpy(pixels.copy()).permute(2, 0, 1)  # (C, h, w)


def _cover_and_centre_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Scale ``image`` (C, h, w) so it just covers ``size`` (H, W), then crop the centre.

    For a square ``size`` this is "resize the shorter side, centre-crop".
    """
    from torchvision.transforms.v2 import functional as F

    height, width = image.shape[-2:]
    scale = max(size[0] / height, size[1] / width)
    covering = [max(size[0], round(height * scale)), max(size[1], round(width * scale))]
    if covering != [height, width]:
        image = F.resize(image, covering, antialias=True)
    if list(image.shape[-2:]) != list(size):
        image = F.center_crop(image, list(size))
    return image  # (C, H, W)


def image_folder(
    root: str,
    split: str,
    *,
    download: bool = True,
    image_size: int | Sequence[int] = 32,
    channels: int = 3,
) -> ImageFolder:
    """Your own images: every PNG/JPEG under ``root``, searched recursively, in sorted order.

    Labels are the sorted names of the first-level subfolders (as torchvision's
    ``ImageFolder``), or 0 for all when the files sit directly in ``root``. Images are
    resized so the shorter side fits ``image_size`` (an int, or (H, W)) and centre-cropped;
    ``channels`` is 3 (RGB) or 1 (grey).

    Splits: ``"test"`` is files 0, 10, 20, ... of the sorted list (a deterministic 10%)
    and ``"train"`` is every other file. ``download`` is accepted and ignored.
    """
    train = check_split("image_folder", split)
    size = _image_size(image_size)
    if channels not in (1, 3):
        raise DataError(f"image_folder: channels must be 1 or 3, got {channels!r}")
    root_path = pathlib.Path(root)
    files = sorted(
        (p for p in root_path.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES),
        key=lambda p: p.relative_to(root_path).as_posix(),
    )
    if not files:
        raise DataError(
            f"image_folder: no PNG or JPEG files under {root_path}; put images there, one "
            f"subfolder per class (or all directly in it for a single class)"
        )
    top_level = [p.relative_to(root_path).parts for p in files]
    in_root = [parts for parts in top_level if len(parts) == 1]
    if in_root and len(in_root) != len(files):
        raise DataError(
            f"image_folder: {root_path} has images both directly in it (e.g. {in_root[0][0]}) "
            f"and in subfolders; put every image in a class subfolder, or all in the root"
        )
    classes = sorted({parts[0] for parts in top_level if len(parts) > 1})
    class_index = {name: i for i, name in enumerate(classes)}
    labels = [class_index[parts[0]] if len(parts) > 1 else 0 for parts in top_level]
    keep = [i for i in range(len(files)) if (i % 10 == 0) != train]
    return ImageFolder(
        [files[i] for i in keep], [labels[i] for i in keep], classes, size, channels
    )


def _image_size(image_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        size = (image_size, image_size)
    elif (
        isinstance(image_size, (list, tuple))
        and len(image_size) == 2
        and all(isinstance(s, int) and not isinstance(s, bool) for s in image_size)
    ):
        size = (image_size[0], image_size[1])
    else:
        size = (0, 0)
    if min(size) <= 0:
        raise DataError(
            f"image_folder: image_size must be a positive int or [height, width], got {image_size!r}"
        )
    return size

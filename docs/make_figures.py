"""Draw the figures of the models page with pixelgen itself.

Run by ``conf.py`` when a build starts, so that the pictures show what the code does
today. It draws into a folder of the build's own (beside Sphinx's doctree cache), never
into ``docs/``; pages show a figure with ``{generated-figure} masks.png``. By hand::

    python3 docs/make_figures.py /tmp/figures        # writes /tmp/figures/*.png

* ``masks.png``: :func:`pixelgen.nn.layers.conv_mask` for the 7x7 mask-A input convolution,
  PixelCNN's 3x3 mask B, the Row LSTM's 1x3 input-to-state kernel, and the colour
  connections at the centre tap (mask A and mask B, three colours);
* ``scan_order.png``: in which step of a layer each pixel is computed (from
  :func:`pixelgen.nn.layers.skew` and the models' ``sequential_steps``), and the skewed map
  the Diagonal BiLSTM scans;
* ``receptive_fields.png``: the pixels one output pixel depends on, measured by
  :func:`pixelgen.registry.causality.dependency_map` (the Jacobian) on tiny models of each kind.

Everything is tiny (a few thousand parameters, images of at most 8x11 pixels) and runs
in a few seconds on a CPU; :func:`make_all` skips the work when the figures are newer
than this script, the pixelgen package and the model plugins. The figures use
matplotlib's Agg canvas directly: no pyplot, no global state, no display.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

import pixelgen
from pixelgen import registry
from pixelgen.nn.layers import conv_mask, skew
from pixelgen.registry.causality import allowed_dependencies, dependency_map

MODELS = ["pixelcnn", "row_lstm", "diagonal_bilstm"]
TITLES = {"pixelcnn": "PixelCNN", "row_lstm": "Row LSTM", "diagonal_bilstm": "Diagonal BiLSTM"}
# Tiny models: as in tests/test_causality.py, so the pictures show the fields it pins.
TINY = dict(hidden_channels=12, n_layers=2, head_channels=32)
FIELD_SIZE = (8, 8)  # (height, width) of the receptive-field canvas
FIELD_PIXEL = (7, 1)  # the output pixel drawn: bottom row, near the left edge
SCAN_SIZE = (5, 7)

OFF, ON = "#ffffff", "#3b6fb6"


def _new_figure(n_panels: int, size: tuple[float, float]) -> tuple[Figure, list]:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(1, n_panels, squeeze=False)[0])


def _grid(ax, values, cmap, vmin=None, vmax=None, labels=None, fontsize=8) -> None:
    """Draw a 2-d array as bordered cells, row 0 on top, optionally with ``labels`` in them."""
    height, width = values.shape
    ax.pcolormesh(values, cmap=cmap, vmin=vmin, vmax=vmax, edgecolors="#888888", linewidth=0.5)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)
    ax.set_aspect("equal")
    ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
    if labels is not None:
        for (i, j), text in labels.items():
            ax.text(j + 0.5, i + 0.5, text, ha="center", va="center", fontsize=fontsize)


def _save(fig: Figure, folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    fig.savefig(path, dpi=110, metadata={"Software": None})  # no version stamp: stable bytes
    return path


def masks_figure(folder: Path) -> Path:
    """The spatial masks and the colour connections at the centre tap."""
    binary = ListedColormap([OFF, ON])
    fig, axes = _new_figure(5, (12, 2.9))
    panels = [
        ("7x7 input conv, mask A", conv_mask(1, 1, (7, 7), "A", 1)[0, 0], (3, 3)),
        ("PixelCNN 3x3, mask B", conv_mask(1, 1, (3, 3), "B", 1)[0, 0], (1, 1)),
        ("Row LSTM input-to-state\n1x3, mask B", conv_mask(1, 1, (1, 3), "B", 1)[0, 0], (0, 1)),
    ]
    for ax, (title, mask, centre) in zip(axes, panels):
        _grid(ax, mask.numpy(), binary, 0, 1, {centre: "x"})
        ax.set_title(title, fontsize=9)
    colours = "RGB"
    for ax, kind in zip(axes[3:], "AB"):
        # (out colour, in colour) at the centre tap, one channel per colour
        centre = conv_mask(3, 3, (1, 1), kind, 3)[:, :, 0, 0]
        _grid(ax, centre.numpy(), binary, 0, 1)
        ax.set_xticks([0.5, 1.5, 2.5], [f"in {c}" for c in colours])
        ax.set_yticks([0.5, 1.5, 2.5], [f"out {c}" for c in colours])
        ax.tick_params(labelbottom=True, labelleft=True, labelsize=8)
        ax.set_title(f"centre tap, mask {kind}\n(colour groups)", fontsize=9)
    return _save(fig, folder, "masks.png")


def _tiny_model(name: str, channels: int):
    torch.manual_seed(0)
    known = registry.get_model_spec(name).defaults()
    return pixelgen.create_model(name, in_channels=channels, **{k: v for k, v in TINY.items() if k in known})


def scan_order_figure(folder: Path) -> Path:
    """The step of a layer in which each pixel is computed, and the skewed map."""
    height, width = SCAN_SIZE
    rows = torch.arange(height)[:, None].expand(height, width)
    cols = torch.arange(width)[None, :].expand(height, width)
    # Where each pixel lands in the skewed map: skew an image of pixel numbers.
    numbers = (rows * width + cols + 1).float()[None, None]  # (1, 1, H, W), 0 is padding
    skewed = skew(numbers)[0, 0].long()  # (H, W + H - 1)
    column_of = torch.zeros(height * width, dtype=torch.long)
    for t in range(skewed.shape[1]):
        for n in skewed[:, t]:
            if n > 0:
                column_of[n - 1] = t
    steps = {
        "pixelcnn": torch.zeros(height, width, dtype=torch.long),  # one convolution
        "row_lstm": rows.clone(),  # one step per row
        "diagonal_bilstm": column_of.view(height, width),  # one step per skewed column
    }
    fig, axes = _new_figure(4, (13, 2.6))
    for ax, name in zip(axes, MODELS):
        step = steps[name]
        n_steps = _tiny_model(name, 1).sequential_steps(height, width)
        assert int(step.max()) + 1 == n_steps, (name, n_steps)  # the picture agrees with the model
        labels = {(i, j): str(int(step[i, j]) + 1) for i in range(height) for j in range(width)}
        _grid(axes[MODELS.index(name)], step.numpy(), "Blues", -2, max(n_steps, 2), labels)
        ax.set_title(f"{TITLES[name]}: {n_steps} step{'s' if n_steps > 1 else ''}", fontsize=9)
    skewed_labels = {
        (i, t): str(int(skewed[i, t]))
        for i in range(height) for t in range(skewed.shape[1]) if skewed[i, t] > 0
    }
    _grid(axes[3], (skewed > 0).long().numpy(), ListedColormap(["#eeeeee", "#c6dbef"]), 0, 1, skewed_labels, 7)
    axes[3].set_title("skewed map: pixel numbers,\none column per step", fontsize=9)
    return _save(fig, folder, "scan_order.png")


def field_of(name: str, pixel: tuple[int, int], size: tuple[int, int] = FIELD_SIZE) -> torch.Tensor:
    """``(H, W)`` codes for output ``pixel`` of a tiny grey model: 0 later, 1 earlier but
    not seen, 2 seen, 3 the pixel itself."""
    height, width = size
    support = dependency_map(_tiny_model(name, 1), 1, height, width)[0, pixel[0], pixel[1], 0]
    earlier = allowed_dependencies(1, height, width)[0, pixel[0], pixel[1], 0]
    codes = earlier.long() + support.long()  # support lies inside earlier: causal models
    codes[pixel] = 3
    return codes


def receptive_fields_figure(folder: Path) -> Path:
    """The measured receptive field of one output pixel of each tiny model."""
    colours = ["#ffffff", "#f4a582", ON, "#222222"]
    fig, axes = _new_figure(3, (10, 3.9))
    for ax, name in zip(axes, MODELS):
        codes = field_of(name, FIELD_PIXEL)
        unseen = int((codes == 1).sum())
        _grid(ax, codes.numpy(), ListedColormap(colours), 0, 3)
        ax.set_title(f"{TITLES[name]}: {unseen} earlier pixel{'s' if unseen != 1 else ''} unseen", fontsize=9)
    names = ["later", "earlier, not seen", "seen", "the output pixel"]
    handles = [Patch(facecolor=c, edgecolor="#888888", label=n) for c, n in zip(colours, names)]
    fig.legend(handles=handles, loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return _save(fig, folder, "receptive_fields.png")


DRAWERS = {"masks.png": masks_figure, "scan_order.png": scan_order_figure,
           "receptive_fields.png": receptive_fields_figure}


def _sources() -> list[Path]:
    """The files the figures depend on: this script, pixelgen, the models' plugin modules."""
    files = [Path(__file__), *Path(pixelgen.__file__).parent.glob("*.py")]
    for name in MODELS:
        files.append(Path(inspect.getsourcefile(registry.get_model_spec(name).factory)))
    return files


def make_all(folder: Path, force: bool = False) -> list[Path]:
    """Draw every figure into ``folder`` that is missing there or older than its sources;
    returns the paths drawn."""
    paths = [folder / name for name in DRAWERS]
    if not force:
        newest_source = max(path.stat().st_mtime for path in _sources())
        if all(p.exists() and p.stat().st_mtime > newest_source for p in paths):
            return []
    return [draw(folder) for draw in DRAWERS.values()]


if __name__ == "__main__":
    for path in make_all(Path(sys.argv[1]), force=True):
        print(f"wrote {path}")

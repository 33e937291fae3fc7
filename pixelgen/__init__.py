"""pixelgen: the PixelRNN family (PixelCNN, Row LSTM, Diagonal BiLSTM) done right.

Public API::

    import pixelgen
    pixelgen.list_models()                      # ['diagonal_bilstm', 'pixelcnn', 'row_lstm']
    model = pixelgen.create_model("pixelcnn", in_channels=3, hidden_channels=32, n_layers=4)
    logits = model(x)                           # x: (B, C, H, W) ints 0..255 -> (B, 256, C, H, W)
    pixelgen.bits_per_dim(logits, x)
    images = pixelgen.sample(model, 16, 32, 32, seed=0)   # uint8 (16, 3, 32, 32)
"""

from pixelgen.errors import PixelgenError
from pixelgen.hookspecs import hookimpl
from pixelgen.metrics import bits_per_dim, nll_nats
from pixelgen.registry import (
    DatasetSpec,
    ModelSpec,
    create_dataset,
    create_model,
    list_datasets,
    list_models,
    plugin_failures,
    register_plugin,
)
from pixelgen.sampling import sample

__version__ = "0.1.0"

__all__ = [
    "DatasetSpec",
    "ModelSpec",
    "PixelgenError",
    "bits_per_dim",
    "create_dataset",
    "create_model",
    "hookimpl",
    "list_datasets",
    "list_models",
    "nll_nats",
    "plugin_failures",
    "register_plugin",
    "sample",
]

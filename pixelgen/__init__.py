"""pixelgen: the PixelRNN family (PixelCNN, Row LSTM, Diagonal BiLSTM) done right.

Public API::

    import pixelgen
    pixelgen.list_models()                      # ['diagonal_bilstm', 'multiscale', 'pixelcnn', 'row_lstm']
    pixelgen.list_zoo()                         # the pretrained models, each loaded as "zoo:NAME"
    model = pixelgen.create_model("pixelcnn", in_channels=3, hidden_channels=32, n_layers=4)
    logits = model(x)                           # x: (B, C, H, W) ints 0..255 -> (B, 256, C, H, W)
    pixelgen.bits_per_dim(logits, x)
    images = pixelgen.sample(model, 16, 32, 32, seed=0)   # uint8 (16, 3, 32, 32)
    data = pixelgen.compress(model, images)               # bytes: about the NLL in bits / 8
    assert (pixelgen.decompress(model, data) == images).all()
    model = pixelgen.load_model("runs/quickstart")        # a trained run's model, in eval mode
"""

import importlib
from typing import Any

__version__ = "0.1.0"

# Lazy attributes (Scientific Python SPEC 1): ``import pixelgen.nn.blocks`` or ``pixelgen
# --help`` loads only what it needs; ``pixelgen.sample`` loads the sampling module on
# first use. Each public name and the module that defines it:
_EXPORTS = {
    "DatasetSpec": "pixelgen.registry",
    "LikelihoodSpec": "pixelgen.registry",
    "ModelSpec": "pixelgen.registry",
    "PixelgenError": "pixelgen.errors",
    "bits_per_dim": "pixelgen.nn.metrics",
    "compress": "pixelgen.study.codec",
    "create_dataset": "pixelgen.registry",
    "create_model": "pixelgen.registry",
    "decompress": "pixelgen.study.codec",
    "hookimpl": "pixelgen.registry.hookspecs",
    "list_datasets": "pixelgen.registry",
    "list_likelihoods": "pixelgen.registry",
    "list_models": "pixelgen.registry",
    "list_zoo": "pixelgen.store.zoo",
    "load_model": "pixelgen.study.from_checkpoint",
    "nll_nats": "pixelgen.nn.metrics",
    "plugin_failures": "pixelgen.registry",
    "register_plugin": "pixelgen.registry",
    "sample": "pixelgen.sampling",
    "train": "pixelgen.api",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'pixelgen' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = [
    "DatasetSpec",
    "LikelihoodSpec",
    "ModelSpec",
    "PixelgenError",
    "bits_per_dim",
    "compress",
    "create_dataset",
    "create_model",
    "decompress",
    "hookimpl",
    "list_datasets",
    "list_likelihoods",
    "list_models",
    "list_zoo",
    "load_model",
    "nll_nats",
    "plugin_failures",
    "register_plugin",
    "sample",
    "train",
]

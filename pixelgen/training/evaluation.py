"""A model's likelihood on a data set, and the process settings every loop shares.

::

    evaluate(model, dataset, batch_size, fabric)    NLL in nats/image and bits/dim, overall
                                                    and per colour (pixelgen.nn.metrics)
    set_threads(threads)                            torch's intra-op threads (from pixelgen.sampling)
    progress_bar_enabled()                          bars on a terminal only (from pixelgen.errors)
    bare_module(model)                              the user's module inside Fabric's wrapper
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import torch
from lightning_fabric.wrappers import _FabricModule
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from pixelgen.errors import DataError, progress_bar_enabled
from pixelgen.nn.blocks import call_model, likelihood_of, n_classes_of
from pixelgen.nn.metrics import nats_to_bits_per_dim
from pixelgen.sampling import set_threads  # noqa: F401  (its home before sampling.py; re-exported)


def bare_module(model: nn.Module) -> nn.Module:
    """The user's module inside Fabric's wrapper and ``torch.compile``'s, if any."""
    while isinstance(model, _FabricModule) or hasattr(model, "_orig_mod"):
        model = model.module if isinstance(model, _FabricModule) else model._orig_mod
    return model


def evaluate(
    model: nn.Module,
    dataset: Dataset,
    batch_size: int,
    fabric: Any = None,
    *,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Negative log-likelihood of ``dataset`` under ``model``.

    Args:
        model: a pixelgen model, bare or set up by Fabric; it is put in eval mode for the
            pass and back in its previous mode after.
        dataset: items ``(uint8 (C, H, W), label)``.
        batch_size: images per forward pass.
        fabric: with several processes each evaluates every ``world_size``-th image (no
            padding, no duplicates) and the sums are all-reduced, so the figures equal a
            single-process pass. Without it the model's own device is used.

    Returns:
        ``{"n_images", "nll_nats" (per image), "bits_per_dim",
        "bits_per_dim_per_channel" (list, one per colour)}``.
    """
    net = bare_module(model)
    rank, world = (fabric.global_rank, fabric.world_size) if fabric is not None else (0, 1)
    device = fabric.device if fabric is not None else next(net.parameters()).device
    if len(dataset) == 0:
        raise DataError("evaluate: the split has no images (check data.validation_fraction and data.limit_*)")
    channels, height, width = dataset[0][0].shape
    loader = DataLoader(Subset(dataset, range(rank, len(dataset), world)),
                        batch_size=batch_size, shuffle=False, num_workers=num_workers)
    totals = _summed_nll(net, loader, channels, device, fabric)  # (C + 1,): nats per colour, count
    if world > 1:
        totals = fabric.all_reduce(totals, reduce_op="sum")
    totals = totals.cpu().tolist()
    n_images = int(totals[-1])
    per_channel = [nats / n_images for nats in totals[:-1]]  # nats per image, per colour
    nll = sum(per_channel)
    return {
        "n_images": n_images,
        "nll_nats": nll,
        "bits_per_dim": nats_to_bits_per_dim(nll, channels * height * width),
        "bits_per_dim_per_channel": [nats_to_bits_per_dim(v, height * width) for v in per_channel],
    }


def _summed_nll(net: nn.Module, loader: DataLoader, channels: int, device: Any, fabric: Any) -> Tensor:
    """NLL in nats summed over the loader's images per colour, and the image count."""
    totals = torch.zeros(channels + 1, dtype=torch.float64, device=device)
    conditional = n_classes_of(net) > 0
    likelihood = likelihood_of(net)
    autocast = fabric.autocast() if fabric is not None else contextlib.nullcontext()
    was_training = net.training
    net.eval()
    try:
        # The bare module, not a DDP wrapper: shards may differ by one batch, and DDP's
        # forward would wait for a partner that has finished.
        with torch.no_grad(), autocast:
            for x, labels in tqdm(loader, desc="evaluating", unit="batch", file=sys.stderr, leave=False,
                                  disable=not progress_bar_enabled()):
                x, labels = x.to(device), labels.to(device)
                log_prob = likelihood.log_prob(call_model(net, x, labels if conditional else None), x)  # (B, C, H, W)
                for c in range(channels):
                    totals[c] += -log_prob[:, c].flatten(1).sum(1).double().sum()  # nats per image, summed
                totals[-1] += len(x)
    finally:
        net.train(was_training)
    return totals

"""Network image features for the datasets layer: CNN-F fc7 activations (``image_features="cnnf-fc7"``).

``datasets.features`` declares the extractor's options and caches its output; the forward pass needs
this package's networks, so it is registered from here (``methods`` imports it) instead of being
imported by the datasets layer.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["cnnf_fc7_features"]


def cnnf_fc7_features(images, *, weights: str, input_size: int | None, device: str, batch_size: int, chunk: int,
                      progress: Callable[[int], None]) -> np.ndarray:
    """fc7 (after ReLU, eval mode) of CNN-F with MatConvNet weights, float32 ``(n, 4096)``, streamed."""
    import torch

    from methods.backbones import build_backbone
    from methods.pixels import PixelTransform, channel_stats, forward_pixels

    net = build_backbone("cnnf", weights=weights, input_size=input_size)
    dev = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    mean, std = net.pixel_mean, net.pixel_std
    if mean is None:  # a weights file without normalisation: the images' own channel statistics
        mean, std = channel_stats(images)
    transform = PixelTransform(net.input_size, mean=mean, std=std)
    n = len(images)
    out = np.empty((n, int(net.out_features)), dtype=np.float32)
    for start in range(0, n, chunk):  # chunked only to move the progress bar
        idx = np.arange(start, min(n, start + chunk))
        out[idx] = forward_pixels(net, images, dev, transform, batch_size=batch_size, indices=idx)
        progress(idx.size)
    return out

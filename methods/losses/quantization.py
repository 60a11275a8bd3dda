"""Quantization losses: CDQ's collective quantization loss (Cao et al., AAAI 2017).

Both modalities' bottleneck vectors ``z`` are pulled towards their reconstructions ``C h`` from one
set of codebooks shared by the two modalities (composite / additive quantization)::

    Q = mean_i |z_i^x - C h_i^x|^2 + mean_i |z_i^y - C h_i^y|^2

The mean over items (rather than the paper's sum) keeps lambda independent of the batch size.
A plain function of tensors: device and dtype follow the inputs.
"""
from __future__ import annotations

import torch

__all__ = ["collective_quantization_loss"]


def collective_quantization_loss(zx: torch.Tensor, recon_x: torch.Tensor, zy: torch.Tensor,
                                 recon_y: torch.Tensor) -> torch.Tensor:
    """Mean squared residual per item of each modality to its reconstruction, summed over the two modalities."""
    return ((zx - recon_x) ** 2).sum(1).mean() + ((zy - recon_y) ** 2).sum(1).mean()

"""Max-margin losses: CHN's structured max-margin losses (Cao et al., 2016/2017) and the adaptive margin
loss on label embeddings of DVSQ (Cao et al., CVPR 2017), which CDQ offers as ``loss="margin"``.

CHN, equations cited by name (the paper's numbering could not be checked, see ``docs/methods/chn.md``)::

    cosine max-margin loss   L = sum_{s_ij} max(0, mu_c - s_ij cos(u_i, v_j)),   s_ij in {+1, -1}
    bitwise max-margin loss  Q = sum_i sum_k max(0, mu_q - |h_ik|)

Every function is a plain function of tensors: device and dtype follow the inputs.
"""
from __future__ import annotations

import torch

from methods.losses.likelihood import pair_similarity

__all__ = ["cosine_margin_loss", "bitwise_margin_loss", "chn_losses", "label_margin_loss"]


def cosine_margin_loss(u: torch.Tensor, v: torch.Tensor, signs: torch.Tensor, margin: float,
                       balanced: bool = False) -> torch.Tensor:
    """Mean over (image i, text j) pairs of max(0, margin - s_ij cos(u_i, v_j)).

    ``signs`` is the (n_u, n_v) matrix of s_ij in {+1, -1}. ``balanced`` averages the similar and
    the dissimilar pairs separately and weighs the two means equally (CHN's ``pair_weighting``
    deviation). A zero code has cosine 0 with everything (eps keeps the gradient finite there).
    """
    eps = 1e-12
    cos = (u @ v.T) / (u.norm(dim=1, keepdim=True) * v.norm(dim=1, keepdim=True).T + eps)
    hinge = torch.clamp(margin - signs * cos, min=0)
    if not balanced:
        return hinge.mean()
    pos = signs > 0
    parts = [hinge[m].mean() for m in (pos, ~pos) if bool(m.any())]
    return sum(parts) / len(parts)


def bitwise_margin_loss(h: torch.Tensor, margin: float) -> torch.Tensor:
    """Mean over items and bits of max(0, margin - |h_ik|): zero once every bit is at least margin from 0."""
    return torch.clamp(margin - h.abs(), min=0).mean()


def chn_losses(u, v, labels_u, labels_v, margin_cos: float, margin_bit: float,
               balanced: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, Q) of one batch: cosine max-margin loss on all cross-modal pairs and bitwise loss on both sides."""
    signs = 2.0 * pair_similarity(labels_u, labels_v) - 1.0
    pair = cosine_margin_loss(u, v, signs, margin_cos, balanced)
    quant = bitwise_margin_loss(u, margin_bit) + bitwise_margin_loss(v, margin_bit)
    return pair, quant


def label_margin_loss(zs, labels: torch.Tensor, vectors: torch.Tensor, margins: torch.Tensor) -> torch.Tensor:
    """DVSQ's adaptive margin loss, summed over the modalities in ``zs``.

    For each item, each positive label j and each negative label k:
    ``max(0, delta_jk - cos(v_j, z) + cos(v_k, z))``, averaged over those (item, j, k) triples, where
    ``vectors`` are the unit label embeddings v (n_labels x dim) and ``margins`` = delta =
    ``1 - cos(v_j, v_k)`` (n_labels x n_labels).
    """
    pos_neg = labels[:, :, None] * (1 - labels)[:, None, :]  # (b, L, L): j positive, k negative
    n_trip = pos_neg.sum().clamp_min(1.0)
    out = 0.0
    for z in zs:
        cos = torch.nn.functional.normalize(z, dim=1) @ vectors.T  # (b, L)
        viol = torch.relu(margins[None] - cos[:, :, None] + cos[:, None, :])
        out = out + (viol * pos_neg).sum() / n_trip
    return out

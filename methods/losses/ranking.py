"""RDCMH's ranking losses (Liu et al., AAAI 2019, Eqs. 2-5 and the relaxation above Eq. 8).

Plain functions of tensors: row k of every argument belongs to triplet k (query q, positive i,
negative j). ``f`` holds image-network outputs, ``g`` text-network outputs, ``b`` the shared codes B.
"""
from __future__ import annotations

import torch

__all__ = ["LOSSES", "CROSS_TERMS", "relaxed_hamming", "ranking_terms", "rdcmh_loss"]

LOSSES = ("linear", "hinge")
CROSS_TERMS = ("eq5", "cross")


def relaxed_hamming(a: torch.Tensor, b: torch.Tensor, n_bits: int) -> torch.Tensor:
    """dH(a, b) = (c - a^T b) / 2 on real-valued outputs, row by row (the relaxation above Eq. 8)."""
    return 0.5 * (n_bits - (a * b).sum(dim=1))


def ranking_terms(fq, fi, fj, gq, gi, gj, n_bits: int, cross_terms: str = "eq5") -> dict[str, torch.Tensor]:
    """The four delta-dH terms of Eq. 5 for a batch of triplets.

    ``"eq5"`` is Eq. 5 as printed: the xy term compares the image distance query-positive with the
    text distance query-negative (and yx the reverse), so no term compares an image output with a
    text output. Eqs. 9-10 confirm this reading (dL/dF_i contains (1 - s^xy) F_q). ``"cross"`` is
    the usual cross-modal triplet instead: ``dH(x_q, y_i) - dH(x_q, y_j)`` and
    ``dH(y_q, x_i) - dH(y_q, x_j)``.
    """
    d = relaxed_hamming
    terms = {
        "xx": d(fq, fi, n_bits) - d(fq, fj, n_bits),
        "yy": d(gq, gi, n_bits) - d(gq, gj, n_bits),
    }
    if cross_terms == "eq5":
        terms["xy"] = d(fq, fi, n_bits) - d(gq, gj, n_bits)
        terms["yx"] = d(gq, gi, n_bits) - d(fq, fj, n_bits)
    else:
        terms["xy"] = d(fq, gi, n_bits) - d(fq, gj, n_bits)
        terms["yx"] = d(gq, fi, n_bits) - d(gq, fj, n_bits)
    return terms


def rdcmh_loss(f: tuple, g: tuple, b: tuple, weights: dict[str, torch.Tensor], valid: torch.Tensor,
               n_bits: int, lam: float, loss: str = "linear", margin: float = 0.0,
               cross_terms: str = "eq5") -> torch.Tensor:
    """Eq. 4 on a mini-batch of triplets, averaged over the valid triplets.

    ``f``, ``g``, ``b``: (query, positive, negative) rows of F, G and B. ``weights``: per term
    ``1 - s_ij`` (Eq. 3; all ones for RDCMH-NW). Per triplet the loss is
    ``sum_t w_t phi(delta_t) + lam/2 sum_{a in q,i,j} (|B_a - F_a|^2 + |B_a - G_a|^2)``, whose
    gradient is Eqs. 8-10 when ``phi`` is the identity (``loss="linear"``). ``loss="hinge"`` is
    ``phi(x) = max(0, x + margin)`` (Eqs. 2-3 with a margin; margin 0 is Eqs. 2-3 as printed).
    """
    terms = ranking_terms(*f, *g, n_bits, cross_terms)
    rank = 0.0
    for name, delta in terms.items():
        phi = delta if loss == "linear" else torch.relu(delta + margin)
        rank = rank + weights[name] * phi
    quant = sum(((bb - ff) ** 2).sum(dim=1) + ((bb - gg) ** 2).sum(dim=1) for ff, gg, bb in zip(f, g, b))
    per_triplet = rank + 0.5 * lam * quant
    v = valid.to(per_triplet.dtype)
    return (per_triplet * v).sum() / v.sum().clamp(min=1.0)

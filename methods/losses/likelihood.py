"""Pairwise likelihood losses: DCMH's objective (Jiang & Li, CVPR 2017) and CDQ's adaptive cross-entropy.

Both model ``P(S_ij = 1) = sigma(Theta_ij)`` for a cross-modal pair and minimise the negative
log-likelihood ``log(1 + e^Theta) - S Theta``, always written with ``softplus`` so that no
``e^Theta`` is ever formed (no overflow for large ``Theta``, the stable form the DCMH authors
recommend). Every function is a plain function of tensors: device and dtype follow the inputs.

DCMH's objective (Eq. 2), with rows as items (the paper stores F, G, B as c x n)::

    J = sum_ij M_ij (log(1 + e^Theta_ij) - S_ij Theta_ij)    Theta_ij = 0.5 F_i . G_j  (Eq. 1-2)
        + gamma (||B - F||^2 + ||B - G||^2)                                          (quantisation)
        + eta (||F^T 1||^2 + ||G^T 1||^2)                                             (bit balance)

``M`` keeps the pairs of two labeled items (all pairs when every label is visible).
"""
from __future__ import annotations

import torch

__all__ = ["pair_similarity", "pairwise_nll", "quantization_loss", "balance_loss", "dcmh_batch_loss",
           "dcmh_objective", "adaptive_cross_entropy"]


def pair_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """S_ij = 1 when row i of ``labels_a`` and row j of ``labels_b`` share at least one label, else 0."""
    return (labels_a @ labels_b.T > 0).to(labels_a.dtype)


def pairwise_nll(theta: torch.Tensor, S: torch.Tensor, mask: torch.Tensor | None = None,
                 reduction: str = "sum") -> torch.Tensor:
    """``log(1 + e^theta) - S theta`` per pair (Eq. 2's first term, negated log-likelihood), reduced.

    ``mask`` (optional, broadcastable to ``theta``) weights each pair (0 drops it); ``reduction`` is
    ``"sum"`` (DCMH) or ``"mean"`` over all entries (CDQ).
    """
    terms = torch.nn.functional.softplus(theta) - S * theta
    if mask is not None:
        terms = mask * terms
    return terms.sum() if reduction == "sum" else terms.mean()


def quantization_loss(B: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``||B - out||^2``: DCMH's quantisation term for one modality (Eq. 2)."""
    return ((B - out) ** 2).sum()


def balance_loss(col_sums: torch.Tensor) -> torch.Tensor:
    """``||out^T 1||^2`` from the column sums of one modality's outputs: DCMH's bit-balance term (Eq. 2)."""
    return (col_sums ** 2).sum()


def dcmh_batch_loss(out_b: torch.Tensor, idx: torch.Tensor, own: torch.Tensor, other: torch.Tensor,
                    B: torch.Tensor, S_b: torch.Tensor, mask_b: torch.Tensor | None, gamma: float, eta: float,
                    cols: torch.Tensor | None = None) -> torch.Tensor:
    """The part of J that depends on one mini-batch of one network's outputs, unnormalised.

    ``out_b`` are the batch outputs (with grad) of the network being trained; ``own`` is that
    network's output buffer over all n items (F or G, already holding ``out_b`` detached at
    ``idx``); ``other`` is the other network's buffer. Its gradient w.r.t. ``out_b[k]`` is Eq. 3
    (image step) or Eq. 4 (text step): 0.5 sum_j M (sigma(Theta) - S) other_j + 2 gamma (out - B)
    + 2 eta own^T 1.

    ``cols`` (optional) restricts the pairwise sum to those items of ``other``; ``S_b`` and ``mask_b``
    then have one column per entry of ``cols``. Leaving out items whose every pair is masked (the
    unlabeled ones) is exact and saves their share of the pairwise work. ``mask_b`` may be ``None``
    (every pair visible) or broadcastable, e.g. one column per batch row.
    """
    theta = 0.5 * out_b @ (other if cols is None else other[cols]).T
    pair = pairwise_nll(theta, S_b, mask_b)
    quant = quantization_loss(B[idx], out_b)
    # Column sums over the items outside the batch are constants of this step.
    rest = own.sum(0) - own[idx].sum(0)
    balance = balance_loss(out_b.sum(0) + rest)
    return pair + gamma * quant + eta * balance


def dcmh_objective(F, G, B, S, mask, gamma: float, eta: float, chunk: int = 1024) -> float:
    """The full objective J of Eq. 2 over all training items (rows of F, G, B), as a float.

    ``S`` and ``mask`` may be callables ``(rows) -> (len(rows), n)`` so that an n x n matrix is
    never formed for large n; dense matrices are accepted for small cases and tests.
    """
    n = F.shape[0]
    pair = 0.0
    for start in range(0, n, chunk):
        rows = slice(start, min(start + chunk, n))
        theta = 0.5 * F[rows] @ G.T
        s = S(rows) if callable(S) else S[rows]
        m = mask(rows) if callable(mask) else mask[rows]
        pair += float(pairwise_nll(theta, s, m))
    quant = float(quantization_loss(B, F) + quantization_loss(B, G))
    balance = float(balance_loss(F.sum(0)) + balance_loss(G.sum(0)))
    return pair + gamma * quant + eta * balance


def adaptive_cross_entropy(zx: torch.Tensor, zy: torch.Tensor, S: torch.Tensor, alpha: float) -> torch.Tensor:
    """CDQ's adaptive cross-entropy loss, the mean over image-text pairs (i, j) of
    ``log(1 + e^(alpha <zx_i, zy_j>)) - alpha S_ij <zx_i, zy_j>``; ``alpha`` scales the inner product
    of two tanh vectors (in ``[-dim, dim]``) into the sigmoid's useful range."""
    return pairwise_nll(alpha * (zx @ zy.T), S, reduction="mean")

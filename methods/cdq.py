"""CDQ: Collective Deep Quantization (Cao, Long, Wang, Liu, AAAI 2017).

Two deep networks map images and texts into one ``dim``-dimensional space (tanh bottleneck
``z``); an adaptive cross-entropy loss on cross-modal pairs makes the inner product of an
image's and a text's ``z`` predict whether they share a label; a collective quantization loss
pulls every ``z`` of both modalities towards a sum of M codewords, one from each of M codebooks
of K codewords **shared by both modalities**. A database item is stored as its M codeword
indices (M log2 K bits); a query keeps its real-valued ``z`` and is ranked against the database
by the asymmetric quantizer distance (AQD): minus the inner product of the query with the
database item's reconstruction, computed from an (M x K) lookup table per query.

How this maps onto the Hasher contract (``methods/base.py``):

* ``encode_image`` / ``encode_text`` return the database codes: each of the M codeword indices
  written as log2 K bits (most significant first, bit 1 -> +1, bit 0 -> -1), int8 in {-1, +1};
* ``query_image`` / ``query_text`` return the real-valued bottleneck ``z`` (float32);
* ``distance(queries, database_codes)`` returns the AQD (n_queries, n_database), vectorised
  through the lookup tables (a loop over the M codebooks only, never over items).

Sources. The paper's full text was not retrievable offline when this was written. The
formulation follows the paper's abstract (inner-product distance on a common codebook with
table lookup), public summaries of the paper (Figure 1: CNN + MLP, ``fcb`` tanh bottlenecks,
adaptive cross-entropy loss, collective quantization loss; ablations CDQ-alpha, CDQ-ip, CDQ-2)
and facts of the authors' public release (caoyue10/aaai17-cdq). Because the equation numbers
could not be checked against the paper, comments name each equation by its role (adaptive
cross-entropy loss, collective quantization loss, AQD, codebook step, ICM code step).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch

from cmhcore.errors import InputError
from methods.base import Hasher
from methods.dcmh import _PIXEL_INIT
from methods.nets import (Standardizer, TextNet, TrainImages, check_image_input, check_image_params, encode_pixels,
                          forward_in_batches, is_pixels_input, make_image_net, optimizer, pixel_train_images,
                          resolve_device, resolve_image_backbone, seeded, to_tensor)

__all__ = ["CDQ", "pack_indices", "unpack_indices", "aqd_inner", "inter_codebook_products"]


# ----------------------------------------------------------------------------------------- helpers
def pack_indices(indices: np.ndarray, n_codewords: int) -> np.ndarray:
    """(n, M) codeword indices -> (n, M log2 K) int8 codes in {-1, +1}, most significant bit first."""
    bits = int(round(math.log2(n_codewords)))
    idx = np.asarray(indices, dtype=np.int64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.int64)
    on = (idx[:, :, None] >> shifts) & 1
    return (2 * on - 1).astype(np.int8).reshape(idx.shape[0], -1)


def unpack_indices(codes: np.ndarray, n_codewords: int) -> np.ndarray:
    """Inverse of :func:`pack_indices`: (n, M log2 K) codes in {-1, +1} -> (n, M) int64 indices."""
    bits = int(round(math.log2(n_codewords)))
    on = (np.asarray(codes) > 0).astype(np.int64).reshape(codes.shape[0], -1, bits)
    return on @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))


def aqd_inner(queries: np.ndarray, indices: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """AQD as a distance: ``-<q, sum_m C_m[k_m]>`` from per-query lookup tables.

    ``codebooks`` is (M, K, dim). The table ``T[q, m, k] = <q, C_m[k]>`` costs O(M K dim) per
    query; each database item then costs M look-ups and adds.
    """
    q = np.asarray(queries, dtype=np.float64)
    table = np.einsum("qd,mkd->qmk", q, codebooks)
    out = np.zeros((q.shape[0], indices.shape[0]), dtype=np.float64)
    for m in range(codebooks.shape[0]):  # M gathers of (n_q, n_db); no loop over items
        out += table[:, m, :][:, indices[:, m]]
    return -out


def inter_codebook_products(indices: np.ndarray, codebooks: np.ndarray) -> np.ndarray:
    """Per item ``sum_{m != m'} <C_m[k_m], C_m'[k_m']>`` (the near-orthogonality term of composite quantization)."""
    sel = codebooks[np.arange(codebooks.shape[0])[None, :], indices]  # (n, M, dim)
    total = sel.sum(axis=1)
    return (total * total).sum(axis=1) - (sel * sel).sum(axis=(1, 2))


def _code_gram(indices: np.ndarray, n_codewords: int, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``H^T H`` and ``H^T Z`` for the one-hot code matrix ``H`` (n x MK) without forming ``H``.

    ``H^T H`` counts how often codeword pairs occur together: one bincount per codebook.
    """
    n, m_books = indices.shape
    width = m_books * n_codewords
    cols = indices + np.arange(m_books)[None, :] * n_codewords  # (n, M) columns of H
    gram = np.empty((width, width))
    for m in range(m_books):
        keys = (indices[:, m:m + 1] * width + cols).ravel()
        gram[m * n_codewords:(m + 1) * n_codewords] = np.bincount(keys, minlength=n_codewords * width).reshape(
            n_codewords, width)
    rhs = np.empty((width, z.shape[1]))
    for m in range(m_books):  # sum of the z assigned to each codeword of codebook m
        assign = sp.csr_matrix((np.ones(n), (indices[:, m], np.arange(n))), shape=(n_codewords, n))
        rhs[m * n_codewords:(m + 1) * n_codewords] = assign @ z
    return gram, rhs


def _icm(z: np.ndarray, codebooks: np.ndarray, sweeps: int, init: np.ndarray | None = None,
         ortho_weight: float = 0.0, epsilon: float = 0.0) -> np.ndarray:
    """Iterated conditional modes for the codes (the paper's code update).

    For each codebook in turn, with the other M-1 choices fixed, pick the codeword that
    minimises ``|z - sum_m C_m[k_m]|^2`` (+ the near-orthogonality penalty when
    ``ortho_weight > 0``). Each item is solved on its own, so encoding a batch equals encoding
    its rows one at a time. Without ``init`` the first sweep is greedy from the empty sum.
    """
    m_books = codebooks.shape[0]
    z = np.asarray(z, dtype=np.float64)
    n = z.shape[0]
    sq = (codebooks * codebooks).sum(axis=2)  # (M, K) codeword squared norms
    if init is None:
        idx = np.zeros((n, m_books), dtype=np.int64)
        chosen = np.zeros((n, m_books), dtype=bool)
        recon = np.zeros_like(z)
    else:
        idx = np.array(init, dtype=np.int64)
        chosen = np.ones((n, m_books), dtype=bool)
        recon = codebooks[np.arange(m_books)[None, :], idx].sum(axis=1)
    for _ in range(max(1, sweeps)):
        for m in range(m_books):
            have = chosen[:, m]
            others = recon - np.where(have[:, None], codebooks[m][idx[:, m]], 0.0)
            resid = z - others
            # |resid - c_k|^2 up to the per-item constant |resid|^2.
            score = sq[m][None, :] - 2.0 * resid @ codebooks[m].T
            if ortho_weight > 0:
                other_sq = np.where(chosen, sq[np.arange(m_books)[None, :], idx], 0.0).sum(axis=1)
                other_sq -= np.where(have, sq[m][idx[:, m]], 0.0)
                base = (others * others).sum(axis=1) - other_sq
                cross = base[:, None] + 2.0 * others @ codebooks[m].T
                score = score + ortho_weight * (cross - epsilon) ** 2
            best = np.argmin(score, axis=1)
            idx[:, m] = best
            chosen[:, m] = True
            recon = others + codebooks[m][best]
    return idx


# ------------------------------------------------------------------------------------------- CDQ
class CDQ(Hasher):
    """Collective Deep Quantization (Cao et al., AAAI 2017) with AQD retrieval.

    Objective (the paper's overall objective, ``min L + lambda Q``):

    * ``L`` adaptive cross-entropy loss on image-text pairs ``(i, j)``:
      ``log(1 + exp(alpha <z_i^x, z_j^y>)) - alpha s_ij <z_i^x, z_j^y>`` with ``s_ij = 1`` when
      the two items share a label; ``alpha`` widens the sigmoid's useful range because the
      inner product of two tanh vectors lies in ``[-dim, dim]``;
    * ``Q`` collective quantization loss: ``sum_i |z_i^x - C h_i^x|^2 + |z_i^y - C h_i^y|^2`` with
      one codebook matrix ``C = [C_1 .. C_M]`` shared by both modalities and one-hot blocks
      ``h_mi`` (composite / additive quantization);
    * retrieval: ``AQD(q, i) = -sum_m <z_q, C_m h_mi>`` (inner product, lookup tables).

    Alternating optimisation, as in the paper: the networks by mini-batch SGD (back-propagation
    of ``L + lambda Q`` with codes and codebooks fixed); the codebooks in closed form
    (least squares, ``C = (H^T H + 1e-3 I)^{-1} H^T Z`` over both modalities' ``z`` and codes);
    the codes by ICM, one codebook at a time.

    Code length: ``n_bits = M log2 K``. With the default ``K = 256``: 16 bits -> M = 2,
    32 -> M = 4, 64 -> M = 8, 128 -> M = 16. Any ``n_bits`` in ``bits_range`` that is a multiple
    of ``log2 K`` is valid; others raise :class:`InputError` before any work.

    Choices the paper leaves open, and what we chose:

    * networks: the suite's shared :class:`~methods.nets.ImageNet` (on raw pixels CNN-F up to fc7,
      standing in for the paper's ImageNet-pretrained AlexNet, pretrained only with
      ``image_weights``; on feature vectors an MLP trunk + fc7) and
      :class:`~methods.nets.TextNet`, whose last layer is the paper's ``fcb`` bottleneck of
      ``dim`` units followed by tanh; feature inputs standardised with training statistics,
      pixels normalised by the weights file's average image or the training images' channel
      statistics and read batch by batch (every full pass over the images streams);
    * ``dim = 128`` (the authors' release trains 128-unit bottlenecks); ``alpha = 10 / dim``
      (maps the inner-product range to ``[-10, 10]``); ``quant_weight = lambda = 0.003`` (the
      value in the authors' run script); SGD with momentum 0.9 and batch 64 (the release);
      the image net's last layer at 10x its learning rate (the release); step decay x0.5 every
      5 epochs; 12 epochs (set by the 60 s Wiki time budget, not tuned);
    * chosen on a validation split (80/20, seeded) of Wiki's *training* items at 32 bits:
      learning rates 0.02 (image) / 0.2 (text) over 0.005/0.05 and 0.05/0.5 (I->T 0.265 vs
      0.213 and 0.246); alpha = 10/dim over alpha = 1 (alpha = 1 saturates the sigmoid and
      collapsed to the floor, 0.11). On the same split lambda = 0 scored higher than 0.003
      (0.287/0.248 vs 0.265/0.235 I->T/T->I) and 0.03 or 0.3 lower; we keep the authors'
      0.003 because lambda = 0 is the two-step CDQ-2 ablation, not CDQ;
    * pairs for ``L``: every image-text pair inside a mini-batch (batch x batch), both items
      labeled; the loss is averaged over those pairs;
    * schedule: epoch 0 trains the networks with ``lambda = 0``; the codebooks are then
      initialised by k-means on ``M`` disjoint coordinate blocks of all ``z`` of both modalities
      (block-diagonal ``C``, like product quantization); before every later epoch the codes (ICM,
      warm-started, ``icm_sweeps`` sweeps) and then ``C`` (closed form) are updated from the
      ``z`` of all training items computed in eval mode (no dropout); one last code/codebook
      update follows the last epoch;
    * encoding a new database item: ICM from the empty sum (greedy first sweep) with
      ``icm_sweeps`` sweeps, per item, so batch encoding equals one-by-one encoding.

    Partial labels: ``L`` uses only pairs of labeled items; unlabeled items still shape the
    networks through ``lambda Q`` (their ``z`` is pulled towards its codewords) and take part in
    every code and codebook update. Masked label rows are never read.

    Deviations from the paper (and additions the paper does not have):

    * CNN-F instead of AlexNet (see networks above);
    * ``loss="margin"`` is *not* CDQ: it replaces ``L`` by the adaptive margin loss with label
      embeddings of the same authors' DVSQ (CVPR 2017), for users who want label-embedding
      supervision: for each labeled item and each (positive label j, negative label k),
      ``max(0, delta_jk - cos(v_j, z) + cos(v_k, z))`` with ``delta_jk = 1 - cos(v_j, v_k)``,
      averaged over those triples. ``label_embeddings`` (n_labels x dim) are user supplied
      (e.g. word2vec of the label names); the default, needing nothing external, is seeded random
      orthonormal vectors (random unit vectors when n_labels > dim), i.e. every margin is 1;
    * ``ortho_weight > 0`` adds composite quantization's near-orthogonality penalty
      ``mu sum_i (sum_{m != m'} <C_m h_mi, C_m' h_m'i> - epsilon)^2`` with a learned ``epsilon``
      (its closed-form update is the mean inter-codebook term). The paper ranks by inner products,
      for which the lookup table is exact without it, so the default is 0 (off), as in the
      authors' release. With it on, the codebook step is the closed-form solution refined by
      L-BFGS on the penalised objective, and ICM includes the penalty.

    Parameters
    ----------
    n_bits : int
        Code length ``M log2 K``.
    n_codewords : int
        K, codewords per codebook (a power of two, >= 2).
    dim : int
        Bottleneck (common space) dimension; must be >= M.
    alpha : float or None
        Adaptive cross-entropy coefficient; ``None`` means ``10 / dim``.
    quant_weight : float
        lambda, weight of the collective quantization loss.
    n_epochs, batch_size, lr_image, lr_text, lr_decay, decay_every, momentum
        SGD schedule; the image net's last layer learns at 10 x ``lr_image`` (as the release).
    icm_sweeps : int
        ICM sweeps per code update.
    hidden, dropout : network width and dropout (shared networks; on pixels ``hidden`` is the text
        side's only, CNN-F's fc6/fc7 being 4096 wide).
    image_backbone, image_weights, image_size, freeze_backbone :
        "auto": CNN-F on raw uint8 images (n, H, W, 3), the MLP trunk on feature vectors. Pixels
        only: weights file, input size (None = the file's or 224), frozen trunk.
    loss : {"cross_entropy", "margin"}
        ``"cross_entropy"`` is CDQ; ``"margin"`` is the DVSQ-style label-embedding variant.
    label_embeddings : array (n_labels, dim) or None
        Only used by ``loss="margin"``.
    ortho_weight : float
        Near-orthogonality penalty weight (0 = off, the paper's setting for inner-product AQD).
    device : str
        'cpu', 'cuda', 'cuda:N' or 'auto'.
    random_state : int or None
    """

    bits_range: ClassVar[tuple[int, int]] = (8, 1024)
    needs_labels: ClassVar[bool] = True
    accepts_pixels: ClassVar[bool] = True
    # Smaller nets and codebooks for the 300-item check data; more, smaller batches so SGD gets
    # enough steps on so few items.
    check_params: ClassVar[dict[str, Any]] = {
        "n_codewords": 16, "dim": 32, "hidden": 128, "n_epochs": 20, "batch_size": 32, "decay_every": 10,
    }

    pixel_check_params: ClassVar[dict[str, Any]] = {"image_size": 40, "n_epochs": 2}  # CNN-F, smallest input
    known_check_failures = {name: _PIXEL_INIT for name in ("pixels_codes_format", "pixels_beats_random_floor")}

    def __init__(self, n_bits: int = 32, n_codewords: int = 256, dim: int = 128, alpha: float | None = None,
                 quant_weight: float = 0.003, n_epochs: int = 12, batch_size: int = 64,
                 lr_image: float = 0.02, lr_text: float = 0.2, lr_decay: float = 0.5, decay_every: int = 5,
                 momentum: float = 0.9, icm_sweeps: int = 3, hidden: int = 4096, dropout: float = 0.5,
                 loss: str = "cross_entropy", label_embeddings=None, ortho_weight: float = 0.0,
                 image_backbone: str = "auto", image_weights=None, image_size: int | None = None,
                 freeze_backbone: bool = False, device: str = "cpu", random_state: int | None = 0):
        self.n_bits = n_bits
        self.n_codewords = n_codewords
        self.dim = dim
        self.alpha = alpha
        self.quant_weight = quant_weight
        self.n_epochs = n_epochs
        self.batch_size = batch_size
        self.lr_image = lr_image
        self.lr_text = lr_text
        self.lr_decay = lr_decay
        self.decay_every = decay_every
        self.momentum = momentum
        self.icm_sweeps = icm_sweeps
        self.hidden = hidden
        self.dropout = dropout
        self.loss = loss
        self.label_embeddings = label_embeddings
        self.ortho_weight = ortho_weight
        self.image_backbone = image_backbone
        self.image_weights = image_weights
        self.image_size = image_size
        self.freeze_backbone = freeze_backbone
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------------------ validation
    def _validate_params(self) -> tuple[int, int]:
        """Check every parameter before any work; returns (M, bits per codebook)."""
        check_image_params("CDQ", self.image_backbone, self.image_weights, self.image_size, self.freeze_backbone)
        k = self.n_codewords
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 2 or (k & (k - 1)):
            raise InputError(f"n_codewords={k!r} is invalid; valid: a power of two >= 2 (e.g. 256)")
        per = int(k).bit_length() - 1
        bits = self.n_bits
        lo, hi = self.bits_range
        if (isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi
                or bits % per):
            raise InputError(
                f"n_bits={bits!r} is not supported by CDQ with n_codewords={k}; valid: a multiple of "
                f"log2(K)={per} in [{lo}, {hi}] (n_bits = M log2 K)")
        m = int(bits) // per
        for name in ("dim", "n_epochs", "batch_size", "icm_sweeps", "hidden", "decay_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise InputError(f"{name}={v!r} is invalid; valid: an integer >= 1")
        if m > self.dim:
            raise InputError(f"dim={self.dim} is smaller than the number of codebooks M={m}; valid: dim >= M")
        for name in ("quant_weight", "lr_image", "lr_text", "ortho_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not v >= 0 or not math.isfinite(v):
                raise InputError(f"{name}={v!r} is invalid; valid: a finite number >= 0")
        if self.alpha is not None and (not isinstance(self.alpha, (int, float, np.floating)) or not self.alpha > 0
                                       or not math.isfinite(self.alpha)):
            raise InputError(f"alpha={self.alpha!r} is invalid; valid: None (10/dim) or a finite number > 0")
        if not (0 <= self.dropout < 1):
            raise InputError(f"dropout={self.dropout!r} is invalid; valid: [0, 1)")
        if not (0 < self.lr_decay <= 1) or not (0 <= self.momentum < 1):
            raise InputError(f"lr_decay={self.lr_decay!r}, momentum={self.momentum!r}; valid: lr_decay in (0, 1], momentum in [0, 1)")
        if self.loss not in ("cross_entropy", "margin"):
            raise InputError(f"loss={self.loss!r} is invalid; valid: 'cross_entropy' (CDQ) or 'margin' (DVSQ-style)")
        return m, per

    def _label_vectors(self, n_labels: int) -> np.ndarray:
        if self.label_embeddings is None:
            rng = np.random.default_rng(self.random_state)
            g = rng.standard_normal((self.dim, n_labels))
            if n_labels <= self.dim:
                q, r = np.linalg.qr(g)
                return (q * np.sign(np.diag(r))).T  # orthonormal rows, sign-fixed so the draw is unique
            return (g / np.linalg.norm(g, axis=0)).T
        v = np.asarray(self.label_embeddings, dtype=np.float64)
        if v.ndim != 2 or v.shape != (n_labels, self.dim) or not np.isfinite(v).all():
            raise InputError(
                f"label_embeddings: expected a finite array of shape (n_labels={n_labels}, dim={self.dim}), got {v.shape}")
        norms = np.linalg.norm(v, axis=1)
        if (norms == 0).any():
            raise InputError(f"label_embeddings: {int((norms == 0).sum())} row(s) are all zero; every label needs a direction")
        return v

    # ------------------------------------------------------------------------------ training
    def fit(self, image, text, labels, labeled=None):
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        m_books, _ = self._validate_params()
        backbone = resolve_image_backbone("CDQ", self.image_backbone, image)
        pixels = is_pixels_input(image)
        n = image.shape[0]
        k = int(self.n_codewords)
        if k > 2 * n:
            raise InputError(f"n_codewords={k} exceeds the {2 * n} training vectors (2 per item); use fewer codewords")
        vectors = self._label_vectors(labels.shape[1]) if self.loss == "margin" else None
        dev = resolve_device(self.device)
        alpha = float(self.alpha) if self.alpha is not None else 10.0 / self.dim
        rng = np.random.default_rng(self.random_state)

        self.image_scaler_ = None if pixels else Standardizer().fit(image)
        self.text_scaler_ = Standardizer().fit(text)
        img_all = None if pixels else self.image_scaler_.transform(image)
        txt_sparse = sp.issparse(text)
        txt_all = None if txt_sparse else self.text_scaler_.transform(text)

        def text_rows(rows):
            return self.text_scaler_.transform(text[rows]) if txt_sparse else txt_all[rows]

        with seeded(self.random_state):
            inet = make_image_net(backbone, None if pixels else image.shape[1], self.dim, hidden=self.hidden,
                                  dropout=self.dropout, weights=self.image_weights, image_size=self.image_size,
                                  freeze=self.freeze_backbone).to(dev)
            self.pixel_mean_ = self.pixel_std_ = self.image_size_ = None
            if pixels:
                img_all, self.pixel_mean_, self.pixel_std_, self.image_size_ = pixel_train_images(
                    image, inet.backbone, dev)
            tnet = TextNet(text.shape[1], self.dim, hidden=self.hidden, dropout=self.dropout).to(dev)
            gen = torch.Generator(device="cpu").manual_seed(int(rng.integers(2 ** 31)))
            opt = optimizer("sgd", [
                {"params": [p for n_, p in inet.named_parameters() if not n_.startswith("fc8") and p.requires_grad],
                 "lr": self.lr_image},
                {"params": inet.fc8.parameters(), "lr": 10 * self.lr_image},
                {"params": tnet.parameters(), "lr": self.lr_text},
            ], dev, lr=self.lr_image, momentum=self.momentum)
            base_lrs = [g["lr"] for g in opt.param_groups]

            lab_t = torch.as_tensor(labels.astype(np.float32), device=dev)
            labeled_t = torch.as_tensor(labeled, device=dev)
            vec_t = None
            if vectors is not None:
                vn = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
                vec_t = torch.as_tensor(vn, dtype=torch.float32, device=dev)
                margins_t = 1.0 - vec_t @ vec_t.T

            codebooks = None
            codes_img = codes_txt = None
            self.epsilon_ = 0.0
            history = []
            for epoch in range(self.n_epochs):
                if epoch >= 1:
                    z_img, z_txt = self._train_embeddings(inet, tnet, img_all, text_rows, n, dev)
                    if codebooks is None:
                        codebooks = self._init_codebooks(np.vstack([z_img, z_txt]), m_books, k, rng)
                    codebooks, codes_img, codes_txt = self._update_codes_and_codebooks(
                        z_img, z_txt, codebooks, codes_img, codes_txt)
                    cb_t = torch.as_tensor(codebooks.reshape(-1, self.dim), dtype=torch.float32, device=dev)
                for g, base in zip(opt.param_groups, base_lrs):
                    g["lr"] = base * self.lr_decay ** (epoch // self.decay_every)
                lam = self.quant_weight if epoch >= 1 else 0.0
                inet.train()
                tnet.train()
                order = torch.randperm(n, generator=gen).numpy()
                total = 0.0
                row_batches = [np.sort(order[start:start + self.batch_size]) for start in range(0, n, self.batch_size)]
                if pixels:
                    image_batches = img_all.batches(row_batches)
                else:
                    image_batches = (to_tensor(img_all[rows], dev) for rows in row_batches)
                for rows, image_rows in zip(row_batches, image_batches):
                    zx = torch.tanh(inet(image_rows))
                    zy = torch.tanh(tnet(to_tensor(text_rows(rows), dev)))
                    lab_rows = torch.as_tensor(rows, device=dev)
                    if self.loss == "cross_entropy":
                        sup = self._cross_entropy(zx, zy, lab_t[lab_rows], labeled_t[lab_rows], alpha)
                    else:
                        sup = self._margin(zx, zy, lab_t[lab_rows], labeled_t[lab_rows], vec_t, margins_t)
                    loss = sup
                    if lam > 0:
                        rx = self._reconstruct_t(cb_t, codes_img[rows], k, dev)
                        ry = self._reconstruct_t(cb_t, codes_txt[rows], k, dev)
                        # Collective quantization loss (shared C), mean squared residual per item.
                        q = ((zx - rx) ** 2).sum(1).mean() + ((zy - ry) ** 2).sum(1).mean()
                        loss = loss + lam * q
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(rows)
                history.append(total / n)
            # One last alternation so that C matches the final networks.
            z_img, z_txt = self._train_embeddings(inet, tnet, img_all, text_rows, n, dev)
            if codebooks is None:
                codebooks = self._init_codebooks(np.vstack([z_img, z_txt]), m_books, k, rng)
            codebooks, codes_img, codes_txt = self._update_codes_and_codebooks(z_img, z_txt, codebooks, codes_img, codes_txt)

        inet.eval()
        tnet.eval()
        self.image_net_ = inet
        self.text_net_ = tnet
        self.device_ = dev
        self.codebooks_ = codebooks
        self.n_codebooks_ = m_books
        self.n_features_ = (None if pixels else image.shape[1], text.shape[1])
        self.loss_history_ = history
        self.label_vectors_ = vectors
        return self

    @staticmethod
    def _cross_entropy(zx, zy, lab, lab_ok, alpha):
        """Adaptive cross-entropy loss on all labeled image-text pairs of the batch."""
        keep = lab_ok.nonzero().flatten()
        if keep.numel() < 1:
            return zx.sum() * 0.0
        ip = alpha * (zx[keep] @ zy[keep].T)
        s = ((lab[keep] @ lab[keep].T) > 0).float()
        # log(1 + e^t) - s t, written with softplus for stability (no clipping needed).
        return (torch.nn.functional.softplus(ip) - s * ip).mean()

    @staticmethod
    def _margin(zx, zy, lab, lab_ok, vec, margins):
        """DVSQ-style adaptive margin loss on label embeddings (not part of CDQ), both modalities."""
        keep = lab_ok.nonzero().flatten()
        if keep.numel() < 1:
            return zx.sum() * 0.0
        y = lab[keep]
        pos_neg = y[:, :, None] * (1 - y)[:, None, :]  # (b, L, L): j positive, k negative
        n_trip = pos_neg.sum().clamp_min(1.0)
        out = 0.0
        for z in (zx[keep], zy[keep]):
            cos = torch.nn.functional.normalize(z, dim=1) @ vec.T  # (b, L)
            viol = torch.relu(margins[None] - cos[:, :, None] + cos[:, None, :])
            out = out + (viol * pos_neg).sum() / n_trip
        return out

    @staticmethod
    def _reconstruct_t(cb_t, idx, k, dev):
        flat = torch.as_tensor(idx + np.arange(idx.shape[1])[None, :] * k, device=dev)
        return cb_t[flat].sum(1)

    def _train_embeddings(self, inet, tnet, img_all, text_rows, n, dev):
        if isinstance(img_all, TrainImages):  # raw pixels: one streamed pass
            z_img = np.tanh(img_all.forward(inet).cpu().numpy()).astype(np.float64)
        else:
            z_img = np.tanh(forward_in_batches(inet, img_all, dev)).astype(np.float64)
        rows = np.arange(n)
        z_txt = np.tanh(forward_in_batches(tnet, rows, dev, transform=text_rows)).astype(np.float64)
        return z_img, z_txt

    def _init_codebooks(self, z_all: np.ndarray, m_books: int, k: int, rng) -> np.ndarray:
        """k-means on M disjoint coordinate blocks -> block-diagonal initial codebooks (M, K, dim)."""
        from sklearn.cluster import KMeans

        blocks = np.array_split(np.arange(self.dim), m_books)
        cb = np.zeros((m_books, k, self.dim))
        for m, cols in enumerate(blocks):
            km = KMeans(n_clusters=k, n_init=1, max_iter=50, random_state=int(rng.integers(2 ** 31)))
            cb[m][:, cols] = km.fit(z_all[:, cols]).cluster_centers_
        return cb

    def _update_codes_and_codebooks(self, z_img, z_txt, codebooks, codes_img, codes_txt):
        sweeps, mu = int(self.icm_sweeps), float(self.ortho_weight)
        codes_img = _icm(z_img, codebooks, sweeps, codes_img, mu, self.epsilon_)
        codes_txt = _icm(z_txt, codebooks, sweeps, codes_txt, mu, self.epsilon_)
        z_all = np.vstack([z_img, z_txt])
        idx_all = np.vstack([codes_img, codes_txt])
        codebooks = self._solve_codebooks(z_all, idx_all, codebooks.shape[0], codebooks.shape[1])
        if mu > 0:
            codebooks, self.epsilon_ = self._refine_near_orthogonal(z_all, idx_all, codebooks, mu)
        return codebooks, codes_img, codes_txt

    def _solve_codebooks(self, z_all, idx_all, m_books, k):
        """Closed-form codebook step: C = (H^T H + 1e-3 I)^{-1} H^T Z (both modalities stacked)."""
        gram, rhs = _code_gram(idx_all, k, z_all)
        gram[np.diag_indices_from(gram)] += 1e-3
        c = np.linalg.solve(gram, rhs)
        return c.reshape(m_books, k, self.dim)

    def _refine_near_orthogonal(self, z_all, idx_all, codebooks, mu):
        """Codebook step with the near-orthogonality penalty: epsilon in closed form, C by L-BFGS."""
        eps = float(inter_codebook_products(idx_all, codebooks).mean())
        cb = torch.tensor(codebooks, dtype=torch.float64, requires_grad=True)
        z = torch.as_tensor(z_all, dtype=torch.float64)
        idx = torch.as_tensor(idx_all)
        books = torch.arange(codebooks.shape[0])[None, :]
        opt = torch.optim.LBFGS([cb], max_iter=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            sel = cb[books, idx]
            recon = sel.sum(1)
            cross = (recon * recon).sum(1) - (sel * sel).sum((1, 2))
            obj = ((z - recon) ** 2).sum() + mu * ((cross - eps) ** 2).sum()
            obj.backward()
            return obj

        opt.step(closure)
        codebooks = cb.detach().numpy()
        return codebooks, float(inter_codebook_products(idx_all, codebooks).mean())

    # ------------------------------------------------------------------------------ encoding
    def _embed(self, x, modality: str) -> np.ndarray:
        self._check_fitted("codebooks_")
        which = 0 if modality == "image" else 1
        x = self._validate_encode(x, modality, self.n_features_[which])
        net = self.image_net_ if which == 0 else self.text_net_
        scaler = self.image_scaler_ if which == 0 else self.text_scaler_
        if which == 0:
            check_image_input("CDQ", x, self.image_size_ is not None)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if which == 0 and self.image_size_ is not None:
            return np.tanh(encode_pixels(net, x, self.device_, self.image_size_, self.pixel_mean_, self.pixel_std_,
                                         self.dim))
        return np.tanh(forward_in_batches(net, x, self.device_, transform=scaler.transform))

    def _encode(self, x, modality: str) -> np.ndarray:
        z = self._embed(x, modality)
        idx = _icm(z, self.codebooks_, int(self.icm_sweeps), None, float(self.ortho_weight), self.epsilon_)
        return pack_indices(idx, int(self.n_codewords))

    def encode_image(self, image) -> np.ndarray:
        """Database codes of images: the M codeword indices as M log2 K bits in {-1, +1}."""
        return self._encode(image, "image")

    def encode_text(self, text) -> np.ndarray:
        """Database codes of texts: the M codeword indices as M log2 K bits in {-1, +1}."""
        return self._encode(text, "text")

    def query_image(self, image) -> np.ndarray:
        """An image query is its real-valued bottleneck z (not quantised: the AQD is asymmetric)."""
        return self._embed(image, "image")

    def query_text(self, text) -> np.ndarray:
        """A text query is its real-valued bottleneck z (not quantised: the AQD is asymmetric)."""
        return self._embed(text, "text")

    def database_indices(self, database_codes) -> np.ndarray:
        """(n, M) codeword indices of database codes returned by ``encode_*``."""
        self._check_fitted("codebooks_")
        codes = np.asarray(database_codes)
        if codes.ndim != 2 or codes.shape[1] != self.n_bits or not np.isin(codes, (-1, 1)).all():
            raise InputError(f"database_codes: expected a (n, {self.n_bits}) array of -1/+1 codes from encode_image/encode_text, "
                             f"got shape {codes.shape}")
        return unpack_indices(codes, int(self.n_codewords))

    def reconstruct(self, database_codes) -> np.ndarray:
        """The quantised vectors ``sum_m C_m[k_m]`` of database codes (n, dim)."""
        idx = self.database_indices(database_codes)
        return self.codebooks_[np.arange(self.n_codebooks_)[None, :], idx].sum(axis=1)

    def distance(self, queries, database_codes) -> np.ndarray:
        """AQD (n_queries, n_database): minus the inner product of each query z with each database
        item's reconstruction, by lookup tables. Smaller = closer."""
        self._check_fitted("codebooks_")
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim or q.dtype.kind not in "fiu" or not np.isfinite(q).all():
            raise InputError(f"queries: expected finite (n, {self.dim}) embeddings from query_image/query_text, got shape {q.shape}")
        return aqd_inner(q, self.database_indices(database_codes), self.codebooks_)

"""RDCMH: Ranking-based Deep Cross-Modal Hashing (Liu, Yu, Domeniconi, Wang, Ren, Guo; AAAI 2019).

This is the suite's reference implementation (there is no public one). The method, in the paper's
terms:

1. Eq. 1: a semi-supervised similarity per modality (feature cosine, corrected by label cosine
   where both items are labeled), averaged across modalities into S^xy = S^yx;
2. each training item's ranking list by S^xy is cut into 5 bins and triplets
   (query, positive, negative) are drawn from different bins;
3. Eqs. 2-7: a weighted triplet ranking loss on relaxed Hamming distances with four terms
   (xx, yy, xy, yx) plus the quantisation loss towards one shared code matrix B;
4. Algorithm 1 / Eqs. 8-12: alternate SGD steps on the image network and the text network, then
   ``B = sign(lambda (F + G))``.

The similarity, the bins and the sampler live in :mod:`methods._triplets`; this module holds the
loss, the optimisation and the hashers (RDCMH and the four ablations of Fig. 3).
"""
from __future__ import annotations

import itertools
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from cmhcore.errors import InputError
from methods._triplets import SemiSupervisedSimilarity, sample_triplets
from methods.base import Hasher, binarize
from methods.dcmh import _PIXEL_INIT
from methods.nets import (Standardizer, TextNet, TrainImages, check_image_input, check_image_params, encode_pixels,
                          forward_in_batches, is_pixels_input, make_image_net, optimizer, pixel_normalisation,
                          pixel_transform, resolve_device, resolve_image_backbone, seeded)

__all__ = ["RDCMH", "RDCMH_NW", "RDCMH_ND", "RDCMH_NS", "RDCMH_NJ", "relaxed_hamming", "ranking_terms",
           "rdcmh_loss", "update_codes"]

LOSSES = ("linear", "hinge")
CROSS_TERMS = ("eq5", "cross")


# ------------------------------------------------------------------------------------------ loss
def relaxed_hamming(a: torch.Tensor, b: torch.Tensor, n_bits: int) -> torch.Tensor:
    """dH(a, b) = (c - a^T b) / 2 on real-valued outputs, row by row (the relaxation above Eq. 8)."""
    return 0.5 * (n_bits - (a * b).sum(dim=1))


def ranking_terms(fq, fi, fj, gq, gi, gj, n_bits: int, cross_terms: str = "eq5") -> dict[str, torch.Tensor]:
    """The four delta-dH terms of Eq. 5 for a batch of triplets (f: image outputs, g: text outputs).

    ``"eq5"`` is Eq. 5 as printed: the xy term compares the image distance query-positive with the
    text distance query-negative (and yx the reverse). Eqs. 9-10 confirm this reading (dL/dF_i
    contains (1 - s^xy) F_q). ``"cross"`` is the usual cross-modal triplet instead:
    ``dH(x_q, y_i) - dH(x_q, y_j)`` and ``dH(y_q, x_i) - dH(y_q, x_j)``.
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


def update_codes(f: torch.Tensor, g: torch.Tensor, lam: float) -> torch.Tensor:
    """Eq. 12: B = sign(lam (F + G)), with 0 -> +1 so codes are never ternary."""
    u = lam * (f + g)
    return torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))


# -------------------------------------------------------------------------------------- helpers
class _LinearHash(nn.Module):
    """RDCMH-ND's hash function: one affine map of the (standardised) hand-crafted features, or of
    the normalised pixels (flattened) when the image side is raw images."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)

    def forward(self, x):
        return self.fc(x.flatten(1))  # a no-op on feature rows


def _check_int(name: str, value, lo: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < lo:
        raise InputError(f"{name}={value!r} is invalid; valid: an integer >= {lo}")
    return int(value)


def _check_float(name: str, value, lo: float, hi: float = np.inf, lo_open: bool = False, hi_open: bool = False):
    ok = isinstance(value, (int, float, np.floating, np.integer)) and not isinstance(value, bool)
    if ok:
        value = float(value)
        above = value > lo if lo_open else value >= lo
        below = value < hi if hi_open else value <= hi
        ok = np.isfinite(value) and above and below
    if not ok:
        lb, rb = "(" if lo_open else "[", ")" if hi_open else "]"
        raise InputError(f"{name}={value!r} is invalid; valid: a number in {lb}{lo}, {hi}{rb}")
    return float(value)


def _with_inputs(batches, images: TrainImages, window: int = 256):
    """``(tb, weights, image inputs)`` for each triplet batch of ``batches``.

    Pixels: batches are drawn ``window`` at a time (the sampler uses only its own generator, so the
    draws do not depend on training) and their images are prefetched by the feeder's workers
    while the steps run. Features: rows of the tensor, one batch at a time.
    """
    if not images.is_pixels:
        for tb, weights in batches:
            yield tb, weights, images[torch.cat([tb.q, tb.i, tb.j])]
        return
    while True:
        chunk = list(itertools.islice(batches, window))
        if not chunk:
            return
        inputs = images.batches([torch.cat([tb.q, tb.i, tb.j]) for tb, _ in chunk])
        for (tb, weights), x in zip(chunk, inputs):
            yield tb, weights, x


def _with_rows(draws, images: TrainImages, window: int = 256):
    """``(idx, image inputs)`` for each index batch of ``draws`` (pixels: drawn ahead and prefetched)."""
    if not images.is_pixels:
        for idx in draws:
            yield idx, images[idx]
        return
    while True:
        chunk = list(itertools.islice(draws, window))
        if not chunk:
            return
        yield from zip(chunk, images.batches(chunk))


def _first_occurrence(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique indices and the position of their first occurrence (so buffer writes are deterministic)."""
    uniq, first = np.unique(idx, return_index=True)
    return uniq, first


# -------------------------------------------------------------------------------------- hashers
class RDCMH(Hasher):
    """Ranking-based Deep Cross-Modal Hashing (Liu et al., AAAI 2019).

    Parameters
    ----------
    n_bits : int
        Code length c.
    lam : float
        lambda of Eq. 4 (quantisation weight). Default 0.1, chosen on validation: the paper's 1
        collapses every bit to a constant in our normalisation (see ``validation_selection``).
    n_iter : int
        Iterations of Algorithm 1 (paper: 500). One iteration = one mini-batch of ``batch_size``
        triplets, one optimiser step on the image network (text network and B fixed), one on the
        text network (image network and B fixed) on the same triplets, then Eq. 12 for B.
    batch_size : int
        Triplets per mini-batch (paper: 128).
    n_bins : int
        Bins of each ranking list (paper: 5).
    loss : {"linear", "hinge"}
        Reading of the ranking loss (see below). ``margin`` is the hinge's margin as a fraction
        of ``n_bits`` (only with ``loss="hinge"``).
    cross_terms : {"eq5", "cross"}
        Reading of Eq. 5's xy / yx terms (see :func:`ranking_terms`).
    image_backbone, image_hidden, text_hidden, dropout :
        Networks from :mod:`methods.nets`. ``image_backbone="auto"``: on feature vectors "mlp" (an
        MLP standing in for CNN-F's trunk) -> fc7 (``image_hidden``, ReLU, dropout) -> fc8 (c);
        on raw uint8 images (n, H, W, 3) "cnnf", the paper's CNN-F up to fc7 (dropout after
        fc6/fc7) -> fc8 (c), where ``image_hidden`` does not apply. Any name of
        ``methods.backbones.build_backbone`` works on pixels. Text = BoW -> full1
        (``text_hidden`` = 4096, ReLU, dropout) -> full2 (c). Dropout 0.5 as in the paper.
    image_weights, image_size, freeze_backbone :
        Pixels only (ignored on feature vectors): the backbone's weights file (e.g.
        ``imagenet-vgg-f.mat``; None = random init), its input size (None = the file's or 224;
        images are resized to it) and whether its trunk stays fixed (the paper fine-tunes it).
        Pixels are normalised by the file's average image, or without a file by the training
        images' channel mean/std (``pixel_mean_``, ``pixel_std_``); they are read batch by batch.
    lr : float
        Adam learning rate of both networks (chosen on validation; the paper gives none).
    device : str
        "cpu", "cuda", "cuda:N" or "auto".
    random_state : int
        Seeds the network initialisation, dropout and the triplet sampler.

    Choices the paper leaves open, and what we chose
    ------------------------------------------------
    * Eq. 1 on features with negative entries: the cosine then lies in [-1, 1] and Eq. 1 leaves
      [0, 1]; we use s1 = (1 + cos) / 2 for a modality whose training features have any negative
      entry (``similarity_shifted_`` records it) and the plain cosine otherwise (all bundled
      data). Zero feature rows have cosine 0. s2 is the cosine of the visible label vectors; a
      pair uses the label branch only when both items are labeled.
    * Which ranking list: the cross-modal list r^xy (S^xy), as the experiments section says; the
      same triplets feed all four terms of Eq. 4, weighted by 1 - s^xx_ij, 1 - s^yy_ij and
      1 - s^xy_ij (= 1 - s^yx_ij); s_ij is the similarity of the positive i and the negative j,
      as printed in Eq. 3.
    * Bins and "three points from three different bins": each list (the query excluded) is cut
      into ``n_bins`` equal-count bins by rank; an item tied with a bin boundary's similarity goes
      to the later bin, so tied items share a bin and items of different bins always differ in
      similarity (label-only similarity on single-label data: same class -> bin 0, the rest ->
      bin 4). The query is the anchor; positive and negative come from two different bins drawn
      uniformly among the non-empty ones, each item uniform inside its bin, the higher-ranked bin
      giving the positive. Queries cycle through
      seeded permutations of the training items (each item is a query once per pass).
    * Eqs. 2-4 vs Eqs. 8-10: Eqs. 2-3 put a hinge [.]_+ with zero margin on each triplet, whose
      minimiser includes "all codes equal" (PROTOCOLS s. 6); Eq. 4 and its gradients Eqs. 8-10
      have no hinge, as if every triplet were active. ``loss="linear"`` implements Eq. 4 /
      Eqs. 8-10; ``loss="hinge"`` with ``margin=0`` is Eqs. 2-3 as printed and with a margin > 0
      the usual margin variant (margin in units of c). Selected on a validation split of Wiki's
      training items (``validation_selection``): hinge, margin 0.25 c. Why the others lose: the
      linear loss is a sum of independent per-bit bilinear forms, unbounded below, so every bit
      drifts to the same leading direction (4-14 distinct training codes); zero margin has the
      all-equal solution. And with lambda = 1 every reading collapses: the ranking terms exert no
      force on the common component of the outputs, while B = sign(F + G) of under-fitting
      networks feeds any majority sign of a bit back into the networks (1-10 distinct codes and
      floor MAP; rescaling the initial outputs to unit variance kept ~500 codes, still floor MAP).
    * Gradients: autograd on the relaxed loss (dH = (c - a^T b) / 2 on real outputs, the h(.) of
      Eqs. 8-10 read as the real output). With that, Eqs. 9-10 are exactly the gradients of our
      loss; Eq. 8 has the opposite overall sign of its bracket (the derivative of
      -(F_q^T F_i)/2 is -F_i/2), so we follow the loss, not Eq. 8's sign
      (``tests/methods/test_rdcmh.py`` checks both facts).
    * Mini-batch objective: per triplet, the four weighted terms plus lambda/2 times the
      quantisation error of its three members (so the per-triplet gradient is Eqs. 8-10),
      averaged over the batch. Eq. 4's relative scale of its two sums is not given (it depends on
      how many triplets Q x {i, j} holds), so lambda's scale is ours: this normalisation.
      Optimiser (unspecified in the paper): Adam, constant ``lr``. Initialisation: PyTorch's
      defaults (``methods.nets``), seeded.
    * F and G in Eq. 12 are running buffers (n x c): initialised by a forward pass of the
      untrained networks over all training items, then each row is overwritten by the training
      forward output whenever the item is in a batch (buffers as in DCMH's public code, which
      starts them random; random starts collapsed just the same in our trials); B is refreshed
      after every iteration. In the image step the text outputs come from the G buffer (and vice
      versa): W_y is fixed there, as Algorithm 1 says.
    * Image network width: the paper does not give fc7's width for its CNN-F-based network and
      our trunk is a stand-in; ``image_hidden`` defaults to 1024 so that 500 iterations on Wiki
      fit the suite's 30 s CPU budget (4096 is ~10x slower). Text network: 4096 as printed.
    * Network inputs are standardised with training statistics (methods.nets.Standardizer); the
      similarities of Eq. 1 use the raw features. On raw pixels Eq. 1 needs an image feature
      too: we use each image shrunk to 16 x 16 and centred/scaled by the training images' channel
      statistics (a "tiny image" vector, 768-d), so s1 stays a cheap hand-crafted similarity.

    Honest caveat: on Wiki the selected setting reaches about 0.22 / 0.25 validation MAP
    (I->T / T->I), far from what supervised baselines get on Wiki's text side. Only ~19 % of the
    sampled triplets are class-informative (bin 0 holds the same-class items; the other bin
    pairs order different-class items by feature similarity), and 500 single-batch iterations
    are few for networks trained from scratch (free per-item codes need ~2000 to fit even the
    label-only lists).

    Deviations
    ----------
    * lambda = 0.1 instead of the paper's 1 (chosen on validation, see above).
    * The bundled data are feature vectors, where the image trunk is an MLP stand-in; CNN-F runs
      when the image side is raw pixels.
    * B is updated from buffered F / G rather than a full forward pass every iteration (a full
      pass per iteration would multiply the cost by ~n / 384).
    """

    bits_range: ClassVar[tuple[int, int]] = (1, 1024)
    needs_labels: ClassVar[bool] = True
    accepts_pixels: ClassVar[bool] = True
    check_params: ClassVar[dict[str, Any]] = {"n_iter": 200, "image_hidden": 64, "text_hidden": 64,
                                               "batch_size": 64, "lr": 3e-3}
    # Pixel checks (methods.checks): CNN-F at its smallest input; few steps, since each costs ~100x the MLP's.
    pixel_check_params: ClassVar[dict[str, Any]] = {"image_size": 40, "n_iter": 10, "batch_size": 8}
    known_check_failures: ClassVar[dict[str, str]] = {name: _PIXEL_INIT for name in ("pixels_codes_format", "pixels_beats_random_floor")}
    # How the defaults were chosen (runners record this with results). Wiki, 16 bits, no mask, seed 0:
    # 1738 training items train and form the database, the other 435 training items are the
    # validation queries (split seed 0); the test queries were never used. MAP@all, tie-aware.
    validation_selection: ClassVar[dict[str, Any]] = {
        "protocol": "wiki train 2173 -> 1738 fit/database + 435 validation queries (rng([0, 777]) permutation), "
                    "16 bits, mask 0, seed 0, 500 iterations, image_hidden 1024, text_hidden 4096",
        "chosen": {"loss": "hinge", "margin": 0.25, "lam": 0.1, "lr": 1e-3, "cross_terms": "eq5"},
        "candidates": [  # (loss, margin, lam, lr, cross_terms, val MAP I->T, T->I, distinct training codes)
            ("linear", 0.0, 1.0, 1e-4, "eq5", 0.1097, 0.1097, 1),
            ("linear", 0.0, 0.1, 1e-4, "eq5", 0.1720, 0.1287, 14),
            ("linear", 0.0, 0.01, 1e-4, "eq5", 0.1570, 0.1275, 7),
            ("linear", 0.0, 0.001, 1e-4, "eq5", 0.1560, 0.1272, 12),
            ("linear", 0.0, 0.01, 1e-4, "cross", 0.1508, 0.1280, 6),
            ("linear", 0.0, 1.0, 1e-3, "eq5", 0.1606, 0.2287, 10),
            ("linear", 0.0, 0.1, 1e-3, "eq5", 0.1499, 0.1290, 4),
            ("hinge", 0.0, 0.01, 1e-4, "eq5", 0.1675, 0.1533, 398),
            ("hinge", 0.25, 1.0, 1e-3, "eq5", 0.1097, 0.1097, 8),
            ("hinge", 0.25, 0.1, 1e-4, "eq5", 0.2077, 0.1878, 100),
            ("hinge", 0.25, 0.01, 1e-4, "eq5", 0.1818, 0.1454, 679),
            ("hinge", 0.25, 0.001, 1e-4, "eq5", 0.1627, 0.1227, 982),
            ("hinge", 0.5, 0.01, 1e-4, "eq5", 0.1771, 0.1444, 657),
            ("hinge", 0.25, 0.1, 3e-3, "eq5", 0.1959, 0.1924, 80),
            ("hinge", 0.25, 0.01, 1e-3, "eq5", 0.1665, 0.1471, 805),
            ("hinge", 0.5, 0.1, 1e-3, "eq5", 0.2118, 0.2316, 216),
            ("hinge", 0.25, 0.1, 1e-3, "eq5", 0.2176, 0.2454, 130),
        ],
        "random_floor": 0.11,
    }

    # What the ablations switch off (fixed per class, not parameters).
    _weighted: ClassVar[bool] = True
    _deep: ClassVar[bool] = True
    _similarity: ClassVar[str] = "semi"
    _joint: ClassVar[bool] = True

    def __init__(self, n_bits: int = 16, lam: float = 0.1, n_iter: int = 500, batch_size: int = 128,
                 n_bins: int = 5, loss: str = "hinge", margin: float = 0.25, cross_terms: str = "eq5",
                 image_backbone: str = "auto", image_hidden: int = 1024, text_hidden: int = 4096,
                 dropout: float = 0.5, lr: float = 1e-3, image_weights=None, image_size: int | None = None,
                 freeze_backbone: bool = False, device: str = "cpu", random_state: int | None = 0):
        self.n_bits = n_bits
        self.lam = lam
        self.n_iter = n_iter
        self.batch_size = batch_size
        self.n_bins = n_bins
        self.loss = loss
        self.margin = margin
        self.cross_terms = cross_terms
        self.image_backbone = image_backbone
        self.image_hidden = image_hidden
        self.text_hidden = text_hidden
        self.dropout = dropout
        self.lr = lr
        self.image_weights = image_weights
        self.image_size = image_size
        self.freeze_backbone = freeze_backbone
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ validation
    def _validate_params(self) -> torch.device:
        name = type(self).__name__
        _check_int("n_iter", self.n_iter, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("n_bins", self.n_bins, 2)
        _check_int("image_hidden", self.image_hidden, 1)
        _check_int("text_hidden", self.text_hidden, 1)
        _check_float("lam", self.lam, 0.0)
        _check_float("margin", self.margin, 0.0)
        _check_float("dropout", self.dropout, 0.0, 1.0, hi_open=True)
        _check_float("lr", self.lr, 0.0, lo_open=True)
        if self.loss not in LOSSES:
            raise InputError(f"{name}: loss={self.loss!r} is invalid; valid: {', '.join(LOSSES)}")
        if self.loss == "linear" and self.margin != 0:
            raise InputError(f"{name}: margin={self.margin!r} needs loss='hinge'; valid with loss='linear': 0")
        if self.cross_terms not in CROSS_TERMS:
            raise InputError(f"{name}: cross_terms={self.cross_terms!r} is invalid; valid: {', '.join(CROSS_TERMS)}")
        check_image_params(name, self.image_backbone, self.image_weights, self.image_size, self.freeze_backbone)
        if self.random_state is not None:
            _check_int("random_state", self.random_state, 0)
        return resolve_device(self.device)

    # ------------------------------------------------------------------ building blocks
    def _make_nets(self, d_image: int | None, d_text: int, backbone: str) -> tuple[nn.Module, nn.Module]:
        c = self.n_bits
        if not self._deep:
            return _LinearHash(d_image, c), _LinearHash(d_text, c)
        img = make_image_net(backbone, d_image, c, hidden=self.image_hidden, dropout=self.dropout,
                             weights=self.image_weights, image_size=self.image_size, freeze=self.freeze_backbone)
        return img, TextNet(d_text, c, hidden=self.text_hidden, dropout=self.dropout)

    def _seed(self) -> int:
        return 0 if self.random_state is None else int(self.random_state)

    # ------------------------------------------------------------------ fit
    def fit(self, image, text, labels, labeled=None) -> "RDCMH":
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        dev = self._validate_params()
        backbone = resolve_image_backbone(type(self).__name__, self.image_backbone, image)
        pixels = is_pixels_input(image)
        rows = None  # pixels: training row i is image rows[i] (a subset without copying the images)
        if self._similarity == "labels":
            # RDCMH-NS: no semi-supervised similarity -> only labeled items can be ranked.
            keep = np.flatnonzero(labeled)
            if pixels:
                rows = keep
            else:
                image = image[keep]
            text, labels = text[keep], labels[keep]
            labeled = np.ones(keep.size, dtype=bool)
        if labels.shape[0] < 3:
            raise InputError(f"{type(self).__name__}: needs at least 3 training items to form triplets, "
                             f"got {labels.shape[0]}")

        self.text_std_ = Standardizer().fit(text)
        y = torch.as_tensor(self.text_std_.transform(text), device=dev)
        if pixels:
            self.image_std_ = None
            self.n_features_ = (None, int(text.shape[1]))
            # Channel statistics: the similarity's tiny images and, without a weights file, the network input.
            stats = pixel_normalisation(image, None, rows) if self._similarity != "labels" or not self._deep else None
            sim_image = self._tiny_images(image, rows, stats) if self._similarity != "labels" else None
        else:
            self.image_std_ = Standardizer().fit(image)
            self.n_features_ = (int(image.shape[1]), int(text.shape[1]))
            x = TrainImages(torch.as_tensor(self.image_std_.transform(image), device=dev))
            sim_image = image
        sim = SemiSupervisedSimilarity(sim_image, text, labels, labeled, dev, mode=self._similarity)
        self.similarity_shifted_ = sim.shifted

        seed = self._seed()
        gen = torch.Generator().manual_seed(seed)
        with seeded(seed):
            if pixels:
                size = int(self.image_size or 224)
                img_net, txt_net = self._make_nets(3 * size * size, y.shape[1], backbone)
                trunk = img_net.backbone if self._deep else None
                if trunk is not None:
                    size = int(trunk.input_size)
                if trunk is not None and getattr(trunk, "pixel_mean", None) is not None:
                    stats = pixel_normalisation(image, trunk, rows)
                elif stats is None:
                    stats = pixel_normalisation(image, None, rows)
                self.pixel_mean_, self.pixel_std_, self.image_size_ = stats[0], stats[1], size
                x = TrainImages(pixels=image, transform=pixel_transform(size, *stats), device=dev, rows=rows)
            else:
                img_net, txt_net = self._make_nets(x.tensor.shape[1], y.shape[1], backbone)
                self.pixel_mean_ = self.pixel_std_ = self.image_size_ = None
            img_net, txt_net = img_net.to(dev), txt_net.to(dev)
            if self._joint:
                history, codes = self._train_joint(img_net, txt_net, x, y, sim, gen, dev)
            else:
                history, codes = self._train_two_stage(img_net, txt_net, x, y, sim, gen, dev)
        self.image_backbone_ = backbone if self._deep else "linear"
        self.image_net_ = img_net.cpu().eval()
        self.text_net_ = txt_net.cpu().eval()
        self.history_ = history
        self.train_codes_ = codes.cpu().numpy().astype(np.int8)  # B of Algorithm 1's output (NS: labeled items)
        return self

    # Side of the "tiny images" that stand in for hand-crafted image features in Eq. 1 on pixels.
    _tiny_size: ClassVar[int] = 16

    def _tiny_images(self, images, rows, stats) -> np.ndarray:
        """(n, 3 * 16 * 16) float32: each training image shrunk and normalised, streamed (Eq. 1's s1 on pixels)."""
        from methods.pixels import forward_pixels

        return forward_pixels(nn.Flatten(), images, torch.device("cpu"),
                              pixel_transform(self._tiny_size, *stats), batch_size=256, indices=rows)

    def _queries(self, n: int, gen: torch.Generator):
        """Endless stream of query batches: seeded permutations of the training items, one after another."""
        bs = int(self.batch_size)
        buf = torch.empty(0, dtype=torch.long)
        while True:
            while buf.numel() < bs:
                buf = torch.cat([buf, torch.randperm(n, generator=gen)])
            yield buf[:bs]
            buf = buf[bs:]

    def _batches(self, sim, n, gen, dev, count: int):
        """``count`` triplet batches, drawn in order from one generator (so the same seed gives the same batches).

        Drawn inline, between optimiser steps. A worker thread that prepared batch t+1 during the
        steps of batch t was tried and is slower on CPU: its torch calls open a second OpenMP team
        that competes with the training's for the same cores (Wiki, 500 iterations, 2 threads:
        26.9 s with the thread vs 19.6 s inline, identical codes; scripts/bench_rdcmh.py).
        """
        stream = self._queries(n, gen)
        for _ in range(count):
            yield self._batch(sim, next(stream), gen, dev)

    def _batch(self, sim, queries, gen, dev):
        tb = sample_triplets(sim, queries.to(dev), int(self.n_bins), gen)
        if self._weighted:
            sxx, syy, sxy = sim.pairs(tb.i, tb.j)
            weights = {"xx": 1.0 - sxx, "yy": 1.0 - syy, "xy": 1.0 - sxy, "yx": 1.0 - sxy}
        else:
            one = torch.ones(tb.q.shape[0], device=dev)
            weights = {"xx": one, "yy": one, "xy": one, "yx": one}
        return tb, weights

    def _loss_kwargs(self) -> dict:
        return dict(n_bits=int(self.n_bits), lam=float(self.lam), loss=self.loss,
                    margin=float(self.margin) * int(self.n_bits), cross_terms=self.cross_terms)

    def _train_joint(self, img_net, txt_net, x, y, sim, gen, dev) -> dict:
        """Algorithm 1: alternate image step, text step, B update (Eq. 12)."""
        n, lam = len(x), float(self.lam)
        opt_x = optimizer("adam", [p for p in img_net.parameters() if p.requires_grad], dev, lr=float(self.lr))
        opt_y = optimizer("adam", txt_net.parameters(), dev, lr=float(self.lr))
        with torch.no_grad():
            f_buf = x.forward(img_net)
            g_buf = self._forward_all(txt_net, y)
        b = update_codes(f_buf, g_buf, lam)
        kw = self._loss_kwargs()
        losses, n_valid = [], 0
        img_net.train(), txt_net.train()
        trace = []
        for it, (tb, weights, inputs) in enumerate(_with_inputs(self._batches(sim, n, gen, dev, int(self.n_iter)), x)):
            k = tb.q.shape[0]
            idx = torch.cat([tb.q, tb.i, tb.j])
            uniq, first = _first_occurrence(idx.cpu().numpy())
            uniq_t, first_t = torch.as_tensor(uniq, device=dev), torch.as_tensor(first, device=dev)
            bb = b[idx].split(k)
            # Image step (Eqs. 8-10): text outputs and B fixed.
            out = img_net(inputs)
            loss = rdcmh_loss(out.split(k), g_buf[idx].split(k), bb, weights, tb.valid, **kw)
            opt_x.zero_grad(set_to_none=True)
            loss.backward()
            opt_x.step()
            f_buf[uniq_t] = out.detach()[first_t]
            # Text step: image outputs and B fixed.
            out = txt_net(y[idx])
            loss_y = rdcmh_loss(f_buf[idx].split(k), out.split(k), bb, weights, tb.valid, **kw)
            opt_y.zero_grad(set_to_none=True)
            loss_y.backward()
            opt_y.step()
            g_buf[uniq_t] = out.detach()[first_t]
            # Eq. 12 (rows not in the batch have unchanged F + G, so only these rows can change).
            b[uniq_t] = update_codes(f_buf[uniq_t], g_buf[uniq_t], lam)
            losses.append(float(loss_y.detach()))
            n_valid += int(tb.valid.sum())
            if it % 50 == 0 or it == int(self.n_iter) - 1:
                # Collapse monitor: distinct training codes and mean |bit mean| of B (1 = every bit constant).
                trace.append((it, int(torch.unique(b, dim=0).shape[0]), round(float(b.mean(0).abs().mean()), 4)))
        return {"loss": np.asarray(losses, dtype=np.float32), "valid_triplets": n_valid,
                "train_codes_distinct": int(torch.unique(b, dim=0).shape[0]), "trace": trace}, b

    def _train_two_stage(self, img_net, txt_net, x, y, sim, gen, dev) -> dict:
        """RDCMH-NJ: stage 1 learns B with free per-item outputs; stage 2 fits the networks to B."""
        n, lam, c = len(x), float(self.lam), int(self.n_bits)
        # Stage 1: the same objective and Algorithm 1, with F and G free tables instead of networks.
        f_tab = torch.randn(n, c, device=dev) * 0.1
        g_tab = torch.randn(n, c, device=dev) * 0.1
        b = update_codes(f_tab, g_tab, lam)
        kw = self._loss_kwargs()
        stage1 = []
        for tb, weights in self._batches(sim, n, gen, dev, int(self.n_iter)):
            k = tb.q.shape[0]
            idx = torch.cat([tb.q, tb.i, tb.j])
            bb = b[idx].split(k)
            for side in (0, 1):
                rows_f = f_tab[idx].clone().requires_grad_(side == 0)
                rows_g = g_tab[idx].clone().requires_grad_(side == 1)
                loss = rdcmh_loss(rows_f.split(k), rows_g.split(k), bb, weights, tb.valid, **kw)
                (grad,) = torch.autograd.grad(loss * k, rows_f if side == 0 else rows_g)
                # Plain SGD on the table rows (index_add sums the gradient of repeated items).
                tab = f_tab if side == 0 else g_tab
                tab.index_add_(0, idx, grad, alpha=-self._table_lr)
            b[idx] = update_codes(f_tab[idx], g_tab[idx], lam)
            stage1.append(float(loss.detach()))
        # Stage 2: regress each network onto B (the quantisation term alone).
        opt_x = optimizer("adam", [p for p in img_net.parameters() if p.requires_grad], dev, lr=float(self.lr))
        opt_y = optimizer("adam", txt_net.parameters(), dev, lr=float(self.lr))
        img_net.train(), txt_net.train()
        stage2 = []
        m = 3 * int(self.batch_size)  # as many items per step as a triplet batch
        draws = (torch.randint(0, n, (m,), generator=gen).to(dev) for _ in range(int(self.n_iter)))
        for idx, image_rows in _with_rows(draws, x):
            for net, rows, opt in ((img_net, image_rows, opt_x), (txt_net, y[idx], opt_y)):
                loss = 0.5 * lam * ((b[idx] - net(rows)) ** 2).sum(dim=1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            stage2.append(float(loss.detach()))
        return {"loss": np.asarray(stage1, dtype=np.float32), "fit_loss": np.asarray(stage2, dtype=np.float32),
                "train_codes_distinct": int(torch.unique(b, dim=0).shape[0])}, b

    # NJ stage-1 SGD step, on the Wiki validation split above: 0.05 / 0.2 / 0.5 gave
    # I->T 0.118 / 0.186 / 0.180 and T->I 0.115 / 0.257 / 0.233.
    _table_lr: ClassVar[float] = 0.2

    @staticmethod
    def _forward_all(net: nn.Module, x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
        was = net.training
        net.eval()
        out = torch.cat([net(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])
        net.train(was)
        return out

    # ------------------------------------------------------------------ encode
    def _encode(self, net: nn.Module, std: Standardizer, x) -> np.ndarray:
        dev = resolve_device(self.device)
        if dev.type == "cpu":
            return binarize(forward_in_batches(net, x, dev, transform=std.transform))
        net.to(dev)
        try:
            return binarize(forward_in_batches(net, x, dev, transform=std.transform))
        finally:
            net.cpu()  # the fitted hasher stays on the host, so it pickles and loads anywhere

    def _encode_pixels(self, images) -> np.ndarray:
        dev = resolve_device(self.device)
        net = self.image_net_.to(dev)
        try:
            return binarize(encode_pixels(net, images, dev, self.image_size_, self.pixel_mean_, self.pixel_std_,
                                          int(self.n_bits)))
        finally:
            net.cpu()

    def encode_image(self, image) -> np.ndarray:
        self._check_fitted("image_net_")
        image = self._validate_encode(image, "image", self.n_features_[0])
        check_image_input(type(self).__name__, image, self.image_size_ is not None)
        if self.image_size_ is not None:
            return self._encode_pixels(image)
        return self._encode(self.image_net_, self.image_std_, image)

    def encode_text(self, text) -> np.ndarray:
        self._check_fitted("text_net_")
        text = self._validate_encode(text, "text", self.n_features_[1])
        return self._encode(self.text_net_, self.text_std_, text)


class RDCMH_NW(RDCMH):
    """RDCMH-NW (Fig. 3): every triplet weighs 1 instead of (1 - s_ij); everything else as RDCMH."""

    _weighted = False


class RDCMH_ND(RDCMH):
    """RDCMH-ND (Fig. 3): no deep features; the hash functions are affine maps of the
    standardised hand-crafted features (one linear layer per modality, no dropout), trained with
    RDCMH's loss and Algorithm 1. ``image_hidden``, ``text_hidden``, ``image_backbone`` and
    ``dropout`` are accepted and ignored."""

    _deep = False


class RDCMH_NS(RDCMH):
    """RDCMH-NS (Fig. 3): no semi-supervised similarity. Our reading: the ranking lists come from
    labels alone, as in the label-based ranking methods the paper improves on (Zhao et al. 2015):
    S^xx = S^yy = S^xy = cosine of label vectors. Unlabeled items cannot be ranked and are left
    out of training altogether (networks, input statistics, B); with no mask it still differs
    from RDCMH, since feature similarity no longer shapes the lists."""

    _similarity = "labels"


class RDCMH_NJ(RDCMH):
    """RDCMH-NJ (Fig. 3): no joint optimisation. Our reading is the two-stage scheme that joint
    deep hashing is contrasted with (CNNH-style): stage 1 learns the training codes B with the
    same objective, sampler and Algorithm 1 but with F and G free per-item tables (plain SGD,
    step 0.2 chosen on the Wiki validation split, ``n_iter`` iterations); stage 2 fits the image
    and text networks to the fixed B by the quantisation loss alone (Adam, ``n_iter`` steps of
    3 x ``batch_size`` items). The networks never influence B."""

    _joint = False

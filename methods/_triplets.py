"""RDCMH's semi-supervised similarity (Eq. 1), ranking-list bins and triplet sampling.

Memory stays linear in the number of training items: no ``n x n`` similarity matrix is ever
formed. A mini-batch needs only the similarity rows of its queries (``batch x n``) and the
similarities of its (positive, negative) pairs, and both are computed on demand from unit-norm
feature and label matrices kept on the training device.

Everything here is torch, so the same code runs on CPU and GPU; the random draws come from a
CPU ``torch.Generator`` so that the sampled triplets do not depend on the device's RNG.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from numba import njit

from cmhcore.errors import InputError

__all__ = ["eq1", "SemiSupervisedSimilarity", "TripletBatch", "SAMPLERS", "boundary_positions", "rank_bins",
           "level_bins", "level_thresholds", "sample_triplets"]


def eq1(s1: torch.Tensor, s2: torch.Tensor, both_labeled: torch.Tensor) -> torch.Tensor:
    """Eq. 1: ``s1 * exp(s2 - s1)`` where both items are labeled, ``s1`` otherwise."""
    return torch.where(both_labeled, s1 * torch.exp(s2 - s1), s1)


def _unit_rows(x) -> tuple[object, bool]:
    """Rows scaled to unit L2 norm (all-zero rows stay zero); also whether any entry is negative."""
    if sp.issparse(x):
        x = sp.csr_matrix(x, dtype=np.float32, copy=True)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
        negative = bool(x.nnz and (x.data < 0).any())
        return sp.csr_matrix(sp.diags(inv.astype(np.float32)) @ x), negative
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    inv = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return x * inv[:, None], bool((x < 0).any())


class _CosineSide:
    """Cosine similarities of one modality's raw features, row blocks on demand.

    Cosine of non-negative features lies in [0, 1], which Eq. 1's [0, 1] claim needs. When the
    training features have a negative entry the cosine lies in [-1, 1]; we then use
    ``(1 + cos) / 2``, which keeps the ranking and puts s1 back in [0, 1] (``shifted``).
    """

    def __init__(self, x, device: torch.device):
        unit, self.shifted = _unit_rows(x)
        self.device = device
        if sp.issparse(unit):
            self._rows_np = unit  # CSR on the host: cheap row gathers for the batch
            unit.sort_indices()
            with warnings.catch_warnings():  # torch flags sparse CSR as beta; CSR @ dense is all we use
                warnings.simplefilter("ignore", UserWarning)
                self._db = torch.sparse_csr_tensor(
                    torch.as_tensor(unit.indptr, dtype=torch.int64), torch.as_tensor(unit.indices, dtype=torch.int64),
                    torch.as_tensor(unit.data), size=unit.shape, device=device)
            self._dense = None
        else:
            self._rows_np = None
            self._dense = torch.as_tensor(unit, device=device)
            self._db = None

    def _take(self, idx: torch.Tensor) -> torch.Tensor:
        if self._dense is not None:
            return self._dense[idx]
        rows = self._rows_np[idx.cpu().numpy()].toarray()
        return torch.as_tensor(rows, device=self.device)

    def _fix(self, cos: torch.Tensor) -> torch.Tensor:
        return (1.0 + cos) * 0.5 if self.shifted else cos

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """(len(idx), n) cosines of the items ``idx`` against every training item."""
        q = self._take(idx)
        if self._dense is not None:
            cos = q @ self._dense.T
        else:
            cos = torch.sparse.mm(self._db, q.T).T  # sparse (n x d) @ dense (d x b): O(nnz * b)
        return self._fix(cos.clamp(-1.0, 1.0))

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Cosines of the pairs (a[k], b[k])."""
        return self._fix((self._take(a) * self._take(b)).sum(dim=1).clamp(-1.0, 1.0))


class SemiSupervisedSimilarity:
    """S^xx, S^yy (Eq. 1) and S^xy = S^yx = (S^xx + S^yy) / 2, computed block by block.

    ``mode``:
      * ``"semi"``: Eq. 1 (feature cosine s1, label cosine s2 where both items are labeled);
      * ``"labels"``: label cosine only (RDCMH-NS); every item given must be labeled.

    ``labels`` must already have the rows of unlabeled items zeroed; ``labeled`` says which rows
    are real. Memory is O(n (d_x + d_y + m)).
    """

    def __init__(self, image, text, labels: np.ndarray, labeled: np.ndarray, device: torch.device,
                 mode: str = "semi"):
        if mode not in ("semi", "labels"):
            raise InputError(f"similarity mode={mode!r} is invalid; valid: 'semi', 'labels'")
        self.mode = mode
        self.device = device
        self.n = int(labels.shape[0])
        lab_unit, _ = _unit_rows(np.asarray(labels, dtype=np.float32))
        self._labels = torch.as_tensor(lab_unit, device=device)
        self._labeled = torch.as_tensor(np.asarray(labeled, dtype=bool), device=device)
        if mode == "labels":
            if not bool(np.asarray(labeled).all()):
                raise InputError("similarity mode 'labels' needs every item labeled; pass the labeled subset")
            self.image = self.text = None
        else:
            self.image = _CosineSide(image, device)
            self.text = _CosineSide(text, device)

    @property
    def shifted(self) -> dict[str, bool]:
        """Per modality: whether s1 was shifted to (1 + cos) / 2 because of negative features."""
        if self.mode == "labels":
            return {"image": False, "text": False}
        return {"image": self.image.shifted, "text": self.text.shifted}

    def _per_modality(self, s2: torch.Tensor, both: torch.Tensor, s1x: torch.Tensor, s1y: torch.Tensor):
        if self.mode == "labels":
            return s2, s2
        return eq1(s1x, s2, both), eq1(s1y, s2, both)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Rows of S^xy for the items ``idx``: shape (len(idx), n). The ranking lists r^xy come from these."""
        s2 = self._labels[idx] @ self._labels.T
        both = self._labeled[idx][:, None] & self._labeled[None, :]
        if self.mode == "labels":
            return s2
        sxx, syy = self._per_modality(s2, both, self.image.rows(idx), self.text.rows(idx))
        return 0.5 * (sxx + syy)

    def pairs(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(s^xx, s^yy, s^xy) of the pairs (a[k], b[k]), each of shape (len(a),)."""
        s2 = (self._labels[a] * self._labels[b]).sum(dim=1)
        both = self._labeled[a] & self._labeled[b]
        if self.mode == "labels":
            return s2, s2, s2
        sxx, syy = self._per_modality(s2, both, self.image.pairs(a, b), self.text.pairs(a, b))
        return sxx, syy, 0.5 * (sxx + syy)


def boundary_positions(m: int, n_bins: int) -> np.ndarray:
    """0-based positions (in decreasing order of similarity, among the m other items) where bins 1..n_bins-1 start."""
    b = np.arange(1, n_bins)
    return np.minimum(-(-b * m // n_bins), m - 1)  # ceil(b m / n_bins): equal-count bins


@njit(cache=True, nogil=True)
def _select(a, m, k):  # pragma: no cover - compiled; tested through rank_bins
    """k-th smallest (0-based) of ``a[:m]``, reordering ``a[:m]`` in place (the multiset is kept).

    Quickselect with a three-way partition, so runs of equal values (ties are common in similarity
    rows) cost one pass instead of degrading to quadratic time. Hand-written because numba's
    ``np.partition`` takes ~8 s to compile, which every fresh install would pay.
    """
    lo, hi = 0, m - 1
    while lo < hi:
        x, y, z = a[lo], a[(lo + hi) // 2], a[hi]  # median of three as the pivot
        pivot = max(min(x, y), min(max(x, y), z))
        lt, i, gt = lo, lo, hi
        while i <= gt:
            v = a[i]
            if v < pivot:
                a[i] = a[lt]
                a[lt] = v
                lt += 1
                i += 1
            elif v > pivot:
                a[i] = a[gt]
                a[gt] = v
                gt -= 1
            else:
                i += 1
        if k < lt:
            hi = lt - 1
        elif k > gt:
            lo = gt + 1
        else:
            return pivot
    return a[lo]


@njit(cache=True, nogil=True)
def _bins_kernel(rows, exclude, kth, out):  # pragma: no cover - compiled; tested through rank_bins
    """CPU ranking-list bins, row by row: exact order statistics by bucket selection, then the bins.

    For each row (column ``exclude[r]`` left out): one pass for min / max, one to bucket the values
    linearly between them (the bucket index is monotone in the value, so every value of a lower
    bucket is smaller), then each wanted order statistic is selected exactly among its bucket's
    values only (:func:`_select`). Buckets hold one or two items on average, so this is ~3 passes
    over a row where ``np.partition`` with 4 boundaries made ~4 selections over the whole row (7.3
    vs 2.4 ms for 128 x 2173 on Wiki). With heavy ties (label-only similarity) one bucket can hold
    most of the row; it then costs at most one selection per boundary, none when that bucket is a
    single repeated value. ``out[r, j]`` = number of thresholds >= ``rows[r, j]``; the excluded
    column gets ``len(kth) + 1`` (= n_bins).
    """
    b, n = rows.shape
    nk = kth.size
    nb = max(16, n // 2)
    hist = np.zeros(nb, np.int64)
    bucket = np.empty(n, np.int64)
    thr = np.empty(nk, rows.dtype)
    tmp = np.empty(n, rows.dtype)
    for r in range(b):
        row = rows[r]
        ex = exclude[r]
        lo, hi = np.inf, -np.inf
        for j in range(n):
            if j != ex:
                v = row[j]
                if v < lo:
                    lo = v
                if v > hi:
                    hi = v
        if not hi > lo:  # all other items equally similar: every threshold is that value
            for k in range(nk):
                thr[k] = lo
        else:
            scale = nb / (np.float64(hi) - np.float64(lo))
            hist[:] = 0
            for j in range(n):
                if j == ex:
                    bucket[j] = -1
                    continue
                q = int((np.float64(row[j]) - np.float64(lo)) * scale)
                if q >= nb:
                    q = nb - 1
                bucket[j] = q
                hist[q] += 1
            last, m, bmin, bmax = -1, 0, np.inf, -np.inf
            for k in range(nk):
                t = kth[k]
                q, below = 0, 0
                while below + hist[q] <= t:
                    below += hist[q]
                    q += 1
                if q != last:  # gather this bucket's values (consecutive boundaries often share one)
                    m, bmin, bmax = 0, np.inf, -np.inf
                    for j in range(n):
                        if bucket[j] == q:
                            v = row[j]
                            tmp[m] = v
                            m += 1
                            if v < bmin:
                                bmin = v
                            if v > bmax:
                                bmax = v
                    last = q
                # A bucket of one repeated value (ties) needs no selection.
                thr[k] = bmin if bmin == bmax else _select(tmp, m, t - below)
        for j in range(n):
            if j == ex:
                out[r, j] = nk + 1
                continue
            v = row[j]
            c = 0
            for k in range(nk):
                if v <= thr[k]:
                    c += 1
            out[r, j] = c


def rank_bins(rows: torch.Tensor, exclude: torch.Tensor, n_bins: int) -> torch.Tensor:
    """Bin of every item in each row's ranking list; the excluded item (the query) gets ``n_bins``.

    The m = n - 1 other items are cut by rank into ``n_bins`` equal-count bins, bin 0 the most
    similar. An item tied with a boundary's similarity goes to the later bin, so tied items
    always share a bin: two items in different bins differ in similarity, and the one in the
    lower bin is the more similar (Eq. 2's s_qi > s_qj holds strictly). Only O(n) work per row on
    CPU (:func:`_bins_kernel`); a sort per row on accelerators. Both give the same bins.
    """
    b, n = rows.shape
    m = n - 1
    pos = boundary_positions(m, n_bins)
    kth = (m - 1 - pos).astype(np.int64)  # descending position p among m others = ascending index m-1-p
    if rows.device.type == "cpu":
        bins = np.empty((b, n), dtype=np.int64)
        _bins_kernel(np.ascontiguousarray(rows.detach().numpy()), exclude.numpy().astype(np.int64), kth, bins)
        return torch.from_numpy(bins)
    return _rank_bins_sorted(rows, exclude, n_bins, kth)


def _rank_bins_sorted(rows: torch.Tensor, exclude: torch.Tensor, n_bins: int, kth: np.ndarray) -> torch.Tensor:
    """:func:`rank_bins` for accelerators, where a sort per row is cheap: same thresholds, same bins."""
    b = rows.shape[0]
    ar = torch.arange(b, device=rows.device)
    rows = rows.clone()
    rows[ar, exclude] = float("inf")  # the largest: k-th smallest of the others is unchanged
    thresholds = torch.sort(rows, dim=1).values[:, torch.as_tensor(kth, device=rows.device)]  # (b, n_bins-1)
    # bin = number of boundaries whose threshold is >= the value (a loop over the few boundaries).
    bins = torch.zeros(rows.shape, dtype=torch.long, device=rows.device)
    for k in range(thresholds.shape[1]):
        bins += rows <= thresholds[:, k:k + 1]
    bins[ar, exclude] = n_bins
    return bins


@dataclass
class TripletBatch:
    """Indices of (query, positive, negative) and whether each triplet is real.

    A query that cannot form a triplet under the sampler (all other items equally similar, or
    fewer than two non-empty bins) keeps its row for shape but ``valid`` is False. ``bin_i`` and
    ``bin_j`` are the bins the positive and the negative came from (-1 for the ``"pairs"``
    sampler, which has no bins).
    """

    q: torch.Tensor
    i: torch.Tensor
    j: torch.Tensor
    valid: torch.Tensor
    bin_i: torch.Tensor
    bin_j: torch.Tensor


# The readings of "randomly pick three points from three different bins" (experiments section);
# docs/methods/rdcmh.md quotes the paper's text for each and gives the triplets each one yields.
SAMPLERS = ("bins", "pairs", "levels", "top")


def level_bins(rows: torch.Tensor, exclude: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """Bins cut at fixed similarity values: bin = number of ``thresholds`` >= the value.

    ``thresholds`` (n_bins - 1 values, non-increasing) are the same for every row, so the bins
    hold unequal counts. The tie rule is :func:`rank_bins`'s: a value equal to a threshold goes to
    the later bin. The excluded item (the query) gets ``n_bins``.
    """
    thr = thresholds.to(device=rows.device, dtype=rows.dtype)
    bins = (rows[:, :, None] <= thr[None, None, :]).sum(dim=2)
    bins[torch.arange(rows.shape[0], device=rows.device), exclude] = thr.numel() + 1
    return bins


def level_thresholds(sim: SemiSupervisedSimilarity, n_bins: int, seed: int = 0,
                     max_values: int = 4_000_000, chunk: int = 256) -> torch.Tensor:
    """The ``"levels"`` sampler's cut points: equal-count boundaries of the pooled S^xy values.

    The values are those of every ranking list (the query's own entry left out) of up to
    ``max_values // n`` training items drawn without replacement (all items when they fit), so
    the cost stays O(max_values). Returns n_bins - 1 non-increasing values on the host.
    """
    n = sim.n
    k = max(1, min(n, max_values // max(n - 1, 1)))
    rng = np.random.default_rng([seed, 4242])
    queries = np.arange(n) if k >= n else np.sort(rng.choice(n, size=k, replace=False))
    pooled = []
    for s in range(0, queries.size, chunk):
        q = torch.as_tensor(queries[s:s + chunk], device=sim.device)
        rows = sim.rows(q)
        keep = torch.ones_like(rows, dtype=torch.bool)
        keep[torch.arange(q.numel(), device=rows.device), q] = False
        pooled.append(rows[keep].cpu().numpy())
    vals = np.sort(np.concatenate(pooled))[::-1]
    return torch.as_tensor(vals[boundary_positions(vals.size, n_bins)].copy())


def _from_bins(bins: torch.Tensor, queries: torch.Tensor, n_bins: int, generator: torch.Generator,
               top: bool) -> TripletBatch:
    """Positive and negative from two different non-empty bins of each query's list.

    ``top=False``: the two bins uniformly among the non-empty ones, the lower (more similar) one
    giving the positive. ``top=True``: the positive from the first non-empty bin, the negative's
    bin uniformly among the other non-empty ones. Each item uniform inside its bin.
    """
    dev = bins.device
    b, n = bins.shape
    sizes = torch.zeros((b, n_bins + 1), dtype=torch.long, device=dev)
    sizes.scatter_add_(1, bins, torch.ones_like(bins))
    sizes = sizes[:, :n_bins]
    # Two distinct non-empty bins, uniformly: the two largest of iid uniform scores over non-empty bins.
    scores = torch.rand((b, n_bins), generator=generator).to(dev)
    scores = torch.where(sizes > 0, scores, torch.full_like(scores, -1.0))
    if top:
        # The first non-empty bin outranks every score (2 > any uniform), so it is always picked.
        ar = torch.arange(b, device=dev)
        first = torch.argmax((sizes > 0).long(), dim=1)
        scores[ar, first] = torch.where(scores[ar, first] >= 0, 2.0, -1.0)
    top2 = torch.topk(scores, 2, dim=1)
    valid = top2.values[:, 1] >= 0
    pick = torch.sort(top2.indices, dim=1).values  # lower bin index = more similar = positive
    u = torch.rand((b, 2), generator=generator).to(dev)
    size = torch.gather(sizes, 1, pick)
    rank = torch.minimum((u * size).long(), (size - 1).clamp(min=0))  # uniform rank inside the bin
    # Item holding that rank inside its bin: first position whose running count exceeds it.
    running = torch.cumsum(bins[:, None, :] == pick[:, :, None], dim=2)  # (b, 2, n)
    items = torch.searchsorted(running, (rank + 1)[:, :, None]).squeeze(2).clamp(max=n - 1)
    return TripletBatch(queries, items[:, 0], items[:, 1], valid, pick[:, 0], pick[:, 1])


def _sample_pairs(rows: torch.Tensor, queries: torch.Tensor, generator: torch.Generator) -> TripletBatch:
    """One ordered pair (i, j) with s_qi > s_qj per query, uniformly among all such pairs.

    Item i is drawn with probability c_i / P, where c_i counts the items strictly less similar
    than i and P = sum_i c_i is the number of pairs; then j uniformly among those c_i items. Both
    steps read one ascending sort of the row: O(n log n) per query, no O(n^2) enumeration.
    """
    dev = rows.device
    b, n = rows.shape
    ar = torch.arange(b, device=dev)
    r = rows.clone()
    r[ar, queries] = float("inf")  # the query sorts last and is below no value
    vals, order = torch.sort(r, dim=1)
    below = torch.searchsorted(vals, r.contiguous())  # items strictly less similar than each item
    below[ar, queries] = 0
    total = below.sum(dim=1)
    valid = total > 0
    u = torch.rand((b, 2), generator=generator, dtype=torch.float64).to(dev)
    target = torch.minimum((u[:, 0] * total).long(), (total - 1).clamp(min=0))
    cum = torch.cumsum(below, dim=1)
    i = torch.searchsorted(cum, target[:, None], right=True).squeeze(1).clamp(max=n - 1)
    c_i = below[ar, i]
    rank = torch.minimum((u[:, 1] * c_i).long(), (c_i - 1).clamp(min=0))
    j = order[ar, rank]  # the c_i smallest values are exactly those below s_qi
    none = torch.full_like(i, -1)
    return TripletBatch(queries, i, j, valid, none, none)


def sample_triplets(sim: SemiSupervisedSimilarity, queries: torch.Tensor, n_bins: int,
                    generator: torch.Generator, sampler: str = "bins",
                    thresholds: torch.Tensor | None = None) -> TripletBatch:
    """One triplet (query, positive, negative) per query, from its S^xy ranking list.

    Every reading takes the query as the anchor (its own list has it first) and returns a
    positive strictly more similar to it than the negative (s_qi > s_qj, Eq. 2's condition):

    * ``"bins"``: the list cut into ``n_bins`` equal-count bins (:func:`rank_bins`); two distinct
      non-empty bins drawn uniformly, one item uniformly inside each;
    * ``"levels"``: the same, with bins cut at fixed similarity values ``thresholds``
      (:func:`level_thresholds`, :func:`level_bins`), so bins hold unequal counts;
    * ``"top"``: equal-count bins; the positive from the first non-empty bin, the negative from
      another non-empty bin drawn uniformly;
    * ``"pairs"``: no bins; (i, j) uniformly over the ordered pairs with s_qi > s_qj, so that the
      mean of (1 - s_ij) [delta dH]_+ over draws is Eq. 3's sum divided by the number of pairs.

    Fully vectorised: O(batch x n) work and memory, no loop over triplets.
    """
    if sampler not in SAMPLERS:
        raise InputError(f"sampler={sampler!r} is invalid; valid: {', '.join(SAMPLERS)}")
    rows = sim.rows(queries)
    if sampler == "pairs":
        return _sample_pairs(rows, queries, generator)
    if sampler == "levels":
        if thresholds is None or thresholds.numel() != n_bins - 1:
            raise InputError(f"sampler='levels' needs {n_bins - 1} thresholds (level_thresholds); "
                             f"valid: a tensor of n_bins - 1 values")
        bins = level_bins(rows, queries, thresholds)
    else:
        bins = rank_bins(rows, queries, n_bins)
    return _from_bins(bins, queries, n_bins, generator, top=sampler == "top")

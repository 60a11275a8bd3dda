"""CMSSH: cross-modality similarity-sensitive hashing (Bronstein, Bronstein, Michel & Paragios, CVPR 2010).

Boosting over cross-modal pairs ``(x_k, y_k)`` labelled ``s_k = +1`` (similar) or ``-1`` (dissimilar).
Bit i is a pair of affine hash functions ``xi_i(x) = sign(p_i^T x + a_i)``, ``eta_i(y) = sign(q_i^T y + b_i)``
(a weak learner that predicts ``s_k`` by ``xi_i(x_k) eta_i(y_k)``), chosen on pair weights ``w_i``.
The boosting loop, labelled (B1)-(B5) by us because the paper's own equation numbers could not be
checked against its text (``docs/methods/cmssh.md``):

    (B1)  r_i = sum_k w_i(k) s_k xi_i(x_k) eta_i(y_k)                 weighted correlation to maximise
    (B2)  relaxed (signs and offsets dropped, centred data, |p| = |q| = 1):
          max p^T C_i q,  C_i = sum_{k in P} w_i(k) x_k y_k^T - sum_{k in N} w_i(k) x_k y_k^T,
          solved by the leading left/right singular vectors of C_i
    (B3)  offsets a_i, b_i: chosen to maximise the exact r_i of (B1) given p_i, q_i
    (B4)  alpha_i = 1/2 log((1 + r_i) / (1 - r_i)) = 1/2 log((1 - eps_i) / eps_i),  eps_i = (1 - r_i) / 2
    (B5)  w_{i+1}(k) = w_i(k) exp(-alpha_i s_k xi_i(x_k) eta_i(y_k)) / Z_i     (AdaBoost re-weighting)
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from cmhcore.params import Interval
from methods.linalg import AffineCodes, as_float, col_sum, project, top_singular_pair

__all__ = ["CMSSH", "sample_pairs", "boost"]


def _pm1(values: np.ndarray) -> np.ndarray:
    """x >= 0 -> +1 else -1, as float (the binarisation rule of the whole suite)."""
    return np.where(values >= 0, 1.0, -1.0)


def sample_pairs(labels: np.ndarray, n_pairs: int, rng: np.random.Generator,
                 max_rounds: int = 200, patience: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Balanced random cross-modal pairs (image of item i, text of item j) among labeled items.

    Returns ``(i, j, s)``: row indices into ``labels`` and ``s = +1`` when items i and j share a
    label, else ``-1``. Half the pairs are similar, half dissimilar, each drawn uniformly (with
    replacement) from all ``n^2`` ordered pairs of its kind, by rejection in vectorised rounds.
    A kind that is still short after ``max_rounds`` rounds, or that no round has found for
    ``patience`` rounds in a row, keeps fewer pairs (a single-class training set has no
    dissimilar pair at all).
    """
    n = labels.shape[0]
    lab = np.asarray(labels, dtype=np.float32)
    want = {1: n_pairs - n_pairs // 2, -1: n_pairs // 2}
    got = {1: [], -1: []}
    have = {1: 0, -1: 0}
    idle = {1: 0, -1: 0}
    # Rounds of up to 4 n_pairs draws, capped so the gathered label rows stay near 64 MB.
    chunk = int(min(max(4 * n_pairs, 1024), max(1024, 2**24 // max(lab.shape[1], 1))))
    for _ in range(max_rounds):
        short = [k for k in (1, -1) if have[k] < want[k] and idle[k] < patience]
        if not short:
            break
        i = rng.integers(0, n, size=chunk)
        j = rng.integers(0, n, size=chunk)
        s = np.where(np.einsum("km,km->k", lab[i], lab[j]) > 0, 1, -1)
        for kind in short:
            sel = np.flatnonzero(s == kind)[:want[kind] - have[kind]]
            idle[kind] = idle[kind] + 1 if sel.size == 0 else 0
            got[kind].append((i[sel], j[sel]))
            have[kind] += sel.size
    parts = [(a, b, np.full(a.size, kind, dtype=np.int8)) for kind in (1, -1) for a, b in got[kind]]
    return (np.concatenate([p[0] for p in parts]).astype(np.int64),
            np.concatenate([p[1] for p in parts]).astype(np.int64),
            np.concatenate([p[2] for p in parts]))


def _threshold_grid(values: np.ndarray, n_thresholds: int) -> np.ndarray:
    """Candidate thresholds at evenly spaced quantiles, each halfway between two distinct sorted values.

    Never equal to a training value, so training items are never at the decision boundary (where
    rounding could flip a bit between batch and one-by-one encoding).
    """
    u = np.unique(values)
    if u.size < 2:
        return np.array([u[0] - 1.0]) if u.size else np.array([0.0])
    pos = np.floor(np.linspace(0.0, 1.0, n_thresholds + 2)[1:-1] * (u.size - 1)).astype(np.int64)
    pos = np.unique(np.clip(pos, 0, u.size - 2))
    return (u[pos] + u[pos + 1]) / 2.0


def _correlation_grid(u, v, i, j, ta, tb, ws) -> np.ndarray:
    """r[a, b] = sum_k ws_k sign(u[i_k] - ta_a) sign(v[j_k] - tb_b) for sorted thresholds, in O(m + T^3).

    Pairs are binned by how many thresholds lie below their projections (a 2-D weighted histogram);
    sign(u - ta_a) is +1 exactly for the bins above a, so r is a product of three small matrices.
    """
    bu = np.searchsorted(ta, u, side="right")[i]  # number of thresholds <= u  (0..Ta), per pair
    bv = np.searchsorted(tb, v, side="right")[j]
    na, nb = ta.size + 1, tb.size + 1
    hist = np.bincount(bu * nb + bv, weights=ws, minlength=na * nb).reshape(na, nb)
    sa = np.where(np.arange(na)[:, None] > np.arange(ta.size)[None, :], 1.0, -1.0)  # (bin, threshold)
    sb = np.where(np.arange(nb)[:, None] > np.arange(tb.size)[None, :], 1.0, -1.0)
    return sa.T @ hist @ sb


def _best_offset(values: np.ndarray, idx: np.ndarray, coef: np.ndarray) -> tuple[float, float]:
    """Exact 1-D search: threshold maximising ``sum_k coef_k sign(values[idx_k] - theta)``.

    Candidates are the midpoints between consecutive distinct ``values`` (so at least one item lies
    on each side and none on the boundary). Returns ``(theta, value)``; O(n log n + m).
    """
    uniq, inverse = np.unique(values, return_inverse=True)
    if uniq.size < 2:
        return float(uniq[0] - 1.0), float(coef.sum())
    group = np.bincount(inverse[idx], weights=coef, minlength=uniq.size)
    below = np.cumsum(group)[:-1]  # mass at or below uniq[g], i.e. on the -1 side of theta_g
    r = group.sum() - 2.0 * below
    g = int(np.argmax(r))
    return float((uniq[g] + uniq[g + 1]) / 2.0), float(r[g])


def boost(x, y, x_mean, y_mean, i, j, s, n_bits: int, n_thresholds: int, max_refine: int = 10) -> dict:
    """Run the CMSSH boosting loop (B1)-(B5) on pairs ``(x[i_k], y[j_k], s_k)``.

    Every row of ``x``/``y`` is a training item (its projections give the candidate offsets); the
    pairs may use a subset of them. Returns the hash functions (``p``, ``q`` with offsets ``a``,
    ``b`` that fold in the centring, so ``xi(x) = sign(x @ p + a)``) and per-round diagnostics:
    ``eps`` (weighted pair error of each new weak learner under its round's weights), ``alpha``,
    ``z`` (the normaliser of (B5)) and ``r`` (the weighted correlation (B1) reached).
    """
    n, m = x.shape[0], i.size
    dx, dy = x.shape[1], y.shape[1]
    w = np.full(m, 1.0 / m)  # uniform initial weights over the (balanced) pair set
    s = s.astype(np.float64)
    p_all, q_all = np.zeros((dx, n_bits)), np.zeros((dy, n_bits))
    out = {k: np.zeros(n_bits) for k in ("a", "b", "eps", "alpha", "z", "r")}
    # W^T (n x n, one entry per pair) keeps its sparsity pattern across rounds: order it once.
    order = np.lexsort((i, j))
    indptr = np.concatenate([[0], np.cumsum(np.bincount(j, minlength=n))])
    for t in range(n_bits):
        ws = w * s
        # (B2): C = sum_k ws_k (x_ik - mx)(y_jk - my)^T = Xc^T W Yc.
        wt = sp.csr_matrix((ws[order], i[order], indptr), shape=(n, n))
        zx = wt @ x
        zx = zx.toarray() if sp.issparse(zx) else np.asarray(zx)  # W^T X   (n, dx)
        col_w = np.bincount(j, weights=ws, minlength=n)  # W^T 1
        zc = zx - np.outer(col_w, x_mean)  # W^T Xc
        cmat = np.asarray(y.T @ zc).T - np.outer(zc.sum(axis=0), y_mean)  # Xc^T W Yc  (dx, dy)
        _, p, q = top_singular_pair(cmat)
        # (B3): offsets for the centred projections u, v of every training item.
        u, v = project(x, p, -x_mean @ p), project(y, q, -y_mean @ q)
        ta, tb = _threshold_grid(u, n_thresholds), _threshold_grid(v, n_thresholds)
        grid = _correlation_grid(u, v, i, j, ta, tb, ws)  # joint coarse search
        ka, kb = np.unravel_index(int(np.argmax(np.abs(grid))), grid.shape)
        if grid[ka, kb] < 0:  # the text function with flipped sign correlates positively
            q, v, tb = -q, -v, -tb
        theta_a, theta_b = float(ta[ka]), float(tb[kb])
        best = -np.inf
        for _ in range(max_refine):  # exact coordinate ascent from the grid optimum; r never falls
            theta_a, _ = _best_offset(u, i, ws * _pm1(v[j] - theta_b))
            theta_b, r = _best_offset(v, j, ws * _pm1(u[i] - theta_a))
            if r <= best + 1e-15:
                break
            best = r
        a, b = -x_mean @ p - theta_a, -y_mean @ q - theta_b
        h = _pm1(project(x, p, a)[i]) * _pm1(project(y, q, b)[j])  # exact outputs of the new learner
        eps = float(w[h != s].sum())
        eps_c = min(max(eps, 1e-12), 1.0 - 1e-12)
        alpha = 0.5 * np.log((1.0 - eps_c) / eps_c) if eps < 0.5 else 0.0  # (B4); useless learner: weight 0
        w = w * np.exp(-alpha * s * h)  # (B5)
        z = float(w.sum())
        w /= z
        p_all[:, t], q_all[:, t] = p, q
        for key, val in (("a", a), ("b", b), ("eps", eps), ("alpha", alpha), ("z", z), ("r", 1.0 - 2.0 * eps)):
            out[key][t] = val
    return {"p": p_all, "q": q_all, **out}


class CMSSH(AffineCodes):
    """Cross-modality similarity-sensitive hashing (Bronstein et al., CVPR 2010), boosted affine bits.

    Parameters
    ----------
    n_bits : int
        Code length = number of boosting rounds (one weak learner per bit).
    n_pairs : int
        Number of training pairs (half similar, half dissimilar).
    n_thresholds : int
        Candidate offsets per modality for the coarse joint search of (B3) (quantiles of the projections).
    random_state : int or None
        Seed of the pair sampling.

    Choices the paper leaves open, and deviations (details in ``docs/methods/cmssh.md``):

    * pairs: ``n_pairs`` ordered cross-modal pairs among labeled items, drawn uniformly with
      replacement, half similar (sharing a label) and half dissimilar, uniform initial weights;
      unlabeled items enter only the centring means and the candidate offsets;
    * (B2): leading singular pair of the weighted cross-covariance on centred, unscaled features;
    * (B3): a joint ``n_thresholds`` x ``n_thresholds`` quantile search, then exact coordinate ascent
      over all midpoints between training projections (optimal in each offset given the other);
    * a learner with weighted error >= 0.5 gets alpha = 0;
    * retrieval uses plain Hamming distance; the boosting weights ``alpha_`` are kept, not used;
    * database codes come from the learned functions, like queries.
    """

    bits_range = (1, 1024)
    needs_labels = True
    check_params = {"n_pairs": 4000, "n_thresholds": 16}
    _parameter_constraints = {"n_pairs": [Interval(int, 2, None, closed="left")],
                              "n_thresholds": [Interval(int, 1, None, closed="left")]}

    def __init__(self, n_bits: int = 32, n_pairs: int = 100_000, n_thresholds: int = 32,
                 random_state: int | None = 0):
        self.n_bits = n_bits
        self.n_pairs = n_pairs
        self.n_thresholds = n_thresholds
        self.random_state = random_state

    def fit(self, image, text, labels, labeled=None):
        self._validate_params()
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        x, y = as_float(image), as_float(text)
        self.image_mean_ = col_sum(x) / x.shape[0]
        self.text_mean_ = col_sum(y) / y.shape[0]
        rows = np.flatnonzero(labeled)
        rng = np.random.default_rng(self.random_state)
        i, j, s = sample_pairs(labels[rows], int(self.n_pairs), rng)
        self.n_similar_pairs_ = int((s > 0).sum())
        self.n_dissimilar_pairs_ = int((s < 0).sum())
        # Pairs index labeled items only; every training item's projection is an offset candidate.
        out = boost(x, y, self.image_mean_, self.text_mean_, rows[i], rows[j], s, int(self.n_bits),
                    int(self.n_thresholds))
        self.image_proj_, self.text_proj_ = out["p"], out["q"]
        self.image_offset_, self.text_offset_ = out["a"], out["b"]
        self.alpha_, self.pair_error_ = out["alpha"], out["eps"]
        return self

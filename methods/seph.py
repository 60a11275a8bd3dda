"""SePH: Semantics-Preserving Hashing (Lin, Ding, Hu, Wang, CVPR 2015), variants SePH_rnd and SePH_km.

Two stages, as in the paper:

1. **Codes of the training items** (paper Sec. 3.2). Semantic affinities ``a_ij`` (cosine similarity
   of label vectors) become a distribution over pairs, ``p_ij = a_ij / sum_{m!=n} a_mn`` (Eq. 1). The
   relaxed codes ``H`` give a second one through a Student-t of the Hamming distance,
   ``q_ij = (1 + d_ij)^-1 / sum_{m!=n} (1 + d_mn)^-1`` (Eq. 2) with ``d_ij = ||h_i - h_j||^2 / 4``
   (Eq. 4, the Hamming distance when ``h`` is binary). The objective is ``KL(P || Q)`` (Eq. 3) plus the
   quantisation loss ``alpha' || |H| - 1 ||_F^2`` (Eq. 5); its gradient (Eq. 6) is
   ``sum_j (p_ij - q_ij) (1 + d_ij)^-1 (h_i - h_j) + 2 alpha' (|h_i| - 1) sign(h_i)``. The codes are
   ``sign(H)``.
2. **Hash functions** (paper Sec. 3.3): for every bit and every modality, a kernel logistic regression
   (Eqs. 7-9) on RBF features of 500 anchors, ``phi(x)_a = exp(-||x - x_a||^2 / (2 sigma^2))``; the
   anchors are random training items (SePH_rnd) or k-means centres (SePH_km).

Equation numbers are the CVPR 2015 paper's, unverified against its text here; the formulas and the
numeric settings the paper leaves to its code (optimiser constants, alpha, the kernel width rule, the
regularisation weight) follow the authors' public MATLAB release. Details: ``docs/methods/seph.md``.

Memory: the objective couples every pair of training items. It is evaluated in 512 x 512 tiles of
pairs (upper triangle only, P and Q being symmetric), with the affinities recomputed from the
(n x n_labels) normalised label matrix in each tile, so no n x n matrix is ever stored: memory is
O(n c + tile). Time stays quadratic, so, as the paper does, codes are learned on a random sample of
at most ``max_code_items`` labeled items (5000).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.sparse as sp
from scipy.optimize import minimize
from scipy.special import expit
from numba import njit
from threadpoolctl import threadpool_limits

from cmhcore.errors import InputError
from cmhcore.params import Interval
from methods.base import Hasher, binarize

__all__ = ["SePHRnd", "SePHKm"]

# Optimiser constants of the authors' KL minimiser (a t-SNE-style gradient descent).
_LEARNING_RATE = 500.0
_MOMENTUM = 0.5
_MIN_GAIN = 0.01
_INIT_SCALE = 1e-4
# Side of the square tiles of pairs the objective is evaluated in (a few MB of temporaries).
_BLOCK = 512
# Fixed number of parts the tiles are split into (and of threads that evaluate them).
_PARTS = 2


# ------------------------------------------------------------------------------------------ helpers
_ENCODE_ROWS = 8192  # rows encoded at once: ~100 MB of float64 work arrays at 1,000-d input and 500 anchors


def _row_sq_norms(x) -> np.ndarray:
    if sp.issparse(x):
        return np.asarray(x.multiply(x).sum(axis=1), dtype=np.float64).ravel()
    return np.einsum("ij,ij->i", x, x)


def _as_float(x):
    """Dense float64 or CSR float64 (the kernel code handles both without densifying)."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def _mean_sq_distance(x) -> float:
    """Mean of ||x_i - x_j||^2 over all ordered pairs (i, j), diagonal included, in O(n d).

    Equals 2 (mean_i ||x_i||^2 - ||mean x||^2); it is the authors' kernel width sigma^2.
    """
    mean = np.asarray(x.mean(axis=0)).ravel()
    return float(max(2.0 * (_row_sq_norms(x).mean() - mean @ mean), 0.0))


def _rbf(x, anchors: np.ndarray, anchor_sq: np.ndarray, sigma2: float) -> np.ndarray:
    """RBF features exp(-||x - a||^2 / (2 sigma^2)) of every row of x against every anchor (Eq. 9)."""
    cross = x @ anchors.T
    cross = np.asarray(cross.todense()) if sp.issparse(cross) else cross
    d = _row_sq_norms(x)[:, None] + anchor_sq[None, :] - 2.0 * cross
    np.maximum(d, 0.0, out=d)  # rounding can make tiny distances negative
    d *= -0.5 / sigma2
    return np.exp(d, out=d)


def _normalised_labels(labels: np.ndarray) -> np.ndarray:
    """Rows l_i / ||l_i||, so that a_ij = <row_i, row_j> is the cosine affinity of the paper."""
    lab = labels.astype(np.float64)
    return lab / np.sqrt(lab.sum(axis=1, keepdims=True))


def _affinity_stats(ln: np.ndarray, block: int = _BLOCK) -> tuple[float, float]:
    """(S, sum_{i!=j} p_ij log p_ij) for p_ij = a_ij / S, S = sum_{i!=j} a_ij (Eq. 1), blockwise."""
    n = ln.shape[0]
    col = ln.sum(axis=0)
    total = float(col @ col - np.einsum("ij,ij->", ln, ln))  # drop the diagonal a_ii = 1
    if total <= 0:
        return total, 0.0
    alog = 0.0
    for start in range(0, n, block):
        stop = min(start + block, n)
        a = ln[start:stop] @ ln.T
        a[np.arange(stop - start), np.arange(start, stop)] = 0.0
        pos = a > 0
        alog += float(np.sum(a[pos] * np.log(a[pos])))
    return total, alog / total - np.log(total)


@njit(cache=True, nogil=True)
def _tile_distances(g, sq_i, sq_j):  # pragma: no cover - compiled
    """In place: inner products h_i . h_j -> relaxed Hamming distances ||h_i - h_j||^2 / 4 (Eq. 4)."""
    for r in range(g.shape[0]):
        for col in range(g.shape[1]):
            g[r, col] = 0.25 * max(sq_i[r] + sq_j[col] - 2.0 * g[r, col], 0.0)


@njit(cache=True, nogil=True)
def _tile_weights(d, a, same):  # pragma: no cover - compiled
    """In place: ``d`` -> a_ij w_ij and ``a`` -> w_ij^2 with w_ij = (1 + d_ij)^-1 (Eq. 2); returns the
    sum of w_ij. ``same``: a diagonal tile, whose pairs i == j belong to neither P nor Q."""
    z = 0.0
    for r in range(d.shape[0]):
        for col in range(d.shape[1]):
            w = 1.0 / (1.0 + d[r, col])
            if same and r == col:
                w = 0.0
            z += w
            d[r, col] = a[r, col] * w
            a[r, col] = w * w
    return z


def _tiles_part(tiles, hd, he, ld, sq):
    """Sums over the pairs of some tiles: (sum_j a_ij w_ij (h_i - h_j), sum_j w_ij^2 (h_i - h_j),
    sum a_ij log(1 + d_ij), sum w_ij), each over ordered pairs i != j (Eqs. 2, 3, 6)."""
    n, c = hd.shape
    g_attr = np.zeros((n, c), dtype=np.float64)
    g_rep = np.zeros((n, c), dtype=np.float64)
    cross = z = 0.0
    for i0, i1, j0, j1 in tiles:
        hi, hj = hd[i0:i1], hd[j0:j1]
        same = i0 == j0
        aw = hi @ hj.T
        _tile_distances(aw, sq[i0:i1], sq[j0:j1])
        ww = ld[i0:i1] @ ld[j0:j1].T
        if same:
            np.fill_diagonal(ww, 0.0)  # pairs i == j are not part of P
        # NumPy's vectorised log1p: ~20x faster than a scalar log inside the compiled loop.
        part = float(np.dot(ww.ravel(), np.log1p(aw).ravel()))
        part_z = _tile_weights(aw, ww, same)
        twice = 1.0 if same else 2.0  # an off-diagonal tile stands for (i, j) and (j, i)
        cross += twice * part
        z += twice * part_z
        # Products with [H, 1] give sum_j m_ij h_j and the row sums sum_j m_ij in one call.
        for m, acc in ((aw, g_attr), (ww, g_rep)):
            prod = m @ he[j0:j1]
            acc[i0:i1] += prod[:, c:] * hi - prod[:, :c]
            if not same:
                prod = m.T @ he[i0:i1]
                acc[j0:j1] += prod[:, c:] * hj - prod[:, :c]
    return g_attr, g_rep, cross, z


def seph_objective(h: np.ndarray, ln: np.ndarray, alpha_eff: float, *, affinity_stats=None,
                   dtype=np.float32, block: int = _BLOCK, executor=None) -> tuple[float, np.ndarray]:
    """SePH's relaxed objective KL(P || Q) + alpha_eff || |H| - 1 ||_F^2 and its gradient (Eqs. 1-6).

    ``h``: relaxed codes (n, c); ``ln``: row-normalised labels (n, k), so that ``a = ln @ ln.T`` are the
    affinities. Pairs are visited in (block x block) tiles of the upper triangle, each used for both
    of its rows' and columns' terms (P and Q are symmetric); no n x n matrix is stored. ``dtype`` is
    the precision of the tiles (float32 for speed, float64 for checks); sums are float64. The tiles
    are split into ``_PARTS`` fixed parts, run on ``executor`` when given (threads), and the parts'
    sums are added in a fixed order, so the result does not depend on the number of threads.
    Returns ``(objective, gradient)``, the gradient float64.
    """
    n, c = h.shape
    s_total, plogp = affinity_stats if affinity_stats is not None else _affinity_stats(ln, block)
    hd = np.ascontiguousarray(h, dtype=dtype)
    ld = np.ascontiguousarray(ln, dtype=dtype)
    sq = np.einsum("ij,ij->i", hd, hd)
    he = np.hstack([hd, np.ones((n, 1), dtype=dtype)])
    tiles = [(i0, min(i0 + block, n), j0, min(j0 + block, n))
             for i0 in range(0, n, block) for j0 in range(i0, n, block)]
    parts = [tiles[p::_PARTS] for p in range(_PARTS)]
    if executor is None:
        results = [_tiles_part(part, hd, he, ld, sq) for part in parts]
    else:
        results = list(executor.map(lambda part: _tiles_part(part, hd, he, ld, sq), parts))
    g_attr, g_rep, cross, z = results[0]
    for more in results[1:]:
        g_attr += more[0]
        g_rep += more[1]
        cross += more[2]
        z += more[3]
    kl = plogp + cross / s_total + np.log(z)
    # Eq. 6: sum_j (p_ij - q_ij) w_ij (h_i - h_j), with p = a / sum(a) and q = w / z.
    grad = g_attr / s_total - g_rep / z
    h64 = np.asarray(h, dtype=np.float64)
    excess = np.abs(h64) - 1.0
    objective = kl + alpha_eff * float(np.sum(excess * excess))  # Eq. 5
    grad += 2.0 * alpha_eff * excess * np.sign(h64)
    return float(objective), grad


def learn_codes(ln: np.ndarray, n_bits: int, alpha: float, n_iter: int, rng: np.random.Generator,
                dtype=np.float32) -> tuple[np.ndarray, np.ndarray, list[float]]:
    """Minimise SePH's objective over relaxed codes (Sec. 3.2) with the authors' optimiser.

    Gradient descent with momentum and per-coordinate adaptive gains (delta-bar-delta), codes recentred
    every step, the best iterate kept. Returns (best relaxed codes, final relaxed codes, objective history).
    """
    n = ln.shape[0]
    alpha_eff = alpha / (n_bits * n)  # the release code scales alpha by 1 / (c n)
    stats = _affinity_stats(ln)
    h = _INIT_SCALE * rng.standard_normal((n, n_bits))
    incs = np.zeros_like(h)
    gains = np.ones_like(h)
    best, best_h, history = np.inf, h.copy(), []
    # Coarse threads (one per part of the tiles) with single-threaded BLAS: fine-grained BLAS or
    # compiled-loop threads spin, measured 5-25x slower on a shared 2-core machine.
    with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=_PARTS) as pool:
        for it in range(n_iter + 1):
            obj, grad = seph_objective(h, ln, alpha_eff, affinity_stats=stats, dtype=dtype, executor=pool)
            history.append(obj)
            if obj < best:
                best, best_h = obj, h.copy()
            if it == n_iter:
                break
            # Delta-bar-delta: a coordinate's gain grows while it keeps moving the same way, shrinks when it reverses.
            same = np.sign(grad) == np.sign(incs)
            gains = np.maximum(np.where(same, gains * 0.8, gains + 0.2), _MIN_GAIN)
            incs = _MOMENTUM * incs - _LEARNING_RATE * gains * grad
            h = h + incs
            h -= h.mean(axis=0)  # the objective is translation invariant; keep the codes centred
    return best_h, h, history


def klr_objective(w: np.ndarray, k: np.ndarray, k0: np.ndarray, y: np.ndarray,
                  c_reg: float) -> tuple[float, np.ndarray]:
    """Sum over bits of the kernel logistic regression objective (Eq. 8) and its gradient in ``w``.

    Per bit b: sum_i log(1 + exp(-y_ib k_i^T w_b)) + c_reg w_b^T K0 w_b (no bias term).
    """
    margin = y * (k @ w)
    k0w = k0 @ w
    value = float(np.sum(np.logaddexp(0.0, -margin)) + c_reg * np.sum(w * k0w))
    return value, k.T @ (-y * expit(-margin)) + 2.0 * c_reg * k0w


def fit_klr(k: np.ndarray, k0: np.ndarray, targets: np.ndarray, c_reg: float, max_iter: int) -> np.ndarray:
    """Kernel logistic regressions of all bits of one modality (Eqs. 7-9): weights (n_anchors, n_bits).

    The bits are independent, so their summed objective is minimised jointly by one L-BFGS run from
    w = 0. The run works in whitened coordinates ``w = T v`` with ``T^T M T = I`` for
    ``M = K^T K / 4 + 2 c_reg K0``, a bound on every bit's Hessian (logistic curvature <= 1/4). This
    changes the path, not the minimiser: on Wiki, plain L-BFGS is still 10 % above the optimum after
    500 iterations, the whitened run reaches it in about 20. Directions with ``M t = 0`` are dropped:
    there ``K t = 0`` and ``K0 t = 0``, so the RBF function they add is zero everywhere.
    """
    y = targets.astype(np.float64)
    m = k.T @ k
    m *= 0.25
    m += 2.0 * c_reg * k0
    evals, evecs = np.linalg.eigh(m)
    keep = evals > evals[-1] * 1e-12  # numerical rank, as a pseudo-inverse would take it
    t = evecs[:, keep] / np.sqrt(evals[keep])
    kt, k0t = k @ t, t.T @ k0 @ t
    r, c = t.shape[1], y.shape[1]

    def fun(flat):
        value, grad = klr_objective(flat.reshape(r, c), kt, k0t, y, c_reg)
        return value, grad.ravel()

    res = minimize(fun, np.zeros(r * c), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter), "gtol": 1e-5, "ftol": 1e-9})
    return t @ res.x.reshape(r, c)


def kmeans(x, k: int, rng: np.random.Generator, max_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means with the release's options: k random items as the start, at most ``max_iter``
    rounds, stop when no assignment changes; a cluster that empties takes the item farthest from its
    centre (MATLAB's 'singleton' rule). ``x`` dense or CSR; returns dense centres (k, d)."""
    n = x.shape[0]
    start = x[np.sort(rng.choice(n, size=k, replace=False))]
    centres = start.toarray() if sp.issparse(start) else np.array(start, dtype=np.float64)
    x_sq = _row_sq_norms(x)
    assign = np.full(n, -1)
    for _ in range(max_iter):
        cross = x @ centres.T
        d = x_sq[:, None] + _row_sq_norms(centres)[None, :] - 2.0 * np.asarray(cross)
        new = d.argmin(axis=1)
        counts = np.bincount(new, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            # Farthest items (from their own centre) become singleton clusters, largest distance first.
            own = d[np.arange(n), new]
            far = np.argsort(-own, kind="stable")[: empty.size]
            new[far] = empty
            counts = np.bincount(new, minlength=k)
        if np.array_equal(new, assign):
            break
        assign = new
        member = sp.csr_matrix((np.ones(n), (assign, np.arange(n))), shape=(k, n))
        sums = member @ x
        sums = sums.toarray() if sp.issparse(sums) else np.asarray(sums)
        # A cluster emptied by the singleton moves keeps its old centre.
        centres = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centres)
    return centres


# ------------------------------------------------------------------------------------------ the method
class _SePH(Hasher):
    """Semantics-Preserving Hashing (Lin et al., CVPR 2015): KL-matched codes (Eqs. 1-6), then per-bit
    kernel logistic regression on RBF features of anchors (Eqs. 7-9).

    Parameters
    ----------
    n_bits : int
        Code length c.
    random_state : int or None
        Seeds the training sample, the anchor pool, the anchors (or k-means start) and the initial codes.
    n_anchors : int, default 500
        RBF anchors per modality (paper: 500); capped at the pool size (random) or half of it (k-means).
    max_code_items : int, default 5000
        Labeled items, drawn at random, that learn the codes and the regressions (the objective is
        quadratic in them); also the size of the pool the anchors and kernel width come from.
    alpha : float, default 0.01
        Quantisation weight (Eq. 5), used as ``alpha / (n_bits * n)`` like the release.
    n_iter : int, default 100
        Gradient steps of the KL minimiser (the release's t-SNE-style descent; best iterate kept).
    klr_c : float, default 0.01
        Weight of each regression's RKHS-norm regulariser ``w^T K0 w`` (no bias term, as the release).
    klr_max_iter : int, default 500
        L-BFGS iterations of the kernel logistic regressions.

    Choices and deviations (details in ``docs/methods/seph.md``): cosine label affinities; kernel
    width = mean squared distance in the pool; ``encode_image``/``encode_text`` give single-view codes
    ``sign(phi(x)^T w)`` for database and queries alike (the paper's unified code of a paired item is
    :meth:`encode_pair`, not used by the evaluator); the regressions of one modality are solved jointly
    to their minimum in whitened coordinates (the release's per-bit L-BFGS stops early); features are
    not centred (RBF features depend on distances only); float32 tiles with float64 sums. Only labeled
    items learn codes; unlabeled ones join the pool for anchors and kernel width.
    """

    needs_labels = True
    check_params = {"n_anchors": 60, "n_iter": 100, "klr_max_iter": 200}
    _parameter_constraints = {
        "n_anchors": [Interval(int, 1, None, closed="left")],
        "max_code_items": [Interval(int, 2, None, closed="left")],
        "alpha": [Interval(float, 0, None, closed="left")],
        "n_iter": [Interval(int, 1, None, closed="left")],
        "klr_c": [Interval(float, 0, None, closed="neither")],
        "klr_max_iter": [Interval(int, 1, None, closed="left")],
    }
    _anchor_mode = "random"

    def __init__(self, n_bits: int = 32, random_state: int | None = 0, n_anchors: int = 500,
                 max_code_items: int = 5000, alpha: float = 0.01, n_iter: int = 100,
                 klr_c: float = 0.01, klr_max_iter: int = 500):
        self.n_bits = n_bits
        self.random_state = random_state
        self.n_anchors = n_anchors
        self.max_code_items = max_code_items
        self.alpha = alpha
        self.n_iter = n_iter
        self.klr_c = klr_c
        self.klr_max_iter = klr_max_iter

    # -------------------------------------------------------------------------------- fit
    def fit(self, image, text, labels, labeled=None):
        self._validate_params()
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        lab_idx = np.flatnonzero(labeled)
        if lab_idx.size < 2:
            raise InputError(f"{type(self).__name__} needs at least 2 labeled training items, got {lab_idx.size}")
        vis = labels[lab_idx].astype(np.float64)
        col = vis.sum(axis=0)
        if float(col @ col - vis.sum()) <= 0:  # sum over i != j of shared labels
            raise InputError("labels: no two labeled training items share a label; SePH's affinities would all be 0")
        image, text = _as_float(image), _as_float(text)
        n = image.shape[0]
        rng = np.random.default_rng(self.random_state)

        # The paper's sampling: a random subset of labeled items learns the codes (Sec. 3.2).
        code_idx = np.sort(rng.choice(lab_idx, size=min(lab_idx.size, self.max_code_items), replace=False))
        # Anchors and kernel widths come from all training items, labeled or not (features only).
        pool = np.sort(rng.choice(n, size=min(n, self.max_code_items), replace=False))

        ln = _normalised_labels(labels[code_idx])
        h_best, _, history = learn_codes(ln, self.n_bits, float(self.alpha), self.n_iter, rng)
        codes = binarize(h_best)
        self.kl_history_ = np.asarray(history)
        self.n_code_items_ = int(code_idx.size)

        # The two modalities' hash functions are independent: one thread each, with single-threaded
        # BLAS (its own threads spin, measured ~20x slower on a shared 2-core machine).
        views = list(zip((image, text), rng.spawn(2)))
        with threadpool_limits(limits=1), ThreadPoolExecutor(max_workers=2) as workers:
            img_view, txt_view = workers.map(lambda v: self._fit_view(v[0], pool, code_idx, codes, v[1]), views)
        self.image_anchors_, self.image_sigma2_, self.image_weights_ = img_view
        self.text_anchors_, self.text_sigma2_, self.text_weights_ = txt_view
        return self

    def _anchors(self, x, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        sigma2 = _mean_sq_distance(x)
        if not sigma2 > 0:  # all items identical: any positive width gives the same constant features
            sigma2 = 1.0
        n = x.shape[0]
        if self._anchor_mode == "random":
            m = min(self.n_anchors, n)
            rows = np.sort(rng.choice(n, size=m, replace=False))
            anchors = x[rows]
            anchors = anchors.toarray() if sp.issparse(anchors) else np.array(anchors)
        else:
            anchors = kmeans(x, max(1, min(self.n_anchors, n // 2)), rng)
        return np.ascontiguousarray(anchors), float(sigma2)

    def _fit_view(self, x, pool, code_idx, codes, rng) -> tuple[np.ndarray, float, np.ndarray]:
        """One modality: anchors and kernel width from the pool, then its hash functions (Sec. 3.3)."""
        anchors, sigma2 = self._anchors(x[pool], rng)
        anchor_sq = _row_sq_norms(anchors)
        k = _rbf(x[code_idx], anchors, anchor_sq, sigma2)
        k0 = _rbf(anchors, anchors, anchor_sq, sigma2)
        return anchors, sigma2, fit_klr(k, k0, codes, float(self.klr_c), self.klr_max_iter)

    # -------------------------------------------------------------------------------- encode
    def _scores(self, x, modality: str) -> np.ndarray:
        self._check_fitted(f"{modality}_weights_")
        anchors = getattr(self, f"{modality}_anchors_")
        x = self._validate_encode(x, modality, anchors.shape[1])
        anchor_sq, sigma2 = _row_sq_norms(anchors), getattr(self, f"{modality}_sigma2_")
        weights = getattr(self, f"{modality}_weights_")
        # In row blocks: the float64 copy and the n x anchors kernel of a whole NUS-WIDE-size database
        # (193,734 x 1,000 text features) would take ~3 GB at once; each row's score depends on its row only.
        out = np.empty((x.shape[0], weights.shape[1]), dtype=np.float64)
        for start in range(0, x.shape[0], _ENCODE_ROWS):
            rows = slice(start, start + _ENCODE_ROWS)
            out[rows] = _rbf(_as_float(x[rows]), anchors, anchor_sq, sigma2) @ weights
        return out

    def encode_image(self, image) -> np.ndarray:
        """Single-view codes sign(phi(x)^T w) of images (the paper's query codes)."""
        return binarize(self._scores(image, "image"))

    def encode_text(self, text) -> np.ndarray:
        """Single-view codes sign(phi(x)^T w) of texts (the paper's query codes)."""
        return binarize(self._scores(text, "text"))

    def encode_pair(self, image, text) -> np.ndarray:
        """The paper's unified code of paired items (Sec. 3.4), from both views' bit probabilities.

        Bit k is +1 when p(+|img) p(+|txt) >= p(-|img) p(-|txt), i.e. when p(+|img) + p(+|txt) >= 1.
        """
        s_img, s_txt = self._scores(image, "image"), self._scores(text, "text")
        if s_img.shape[0] != s_txt.shape[0]:
            raise InputError(f"encode_pair: image has {s_img.shape[0]} rows, text has {s_txt.shape[0]}; "
                             "they must be paired")
        return binarize(expit(s_img) + expit(s_txt) - 1.0)


class SePHRnd(_SePH):
    __doc__ = "SePH_rnd: SePH with random training items as the RBF anchors.\n\n" + _SePH.__doc__
    _anchor_mode = "random"


class SePHKm(_SePH):
    __doc__ = "SePH_km: SePH with k-means centres as the RBF anchors (Lloyd, one run).\n\n" + _SePH.__doc__
    _anchor_mode = "kmeans"

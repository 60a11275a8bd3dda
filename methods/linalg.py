"""Linear algebra shared by the linear hashers (CMSSH, SCM-Orth, SCM-Seq).

Every function accepts a dense array or a CSR matrix for the feature side and never densifies a
sparse one: centring is folded into offsets (``x @ w - mean @ w``) and Gram matrices are corrected
algebraically. Decompositions are made deterministic: singular vectors get a fixed sign and random
complements come from a seeded generator, so fitted projections do not depend on the LAPACK build.

:class:`AffineCodes` is the encoder these methods share: bit t of an item is
``sign(x @ proj_[:, t] + offset_[t])`` per modality.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.linalg import ArpackNoConvergence, svds

from methods.base import Hasher, binarize

__all__ = ["RANK_TOL", "AffineCodes", "as_float", "col_sum", "t_dot", "centred_gram", "project", "whitener",
           "fix_sign", "top_singular_pair", "low_rank_svd", "orth_complement"]

# Directions whose training variance is below this fraction of the largest are numerically zero
# (e.g. the all-ones direction of centred L1-normalised histograms); no projection may use them.
RANK_TOL = 1e-10

# Above this smaller dimension, top_singular_pair uses ARPACK for the one leading pair instead of a full SVD.
_ARPACK_MIN_DIM = 64


def as_float(x):
    """Dense float64 array or float64 CSR matrix (sparse text stays sparse)."""
    if sp.issparse(x):
        return sp.csr_matrix(x, dtype=np.float64)
    return np.asarray(x, dtype=np.float64)


def col_sum(x) -> np.ndarray:
    """Column sums of a dense or sparse matrix as a 1-D float64 array."""
    return np.asarray(x.sum(axis=0), dtype=np.float64).ravel()


def t_dot(x, b) -> np.ndarray:
    """``x^T @ b`` as a dense array, for dense or sparse ``x`` and dense ``b``."""
    return np.asarray(x.T @ b, dtype=np.float64)


def centred_gram(x, mean: np.ndarray) -> np.ndarray:
    """``(x - 1 mean^T)^T (x - 1 mean^T)`` without densifying a sparse ``x``."""
    g = x.T @ x
    g = g.toarray() if sp.issparse(g) else np.asarray(g)
    n = x.shape[0]
    s = col_sum(x)
    # (x - 1 m^T)^T (x - 1 m^T) = x^T x - s m^T - m s^T + n m m^T,  s = x^T 1
    return g - np.outer(s, mean) - np.outer(mean, s) + n * np.outer(mean, mean)


def project(x, w: np.ndarray, offset) -> np.ndarray:
    """``x @ w + offset``; callers pass ``offset = -mean @ w`` so centring never densifies a sparse ``x``."""
    return np.asarray(x @ w, dtype=np.float64) + offset


def whitener(cov: np.ndarray, reg: float) -> tuple[np.ndarray, float, int]:
    """``K`` with ``K^T (cov + ridge I) K = I`` on the span of the data; returns ``(K, ridge, rank)``.

    Directions of numerically zero variance (eigenvalue <= ``RANK_TOL`` times the largest) are
    dropped, so ``K`` has ``rank`` columns: a projection along them would turn rounding noise into
    code bits. ``ridge = reg * tr(cov) / d`` (scale-free) bounds the gain along tiny but genuine
    directions.
    """
    evals, evecs = np.linalg.eigh((cov + cov.T) / 2.0)
    top = float(evals[-1]) if evals.size else 0.0
    keep = evals > RANK_TOL * top if top > 0 else np.zeros(evals.shape, dtype=bool)
    ridge = reg * float(np.trace(cov)) / max(cov.shape[0], 1)
    k = evecs[:, keep] / np.sqrt(evals[keep] + ridge)
    return k, ridge, int(keep.sum())


def fix_sign(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A singular pair is defined up to a joint sign: flip both so that ``u``'s largest-magnitude entry is positive."""
    i = int(np.argmax(np.abs(u)))
    return (u, v) if u[i] >= 0 else (-u, -v)


def top_singular_pair(m: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Largest singular value and its sign-fixed singular vectors ``(s, u, v)`` of a dense matrix.

    ARPACK from a fixed start vector when both sides exceed 64 (one pair of a large matrix), a full
    LAPACK SVD otherwise or when ARPACK does not converge.
    """
    if min(m.shape) > _ARPACK_MIN_DIM:
        try:
            v0 = np.ones(min(m.shape)) / np.sqrt(min(m.shape))  # fixed start: deterministic
            if m.shape[0] <= m.shape[1]:
                u, s, vt = svds(m, k=1, v0=v0, solver="arpack")
            else:
                ut, s, v = svds(m.T, k=1, v0=v0, solver="arpack")
                u, vt = v.T, ut.T
            if np.all(np.isfinite(s)):
                uu, vv = fix_sign(u[:, 0], vt[0])
                return float(s[0]), uu, vv
        except ArpackNoConvergence:  # pragma: no cover - fall back to the dense SVD
            pass
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    uu, vv = fix_sign(u[:, 0], vt[0])
    return float(s[0]), uu, vv


def low_rank_svd(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Thin SVD ``(U, s, V)`` of ``a @ b.T`` from its factors, never forming the product.

    A QR of each factor, then the SVD of the ``k x k`` core ``R_a R_b^T``: O((m + n) k^2) for
    ``a`` (m x k) and ``b`` (n x k). ``U`` has ``min(m, k)`` columns, ``V`` ``min(n, k)``, ``s`` holds
    ``min(m, n, k)`` values in decreasing order.
    """
    qa, ra = np.linalg.qr(a)
    qb, rb = np.linalg.qr(b)
    u, s, vt = np.linalg.svd(ra @ rb.T)
    return qa @ u, s, qb @ vt.T


def orth_complement(basis: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``k`` orthonormal vectors orthogonal to ``span(basis)`` (orthonormal columns), drawn from ``rng``.

    Drawn rather than taken from a LAPACK null space, so that the result depends only on the span
    and the seed, not on the library. Returns ``min(k, dim - rank)`` columns.
    """
    dim = basis.shape[0]
    k = min(k, dim - basis.shape[1])
    if k <= 0:
        return np.zeros((dim, 0))
    g = rng.standard_normal((dim, k))
    for _ in range(2):  # project twice: one pass loses orthogonality when the basis is large
        g -= basis @ (basis.T @ g)
    q, _ = np.linalg.qr(g)
    return q


class AffineCodes(Hasher):
    """Hashers whose bits are affine projections per modality: ``sign(x @ proj_ + offset_)``.

    Subclasses set ``image_proj_``, ``image_offset_``, ``text_proj_`` and ``text_offset_`` in ``fit``.
    """

    def encode_image(self, image):
        self._check_fitted("image_proj_")
        image = self._validate_encode(image, "image", self.image_proj_.shape[0])
        return binarize(project(as_float(image), self.image_proj_, self.image_offset_))

    def encode_text(self, text):
        self._check_fitted("text_proj_")
        text = self._validate_encode(text, "text", self.text_proj_.shape[0])
        return binarize(project(as_float(text), self.text_proj_, self.text_offset_))

"""methods.linalg: each helper against the dense or brute-force computation it replaces."""
import numpy as np
import pytest
import scipy.sparse as sp

from methods.linalg import (RANK_TOL, AffineCodes, as_float, centred_gram, col_sum, fix_sign, low_rank_svd,
                            orth_complement, project, t_dot, top_singular_pair, whitener)


def _sparse(n=40, d=15, seed=0):
    rng = np.random.default_rng(seed)
    dense = (rng.random((n, d)) < 0.2) * rng.random((n, d))
    return sp.csr_matrix(dense.astype(np.float32)), dense.astype(np.float32).astype(np.float64)


def test_as_float_keeps_sparse_sparse_and_makes_float64():
    xs, dense = _sparse()
    out = as_float(xs)
    assert sp.isspmatrix_csr(out) and out.dtype == np.float64
    np.testing.assert_array_equal(out.toarray(), dense)
    ints = as_float(np.arange(6).reshape(2, 3))
    assert isinstance(ints, np.ndarray) and ints.dtype == np.float64


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_col_sum_t_dot_and_project_match_dense_algebra(kind):
    xs, dense = _sparse(seed=1)
    x = dense if kind == "dense" else as_float(xs)
    rng = np.random.default_rng(1)
    b, w = rng.standard_normal((40, 3)), rng.standard_normal((15, 4))
    mean = dense.mean(0)
    np.testing.assert_allclose(col_sum(x), dense.sum(0), rtol=1e-12)
    assert col_sum(x).ndim == 1
    np.testing.assert_allclose(t_dot(x, b), dense.T @ b, rtol=1e-12, atol=1e-12)
    # the offset -mean @ w folds the centring in: (x - mean) @ w
    np.testing.assert_allclose(project(x, w, -mean @ w), (dense - mean) @ w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_centred_gram_matches_the_gram_of_centred_data(kind):
    xs, dense = _sparse(seed=2)
    x = dense if kind == "dense" else as_float(xs)
    mean = dense.mean(0) + 0.05  # any vector, e.g. a mean over more items than these rows
    want = (dense - mean).T @ (dense - mean)
    np.testing.assert_allclose(centred_gram(x, mean), want, rtol=1e-10, atol=1e-12)


def test_whitener_whitens_the_span_and_drops_null_directions():
    rng = np.random.default_rng(3)
    z = rng.standard_normal((200, 4))
    x = np.hstack([z, z[:, :2] + z[:, 2:3], np.zeros((200, 1))])  # rank 4 in 7 dimensions
    xc = x - x.mean(0)
    cov = xc.T @ xc
    k, ridge, rank = whitener(cov, 1e-3)
    assert rank == 4 and k.shape == (7, 4)
    assert ridge == pytest.approx(1e-3 * np.trace(cov) / 7)
    np.testing.assert_allclose(k.T @ (cov + ridge * np.eye(7)) @ k, np.eye(4), atol=1e-10)
    # every kept direction lies in the span of the data: nothing along the constant column
    np.testing.assert_allclose(k[6], 0.0, atol=1e-12)
    k0, ridge0, _ = whitener(cov, 0.0)
    assert ridge0 == 0.0
    np.testing.assert_allclose(k0.T @ cov @ k0, np.eye(4), atol=1e-9)


def test_whitener_of_zero_covariance_keeps_no_direction():
    k, ridge, rank = whitener(np.zeros((3, 3)), 1e-4)
    assert rank == 0 and k.shape == (3, 0) and ridge == 0.0


def test_rank_tolerance_is_relative_to_the_largest_eigenvalue():
    cov = np.diag([1.0, 2 * RANK_TOL, 0.5 * RANK_TOL]) * 1e6
    assert whitener(cov, 0.0)[2] == 2


def test_fix_sign_makes_the_largest_entry_of_u_positive_and_flips_both():
    u, v = np.array([0.1, -0.9, 0.3]), np.array([1.0, 2.0])
    uu, vv = fix_sign(u, v)
    np.testing.assert_array_equal(uu, -u)
    np.testing.assert_array_equal(vv, -v)
    assert fix_sign(uu, vv)[0] is uu  # already positive: unchanged


@pytest.mark.parametrize("shape", [(12, 7), (7, 12), (90, 70), (70, 90)])  # LAPACK path and ARPACK path
def test_top_singular_pair_matches_the_full_svd(shape):
    rng = np.random.default_rng(sum(shape))
    m = rng.standard_normal(shape)
    m += 3.0 * np.outer(rng.standard_normal(shape[0]), rng.standard_normal(shape[1]))  # a clear top pair
    s, u, v = top_singular_pair(m)
    uf, sf, vtf = np.linalg.svd(m)
    assert s == pytest.approx(sf[0], rel=1e-9)
    assert abs(u @ uf[:, 0]) == pytest.approx(1.0, abs=1e-9) and abs(v @ vtf[0]) == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(u @ m @ v, s, rtol=1e-9)  # a joint sign: u^T M v = +s
    assert u[np.argmax(np.abs(u))] > 0
    s2, u2, v2 = top_singular_pair(-m)  # the sign rule depends on the span only
    np.testing.assert_allclose(u2, u, atol=1e-9)
    np.testing.assert_allclose(v2, -v, atol=1e-9)


@pytest.mark.parametrize("m,n,k", [(9, 7, 3), (4, 10, 6), (20, 5, 8)])
def test_low_rank_svd_matches_the_svd_of_the_product(m, n, k):
    rng = np.random.default_rng(m * n * k)
    a, b = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    u, s, v = low_rank_svd(a, b)
    want = np.linalg.svd(a @ b.T, compute_uv=False)
    r = min(m, n, k)
    assert s.shape == (r,)
    np.testing.assert_allclose(s, want[:r], rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose((u[:, :r] * s) @ v[:, :r].T, a @ b.T, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)
    np.testing.assert_allclose(v.T @ v, np.eye(v.shape[1]), atol=1e-12)


def test_orth_complement_is_orthonormal_orthogonal_and_seeded():
    rng = np.random.default_rng(5)
    basis, _ = np.linalg.qr(rng.standard_normal((10, 3)))
    q = orth_complement(basis, 4, np.random.default_rng(0))
    assert q.shape == (10, 4)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    np.testing.assert_allclose(basis.T @ q, 0.0, atol=1e-12)
    np.testing.assert_array_equal(q, orth_complement(basis, 4, np.random.default_rng(0)))
    assert orth_complement(basis, 20, np.random.default_rng(0)).shape == (10, 7)  # capped at dim - rank
    assert orth_complement(np.eye(4), 2, np.random.default_rng(0)).shape == (4, 0)


class _Fixed(AffineCodes):
    def __init__(self, n_bits=3, random_state=0):
        self.n_bits, self.random_state = n_bits, random_state

    def fit(self, image, text, labels, labeled=None):
        rng = np.random.default_rng(self.random_state)
        self.image_proj_, self.text_proj_ = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
        self.image_offset_, self.text_offset_ = rng.standard_normal(3), rng.standard_normal(3)
        return self


def test_affine_codes_are_signs_of_the_affine_projections_for_dense_and_sparse_input():
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((8, 4)), rng.standard_normal((8, 5))
    h = _Fixed().fit(x, y, None)
    want_x = np.where(x @ h.image_proj_ + h.image_offset_ >= 0, 1, -1)
    want_y = np.where(y @ h.text_proj_ + h.text_offset_ >= 0, 1, -1)
    np.testing.assert_array_equal(h.encode_image(x), want_x)
    np.testing.assert_array_equal(h.encode_text(sp.csr_matrix(y)), want_y)
    assert h.encode_image(x).dtype == np.int8

"""SCM-Orth and SCM-Seq: properties only the real algorithms have, checked against dense references."""
import numpy as np
import pytest
import scipy.linalg as sla
import scipy.sparse as sp

from cmhcore.errors import InputError
from methods.base import binarize
from methods.scm import SCMOrth, SCMSeq, normalize_labels, scm_objective, semantic_cross_covariance


def _dense_s(labels):
    lt = normalize_labels(labels)
    return 2.0 * lt @ lt.T - 1.0  # (S1), n x n: only affordable in tests


def _data(n=60, dx=6, dy=5, m=4, seed=0, sparse_text=False):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, m)) < 0.35).astype(np.uint8)
    labels[labels.sum(1) == 0, 0] = 1
    latent = labels @ rng.standard_normal((m, 3))
    x = latent @ rng.standard_normal((3, dx)) + 0.7 * rng.standard_normal((n, dx))
    y = latent @ rng.standard_normal((3, dy)) + 0.7 * rng.standard_normal((n, dy))
    return x, (sp.csr_matrix(y) if sparse_text else y), labels


def _unit_cols(w):
    return w / np.linalg.norm(w, axis=0, keepdims=True)


def _assert_same_direction(a, b, what):
    cos = abs(float(a @ b)) / (np.linalg.norm(a) * np.linalg.norm(b))
    assert cos > 1 - 1e-7, f"{what}: |cos| = {cos}"


def _block_top(c_mat, cxx, cyy, k):
    """Top-k eigenvectors of the generalised eigenproblem (S4), solved densely by scipy."""
    dx, dy = c_mat.shape
    a = np.block([[np.zeros((dx, dx)), c_mat], [c_mat.T, np.zeros((dy, dy))]])
    b = sla.block_diag(cxx, cyy)
    vals, vecs = sla.eigh(a, b)
    top = np.argsort(vals)[::-1][:k]
    return vals[top], vecs[:dx, top], vecs[dx:, top]


def test_cross_covariance_without_the_n_by_n_matrix_matches_the_dense_product():
    x, y, labels = _data(sparse_text=True)
    mx, my = x.mean(0) + 0.3, np.asarray(y.mean(0)).ravel() - 0.1  # any means, e.g. from more items
    got = semantic_cross_covariance(x, y, labels, mx, my)
    want = (x - mx).T @ _dense_s(labels) @ (y.toarray() - my)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_objective_without_the_n_by_n_matrix_matches_the_dense_objective():
    rng = np.random.default_rng(1)
    _, _, labels = _data(n=50)
    bx = binarize(rng.standard_normal((50, 8)))
    by = binarize(rng.standard_normal((50, 8)))
    want = np.sum((bx.astype(float) @ by.T - 8 * _dense_s(labels)) ** 2)
    assert scm_objective(bx, by, labels, 8) == pytest.approx(want, rel=1e-12)


def test_orth_solves_the_generalised_eigenproblem():
    x, y, labels = _data()
    c = 4  # <= rank of C (4 labels + 1): every bit is informative
    h = SCMOrth(n_bits=c, reg=0.0).fit(x, y, labels)
    xc, yc = x - x.mean(0), y - y.mean(0)
    vals, ex, ey = _block_top(c * xc.T @ _dense_s(labels) @ yc, xc.T @ xc, yc.T @ yc, c)
    assert h.n_informative_bits_ == c
    np.testing.assert_allclose(h.singular_values_, vals, rtol=1e-8)
    for t in range(c):
        _assert_same_direction(h.image_proj_[:, t], ex[:, t], f"image bit {t}")
        _assert_same_direction(h.text_proj_[:, t], ey[:, t], f"text bit {t}")


def test_orth_projections_are_orthonormal_in_the_constraint_metric():
    x, y, labels = _data(n=80, dx=7, dy=6)
    h = SCMOrth(n_bits=6, reg=1e-3).fit(x, y, labels)  # 6 = min(dx, dy): includes null-space bits
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx = xc.T @ xc + h.image_ridge_ * np.eye(7)  # the constraint of (S3), with our ridge
    cyy = yc.T @ yc + h.text_ridge_ * np.eye(6)
    wx, wy = h.image_proj_, h.text_proj_
    np.testing.assert_allclose(wx.T @ cxx @ wx, np.eye(6), atol=1e-9)
    np.testing.assert_allclose(wy.T @ cyy @ wy, np.eye(6), atol=1e-9)
    # and the relaxed objective is diagonalised: bit t's correlation is its singular value, in order
    corr = wx.T @ (6 * xc.T @ _dense_s(labels) @ yc) @ wy
    np.testing.assert_allclose(corr, np.diag(h.singular_values_), atol=1e-8 * h.singular_values_[0])
    assert np.all(np.diff(h.singular_values_) <= 1e-9)


def test_seq_each_bit_maximises_the_correlation_with_the_residual():
    """Bit t is the top eigenvector of (S4) for R_t = cS - sum_{k<t} b_x^k b_y^k^T, built densely here."""
    x, y, labels = _data(n=70, seed=3)
    c = 7  # more bits than the rank of S: later bits only exist because of the residual
    h = SCMSeq(n_bits=c, reg=0.0).fit(x, y, labels)
    xc, yc = x - x.mean(0), y - y.mean(0)
    cxx, cyy = xc.T @ xc, yc.T @ yc
    bx, by = h.encode_image(x).astype(float), h.encode_text(y).astype(float)
    resid = c * _dense_s(labels)
    for t in range(c):
        val, ex, ey = _block_top(xc.T @ resid @ yc, cxx, cyy, 1)
        assert h.singular_values_[t] == pytest.approx(val[0], rel=1e-8)
        _assert_same_direction(h.image_proj_[:, t], ex[:, 0], f"image bit {t}")
        _assert_same_direction(h.text_proj_[:, t], ey[:, 0], f"text bit {t}")
        resid -= np.outer(bx[:, t], by[:, t])


def test_seq_fits_the_similarity_better_than_orth_on_its_training_items():
    """What SCM-Seq is for: a lower objective (S2) than one-shot SCM-Orth once c exceeds the rank of S."""
    x, y, labels = _data(n=200, dx=12, dy=10, seed=5)
    for c in (8, 16):
        seq, orth = SCMSeq(n_bits=c).fit(x, y, labels), SCMOrth(n_bits=c).fit(x, y, labels)
        assert seq.objective_ < orth.objective_


def test_orth_bits_beyond_the_text_rank_are_one_sided():
    """Documented choice: past min(rank_x, rank_y) the eigenvectors of (S4) left are [wx; 0]."""
    x, y, labels = _data(n=100, dx=9, dy=3, m=5, seed=2)
    h = SCMOrth(n_bits=8).fit(x, y, labels)
    assert h.text_rank_ == 3 and h.n_informative_bits_ == 3
    assert np.all(h.text_proj_[:, 3:] == 0) and np.all(np.abs(h.image_proj_[:, 3:]).sum(0) > 0)
    codes = h.encode_text(y)
    assert np.all(codes[:, 3:] == 1)  # constant text bits: x >= 0 -> +1
    assert np.all(np.ptp(h.encode_image(x), axis=0) > 0)  # every image bit varies


def test_orth_bits_past_both_ranks_are_constant_not_anticorrelated():
    x, y, labels = _data(n=60, dx=3, dy=2, seed=4)
    h = SCMOrth(n_bits=6).fit(x, y, labels)  # only max(3, 2) = 3 non-negative eigenvectors exist
    assert np.all(h.image_proj_[:, 3:] == 0) and np.all(h.text_proj_[:, 3:] == 0)


def _histograms(n, d, rng, labels):
    """L1-normalised bag-of-words rows (centred covariance is singular), label-dependent."""
    w = rng.random((labels.shape[1], d)) ** 3
    counts = rng.poisson(labels @ w * 20 + 0.2)
    counts[counts.sum(1) == 0, 0] = 1
    return counts / counts.sum(1, keepdims=True)


@pytest.mark.parametrize("cls", [SCMOrth, SCMSeq])
def test_rank_deficient_and_duplicated_columns_give_a_working_model(cls):
    rng = np.random.default_rng(0)
    n, m = 300, 5
    labels = np.eye(m, dtype=np.uint8)[rng.integers(0, m, n)]
    x = _histograms(n, 20, rng, labels)
    x = np.hstack([x, x[:, :4], np.zeros((n, 1))])  # duplicated and constant columns
    y = _histograms(n, 6, rng, labels)  # 6 topics summing to 1: centred rank 5
    h = cls(n_bits=16).fit(x, y, labels)
    assert np.isfinite(h.image_proj_).all() and np.isfinite(h.text_proj_).all()
    assert h.image_rank_ == 19 and h.text_rank_ == 5
    bx, by = h.encode_image(x), h.encode_text(y)
    assert np.unique(bx, axis=0).shape[0] >= m and np.unique(by, axis=0).shape[0] >= m  # not collapsed
    assert np.all(np.ptp(bx, axis=0) > 0)  # every image bit varies (SCM-Orth's text bits past rank 5 may not)
    # the codes carry the labels: same-class image/text pairs are closer than different-class ones
    dist = (16 - bx.astype(int) @ by.T.astype(int)) // 2
    same = labels @ labels.T > 0
    assert dist[same].mean() + 1.0 < dist[~same].mean()


@pytest.mark.parametrize("cls", [SCMOrth, SCMSeq])
def test_duplicated_columns_do_not_change_the_informative_bits(cls):
    """Without ridge, a duplicated column adds no direction the data can vary in: same functions."""
    x, y, labels = _data(n=120, dx=6, dy=5, seed=6)
    c = 4
    a = cls(n_bits=c, reg=0.0).fit(x, y, labels)
    b = cls(n_bits=c, reg=0.0).fit(np.hstack([x, x[:, :2]]), y, labels)
    np.testing.assert_array_equal(a.encode_image(x), b.encode_image(np.hstack([x, x[:, :2]])))
    np.testing.assert_array_equal(a.encode_text(y), b.encode_text(y))


def test_unlabeled_items_only_shift_the_centring_and_covariances():
    x, y, labels = _data(n=80, seed=7)
    labeled = np.arange(80) < 50
    h = SCMSeq(n_bits=4).fit(x, y, labels, labeled)
    np.testing.assert_allclose(h.image_mean_, x.mean(0))  # all items, labeled or not
    g = SCMSeq(n_bits=4).fit(x, y, labels * labeled[:, None], labeled)
    np.testing.assert_array_equal(h.encode_image(x), g.encode_image(x))


@pytest.mark.parametrize("cls", [SCMOrth, SCMSeq])
@pytest.mark.parametrize("reg", [-1.0, float("nan"), float("inf"), "1e-4", True])
def test_bad_regularisation_is_rejected_before_work(cls, reg):
    x, y, labels = _data()
    with pytest.raises(InputError) as err:
        cls(n_bits=4, reg=reg).fit(x, y, labels)
    assert str(err.value) == f"{cls.__name__} parameter reg={reg!r} is invalid; valid: a float in [0, inf)"
    assert not hasattr(cls(n_bits=4, reg=reg), "image_mean_")


@pytest.mark.parametrize("reg", [0, 0.0, np.float32(1e-3), np.int64(1)])
def test_any_real_regularisation_from_zero_up_is_accepted(reg):
    x, y, labels = _data()
    h = SCMSeq(n_bits=2, reg=reg).fit(x, y, labels)
    assert h.image_ridge_ >= 0.0


@pytest.mark.parametrize("cls", [SCMOrth, SCMSeq])
def test_every_parameter_has_a_declared_constraint(cls):
    assert set(cls.parameter_constraints()) == set(cls._get_param_names())

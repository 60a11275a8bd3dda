"""SePH (rnd and km): the KL objective and its gradient, the optimisers, anchors, robustness, partial labels."""
import warnings
from functools import lru_cache

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.optimize import minimize

from cmhcore.errors import InputError
from datasets.synthetic import make_synthetic
from methods.seph import (SePHKm, SePHRnd, _affinity_stats, _normalised_labels, fit_klr, klr_objective,
                          learn_codes, seph_objective)

FAST = dict(n_anchors=40, n_iter=60, klr_max_iter=200)


def _brute_objective(h, labels, alpha_eff):
    """KL(P||Q) + quantisation straight from the definitions, with dense n x n matrices."""
    ln = labels / np.linalg.norm(labels, axis=1, keepdims=True)
    a = ln @ ln.T
    np.fill_diagonal(a, 0.0)
    p = a / a.sum()
    d = 0.25 * ((h[:, None, :] - h[None, :, :]) ** 2).sum(-1)
    w = 1.0 / (1.0 + d)
    np.fill_diagonal(w, 0.0)
    q = w / w.sum()
    pos = p > 0
    kl = np.sum(p[pos] * np.log(p[pos] / q[pos]))
    return kl + alpha_eff * np.sum((np.abs(h) - 1.0) ** 2)


def _small_problem(n=14, c=5, k=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, k)) < 0.4).astype(float)
    labels[labels.sum(1) == 0, 0] = 1.0
    return rng.standard_normal((n, c)), labels


@lru_cache(maxsize=1)
def _cached_data():
    ds = make_synthetic(n_items=420, n_labels=6, image_dim=20, text_dim=60, latent_dim=10, noise=0.3,
                        label_density=0.15, n_query=60, n_train=300, seed=1)
    p = ds.protocol
    img, txt, lab = ds.subset(p.train)
    return (img, txt, lab, np.ones(lab.shape[0], dtype=bool)), ds.subset(p.query), ds.subset(p.database)


def _data():
    """Train (image, text, labels, labeled), query and database parts; fresh copies for every test."""
    return tuple(tuple(x.copy() for x in part) for part in _cached_data())


def _cross_modal_gap(h, query, database):
    """Mean Hamming distance of image queries to non-relevant texts minus to relevant texts (> 0 is good)."""
    qc, dc = h.encode_image(query[0]).astype(int), h.encode_text(database[1]).astype(int)
    dist = (qc.shape[1] - qc @ dc.T) / 2
    rel = (query[2].astype(int) @ database[2].T.astype(int)) > 0
    return dist[~rel].mean() - dist[rel].mean()


# ------------------------------------------------------------------------------- the KL objective
def test_objective_matches_definition_and_blocking():
    h, labels = _small_problem()
    ln = _normalised_labels(labels)
    want = _brute_objective(h, labels, 0.03)
    for block in (3, 5, 100):  # blocks that split rows unevenly must give the same sums
        got, _ = seph_objective(h, ln, 0.03, dtype=np.float64, block=block)
        assert got == pytest.approx(want, rel=1e-12)


def test_gradient_matches_finite_differences():
    h, labels = _small_problem(seed=3)
    h += 0.3 * np.sign(h)  # keep |h| away from 0, where the quantisation term has a kink
    ln = _normalised_labels(labels)
    _, grad = seph_objective(h, ln, 0.05, dtype=np.float64, block=4)
    eps = 1e-6
    num = np.zeros_like(h)
    for idx in np.ndindex(*h.shape):  # a handful of coordinates: a loop is the clearest reference
        hp, hm = h.copy(), h.copy()
        hp[idx] += eps
        hm[idx] -= eps
        num[idx] = (_brute_objective(hp, labels, 0.05) - _brute_objective(hm, labels, 0.05)) / (2 * eps)
    np.testing.assert_allclose(grad, num, rtol=1e-5, atol=1e-9)


def test_affinity_constant_matches_definition():
    _, labels = _small_problem(n=9, seed=5)
    ln = _normalised_labels(labels)
    a = ln @ ln.T
    np.fill_diagonal(a, 0)
    p = a / a.sum()
    total, plogp = _affinity_stats(ln, block=4)
    assert total == pytest.approx(a.sum())
    assert plogp == pytest.approx(np.sum(p[p > 0] * np.log(p[p > 0])))


def test_kl_objective_decreases_and_codes_preserve_semantics():
    rng = np.random.default_rng(0)
    classes = rng.integers(0, 5, 150)
    labels = np.eye(5)[classes]
    best, final, history = learn_codes(_normalised_labels(labels), 16, 0.01, 80, rng)
    history = np.asarray(history)
    assert history[-1] < 0.3 * history[0]
    # Momentum makes single steps non-monotone, but the objective falls over every stretch of 20 steps.
    assert (history[20::20] < history[:-20:20]).all()
    assert history.min() == pytest.approx(_brute_objective(best, labels, 0.01 / (16 * 150)))
    codes = np.where(best >= 0, 1, -1)
    # The binary codes (not only the relaxed ones) preserve the semantics: same class -> same code region.
    dist = (16 - codes @ codes.T) / 2
    same = classes[:, None] == classes[None, :]
    assert dist[same].mean() < 1.0 < 6.0 < dist[~same].mean()
    rand = np.where(rng.random(codes.shape) < 0.5, 1.0, -1.0)
    assert _brute_objective(codes.astype(float), labels, 0) < _brute_objective(rand, labels, 0) - 1.0


def test_fitted_model_records_decreasing_objective():
    train, _, _ = _data()
    h = SePHRnd(n_bits=8, random_state=0, **FAST).fit(*train)
    assert h.kl_history_.shape == (61,)
    assert h.kl_history_.min() < 0.5 * h.kl_history_[0]


# ------------------------------------------------------------------------------- hash functions
def test_klr_reaches_the_minimum_of_the_paper_objective():
    rng = np.random.default_rng(2)
    x, anchors = rng.standard_normal((120, 6)), rng.standard_normal((15, 6))
    rbf = lambda u, v: np.exp(-((u[:, None] - v[None]) ** 2).sum(-1) / 8.0)
    k, k0 = rbf(x, anchors), rbf(anchors, anchors)
    y = np.where(x[:, :3] + 0.5 * rng.standard_normal((120, 3)) >= 0, 1.0, -1.0)
    w = fit_klr(k, k0, y, 0.01, 500)
    # Reference: plain L-BFGS on the same objective, run to tight convergence.
    ref = minimize(lambda f: tuple(v if i == 0 else v.ravel() for i, v in enumerate(
        klr_objective(f.reshape(15, 3), k, k0, y, 0.01))), np.zeros(45), jac=True, method="L-BFGS-B",
        options=dict(maxiter=20000, gtol=1e-10, ftol=0))
    got = klr_objective(w, k, k0, y, 0.01)[0]
    assert got <= ref.fun * (1 + 1e-7)
    assert np.abs(klr_objective(w, k, k0, y, 0.01)[1]).max() < 1e-3


def test_random_anchors_are_training_rows_and_kmeans_anchors_are_centres():
    train, _, _ = _data()
    img = train[0].astype(np.float64)
    rnd = SePHRnd(n_bits=8, random_state=0, **FAST).fit(*train)
    km = SePHKm(n_bits=8, random_state=0, **FAST).fit(*train)
    # Random: every anchor is a training row (300 items <= max_code_items, so the pool is all of them).
    d_rnd = ((rnd.image_anchors_[:, None] - img[None]) ** 2).sum(-1)
    assert np.allclose(d_rnd.min(axis=1), 0.0)
    assert len(np.unique(d_rnd.argmin(axis=1))) == rnd.image_anchors_.shape[0]
    # k-means: a Lloyd fixed point, each anchor the mean of the training rows nearest to it.
    d_km = ((km.image_anchors_[:, None] - img[None]) ** 2).sum(-1)
    assign = d_km.argmin(axis=0)
    for j in np.unique(assign):
        np.testing.assert_allclose(km.image_anchors_[j], img[assign == j].mean(axis=0), atol=1e-6)
    assert not np.allclose(d_km.min(axis=1), 0.0)
    # ... and so they cover the data better than random rows.
    assert d_km.min(axis=0).sum() < d_rnd.min(axis=0).sum()
    txt = train[1].toarray()
    d_txt = ((km.text_anchors_[:, None] - txt[None]) ** 2).sum(-1)
    assign = d_txt.argmin(axis=0)
    for j in np.unique(assign):
        np.testing.assert_allclose(km.text_anchors_[j], txt[assign == j].mean(axis=0), atol=1e-6)


@pytest.mark.parametrize("cls", [SePHRnd, SePHKm])
def test_rank_deficient_and_tiny_features_give_working_codes(cls):
    train, query, database = _data()
    def degrade(x):
        # Wiki-like L1-normalised histograms (entries ~1e-2), a duplicated block and all-zero columns.
        x = np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float64)
        x = np.hstack([x, x[:, :5], np.zeros((x.shape[0], 4))])
        return x / x.sum(axis=1, keepdims=True)
    tr = (degrade(train[0]), sp.csr_matrix(degrade(train[1])), train[2], train[3])
    q, db = (degrade(query[0]), degrade(query[1]), query[2]), (degrade(database[0]), degrade(database[1]), database[2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow / divide-by-zero / singular-matrix warnings
        h = cls(n_bits=16, random_state=0, **FAST).fit(*tr)
        codes = h.encode_image(db[0]), h.encode_text(db[1])
    for c in codes:
        assert np.isin(c, (-1, 1)).all() and len(np.unique(c, axis=0)) > 5
    assert _cross_modal_gap(h, q, db) > 1.0


def test_constant_modality_does_not_produce_nan():
    train, query, _ = _data()
    const = np.ones((train[0].shape[0], 7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        h = SePHRnd(n_bits=8, random_state=0, **FAST).fit(const, train[1], train[2], train[3])
        codes = h.encode_image(np.ones((5, 7)))
    assert np.isin(codes, (-1, 1)).all()
    assert h.image_sigma2_ == 1.0  # the documented fallback width


# ------------------------------------------------------------------------------- labels, codes, inputs
def test_only_labeled_items_learn_codes_and_sampling_is_capped():
    train, _, _ = _data()
    img, txt, lab, _ = train
    labeled = np.zeros(lab.shape[0], dtype=bool)
    labeled[::3] = True
    h = SePHRnd(n_bits=8, random_state=0, **FAST).fit(img, txt, lab, labeled)
    assert h.n_code_items_ == labeled.sum()
    h = SePHRnd(n_bits=8, random_state=0, max_code_items=40, **FAST).fit(img, txt, lab, labeled)
    assert h.n_code_items_ == 40
    # Anchors come from all items, labeled or not: some random anchors are unlabeled rows.
    h = SePHRnd(n_bits=8, random_state=0, **FAST).fit(img, txt, lab, labeled)
    rows = ((h.image_anchors_[:, None] - img[None].astype(float)) ** 2).sum(-1).argmin(axis=1)
    assert (~labeled[rows]).any()


def test_unified_code_follows_both_views():
    train, query, _ = _data()
    h = SePHRnd(n_bits=16, random_state=0, **FAST).fit(*train)
    ci, ct, cu = h.encode_image(query[0]), h.encode_text(query[1]), h.encode_pair(query[0], query[1])
    agree = ci == ct
    assert agree.mean() > 0.5 and (cu[agree] == ci[agree]).all()
    assert cu.dtype == np.int8
    with pytest.raises(InputError):
        h.encode_pair(query[0][:3], query[1])


def test_bad_parameters_and_labels_fail_before_work():
    train, _, _ = _data()
    img, txt, lab, labeled = train
    cases = {"n_anchors": (0, "an int in [1, inf)"), "alpha": (-1.0, "a float in [0, inf)"),
             "klr_c": (0.0, "a float in (0, inf)"), "n_iter": (1.5, "an int in [1, inf)"),
             "max_code_items": (1, "an int in [2, inf)"), "klr_max_iter": (True, "an int in [1, inf)")}
    for name, (value, valid) in cases.items():
        for cls in (SePHRnd, SePHKm):
            with pytest.raises(InputError) as err:
                cls(n_bits=8, **{name: value}).fit(*train)
            assert str(err.value) == f"{cls.__name__} parameter {name}={value!r} is invalid; valid: {valid}"
    one = np.zeros(lab.shape[0], dtype=bool)
    one[0] = True
    with pytest.raises(InputError, match="at least 2 labeled"):
        SePHRnd(n_bits=8).fit(img, txt, lab, one)
    disjoint = np.zeros_like(lab)
    disjoint[np.arange(lab.shape[0]), np.arange(lab.shape[0]) % lab.shape[1]] = 1
    two = np.zeros(lab.shape[0], dtype=bool)
    two[:2] = True
    with pytest.raises(InputError, match="share a label"):
        SePHKm(n_bits=8).fit(img, txt, disjoint, two)


def test_kmeans_handles_duplicates_and_empty_clusters():
    from methods.seph import kmeans

    rng = np.random.default_rng(0)
    x = np.repeat(rng.standard_normal((3, 4)), [10, 6, 4], axis=0)  # 20 rows, 3 distinct
    centres = kmeans(x, 8, np.random.default_rng(1))
    assert np.isfinite(centres).all() and centres.shape == (8, 4)
    # Every distinct point is itself a centre: the empty clusters were re-seeded with data rows.
    d = ((x[:, None] - centres[None]) ** 2).sum(-1)
    assert np.allclose(d.min(axis=1), 0.0)
    # Sparse input gives the same centres as dense.
    np.testing.assert_allclose(kmeans(sp.csr_matrix(x), 8, np.random.default_rng(1)), centres)


def test_objective_is_the_same_with_threads():
    from concurrent.futures import ThreadPoolExecutor

    h, labels = _small_problem(n=40, c=6, seed=7)
    ln = _normalised_labels(labels)
    alone = seph_objective(h, ln, 0.01, block=7)
    with ThreadPoolExecutor(max_workers=2) as pool:
        threaded = seph_objective(h, ln, 0.01, block=7, executor=pool)
    assert alone[0] == threaded[0]
    np.testing.assert_array_equal(alone[1], threaded[1])


@pytest.mark.parametrize("cls", [SePHRnd, SePHKm])
def test_every_parameter_has_a_declared_constraint(cls):
    assert set(cls.parameter_constraints()) == set(cls._get_param_names())


def test_encoding_in_row_blocks_equals_encoding_at_once(monkeypatch):
    import methods.seph as seph

    train, _, database = _data()
    h = SePHKm(n_bits=16, n_anchors=40, random_state=0).fit(*train)
    whole = h._scores(database[0], "image"), h._scores(sp.csr_matrix(database[1]), "text")
    monkeypatch.setattr(seph, "_ENCODE_ROWS", 7)  # blocks that split the rows unevenly
    blocked = h._scores(database[0], "image"), h._scores(sp.csr_matrix(database[1]), "text")
    for a, b in zip(whole, blocked):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert a.shape[0] == database[0].shape[0] and a.shape[0] > 7
    assert (h.encode_image(database[0]) == seph.binarize(whole[0])).all()

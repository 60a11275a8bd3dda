"""CMSSH: the boosting loop is AdaBoost over cross-modal pairs, each weak learner from the weighted SVD."""
import numpy as np
import pytest
import scipy.sparse as sp

from cmhcore.errors import InputError
from methods.cmssh import CMSSH, _correlation_grid, boost, sample_pairs


def _data(n=120, dx=8, dy=6, m=4, seed=0):
    rng = np.random.default_rng(seed)
    labels = (rng.random((n, m)) < 0.3).astype(np.uint8)
    labels[labels.sum(1) == 0, rng.integers(0, m)] = 1
    latent = labels @ rng.standard_normal((m, 3))
    x = latent @ rng.standard_normal((3, dx)) + 0.8 * rng.standard_normal((n, dx))
    y = latent @ rng.standard_normal((3, dy)) + 0.8 * rng.standard_normal((n, dy))
    return x, y, labels


def _pm1(v):
    return np.where(v >= 0, 1.0, -1.0)


def _learner_outputs(out, x, y, i, j, t):
    return _pm1(x[i] @ out["p"][:, t] + out["a"][t]) * _pm1(y[j] @ out["q"][:, t] + out["b"][t])


def test_pairs_are_balanced_seeded_and_labelled_by_shared_labels():
    _, _, labels = _data()
    i, j, s = sample_pairs(labels, 1000, np.random.default_rng(3))
    assert (s == 1).sum() == 500 and (s == -1).sum() == 500
    truth = np.where((labels[i].astype(int) * labels[j]).sum(1) > 0, 1, -1)
    np.testing.assert_array_equal(s, truth)
    again = sample_pairs(labels, 1000, np.random.default_rng(3))
    assert all(np.array_equal(a, b) for a, b in zip((i, j, s), again))


def test_single_class_data_has_only_similar_pairs():
    labels = np.ones((30, 1), dtype=np.uint8)
    _, _, s = sample_pairs(labels, 100, np.random.default_rng(0))  # stops after `patience` empty rounds
    assert (s == 1).sum() == 50 and (s == -1).sum() == 0


def test_boosting_rounds_follow_adaboost():
    """eps_t < 1/2; alpha_t = log((1-eps)/eps)/2; after (B5) learner t is exactly at chance; exp-loss falls."""
    x, y, labels = _data()
    mx, my = x.mean(0), y.mean(0)
    i, j, s = sample_pairs(labels, 2000, np.random.default_rng(0))
    c = 12
    out = boost(x, y, mx, my, i, j, s, c, n_thresholds=16)
    s = s.astype(float)
    w = np.full(s.size, 1.0 / s.size)
    margin = np.zeros(s.size)
    losses = [1.0]
    for t in range(c):
        h = _learner_outputs(out, x, y, i, j, t)
        eps = w[h != s].sum()
        assert out["eps"][t] == pytest.approx(eps, abs=1e-12)
        assert eps < 0.5, f"round {t}: weak learner no better than chance ({eps})"
        alpha = 0.5 * np.log((1 - eps) / eps)
        assert out["alpha"][t] == pytest.approx(alpha, rel=1e-10)
        w = w * np.exp(-alpha * s * h)
        assert out["z"][t] == pytest.approx(w.sum(), rel=1e-10)
        w /= w.sum()
        assert w[h != s].sum() == pytest.approx(0.5, abs=1e-9)  # the re-weighting AdaBoost prescribes
        margin += alpha * s * h
        losses.append(np.exp(-margin).mean())
        assert losses[-1] == pytest.approx(np.prod(out["z"][:t + 1]), rel=1e-9)
    assert np.all(np.diff(losses) < 0), "the weighted exponential pair loss must fall every round"
    first_errors = out["eps"][:3]
    assert first_errors[0] < 0.35  # on this separable data the first bit is a real learner


def test_each_projection_is_the_leading_singular_pair_of_the_weighted_cross_covariance():
    x, y, labels = _data(seed=1)
    mx, my = x.mean(0), y.mean(0)
    i, j, s = sample_pairs(labels, 1500, np.random.default_rng(1))
    out = boost(x, y, mx, my, i, j, s, 3, n_thresholds=8)
    w = np.full(s.size, 1.0 / s.size)
    for t in range(3):
        ws = w * s
        cov = (x[i] - mx).T @ (ws[:, None] * (y[j] - my))  # similar-pair minus dissimilar-pair covariance
        u, _, vt = np.linalg.svd(cov)
        p, q = out["p"][:, t], out["q"][:, t]
        assert abs(p @ u[:, 0]) == pytest.approx(1.0, abs=1e-8)
        assert abs(q @ vt[0]) == pytest.approx(1.0, abs=1e-8)
        h = _learner_outputs(out, x, y, i, j, t)
        w = w * np.exp(-out["alpha"][t] * s * h)
        w /= w.sum()


def test_offset_search_equals_brute_force_over_the_grid():
    rng = np.random.default_rng(2)
    u, v = rng.standard_normal(40), rng.standard_normal(30)
    i, j = rng.integers(0, 40, 500), rng.integers(0, 30, 500)
    ws = rng.standard_normal(500)
    ta, tb = np.sort(rng.standard_normal(7)), np.sort(rng.standard_normal(5))
    brute = np.array([[np.sum(ws * _pm1(u[i] - a) * _pm1(v[j] - b)) for b in tb] for a in ta])
    np.testing.assert_allclose(_correlation_grid(u, v, i, j, ta, tb, ws), brute, atol=1e-12)


def test_each_offset_is_exactly_optimal_given_the_other():
    """(B3): no midpoint between distinct training projections gives either offset a higher r."""
    x, y, labels = _data(seed=4)
    i, j, s = sample_pairs(labels, 1000, np.random.default_rng(4))
    out = boost(x, y, x.mean(0), y.mean(0), i, j, s, 2, n_thresholds=4)
    w = np.full(s.size, 1.0 / s.size)
    for t in range(2):
        ws = w * s
        u, v = x @ out["p"][:, t], y @ out["q"][:, t]
        gu, gv = _pm1(u[i] + out["a"][t]), _pm1(v[j] + out["b"][t])
        r = np.sum(ws * gu * gv)
        assert r == pytest.approx(out["r"][t], abs=1e-12) and r > 0
        for vals, idx, other in ((u, i, gv), (v, j, gu)):
            uq = np.unique(vals)
            mids = (uq[1:] + uq[:-1]) / 2
            best = max(np.sum(ws * other * _pm1(vals[idx] - m)) for m in mids)
            assert best <= r + 1e-12
        w = w * np.exp(-out["alpha"][t] * s * gu * gv)
        w /= w.sum()


def test_rank_deficient_features_give_finite_projections_and_useful_codes():
    rng = np.random.default_rng(0)
    n, m = 300, 5
    labels = np.eye(m, dtype=np.uint8)[rng.integers(0, m, n)]
    counts = rng.poisson(labels @ (rng.random((m, 20)) ** 3) * 20 + 0.2) + 1e-9
    x = counts / counts.sum(1, keepdims=True)
    x = np.hstack([x, x[:, :4], np.zeros((n, 1))])  # duplicated and constant columns
    y = sp.csr_matrix((labels @ rng.random((m, 30)) + rng.random((n, 30)) > 0.9).astype(float))
    h = CMSSH(n_bits=16, n_pairs=5000).fit(x, y, labels)
    assert np.isfinite(h.image_proj_).all() and np.isfinite(h.text_proj_).all()
    bx, by = h.encode_image(x), h.encode_text(y)
    assert np.unique(bx, axis=0).shape[0] >= m and np.unique(by, axis=0).shape[0] >= m  # not collapsed
    assert np.all(np.ptp(bx, axis=0) > 0) and np.all(np.ptp(by, axis=0) > 0)  # no constant bit
    dist = (16 - bx.astype(int) @ by.T.astype(int)) // 2
    same = labels @ labels.T > 0
    assert dist[same].mean() + 1.0 < dist[~same].mean()


def test_pairs_are_drawn_among_labeled_items_only():
    x, y, labels = _data(seed=5)
    labeled = np.arange(x.shape[0]) % 3 == 0
    h = CMSSH(n_bits=2, n_pairs=600).fit(x, y, labels * labeled[:, None], labeled)
    assert h.n_similar_pairs_ == 300 and h.n_dissimilar_pairs_ == 300
    # the same fit on the labeled rows alone differs only through the centring means
    g = CMSSH(n_bits=2, n_pairs=600).fit(x[labeled], y[labeled], labels[labeled])
    np.testing.assert_allclose(g.image_mean_, x[labeled].mean(0))
    np.testing.assert_allclose(h.image_mean_, x.mean(0))


@pytest.mark.parametrize("param,value,valid", [("n_pairs", 1, "an int in [2, inf)"), ("n_pairs", 2.5, "an int in [2, inf)"),
                                               ("n_pairs", True, "an int in [2, inf)"),
                                               ("n_thresholds", 0, "an int in [1, inf)"),
                                               ("n_thresholds", "8", "an int in [1, inf)")])
def test_bad_parameters_are_rejected_before_work(param, value, valid):
    x, y, labels = _data()
    with pytest.raises(InputError) as err:
        CMSSH(n_bits=4, **{param: value}).fit(x, y, labels)
    assert str(err.value) == f"CMSSH parameter {param}={value!r} is invalid; valid: {valid}"


def test_numpy_integers_are_valid_counts():
    x, y, labels = _data()
    h = CMSSH(n_bits=2, n_pairs=np.int64(200), n_thresholds=np.int32(4)).fit(x, y, labels)
    assert h.n_similar_pairs_ + h.n_dissimilar_pairs_ == 200


def test_every_parameter_has_a_declared_constraint():
    assert set(CMSSH.parameter_constraints()) == set(CMSSH._get_param_names())

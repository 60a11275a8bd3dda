"""RDCMH: Eq. 1, bins and triplets, the loss and its gradients (Eqs. 8-10), Eq. 12, memory, variants.

The common checks (tests/methods/test_common.py) cover the contract; these tests cover the paper.
"""
import resource

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cmhcore.errors import InputError
from methods import get_method
from methods._triplets import (SemiSupervisedSimilarity, boundary_positions, eq1, rank_bins,
                               sample_triplets)
from methods.rdcmh import (RDCMH, RDCMH_ND, RDCMH_NJ, RDCMH_NS, RDCMH_NW, ranking_terms, rdcmh_loss,
                           relaxed_hamming, update_codes)

CPU = torch.device("cpu")
TINY = dict(n_iter=30, image_hidden=32, text_hidden=32, batch_size=32, lr=3e-3)


def _cos(a, b):
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def _toy(n=60, seed=0, d_img=6, d_txt=9, m=4):
    rng = np.random.default_rng(seed)
    img = rng.random((n, d_img)).astype(np.float32)
    txt = (rng.random((n, d_txt)) < 0.4).astype(np.float32)
    txt[txt.sum(1) == 0, 0] = 1
    lab = (rng.random((n, m)) < 0.35).astype(np.uint8)
    lab[lab.sum(1) == 0, rng.integers(0, m)] = 1
    labeled = rng.random(n) < 0.6
    lab[~labeled] = 0
    return img, txt, lab, labeled


# ------------------------------------------------------------------------------- Eq. 1
def test_eq1_hand_case_labeled_and_unlabeled_pairs():
    img = np.array([[1, 0], [1, 1], [0, 1], [2, 1]], dtype=np.float32)
    txt = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32)
    lab = np.array([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=np.uint8)
    labeled = np.array([True, True, True, False])
    sim = SemiSupervisedSimilarity(img, txt, lab, labeled, CPU)
    rows = sim.rows(torch.arange(4)).numpy()

    def s(feat, a, b):
        s1 = _cos(feat[a], feat[b])
        if labeled[a] and labeled[b]:
            s2 = _cos(lab[a].astype(float), lab[b].astype(float))
            return s1 * np.exp(s2 - s1)
        return s1

    for a in range(4):
        for b in range(4):
            expected = 0.5 * (s(img, a, b) + s(txt, a, b))
            assert rows[a, b] == pytest.approx(expected, abs=1e-6)
    # Hand values: items 0 and 1 are labeled with label cosine 1/sqrt(2); item 3 is unlabeled.
    s1 = 1 / np.sqrt(2)
    assert rows[0, 1] == pytest.approx(0.5 * (s1 * np.exp(s1 - s1) + 0.0), abs=1e-6)
    assert rows[1, 3] == pytest.approx(0.5 * (3 / np.sqrt(10) + 0.0), abs=1e-6)  # feature cosine only
    sxx, syy, sxy = sim.pairs(torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert sxx[0] == pytest.approx(0.0, abs=1e-6)  # s1 = 0 -> 0 whatever the labels say
    assert sxy.numpy() == pytest.approx(0.5 * (sxx + syy).numpy())
    assert ((rows >= 0) & (rows <= 1 + 1e-6)).all()


def test_eq1_formula_and_range_on_nonnegative_inputs():
    s1 = torch.rand(1000, dtype=torch.float64)
    s2 = torch.rand(1000, dtype=torch.float64)
    both = torch.rand(1000) < 0.5
    out = eq1(s1, s2, both)
    assert torch.equal(out[~both], s1[~both])
    assert torch.allclose(out[both], s1[both] * torch.exp(s2[both] - s1[both]))
    assert (out >= 0).all() and (out <= 1).all()  # s1 e^(s2 - s1) <= s1 e^(1 - s1) <= 1


def test_negative_features_use_shifted_cosine_in_unit_interval():
    rng = np.random.default_rng(1)
    img = rng.standard_normal((30, 5)).astype(np.float32)  # negative entries
    txt = rng.random((30, 4)).astype(np.float32)  # non-negative
    lab = np.zeros((30, 3), dtype=np.uint8)
    sim = SemiSupervisedSimilarity(img, txt, lab, np.zeros(30, bool), CPU)
    assert sim.shifted == {"image": True, "text": False}
    rows = sim.rows(torch.arange(30)).numpy()
    expected = 0.5 * ((1 + _cos(img[2], img[7])) / 2 + _cos(txt[2], txt[7]))
    assert rows[2, 7] == pytest.approx(expected, abs=1e-6)
    assert rows.min() >= 0 and rows.max() <= 1 + 1e-6


def test_sparse_text_gives_the_same_similarity_as_dense():
    img, txt, lab, labeled = _toy()
    dense = SemiSupervisedSimilarity(img, txt, lab, labeled, CPU).rows(torch.arange(10))
    sparse = SemiSupervisedSimilarity(img, sp.csr_matrix(txt), lab, labeled, CPU).rows(torch.arange(10))
    assert torch.allclose(dense, sparse, atol=1e-6)


# ------------------------------------------------------------------------------- bins and triplets
def _reference_bins(row: np.ndarray, q: int, n_bins: int) -> np.ndarray:
    """Brute force: sort the others, read the boundary values, count boundaries >= each value."""
    others = np.delete(np.arange(row.size), q)
    vals = row[others]
    th = np.sort(vals)[::-1][boundary_positions(vals.size, n_bins)]
    out = np.full(row.size, n_bins)
    out[others] = [(v <= th).sum() for v in vals]
    return out


def test_bins_match_brute_force_and_are_equal_count_without_ties():
    img, txt, lab, labeled = _toy(n=101)
    sim = SemiSupervisedSimilarity(img, txt, lab, labeled, CPU)
    q = torch.arange(0, 101, 7)
    rows = sim.rows(q)
    bins = rank_bins(rows, q, 5).numpy()
    for r, qq in enumerate(q.tolist()):
        assert (bins[r] == _reference_bins(rows[r].numpy(), qq, 5)).all()
        assert np.bincount(bins[r], minlength=6).tolist() == [20, 20, 20, 20, 20, 1]


def test_ties_share_a_bin_and_go_to_the_later_one():
    # Label-only similarity on single-label data: 2 levels (same class = 1, other = 0).
    lab = np.repeat(np.eye(5, dtype=np.uint8), 10, axis=0)  # 50 items, 10 per class
    sim = SemiSupervisedSimilarity(None, None, lab, np.ones(50, bool), CPU, mode="labels")
    q = torch.tensor([0, 17])
    bins = rank_bins(sim.rows(q), q, 5).numpy()
    same = lab @ lab.T
    for r, qq in enumerate(q.tolist()):
        others = np.delete(np.arange(50), qq)
        assert set(bins[r, others][same[qq, others] == 1]) == {0}
        assert set(bins[r, others][same[qq, others] == 0]) == {4}


ROW_KINDS = ["continuous", "few_levels", "rounded_normal", "mostly_one_value", "constant"]


@pytest.mark.parametrize("kind", ROW_KINDS)
def test_cpu_kernel_and_sorting_path_both_match_brute_force(kind):
    # The CPU path (bucket selection, methods._triplets._bins_kernel) and the accelerator path (a sort
    # per row) must give identical bins, ties included; both are checked here on the CPU.
    from methods._triplets import _rank_bins_sorted

    rng = np.random.default_rng(ROW_KINDS.index(kind))
    for _ in range(40):
        b, n, n_bins = int(rng.integers(1, 12)), int(rng.integers(2, 300)), int(rng.integers(2, 8))
        rows = {"continuous": lambda: rng.random((b, n)),
                "few_levels": lambda: rng.integers(0, 3, (b, n)) / 3.0,
                "rounded_normal": lambda: np.round(rng.normal(size=(b, n)), 1),
                "mostly_one_value": lambda: np.where(rng.random((b, n)) < 0.9, 0.25, rng.random((b, n))),
                "constant": lambda: np.full((b, n), 0.5)}[kind]()
        rows = torch.tensor(rows, dtype=torch.float32)
        q = torch.as_tensor(rng.integers(0, n, b))
        m = n - 1
        kth = (m - 1 - boundary_positions(m, n_bins)).astype(np.int64)
        fast, sorted_path = rank_bins(rows, q, n_bins).numpy(), _rank_bins_sorted(rows, q, n_bins, kth).numpy()
        for r, qq in enumerate(q.tolist()):
            ref = _reference_bins(rows[r].numpy(), qq, n_bins)
            assert (fast[r] == ref).all() and (sorted_path[r] == ref).all()


def test_triplets_are_well_formed():
    img, txt, lab, labeled = _toy(n=80)
    sim = SemiSupervisedSimilarity(img, txt, lab, labeled, CPU)
    gen = torch.Generator().manual_seed(0)
    q = torch.arange(80)
    tb = sample_triplets(sim, q, 5, gen)
    rows = sim.rows(q)
    ar = torch.arange(80)
    assert tb.valid.all()
    assert (tb.i != q).all() and (tb.j != q).all() and (tb.i != tb.j).all()
    assert (tb.bin_i < tb.bin_j).all()
    assert (rows[ar, tb.i] > rows[ar, tb.j]).all()  # the positive is strictly more similar
    bins = rank_bins(rows, q, 5)
    assert torch.equal(bins[ar, tb.i], tb.bin_i) and torch.equal(bins[ar, tb.j], tb.bin_j)


def test_bin_pairs_are_drawn_uniformly():
    img, txt, lab, labeled = _toy(n=201, seed=3)
    sim = SemiSupervisedSimilarity(img, txt, lab, labeled, CPU)
    gen = torch.Generator().manual_seed(1)
    counts = np.zeros((5, 5), int)
    for _ in range(25):
        tb = sample_triplets(sim, torch.arange(201), 5, gen)
        np.add.at(counts, (tb.bin_i.numpy(), tb.bin_j.numpy()), 1)
    pairs = counts[np.triu_indices(5, 1)]
    assert counts.sum() == pairs.sum() == 25 * 201
    assert pairs.min() > 0.8 * pairs.mean() and pairs.max() < 1.2 * pairs.mean()  # 10 pairs, ~502 each


def test_a_query_with_all_items_equally_similar_gives_no_triplet():
    lab = np.ones((6, 2), dtype=np.uint8)
    sim = SemiSupervisedSimilarity(None, None, lab, np.ones(6, bool), CPU, mode="labels")
    tb = sample_triplets(sim, torch.arange(6), 5, torch.Generator().manual_seed(0))
    assert not tb.valid.any()


def test_similarity_rows_are_computed_on_demand_without_n_by_n_memory():
    n = 30000  # an n x n float32 matrix would be 3.6 GB
    img, txt, lab, labeled = _toy(n=n, seed=5, d_img=16, d_txt=40, m=8)
    sim = SemiSupervisedSimilarity(img, sp.csr_matrix(txt), lab, labeled, CPU)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    tb = sample_triplets(sim, torch.arange(128), 5, torch.Generator().manual_seed(0))
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert tb.valid.all()
    assert grown_mb < 600, f"sampling 128 triplets at n={n} grew peak memory by {grown_mb:.0f} MB"


def test_fit_requests_only_batch_sized_similarity_blocks(monkeypatch):
    seen = []
    original = SemiSupervisedSimilarity.rows

    def spy(self, idx):
        out = original(self, idx)
        seen.append(tuple(out.shape))
        return out

    monkeypatch.setattr(SemiSupervisedSimilarity, "rows", spy)
    img, txt, lab, labeled = _toy(n=300)
    RDCMH(n_bits=8, **{**TINY, "n_iter": 5}).fit(img, txt, lab, labeled)
    assert seen and all(shape == (32, 300) for shape in seen)


# ------------------------------------------------------------------------------- loss and gradients
def _triplet(c=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = [torch.randn(1, c, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    gg = [torch.randn(1, c, generator=g, dtype=torch.float64) for _ in range(3)]
    b = [torch.where(torch.randn(1, c, generator=g) >= 0, 1.0, -1.0).double() for _ in range(3)]
    s = torch.rand(3, generator=g, dtype=torch.float64)
    w = {"xx": 1 - s[0:1], "yy": 1 - s[1:2], "xy": 1 - s[2:3], "yx": 1 - s[2:3]}
    return f, gg, b, w


def test_loss_gradient_matches_eqs_9_and_10_and_eq_8_up_to_its_sign():
    c, lam = 6, 0.7
    (fq, fi, fj), g, (bq, bi, bj), w = _triplet(c)
    loss = rdcmh_loss((fq, fi, fj), tuple(g), (bq, bi, bj), w, torch.ones(1, dtype=torch.bool), c, lam)
    gq, gi, gj = torch.autograd.grad(loss, (fq, fi, fj))
    wxx, wxy, wyx = w["xx"], w["xy"], w["yx"]
    fq, fi, fj = fq.detach(), fi.detach(), fj.detach()
    bracket8 = wxx * (fi - fj) + wxy * fi + wyx * (-fj)
    eq8_printed = 0.5 * bracket8 + lam * (fq - bq)
    eq9 = -0.5 * (wxx * fq + wxy * fq) + lam * (fi - bi)
    eq10 = 0.5 * (wxx * fq + wyx * fq) + lam * (fj - bj)  # Eq. 10 prints s^xy; S^xy = S^yx
    assert torch.allclose(gi, eq9) and torch.allclose(gj, eq10)
    # Eq. 8 as printed has the opposite sign of its bracket: the loss's gradient is -bracket / 2.
    assert torch.allclose(gq, -0.5 * bracket8 + lam * (fq - bq))
    assert not torch.allclose(gq, eq8_printed)


def test_ranking_terms_follow_eq5_and_the_cross_reading():
    c = 4
    f = [torch.randn(2, c) for _ in range(3)]
    g = [torch.randn(2, c) for _ in range(3)]
    d = lambda a, b: 0.5 * (c - (a * b).sum(1))  # noqa: E731
    eq5 = ranking_terms(*f, *g, c, "eq5")
    assert torch.allclose(eq5["xx"], d(f[0], f[1]) - d(f[0], f[2]))
    assert torch.allclose(eq5["yy"], d(g[0], g[1]) - d(g[0], g[2]))
    assert torch.allclose(eq5["xy"], d(f[0], f[1]) - d(g[0], g[2]))
    assert torch.allclose(eq5["yx"], d(g[0], g[1]) - d(f[0], f[2]))
    cross = ranking_terms(*f, *g, c, "cross")
    assert torch.allclose(cross["xy"], d(f[0], g[1]) - d(f[0], g[2]))
    assert torch.allclose(cross["yx"], d(g[0], f[1]) - d(g[0], f[2]))
    codes = torch.tensor([[1.0, -1, 1, 1]]), torch.tensor([[1.0, 1, -1, 1]])
    assert relaxed_hamming(*codes, 4).item() == 2.0  # the relaxation is exact on binary codes


def test_hinge_reading_is_zero_when_every_term_is_satisfied_and_linear_is_not():
    c = 4
    same = torch.ones(1, c)
    f = (same, same, -same)  # positive at distance 0, negative at distance c: every delta is -c
    w = {k: torch.ones(1) for k in ("xx", "yy", "xy", "yx")}
    valid = torch.ones(1, dtype=torch.bool)
    hinge = rdcmh_loss(f, f, f, w, valid, c, 0.0, loss="hinge", margin=0.0)
    linear = rdcmh_loss(f, f, f, w, valid, c, 0.0, loss="linear")
    assert hinge.item() == 0.0 and linear.item() == pytest.approx(-4 * c)
    assert rdcmh_loss(f, f, f, w, valid, c, 0.0, loss="hinge", margin=c + 1.0).item() == pytest.approx(4.0)


def test_invalid_triplets_do_not_count():
    c = 3
    f = tuple(torch.randn(2, c) for _ in range(3))
    w = {k: torch.ones(2) for k in ("xx", "yy", "xy", "yx")}
    both = rdcmh_loss(f, f, f, w, torch.tensor([True, False]), c, 1.0)
    first = rdcmh_loss(tuple(x[:1] for x in f), tuple(x[:1] for x in f), tuple(x[:1] for x in f),
                       {k: v[:1] for k, v in w.items()}, torch.tensor([True]), c, 1.0)
    assert torch.allclose(both, first)


def test_code_update_is_the_sign_rule_with_zero_to_plus_one():
    f = torch.tensor([[0.5, -0.2, 0.0, -1.0]])
    g = torch.tensor([[-0.5, -0.1, 0.0, 2.0]])
    assert update_codes(f, g, 1.0).tolist() == [[1.0, -1.0, 1.0, 1.0]]
    assert update_codes(f, g, 0.0).tolist() == [[1.0, 1.0, 1.0, 1.0]]  # lambda = 0: U = 0 -> +1


# ------------------------------------------------------------------------------- the hashers
def test_fit_is_reproducible_and_records_its_history():
    img, txt, lab, labeled = _toy(n=120)
    a = RDCMH(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    b = RDCMH(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    assert np.array_equal(a.encode_image(img), b.encode_image(img))
    assert np.array_equal(a.encode_text(txt), b.encode_text(txt))
    assert a.history_["loss"].shape == (30,) and a.history_["valid_triplets"] == 30 * 32
    assert a.similarity_shifted_ == {"image": False, "text": False}
    assert a.train_codes_.dtype == np.int8 and a.train_codes_.shape == (120, 8)


def test_auto_device_runs():
    img, txt, lab, labeled = _toy(n=50)
    h = RDCMH(n_bits=4, device="auto", **{**TINY, "n_iter": 2}).fit(img, txt, lab, labeled)
    assert h.encode_image(img).shape == (50, 4)


@pytest.mark.parametrize("params", [
    {"loss": "triplet"}, {"loss": "linear", "margin": 0.5}, {"cross_terms": "both"}, {"n_bins": 1},
    {"lam": -1.0}, {"lr": 0.0}, {"n_iter": 0}, {"dropout": 1.0}, {"image_backbone": "cnnf-raw"},
    {"device": "tpu"}, {"sampler": "ranks"}, {"n_iter": True}, {"image_size": 0},
])
def test_bad_parameters_fail_before_work(params):
    img, txt, lab, labeled = _toy(n=20)
    with pytest.raises(InputError) as err:
        RDCMH(**{**TINY, **params}).fit(img, txt, lab, labeled)
    assert "\n" not in str(err.value) and "valid" in str(err.value)


def test_constraint_message_names_the_parameter_and_the_valid_forms():
    with pytest.raises(InputError, match=r"^RDCMH parameter lam=-1.0 is invalid; valid: a float in \[0, inf\)$"):
        RDCMH(lam=-1.0).validate_params()
    with pytest.raises(InputError, match="sampler='ranks' is invalid; valid: one of 'bins', 'levels', 'pairs', 'top'"):
        RDCMH(sampler="ranks").validate_params()


@pytest.mark.parametrize("sampler", ["bins", "levels", "top", "pairs"])
def test_every_sampler_trains_and_is_reproducible(sampler):
    img, txt, lab, labeled = _toy(n=90)
    a = RDCMH(n_bits=8, sampler=sampler, **{**TINY, "n_iter": 8}).fit(img, txt, lab, labeled)
    b = RDCMH(n_bits=8, sampler=sampler, **{**TINY, "n_iter": 8}).fit(img, txt, lab, labeled)
    assert np.array_equal(a.encode_text(txt), b.encode_text(txt))
    assert a.history_["valid_triplets"] == 8 * 32
    assert (a.level_thresholds_ is not None) == (sampler == "levels")
    if sampler == "levels":
        assert a.level_thresholds_.shape == (4,) and (np.diff(a.level_thresholds_) <= 0).all()


def test_samplers_change_the_training_triplets():
    img, txt, lab, labeled = _toy(n=90)
    codes = {s: RDCMH(n_bits=8, sampler=s, **{**TINY, "n_iter": 8}).fit(img, txt, lab, labeled).train_codes_
             for s in ("bins", "top", "pairs")}
    assert not np.array_equal(codes["bins"], codes["top"]) and not np.array_equal(codes["bins"], codes["pairs"])


def test_registry_names_resolve_to_the_variants():
    assert [get_method(n) for n in ("rdcmh", "rdcmh-nw", "rdcmh-nd", "rdcmh-ns", "rdcmh-nj")] == [
        RDCMH, RDCMH_NW, RDCMH_ND, RDCMH_NS, RDCMH_NJ]


def test_nw_uses_unit_weights(monkeypatch):
    import methods.rdcmh as mod

    seen = {}
    original = mod.rdcmh_loss

    def spy(f, g, b, weights, *args, **kw):
        seen.setdefault("w", []).append({k: v.clone() for k, v in weights.items()})
        return original(f, g, b, weights, *args, **kw)

    monkeypatch.setattr(mod, "rdcmh_loss", spy)
    img, txt, lab, labeled = _toy(n=80)
    RDCMH_NW(n_bits=8, **{**TINY, "n_iter": 3}).fit(img, txt, lab, labeled)
    assert all(torch.equal(v, torch.ones_like(v)) for w in seen["w"] for v in w.values())
    seen.clear()
    RDCMH(n_bits=8, **{**TINY, "n_iter": 3}).fit(img, txt, lab, labeled)
    assert any((v < 1).any() for w in seen["w"] for v in w.values())


def test_nd_hash_functions_are_affine_maps_of_the_features():
    img, txt, lab, labeled = _toy(n=80)
    h = RDCMH_ND(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    params = [p for p in h.image_net_.parameters()]
    assert [tuple(p.shape) for p in params] == [(8, img.shape[1]), (8,)]
    z = h.image_scaler_.transform(img)
    w, b = (p.detach().numpy() for p in params)
    assert np.array_equal(h.encode_image(img), np.where(z @ w.T + b >= 0, 1, -1).astype(np.int8))


def _same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ns_ignores_unlabeled_items_entirely():
    img, txt, lab, labeled = _toy(n=100)
    rng = np.random.default_rng(9)
    img2, txt2 = img.copy(), txt.copy()
    img2[~labeled] = rng.random((int((~labeled).sum()), img.shape[1]))
    txt2[~labeled] = 1.0 - txt2[~labeled]
    a = RDCMH_NS(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    b = RDCMH_NS(n_bits=8, **TINY).fit(img2, txt2, lab, labeled)
    # Codes of short runs are dominated by the (seeded) initialisation, so compare the trained weights.
    assert _same_weights(a.image_net_, b.image_net_) and _same_weights(a.text_net_, b.text_net_)
    assert np.array_equal(a.encode_image(img), b.encode_image(img))
    # The perturbation is not vacuous: full RDCMH, which uses unlabeled items, trains differently.
    full_a = RDCMH(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    full_b = RDCMH(n_bits=8, **TINY).fit(img2, txt2, lab, labeled)
    assert not _same_weights(full_a.image_net_, full_b.image_net_)


def test_ns_needs_three_labeled_items():
    img, txt, lab, labeled = _toy(n=30)
    labeled = np.zeros(30, bool)
    labeled[:2] = True
    lab[~labeled] = 0
    with pytest.raises(InputError, match="at least 3"):
        RDCMH_NS(**TINY).fit(img, txt, lab, labeled)


def test_nj_learns_codes_first_then_fits_networks_to_them():
    img, txt, lab, labeled = _toy(n=100)
    h = RDCMH_NJ(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    assert set(h.history_) >= {"loss", "fit_loss"}
    assert h.history_["fit_loss"][-5:].mean() < h.history_["fit_loss"][:5].mean()  # regression onto B progresses
    joint = RDCMH(n_bits=8, **TINY).fit(img, txt, lab, labeled)
    assert not np.array_equal(joint.encode_image(img), h.encode_image(img))


def test_extras_keep_the_loss_curve_and_the_validation_selection():
    """What the run record stores beside the metrics (benchmark.evaluate uses Hasher.extras)."""
    img, txt, lab, labeled = _toy(n=60)
    ex = RDCMH(n_bits=8, **TINY).fit(img, txt, lab, labeled).extras()
    assert ex["validation_selection"] == RDCMH.validation_selection
    assert len(ex["history"]["loss"]) == TINY["n_iter"]

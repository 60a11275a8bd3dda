"""benchmark.metrics against plain per-query references.

References are written the slow, obvious way: tie-aware metrics average the metric over every order of
the tied items (exhaustive enumeration, tiny databases); the stable policy is the classic loop with
``np.argsort(kind="stable")``; a larger case is checked in exact rational arithmetic.
"""
from __future__ import annotations

import itertools
import math
from fractions import Fraction

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from benchmark import metrics as M
from benchmark.errors import InputError

TOL = 1e-12
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------- references


def ham(q, d):
    """Hamming distances of {-1,+1} codes, the textbook formula."""
    return (q.shape[1] - q.astype(np.int64) @ d.astype(np.int64).T) // 2


def shared(ql, dl):
    return np.asarray(ql, np.int64) @ np.asarray(dl, np.int64).T


def ap_of_order(grades, k=None):
    """AP@k of one fixed ranking (grades in rank order); divides by the relevant items in the top k."""
    hits, total = 0, 0.0
    for pos, g in enumerate(grades[:k], start=1):
        if g > 0:
            hits += 1
            total += hits / pos
    return total / hits if hits else 0.0


def hits_of_order(grades, n):
    return sum(1 for g in grades[:n] if g > 0)


def dcg_of_order(grades, k=None):
    return sum((2.0 ** g - 1) / math.log2(pos + 1) for pos, g in enumerate(grades[:k], start=1))


def tie_orders(dist_row):
    """Every ranking that sorts by distance: the product of the permutations of each tied group."""
    groups = [np.flatnonzero(dist_row == v) for v in np.unique(dist_row)]
    for parts in itertools.product(*[itertools.permutations(g) for g in groups]):
        yield np.concatenate(parts)


def expected(dist_row, grade_row, metric):
    vals = [metric(grade_row[order]) for order in tie_orders(dist_row)]
    return math.fsum(vals) / len(vals)


def stable(dist_row, grade_row, metric):
    return metric(grade_row[np.argsort(dist_row, kind="stable")])


def reference(dist, grades, policy, metric, no_relevant="exclude"):
    """Per-query reference values (NaN / 0 for queries without a relevant item) and their mean."""
    one = expected if policy == "average" else stable
    per = []
    for i in range(dist.shape[0]):
        if (grades[i] > 0).sum() == 0:
            per.append(np.nan if no_relevant == "exclude" else 0.0)
        else:
            per.append(one(dist[i], grades[i], metric))
    per = np.array(per)
    return per, (np.nanmean(per) if (~np.isnan(per)).any() else np.nan)


def ideal(grades_row, k=None):
    return dcg_of_order(np.sort(grades_row)[::-1], k)


# ---------------------------------------------------------------------------------- strategies


@st.composite
def problems(draw, max_query=3, max_db=6, bits=(1, 3), max_labels=3):
    nq = draw(st.integers(1, max_query))
    nd = draw(st.integers(1, max_db))
    c = draw(st.sampled_from(bits) if isinstance(bits, list) else st.integers(*bits))
    m = draw(st.integers(1, max_labels))
    code = st.sampled_from([-1, 1])
    q = draw(arrays(np.int8, (nq, c), elements=code))
    d = draw(arrays(np.int8, (nd, c), elements=code))
    # Sparse labels so that some queries have no relevant item and some items have no label.
    lab = st.sampled_from([0, 0, 1])
    ql = draw(arrays(np.uint8, (nq, m), elements=lab))
    dl = draw(arrays(np.uint8, (nd, m), elements=lab))
    return q, d, ql, dl


def assert_close(got, want):
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape
    assert (np.isnan(got) == np.isnan(want)).all(), (got, want)
    ok = ~np.isnan(want)
    assert np.all(np.abs(got[ok] - want[ok]) <= TOL), (got, want)


# ---------------------------------------------------------------------------------- tie-aware vs enumeration


@SETTINGS
@given(problems(), st.integers(1, 8), st.sampled_from(M.NO_RELEVANT))
def test_tie_aware_map_equals_average_over_tie_orders(prob, k, no_relevant):
    q, d, ql, dl = prob
    dist, grades = ham(q, d), shared(ql, dl)
    for topk in (None, k):
        got = M.mean_average_precision(q, d, ql, dl, topk=topk, no_relevant=no_relevant)
        per, value = reference(dist, grades, "average", lambda g: ap_of_order(g, topk), no_relevant)
        assert_close(got.per_query, per)
        assert_close(got.value, value)
        assert got.n_no_relevant == int(((grades > 0).sum(axis=1) == 0).sum())


@SETTINGS
@given(problems(), st.sampled_from(M.TIES))
def test_precision_at_n_equals_reference(prob, ties):
    q, d, ql, dl = prob
    dist, grades = ham(q, d), shared(ql, dl)
    ns = np.arange(1, d.shape[0] + 1)
    got = M.precision_at_n(q, d, ql, dl, ns, ties=ties)
    want = [reference(dist, grades, ties, lambda g: hits_of_order(g, n) / n)[1] for n in ns]
    assert_close(got, want)


@SETTINGS
@given(problems(), st.integers(1, 8), st.sampled_from(M.TIES), st.sampled_from(M.NO_RELEVANT))
def test_ndcg_equals_reference(prob, k, ties, no_relevant):
    q, d, ql, dl = prob
    dist, grades = ham(q, d), shared(ql, dl)
    for kk in (None, k):
        got = M.ndcg(q, d, ql, dl, k=kk, ties=ties, no_relevant=no_relevant)
        per = []
        for i in range(q.shape[0]):
            if (grades[i] > 0).sum() == 0:
                per.append(np.nan if no_relevant == "exclude" else 0.0)
                continue
            one = expected if ties == "average" else stable
            per.append(one(dist[i], grades[i], lambda g: dcg_of_order(g, kk)) / ideal(grades[i], kk))
        assert_close(got, np.nanmean(per) if not np.isnan(per).all() else np.nan)


# ---------------------------------------------------------------------------------- stable vs the classic loop


def classic_stable_loop(q, d, ql, dl, topk=None):
    """The per-query loop of the field's public code, with a stable sort (MATLAB order)."""
    out = []
    for i in range(q.shape[0]):
        gnd = (dl.astype(np.int64) @ ql[i].astype(np.int64)) > 0
        if gnd.sum() == 0:
            out.append(np.nan)
            continue
        hamm = 0.5 * (q.shape[1] - d.astype(np.float64) @ q[i].astype(np.float64))
        gnd = gnd[np.argsort(hamm, kind="stable")][:topk]
        tsum = int(gnd.sum())
        if tsum == 0:
            out.append(0.0)
            continue
        out.append(np.mean(np.arange(1, tsum + 1) / (np.flatnonzero(gnd) + 1.0)))
    return np.array(out)


@SETTINGS
@given(problems(max_query=5, max_db=60, bits=[1, 2, 3, 8, 64, 65, 130], max_labels=70), st.integers(1, 70))
def test_stable_map_equals_classic_loop(prob, k):
    q, d, ql, dl = prob
    for topk in (None, k):
        got = M.mean_average_precision(q, d, ql, dl, topk=topk, ties="stable")
        assert_close(got.per_query, classic_stable_loop(q, d, ql, dl, topk))


@SETTINGS
@given(problems(max_query=4, max_db=40, bits=[1, 2, 64, 65], max_labels=70), st.integers(1, 45))
def test_stable_precision_and_ndcg_on_multiword_inputs(prob, k):
    q, d, ql, dl = prob
    dist, grades = ham(q, d), shared(ql, dl)
    ns = np.unique(np.clip([1, k, d.shape[0]], 1, d.shape[0]))
    got = M.precision_at_n(q, d, ql, dl, ns, ties="stable")
    want = [reference(dist, grades, "stable", lambda g: hits_of_order(g, n) / n)[1] for n in ns]
    assert_close(got, want)
    per = [stable(dist[i], grades[i], lambda g: dcg_of_order(g, k)) / ideal(grades[i], k)
           for i in range(q.shape[0]) if (grades[i] > 0).any()]
    assert_close(M.ndcg(q, d, ql, dl, k=k, ties="stable"), np.mean(per) if per else np.nan)


def test_dcmh_toy_example_stable_map():
    # The toy example shipped with the public DCMH evaluation code; docs/protocols.md, MAP conventions: 0.7042 stable.
    qb = np.array([[1, -1, 1, 1], [-1, -1, -1, 1], [1, 1, -1, 1], [1, 1, 1, -1]], np.int8)
    rb = np.array([[1, -1, 1, -1], [-1, -1, 1, -1], [-1, -1, 1, -1], [1, 1, -1, -1], [-1, 1, -1, -1],
                   [1, 1, -1, 1]], np.int8)
    ql = np.array([[0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 0, 1], [0, 1, 0, 1]])
    rl = np.array([[1, 0, 0, 1], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    assert round(M.mean_average_precision(qb, rb, ql, rl, ties="stable").value, 4) == 0.7042
    # Tie-aware AP is the mean over tie orders, so it lies between the worst and best order per query.
    tie = M.mean_average_precision(qb, rb, ql, rl).per_query
    dist, grades = ham(qb, rb), shared(ql, rl)
    for i in range(4):
        vals = [ap_of_order(grades[i][o]) for o in tie_orders(dist[i])]
        assert min(vals) - TOL <= tie[i] <= max(vals) + TOL


# ---------------------------------------------------------------------------------- large tied groups, exact arithmetic


def exact_tie_ap(dist_row, rel_row, k):
    """Tie-aware AP@k in rational arithmetic: expectation by linearity inside each tied group and, for
    the group straddling rank k, over the hypergeometric number of its relevant items in the top k."""
    s, before, rel_before = Fraction(0), 0, 0
    for v in np.unique(dist_row):
        members = dist_row == v
        n, r = int(members.sum()), int(rel_row[members].sum())

        def precision_sum(m, x):
            # Relevant items at each of m positions with probability x/m; (j-1)(x-1)/(m-1) above them.
            if x == 0:
                return Fraction(0)
            tot = Fraction(0)
            for j in range(1, m + 1):
                above = Fraction((j - 1) * (x - 1), m - 1) if m > 1 else Fraction(0)
                tot += Fraction(x, m) * (rel_before + 1 + above) / (before + j)
            return tot

        if before + n <= k:
            s += precision_sum(n, r)
            before, rel_before = before + n, rel_before + r
            if before == k:
                break
            continue
        m = k - before
        out = Fraction(0)
        for x in range(max(0, m - (n - r)), min(m, r) + 1):
            p = Fraction(math.comb(r, x) * math.comb(n - r, m - x), math.comb(n, m))
            if rel_before + x:
                out += p * (s + precision_sum(m, x)) / (rel_before + x)
        return out
    return s / rel_before if rel_before else Fraction(0)


def test_exact_reference_agrees_with_enumeration():
    rng = np.random.default_rng(3)
    for _ in range(30):
        dist = rng.integers(0, 3, 6)
        rel = rng.integers(0, 2, 6)
        for k in range(1, 8):
            assert abs(float(exact_tie_ap(dist, rel, k)) - expected(dist, rel, lambda g: ap_of_order(g, k))) <= TOL


def test_large_tied_groups_match_exact_arithmetic():
    # Groups of hundreds of items deep in the ranking: where float cancellation would show.
    rng = np.random.default_rng(7)
    nd = 1200
    q = np.where(rng.random((3, 2)) < 0.5, 1, -1).astype(np.int8)
    d = np.where(rng.random((nd, 2)) < 0.5, 1, -1).astype(np.int8)
    ql = np.eye(3, dtype=np.uint8)
    dl = (rng.random((nd, 3)) < np.array([0.02, 0.3, 0.9])).astype(np.uint8)  # rare, common, most
    dist, rel = ham(q, d), shared(ql, dl) > 0
    for k in (None, 1, 250, 299, 700, 1199):
        got = M.mean_average_precision(q, d, ql, dl, topk=k)
        want = [float(exact_tie_ap(dist[i], rel[i].astype(int), nd if k is None else k)) for i in range(3)]
        assert_close(got.per_query, want)


# ---------------------------------------------------------------------------------- own distance, PR, packing


@SETTINGS
@given(problems(max_query=4, max_db=30, bits=[1, 2, 5, 64, 70], max_labels=66), st.integers(1, 35))
def test_own_distance_path_equals_hamming_path(prob, k):
    q, d, ql, dl = prob
    dist = lambda a, b: ham(a, b).astype(np.float64)  # noqa: E731
    ns = np.arange(1, d.shape[0] + 1)
    for ties in M.TIES:
        for topk in (None, k):
            a = M.mean_average_precision(q, d, ql, dl, topk=topk, ties=ties)
            b = M.mean_average_precision(q, d, ql, dl, topk=topk, ties=ties, distance=dist)
            assert_close(b.per_query, a.per_query)
            assert_close(M.ndcg(q, d, ql, dl, k=topk, ties=ties, distance=dist),
                         M.ndcg(q, d, ql, dl, k=topk, ties=ties))
        assert_close(M.precision_at_n(q, d, ql, dl, ns, ties=ties, distance=dist),
                     M.precision_at_n(q, d, ql, dl, ns, ties=ties))


@SETTINGS
@given(st.data(), st.sampled_from(M.TIES), st.integers(1, 7))
def test_own_distance_float_ties_equal_reference(data, ties, k):
    # Real-valued query rows and an own distance with exact float ties (CDQ-like use).
    nq, nd = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 6))
    vals = st.sampled_from([0.0, 0.25, 0.5, 1.0])
    q = data.draw(arrays(np.float64, (nq, 1), elements=vals))
    d = data.draw(arrays(np.float64, (nd, 1), elements=vals))
    ql = data.draw(arrays(np.uint8, (nq, 2), elements=st.sampled_from([0, 1])))
    dl = data.draw(arrays(np.uint8, (nd, 2), elements=st.sampled_from([0, 1])))
    dist = np.abs(q - d.T)
    grades = shared(ql, dl)
    got = M.mean_average_precision(q, d, ql, dl, topk=k, ties=ties, distance=lambda a, b: np.abs(a - b.T))
    per, _ = reference(dist, grades, ties, lambda g: ap_of_order(g, k))
    assert_close(got.per_query, per)


@SETTINGS
@given(problems(max_query=5, max_db=30, bits=[1, 3, 8, 65], max_labels=4), st.sampled_from(M.NO_RELEVANT))
def test_precision_recall_radius_equals_reference(prob, no_relevant):
    q, d, ql, dl = prob
    dist, rel = ham(q, d), shared(ql, dl) > 0
    got = M.precision_recall_hamming(q, d, ql, dl, no_relevant=no_relevant)
    c = q.shape[1]
    assert list(got["radius"]) == list(range(c + 1))
    counted = [i for i in range(q.shape[0]) if rel[i].any() or no_relevant == "zero"]
    for r in range(c + 1):
        precs, recs = [], []
        for i in counted:
            inside = dist[i] <= r
            hits = int((inside & rel[i]).sum())
            precs.append(hits / inside.sum() if inside.any() else 0.0)  # retrieving nothing counts as 0
            recs.append(hits / rel[i].sum() if rel[i].any() else 0.0)
        want_p = np.mean(precs) if counted else np.nan
        want_r = np.mean(recs) if counted else np.nan
        assert_close(got["precision"][r], want_p)
        assert_close(got["recall"][r], want_r)
        assert got["n_retrieving"][r] == sum(bool((dist[i] <= r).any()) for i in counted)


@pytest.mark.parametrize("c", [1, 7, 64, 65, 130])
def test_pack_codes_layout_and_hamming_distance(c):
    rng = np.random.default_rng(c)
    a = np.where(rng.random((5, c)) < 0.5, 1, -1).astype(np.int8)
    b = np.where(rng.random((9, c)) < 0.5, 1, -1).astype(np.int8)
    packed = M.pack_codes(a)
    assert packed.dtype == np.uint64 and packed.shape == (5, -(-c // 64))
    for i in range(5):
        for j in range(c):
            assert bool((int(packed[i, j // 64]) >> (j % 64)) & 1) == (a[i, j] == 1)
        if c % 64:
            assert int(packed[i, -1]) >> (c % 64) == 0  # padding bits are 0
    assert np.array_equal(M.hamming_distance(a, b), ham(a, b))


# ---------------------------------------------------------------------------------- policies and invariants


def test_no_relevant_policies_are_counted_and_applied():
    q = np.array([[1, 1], [1, -1], [-1, -1]], np.int8)
    d = np.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], np.int8)
    ql = np.array([[1, 0], [0, 1], [0, 0]])  # query 2 has no label: nothing is relevant to it
    dl = np.array([[1, 0], [1, 0], [0, 1], [0, 0]])
    ex = M.mean_average_precision(q, d, ql, dl, ties="stable")
    zero = M.mean_average_precision(q, d, ql, dl, ties="stable", no_relevant="zero")
    loop = classic_stable_loop(q, d, ql, dl)
    assert ex.n_no_relevant == zero.n_no_relevant == 1 and ex.n_queries == 3
    assert np.isnan(ex.per_query[2]) and zero.per_query[2] == 0.0
    assert_close(ex.value, np.nanmean(loop))
    assert_close(zero.value, np.nansum(loop) / 3)
    none = M.mean_average_precision(q[2:], d, ql[2:], dl)
    assert np.isnan(none.value) and none.n_no_relevant == 1


@SETTINGS
@given(problems(max_query=3, max_db=20, bits=[1, 2, 4], max_labels=3), st.randoms(use_true_random=False))
def test_tie_aware_map_ignores_database_order(prob, rnd):
    q, d, ql, dl = prob
    perm = list(range(d.shape[0]))
    rnd.shuffle(perm)
    a = M.mean_average_precision(q, d, ql, dl, topk=5)
    b = M.mean_average_precision(q, d[perm], ql, dl[perm], topk=5)
    assert_close(a.per_query, b.per_query)


def test_topk_beyond_database_is_map_at_all_and_result_is_recorded():
    rng = np.random.default_rng(0)
    q = np.where(rng.random((4, 3)) < 0.5, 1, -1).astype(np.int8)
    d = np.where(rng.random((10, 3)) < 0.5, 1, -1).astype(np.int8)
    ql, dl = np.eye(4, 3, dtype=np.uint8), (rng.random((10, 3)) < 0.5).astype(np.uint8)
    for ties in M.TIES:
        big = M.mean_average_precision(q, d, ql, dl, topk=50, ties=ties)
        assert_close(big.per_query, M.mean_average_precision(q, d, ql, dl, ties=ties).per_query)
        assert (big.topk, big.ties, big.no_relevant) == (50, ties, "exclude")
    with pytest.raises(AttributeError):
        big.value = 1.0  # frozen


def test_threads_do_not_change_results():
    rng = np.random.default_rng(1)
    q = np.where(rng.random((150, 16)) < 0.5, 1, -1).astype(np.int8)  # several tiles per thread
    d = np.where(rng.random((700, 16)) < 0.5, 1, -1).astype(np.int8)
    ql, dl = (rng.random((150, 5)) < 0.3), (rng.random((700, 5)) < 0.3)
    before = numba.get_num_threads()
    try:
        out = {}
        for n in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n)
            out[n] = [M.mean_average_precision(q, d, ql, dl, ties=t).per_query for t in M.TIES]
    finally:
        numba.set_num_threads(before)
    for runs in zip(*out.values()):
        for r in runs[1:]:
            assert np.array_equal(r, runs[0], equal_nan=True)


# ---------------------------------------------------------------------------------- bad input


Q = np.array([[1, -1], [-1, 1]], np.int8)
D = np.array([[1, 1], [-1, -1], [1, -1]], np.int8)
QL = np.array([[1, 0], [0, 1]])
DL = np.array([[1, 0], [0, 1], [1, 1]])

BAD_CALLS = {
    "ties string": lambda: M.mean_average_precision(Q, D, QL, DL, ties="random"),
    "no_relevant string": lambda: M.mean_average_precision(Q, D, QL, DL, no_relevant="skip"),
    "topk zero": lambda: M.mean_average_precision(Q, D, QL, DL, topk=0),
    "topk negative": lambda: M.mean_average_precision(Q, D, QL, DL, topk=-1),
    "topk float": lambda: M.mean_average_precision(Q, D, QL, DL, topk=2.5),
    "topk bool": lambda: M.mean_average_precision(Q, D, QL, DL, topk=True),
    "code lengths differ": lambda: M.mean_average_precision(Q, D[:, :1], QL, DL),
    "codes with zeros": lambda: M.mean_average_precision(np.array([[1, 0], [-1, 1]], np.int8), D, QL, DL),
    "codes 0/1": lambda: M.mean_average_precision((Q > 0).astype(np.int64), (D > 0).astype(np.int64), QL, DL),
    "float codes": lambda: M.mean_average_precision(Q * 0.5, D, QL, DL),
    "1-D codes": lambda: M.mean_average_precision(Q[0], D, QL, DL),
    "query label rows": lambda: M.mean_average_precision(Q, D, QL[:1], DL),
    "db label rows": lambda: M.mean_average_precision(Q, D, QL, DL[:2]),
    "label columns differ": lambda: M.mean_average_precision(Q, D, QL, DL[:, :1]),
    "labels not binary": lambda: M.mean_average_precision(Q, D, QL * 2, DL),
    "labels NaN": lambda: M.mean_average_precision(Q, D, QL.astype(float) * np.nan, DL),
    "no queries": lambda: M.mean_average_precision(Q[:0], D, QL[:0], DL),
    "distance not callable": lambda: M.mean_average_precision(Q, D, QL, DL, distance=3),
    "distance wrong shape": lambda: M.mean_average_precision(Q, D, QL, DL, distance=lambda a, b: np.zeros((1, 1))),
    "distance NaN": lambda: M.mean_average_precision(Q, D, QL, DL, distance=lambda a, b: np.full((len(a), 3), np.nan)),
    "ns zero": lambda: M.precision_at_n(Q, D, QL, DL, [0, 1]),
    "ns beyond database": lambda: M.precision_at_n(Q, D, QL, DL, [4]),
    "ns float": lambda: M.precision_at_n(Q, D, QL, DL, [1.5]),
    "ndcg k zero": lambda: M.ndcg(Q, D, QL, DL, k=0),
    "ndcg ties": lambda: M.ndcg(Q, D, QL, DL, ties="worst"),
    "pr labels": lambda: M.precision_recall_hamming(Q, D, QL, DL * 3),
    "pack 1-D": lambda: M.pack_codes(np.array([1, -1], np.int8)),
    "pack values": lambda: M.pack_codes(np.array([[2, -1]], np.int8)),
    "hamming lengths": lambda: M.hamming_distance(Q, D[:, :1]),
}


@pytest.mark.parametrize("case", list(BAD_CALLS))
def test_bad_input_raises_one_line_input_error(case):
    with pytest.raises(InputError) as err:
        BAD_CALLS[case]()
    assert "\n" not in str(err.value) and str(err.value)


# ---------------------------------------------------------------------------------------- code length limits
def _stable_map_reference(q, d, ql, dl):
    """Classic loop: stable sort by exact Hamming distance, AP over the relevant items' ranks."""
    dist = (q.shape[1] - q.astype(np.int64) @ d.T.astype(np.int64)) // 2
    rel = (ql @ dl.T) > 0
    aps = []
    for i in range(q.shape[0]):
        r = rel[i, np.argsort(dist[i], kind="stable")]
        if r.any():
            hits = np.cumsum(r)
            aps.append(float(np.mean(hits[r] / (np.flatnonzero(r) + 1))))
    return float(np.mean(aps))


@pytest.mark.parametrize("n_bits", [65535, 65536, 65537])
def test_stable_policy_is_exact_at_and_beyond_16_bit_distances(n_bits):
    """The stable kernel keeps a distance in 16 bits; longer codes take the exact sorting path.

    The database holds each query's complement (distance = n_bits, which wraps to 0 in 16 bits at
    65,536) ahead of the query itself, so a truncated distance would rank the complement first."""
    from benchmark.metrics import STABLE_KERNEL_MAX_BITS

    rng = np.random.default_rng(n_bits)
    q = np.where(rng.random((3, n_bits)) < 0.5, -1, 1).astype(np.int8)
    d = np.concatenate([-q, q, np.where(rng.random((4, n_bits)) < 0.5, -1, 1).astype(np.int8)])
    ql = np.eye(3, dtype=np.uint8)
    dl = np.concatenate([np.eye(3, dtype=np.uint8), np.eye(3, dtype=np.uint8)[[1, 2, 0]], rng.integers(0, 2, (4, 3))])
    expected = _stable_map_reference(q, d, ql, dl)
    got = M.mean_average_precision(q, d, ql, dl, ties="stable").value
    assert got == pytest.approx(expected, abs=1e-12)
    assert (n_bits > STABLE_KERNEL_MAX_BITS) == (n_bits >= 65536)
    # precision@1 under the stable order: the query's own copy (distance 0) comes first
    p1 = M.precision_at_n(q, d, ql, dl, [1, 2], ties="stable")
    ref = M.precision_at_n(q, d, ql, dl, [1, 2], ties="stable",
                           distance=lambda a, b: M.hamming_distance(a, b).astype(float))
    assert np.allclose(p1, ref)
    nd = M.ndcg(q, d, ql, dl, ties="stable")
    nd_ref = M.ndcg(q, d, ql, dl, ties="stable", distance=lambda a, b: M.hamming_distance(a, b).astype(float))
    assert nd == pytest.approx(nd_ref, abs=1e-12)

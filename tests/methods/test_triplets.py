"""RDCMH's triplet samplers: each one's triplet distribution against a brute-force enumeration.

For a small ranking list the exact probability of every (positive, negative) pair is enumerated in
plain Python from the sampler's definition; many seeded draws must match it in support and within a
total-variation bound (TV of an exact sampler at 40,000 draws over <= 90 outcomes is ~0.01-0.02).
"""
import itertools

import numpy as np
import pytest
import torch

from cmhcore.errors import InputError
from methods._triplets import (SAMPLERS, SemiSupervisedSimilarity, boundary_positions, level_bins, level_thresholds,
                               sample_triplets)

DRAWS = 40_000
TV_BOUND = 0.03


class MatrixSimilarity:
    """A similarity given as a full matrix (what the samplers read: ``rows``, ``n``, ``device``)."""

    def __init__(self, s: np.ndarray):
        self.s = torch.as_tensor(s, dtype=torch.float32)
        self.n = s.shape[0]
        self.device = torch.device("cpu")

    def rows(self, idx):
        return self.s[idx]


def _bins_of(values: dict, thresholds: list) -> dict:
    """Bin of each item: how many thresholds are >= its value (ties go to the later bin)."""
    return {k: sum(1 for t in thresholds if v <= t) for k, v in values.items()}


def _equal_count_thresholds(values: dict, n_bins: int) -> list:
    desc = sorted(values.values(), reverse=True)
    return [desc[p] for p in boundary_positions(len(desc), n_bins)]


def _brute_from_bins(bins: dict, top: bool) -> dict:
    members = {}
    for k, b in bins.items():
        members.setdefault(b, []).append(k)
    nonempty = sorted(members)
    probs = {}
    if len(nonempty) < 2:
        return probs
    if top:
        bin_pairs = [(nonempty[0], b) for b in nonempty[1:]]
    else:
        bin_pairs = list(itertools.combinations(nonempty, 2))
    for a, b in bin_pairs:
        for i in members[a]:
            for j in members[b]:
                probs[(i, j)] = probs.get((i, j), 0.0) + 1.0 / (len(bin_pairs) * len(members[a]) * len(members[b]))
    return probs


def brute_force(row: np.ndarray, q: int, sampler: str, n_bins: int, thresholds=None) -> dict:
    """Exact P(positive = i, negative = j) for query ``q`` under ``sampler``, by enumeration."""
    values = {k: float(row[k]) for k in range(row.size) if k != q}
    if sampler == "pairs":
        pairs = [(i, j) for i in values for j in values if values[i] > values[j]]
        return {p: 1.0 / len(pairs) for p in pairs}
    if sampler == "levels":
        bins = _bins_of(values, [float(t) for t in thresholds])
    else:
        bins = _bins_of(values, _equal_count_thresholds(values, n_bins))
    return _brute_from_bins(bins, top=sampler == "top")


def empirical(sim, q: int, sampler: str, n_bins: int, thresholds=None, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    tb = sample_triplets(sim, torch.full((DRAWS,), q, dtype=torch.long), n_bins, gen, sampler, thresholds)
    assert tb.valid.all()
    pairs, counts = np.unique(np.stack([tb.i.numpy(), tb.j.numpy()], 1), axis=0, return_counts=True)
    return {(int(a), int(b)): c / DRAWS for (a, b), c in zip(pairs, counts)}


def total_variation(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0.0) - q.get(k, 0.0)) for k in set(p) | set(q))


ROWS = {
    # 11 items, all similarities distinct: equal-count bins of 2 items each.
    "distinct": lambda rng: rng.permutation(11) / 10.0,
    # 13 items on 4 similarity levels: ties cross the equal-count boundaries.
    "tied": lambda rng: rng.integers(0, 4, 13) / 3.0,
}


@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("kind", sorted(ROWS))
def test_sampler_matches_brute_force_enumeration(sampler, kind):
    rng = np.random.default_rng(sorted(ROWS).index(kind))
    row = ROWS[kind](rng).astype(np.float32)
    n, q, n_bins = row.size, 3, 5
    s = np.tile(row, (n, 1))  # only row q is read
    sim = MatrixSimilarity(s)
    thresholds = torch.tensor([0.9, 0.6, 0.55, 0.2]) if sampler == "levels" else None
    exact = brute_force(row, q, sampler, n_bins, None if thresholds is None else thresholds.numpy())
    assert exact and abs(sum(exact.values()) - 1.0) < 1e-9
    drawn = empirical(sim, q, sampler, n_bins, thresholds)
    assert set(drawn) <= set(exact), f"{sampler} drew pairs outside its support: {set(drawn) - set(exact)}"
    assert all(row[i] > row[j] for i, j in drawn)  # Eq. 2's s_qi > s_qj on every triplet
    tv = total_variation(exact, drawn)
    assert tv < TV_BOUND, f"{sampler} on {kind}: total variation {tv:.4f} from the enumerated distribution"


def test_the_readings_differ_on_the_same_list():
    # The bound above would not notice a sampler that reads another sampler's distribution: check they differ.
    row = (np.random.default_rng(0).permutation(11) / 10.0).astype(np.float32)
    thr = np.array([0.95, 0.85, 0.8, 0.3], dtype=np.float32)
    dists = {s: brute_force(row, 3, s, 5, thr) for s in SAMPLERS}
    for a, b in itertools.combinations(SAMPLERS, 2):
        assert total_variation(dists[a], dists[b]) > 0.1, (a, b)


def test_pairs_sampler_is_uniform_over_ordered_pairs_so_the_weighted_mean_estimates_eq3():
    # Mean of (1 - s_ij) * loss_ij over draws -> Eq. 3's sum over pairs / number of pairs.
    rng = np.random.default_rng(5)
    n, q = 12, 0
    s = rng.random((n, n)).astype(np.float32)
    s = (s + s.T) / 2
    loss = rng.random((n, n))
    sim = MatrixSimilarity(s)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != q and j != q and s[q, i] > s[q, j]]
    eq3 = sum((1 - s[i, j]) * loss[i, j] for i, j in pairs)
    gen = torch.Generator().manual_seed(1)
    tb = sample_triplets(sim, torch.full((DRAWS,), q), 5, gen, "pairs")
    i, j = tb.i.numpy(), tb.j.numpy()
    estimate = np.mean((1 - s[i, j]) * loss[i, j]) * len(pairs)
    assert estimate == pytest.approx(eq3, rel=0.02)


def test_level_thresholds_are_equal_count_cuts_of_the_pooled_values():
    rng = np.random.default_rng(2)
    n = 40
    s = rng.random((n, n)).astype(np.float32)
    sim = MatrixSimilarity(s)
    thr = level_thresholds(sim, 5).numpy()
    pooled = np.sort(np.concatenate([np.delete(s[k], k) for k in range(n)]))[::-1]
    assert np.array_equal(thr, pooled[boundary_positions(pooled.size, 5)])
    # Few enough values per row that only a sample of rows is pooled: still n_bins - 1 non-increasing cuts.
    few = level_thresholds(sim, 5, max_values=200).numpy()
    assert few.shape == (4,) and (np.diff(few) <= 0).all()
    # The same cuts for every list, so the counts per bin differ between queries.
    bins = level_bins(torch.as_tensor(s[:2]), torch.tensor([0, 1]), torch.as_tensor(thr))
    counts = [np.bincount(b.numpy(), minlength=6) for b in bins]
    assert counts[0][5] == counts[1][5] == 1 and counts[0].sum() == n


def test_level_bins_tie_rule_and_query_bin():
    rows = torch.tensor([[0.9, 0.6, 0.6, 0.2, 0.1]])
    bins = level_bins(rows, torch.tensor([4]), torch.tensor([0.6, 0.2]))
    # 0.6 equals the first cut -> bin 1 (not 0); 0.2 equals the second -> bin 2; the query gets n_bins = 3.
    assert bins.tolist() == [[0, 1, 1, 2, 3]]


def test_top_sampler_takes_the_first_non_empty_bin_when_ties_empty_bin_zero():
    # Label-only similarity, 4 of 10 others share the class (value 1): they fill more than the first
    # equal-count bin, so ties send them to bin 1 and bin 0 is empty.
    lab = np.array([[1, 0]] * 5 + [[0, 1]] * 6, dtype=np.uint8)
    sim = SemiSupervisedSimilarity(None, None, lab, np.ones(11, bool), torch.device("cpu"), mode="labels")
    tb = sample_triplets(sim, torch.zeros(2000, dtype=torch.long), 5, torch.Generator().manual_seed(0), "top")
    assert tb.valid.all()
    assert (lab[tb.i.numpy(), 0] == 1).all() and (lab[tb.j.numpy(), 0] == 0).all()


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_a_list_of_equal_similarities_gives_no_triplet(sampler):
    sim = MatrixSimilarity(np.full((6, 6), 0.5, dtype=np.float32))
    thr = torch.tensor([0.9, 0.7, 0.5, 0.3]) if sampler == "levels" else None
    tb = sample_triplets(sim, torch.arange(6), 5, torch.Generator().manual_seed(0), sampler, thr)
    assert not tb.valid.any()


def test_unknown_sampler_and_missing_levels_fail_with_one_line():
    sim = MatrixSimilarity(np.eye(4, dtype=np.float32))
    with pytest.raises(InputError, match="valid: bins, pairs, levels, top"):
        sample_triplets(sim, torch.arange(4), 3, torch.Generator(), "ranks")
    with pytest.raises(InputError, match="needs 2 thresholds"):
        sample_triplets(sim, torch.arange(4), 3, torch.Generator(), "levels")


def test_default_sampler_draws_are_unchanged_by_the_option():
    # "bins" is the default: passing it explicitly must give the very same triplets as omitting it.
    s = np.random.default_rng(4).random((30, 30)).astype(np.float32)
    sim = MatrixSimilarity(s)
    a = sample_triplets(sim, torch.arange(30), 5, torch.Generator().manual_seed(3))
    b = sample_triplets(sim, torch.arange(30), 5, torch.Generator().manual_seed(3), "bins")
    assert torch.equal(a.i, b.i) and torch.equal(a.j, b.j)

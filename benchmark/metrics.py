"""Retrieval metrics for Hamming ranking of binary codes: MAP@all, MAP@k, precision@N, precision-recall
within a Hamming radius, NDCG. Every number the suite prints comes from here.

Conventions (docs/protocols.md, "MAP conventions"):

* Codes are ``int8`` in ``{-1, +1}`` (one row per item); labels are multi-hot 0/1 rows. A query and a
  database item are relevant when they share at least one label, ``(Lq @ Ld.T) > 0``.
* Ranking is by Hamming distance, smaller first. The order inside a group of tied items is fixed by
  the tie policy, and every metric states it:

  - ``ties="average"`` (default): the expected value of the metric over all orders inside each tied
    group, computed in closed form (tie-aware AP of McSherry & Najork, ECIR 2008; the same expectation
    for precision@N and NDCG). Exact, not sampled, and independent of database order.
  - ``ties="stable"``: ties broken by database position, as MATLAB's stable ``sort`` does; this is the
    order behind the DCMH-era published numbers.

* AP of a query = mean of precision@r over the ranks r of its relevant items. AP@k looks at the top k
  only and divides by the number of relevant items found in the top k (DCMH MATLAB convention); a
  query with relevant items, none of them in the top k, has AP@k = 0. With ties="average" the tied
  group straddling rank k is handled exactly (expectation over which of its items fall in the top k).
* Queries with no relevant item in the whole database: ``no_relevant="exclude"`` (default) leaves them
  out of the mean; ``"zero"`` counts them as 0. They are always counted (``n_no_relevant``).
* ``distance``: a method that ranks by its own distance (for example CDQ's asymmetric quantiser
  distance) passes ``distance(query_rows, db_codes) -> (n_rows, n_db)`` float distances; query rows
  are then whatever the method produced. Exactly equal distances are ties, under the same policy.

Speed: codes are packed into uint64 words (XOR + POPCNT) and labels into words (AND != 0); compiled
kernels (:mod:`benchmark._kernels`) build per-query histograms of (items, relevant items) per
Hamming distance over tiles of queries, from which tie-aware AP is O(n_bits) per query. The stable
policy never sorts either: one counting pass lists each relevant item's distance and position among
the items at that distance, and rank = items at a smaller distance + that position. Threads: numba's
thread count (``NUMBA_NUM_THREADS``). Memory beyond the packed inputs: O(n_queries * n_bits) for the
tie-aware Hamming path; the stable path adds per thread a list of up to 16 x n_db words, resident
only as far as relevant items fill it; the own-distance path works in query chunks of ~16 MB each.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from numbers import Integral

import numba
import numpy as np
import scipy.sparse as sp

from benchmark import _kernels as K
from benchmark.errors import InputError

__all__ = [
    "TIES",
    "NO_RELEVANT",
    "MapResult",
    "pack_codes",
    "hamming_distance",
    "mean_average_precision",
    "precision_at_n",
    "precision_recall_hamming",
    "ndcg",
]

TIES = ("average", "stable")
NO_RELEVANT = ("exclude", "zero")

# Elements per chunk of a dense (queries x database) intermediate: 2**21 float64 = 16 MB, so the
# own-distance path (distances, argsort, sorted copies, grades) peaks near 100 MB at any size.
_CHUNK_ELEMS = 2**21


@dataclass(frozen=True)
class MapResult:
    """Mean average precision with the conventions that produced it.

    ``per_query`` holds each query's AP (NaN for a query left out under ``no_relevant="exclude"``);
    ``value`` is the mean over the queries that count (NaN if none does).
    """

    value: float
    per_query: np.ndarray
    n_queries: int
    n_no_relevant: int
    ties: str
    no_relevant: str
    topk: int | None

    def __float__(self) -> float:
        return float(self.value)


# ---------------------------------------------------------------------------------- validation


def _check_choice(name: str, value, valid: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in valid:
        raise InputError(f"{name}={value!r} is invalid; valid: {', '.join(repr(v) for v in valid)}")
    return value


def _check_cutoff(name: str, value, *, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        what = "None (whole ranking) or an integer >= 1" if allow_none else "an integer >= 1"
        raise InputError(f"{name}={value!r} is invalid; valid: {what}")
    return int(value)


def _check_distance(distance):
    if distance is not None and not callable(distance):
        raise InputError(
            f"distance: expected None (Hamming) or a callable(query_rows, db_codes) -> distances, "
            f"got {type(distance).__name__}"
        )


def _as_2d(x, name: str) -> np.ndarray:
    if sp.issparse(x):
        x = x.toarray()
    try:
        arr = np.asarray(x)
    except Exception as exc:  # ragged lists and the like
        raise InputError(f"{name}: cannot be read as an array ({type(exc).__name__})") from None
    if arr.ndim != 2:
        raise InputError(f"{name}: expected a 2-D array (rows = items), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name}: dtype {arr.dtype} is not numeric")
    return arr


def _check_labels(query_labels, db_labels, n_query: int, n_db: int):
    ql = _as_2d(query_labels, "query_labels")
    dl = _as_2d(db_labels, "db_labels")
    if ql.shape[0] != n_query:
        raise InputError(
            f"query_labels has {ql.shape[0]} rows but there are {n_query} queries; row i of each must be the same item"
        )
    if dl.shape[0] != n_db:
        raise InputError(
            f"db_labels has {dl.shape[0]} rows but there are {n_db} database items; row i of each must be the same item"
        )
    if ql.shape[1] != dl.shape[1]:
        raise InputError(
            f"query_labels has {ql.shape[1]} label columns but db_labels has {dl.shape[1]}; "
            "both must use the same label set"
        )
    if ql.shape[1] < 1:
        raise InputError("labels: need at least one label column")
    for name, lab in (("query_labels", ql), ("db_labels", dl)):
        if lab.dtype != bool and not ((lab == 0) | (lab == 1)).all():
            raise InputError(f"{name}: values must be 0 or 1 (multi-hot)")
    return ql != 0, dl != 0


def _check_code_shapes(query_codes, db_codes):
    q = _as_2d(query_codes, "query_codes")
    d = _as_2d(db_codes, "db_codes")
    if q.shape[1] != d.shape[1]:
        raise InputError(
            f"query_codes have {q.shape[1]} bits but db_codes have {d.shape[1]}; both must be codes of the same length"
        )
    if q.shape[1] < 1:
        raise InputError("codes: need at least one bit")
    if q.shape[0] < 1 or d.shape[0] < 1:
        raise InputError(f"need at least one query and one database item, got {q.shape[0]} and {d.shape[0]}")
    return q, d


def _pack(codes: np.ndarray, name: str) -> np.ndarray:
    """Validated {-1,+1} codes -> uint64 words; one pass, no temporaries, for int8 input."""
    if codes.dtype == np.int8:
        packed, n_bad = K.pack_signs(np.ascontiguousarray(codes), (codes.shape[1] + 63) // 64)
    else:
        n_bad = int(codes.size - np.count_nonzero((codes == 1) | (codes == -1)))
        packed = None
    if n_bad:
        raise InputError(
            f"{name}: {n_bad} entries are not -1 or +1; codes must be in {{-1, +1}} "
            "(methods.base.binarize; pass distance= for real-valued query rows)"
        )
    if packed is None:
        packed, _ = K.pack_signs(codes.astype(np.int8), (codes.shape[1] + 63) // 64)
    return packed


def _pack_labels(labels: np.ndarray) -> np.ndarray:
    """Boolean (n, m) -> uint64 words (n, ceil(m/64)); the same bit layout for queries and database."""
    n, m = labels.shape
    n_words = (m + 63) // 64
    packed = np.zeros((n, n_words * 8), np.uint8)
    packed[:, : (m + 7) // 8] = np.packbits(labels, axis=1, bitorder="little")
    return packed.view(np.uint64)


def pack_codes(codes) -> np.ndarray:
    """int8 codes in {-1,+1}, shape (n, c) -> uint64 words, shape (n, ceil(c/64)).

    Bit ``j % 64`` of word ``j // 64`` is 1 where code bit j is +1; padding bits are 0, so the
    Hamming distance of two packed rows is the popcount of their XOR.
    """
    arr = _as_2d(codes, "codes")
    if arr.shape[1] < 1:
        raise InputError("codes: need at least one bit")
    return _pack(arr, "codes")


def hamming_distance(query_codes, db_codes) -> np.ndarray:
    """Dense Hamming distances (int64, shape (n_query, n_db)) of {-1,+1} codes. For small inputs:
    the result is a full matrix."""
    q, d = _check_code_shapes(query_codes, db_codes)
    return K.hamming_dense(_pack(q, "query_codes"), _pack(d, "db_codes"))


def _prepare(query_codes, db_codes, query_labels, db_labels, distance):
    """Validate everything, then pack. Returns a dict describing the problem."""
    _check_distance(distance)
    if distance is None:
        q, d = _check_code_shapes(query_codes, db_codes)
    else:
        # Own distance: query rows and database codes are whatever the method produced.
        try:
            q = np.asarray(query_codes)
            d = np.asarray(db_codes)
        except Exception as exc:
            raise InputError(f"query_codes/db_codes: cannot be read as arrays ({type(exc).__name__})") from None
        if q.ndim < 1 or d.ndim < 1 or q.shape[0] < 1 or d.shape[0] < 1:
            raise InputError(f"need at least one query row and one database row, got shapes {q.shape} and {d.shape}")
    ql, dl = _check_labels(query_labels, db_labels, q.shape[0], d.shape[0])
    prob = {"n_query": q.shape[0], "n_db": d.shape[0], "ql_bool": ql, "dl_bool": dl}
    if distance is None:
        prob.update(
            qp=_pack(q, "query_codes"), dp=_pack(d, "db_codes"), n_bits=q.shape[1],
            qlp=_pack_labels(ql), dlp=_pack_labels(dl),
        )
    else:
        prob.update(q=q, d=d, distance=distance)
    return prob


def _run_tiles(kernel, n_query: int, *args) -> None:
    """Run a tile kernel over all query tiles, split over numba's thread count (NUMBA_NUM_THREADS).

    The kernels release the GIL and write disjoint rows, so plain threads run them in parallel. A few
    blocks per thread keep the threads balanced when one is descheduled on a shared machine."""
    n_tiles = -(-n_query // K.TILE)
    n_threads = min(max(1, numba.get_num_threads()), n_tiles)
    if n_threads == 1:
        kernel(*args, 0, n_tiles)
        return
    bounds = np.linspace(0, n_tiles, min(n_tiles, 4 * n_threads) + 1).astype(np.int64)
    with ThreadPoolExecutor(n_threads) as pool:
        list(pool.map(lambda b: kernel(*args, int(bounds[b]), int(bounds[b + 1])), range(len(bounds) - 1)))


def _rel_hist(prob) -> np.ndarray:
    """(n_query, 2 * (n_bits + 1)) int32: irrelevant / relevant items per Hamming distance."""
    out = np.zeros((prob["n_query"], 2 * (prob["n_bits"] + 1)), np.int32)
    _run_tiles(K.hamming_rel_hist, prob["n_query"], prob["qp"], prob["dp"], prob["qlp"], prob["dlp"],
               prob["n_bits"], out)
    return out


def _sub(prob, s: int, e: int) -> dict:
    """The problem restricted to queries s..e (contiguous views, so kernels see one array layout)."""
    sub = dict(prob)
    sub.update(n_query=e - s, qp=prob["qp"][s:e], qlp=prob["qlp"][s:e], ql_bool=prob["ql_bool"][s:e])
    return sub


def _summarise(per_query: np.ndarray, n_rel: np.ndarray, no_relevant: str):
    """Apply the no-relevant policy; returns (per_query with NaN/0 for such queries, mean, count)."""
    none = n_rel == 0
    per_query = np.array(per_query, dtype=np.float64)
    per_query[none] = np.nan if no_relevant == "exclude" else 0.0
    counted = per_query[~none] if no_relevant == "exclude" else per_query
    value = float(counted.mean(axis=0)) if counted.shape[0] else float("nan")
    return per_query, value, int(none.sum())


# ---------------------------------------------------------------------------------- own-distance path


def _own_distance_metrics(prob, tie: bool, k: int, cutoffs: np.ndarray):
    """AP@k, hits at cutoffs, DCG@k, ideal DCG@k, relevant counts per query, ranking by ``distance``.

    Queries go in chunks: each chunk's distance rows are stably sorted (ties keep database order,
    which is the stable policy; the tie-aware policy then averages over runs of equal distance).
    """
    nq, nd = prob["n_query"], prob["n_db"]
    q, d, dist = prob["q"], prob["d"], prob["distance"]
    dlab = prob["dl_bool"].astype(np.float32)
    qlab = prob["ql_bool"].astype(np.float32)
    max_grade = int(qlab.sum(axis=1).max())
    gains = 2.0 ** np.arange(max_grade + 1) - 1.0
    hhi, hlo = K.prefix_table(nd, 0)
    dhi, dlo = K.prefix_table(nd, 1)
    chunk = max(1, min(nq, _CHUNK_ELEMS // nd))
    out = [np.zeros(nq), np.zeros((nq, cutoffs.shape[0])), np.zeros(nq), np.zeros(nq), np.zeros(nq, np.int64)]
    for s in range(0, nq, chunk):
        e = min(nq, s + chunk)
        raw = dist(q[s:e], d)
        dm = np.asarray(raw, dtype=np.float64)
        if dm.shape != (e - s, nd):
            raise InputError(
                f"distance returned shape {dm.shape}; expected ({e - s}, {nd}) = (query rows, database items)"
            )
        if np.isnan(dm).any():
            raise InputError("distance returned NaN; distances must be comparable numbers (inf is allowed)")
        order = np.argsort(dm, axis=1, kind="stable")
        dist_sorted = np.take_along_axis(dm, order, axis=1)
        # Shared-label counts; float32 matmul is exact for counts below 2**24.
        grades = (qlab[s:e] @ dlab.T).astype(np.int64)
        grade_sorted = np.take_along_axis(grades, order, axis=1)
        res = K.sorted_metrics(dist_sorted, grade_sorted, tie, k, cutoffs, gains, hhi, hlo, dhi, dlo, max_grade)
        for acc, part in zip(out, res):
            acc[s:e] = part
    return out


# ---------------------------------------------------------------------------------- metrics


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, *, topk=None, ties="average",
                           no_relevant="exclude", distance=None) -> MapResult:
    """MAP of Hamming ranking (or of ``distance``), over all queries.

    Parameters
    ----------
    query_codes, db_codes : int8 arrays in {-1,+1}, shapes (n_query, c) and (n_db, c); with
        ``distance``, whatever rows the method's distance takes.
    query_labels, db_labels : multi-hot 0/1 arrays (n_query, m), (n_db, m).
    topk : None for MAP@all, or k >= 1 for MAP@k (k beyond the database size = whole ranking).
    ties : "average" (tie-aware, default) or "stable" (database order breaks ties).
    no_relevant : "exclude" (default) or "zero", for queries without any relevant database item.
    distance : optional ``callable(query_rows, db_codes) -> (n_rows, n_db)`` distances, smaller = closer.
    """
    _check_choice("ties", ties, TIES)
    _check_choice("no_relevant", no_relevant, NO_RELEVANT)
    topk = _check_cutoff("topk", topk, allow_none=True)
    prob = _prepare(query_codes, db_codes, query_labels, db_labels, distance)
    nd = prob["n_db"]
    k = nd if topk is None else min(topk, nd)
    if distance is not None:
        ap, _, _, _, n_rel = _own_distance_metrics(prob, ties == "average", k, np.zeros(0, np.int64))
    else:
        if ties == "average":
            hhi, hlo = K.prefix_table(nd, 0)
            ap, _, n_rel = K.rel_hist_metrics(_rel_hist(prob), prob["n_bits"], k, np.zeros(0, np.int64), hhi, hlo)
        else:
            st = _stable(prob, k)
            ap = np.divide(st["ap_sum"], st["ap_found"], out=np.zeros(prob["n_query"]), where=st["ap_found"] > 0)
            n_rel = st["n_rel"]
    per_query, value, n_none = _summarise(ap, n_rel, no_relevant)
    return MapResult(value=value, per_query=per_query, n_queries=prob["n_query"], n_no_relevant=n_none,
                     ties=ties, no_relevant=no_relevant, topk=topk)


def _check_ns(ns, n_db: int) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(ns))
    if arr.ndim != 1 or arr.size == 0 or arr.dtype.kind not in "iu":
        raise InputError(f"ns={ns!r} is invalid; valid: one or more integers in [1, {n_db}]")
    if arr.min() < 1 or arr.max() > n_db:
        raise InputError(f"ns: values must be in [1, {n_db}] (the database size), got {arr.min()}..{arr.max()}")
    return arr.astype(np.int64)


# The stable kernel packs (grade << 48 | distance << 32 | position) into one uint64 per item, so a
# distance must fit in 16 bits: codes of up to 65,535 bits.
STABLE_KERNEL_MAX_BITS = 2**16 - 1


def _stable(prob, k: int, cutoffs=None, gains=None) -> dict:
    """Stable-order metrics from one counting pass (:func:`benchmark._kernels.hamming_stable`).

    ``cutoffs`` (sorted, unique) asks for relevant items in the top N; ``gains`` (per shared-label
    count) asks for DCG@k and ideal DCG@k with graded relevance. Codes longer than
    ``STABLE_KERNEL_MAX_BITS`` go through the sorting path with the Hamming distance instead."""
    nq, nd = prob["n_query"], prob["n_db"]
    cut = np.zeros(0, np.int64) if cutoffs is None else cutoffs
    if prob["n_bits"] > STABLE_KERNEL_MAX_BITS:
        # Exact distances (int64) by a stable sort: the stable policy, at any code length.
        wide = dict(prob, q=prob["qp"], d=prob["dp"], distance=K.hamming_dense)
        ap, hits, dcg, idcg, n_rel = _own_distance_metrics(wide, False, k, cut)
        # ap is already AP@k; express it as (sum, found = 1) so callers divide the same way.
        return {"ap_sum": ap, "ap_found": np.ones(nq, np.int64), "hits": hits, "dcg": dcg, "idcg": idcg,
                "n_rel": n_rel}
    graded = gains is not None
    if graded:
        dhi, dlo = K.prefix_table(nd, 1)
    else:
        gains, dhi, dlo = np.zeros(1), np.zeros(1), np.zeros(1)
    out = {"ap_sum": np.zeros(nq), "ap_found": np.zeros(nq, np.int64), "hits": np.zeros((nq, cut.shape[0])),
           "dcg": np.zeros(nq if graded else 1), "idcg": np.zeros(nq if graded else 1), "n_rel": np.zeros(nq, np.int64)}
    _run_tiles(K.hamming_stable, nq, prob["qp"], prob["dp"], prob["qlp"], prob["dlp"], prob["n_bits"], graded, k,
               cut, gains, dhi, dlo, out["ap_sum"], out["ap_found"], out["hits"], out["dcg"], out["idcg"], out["n_rel"])
    return out


def precision_at_n(query_codes, db_codes, query_labels, db_labels, ns, *, ties="average", distance=None,
                   no_relevant="exclude") -> np.ndarray:
    """Mean precision@N over queries for each N in ``ns`` (integers in [1, n_db]); returns an array
    aligned with ``ns``. Tie-aware: the tied group straddling rank N contributes its relevant
    fraction pro rata (the expectation over orders). ``no_relevant`` as for MAP."""
    _check_choice("ties", ties, TIES)
    _check_choice("no_relevant", no_relevant, NO_RELEVANT)
    prob = _prepare(query_codes, db_codes, query_labels, db_labels, distance)
    nd = prob["n_db"]
    cutoffs = _check_ns(ns, nd)
    if distance is not None:
        _, hits, _, _, n_rel = _own_distance_metrics(prob, ties == "average", nd, cutoffs)
    else:
        if ties == "average":
            hhi, hlo = K.prefix_table(nd, 0)
            _, hits, n_rel = K.rel_hist_metrics(_rel_hist(prob), prob["n_bits"], nd, cutoffs, hhi, hlo)
        else:
            uniq, back = np.unique(cutoffs, return_inverse=True)
            st = _stable(prob, nd, cutoffs=uniq)
            hits, n_rel = st["hits"][:, back], st["n_rel"]
    per_query = hits / cutoffs[None, :]
    _, value, _ = _summarise_rows(per_query, n_rel, no_relevant)
    return value


def _summarise_rows(per_query: np.ndarray, n_rel: np.ndarray, no_relevant: str):
    none = n_rel == 0
    per_query = per_query.copy()
    if no_relevant == "exclude":
        kept = per_query[~none]
    else:
        per_query[none] = 0.0
        kept = per_query
    value = kept.mean(axis=0) if kept.shape[0] else np.full(per_query.shape[1:], np.nan)
    return per_query, value, int(none.sum())


def precision_recall_hamming(query_codes, db_codes, query_labels, db_labels, *, no_relevant="exclude") -> dict:
    """Precision and recall of the items within Hamming radius r, for r = 0..n_bits, averaged over queries.

    A query that retrieves nothing within radius r counts as precision 0 at that radius (the
    convention of "precision within Hamming radius 2" in the hashing literature: an empty answer is a
    failure); ``n_retrieving[r]`` says how many counted queries retrieved anything. ``no_relevant``
    as for MAP (under "zero", such queries count with precision and recall 0).
    """
    _check_choice("no_relevant", no_relevant, NO_RELEVANT)
    prob = _prepare(query_codes, db_codes, query_labels, db_labels, None)
    c = prob["n_bits"]
    hist = _rel_hist(prob).astype(np.int64)
    rel = hist[:, 1::2]
    retrieved = np.cumsum(hist[:, 0::2] + rel, axis=1)
    rel_retrieved = np.cumsum(rel, axis=1)
    n_rel = rel.sum(axis=1)
    precision = np.divide(rel_retrieved, retrieved, out=np.zeros(retrieved.shape), where=retrieved > 0)
    recall = np.divide(rel_retrieved, n_rel[:, None], out=np.zeros(retrieved.shape), where=n_rel[:, None] > 0)
    counted = n_rel > 0 if no_relevant == "exclude" else np.ones(prob["n_query"], bool)
    _, p_mean, n_none = _summarise_rows(precision, n_rel, no_relevant)
    _, r_mean, _ = _summarise_rows(recall, n_rel, no_relevant)
    return {
        "radius": np.arange(c + 1),
        "precision": p_mean,
        "recall": r_mean,
        "n_retrieving": (retrieved[counted] > 0).sum(axis=0),
        "n_queries": prob["n_query"],
        "n_no_relevant": n_none,
        "no_relevant": no_relevant,
        "empty_retrieval": "precision 0",
    }


def ndcg(query_codes, db_codes, query_labels, db_labels, *, k=None, ties="average", distance=None,
         no_relevant="exclude") -> float:
    """Mean NDCG@k (k=None: whole ranking) with graded relevance = number of shared labels.

    Gain ``2**rel - 1``, discount ``1/log2(rank + 1)``; the ideal DCG sorts the database by relevance.
    Tie-aware: each position of a tied group carries the group's mean gain (the expectation over
    orders). Queries with no relevant item have ideal DCG 0: ``no_relevant`` decides (exclude / 0).
    """
    _check_choice("ties", ties, TIES)
    _check_choice("no_relevant", no_relevant, NO_RELEVANT)
    k = _check_cutoff("k", k, allow_none=True)
    prob = _prepare(query_codes, db_codes, query_labels, db_labels, distance)
    nd, nq = prob["n_db"], prob["n_query"]
    kk = nd if k is None else min(k, nd)
    n_grades = int(prob["ql_bool"].sum(axis=1).max()) + 1
    gains = 2.0 ** np.arange(n_grades) - 1.0
    if distance is not None:
        _, _, dcg, idcg, n_rel = _own_distance_metrics(prob, ties == "average", kk, np.zeros(0, np.int64))
    elif ties == "stable":
        if n_grades > 2**16:
            raise InputError(f"labels: {n_grades - 1} labels on one query; stable NDCG supports up to 65535")
        st = _stable(prob, kk, gains=gains)
        dcg, idcg, n_rel = st["dcg"], st["idcg"], st["n_rel"]
    else:
        c = prob["n_bits"]
        dhi, dlo = K.prefix_table(nd, 1)
        dcg, idcg, n_rel = np.zeros(nq), np.zeros(nq), np.zeros(nq, np.int64)
        # Histogram over (distance, shared labels): chunk the queries so it stays ~16 MB.
        chunk = max(1, min(nq, _CHUNK_ELEMS * 2 // ((c + 1) * n_grades)))
        for s, e in ((s, min(nq, s + chunk)) for s in range(0, nq, chunk)):
            sub = _sub(prob, s, e)
            gh = np.zeros((e - s, (c + 1) * n_grades), np.int32)
            _run_tiles(K.hamming_grade_hist, e - s, sub["qp"], sub["dp"], sub["qlp"], sub["dlp"], c, n_grades, gh)
            dcg[s:e], idcg[s:e], n_rel[s:e] = K.grade_hist_dcg(gh, c, n_grades, kk, gains, dhi, dlo)
    per_query = np.divide(dcg, idcg, out=np.zeros(nq), where=idcg > 0)
    _, value, _ = _summarise(per_query, n_rel, no_relevant)
    return value

"""Compiled (numba) kernels behind :mod:`benchmark.metrics`. Private: call the metrics module instead.

Layout the kernels expect:

* codes packed into ``uint64`` words, shape ``(n, n_words)``, bit 1 for code +1 (``pack_codes``);
  Hamming distance = popcount of XOR summed over words;
* labels packed the same way (``(n, n_label_words)`` ``uint64``); relevance = any word of
  ``query & database`` non-zero, graded relevance = popcount of ``query & database``.

Queries are processed in tiles of ``TILE`` so that each database word, once loaded, serves
``TILE`` queries from registers/L1; the per-query histograms of a tile stay in L1, and consecutive
increments go to different queries' histograms, which keeps the store-to-load chains short.

Exactness: every metric is computed from integer histograms or integer ranks; sums of 1/i and of
1/log2(i+1) over a range come from prefix tables kept in double-double precision, so a range sum
has relative error of a few ulp however long the prefix.

The hot kernels are plain ``nogil`` functions over a range of query tiles, run on threads by the
caller, rather than ``parallel=True``/``prange``: same speed, and about 2.5x less compile time,
which every fresh CI run pays.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

# Queries per tile. 16 keeps a tile's histograms (16 x 2 x 65 int32 at 64 bits) in L1; in a scratch
# comparison at 2,100 x 193,734 x 64 bits the histogram pass took 0.265 / 0.26 / 0.33 CPU s at 8 / 16 / 32.
TILE = 16
_LOW16 = np.uint64(0xFFFF)
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT48 = np.uint64(48)


@intrinsic
def _popcount(typingctx, x):
    """Population count of an integer (LLVM ctpop -> one POPCNT instruction), as int64.

    int64 because numba turns uint64 mixed with int64 arithmetic into float64."""
    if not isinstance(x, types.Integer):
        return None
    sig = types.int64(x)

    def codegen(context, builder, signature, args):
        res = builder.ctpop(args[0])
        width = x.bitwidth
        if width < 64:
            return builder.zext(res, ir.IntType(64))
        if width > 64:
            return builder.trunc(res, ir.IntType(64))
        return res

    return sig, codegen


# ---------------------------------------------------------------------------------- helpers


@njit(cache=True)
def prefix_table(n, kind):
    """Double-double prefix sums ``P[i] = sum_{j=1..i} term(j)``, ``P[0] = 0``.

    ``kind`` 0: ``term(j) = 1/j`` (harmonic numbers); 1: ``term(j) = 1/log2(j + 1)`` (DCG discount).
    Returns ``(hi, lo)``; a range sum is ``(hi[b] - hi[a]) + (lo[b] - lo[a])``. A plain float64
    cumsum would lose ~n ulp of the running total, which after cancellation is a large relative
    error on a short range far down the ranking.
    """
    hi = np.zeros(n + 1)
    lo = np.zeros(n + 1)
    s = 0.0
    e = 0.0
    for j in range(1, n + 1):
        term = 1.0 / j if kind == 0 else 1.0 / np.log2(j + 1.0)
        # TwoSum: t + err == s + term exactly.
        t = s + term
        bp = t - s
        err = (s - (t - bp)) + (term - bp)
        e += err
        # Renormalise so that |e| stays below one ulp of s.
        s2 = t + e
        e = e - (s2 - t)
        s = s2
        hi[j] = s
        lo[j] = e
    return hi, lo


@njit(cache=True)
def _range_sum(hi, lo, a, b):
    # sum_{j=a+1..b} term(j) from a double-double prefix table.
    return (hi[b] - hi[a]) + (lo[b] - lo[a])


@njit(cache=True)
def _group_precision_sum(before, n, rel_before, r, hhi, hlo):
    """Expected sum of precision@rank over the relevant items of a tied group.

    The group holds ``n`` items, ``r`` of them relevant, at ranks ``before+1 .. before+n`` in a
    uniformly random order; ``rel_before`` relevant items precede it. Position ``j`` holds a relevant
    item with probability ``r/n``; given that, the relevant items above it inside the group number
    ``(j-1)(r-1)/(n-1)`` on average (hypergeometric), so (McSherry & Najork 2008, Sec. 3)

        E = (r/n) * sum_{j=1..n} (A + B (j-1)) / (N + j),  A = rel_before + 1, B = (r-1)/(n-1), N = before
          = (r/n) * ((A - B (N+1)) * (H(N+n) - H(N)) + B n).
    """
    if r == 0:
        return 0.0
    dh = _range_sum(hhi, hlo, before, before + n)
    a = rel_before + 1.0
    if n == 1:
        return a * dh
    b = (r - 1.0) / (n - 1.0)
    return (r / n) * ((a - b * (before + 1.0)) * dh + b * n)


@njit(cache=True)
def _straddle_ap(s_before, before, rel_before, n, r, m, hhi, hlo):
    """Expected AP@k when the tied group (n items, r relevant) straddles rank k = before + m.

    AP@k divides by the relevant items found in the top k, which depends on the order inside the
    group, so the expectation is over X = relevant items among the group's first m positions
    (hypergeometric: population n, r successes, m draws). Given X = x, those x items sit uniformly
    among the m positions, so their expected precision sum is the group formula with (m, x).
    Weights come from the pmf's ratio recurrence, started at the mode (where the pmf is largest) and
    normalised at the end: no factorials, no overflow; terms that underflow to 0 stop the walk.
    """
    x_lo = max(0, m - (n - r))
    x_hi = min(m, r)
    mode = int((m + 1.0) * (r + 1.0) / (n + 2.0))
    mode = min(max(mode, x_lo), x_hi)
    total = 0.0
    weight_sum = 0.0
    # Upwards from the mode (mode included).
    w = 1.0
    x = mode
    while True:
        rel = rel_before + x
        if rel > 0:
            total += w * (s_before + _group_precision_sum(before, m, rel_before, x, hhi, hlo)) / rel
        weight_sum += w
        if x == x_hi:
            break
        # pmf(x+1)/pmf(x) = (r-x)(m-x) / ((x+1)(n-r-m+x+1))
        w *= ((r - x) * (m - x)) / ((x + 1.0) * (n - r - m + x + 1.0))
        x += 1
        if w == 0.0:
            break
    # Downwards from the mode.
    w = 1.0
    x = mode
    while x > x_lo:
        # pmf(x-1)/pmf(x) = x (n-r-m+x) / ((r-x+1)(m-x+1))
        w *= (x * (n - r - m + x + 0.0)) / ((r - x + 1.0) * (m - x + 1.0))
        x -= 1
        if w == 0.0:
            break
        rel = rel_before + x
        if rel > 0:
            total += w * (s_before + _group_precision_sum(before, m, rel_before, x, hhi, hlo)) / rel
        weight_sum += w
    return total / weight_sum


@njit(cache=True)
def ap_from_groups(gn, gr, ng, k, hhi, hlo):
    """Tie-aware AP@k from ranked groups (sizes ``gn``, relevant counts ``gr``, first ``ng`` used).

    Normalised by the relevant items found in the top k (DCMH convention; k >= database size gives
    AP@all). Returns 0 when no relevant item can be in the top k. Groups of size 1 give the AP of
    that fixed order, so the same function serves the stable policy.
    """
    before = 0
    rel_before = 0
    s = 0.0
    for g in range(ng):
        n = gn[g]
        if n == 0:
            continue
        r = gr[g]
        if before + n <= k:
            s += _group_precision_sum(before, n, rel_before, r, hhi, hlo)
            before += n
            rel_before += r
            if before == k:
                break
        else:
            if r == 0:
                break
            return _straddle_ap(s, before, rel_before, n, r, k - before, hhi, hlo)
    return s / rel_before if rel_before > 0 else 0.0


@njit(cache=True)
def hits_from_groups(gn, gr, ng, cutoff):
    """Expected number of relevant items in the top ``cutoff`` (a straddling group contributes pro rata)."""
    before = 0
    hits = 0.0
    for g in range(ng):
        n = gn[g]
        if n == 0:
            continue
        if before + n <= cutoff:
            hits += gr[g]
            before += n
            if before == cutoff:
                break
        else:
            hits += ((cutoff - before) * gr[g]) / n
            break
    return hits


@njit(cache=True)
def dcg_from_groups(gn, gain_sum, ng, k, dhi, dlo):
    """Expected DCG@k: every position of a tied group carries the group's mean gain."""
    before = 0
    dcg = 0.0
    for g in range(ng):
        n = gn[g]
        if n == 0:
            continue
        m = min(n, k - before)
        if gain_sum[g] != 0.0:
            dcg += (gain_sum[g] / n) * _range_sum(dhi, dlo, before, before + m)
        before += m
        if before >= k:
            break
    return dcg


@njit(cache=True)
def ideal_dcg(grade_counts, gains, k, dhi, dlo):
    """DCG@k of the ideal ranking: grades sorted from highest to lowest."""
    pos = 0
    out = 0.0
    for g in range(grade_counts.shape[0] - 1, 0, -1):
        m = min(grade_counts[g], k - pos)
        if m <= 0:
            if pos >= k:
                break
            continue
        out += gains[g] * _range_sum(dhi, dlo, pos, pos + m)
        pos += m
    return out


# ---------------------------------------------------------------------------------- packing


@njit(cache=True)
def pack_signs(codes, n_words):
    """int8 {-1,+1} (n, c) -> uint64 words (n, n_words), bit 1 for +1; also counts invalid entries.

    Branch-free: each word is built in a register, validity is counted, not tested."""
    n, c = codes.shape
    out = np.zeros((n, n_words), np.uint64)
    bad = 0
    for i in range(n):
        for w in range(n_words):
            word = np.uint64(0)
            lo = 64 * w
            for b in range(min(64, c - lo)):
                v = codes[i, lo + b]
                word |= np.uint64(v > 0) << np.uint64(b)
                bad += (v != 1) & (v != -1)
            out[i, w] = word
    return out, bad


# ---------------------------------------------------------------------------------- Hamming kernels
# Each hot kernel fills the rows of query tiles [t0, t1) of preallocated outputs and releases the
# GIL, so that :func:`benchmark.metrics` can run disjoint tile ranges on threads.


@njit(cache=True)
def _load_tile(qc, ql, q0, nt):
    """Word-major copies (n_words, TILE) of a tile's query words, so that loops over the tile's queries
    read contiguous memory. Padding queries (zeros) are computed and thrown away: no branch in the loops."""
    qw = np.zeros((qc.shape[1], TILE), np.uint64)
    qlw = np.zeros((ql.shape[1], TILE), np.uint64)
    for t in range(nt):
        for w in range(qc.shape[1]):
            qw[w, t] = qc[q0 + t, w]
        for w in range(ql.shape[1]):
            qlw[w, t] = ql[q0 + t, w]
    return qw, qlw


@njit(cache=True)
def _pair_tile(qw, qlw, dc, dl, j, graded, dd, gg):
    """Any code or label length: Hamming distances ``dd`` and relevance (0/1), or shared-label counts
    if ``graded``, ``gg`` of database item j to each query of the tile (loops over the tile vectorise)."""
    for t in range(TILE):
        dd[t] = 0
        gg[t] = 0
    for w in range(dc.shape[1]):
        x = dc[j, w]
        for t in range(TILE):
            dd[t] += _popcount(qw[w, t] ^ x)
    for w in range(dl.shape[1]):
        y = dl[j, w]
        if graded:
            for t in range(TILE):
                gg[t] += _popcount(qlw[w, t] & y)
        else:
            for t in range(TILE):
                gg[t] |= (qlw[w, t] & y) != 0


@njit(cache=True, nogil=True)
def hamming_rel_hist(qc, dc, ql, dl, n_bits, out, t0, t1):
    """Per query, (items, relevant items) per Hamming distance: ``out[q, 2d]`` irrelevant,
    ``out[q, 2d+1]`` relevant items at distance d. One increment per pair (index 2d + rel)."""
    nq = qc.shape[0]
    nd = dc.shape[0]
    nb = 2 * (n_bits + 1)
    n_words, n_label_words = qc.shape[1], ql.shape[1]
    dd = np.zeros(TILE, np.int64)
    gg = np.zeros(TILE, np.int64)
    for ti in range(t0, t1):
        q0 = ti * TILE
        nt = min(TILE, nq - q0)
        qw, qlw = _load_tile(qc, ql, q0, nt)
        h = np.zeros((TILE, nb), np.int32)
        # Fast paths keep each query word in a scalar: 4-6x faster than the general loop.
        if n_words == 1 and n_label_words == 1:  # up to 64 bits and 64 labels
            qa, qlab = qw[0], qlw[0]
            for j in range(nd):
                a = dc[j, 0]
                lab = dl[j, 0]
                for t in range(TILE):
                    h[t, 2 * _popcount(qa[t] ^ a) + ((qlab[t] & lab) != 0)] += 1
        elif n_words == 2 and n_label_words == 1:  # 65 to 128 bits
            qa, qb, qlab = qw[0], qw[1], qlw[0]
            for j in range(nd):
                a = dc[j, 0]
                b = dc[j, 1]
                lab = dl[j, 0]
                for t in range(TILE):
                    h[t, 2 * (_popcount(qa[t] ^ a) + _popcount(qb[t] ^ b)) + ((qlab[t] & lab) != 0)] += 1
        else:
            for j in range(nd):
                _pair_tile(qw, qlw, dc, dl, j, False, dd, gg)
                for t in range(TILE):
                    h[t, 2 * dd[t] + gg[t]] += 1
        for t in range(nt):
            for b in range(nb):
                out[q0 + t, b] = h[t, b]


@njit(cache=True, nogil=True)
def hamming_grade_hist(qc, dc, ql, dl, n_bits, n_grades, out, t0, t1):
    """Per query, items per (Hamming distance d, shared-label count g), flattened as d * n_grades + g.

    The caller sets n_grades above the largest query label count, so every shared count fits."""
    nq = qc.shape[0]
    nd = dc.shape[0]
    nb = (n_bits + 1) * n_grades
    dd = np.zeros(TILE, np.int64)
    gg = np.zeros(TILE, np.int64)
    for ti in range(t0, t1):
        q0 = ti * TILE
        nt = min(TILE, nq - q0)
        qw, qlw = _load_tile(qc, ql, q0, nt)
        h = np.zeros((TILE, nb), np.int32)
        for j in range(nd):
            _pair_tile(qw, qlw, dc, dl, j, True, dd, gg)
            for t in range(TILE):
                h[t, dd[t] * n_grades + gg[t]] += 1
        for t in range(nt):
            for b in range(nb):
                out[q0 + t, b] = h[t, b]


@njit(cache=True)
def _stable_tail(buf, t, n, cnt, n_bits, k, cutoffs, gains, dhi, dlo, graded, q, ap_sum, ap_found, hits, dcg, idcg,
                 n_rel):
    """Metrics of query ``q`` from its relevant items, listed in database order in ``buf[t, :n]`` as
    (grade << 48 | distance << 32 | position among the items at that distance); ``cnt[t, d]`` =
    items at distance d. Stable rank = items at smaller distance + position."""
    before = np.zeros(n_bits + 1, np.int64)
    rel_before = np.zeros(n_bits + 1, np.int64)
    for e in range(n):
        rel_before[(buf[t, e] >> _SHIFT32) & _LOW16] += 1
    a = 0
    b = 0
    for d in range(n_bits + 1):
        before[d] = a
        a += cnt[t, d]
        x = rel_before[d]
        rel_before[d] = b
        b += x
    seen = np.zeros(n_bits + 1, np.int64)
    per_cut = np.zeros(cutoffs.shape[0] + 1, np.int64)
    grade_counts = np.zeros(gains.shape[0], np.int64)
    acc = 0.0
    found = 0
    gain_sum = 0.0
    for e in range(n):
        v = buf[t, e]
        d = np.int64((v >> _SHIFT32) & _LOW16)
        seen[d] += 1
        rank = before[d] + np.int64(v & _LOW32)
        if rank <= k:
            # (relevant items up to this one) / rank: the classic loop's count / index, one rounding.
            acc += (rel_before[d] + seen[d]) / rank
            found += 1
            if graded:
                gain_sum += gains[v >> _SHIFT48] * _range_sum(dhi, dlo, rank - 1, rank)
        if graded:
            grade_counts[v >> _SHIFT48] += 1
        if cutoffs.shape[0]:
            per_cut[np.searchsorted(cutoffs, rank)] += 1  # counts for every cutoff >= rank
    ap_sum[q] = acc
    ap_found[q] = found
    n_rel[q] = n
    c = 0
    for i in range(cutoffs.shape[0]):
        c += per_cut[i]
        hits[q, i] = c
    if graded:
        dcg[q] = gain_sum
        idcg[q] = ideal_dcg(grade_counts, gains, k, dhi, dlo)


@njit(cache=True, nogil=True)
def hamming_stable(qc, dc, ql, dl, n_bits, graded, k, cutoffs, gains, dhi, dlo,
                   ap_sum, ap_found, hits, dcg, idcg, n_rel, t0, t1):
    """Metrics under the stable order (ties broken by database position), in one pass, no sorting.

    Stable rank of item j = (items at a smaller distance) + (items at the same distance up to j in
    database order). The first term is only known after the pass, so the pass keeps a running count
    per distance and writes each relevant item's (grade, distance, position) to a per-query list
    (branch-free: every item is written, only relevant ones advance the list); the tail then turns
    positions into ranks. Outputs per query: AP@k numerator and relevant items in the top k
    (``ap_sum``, ``ap_found``), relevant items in the top N for each sorted ``cutoffs`` (``hits``),
    and, if ``graded`` (grade = shared labels, below 2**16), DCG@k and ideal DCG@k; ``n_rel`` = relevant
    items in the database.
    """
    nq = qc.shape[0]
    nd = dc.shape[0]
    # Untouched pages cost no memory: resident size follows the relevant items actually listed.
    buf = np.empty((TILE, nd), np.uint64)
    n_words, n_label_words = qc.shape[1], ql.shape[1]
    dd = np.zeros(TILE, np.int64)
    gg = np.zeros(TILE, np.int64)
    for ti in range(t0, t1):
        q0 = ti * TILE
        nt = min(TILE, nq - q0)
        qw, qlw = _load_tile(qc, ql, q0, nt)
        cnt = np.zeros((TILE, n_bits + 1), np.int64)
        pos = np.zeros(TILE, np.uint64)
        if n_words == 1 and n_label_words == 1 and not graded:
            # The hot path (<= 64 bits and labels), words in scalars as in hamming_rel_hist.
            qa, qlab = qw[0], qlw[0]
            for j in range(nd):
                a = dc[j, 0]
                lab = dl[j, 0]
                for t in range(TILE):
                    d = _popcount(qa[t] ^ a)
                    c = cnt[t, d] + 1
                    cnt[t, d] = c
                    p = pos[t]
                    buf[t, p] = (np.uint64(d) << _SHIFT32) | np.uint64(c)
                    pos[t] = p + np.uint64((qlab[t] & lab) != 0)
        elif n_words == 2 and n_label_words == 1 and not graded:
            qa, qb, qlab = qw[0], qw[1], qlw[0]
            for j in range(nd):
                a = dc[j, 0]
                b = dc[j, 1]
                lab = dl[j, 0]
                for t in range(TILE):
                    d = _popcount(qa[t] ^ a) + _popcount(qb[t] ^ b)
                    c = cnt[t, d] + 1
                    cnt[t, d] = c
                    p = pos[t]
                    buf[t, p] = (np.uint64(d) << _SHIFT32) | np.uint64(c)
                    pos[t] = p + np.uint64((qlab[t] & lab) != 0)
        else:
            for j in range(nd):
                _pair_tile(qw, qlw, dc, dl, j, graded, dd, gg)
                for t in range(TILE):
                    d = dd[t]
                    c = cnt[t, d] + 1
                    cnt[t, d] = c
                    p = pos[t]
                    buf[t, p] = (np.uint64(gg[t]) << _SHIFT48) | (np.uint64(d) << _SHIFT32) | np.uint64(c)
                    pos[t] = p + np.uint64(gg[t] > 0)
        for t in range(nt):
            _stable_tail(buf, t, np.int64(pos[t]), cnt, n_bits, k, cutoffs, gains, dhi, dlo, graded,
                         q0 + t, ap_sum, ap_found, hits, dcg, idcg, n_rel)


@njit(cache=True)
def hamming_dense(qc, dc):
    """Full Hamming distance matrix (int64) of packed codes."""
    nq = qc.shape[0]
    nd = dc.shape[0]
    out = np.empty((nq, nd), np.int64)
    for i in range(nq):
        for j in range(nd):
            d = 0
            for w in range(qc.shape[1]):
                d += _popcount(qc[i, w] ^ dc[j, w])
            out[i, j] = d
    return out


# ---------------------------------------------------------------------------------- sorted rows (own distance)


@njit(cache=True)
def _groups_of_row(dist_sorted, grade_sorted, i, tie, gn, gr, gsum, gains):
    # Runs of equal distance become groups (tie-aware) or every item its own group (stable).
    nd = dist_sorted.shape[1]
    ng = 0
    j = 0
    while j < nd:
        e = j + 1
        if tie:
            while e < nd and dist_sorted[i, e] == dist_sorted[i, j]:
                e += 1
        nrel = 0
        gs = 0.0
        for p in range(j, e):
            g = grade_sorted[i, p]
            if g > 0:
                nrel += 1
                gs += gains[g]
        gn[ng] = e - j
        gr[ng] = nrel
        gsum[ng] = gs
        ng += 1
        j = e
    return ng


@njit(cache=True)
def sorted_metrics(dist_sorted, grade_sorted, tie, k, cutoffs, gains, hhi, hlo, dhi, dlo, max_grade):
    """AP@k, hits at each cutoff, DCG@k, ideal DCG@k and relevant count per row of a chunk whose rows
    are sorted by distance (stable sort), with the grades of the items in that order."""
    nq, nd = dist_sorted.shape
    ap = np.zeros(nq)
    hits = np.zeros((nq, cutoffs.shape[0]))
    dcg = np.zeros(nq)
    idcg = np.zeros(nq)
    n_rel = np.zeros(nq, np.int64)
    for i in range(nq):
        gn = np.empty(nd, np.int64)
        gr = np.empty(nd, np.int64)
        gsum = np.empty(nd)
        ng = _groups_of_row(dist_sorted, grade_sorted, i, tie, gn, gr, gsum, gains)
        ap[i] = ap_from_groups(gn, gr, ng, k, hhi, hlo)
        for c in range(cutoffs.shape[0]):
            hits[i, c] = hits_from_groups(gn, gr, ng, cutoffs[c])
        dcg[i] = dcg_from_groups(gn, gsum, ng, k, dhi, dlo)
        grade_counts = np.zeros(max_grade + 1, np.int64)
        for p in range(nd):
            grade_counts[grade_sorted[i, p]] += 1
        idcg[i] = ideal_dcg(grade_counts, gains, k, dhi, dlo)
        n_rel[i] = nd - grade_counts[0]
    return ap, hits, dcg, idcg, n_rel


# ---------------------------------------------------------------------------------- histogram rows (Hamming, tie-aware)


@njit(cache=True)
def rel_hist_metrics(hist, n_bits, k, cutoffs, hhi, hlo):
    """Tie-aware AP@k, hits at each cutoff and relevant count per query from :func:`hamming_rel_hist`."""
    nq = hist.shape[0]
    ap = np.zeros(nq)
    hits = np.zeros((nq, cutoffs.shape[0]))
    n_rel = np.zeros(nq, np.int64)
    for q in range(nq):
        gn = np.empty(n_bits + 1, np.int64)
        gr = np.empty(n_bits + 1, np.int64)
        tot = 0
        for d in range(n_bits + 1):
            gr[d] = hist[q, 2 * d + 1]
            gn[d] = hist[q, 2 * d] + gr[d]
            tot += gr[d]
        n_rel[q] = tot
        ap[q] = ap_from_groups(gn, gr, n_bits + 1, k, hhi, hlo)
        for c in range(cutoffs.shape[0]):
            hits[q, c] = hits_from_groups(gn, gr, n_bits + 1, cutoffs[c])
    return ap, hits, n_rel


@njit(cache=True)
def grade_hist_dcg(hist, n_bits, n_grades, k, gains, dhi, dlo):
    """Tie-aware DCG@k, ideal DCG@k and relevant count per query from :func:`hamming_grade_hist`."""
    nq = hist.shape[0]
    dcg = np.zeros(nq)
    idcg = np.zeros(nq)
    n_rel = np.zeros(nq, np.int64)
    for q in range(nq):
        gn = np.zeros(n_bits + 1, np.int64)
        gsum = np.zeros(n_bits + 1)
        grade_counts = np.zeros(n_grades, np.int64)
        for d in range(n_bits + 1):
            for g in range(n_grades):
                c = hist[q, d * n_grades + g]
                gn[d] += c
                gsum[d] += c * gains[g]
                grade_counts[g] += c
        dcg[q] = dcg_from_groups(gn, gsum, n_bits + 1, k, dhi, dlo)
        idcg[q] = ideal_dcg(grade_counts, gains, k, dhi, dlo)
        n_rel[q] = grade_counts[1:].sum()
    return dcg, idcg, n_rel

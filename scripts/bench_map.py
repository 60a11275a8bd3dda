"""Time MAP@all at NUS-WIDE scale: the classic per-query NumPy loop against benchmark.metrics.

    python scripts/bench_map.py                      # 2,100 x 193,734 x 64 bits, 21 labels
    python scripts/bench_map.py --loop-queries 300   # time the loop on 300 queries, extrapolate

Prints, for the classic loop (float Hamming distances, stable argsort, AP per query) and for our MAP@all
(tie-aware default and stable): wall time (min and median of --repeats runs after a warm-up that
compiles or loads the numba kernels), speed-up over the loop, and peak extra memory (RSS high-water
mark above the resident set before the call, via /proc/self/clear_refs; tracemalloc does not see
numba's allocations). Each of our measurements runs in a fresh subprocess. The compile time is
measured in a subprocess with an empty numba cache.

Data: random label sets (1-3 of 21 labels, NUS-like) and codes correlated with them (sign of the sum
of the item's label prototypes plus Gaussian noise), generated directly.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def make_data(n_query: int, n_db: int, n_bits: int, n_labels: int, seed: int):
    rng = np.random.default_rng(seed)
    proto = rng.standard_normal((n_labels, n_bits)).astype(np.float32)

    def items(n):
        labels = np.zeros((n, n_labels), np.uint8)
        k = rng.integers(1, 4, size=n)  # 1 to 3 labels per item
        for j in range(3):
            pick = rng.integers(0, n_labels, size=n)
            labels[np.arange(n)[k > j], pick[k > j]] = 1
        latent = labels.astype(np.float32) @ proto + 1.5 * rng.standard_normal((n, n_bits), dtype=np.float32)
        return np.where(latent >= 0, 1, -1).astype(np.int8), labels

    qc, ql = items(n_query)
    dc, dl = items(n_db)
    return qc, dc, ql, dl


def classic_loop(qc, dc, ql, dl):
    """The per-query loop of the field's public code: float distances, stable sort, AP (queries with no
    relevant item left out, as our default)."""
    from threadpoolctl import threadpool_limits

    n_bits = qc.shape[1]
    dcf = dc.astype(np.float64)
    dlf = dl.astype(np.float64)
    aps = np.full(qc.shape[0], np.nan)
    with threadpool_limits(1):  # one BLAS thread inside a per-query loop
        for i in range(qc.shape[0]):
            gnd = (dlf @ ql[i].astype(np.float64)) > 0
            tsum = int(gnd.sum())
            if tsum == 0:
                continue
            hamm = 0.5 * (n_bits - dcf @ qc[i].astype(np.float64))
            gnd = gnd[np.argsort(hamm, kind="stable")]
            tindex = np.flatnonzero(gnd) + 1.0
            aps[i] = np.mean(np.arange(1, tsum + 1) / tindex)
    return aps


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(field)


def worker(args) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import gc

    t0 = time.perf_counter()
    from benchmark.metrics import mean_average_precision as map_

    qc, dc, ql, dl = make_data(args.n_query, args.n_db, args.bits, args.labels, args.seed)
    # Warm-up on a slice: compiles (or loads from cache) every kernel this policy uses.
    t1 = time.perf_counter()
    map_(qc[:40], dc[:500], ql[:40], dl[:500], ties=args.ties)
    first_call = time.perf_counter() - t1
    times, cpus, peaks, res = [], [], [], None
    for _ in range(args.repeats):
        res = None
        gc.collect()
        Path("/proc/self/clear_refs").write_text("5")  # reset the RSS high-water mark
        base = _rss_kb("VmRSS")
        t, c = time.perf_counter(), time.process_time()
        res = map_(qc, dc, ql, dl, ties=args.ties)
        times.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        peaks.append(_rss_kb("VmHWM") - base)
    out = {"ties": args.ties, "times": times, "cpu": cpus, "peak_extra_mb": max(peaks) / 1024, "map": res.value,
           "per_query": res.per_query.tolist() if args.per_query else None, "first_call_s": first_call,
           "process_s": time.perf_counter() - t0}
    print(json.dumps(out))


def run_worker(args, ties: str, env_extra=None, repeats=None, per_query=False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--ties", ties, "--n-query", str(args.n_query),
           "--n-db", str(args.n_db), "--bits", str(args.bits), "--labels", str(args.labels),
           "--seed", str(args.seed), "--repeats", str(repeats or args.repeats)]
    if per_query:
        cmd.append("--per-query")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-query", type=int, default=2100)
    p.add_argument("--n-db", type=int, default=193734)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--labels", type=int, default=21)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--loop-queries", type=int, default=None,
                   help="time the classic loop on the first N queries and extrapolate (default: all)")
    p.add_argument("--threads", type=str, default="",
                   help="comma-separated NUMBA_NUM_THREADS values to time (default: numba's default only)")
    p.add_argument("--no-compile-time", action="store_true", help="skip the empty-cache compile measurement")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--per-query", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--ties", default="average", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return

    print(f"MAP@all, {args.n_query} queries x {args.n_db} database items x {args.bits} bits, {args.labels} labels; "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start")
    qc, dc, ql, dl = make_data(args.n_query, args.n_db, args.bits, args.labels, args.seed)
    n_loop = args.n_query if args.loop_queries is None else min(args.loop_queries, args.n_query)
    t, c = time.perf_counter(), time.process_time()
    loop_ap = classic_loop(qc[:n_loop], dc, ql[:n_loop], dl)
    loop_s = (time.perf_counter() - t) * args.n_query / n_loop
    loop_cpu = (time.process_time() - c) * args.n_query / n_loop
    note = "" if n_loop == args.n_query else f" (extrapolated from {n_loop} queries)"
    print(f"classic per-query loop (stable argsort): {loop_s:8.3f} s (CPU {loop_cpu:.3f} s){note}")

    if not args.no_compile_time:
        with tempfile.TemporaryDirectory() as cache:
            for ties in ("average", "stable"):
                r = run_worker(args, ties, {"NUMBA_CACHE_DIR": cache}, repeats=1)
                print(f"compile time, empty numba cache, ties={ties:8s}: {r['first_call_s']:6.2f} s")

    for threads in [s for s in args.threads.split(",") if s] or [None]:
        env = {"NUMBA_NUM_THREADS": threads} if threads else {}
        label = f"{threads} thread(s)" if threads else "default threads"
        for ties in ("average", "stable"):
            r = run_worker(args, ties, env, per_query=(ties == "stable"))
            ts = np.array(r["times"])
            print(f"ours, ties={ties:8s} {label:16s}: min {ts.min():.3f} s, median {np.median(ts):.3f} s "
                  f"over {len(ts)} runs (CPU s, all threads: min {min(r['cpu']):.3f}); "
                  f"{loop_s / ts.min():6.1f}x the loop (min); peak extra memory {r['peak_extra_mb']:.1f} MB; "
                  f"MAP {r['map']:.6f}")
            if r["per_query"] is not None:
                ours = np.array(r["per_query"], dtype=np.float64)[:n_loop]
                both = ~np.isnan(loop_ap)
                same_nan = bool((np.isnan(ours) == np.isnan(loop_ap)).all())
                print(f"    stable vs loop: max |AP difference| {np.max(np.abs(ours[both] - loop_ap[both])):.2e} "
                      f"over {int(both.sum())} queries; same excluded queries: {same_nan}")
    print(f"load average {os.getloadavg()[0]:.1f} at end (the machine is shared: compare min times)")


if __name__ == "__main__":
    main()

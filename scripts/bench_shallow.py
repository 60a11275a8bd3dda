"""Fit time, encode time and peak memory of the shallow baselines at Wiki and MIRFlickr training size.

Each (method, size) runs in a fresh child process, so one method's memory never counts against
another and the peak resident set size (``ru_maxrss``) is the child's own. Reported per run:

* ``fit_s``: wall time of ``fit`` on the training items; ``fit_cpu_s``: CPU time of the process
  during ``fit`` (all threads), less sensitive than wall time to other jobs on a shared machine;
* ``encode_s``: wall time of encoding the database and the queries, both modalities;
* ``fit_peak_mb``: peak of Python-tracked allocations during ``fit`` (tracemalloc: NumPy and SciPy
  buffers included, BLAS workspaces not);
* ``peak_rss_mb``: the child's peak resident memory over the whole run (data, imports and all);
  ``rss_before_fit_mb`` is its resident memory just before ``fit``, for reference.

Sizes:

* ``wiki``: the bundled Wiki data (2173 training = database items, 693 queries; 128-d image, 10-d
  text, 10 labels);
* ``mirflickr``: synthetic data at MIRFlickr-25K training size: 10,000 training pairs, 512-d dense
  image, 1386-d sparse binary text, 24 labels (2,000 queries, 18,015 database items), 64 bits.

Methods default to every shallow method the registry can import (``seph-rnd`` and ``seph-km`` join
automatically once they import). Usage::

    OMP_NUM_THREADS=2 python scripts/bench_shallow.py                  # all sizes, all methods
    python scripts/bench_shallow.py --sizes mirflickr --methods cmssh --bits 64
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))
SHALLOW = ["cmssh", "scm-orth", "scm-seq", "seph-rnd", "seph-km"]
TARGET_S, TARGET_GB = 120.0, 4.0  # the budget per run at MIRFlickr size on 2 cores


def _load(size: str, seed: int):
    """(train image, text, labels), (database image, text), (query image, text) for a size."""
    if size == "wiki":
        from datasets import load_dataset

        ds = load_dataset("wiki")
    elif size == "mirflickr":
        from datasets.synthetic import make_synthetic

        ds = make_synthetic(n_items=20015, n_labels=24, image_dim=512, text_dim=1386, latent_dim=32,
                            noise=0.5, label_density=0.15, words_per_item=10.0, n_query=2000,
                            n_train=10000, seed=seed)
    else:
        raise SystemExit(f"unknown size {size!r}; valid: wiki, mirflickr")
    p = ds.protocol
    return ds.subset(p.train), ds.subset(p.database)[:2], ds.subset(p.query)[:2]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run_one(method: str, size: str, bits: int, seed: int) -> dict:
    """One measured run in this process (called in the child)."""
    from methods import get_method

    cls = get_method(method)
    train, database, query = _load(size, seed)
    params = {"n_bits": bits, "random_state": seed}
    hasher = cls(**{k: v for k, v in params.items() if k in cls().get_params()})
    rss_before = _rss_mb()
    tracemalloc.start()
    t0, c0 = time.perf_counter(), time.process_time()
    hasher.fit(*train)
    fit_s, fit_cpu = time.perf_counter() - t0, time.process_time() - c0
    fit_peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    t0 = time.perf_counter()
    for img, txt in (database, query):
        hasher.encode_image(img), hasher.encode_text(txt)
    encode_s = time.perf_counter() - t0
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"method": method, "size": size, "bits": bits, "n_train": int(train[0].shape[0]),
            "fit_s": round(fit_s, 3), "fit_cpu_s": round(fit_cpu, 3), "encode_s": round(encode_s, 3), "fit_peak_mb": round(fit_peak, 1),
            "rss_before_fit_mb": round(rss_before, 1), "peak_rss_mb": round(peak_rss, 1),
            "threads": os.environ.get("OMP_NUM_THREADS", "unset")}


def _available(methods: list[str]) -> list[str]:
    from methods import method_info

    out = []
    for name in methods:
        info = method_info(name)
        if info.available:
            out.append(name)
        else:
            print(f"# skipped {name}: {info.reason}", file=sys.stderr)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(SHALLOW), help="comma-separated method names")
    ap.add_argument("--sizes", default="wiki,mirflickr", help="comma-separated: wiki, mirflickr")
    ap.add_argument("--bits", type=int, default=None, help="code length (default: 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write the records to this file")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    bits = 64 if args.bits is None else args.bits
    if args.worker:
        print(json.dumps(run_one(args.worker[0], args.worker[1], bits, args.seed)))
        return 0
    records = []
    print(f"{'method':9s} {'size':9s} {'bits':>4s} {'fit_s':>8s} {'fit_cpu_s':>9s} {'encode_s':>8s} {'fit_peak_MB':>11s} "
          f"{'peak_RSS_MB':>11s}  within target")
    for size in args.sizes.split(","):
        for method in _available(args.methods.split(",")):
            cmd = [sys.executable, __file__, "--worker", method, size, "--bits", str(bits), "--seed", str(args.seed)]
            res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if res.returncode != 0:
                print(f"{method:9s} {size:9s} FAILED: {res.stderr.strip().splitlines()[-1:]}")
                continue
            rec = json.loads(res.stdout.strip().splitlines()[-1])
            records.append(rec)
            ok = rec["fit_s"] + rec["encode_s"] <= TARGET_S and rec["peak_rss_mb"] <= TARGET_GB * 1024
            print(f"{method:9s} {size:9s} {bits:4d} {rec['fit_s']:8.2f} {rec['fit_cpu_s']:9.2f} {rec['encode_s']:8.2f} "
                  f"{rec['fit_peak_mb']:11.1f} {rec['peak_rss_mb']:11.1f}  {'yes' if ok else 'NO'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

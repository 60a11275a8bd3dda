"""The runner on a Dask LocalCluster against the local process pool, at NUS-WIDE TC-21 size.

Data: synthetic (``datasets/synthetic.py``) at the size of NUS-WIDE TC-21: 195,834 items, of which
2,100 queries and 193,734 database items, 10,500 of them for training; 21 labels, 500-d image and
1,000-d text features. Methods: the shallow ones and ``random``; 16, 32 and 64 bits; no masking; one seed.
The same suite runs twice, into two results directories: ``--jobs W`` (the local pool) and
``--cluster local:W``, both with ``--threads T``. Reported for each:

* ``wall_s``: from the first dispatch to the last record (data generation included: every worker
  generates the data it needs once);
* ``records_per_min``: records written per minute of wall time;
* ``run_peak_mb``: per run, the peak resident memory its record holds (max and median over runs);
* ``worker_peak_mb``: per worker, the peak summed resident memory of its process tree, sampled every
  0.2 s (a pool worker; a Dask nanny with its worker, the worker's forkserver and its run process),
  max over workers. Must stay under 4 GB;
* ``codes_identical``: runs whose codes file has the same SHA-256 under both dispatchers.

Usage (the full-size measurement takes a quiet machine and some minutes)::

    python scripts/bench_cluster.py --out /tmp/bench_cluster
    python scripts/bench_cluster.py --out /tmp/bench_cluster_small --n-items 6000 --n-query 300 --n-train 1500
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

SHALLOW = ["random", "cmssh", "scm-orth", "scm-seq", "seph-rnd", "seph-km"]
LIMIT_MB = 4096.0


class TreeSampler:
    """Peak summed RSS of each child process tree of this process, sampled in a thread."""

    def __init__(self, period: float = 0.2):
        self.period = period
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children():
                try:
                    tree = [child] + child.children(recursive=True)
                    rss = sum(p.memory_info().rss for p in tree) / 2**20
                except psutil.Error:
                    continue
                self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), rss)
            self._stop.wait(self.period)


def write_suite(path: Path, args) -> Path:
    options = {"n_items": args.n_items, "n_labels": 21, "image_dim": 500, "text_dim": 1000,
               "n_query": args.n_query, "n_train": args.n_train, "seed": 0}
    path.write_text(json.dumps({
        "name": "bench-cluster",
        "datasets": [{"name": "synthetic", "label": f"synthetic-nus-{args.n_items}", "options": options}],
        "methods": args.methods, "bits": args.bits, "mask_rates": [0.0], "seeds": [0],
    }, indent=1))  # JSON is YAML
    return path


def measure(specs, evaluation, results: Path, *, jobs: int, threads: int, cluster: str | None) -> dict:
    from benchmark.records import RecordStore
    from benchmark.runner import RunSettings, run_suite

    settings = RunSettings(results_dir=str(results), threads=threads, evaluation=evaluation)
    t0 = time.perf_counter()
    with TreeSampler() as sampler:
        summary = run_suite(specs, settings, jobs=jobs, progress=sys.stderr.isatty(), cluster=cluster,
                            cluster_jobs=jobs if cluster else None)
    wall = time.perf_counter() - t0
    store = RecordStore(results)
    records = [store.read(rid) for rid in store.run_ids()]
    peaks = [float((r.memory or {}).get("peak_rss_mb") or (r.memory or {}).get("peak_mb") or 0.0)
             for r in records if r.status == "ok"]
    # the sampler sees every child of this process: keep the trees that are workers (the largest ones)
    workers = sorted(sampler.peaks.values(), reverse=True)[:jobs]
    return {
        "dispatch": cluster or f"--jobs {jobs}", "runs": len(records), "failed": len(summary.failed),
        "wall_s": round(wall, 1), "records_per_min": round(len(records) / wall * 60, 2),
        "run_peak_mb_max": round(max(peaks), 1) if peaks else None,
        "run_peak_mb_median": round(statistics.median(peaks), 1) if peaks else None,
        "worker_peak_mb": [round(w, 1) for w in workers],
        "codes": {r.run_id: r.codes_sha256 for r in records},
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="a fresh directory for both results directories")
    parser.add_argument("--n-items", type=int, default=195_834)
    parser.add_argument("--n-query", type=int, default=2_100)
    parser.add_argument("--n-train", type=int, default=10_500)
    parser.add_argument("--methods", default=",".join(SHALLOW))
    parser.add_argument("--bits", default="16,32,64")
    parser.add_argument("--workers", type=int, default=2, help="W: --jobs W against --cluster local:W")
    parser.add_argument("--threads", type=int, default=1, help="T: threads per run, both dispatchers")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.bits = [int(b) for b in args.bits.split(",") if b]

    from benchmark.suites import expand_suite

    args.out.mkdir(parents=True, exist_ok=True)
    if any((args.out / sub).exists() for sub in ("jobs", "cluster")):
        parser.error(f"--out {args.out}: holds results of an earlier measurement; give a fresh directory")
    exp = expand_suite(write_suite(args.out / "suite.yaml", args))
    rows = [measure(exp.specs, exp.evaluation, args.out / "jobs", jobs=args.workers, threads=args.threads,
                    cluster=None),
            measure(exp.specs, exp.evaluation, args.out / "cluster", jobs=args.workers, threads=args.threads,
                    cluster=f"local:{args.workers}")]
    same = sum(rows[0]["codes"].get(rid) == sha for rid, sha in rows[1]["codes"].items())
    report = {"n_items": args.n_items, "n_query": args.n_query, "n_train": args.n_train,
              "n_database": args.n_items - args.n_query, "methods": args.methods, "bits": args.bits,
              "workers": args.workers, "threads": args.threads, "codes_identical": f"{same} of {len(rows[1]['codes'])}",
              "results": [{k: v for k, v in r.items() if k != "codes"} for r in rows]}
    (args.out / "bench_cluster.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"| dispatch | runs | failed | wall s | records/min | run peak MB (max / median) | worker peak MB |")
    print("|---|---|---|---|---|---|---|")
    for r in report["results"]:
        print(f"| {r['dispatch']} | {r['runs']} | {r['failed']} | {r['wall_s']} | {r['records_per_min']} | "
              f"{r['run_peak_mb_max']} / {r['run_peak_mb_median']} | {', '.join(map(str, r['worker_peak_mb']))} |")
    print(f"codes identical: {report['codes_identical']}; written {args.out / 'bench_cluster.json'}")
    over = [w for r in report["results"] for w in r["worker_peak_mb"] if w > LIMIT_MB]
    if over:
        print(f"worker peak memory over {LIMIT_MB:.0f} MB: {over}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Time and peak memory of RDCMH: fit on Wiki (the 30 s target) and at MIRFlickr training size.

Each case runs in a fresh subprocess, so the peak resident memory it reports is its own:

* ``wiki``: the bundled Wiki training set (2173 items, 128-d SIFT BoVW, 10-d LDA, 10 labels);
* ``mirflickr``: synthetic data at MIRFlickr-25K training size: 10,000 items, 512-d dense image
  features, 1386-d sparse binary text, 24 labels (``datasets.synthetic.make_synthetic``).

For each case it reports the fit time (wall and process CPU), the time per iteration, the split
between triplet sampling (Eq. 1 rows, bins, triplets) and the rest, the encoding time of the
training items, and peak RSS (the data's own footprint is reported separately as ``rss_data_mb``).

    python scripts/bench_rdcmh.py                         # both cases, 500 iterations, 2 threads
    python scripts/bench_rdcmh.py --cases mirflickr --iters 100 --threads 1 --json out.json
    python scripts/bench_rdcmh.py --method rdcmh-nd --device cuda
    python scripts/bench_rdcmh.py --cases wiki --sampler pairs  # another reading of the ranking lists

Timings depend on what else runs on the machine: say so when reporting them.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("wiki", "mirflickr")


def _load(case: str, seed: int):
    if case == "wiki":
        from datasets import load_dataset

        ds = load_dataset("wiki")
        return ds.subset(ds.protocol.train)
    from datasets.synthetic import make_synthetic

    ds = make_synthetic(n_items=12000, n_labels=24, image_dim=512, text_dim=1386, latent_dim=32, noise=0.5,
                        label_density=0.12, words_per_item=10.0, n_query=2000, n_train=10000, seed=seed)
    return ds.subset(ds.protocol.train)


def _child(args) -> dict:
    """Runs inside the subprocess: load, fit, time, measure."""
    import resource
    import time

    import torch

    torch.set_num_threads(args.threads)
    # The first optimizer built in a process imports torch's compiler stack (~4 s here): a one-time
    # cost per process (a suite pays it once), not the method's, so it is timed apart.
    t = time.perf_counter()
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=0.1)
    first_optimizer_s = time.perf_counter() - t
    from methods import make_method
    import methods._triplets as T

    image, text, labels = _load(args.case, args.seed)
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    sampling = {"s": 0.0, "calls": 0}
    original = T.sample_triplets

    def timed(*a, **kw):  # wall time spent building triplet batches
        t = time.perf_counter()
        out = original(*a, **kw)
        sampling["s"] += time.perf_counter() - t
        sampling["calls"] += 1
        return out

    import methods.rdcmh as R

    R.sample_triplets = timed
    h = make_method(args.method, n_bits=args.bits, n_iter=args.iters, device=args.device, random_state=args.seed,
                    sampler=args.sampler)
    wall, cpu = time.perf_counter(), time.process_time()
    h.fit(image, text, labels)
    fit_wall, fit_cpu = time.perf_counter() - wall, time.process_time() - cpu
    t = time.perf_counter()
    h.encode_image(image), h.encode_text(text)
    enc = time.perf_counter() - t
    out = {
        "case": args.case, "method": args.method, "n_items": int(labels.shape[0]), "n_bits": args.bits,
        "iters": args.iters, "threads": args.threads, "device": args.device,
        "fit_wall_s": round(fit_wall, 2), "fit_cpu_s": round(fit_cpu, 2),
        "ms_per_iter": round(1000 * fit_wall / args.iters, 1),
        "sampling_ms_per_iter": round(1000 * sampling["s"] / max(1, sampling["calls"]), 1),
        "projected_500_iter_s": round(fit_wall * 500 / args.iters, 1),
        "encode_train_s": round(enc, 2), "first_optimizer_import_s": round(first_optimizer_s, 2),
        "rss_data_mb": round(rss_data), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "train_codes_distinct": h.history_.get("train_codes_distinct"),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available() and args.device != "cpu":
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p.add_argument("--method", default="rdcmh")
    p.add_argument("--bits", type=int, default=16)
    p.add_argument("--iters", type=int, default=500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", default="bins", help="RDCMH's triplet sampler (methods._triplets.SAMPLERS)")
    p.add_argument("--json", help="also write the records to this file")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: run one case in this process
    args = p.parse_args(argv)
    if args.case:
        print(json.dumps(_child(args)))
        return 0
    records = []
    for case in args.cases:
        cmd = [sys.executable, __file__, "--case", case, "--method", args.method, "--bits", str(args.bits),
               "--iters", str(args.iters), "--threads", str(args.threads), "--device", args.device,
               "--seed", str(args.seed), "--sampler", args.sampler]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
        if res.returncode != 0:
            print(f"{case}: failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
            continue
        rec = json.loads(res.stdout.strip().splitlines()[-1])
        records.append(rec)
        print(json.dumps(rec))
    if args.json:
        Path(args.json).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    raise SystemExit(main())

"""Time and peak memory of the deep methods at Wiki size and at MIRFlickr training size.

Each (method, size) runs in a fresh subprocess so that its peak resident memory (and, on a GPU,
its peak allocated GPU memory) is its own. Sizes (synthetic data, all items are training items):

* ``wiki``: 2173 items, 128-d dense image features, 10-d text, 10 labels (Wiki's training set);
* ``mirflickr``: 10,000 items, 512-d dense image features, 1386-d sparse binary text, 24 labels
  (MIRFlickr-25K's usual training set).

Methods that cannot be imported are reported as skipped. The paper settings of DCMH/RDCMH take
hours at MIRFlickr size on a CPU, so ``--epochs N`` (applied to methods that have an ``epochs``
or ``n_epochs`` parameter) runs N epochs and the report extrapolates linearly to the method's default epochs
(``projected_s``), which is exact up to the per-epoch time being constant.

    python scripts/bench_deep.py                       # all sizes, defaults
    python scripts/bench_deep.py --sizes wiki --epochs 3 --threads 1 --json out.json
    python scripts/bench_deep.py --methods dcmh --epochs 2 --set image_hidden=1024 --set text_hidden=4096
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from validate import parse_overrides  # scripts/ is on sys.path when a script runs

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("dcmh", "chn", "cdq", "rdcmh")
SIZES = {
    "wiki": dict(n_items=2173, image_dim=128, text_dim=10, n_labels=10, label_density=0.1, words_per_item=5.0),
    "mirflickr": dict(n_items=10000, image_dim=512, text_dim=1386, n_labels=24, label_density=0.15,
                      words_per_item=8.0),
}


def _worker(method: str, size: str, n_bits: int, epochs: int | None, device: str, threads: int,
            overrides: dict | None = None) -> dict:
    """Fit once and encode the training items; runs inside the subprocess."""
    import resource
    import time

    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from datasets.synthetic import make_synthetic
    from methods import get_method

    # The first optimizer built in a process imports torch's compiler stack (10+ s): not the method's cost.
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    ds = make_synthetic(latent_dim=16, noise=0.5, seed=0, **SIZES[size])
    cls = get_method(method)
    names = set(cls._get_param_names())
    params = {"n_bits": n_bits, "random_state": 0}
    if "device" in names:
        params["device"] = device
    default_epochs = None
    key = next((k for k in ("epochs", "n_epochs") if k in names), None)  # CDQ calls it n_epochs
    if epochs is not None and key is not None:
        default_epochs = cls().get_params()[key]
        params[key] = epochs
    params.update(overrides or {})
    h = cls(**params)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    h.fit(ds.image, ds.text, ds.labels)
    fit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    h.encode_image(ds.image), h.encode_text(ds.text)
    encode_s = time.perf_counter() - t0
    out = {
        "method": method, "size": size, "n_items": ds.n_items, "n_bits": n_bits, "device": device,
        "threads": threads, "fit_s": round(fit_s, 2), "encode_s": round(encode_s, 3),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "epochs_run": params.get("epochs", params.get("n_epochs")), "default_epochs": default_epochs,
        "overrides": overrides or {},
        "projected_s": round(fit_s * default_epochs / epochs, 1) if default_epochs else round(fit_s, 2),
    }
    if device.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2 ** 20, 1)
    return out


def _run_one(method, size, args) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, size, "--bits", str(args.bits), "--device", args.device,
           "--threads", str(args.threads)] + (["--epochs", str(args.epochs)] if args.epochs else [])
    cmd += [f"--set={kv}" for kv in args.set]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"method": method, "size": size, "status": f"failed: {last}"}
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "status": "ok"}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=None, help="run this many epochs and extrapolate to the default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="override a constructor parameter (repeatable), e.g. --set image_hidden=1024")
    ap.add_argument("--json", type=Path, default=None, help="also write the records here")
    ap.add_argument("--worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        print(json.dumps(_worker(*args.worker, args.bits, args.epochs, args.device, args.threads,
                                 parse_overrides(args.set))))
        return 0

    sys.path.insert(0, str(ROOT))
    from methods import method_info

    records = []
    for method in args.methods:
        info = method_info(method)
        if not info.available:
            records.append({"method": method, "status": f"skipped: {info.reason}"})
            print(f"{method:8s} skipped ({info.reason})", flush=True)
            continue
        for size in args.sizes:
            rec = _run_one(method, size, args)
            records.append(rec)
            if rec["status"] == "ok":
                print(f"{method:8s} {size:10s} fit {rec['fit_s']:9.1f} s  (epochs {rec['epochs_run']}; projected "
                      f"{rec['projected_s']:9.1f} s)  encode {rec['encode_s']:7.3f} s  peak RSS "
                      f"{rec['peak_rss_mb']:8.1f} MB", flush=True)
            else:
                print(f"{method:8s} {size:10s} {rec['status']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

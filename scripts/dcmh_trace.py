"""Per-epoch trace of DCMH's objective J (Eq. 2) and its three terms on Wiki's training items.

DCMH's fit evaluates J through ``methods.dcmh.dcmh_objective`` every ``DCMH.history_every`` epochs;
this script sets that to 1 and wraps the function to also record, at every epoch, the pairwise
(likelihood) term, the quantisation and bit-balance terms, the largest |Theta|, the RMS and the
largest |value| of the buffers F and G, the RMS of their column means (the common mode that the
bit-balance term penalises) and the share of bits of B that flipped since the epoch before. The
model is fitted exactly as ``DCMH.fit`` does; only the monitoring is added.

    python scripts/dcmh_trace.py --epochs 500 --image-hidden 512 --text-hidden 512 --json trace.json
    python scripts/dcmh_trace.py --set eta=0 --json no_balance.json       # without the balance term
    python scripts/dcmh_trace.py --set lr_start=0.003 --json small_lr.json

One 500-epoch run at widths 512/512, 16 bits, 1 thread takes ~3.5 min on an idle CPU core.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import methods.dcmh as dcmh_module  # noqa: E402
from datasets import load_dataset  # noqa: E402
from methods.losses.likelihood import balance_loss, pairwise_nll, quantization_loss  # noqa: E402
from validate import parse_overrides  # noqa: E402  (scripts/ is on sys.path when a script runs)


def trace(epochs: int, image_hidden: int, text_hidden: int, n_bits: int, seed: int, overrides: dict,
          data_root=None) -> dict:
    ds = load_dataset("wiki", data_root=data_root)
    image, text, labels = ds.subset(ds.protocol.train)
    rows: list[dict] = []
    previous_b: list = [None]
    full_objective = dcmh_module.dcmh_objective

    def traced(F, G, B, S, mask, gamma, eta, chunk=1024):
        n = F.shape[0]
        pair, max_theta = 0.0, 0.0
        for start in range(0, n, chunk):
            r = slice(start, min(start + chunk, n))
            theta = 0.5 * F[r] @ G.T
            pair += float(pairwise_nll(theta, S(r), mask(r)))
            max_theta = max(max_theta, float(theta.abs().max()))
        flips = None if previous_b[0] is None else float((previous_b[0] != B).float().mean())
        previous_b[0] = B.clone()
        rows.append({
            "pair": pair, "quant": float(quantization_loss(B, F) + quantization_loss(B, G)),
            "balance": float(balance_loss(F.sum(0)) + balance_loss(G.sum(0))), "max_theta": max_theta,
            "F_rms": float(F.pow(2).mean().sqrt()), "G_rms": float(G.pow(2).mean().sqrt()),
            "F_absmax": float(F.abs().max()), "G_absmax": float(G.abs().max()),
            "F_colmean_rms": float(F.mean(0).pow(2).mean().sqrt()),
            "G_colmean_rms": float(G.mean(0).pow(2).mean().sqrt()),
            "B_flipped": flips, "finite": bool(torch.isfinite(F).all() and torch.isfinite(G).all()),
        })
        value = full_objective(F, G, B, S, mask, gamma, eta, chunk)
        rows[-1]["J"] = value
        return value

    dcmh_module.dcmh_objective = traced
    dcmh_module.DCMH.history_every = 1
    try:
        params = {"n_bits": n_bits, "epochs": epochs, "image_hidden": image_hidden, "text_hidden": text_hidden,
                  "random_state": seed, **overrides}
        h = dcmh_module.DCMH(**params)
        t0 = time.perf_counter()
        h.fit(image, text, labels)
        fit_s = time.perf_counter() - t0
    finally:
        dcmh_module.dcmh_objective = full_objective
    lrs = np.logspace(math.log10(h.lr_start), math.log10(h.lr_end), int(h.epochs))
    for epoch, row in zip(h.extras_["loss_history_epochs"], rows):
        row["epoch"], row["lr"] = int(epoch), float(lrs[epoch])
    return {"params": params, "fit_s": round(fit_s, 1), "rows": rows}


def summary(result: dict) -> dict:
    """J's first value, its peak (value, epoch, peak / first) and the term that dominates at the peak."""
    rows = result["rows"]
    peak = max(rows, key=lambda r: r["J"])
    terms = {"pair": peak["pair"], "quant": peak["quant"], "balance": peak["balance"]}
    return {"J_first": rows[0]["J"], "J_last": rows[-1]["J"], "J_peak": peak["J"], "peak_epoch": peak["epoch"],
            "peak_over_first": peak["J"] / rows[0]["J"], "peak_term": max(terms, key=terms.get),
            "epochs_over_10x": [r["epoch"] for r in rows if r["J"] > 10 * rows[0]["J"]]}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=500)
    ap.add_argument("--image-hidden", type=int, default=512)
    ap.add_argument("--text-hidden", type=int, default=512)
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="another DCMH parameter")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--json", default=None, help="write the whole trace here")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = trace(args.epochs, args.image_hidden, args.text_hidden, args.bits, args.seed,
                   parse_overrides(args.set), args.data_root)
    result["summary"] = summary(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result))
    print(json.dumps({"fit_s": result["fit_s"], **result["summary"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Validation MAP of a method setting, on a split carved from the training items only.

This is how defaults that differ from a paper are chosen in this suite (see each method's
``validation_selection``): the protocol's query items are never touched. The training items are
permuted with ``numpy.random.default_rng([seed, 777])``; the first ``--fraction`` of them become the
validation queries, the rest are the fit set and the retrieval database. Labels of the fit set are
masked at ``--mask`` as in the benchmark; validation queries keep theirs (they only define relevance).
MAP@all, tie-aware, both directions, with the method's own distance where it has one.

``--match-steps`` scales ``epochs`` so that the fit on the smaller fit set takes as many mini-batch
steps as the benchmark's fit on every training item (epochs x ceil(n_train / batch) / ceil(n_fit / batch)).
Use it for methods whose outcome depends on the number of SGD steps, not only on the passes over the
data: DCMH on Wiki does 17 steps per epoch on 2173 items but 14 on the 1738 of the fit set, so plain
validation would give it 18 % fewer steps than the run it is meant to predict. The learning-rate
schedule is per epoch, so it stretches with the epochs. Where the method records its training
objective (``loss_history_``), the result carries it: it says, without any query, whether a fit moved.

    python scripts/validate.py --method dcmh --set image_hidden=1024 --set text_hidden=4096
    python scripts/validate.py --method rdcmh --set lam=1.0 --bits 16 --seed 0 --json out.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def parse_overrides(pairs: list[str]) -> dict:
    """``["lam=0.1", "loss=hinge"]`` -> ``{"lam": 0.1, "loss": "hinge"}`` (JSON values where they parse)."""
    out = {}
    for kv in pairs:
        key, sep, value = kv.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set {kv!r} is invalid; valid: PARAM=VALUE, e.g. --set lam=0.1")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def validation_split(train, seed: int, fraction: float = 0.2):
    """(fit, validation) indices: a seeded permutation of the training indices, the first ``fraction`` held out."""
    import numpy as np

    if not 0.0 < fraction < 1.0:
        raise SystemExit(f"--fraction {fraction!r} is invalid; valid: a number in (0, 1)")
    perm = np.random.default_rng([seed, 777]).permutation(np.asarray(train))
    n_val = int(round(fraction * perm.size))
    return perm[n_val:], perm[:n_val]


def matched_epochs(epochs: int, batch_size: int, n_train: int, n_fit: int) -> int:
    """Epochs on ``n_fit`` items that make as many mini-batch steps as ``epochs`` on ``n_train`` items."""
    per_epoch = lambda n: -(-n // min(batch_size, n))  # noqa: E731 - ceil(n / batch), the last batch short
    return int(round(epochs * per_epoch(n_train) / per_epoch(n_fit)))


def validation_map(method: str, overrides: dict, dataset: str = "wiki", n_bits: int = 16, seed: int = 0,
                   mask: float = 0.0, fraction: float = 0.2, device: str = "cpu", match_steps: bool = False) -> dict:
    import numpy as np

    from benchmark.metrics import mean_average_precision
    from datasets import load_dataset
    from datasets.base import mask_labels
    from methods import get_method

    ds = load_dataset(dataset)
    fit, val = validation_split(ds.protocol.train, seed, fraction)
    img, txt, lab = ds.subset(fit)
    masked = mask_labels(lab, mask, seed=seed)
    cls = get_method(method)
    names = set(cls._get_param_names())
    params = {"n_bits": n_bits, "random_state": seed, **({"device": device} if "device" in names else {}), **overrides}
    unknown = sorted(set(params) - names)
    if unknown:
        raise SystemExit(f"--set {', '.join(unknown)}: not a parameter of {method}; valid: {', '.join(sorted(names))}")
    if match_steps:
        if not {"epochs", "batch_size"} <= names:
            raise SystemExit(f"--match-steps: {method} has no epochs and batch_size parameters; valid: a method with both")
        base = {**cls().get_params(), **params}
        params["epochs"] = matched_epochs(int(base["epochs"]), int(base["batch_size"]), len(ds.protocol.train), fit.size)
    h = cls(**params)
    t0 = time.perf_counter()
    h.fit(img, txt, np.array(masked.labels), np.array(masked.labeled))
    fit_s = time.perf_counter() - t0
    q_img, q_txt, q_lab = ds.subset(val)
    dist = h.distance if type(h).uses_own_distance() else None
    i2t = mean_average_precision(h.query_image(q_img), h.encode_text(txt), q_lab, lab, distance=dist).value
    t2i = mean_average_precision(h.query_text(q_txt), h.encode_image(img), q_lab, lab, distance=dist).value
    out = {"method": method, "dataset": dataset, "n_bits": n_bits, "seed": seed, "mask": mask,
           "n_fit": int(fit.size), "n_validation": int(val.size), "overrides": overrides,
           "epochs": params.get("epochs"), "device": str(getattr(h, "device_", device)),
           "val_map_i2t": round(float(i2t), 4), "val_map_t2i": round(float(t2i), 4), "fit_s": round(fit_s, 1)}
    history = getattr(h, "loss_history_", None)
    if history is not None and len(history):
        out["loss_history"] = [float(f"{v:.6g}") for v in np.asarray(history, dtype=float)]
        out["loss_history_epochs"] = (getattr(h, "extras_", None) or {}).get("loss_history_epochs")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--bits", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask", type=float, default=0.0)
    ap.add_argument("--fraction", type=float, default=0.2, help="share of the training items held out as queries")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="override a constructor parameter (repeatable)")
    ap.add_argument("--match-steps", action="store_true",
                    help="scale epochs so the fit makes as many SGD steps as on every training item")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = validation_map(args.method, parse_overrides(args.set), args.dataset, args.bits, args.seed, args.mask,
                         args.fraction, args.device, args.match_steps)
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

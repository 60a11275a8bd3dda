"""Share of class-informative triplets drawn by each RDCMH sampler, on a dataset's training items.

A triplet (query q, positive i, negative j) is class-informative when the positive shares a label
with the query and the negative shares none: only such triplets tell the networks something about
the classes that retrieval is judged on. The others order two items that are both relevant or both
irrelevant to q by their feature similarity. Relevance is judged on the true labels of every
training item; the sampler sees only the visible ones (``--masks``: share of items whose labels are
hidden, as in the benchmark, mask seed ``--seed``).

For each sampler (methods._triplets.SAMPLERS) and mask rate the script draws ``--passes`` triplets
per training item from RDCMH's S^xy lists (Eq. 1) and prints a Markdown table: the share over all
queries and, under a mask, over the unlabeled queries only; plus RDCMH-NS's lists (label cosine
only, labeled items only) for comparison. It also reports, for equal-count bins, the share of
same-class items in each bin.

    python scripts/triplet_composition.py                       # Wiki, masks 0 and 0.7
    python scripts/triplet_composition.py --passes 5 --json composition.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def composition(sim, truth, queries, sampler: str, n_bins: int, passes: int, seed: int, batch: int = 256) -> dict:
    """Shares of class-informative triplets (all queries, and per query subset given as a mask)."""
    import numpy as np
    import torch

    from methods._triplets import level_thresholds, sample_triplets

    gen = torch.Generator().manual_seed(seed)
    thr = level_thresholds(sim, n_bins, seed) if sampler == "levels" else None
    share = (truth @ truth.T) > 0  # n x n is fine at Wiki's size (2173 items)
    q_all, inf_all = [], []
    for _ in range(passes):
        order = torch.as_tensor(queries)[torch.randperm(len(queries), generator=gen)]
        for s in range(0, order.numel(), batch):
            tb = sample_triplets(sim, order[s:s + batch], n_bins, gen, sampler, thr)
            q, i, j, v = (t.numpy() for t in (tb.q, tb.i, tb.j, tb.valid))
            q_all.append(q[v])
            inf_all.append(share[q[v], i[v]] & ~share[q[v], j[v]])
    return {"queries": np.concatenate(q_all), "informative": np.concatenate(inf_all)}


def bin_purity(sim, truth, n_bins: int, batch: int = 256) -> list[float]:
    """Share of same-class items in each equal-count bin, over every training item's list."""
    import numpy as np
    import torch

    from methods._triplets import rank_bins

    same = np.zeros(n_bins)
    total = np.zeros(n_bins)
    for s in range(0, sim.n, batch):
        q = torch.arange(s, min(s + batch, sim.n))
        bins = rank_bins(sim.rows(q), q, n_bins).numpy()
        rel = (truth[q.numpy()] @ truth.T) > 0
        for b in range(n_bins):
            total[b] += (bins == b).sum()
            same[b] += ((bins == b) & rel).sum()
    return [round(float(x), 3) for x in same / total]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="wiki")
    ap.add_argument("--masks", default="0,0.7", help="comma-separated mask rates")
    ap.add_argument("--n-bins", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3, help="triplets drawn per training item")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from datasets import load_dataset
    from datasets.base import mask_labels
    from methods._triplets import SAMPLERS, SemiSupervisedSimilarity

    ds = load_dataset(args.dataset)
    img, txt, lab = ds.subset(ds.protocol.train)
    truth = np.asarray(lab, dtype=np.float32)
    cpu = torch.device("cpu")
    masks = [float(m) for m in args.masks.split(",")]
    rows, out = {}, {"dataset": args.dataset, "n_train": int(truth.shape[0]), "n_bins": args.n_bins,
                     "passes": args.passes, "seed": args.seed, "shares": {}, "bin_purity": {}}
    for mask in masks:
        m = mask_labels(lab, mask, seed=args.seed)
        labeled = np.array(m.labeled)
        sim = SemiSupervisedSimilarity(img, txt, np.array(m.labels), labeled, cpu)
        out["bin_purity"][str(mask)] = bin_purity(sim, truth, args.n_bins)
        for sampler in SAMPLERS:
            c = composition(sim, truth, np.arange(truth.shape[0]), sampler, args.n_bins, args.passes, args.seed)
            unl = ~labeled[c["queries"]]
            cell = {"all": float(c["informative"].mean()),
                    "unlabeled_queries": float(c["informative"][unl].mean()) if unl.any() else None}
            rows.setdefault(sampler, {})[mask] = cell
            out["shares"].setdefault(sampler, {})[str(mask)] = cell
        # RDCMH-NS: label-cosine lists over the labeled items only (its training set).
        keep = np.flatnonzero(labeled)
        ns = SemiSupervisedSimilarity(None, None, np.array(m.labels)[keep], np.ones(keep.size, bool), cpu, mode="labels")
        for sampler in ("bins", "top"):  # the former and the current default sampler
            c = composition(ns, truth[keep], np.arange(keep.size), sampler, args.n_bins, args.passes, args.seed)
            cell = {"all": float(c["informative"].mean()), "unlabeled_queries": None}
            rows.setdefault(f"{sampler} (rdcmh-ns)", {})[mask] = cell
            out["shares"].setdefault(f"{sampler} (rdcmh-ns)", {})[str(mask)] = cell

    head = "| sampler | " + " | ".join(
        f"mask {m:g}" + (f" | mask {m:g}, unlabeled queries" if m > 0 else "") for m in masks) + " |"
    print(f"Class-informative triplets on {args.dataset}'s {truth.shape[0]} training items "
          f"({args.passes} per item, {args.n_bins} bins, seed {args.seed}):\n")
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    fmt = lambda x: "n/a" if x is None else f"{100 * x:.1f} %"  # noqa: E731
    for sampler, cells in rows.items():
        parts = []
        for m in masks:
            parts.append(fmt(cells[m]["all"]))
            if m > 0:
                parts.append(fmt(cells[m]["unlabeled_queries"]))
        print(f"| {sampler} | " + " | ".join(parts) + " |")
    for m in masks:
        print(f"\nSame-class share per equal-count bin (bin 0 first), mask {m:g}: {out['bin_purity'][str(m)]}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Validation MAP of a method setting, on a split carved from the training items only.

This is how defaults that differ from a paper are chosen in this suite (see each method's
``validation_selection``): the protocol's query items are never touched. The training items are
permuted with ``numpy.random.default_rng([seed, 777])``; the first ``--fraction`` of them become the
validation queries, the rest are the fit set and the retrieval database. Labels of the fit set are
masked at ``--mask`` as in the benchmark; validation queries keep theirs (they only define relevance).
MAP@all, tie-aware, both directions, with the method's own distance where it has one.

``--database heldout`` mirrors the benchmark's ``unseen`` protocol instead: the held-out items are split
again, the first third (of the same seeded order) the validation queries and the other two thirds the
retrieval database, so that no item the method was fitted on is retrieved. With the fit set as database
(``fit``, the default) a method that memorises its training items scores high text->image without
hashing unseen items well; a selection that should not reward that runs with ``heldout``
(``--fraction 0.3`` on Wiki gives 217 queries and 435 database items, close to the ``unseen``
protocol's 231 / 462).

``--match-steps`` scales ``epochs`` so that the fit on the smaller fit set takes as many mini-batch
steps as the benchmark's fit on every training item (epochs x ceil(n_train / batch) / ceil(n_fit / batch)).
Use it for methods whose outcome depends on the number of SGD steps, not only on the passes over the
data: DCMH on Wiki does 17 steps per epoch on 2173 items but 14 on the 1738 of the fit set, so plain
validation would give it 18 % fewer steps than the run it is meant to predict. The learning-rate
schedule is per epoch, so it stretches with the epochs. Where the method records its training
objective (``loss_history_``), the result carries it: it says, without any query, whether a fit moved.

    python scripts/validate.py --method dcmh --set image_hidden=1024 --set text_hidden=4096
    python scripts/validate.py --method rdcmh --set lam=1.0 --bits 16 --seed 0 --json out.json

Rerunning a selection
---------------------
``--selection METHOD`` reruns every candidate of ``METHOD``'s ``validation_selection`` for every seed
and prints a Markdown table of mean and std (sample std, ddof 1; none for one seed) per direction,
beside the recorded figures. ``--seeds 0,1,2,3,4`` replaces the recorded seeds; ``--candidates FILE``
(YAML or JSON) or ``--grid PARAM=V1,V2`` (repeatable; the cartesian product) replaces the recorded
candidates, so a new selection runs the same way; ``--json`` writes the result in the format below,
ready to paste into the class. ::

    python scripts/validate.py --selection rdcmh --seeds 0,1,2,3,4 --json rdcmh_selection.json
    python scripts/validate.py --selection rdcmh --grid sampler=bins,top --grid cross_terms=eq5,cross

The format of ``validation_selection`` (a dict on the Hasher class; extra keys are kept, not read)::

    {"method": "rdcmh",                       # registry name
     "dataset": "wiki", "bits": 16, "mask": 0.0, "fraction": 0.2, "match_steps": False,
     "dataset_options": {...},                # optional: load_dataset options, e.g. {"image_features": "gist"}
     "base_params": {...},                    # optional: parameters every candidate shares
     "seeds": [0, 1, 2, 3, 4],                # each seed sets the split, the mask and random_state
     "candidates": [{"params": {...},         # over base_params, over the class defaults
                     "map_i2t": [mean, std], "map_t2i": [mean, std]}, ...],
     "chosen": {...}, "why": "..."}

A candidates file holds either a list of candidates (``{"params": {...}}``, or bare params dicts) or a
dict with any of ``base_params``, ``candidates`` and ``grid`` (``{param: [values, ...]}``, expanded to
the cartesian product); its settings keys (``dataset``, ``bits``, ...) override the selection's.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
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


DATABASES = ("fit", "heldout")


def heldout_split(val):
    """(validation queries, validation database) of ``--database heldout``: the first third and the rest."""
    n_query = max(1, int(round(len(val) / 3)))
    if len(val) - n_query < 1:
        raise SystemExit(f"--database heldout needs at least 2 held-out items, got {len(val)}; valid: a larger "
                         "--fraction")
    return val[:n_query], val[n_query:]


def matched_epochs(epochs: int, batch_size: int, n_train: int, n_fit: int) -> int:
    """Epochs on ``n_fit`` items that make as many mini-batch steps as ``epochs`` on ``n_train`` items."""
    per_epoch = lambda n: -(-n // min(batch_size, n))  # noqa: E731 - ceil(n / batch), the last batch short
    return int(round(epochs * per_epoch(n_train) / per_epoch(n_fit)))


def validation_map(method: str, overrides: dict, dataset: str = "wiki", n_bits: int = 16, seed: int = 0,
                   mask: float = 0.0, fraction: float = 0.2, device: str = "cpu", match_steps: bool = False,
                   dataset_options: dict | None = None, database: str = "fit") -> dict:
    import numpy as np

    from benchmark.metrics import mean_average_precision
    from datasets import load_dataset
    from datasets.base import mask_labels
    from methods import get_method

    if database not in DATABASES:
        raise SystemExit(f"--database {database!r} is invalid; valid: {', '.join(DATABASES)}")
    ds = load_dataset(dataset, **(dataset_options or {}))
    fit, val = validation_split(ds.protocol.train, seed, fraction)
    # the retrieval split is settled before the fit, so a split too small to use fails first
    queries, db = heldout_split(val) if database == "heldout" else (val, fit)
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
    if database == "heldout":
        db_img, db_txt, db_lab = ds.subset(db)
    else:  # the fit set, with its full labels (they only define relevance)
        db_img, db_txt, db_lab = img, txt, lab
    q_img, q_txt, q_lab = ds.subset(queries)
    dist = h.distance if type(h).uses_own_distance() else None
    i2t = mean_average_precision(h.query_image(q_img), h.encode_text(db_txt), q_lab, db_lab, distance=dist).value
    t2i = mean_average_precision(h.query_text(q_txt), h.encode_image(db_img), q_lab, db_lab, distance=dist).value
    out = {"method": method, "dataset": dataset, "dataset_options": dataset_options or {}, "n_bits": n_bits,
           "seed": seed, "mask": mask, "database": database, "n_fit": int(fit.size),
           "n_validation": int(queries.size), "n_database": int(db.size), "overrides": overrides,
           "epochs": params.get("epochs"), "device": str(getattr(h, "device_", device)),
           "val_map_i2t": round(float(i2t), 4), "val_map_t2i": round(float(t2i), 4), "fit_s": round(fit_s, 1)}
    history = getattr(h, "loss_history_", None)
    if history is not None and len(history):
        out["loss_history"] = [float(f"{v:.6g}") for v in np.asarray(history, dtype=float)]
        out["loss_history_epochs"] = (getattr(h, "extras_", None) or {}).get("loss_history_epochs")
    return out


SETTINGS = ("dataset", "dataset_options", "bits", "mask", "fraction", "match_steps", "database")


def parse_grid(pairs: list[str]) -> list[dict]:
    """``["sampler=bins,top", "lam=0.1,1"]`` -> the 4 params dicts of the cartesian product (JSON values)."""
    axes = []
    for kv in pairs:
        key, sep, values = kv.partition("=")
        if not sep or not key or not values:
            raise SystemExit(f"--grid {kv!r} is invalid; valid: PARAM=V1,V2,..., e.g. --grid sampler=bins,top")
        axes.append([(key, parse_overrides([f"{key}={x}"])[key]) for x in values.split(",")])
    return [dict(combo) for combo in itertools.product(*axes)]


def load_candidates(path: Path) -> dict:
    """A candidates file (YAML or JSON) -> ``{"candidates": [...], and any base_params / settings it gives}``."""
    text = Path(path).read_text()
    if Path(path).suffix.lower() in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if isinstance(data, list):
        data = {"candidates": data}
    if not isinstance(data, dict):
        raise SystemExit(f"--candidates {path}: expected a list of candidates or a dict; valid: see --help")
    out = {k: data[k] for k in (*SETTINGS, "base_params", "seeds") if k in data}
    cands = [c if isinstance(c, dict) and "params" in c else {"params": c} for c in data.get("candidates", [])]
    if "grid" in data:
        grid = data["grid"]
        keys = list(grid)
        cands += [{"params": dict(zip(keys, combo))} for combo in itertools.product(*(grid[k] for k in keys))]
    if not cands:
        raise SystemExit(f"--candidates {path}: no candidates; valid: a 'candidates' list or a 'grid' dict")
    out["candidates"] = cands
    return out


def check_selection(sel, method: str) -> dict:
    """The selection dict, checked for the keys this script reads (one-line SystemExit otherwise)."""
    if not isinstance(sel, dict):
        raise SystemExit(f"{method} has no validation_selection dict; valid: a method that declares one")
    missing = [k for k in ("dataset", "bits", "seeds", "candidates") if k not in sel]
    if missing:
        raise SystemExit(f"{method}.validation_selection lacks {', '.join(missing)}; valid: the format in "
                         "scripts/validate.py's docstring")
    bad = [c for c in sel["candidates"] if not isinstance(c, dict) or not isinstance(c.get("params"), dict)]
    if bad:
        raise SystemExit(f"{method}.validation_selection: candidate {bad[0]!r} has no params dict")
    return sel


def mean_std(values: list[float]) -> list:
    """[mean, sample std] rounded to 4 places; std None for a single value."""
    m = sum(values) / len(values)
    if len(values) < 2:
        return [round(m, 4), None]
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))
    return [round(m, 4), round(sd, 4)]


def run_selection(method: str, selection: dict, seeds=None, device: str = "cpu", progress=print,
                  on_candidate=None) -> dict:
    """Every candidate of ``selection`` for every seed; the selection back with measured figures."""
    sel = check_selection(selection, method)
    seeds = [int(s) for s in (seeds if seeds is not None else sel["seeds"])]
    base = dict(sel.get("base_params") or {})
    out = {k: v for k, v in sel.items() if k not in ("candidates",)}
    out.update({"method": method, "seeds": seeds, "candidates": []})
    for k, cand in enumerate(sel["candidates"]):
        runs = []
        for seed in seeds:
            res = validation_map(method, {**base, **cand["params"]}, sel["dataset"], int(sel["bits"]), seed,
                                 float(sel.get("mask", 0.0)), float(sel.get("fraction", 0.2)), device,
                                 bool(sel.get("match_steps", False)), sel.get("dataset_options"),
                                 database=sel.get("database", "fit"))
            runs.append({"seed": seed, "map_i2t": res["val_map_i2t"], "map_t2i": res["val_map_t2i"],
                         "fit_s": res["fit_s"]})
            progress(f"[{k + 1}/{len(sel['candidates'])}] {json.dumps(cand['params'])} seed {seed}: "
                     f"{res['val_map_i2t']:.4f} / {res['val_map_t2i']:.4f} ({res['fit_s']} s)")
        measured = {"params": cand["params"],
                    "map_i2t": mean_std([r["map_i2t"] for r in runs]),
                    "map_t2i": mean_std([r["map_t2i"] for r in runs]), "runs": runs}
        if "map_i2t" in cand:
            measured["recorded"] = {"map_i2t": cand.get("map_i2t"), "map_t2i": cand.get("map_t2i")}
        out["candidates"].append(measured)
        if on_candidate is not None:
            on_candidate(out)
    return out


def selection_table(result: dict) -> str:
    """Markdown: one row per candidate, mean ± std per direction, and the recorded figures where given."""
    def cell(ms):
        if not ms:
            return "n/a"
        return f"{ms[0]:.4f}" if ms[1] is None else f"{ms[0]:.4f} ± {ms[1]:.4f}"

    seeds = ",".join(str(s) for s in result["seeds"])
    database = result.get("database", "fit")
    lines = [f"{result['method']} on {result['dataset']}, {result['bits']} bits, mask {result.get('mask', 0.0)}, "
             f"seeds {seeds}, database {database}, validation MAP@all (tie-aware):", "",
             "| params | I→T | T→I | recorded I→T | recorded T→I |", "|---|---|---|---|---|"]
    for c in result["candidates"]:
        rec = c.get("recorded") or {}
        params = ", ".join(f"{k}={v}" for k, v in c["params"].items())
        lines.append(f"| {params} | {cell(c['map_i2t'])} | {cell(c['map_t2i'])} | {cell(rec.get('map_i2t'))} | "
                     f"{cell(rec.get('map_t2i'))} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default=None, help="one run of this method (see --set)")
    ap.add_argument("--selection", default=None, metavar="METHOD",
                    help="rerun every candidate of METHOD's validation_selection for every seed")
    ap.add_argument("--seeds", default=None, help="--selection: comma-separated seeds replacing the recorded ones")
    ap.add_argument("--candidates", type=Path, default=None, help="--selection: YAML/JSON file of candidates")
    ap.add_argument("--grid", action="append", default=[], metavar="PARAM=V1,V2",
                    help="--selection: candidates as a cartesian product (repeatable)")
    ap.add_argument("--dataset", default=None)
    ap.add_argument("--dataset-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a dataset option, e.g. image_features=gist (repeatable; with --selection: replaces "
                         "the selection's dataset_options)")
    ap.add_argument("--bits", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mask", type=float, default=None)
    ap.add_argument("--fraction", type=float, default=None, help="share of the training items held out as queries")
    ap.add_argument("--database", choices=DATABASES, default=None,
                    help="retrieve from the fit set (fit, the default) or from held-out items only (heldout)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--set", action="append", default=[], metavar="PARAM=VALUE",
                    help="override a constructor parameter (repeatable; with --selection: added to base_params)")
    ap.add_argument("--match-steps", action="store_true",
                    help="scale epochs so the fit makes as many SGD steps as on every training item")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    if (args.method is None) == (args.selection is None):
        raise SystemExit("give exactly one of --method (one run) and --selection (a method's whole selection)")
    sys.path.insert(0, str(ROOT))
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.selection:
        from methods import get_method

        sel = dict(check_selection(getattr(get_method(args.selection), "validation_selection", None), args.selection))
        if args.candidates:
            sel.update(load_candidates(args.candidates))
        if args.grid:
            sel["candidates"] = [{"params": p} for p in parse_grid(args.grid)]
        for key, value in (("dataset", args.dataset), ("bits", args.bits), ("mask", args.mask),
                           ("fraction", args.fraction), ("database", args.database)):
            if value is not None:
                sel[key] = value
        if args.dataset_option:
            sel["dataset_options"] = parse_overrides(args.dataset_option)
        if args.match_steps:
            sel["match_steps"] = True
        if args.set:
            sel["base_params"] = {**(sel.get("base_params") or {}), **parse_overrides(args.set)}
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else None

        def save(partial):
            if args.json:
                args.json.write_text(json.dumps(partial, indent=1))

        result = run_selection(args.selection, sel, seeds, args.device, progress=lambda m: print(m, flush=True),
                               on_candidate=save)
        print(selection_table(result))
        save(result)
        return 0
    out = validation_map(args.method, parse_overrides(args.set), args.dataset or "wiki", args.bits or 16, args.seed,
                         args.mask or 0.0, args.fraction or 0.2, args.device, args.match_steps,
                         parse_overrides(args.dataset_option), args.database or "fit")
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

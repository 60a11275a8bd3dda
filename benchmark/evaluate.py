"""One run, end to end: load data, mask training labels, fit, encode, rank, score.

The evaluator owns ranking and metrics; a method only turns features into codes. It is fitted on the
protocol's training rows only, with the masked labels already zeroed (it never sees a query item nor
a hidden label). Cross-modal directions:

* ``i2t`` (the paper's "Image vs. Text"): image queries ranked against the text database;
* ``t2i`` ("Text vs. Image"): text queries ranked against the image database.

Queries go through ``method.query_image`` / ``query_text`` and the database through
``encode_image`` / ``encode_text``. A method with its own distance
(``type(method).uses_own_distance()``) has ``distance=method.distance`` passed to every ranking
metric; the precision-recall curve within a Hamming radius only exists for Hamming ranking.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from benchmark.datacache import load_dataset_cached
from benchmark.environment import device_info
from benchmark.jsonable import to_jsonable
from benchmark.memory import PeakMemory
from benchmark.records import evaluation_digest
from benchmark.suites import RunSpec
from cmhcore.errors import InputError

__all__ = ["EvalConfig", "RunOutput", "DIRECTIONS", "evaluate_run", "validate_spec", "make_method", "compute_metrics"]

# direction -> (query modality, database modality)
DIRECTIONS = {"i2t": ("image", "text"), "t2i": ("text", "image")}


@dataclass(frozen=True)
class EvalConfig:
    """What is measured, and with which conventions (recorded with every run, not part of its id).

    * ``map``: MAP over the whole database, tie-aware (expected AP over the orders of tied items),
      queries without any relevant database item excluded (and counted);
    * ``map_stable``: the same with ties broken by database order (what MATLAB-era numbers used);
    * ``map@k`` for each ``topk``: normalised by the relevant items found in the top k;
    * ``precision_at_n`` at each ``precision_ns`` (values above the database size are dropped);
    * ``ndcg`` (``ndcg_k`` None = whole ranking);
    * ``pr_hamming``: precision and recall within each Hamming radius (Hamming-ranked methods only).
    """

    topk: tuple[int, ...] = (50, 100)
    precision_ns: tuple[int, ...] = (1, 5, 10, 20, 50, 100, 200, 500, 1000)
    ndcg_k: int | None = None
    ties: str = "average"
    no_relevant: str = "exclude"

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "evaluation") -> "EvalConfig":
        d = dict(d or {})
        valid = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - valid)
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")

        def ints(key):
            v = d[key]
            v = v if isinstance(v, list) else [v]
            if not v or not all(isinstance(x, int) and not isinstance(x, bool) and x > 0 for x in v):
                raise InputError(f"{where}: {key} must be a non-empty list of positive integers, got {d[key]!r}")
            return tuple(sorted(set(v)))

        kw: dict[str, Any] = {}
        if "topk" in d:
            kw["topk"] = ints("topk")
        if "precision_ns" in d:
            kw["precision_ns"] = ints("precision_ns")
        if "ndcg_k" in d:
            k = d["ndcg_k"]
            if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
                raise InputError(f"{where}: ndcg_k must be a positive integer or null, got {k!r}")
            kw["ndcg_k"] = k
        if "ties" in d:
            if d["ties"] not in ("average", "stable"):
                raise InputError(f"{where}: ties={d['ties']!r}; valid: average, stable")
            kw["ties"] = d["ties"]
        if "no_relevant" in d:
            if d["no_relevant"] not in ("exclude", "zero"):
                raise InputError(f"{where}: no_relevant={d['no_relevant']!r}; valid: exclude, zero")
            kw["no_relevant"] = d["no_relevant"]
        return cls(**kw)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["topk"] = list(self.topk)
        d["precision_ns"] = list(self.precision_ns)
        return d

    @property
    def digest(self) -> str:
        """What a record stores as ``evaluation_digest``: equal digests, the same metrics from the same codes."""
        return evaluation_digest(self.to_dict())


# ---------------------------------------------------------------------------------------- codes
def _check_codes(codes, n_rows: int, n_bits: int, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.shape != (n_rows, n_bits):
        raise RuntimeError(f"{what}: expected codes of shape ({n_rows}, {n_bits}), got {codes.shape}")
    if codes.dtype != np.int8 or not np.isin(codes, (-1, 1)).all():
        raise RuntimeError(f"{what}: codes must be int8 in {{-1, +1}}, got dtype {codes.dtype}")
    return codes


# ---------------------------------------------------------------------------------------- validation
def make_method(spec: RunSpec, device: str = "cpu"):
    """The spec's method, unfitted: its parameters, the spec's bits and seed, and ``device`` if it takes one."""
    from methods import get_method
    from methods import make_method as build

    cls = get_method(spec.method)
    kwargs = dict(spec.params)
    if "device" in cls._get_param_names():
        kwargs["device"] = device
    return build(spec.method, n_bits=spec.n_bits, random_state=spec.seed, **kwargs)


def validate_spec(spec: RunSpec, device: str = "cpu") -> None:
    """Everything about a spec that can be checked without loading data; one-line InputError.

    The runner calls this once per spec, before any run starts; a run itself does not repeat it."""
    import datasets

    if spec.dataset not in datasets.list_datasets():
        raise InputError(f"unknown dataset {spec.dataset!r}; valid: {', '.join(datasets.list_datasets())}")
    rate = spec.mask_rate
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise InputError(f"mask_rate={rate!r} is invalid; valid: a number in [0, 1)")
    if isinstance(spec.seed, bool) or not isinstance(spec.seed, int) or spec.seed < 0:
        raise InputError(f"seed={spec.seed!r} is invalid; valid: a non-negative integer")
    if device not in ("cpu", "auto") and not str(device).startswith(("cuda", "mps")):
        raise InputError(f"device={device!r} is invalid; valid: cpu, cuda, cuda:N or auto")
    method = make_method(spec, device)
    method.validate_params()  # declared parameter constraints (cmhcore.params), n_bits included


# ---------------------------------------------------------------------------------------- metrics
def _direction_metrics(q, db, ql, dl, config: EvalConfig, distance) -> dict:
    from benchmark import metrics as M

    n_db = int(np.asarray(dl).shape[0])
    main = M.mean_average_precision(q, db, ql, dl, ties=config.ties, no_relevant=config.no_relevant, distance=distance)
    stable = M.mean_average_precision(q, db, ql, dl, ties="stable", no_relevant=config.no_relevant, distance=distance)
    out: dict[str, Any] = {
        "map": float(main.value),
        "map_stable": float(stable.value),
        "n_queries": int(main.n_queries),
        "n_no_relevant": int(main.n_no_relevant),
        "ties": main.ties,
        "no_relevant": main.no_relevant,
    }
    for k in config.topk:
        if k <= n_db:
            res = M.mean_average_precision(q, db, ql, dl, topk=k, ties=config.ties, no_relevant=config.no_relevant, distance=distance)
            out[f"map@{k}"] = float(res.value)
    ns = [n for n in config.precision_ns if n <= n_db]
    if ns:
        prec = M.precision_at_n(q, db, ql, dl, ns, ties=config.ties, distance=distance, no_relevant=config.no_relevant)
        out["precision_at_n"] = {"n": ns, "precision": np.asarray(prec, dtype=float).tolist()}
    else:
        out["precision_at_n"] = None
    out["ndcg"] = float(M.ndcg(q, db, ql, dl, k=config.ndcg_k, ties=config.ties, distance=distance,
                               no_relevant=config.no_relevant))
    if distance is None:
        pr = M.precision_recall_hamming(q, db, ql, dl, no_relevant=config.no_relevant)
        out["pr_hamming"] = {key: np.asarray(pr[key], dtype=float).tolist() for key in ("radius", "precision", "recall")}
        out["pr_hamming"]["n_retrieving"] = np.asarray(pr.get("n_retrieving", []), dtype=int).tolist()
        out["pr_hamming"]["empty_retrieval"] = pr.get("empty_retrieval")
    else:
        out["pr_hamming"] = None  # a radius in Hamming space means nothing for a non-Hamming ranking
    return out


def compute_metrics(queries: dict, database: dict, query_labels, db_labels, config: EvalConfig,
                    distance=None) -> dict:
    """Metrics of both directions.

    ``queries`` / ``database`` map a modality ('image', 'text') to what is ranked (codes, or a
    method's query representation when ``distance`` is given).
    """
    return {
        direction: _direction_metrics(queries[qm], database[dm], query_labels, db_labels, config, distance)
        for direction, (qm, dm) in DIRECTIONS.items()
    }


# ---------------------------------------------------------------------------------------- one run
@dataclass
class RunOutput:
    """What a successful run produced (the runner turns it into a record)."""

    metrics: dict
    codes: dict[str, np.ndarray]
    query_repr: dict[str, np.ndarray]
    state: dict[str, np.ndarray]
    timings: dict
    memory: dict
    device: dict
    dataset: dict
    protocol: Any
    mask: dict
    method: dict
    extras: dict = field(default_factory=dict)
    data_checksum: str | None = None


def evaluate_run(spec: RunSpec, *, data_root=None, device: str = "cpu", config: EvalConfig | None = None,
                 log=None) -> RunOutput:
    """Run one spec (validated by the caller: :func:`validate_spec`); failures during the run propagate."""
    config = config or EvalConfig()
    say = log or (lambda msg: None)
    method = make_method(spec, device)
    cls = type(method)
    own_distance = cls.uses_own_distance()

    import datasets

    t0 = time.perf_counter()
    data = load_dataset_cached(spec.dataset, data_root, spec.dataset_options)
    raw_checksum = data.checksum  # the data files the spec names (see benchmark.datacache.data_checksum)
    if data.image_kind == "pixels" and not cls.accepts_pixels:
        # A method that cannot read pixels gets the dataset's hand-crafted features (GIST by default),
        # as its paper used; the record's dataset meta names the extractor and its cache key.
        options = {**datasets.default_image_features(spec.dataset), **spec.dataset_options}
        data = load_dataset_cached(spec.dataset, data_root, options)
        say(f"{spec.method} does not read pixels: image side = {data.meta.get('image_features')} features")
    protocol = data.protocol
    protocol.validate_for(data)
    load_s = time.perf_counter() - t0
    say(f"loaded {spec.dataset_label}: {data.n_items} items, protocol {protocol.name} {protocol.sizes} in {load_s:.2f}s")

    train_image, train_text, train_labels = data.subset(protocol.train)
    masked = datasets.mask_labels(train_labels, spec.mask_rate, spec.seed)
    say(f"mask rate {spec.mask_rate:g}: {masked.n_labeled} of {len(protocol.train)} training items keep their labels")
    q_image, q_text, q_labels = data.subset(protocol.query)
    d_image, d_text, d_labels = data.subset(protocol.database)

    with PeakMemory() as mem:
        t0 = time.perf_counter()
        method.fit(train_image, train_text, masked.labels, masked.labeled)
        fit_s = time.perf_counter() - t0
        say(f"fit {method!r} in {fit_s:.2f}s")

        t0 = time.perf_counter()
        codes = {
            "db_image": _check_codes(method.encode_image(d_image), d_labels.shape[0], spec.n_bits, "encode_image(database)"),
            "db_text": _check_codes(method.encode_text(d_text), d_labels.shape[0], spec.n_bits, "encode_text(database)"),
        }
        q_img_repr = method.query_image(q_image)
        q_txt_repr = method.query_text(q_text)
        if own_distance:
            # Keep the queries' codes too (the representation a custom distance ranks is not a code).
            codes["query_image"] = _check_codes(method.encode_image(q_image), q_labels.shape[0], spec.n_bits, "encode_image(query)")
            codes["query_text"] = _check_codes(method.encode_text(q_text), q_labels.shape[0], spec.n_bits, "encode_text(query)")
        else:
            codes["query_image"] = _check_codes(q_img_repr, q_labels.shape[0], spec.n_bits, "query_image(query)")
            codes["query_text"] = _check_codes(q_txt_repr, q_labels.shape[0], spec.n_bits, "query_text(query)")
        encode_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        distance = method.distance if own_distance else None
        metrics = compute_metrics(
            {"image": q_img_repr, "text": q_txt_repr},
            {"image": codes["db_image"], "text": codes["db_text"]},
            q_labels, d_labels, config, distance,
        )
        evaluate_s = time.perf_counter() - t0
    say(f"encoded in {encode_s:.2f}s, evaluated in {evaluate_s:.2f}s; "
        f"MAP i2t {metrics['i2t']['map']:.4f}, t2i {metrics['t2i']['map']:.4f}")

    gpu_peak = None
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            gpu_peak = torch.cuda.max_memory_allocated() / 2**20

    query_repr, state = {}, {}
    if own_distance:
        for name, rep in (("query_image_repr", q_img_repr), ("query_text_repr", q_txt_repr)):
            if isinstance(rep, np.ndarray) and rep.dtype != object:
                query_repr[name] = rep
        # what distance() needs besides its arguments (contract: Hasher.distance_state), for rescoring
        get_state = getattr(method, "distance_state", None)
        state = {k: np.asarray(v) for k, v in (get_state() if callable(get_state) else {}).items()}
    return RunOutput(
        metrics=metrics,
        codes=codes,
        query_repr=query_repr,
        state=state,
        timings={"load_s": load_s, "fit_s": fit_s, "encode_s": encode_s, "evaluate_s": evaluate_s},
        memory={"peak_rss_mb": mem.peak_mb, "start_rss_mb": mem.start_mb, "scope": mem.scope, "gpu_peak_mb": gpu_peak},
        device=device_info(method, device),
        dataset=data.describe(),
        protocol=protocol,
        mask={"rate": spec.mask_rate, "seed": spec.seed, "n_train": int(len(protocol.train)), "n_labeled": masked.n_labeled},
        method={
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "params": to_jsonable(method.get_params(), other="repr"),
            "uses_own_distance": own_distance,
            "needs_labels": bool(cls.needs_labels),
        },
        extras=to_jsonable(method.extras() if callable(getattr(method, "extras", None))
                           else getattr(method, "extras_", None) or {}, other="repr"),
        data_checksum=str(raw_checksum),
    )

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

import functools
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmark.errors import InputError
from benchmark.suites import RunSpec, canonical_json

__all__ = [
    "EvalConfig", "RunOutput", "DIRECTIONS", "evaluate_run", "validate_spec", "load_dataset_cached",
    "compute_metrics", "pack_codes", "unpack_codes", "environment", "PeakMemory",
]

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


# ---------------------------------------------------------------------------------------- data
@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_root: str | None, options_json: str):
    import datasets

    return datasets.load_dataset(name, data_root, **json.loads(options_json))


def load_dataset_cached(name: str, data_root=None, options: dict | None = None):
    """``datasets.load_dataset`` memoised per process (a suite reuses each dataset many times)."""
    root = None if data_root is None else str(data_root)
    return _load_cached(name, root, canonical_json(options or {}))


# ---------------------------------------------------------------------------------------- codes
def pack_codes(codes: np.ndarray) -> np.ndarray:
    """{-1,+1} int8 codes -> bits packed along each row (+1 -> 1)."""
    return np.packbits(np.asarray(codes) > 0, axis=1)


def unpack_codes(packed: np.ndarray, n_bits: int) -> np.ndarray:
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=n_bits)
    return np.where(bits > 0, np.int8(1), np.int8(-1))


def _check_codes(codes, n_rows: int, n_bits: int, what: str) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.shape != (n_rows, n_bits):
        raise RuntimeError(f"{what}: expected codes of shape ({n_rows}, {n_bits}), got {codes.shape}")
    if codes.dtype != np.int8 or not np.isin(codes, (-1, 1)).all():
        raise RuntimeError(f"{what}: codes must be int8 in {{-1, +1}}, got dtype {codes.dtype}")
    return codes


# ---------------------------------------------------------------------------------------- memory
class PeakMemory:
    """Peak resident memory of this process during a block.

    On Linux the kernel's high-water mark is reset first (``/proc/self/clear_refs``), so the figure is
    the block's own peak; elsewhere it is the process's lifetime peak (``scope`` says which). The peak
    includes what the process held when the block began (interpreter, libraries, the cached
    dataset): ``start_mb`` is that level, so ``peak_mb - start_mb`` is what the run added.
    """

    def __enter__(self):
        self.start_mb = _current_rss_mb()
        self.scope = "process"
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.scope = "run"
        except OSError:
            pass
        return self

    def __exit__(self, *exc):
        self.peak_mb = _peak_rss_mb(self.scope)
        return False


def _current_rss_mb() -> float | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss / 2**20
    except Exception:
        return None


def _peak_rss_mb(scope: str) -> float:
    if scope == "run":
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024.0
        except OSError:
            pass
    try:
        import resource  # POSIX only
    except ImportError:
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


# ---------------------------------------------------------------------------------------- environment
@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """Versions and git commit (read from package metadata: importing torch just to ask is slow)."""
    packages = {}
    for pkg in ("numpy", "scipy", "pandas", "scikit-learn", "torch", "numba", "joblib", "cmh-bench"):
        try:
            packages[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            packages[pkg] = None
    repo = Path(__file__).resolve().parent.parent
    git = {"commit": None, "dirty": None}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        if commit.returncode == 0:
            git["commit"] = commit.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                                    capture_output=True, text=True, timeout=10)
            git["dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "git": git,
    }


def _device_info(method, requested: str) -> dict:
    """Where the method ran: its own ``device`` (resolved) for torch methods, else the CPU."""
    info = {"requested": requested, "resolved": "cpu", "name": platform.processor() or platform.machine()}
    if "device" in type(method)._get_param_names():
        from methods.nets import resolve_device

        dev = resolve_device(getattr(method, "device", requested))
        info["resolved"] = str(dev)
        if dev.type == "cuda":
            import torch

            info["name"] = torch.cuda.get_device_name(dev)
    return info


# ---------------------------------------------------------------------------------------- validation
def _make(spec: RunSpec, device: str):
    from methods import get_method, make_method

    cls = get_method(spec.method)
    kwargs = dict(spec.params)
    if "device" in cls._get_param_names():
        kwargs["device"] = device
    method = make_method(spec.method, n_bits=spec.n_bits, random_state=spec.seed, **kwargs)
    method._validate_bits()
    return method


def validate_spec(spec: RunSpec, device: str = "cpu") -> None:
    """Everything about a spec that can be checked without loading data; one-line InputError."""
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
    _make(spec, device)


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
    timings: dict
    memory: dict
    device: dict
    dataset: dict
    protocol: Any
    mask: dict
    method: dict
    extras: dict = field(default_factory=dict)


def _json_safe(value, depth: int = 0):
    """Extras as JSON types (arrays -> lists); anything else becomes its repr."""
    if depth > 20:
        return repr(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, depth + 1) for v in value]
    if hasattr(value, "tolist"):  # torch tensors and friends
        try:
            return _json_safe(value.tolist(), depth + 1)
        except Exception:
            pass
    return repr(value)


def evaluate_run(spec: RunSpec, *, data_root=None, device: str = "cpu", config: EvalConfig | None = None,
                 log=None) -> RunOutput:
    """Run one spec. Input is validated before any work; failures during the run propagate."""
    config = config or EvalConfig()
    say = log or (lambda msg: None)
    validate_spec(spec, device)
    method = _make(spec, device)
    cls = type(method)
    own_distance = cls.uses_own_distance()

    import datasets

    t0 = time.perf_counter()
    data = load_dataset_cached(spec.dataset, data_root, spec.dataset_options)
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

    query_repr = {}
    if own_distance:
        for name, rep in (("query_image_repr", q_img_repr), ("query_text_repr", q_txt_repr)):
            if isinstance(rep, np.ndarray) and rep.dtype != object:
                query_repr[name] = rep
    return RunOutput(
        metrics=metrics,
        codes=codes,
        query_repr=query_repr,
        timings={"load_s": load_s, "fit_s": fit_s, "encode_s": encode_s, "evaluate_s": evaluate_s},
        memory={"peak_rss_mb": mem.peak_mb, "start_rss_mb": mem.start_mb, "scope": mem.scope, "gpu_peak_mb": gpu_peak},
        device=_device_info(method, device),
        dataset=data.describe(),
        protocol=protocol,
        mask={"rate": spec.mask_rate, "seed": spec.seed, "n_train": int(len(protocol.train)), "n_labeled": masked.n_labeled},
        method={
            "class": f"{cls.__module__}:{cls.__qualname__}",
            "params": _json_safe(method.get_params()),
            "uses_own_distance": own_distance,
            "needs_labels": bool(cls.needs_labels),
        },
        extras=_json_safe(method.extras() if callable(getattr(method, "extras", None))
                          else getattr(method, "extras_", None) or {}),
    )

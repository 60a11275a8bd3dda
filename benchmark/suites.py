"""Suites are data: YAML files that expand into frozen run specifications.

A suite file names datasets, methods (with keyword parameters), code lengths, label mask rates and
seeds; :func:`expand_suite` turns it into :class:`RunSpec` objects, one per element of the product
``datasets x methods x parameter grid x bits x mask rates x seeds``. Everything is validated before
any run starts and a bad file fails with one line naming the problem.

Schema (top level)::

    name: quick                 # optional, defaults to the file name
    description: one line       # optional
    evaluation: {...}           # optional, see benchmark.evaluate.EvalConfig (not part of run ids)
    datasets: [wiki, {name: synthetic, options: {n_items: 600}}]
    methods:  [random, {name: scm-orth, params: {some_param: [1, 2]}}]
    bits: [16, 32]
    mask_rates: [0.0, 0.7]
    seeds: [0]
    experiments:                # optional: several grids; each inherits the top-level keys it omits
      - {name: lambda, methods: [...], bits: [16]}

A list value of a method parameter expands into a grid; to pass a list as one value, wrap it in
another list (``hidden: [[512, 256]]``). ``n_bits``, ``random_state`` and ``device`` are set by the
runner and may not appear in ``params``.

A run's id is a hash of its canonical spec: method, the method's full parameter set (defaults
filled in from the class, so a changed default is a new run), dataset and options, bits, mask rate
and seed. Execution settings (device, threads, evaluation options) are recorded, not hashed.
"""
from __future__ import annotations

import hashlib
import inspect
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from benchmark.jsonable import to_jsonable
from cmhcore.errors import InputError

__all__ = [
    "RunSpec", "Suite", "Expansion", "SUITES_DIR", "list_suites", "suite_path", "load_suite",
    "expand_suite", "filter_specs", "canonical_json", "RUNNER_PARAMS",
]

SUITES_DIR = Path(__file__).resolve().parent / "suites"

# Keyword arguments the runner sets itself; a suite may not override them.
RUNNER_PARAMS = ("n_bits", "random_state", "device")

_TOP_KEYS = {"name", "description", "evaluation", "datasets", "methods", "bits", "mask_rates", "seeds", "experiments"}
_GRID_KEYS = ("datasets", "methods", "bits", "mask_rates", "seeds")
_EXPERIMENT_KEYS = {"name", "description", *_GRID_KEYS}
_METHOD_KEYS = {"name", "params", "label"}
_DATASET_KEYS = {"name", "options", "label"}


# ---------------------------------------------------------------------------------------- canonical form
def _canonical(value: Any, where: str) -> Any:
    """Plain JSON types with a stable representation; non-finite numbers and other types are refused."""
    return to_jsonable(value, nonfinite="raise", where=where)


def canonical_json(value: Any) -> str:
    """The one serialisation used for hashing: sorted keys, no whitespace."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _short(params: dict) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(params.items()))


# ---------------------------------------------------------------------------------------- the run spec
@dataclass(frozen=True)
class RunSpec:
    """One run: a method with its parameters on one dataset, code length, mask rate and seed.

    ``params`` is the method's full parameter set (defaults filled in), without the runner's own
    ``n_bits`` / ``random_state`` / ``device``; ``label`` names the row in tables (method name plus the
    parameters that differ from the class defaults). Both are stored as canonical JSON strings so the
    spec is hashable and frozen.
    """

    method: str
    params_json: str
    dataset: str
    options_json: str
    n_bits: int
    mask_rate: float
    seed: int
    label: str = field(compare=False)
    dataset_label: str = field(compare=False)

    @property
    def params(self) -> dict:
        return json.loads(self.params_json)

    @property
    def dataset_options(self) -> dict:
        return json.loads(self.options_json)

    def canonical(self) -> dict:
        return {
            "method": self.method,
            "params": self.params,
            "dataset": self.dataset,
            "dataset_options": self.dataset_options,
            "n_bits": self.n_bits,
            "mask_rate": self.mask_rate,
            "seed": self.seed,
        }

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.canonical()).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {**self.canonical(), "label": self.label, "dataset_label": self.dataset_label, "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: dict) -> "RunSpec":
        return cls(
            method=d["method"], params_json=canonical_json(d["params"]), dataset=d["dataset"],
            options_json=canonical_json(d["dataset_options"]), n_bits=int(d["n_bits"]),
            mask_rate=float(d["mask_rate"]), seed=int(d["seed"]),
            label=d.get("label", d["method"]), dataset_label=d.get("dataset_label", d["dataset"]),
        )

    def describe(self) -> str:
        return f"{self.label} on {self.dataset_label}, {self.n_bits} bits, mask {self.mask_rate:g}, seed {self.seed}"


# ---------------------------------------------------------------------------------------- loading YAML
class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last one)."""


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise InputError(f"duplicate key {key!r} at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    source: str
    data: dict


def list_suites() -> list[str]:
    """Names of the suites shipped with the package."""
    return sorted(p.stem for p in SUITES_DIR.glob("*.yaml"))


def suite_path(name_or_file: str | Path) -> Path:
    """A shipped suite's name, or a path to a YAML file."""
    text = str(name_or_file)
    candidate = SUITES_DIR / f"{text}.yaml"
    if "/" not in text and "\\" not in text and not text.endswith((".yaml", ".yml")):
        if candidate.is_file():
            return candidate
        raise InputError(f"unknown suite {text!r}; valid: {', '.join(list_suites())} or a path to a .yaml file")
    path = Path(text)
    if not path.is_file():
        raise InputError(f"suite file {text!r} does not exist; valid: {', '.join(list_suites())} or a path to a .yaml file")
    return path


def load_suite(name_or_file: str | Path) -> Suite:
    """Read and schema-check a suite (names are checked against the registries by :func:`expand_suite`)."""
    path = suite_path(name_or_file)
    where = f"suite {path.name}"
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InputError(f"{where}: invalid YAML{line}: {problem}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{where}: cannot be read ({exc})") from None
    if not isinstance(data, dict):
        raise InputError(f"{where}: the top level must be a mapping with keys {', '.join(sorted(_TOP_KEYS))}")
    _check_keys(data, _TOP_KEYS, where)
    name = data.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise InputError(f"{where}: 'name' must be a non-empty string")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise InputError(f"{where}: 'description' must be a string")
    if "evaluation" in data and not isinstance(data["evaluation"], dict):
        raise InputError(f"{where}: 'evaluation' must be a mapping")
    if "experiments" in data:
        exps = data["experiments"]
        if not isinstance(exps, list):
            raise InputError(f"{where}: 'experiments' must be a list of mappings")
        if not exps:
            raise InputError(f"{where}: 'experiments' is an empty list; give at least one experiment or drop the key")
        for i, exp in enumerate(exps):
            if not isinstance(exp, dict):
                raise InputError(f"{where}: experiments[{i}] must be a mapping")
            _check_keys(exp, _EXPERIMENT_KEYS, f"{where}: experiments[{i}]")
    return Suite(name, description, str(path), data)


def _check_keys(mapping: dict, valid: set, where: str) -> None:
    unknown = sorted(str(k) for k in mapping if k not in valid)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; valid: {', '.join(sorted(valid))}")


# ---------------------------------------------------------------------------------------- grids
def _as_list(value, key: str, where: str, check: Callable[[Any], bool], what: str) -> list:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise InputError(f"{where}: '{key}' is an empty list (empty grid); give at least one value")
    for v in values:
        if not check(v):
            raise InputError(f"{where}: '{key}' has {v!r} ({type(v).__name__}); valid: {what}")
    if len(set(map(repr, values))) != len(values):
        raise InputError(f"{where}: '{key}' lists a value twice: {values}")
    return values


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_rate(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1


def _entries(value, key: str, where: str, valid_keys: set, sub: str) -> list[tuple[str, dict, str | None]]:
    """Method or dataset entries: a name, or a mapping {name, params|options, label}."""
    values = _as_list(value, key, where, lambda v: isinstance(v, (str, dict)), f"a name or a mapping with keys {', '.join(sorted(valid_keys))}")
    out = []
    for v in values:
        if isinstance(v, str):
            if not v:
                raise InputError(f"{where}: '{key}' has an empty name")
            out.append((v, {}, None))
            continue
        _check_keys(v, valid_keys, f"{where}: {key} entry {v.get('name', v)!r}")
        name = v.get("name")
        if not isinstance(name, str) or not name:
            raise InputError(f"{where}: a '{key}' entry has no 'name' (a non-empty string): {v!r}")
        extra = v.get(sub, {})
        if extra is None:
            extra = {}
        if not isinstance(extra, dict):
            raise InputError(f"{where}: {key} entry {name!r}: '{sub}' must be a mapping of keyword arguments, got {type(extra).__name__}")
        for k in extra:
            if not isinstance(k, str):
                raise InputError(f"{where}: {key} entry {name!r}: '{sub}' keys must be strings, got {k!r}")
        label = v.get("label")
        if label is not None and (not isinstance(label, str) or not label):
            raise InputError(f"{where}: {key} entry {name!r}: 'label' must be a non-empty string, got {label!r}")
        out.append((name, extra, label))
    return out


def _param_grid(name: str, params: dict, where: str) -> list[dict]:
    """A list value expands into a grid; a list wrapped in a list is one list value."""
    for key in RUNNER_PARAMS:
        if key in params:
            raise InputError(f"{where}: method {name!r}: parameter {key!r} is set by the runner (bits/seeds/--device), not in params")
    keys = sorted(params)
    axes = []
    for k in keys:
        v = params[k]
        if isinstance(v, list):
            if not v:
                raise InputError(f"{where}: method {name!r}: parameter {k!r} is an empty list (empty grid); give at least one value")
            axes.append(v)
        else:
            axes.append([v])
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


# ---------------------------------------------------------------------------------------- expansion
@dataclass
class Expansion:
    """The result of expanding a suite: specs to run, plus one line per skipped part.

    ``skipped_datasets`` maps each skipped dataset name to the one-line reason (files absent)."""

    suite: Suite
    specs: list[RunSpec]
    skipped: list[str]
    evaluation: dict
    skipped_datasets: dict[str, str] = field(default_factory=dict)


def _registered_names() -> set[str]:
    """Built-in names plus installed plug-ins' entry points, without importing any method."""
    from importlib import metadata

    from methods import ENTRY_POINT_GROUP, REGISTRY

    names = set(REGISTRY)
    try:
        names |= {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)}
    except Exception:  # broken metadata must not break the suite
        pass
    return names


def _method_class(name: str, where: str):
    """(class or None, reason). Unknown names fail; registered but unimportable methods are skipped.

    Only the named method's module is imported (importing every method would pull in torch).
    """
    from methods import get_method, method_info, name_clashes

    clash = name_clashes().get(name)
    if clash:
        raise InputError(f"{where}: {clash}")
    known = _registered_names()
    if name in known:
        info = method_info(name)
        if not info.available:
            return None, info.reason
        return get_method(name), ""
    if ":" not in name:
        raise InputError(f"{where}: unknown method {name!r}; valid: {', '.join(sorted(known))} or a 'module:Class' plug-in")
    try:
        return get_method(name), ""
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except Exception as exc:  # a plug-in named explicitly must import: that is the user's input
        raise InputError(f"{where}: method {name!r} cannot be imported ({type(exc).__name__}: {exc})") from None


def _defaults(cls) -> dict:
    sig = inspect.signature(cls.__init__)
    return {p.name: p.default for p in sig.parameters.values() if p.default is not inspect.Parameter.empty}


def _resolve_method(name: str, cls, params: dict, bits: list[int], where: str, label: str | None = None) -> tuple[str, str]:
    """Dry-instantiate for every code length; returns (canonical full params JSON, label).

    The label is the entry's ``label`` (default: the method name) plus the parameters that differ
    from the class defaults.
    """
    from methods import make_method

    defaults_raw = _defaults(cls)
    # 1 and 1.0 are the same setting of a float parameter: one run id, not two.
    params = {k: (float(v) if isinstance(defaults_raw.get(k), float) and _is_int(v) else v) for k, v in params.items()}

    param_names = set(cls._get_param_names())
    for key in ("n_bits", "random_state"):
        if key not in param_names:
            raise InputError(f"{where}: method {name!r} has no {key!r} parameter; every Hasher must take n_bits and random_state")
    resolved = None
    for b in bits:
        try:
            inst = make_method(name, n_bits=b, random_state=0, **params)
            inst.validate_params()  # declared constraints, n_bits against bits_range included
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        except Exception as exc:  # a constructor that raises is a bad parameter set as far as the suite can tell
            raise InputError(f"{where}: method {name!r} with params {params!r} cannot be created ({type(exc).__name__}: {exc})") from None
        resolved = {k: v for k, v in inst.get_params().items() if k not in RUNNER_PARAMS}
    full = _canonical(resolved, f"{where}: method {name!r}")
    defaults = {}
    for k, v in defaults_raw.items():
        if k not in RUNNER_PARAMS:
            try:
                defaults[k] = _canonical(v, where)
            except InputError:
                defaults[k] = repr(v)
    changed = {k: v for k, v in full.items() if k not in defaults or defaults[k] != v}
    base = label or name
    return canonical_json(full), (f"{base}({_short(changed)})" if changed else base)


def _dataset_state(name: str, options: dict, data_root, where: str) -> tuple[bool, str]:
    import datasets as ds

    if name not in ds.list_datasets():
        raise InputError(f"{where}: unknown dataset {name!r}; valid: {', '.join(ds.list_datasets())}")
    _check_dataset_options(name, options, where)
    try:
        present, reason = ds.dataset_status(name, data_root, **options)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    except ImportError as exc:
        return False, f"its loader is unavailable ({exc})"
    except TypeError as exc:
        raise InputError(f"{where}: dataset {name!r}: bad options {options!r} ({exc})") from None
    return bool(present), reason or "its files are absent"


def _check_dataset_options(name: str, options: dict, where: str) -> None:
    """Options against the dataset's declared ones (before any work): a typo fails in one line."""
    import datasets

    try:
        datasets.check_options(name, options)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def expand_suite(suite: Suite | str | Path, data_root=None, extra_methods=()) -> Expansion:
    """Validate a suite against the method and dataset registries and expand it into run specs.

    Methods that are registered but cannot be imported, and datasets whose files are absent, are
    skipped with one line each. Any other problem raises :class:`InputError` before any run starts.
    ``extra_methods`` (names or ``module:Class`` plug-ins, default parameters) join every grid of
    the suite that does not list them already.
    """
    if not isinstance(suite, Suite):
        suite = load_suite(suite)
    data = suite.data
    where = f"suite {suite.name}"
    experiments = data.get("experiments") or [{}]
    skipped: list[str] = []
    skipped_datasets: dict[str, str] = {}
    specs: dict[str, RunSpec] = {}
    method_cache: dict[str, tuple] = {}
    dataset_cache: dict[str, tuple] = {}
    for i, exp in enumerate(experiments):
        ewhere = where if "experiments" not in data else f"{where}: experiment {exp.get('name', i)!r}"
        grid = {}
        for key in _GRID_KEYS:
            if key in exp:
                grid[key] = exp[key]
            elif key in data:
                grid[key] = data[key]
            else:
                raise InputError(f"{ewhere}: missing key {key!r}; a suite needs {', '.join(_GRID_KEYS)}")
        bits = _as_list(grid["bits"], "bits", ewhere, lambda v: _is_int(v) and v > 0, "positive integers")
        mask_rates = [float(r) for r in _as_list(grid["mask_rates"], "mask_rates", ewhere, _is_rate, "numbers in [0, 1)")]
        seeds = _as_list(grid["seeds"], "seeds", ewhere, lambda v: _is_int(v) and v >= 0, "non-negative integers")
        methods = _entries(grid["methods"], "methods", ewhere, _METHOD_KEYS, "params")
        listed = {m[0] for m in methods}
        methods += [(m, {}, None) for m in extra_methods if m not in listed]
        dsets = _entries(grid["datasets"], "datasets", ewhere, _DATASET_KEYS, "options")

        resolved_methods = []
        for name, params, mlabel in methods:
            if name not in method_cache:
                method_cache[name] = _method_class(name, ewhere)
            cls, reason = method_cache[name]
            if cls is None:
                line = f"skipped method {name}: unavailable ({reason})"
                if line not in skipped:
                    skipped.append(line)
                continue
            for combo in _param_grid(name, params, ewhere):
                resolved_methods.append((name, *_resolve_method(name, cls, combo, bits, ewhere, mlabel)))

        resolved_datasets = []
        for name, options, dlabel_given in dsets:
            options = _canonical(options, f"{ewhere}: dataset {name!r} options")
            if options.get("database") == "train":
                # the standard protocol, spelled out: the same runs (and run ids) as leaving it out
                options = {k: v for k, v in options.items() if k != "database"}
            key = canonical_json([name, options])
            if key not in dataset_cache:
                dataset_cache[key] = _dataset_state(name, options, data_root, ewhere)
            present, reason = dataset_cache[key]
            label = dlabel_given or (f"{name}({_short(options)})" if options else name)
            if not present:
                line = f"skipped dataset {label}: {reason}"
                if line not in skipped:
                    skipped.append(line)
                skipped_datasets.setdefault(name, f"dataset {label} is absent: {reason}")
                continue
            resolved_datasets.append((name, canonical_json(options), label))

        for (dname, options_json, dlabel), (mname, params_json, mlabel), b, r, s in itertools.product(
            resolved_datasets, resolved_methods, bits, mask_rates, seeds
        ):
            spec = RunSpec(mname, params_json, dname, options_json, int(b), float(r), int(s), mlabel, dlabel)
            specs.setdefault(spec.run_id, spec)  # the same run in two experiments is one run

    evaluation = data.get("evaluation", {}) or {}
    return Expansion(suite, list(specs.values()), skipped, evaluation, skipped_datasets)


def filter_specs(specs: list[RunSpec], *, methods=None, datasets=None, bits=None, mask_rates=None,
                 seeds=None, suite_name: str = "suite") -> list[RunSpec]:
    """Narrow specs; each filter value must match at least one spec, else one-line InputError."""
    out = list(specs)

    def narrow(values, key: str, get, norm=lambda v: v):
        nonlocal out
        if values is None:
            return
        present = sorted({get(s) for s in out})
        wanted = [norm(v) for v in values]
        missing = [v for v in wanted if not any(v == g for g in present) and not (key == "method" and any(v == s.label for s in out))]
        if missing:
            raise InputError(
                f"--{key.replace('_', '-')}s {','.join(map(str, missing))} matches no run of {suite_name}; "
                f"valid: {', '.join(map(str, present))}"
            )
        out = [s for s in out if get(s) in wanted or (key == "method" and s.label in wanted)]

    narrow(methods, "method", lambda s: s.method)
    narrow(datasets, "dataset", lambda s: s.dataset)
    narrow(bits, "bit", lambda s: s.n_bits, int)
    narrow(mask_rates, "mask_rate", lambda s: s.mask_rate, float)
    narrow(seeds, "seed", lambda s: s.seed, int)
    return out

"""Cross-modal hashing methods and their registry.

A method is found by name (``get_method("scm-orth")``), by a ``module:Class`` string
(``get_method("mypkg.hashers:MyHasher")``), or through the ``cmh_bench.methods`` entry-point
group of an installed package. Modules are imported lazily: a method whose module cannot be
imported (a missing optional dependency, or any exception a broken plug-in raises) is reported as
unavailable with a one-line reason, and the rest of the suite still runs. An entry point may not
reuse a built-in name: the clash is an error naming both.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib import metadata

from cmhcore.errors import InputError
from datasets.features import register_network_features
from methods.base import Hasher, binarize, clone

__all__ = ["Hasher", "binarize", "clone", "get_method", "list_methods", "method_info", "make_method", "name_clashes",
           "REGISTRY"]

ENTRY_POINT_GROUP = "cmh_bench.methods"


def _cnnf_fc7(images, **kw):
    from methods.extractors import cnnf_fc7_features  # torch loads only when features are extracted

    return cnnf_fc7_features(images, **kw)


register_network_features("cnnf-fc7", _cnnf_fc7)

# name -> "module:Class". Built-in methods are listed here so that `list` can report the ones that
# cannot be imported (and why) instead of hiding them.
REGISTRY: dict[str, str] = {
    "random": "methods.random_projection:RandomProjection",
    "cmssh": "methods.cmssh:CMSSH",
    "scm-orth": "methods.scm:SCMOrth",
    "scm-seq": "methods.scm:SCMSeq",
    "seph-rnd": "methods.seph:SePHRnd",
    "seph-km": "methods.seph:SePHKm",
    "rdcmh": "methods.rdcmh:RDCMH",
    "rdcmh-nw": "methods.rdcmh:RDCMH_NW",
    "rdcmh-nd": "methods.rdcmh:RDCMH_ND",
    "rdcmh-ns": "methods.rdcmh:RDCMH_NS",
    "rdcmh-nj": "methods.rdcmh:RDCMH_NJ",
    "dcmh": "methods.dcmh:DCMH",
    "chn": "methods.chn:CHN",
    "cdq": "methods.cdq:CDQ",
}


@dataclass(frozen=True)
class MethodInfo:
    name: str
    target: str
    available: bool
    reason: str = ""


def _entry_points() -> dict[str, str]:
    try:
        eps = metadata.entry_points(group=ENTRY_POINT_GROUP)
    except Exception:  # pragma: no cover - broken metadata must not break the suite
        return {}
    return {ep.name: ep.value for ep in eps}


def _all_targets() -> dict[str, str]:
    targets = dict(REGISTRY)
    for name, value in _entry_points().items():
        targets.setdefault(name, value)
    return targets


def name_clashes() -> dict[str, str]:
    """Entry points that reuse a built-in name -> a one-line error naming both."""
    return {name: (f"method name {name!r} is both the built-in {REGISTRY[name]} and the entry point {value} "
                   f"(group {ENTRY_POINT_GROUP}); rename the entry point")
            for name, value in _entry_points().items() if name in REGISTRY}


def _import_target(target: str):
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise InputError(f"method {target!r}: a plug-in must be given as 'module:Class'")
    module = importlib.import_module(module_name)
    try:
        cls = getattr(module, attr)
    except AttributeError:
        raise InputError(f"method {target!r}: module {module_name!r} has no attribute {attr!r}") from None
    if not (isinstance(cls, type) and issubclass(cls, Hasher)):
        raise InputError(f"method {target!r}: {attr} is not a subclass of methods.Hasher")
    return cls


def get_method(name: str) -> type[Hasher]:
    """The Hasher class registered under ``name``, or named by a ``module:Class`` string.

    Any exception raised while importing the method's module becomes a one-line InputError naming
    the method and the error."""
    targets = _all_targets()
    clash = name_clashes().get(name)
    if clash:
        raise InputError(clash)
    if name in targets:
        target = targets[name]
    elif ":" in name:
        target = name
    else:
        raise InputError(f"unknown method {name!r}; valid: {', '.join(sorted(targets))} or a 'module:Class' plug-in")
    try:
        return _import_target(target)
    except InputError:
        raise
    except ImportError as exc:
        raise InputError(f"method {name!r} is unavailable: {exc}") from None
    except (Exception, SystemExit) as exc:  # a broken plug-in must not take the whole suite down
        where = "" if target == name else f" ({target})"
        raise InputError(f"method {name!r}{where} cannot be imported: {type(exc).__name__}: {exc}") from None


def make_method(name: str, **params) -> Hasher:
    """Instantiate a method by name with keyword parameters (unknown keywords fail in one line)."""
    cls = get_method(name)
    valid = set(cls._get_param_names())
    unknown = sorted(set(params) - valid)
    if unknown:
        raise InputError(f"method {name!r}: unknown parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return cls(**params)


def method_info(name: str) -> MethodInfo:
    target = _all_targets().get(name, name)
    try:
        get_method(name)
    except InputError as exc:
        return MethodInfo(name, target, False, str(exc))
    return MethodInfo(name, target, True)


def list_methods(available_only: bool = False) -> list[MethodInfo]:
    infos = [method_info(n) for n in sorted(_all_targets())]
    return [i for i in infos if i.available] if available_only else infos

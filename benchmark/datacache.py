"""Datasets memoised per process: a suite reuses each dataset (with its options) for many runs."""
from __future__ import annotations

import functools
import json

from benchmark.suites import canonical_json

__all__ = ["load_dataset_cached", "data_checksum"]


@functools.lru_cache(maxsize=4)
def _load_cached(name: str, data_root: str | None, options_json: str):
    import datasets

    return datasets.load_dataset(name, data_root, **json.loads(options_json))


def load_dataset_cached(name: str, data_root=None, options: dict | None = None):
    """``datasets.load_dataset`` memoised per process, keyed by name, data root and canonical options."""
    root = None if data_root is None else str(data_root)
    return _load_cached(name, root, canonical_json(options or {}))


def data_checksum(name: str, data_root=None, options: dict | None = None) -> str:
    """The checksum of the data files a spec names (its dataset with its own options, before any
    feature extraction a method may add): what a record's ``data_checksum`` is compared with."""
    return str(load_dataset_cached(name, data_root, options).checksum)

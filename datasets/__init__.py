"""Datasets of the suite and where their files are looked for.

``load_dataset(name, data_root=None, **options)`` returns a :class:`~datasets.base.Dataset` with its
standard protocol. The data root comes from the argument, else the ``CMH_DATA_ROOT`` environment
variable, else ``./data``. Wiki is bundled inside the package and needs no data root.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from cmhcore.errors import InputError
from datasets.base import Dataset, MaskedLabels, Protocol, mask_labels, random_protocol

__all__ = [
    "Dataset", "Protocol", "MaskedLabels", "mask_labels", "random_protocol",
    "load_dataset", "get_loader", "list_datasets", "dataset_status", "resolve_data_root", "DATA_ROOT_ENV",
    "default_image_features",
]

DATA_ROOT_ENV = "CMH_DATA_ROOT"

# name -> ("module", loader function, presence function). A loader takes (data_root: Path, **options)
# and returns a Dataset; the presence function takes the same arguments and returns
# (files present?, one-line reason), without loading, so `list` and suites can skip absent data.
LOADERS: dict[str, tuple[str, str, str]] = {
    "wiki": ("datasets.wiki", "load", "files_present"),
    "mirflickr25k-mini": ("datasets.mirflickr_mini", "load", "files_present"),
    "mirflickr25k": ("datasets.mirflickr", "load", "files_present"),
    "nuswide-tc10": ("datasets.nuswide", "load_tc10", "files_present_tc10"),
    "nuswide-tc21": ("datasets.nuswide", "load_tc21", "files_present_tc21"),
    "synthetic": ("datasets.synthetic", "load", "files_present"),
}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path("data")


def _loader(name: str, which: int):
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; valid: {', '.join(LOADERS)}")
    entry = LOADERS[name]
    return getattr(importlib.import_module(entry[0]), entry[which])


def get_loader(name: str):
    """The loader function of a dataset name (for option checking before any work)."""
    return _loader(name, 1)


def load_dataset(name: str, data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a dataset by name (see ``LOADERS``) with its standard protocol.

    ``image_features="gist"`` or ``"cnnf-fc7"`` (with ``gist_size``, or ``image_weights``/``cnnf_size``/
    ``feature_device``) replaces a pixel image side with cached features (:mod:`datasets.features`);
    the other options go to the dataset's loader.
    """
    from datasets.features import apply_image_features, split_feature_options

    options, feature = split_feature_options(options)
    dataset = _loader(name, 1)(resolve_data_root(data_root), **options)
    return dataset if feature is None else apply_image_features(dataset, feature)


def dataset_status(name: str, data_root: str | os.PathLike | None = None, **options) -> tuple[bool, str]:
    """(files present?, one-line reason when not) without loading the data."""
    from datasets.features import feature_status, split_feature_options

    options, feature = split_feature_options(options)
    present, reason = _loader(name, 2)(resolve_data_root(data_root), **options)
    return feature_status(feature) if present and feature is not None else (present, reason)


def default_image_features(name: str) -> dict:
    """Feature options for methods that cannot read this dataset's pixels (the shallow ones).

    A loader module may declare ``DEFAULT_IMAGE_FEATURES``; otherwise 512-d GIST, the hand-crafted image
    feature that SCM and SePH used on MIRFlickr and NUS-WIDE.
    """
    module = importlib.import_module(LOADERS[name][0]) if name in LOADERS else None
    return dict(getattr(module, "DEFAULT_IMAGE_FEATURES", {"image_features": "gist"}))


def list_datasets() -> list[str]:
    return list(LOADERS)

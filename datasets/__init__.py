"""Datasets of the suite and where their files are looked for.

``load_dataset(name, data_root=None, **options)`` returns a :class:`~datasets.base.Dataset` with its
standard protocol. The data root comes from the argument, else the ``CMH_DATA_ROOT`` environment
variable, else ``./data``. Wiki is bundled inside the package and needs no data root.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path

from benchmark.errors import InputError
from datasets.base import Dataset, MaskedLabels, Protocol, mask_labels, random_protocol

__all__ = [
    "Dataset", "Protocol", "MaskedLabels", "mask_labels", "random_protocol",
    "load_dataset", "list_datasets", "dataset_status", "resolve_data_root", "DATA_ROOT_ENV",
]

DATA_ROOT_ENV = "CMH_DATA_ROOT"

# name -> "module:function". Each loader takes (data_root: Path, **options) and returns a Dataset.
# Each module also defines `required_files(data_root, **options) -> list[Path]` (alternatives allowed
# through `files_present`), used by `list` to say whether the files are there without loading them.
LOADERS: dict[str, str] = {
    "wiki": "datasets.wiki:load",
    "mirflickr25k": "datasets.mirflickr:load",
    "nuswide-tc10": "datasets.nuswide:load_tc10",
    "nuswide-tc21": "datasets.nuswide:load_tc21",
    "synthetic": "datasets.synthetic:load",
}


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path("data")


def _loader(name: str):
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; valid: {', '.join(LOADERS)}")
    module_name, _, func = LOADERS[name].partition(":")
    return importlib.import_module(module_name), func


def load_dataset(name: str, data_root: str | os.PathLike | None = None, **options) -> Dataset:
    """Load a dataset by name (see ``LOADERS``) with its standard protocol."""
    module, func = _loader(name)
    return getattr(module, func)(resolve_data_root(data_root), **options)


def dataset_status(name: str, data_root: str | os.PathLike | None = None, **options) -> tuple[bool, str]:
    """(files present?, one-line reason when not) without loading the data."""
    module, _ = _loader(name)
    check = getattr(module, "files_present", None)
    if check is None:
        return True, ""
    return check(resolve_data_root(data_root), **options)


def list_datasets() -> list[str]:
    return list(LOADERS)

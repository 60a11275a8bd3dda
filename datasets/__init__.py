"""Datasets of the suite and where their files are looked for.

``load_dataset(name, data_root=None, **options)`` returns a :class:`~datasets.base.Dataset` with its
standard protocol. The data root comes from the argument, else the ``CMH_DATA_ROOT`` environment
variable, else ``./data``. Wiki is bundled inside the package and needs no data root.

Each loader module declares ``OPTION_CONSTRAINTS`` (``{option: [allowed forms]}``, the forms of
:mod:`cmhcore.params`); :func:`check_options` checks a dataset's options against them, plus the
image-feature options (:data:`datasets.features.FEATURE_OPTION_CONSTRAINTS`) unless the module
declares ``PIXELS = False``. Loaders call it first, so a typo or a bad value fails in one line before
any file is read.
"""
from __future__ import annotations

import importlib
import os

from cmhcore.errors import InputError
from cmhcore.params import check_params
from datasets._io import DATA_ROOT_ENV, resolve_data_root
from datasets.base import Dataset, MaskedLabels, Protocol, mask_labels, random_protocol

__all__ = [
    "Dataset", "Protocol", "MaskedLabels", "mask_labels", "random_protocol",
    "load_dataset", "get_loader", "list_datasets", "dataset_status", "resolve_data_root", "DATA_ROOT_ENV",
    "default_image_features", "check_options", "declared_options", "option_constraints",
]

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


def _loader(name: str, which: int):
    entry = _entry(name)
    return getattr(importlib.import_module(entry[0]), entry[which])


def option_constraints(name: str, *, features: bool = True) -> dict[str, list]:
    """``{option: [allowed forms]}`` of a registered dataset: its module's ``OPTION_CONSTRAINTS``, with the
    image-feature options' forms added when ``features`` (an option both declare admits either's forms)."""
    module = importlib.import_module(_entry(name)[0])
    own = getattr(module, "OPTION_CONSTRAINTS", None)
    if own is None:
        raise TypeError(f"dataset module {module.__name__} declares no OPTION_CONSTRAINTS")
    merged = {k: list(v) for k, v in own.items()}
    if features and getattr(module, "PIXELS", True):
        from datasets.features import FEATURE_OPTION_CONSTRAINTS

        for key, forms in FEATURE_OPTION_CONSTRAINTS.items():
            merged[key] = merged.get(key, []) + [f for f in forms if f not in merged.get(key, [])]
    return merged


def declared_options(name: str) -> tuple[str, ...]:
    """The option names a dataset accepts."""
    return tuple(option_constraints(name))


def check_options(name: str, options: dict, *, features: bool = True) -> None:
    """A dataset's options against its declared constraints, before any work: an unknown option or an
    invalid value is one InputError line naming the option and what is valid. Cross-option rules
    (e.g. synthetic's ``words_per_item < text_dim``) stay in the loader, after this check.

    ``features=False`` leaves the image-feature options out: what a loader itself is given, since
    :func:`load_dataset` hands those to :mod:`datasets.features` instead."""
    constraints = option_constraints(name, features=features)
    unknown = sorted(set(options) - set(constraints))
    if unknown:
        valid = ", ".join(sorted(constraints)) or "none"
        raise InputError(f"{name}: unknown option(s) {', '.join(unknown)}; valid: {valid}")
    check_params(name, options, {k: constraints[k] for k in options}, kind="option")


def _entry(name: str) -> tuple[str, str, str]:
    if name not in LOADERS:
        raise InputError(f"unknown dataset {name!r}; valid: {', '.join(LOADERS)}")
    return LOADERS[name]


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

    check_options(name, options)
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

"""MIRFlickr-25K in the DCMH release (Jiang & Li, CVPR 2017): 20,015 pairs, 24 labels, 1386-d tags.

Files, looked for in the data root and in ``<data root>/mirflickr25k`` (or ``MIRFLICKR25K``):

* ``mirflickr25k-lall.mat`` (``LAll``, 20015 x 24, 0/1) and ``mirflickr25k-yall.mat`` (``YAll``,
  20015 x 1386 binary tags); MATLAB v5 is read with scipy, v7.3 (HDF5) with h5py when installed;
* an image side, either a feature matrix named with ``image_features=`` (a ``.mat`` holding ``XAll``
  or the variable named by ``image_key=``, a ``.npy`` (memory-mapped), ``.npz`` or text matrix, one
  row per pair: e.g. 4096-d CNN or 512-d GIST features) or, by default, the raw images: first
  ``mirflickr25k-iall.npy`` (uint8 ``(n, H, W, 3)``, memory-mapped; written by ``prepare mirflickr25k``),
  else ``mirflickr25k-iall.mat`` (``IAll``; v7.3 is read lazily through h5py, v5 is loaded into memory).
  Raw images come back as uint8 ``(n, H, W, 3)``: a lazy :class:`~datasets.images.ImageArray` for
  ``.npy`` and v7.3 files, so the 3 GB image set is never copied into memory by the loader.

Protocol (DCMH): 2000 random queries, the other 18015 pairs are the database, 10000 training pairs
drawn from the database; seeded (``seed=0``). With ``database="unseen"``: the same queries and training
pairs, and a database of the 8015 remaining pairs, none of which a method was fitted on. Items keep the file order. Text is float32 CSR; labels
uint8. The checksum is the sha256 over the files used, in the order labels, text, image.
"""
from __future__ import annotations

import os
from pathlib import Path

from cmhcore.errors import DataFileError, InputError
from cmhcore.params import Interval, Options
from datasets import check_options
from datasets._io import (as_image, as_labels, as_text, find_file, read_array_file, read_mat, read_raw_images,
                          search_dirs)
from datasets.base import Dataset, file_checksum, random_protocol, without_training_items

__all__ = ["load", "files_present", "required_files", "N_ITEMS", "N_LABELS", "N_QUERY", "N_TRAIN"]

NAME = "mirflickr25k"
LABELS_FILE = "mirflickr25k-lall.mat"
TEXT_FILE = "mirflickr25k-yall.mat"
RAW_IMAGES_FILES = ("mirflickr25k-iall.npy", "mirflickr25k-iall.mat")  # looked for in this order
N_ITEMS, N_LABELS, N_QUERY, N_TRAIN = 20015, 24, 2000, 10000
HOW_TO_GET = ("build it from the official distribution with `python -m benchmark prepare mirflickr25k` or get the "
              "DCMH release (mirflickr25k-lall/-yall/-iall.mat, see docs/datasets.md) into the data root or "
              "<data root>/mirflickr25k, or pass image_features=<file> for a feature matrix")
OPTION_CONSTRAINTS: dict[str, list] = {
    "image_features": [str, os.PathLike, None],  # a feature file (an extractor name is handled by datasets.features)
    "image_key": [str, None],
    "seed": [Interval(int, 0, None, closed="left")],
    "n_query": [Interval(int, 1, None, closed="left")],
    "n_train": [Interval(int, 1, None, closed="left")],
    # "train": the DCMH protocol (training items drawn from the database); "unseen": the same queries and
    # training items, with the training items taken out of the database.
    "database": [Options({"train", "unseen"})],
}


def _dirs(data_root) -> list[Path]:
    return search_dirs(data_root, "mirflickr25k", "MIRFLICKR25K")


def _check(options: dict) -> dict:
    check_options(NAME, options, features=False)
    return {"image_features": None, "image_key": None, "seed": 0, "n_query": N_QUERY, "n_train": N_TRAIN,
            "database": "train", **options}


def required_files(data_root=None, **options) -> list[Path]:
    """The files a load would read, in checksum order; DataFileError (one line) for the first missing one."""
    opts = _check(options)
    dirs = _dirs(data_root)
    image = opts["image_features"] if opts["image_features"] is not None else RAW_IMAGES_FILES
    return [find_file(NAME, name, dirs, HOW_TO_GET) for name in (LABELS_FILE, TEXT_FILE, image)]


def files_present(data_root=None, **options) -> tuple[bool, str]:
    try:
        required_files(data_root, **options)
    except InputError as err:  # DataFileError included
        return False, str(err)
    return True, ""


def load(data_root=None, **options) -> Dataset:
    """Load MIRFlickr-25K (DCMH release) with its seeded 2000 / 18015 / 10000 protocol."""
    opts = _check(options)
    labels_path, text_path, image_path = required_files(data_root, **options)
    labels = as_labels(NAME, labels_path, read_mat(NAME, labels_path, ["LAll"])["LAll"], N_LABELS)
    n = labels.shape[0]
    empty = int((labels.sum(axis=1) == 0).sum())
    if empty:
        # The DCMH set is defined as pairs with at least one label; a file with empty rows is not that set.
        raise DataFileError(
            f"{NAME}: {labels_path}: {empty} item(s) have no label; the DCMH set has at least one per item"
        )
    text = as_text(NAME, text_path, read_mat(NAME, text_path, ["YAll"])["YAll"], n)
    if opts["image_features"] is None:
        image = read_raw_images(NAME, image_path, n, key=opts["image_key"] or "IAll")
    else:
        raw = read_array_file(NAME, image_path, key=opts["image_key"], default_keys=("XAll", "IAll"))
        image = as_image(NAME, image_path, raw, n)
        del raw
    protocol = random_protocol(f"{NAME}-dcmh-q{opts['n_query']}-t{opts['n_train']}", n, opts["n_query"],
                               opts["n_train"], seed=opts["seed"])
    if opts["database"] == "unseen":
        protocol = without_training_items(protocol, f"{NAME}-unseen-q{opts['n_query']}-t{opts['n_train']}")
    dataset = Dataset(
        NAME, image, text, labels, file_checksum(labels_path, text_path, image_path), protocol,
        meta={"source": "DCMH release (LAll, YAll)", "image_file": image_path.name,
              "image_source": "raw IAll" if opts["image_features"] is None else "feature matrix"},
    )
    protocol.validate_for(dataset)
    return dataset

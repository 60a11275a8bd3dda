"""NUS-WIDE (Chua et al., CIVR 2009) restricted to its 10 or 21 most frequent concepts (TC-10, TC-21).

Three sources are read; ``source="auto"`` (default) takes the first one whose files are all present,
in this order. Each file is looked for in the data root and in its sub-folders ``nuswide-tc<k>``,
``NUS-WIDE-TC<k>``, ``nuswide`` and ``NUS-WIDE``.

``"dcmh"``: the ``.mat`` release used by DCMH, SSAH, DJSRH and later code:
    ``nus-wide-tc<k>-lall.mat`` (``LAll``, n x k), ``nus-wide-tc<k>-yall.mat`` (``YAll``, n x 1000 tags)
    and an image side: ``image_features=<file>`` (e.g. ``nus-wide-tc<k>-xall-vgg.mat`` holding ``XAll``;
    ``image_key=`` names another variable; ``.npy`` / ``.npz`` / text also work) or, by default, the
    raw images ``nus-wide-tc<k>-iall.mat`` (``IAll``, returned as uint8 (n, H, W, 3)). MATLAB v7.3 files
    (the TC-10 ``yall`` and all ``iall`` files are commonly v7.3) need h5py.
``"single"``: one ``.mat`` with the split built in, ``I_tr, I_te, T_tr, T_te, L_tr, L_te`` (e.g. the
    ``NUSWIDE10.mat`` of the LEMON / FCMH code: 500-d SIFT BoVW, 1000-d tags, 10 labels; 184,577 + 2000
    rows). ``single_file=`` names the file (default ``NUSWIDE10.mat`` for TC-10, none for TC-21);
    ``image_key="V"`` reads ``V_tr / V_te`` (CNN features) instead of ``I_*``. Rows are ``[*_tr; *_te]``;
    the file's own split is not used: the standard seeded protocol below is drawn over all rows.
``"official"``: the distribution of the NUS-WIDE site: ``ConceptsList/Concepts81.txt`` (81 names, the
    column order), ``Groundtruth/AllLabels/Labels_<concept>.txt`` (one 0/1 per image, 269,648 lines),
    ``NUS_WID_Tags/AllTags1k.txt`` (1000 0/1 values per line) and an image feature file in
    ``Low_Level_Features/`` (``image_features=``, default ``BoW_int.dat``: 500-d SIFT bag of visual
    words; ``Normalized_CH.dat`` etc. also work). All files list the images in the same order.
    TC-k = the k concepts with the most positive images over all 269,648 (ties: Concepts81 order),
    kept in Concepts81 order; an image is kept when it has at least one of those k labels. The
    literature's counts, 195,834 (TC-21) and 186,577 (TC-10), come from that label rule alone, so
    ``require_tags=False`` is the default; ``require_tags=True`` also drops images without any of the
    1000 tags. ``meta["source_rows"]`` holds the kept images' 0-based lines in the official files.

Protocol (DCMH): 2100 random queries, the rest is the database, 10500 training items drawn from the
database; seeded (``seed=0``). Text is float32 CSR (195k x 1000 tags stay sparse), labels uint8.
The checksum is the sha256 over the files used.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError
from cmhcore.params import Interval, Options
from datasets import check_options
from datasets._io import (as_image, as_labels, as_text, read_array_file, read_mat, read_text_matrix, search_dirs,
                          try_find_file)
from datasets.base import Dataset, file_checksum, random_protocol

__all__ = ["load_tc10", "load_tc21", "files_present", "files_present_tc10", "files_present_tc21",
           "required_files", "N_QUERY", "N_TRAIN"]

N_QUERY, N_TRAIN = 2100, 10500
SOURCES = ("auto", "dcmh", "single", "official")
OPTION_CONSTRAINTS: dict[str, list] = {
    "source": [Options(SOURCES)],
    "image_features": [str, os.PathLike, None],  # a feature file (an extractor name is handled by datasets.features)
    "image_key": [str, None],
    "single_file": [str, os.PathLike, None],
    "require_tags": [bool],
    "seed": [Interval(int, 0, None, closed="left")],
    "n_query": [Interval(int, 1, None, closed="left")],
    "n_train": [Interval(int, 1, None, closed="left")],
}
SINGLE_FILE_DEFAULT = {10: ("NUSWIDE10.mat",), 21: ()}
CONCEPTS_FILE = ("ConceptsList/Concepts81.txt", "Concepts81.txt")
TAGS_FILE = ("NUS_WID_Tags/AllTags1k.txt", "AllTags1k.txt")
LABEL_DIRS = ("Groundtruth/AllLabels", "AllLabels")
FEATURE_DEFAULT = "BoW_int.dat"
HOW_TO_GET = ("get the official NUS-WIDE files (Concepts81, AllLabels, AllTags1k, Low_Level_Features) from the "
              "NUS-WIDE site or the DCMH .mat release (nus-wide-tc<k>-lall/-yall/-iall.mat); see docs/datasets.md")


def _name(tc: int) -> str:
    return f"nuswide-tc{tc}"


def _dirs(data_root, tc: int) -> list[Path]:
    return search_dirs(data_root, f"nuswide-tc{tc}", f"NUS-WIDE-TC{tc}", "nuswide", "NUS-WIDE")


def _check(tc: int, options: dict) -> dict:
    name = _name(tc)
    check_options(name, options, features=False)
    return {"source": "auto", "image_features": None, "image_key": None, "single_file": None,
            "require_tags": False, "seed": 0, "n_query": N_QUERY, "n_train": N_TRAIN, **options}


# ---------------------------------------------------------------- locating the files of each source

def _locate_dcmh(tc: int, dirs, opts) -> tuple[dict | None, str]:
    image = opts["image_features"] if opts["image_features"] is not None else f"nus-wide-tc{tc}-iall.mat"
    files = {}
    wanted = (("labels", f"nus-wide-tc{tc}-lall.mat"), ("text", f"nus-wide-tc{tc}-yall.mat"), ("image", image))
    for role, fname in wanted:
        found = try_find_file(fname, dirs)
        if found is None:
            return None, f"DCMH release: missing {fname}"
        files[role] = found
    return files, ""


def _locate_single(tc: int, dirs, opts) -> tuple[dict | None, str]:
    if opts["image_features"] is not None:
        # That file would be silently ignored here: the single file carries its own image matrix.
        return None, "single-file release: not used with image_features= (choose its matrix with image_key=)"
    names = (opts["single_file"],) if opts["single_file"] is not None else SINGLE_FILE_DEFAULT[tc]
    if not names:
        return None, "single-file release: none known for this TC (name it with single_file=)"
    found = try_find_file(names, dirs)
    if found is None:
        return None, f"single-file release: missing {' or '.join(map(str, names))}"
    return {"single": found}, ""


def _read_concepts(name: str, path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8", errors="strict").split()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataFileError(f"{name}: cannot read {path} as a list of concept names ({type(exc).__name__})") from None
    if not lines or len(set(lines)) != len(lines):
        raise DataFileError(f"{name}: {path}: expected one distinct concept name per line (Concepts81.txt)")
    return lines


def _locate_official(tc: int, dirs, opts) -> tuple[dict | None, str]:
    concepts_path = try_find_file(CONCEPTS_FILE, dirs)
    if concepts_path is None:
        return None, f"official distribution: missing {CONCEPTS_FILE[0]}"
    concepts = _read_concepts(_name(tc), concepts_path)
    if len(concepts) < tc:
        raise DataFileError(f"{_name(tc)}: {concepts_path} lists {len(concepts)} concepts; TC-{tc} needs at least {tc}")
    label_dirs = [d / sub for d in dirs for sub in LABEL_DIRS]
    label_files = []
    for concept in concepts:
        found = try_find_file(f"Labels_{concept}.txt", label_dirs)
        if found is None:
            return None, f"official distribution: missing {LABEL_DIRS[0]}/Labels_{concept}.txt"
        label_files.append(found)
    tags = try_find_file(TAGS_FILE, dirs)
    if tags is None:
        return None, f"official distribution: missing {TAGS_FILE[0]}"
    feat_name = opts["image_features"] if opts["image_features"] is not None else FEATURE_DEFAULT
    candidates = [feat_name] if Path(feat_name).is_absolute() else [f"Low_Level_Features/{feat_name}", feat_name]
    feats = try_find_file(candidates, dirs)
    if feats is None:
        return None, f"official distribution: missing Low_Level_Features/{feat_name}"
    return {"concepts": concepts_path, "concept_names": concepts, "label_files": label_files,
            "tags": tags, "image": feats}, ""


_LOCATORS = {"dcmh": _locate_dcmh, "single": _locate_single, "official": _locate_official}


def _locate(tc: int, data_root, opts) -> tuple[str, dict]:
    dirs = _dirs(data_root, tc)
    order = ("dcmh", "single", "official") if opts["source"] == "auto" else (opts["source"],)
    missing = []
    for source in order:
        files, why = _LOCATORS[source](tc, dirs, opts)
        if files is not None:
            return source, files
        missing.append(why)
    where = ", ".join(str(d) for d in dirs)
    raise DataFileError(f"{_name(tc)}: no complete copy found (looked in {where}): {'; '.join(missing)}; {HOW_TO_GET}")


def _file_list(source: str, files: dict) -> list[Path]:
    if source == "official":
        return [files["concepts"], *files["label_files"], files["tags"], files["image"]]
    if source == "single":
        return [files["single"]]
    return [files["labels"], files["text"], files["image"]]


def required_files(data_root=None, tc: int = 10, **options) -> list[Path]:
    """The files a load would read (checksum order); DataFileError (one line) when a source is incomplete."""
    tc = _check_tc(tc)
    source, files = _locate(tc, data_root, _check(tc, options))
    return _file_list(source, files)


def _check_tc(tc) -> int:
    if tc not in (10, 21) or isinstance(tc, bool):
        raise InputError(f"nuswide: tc={tc!r} is invalid; valid: 10, 21")
    return int(tc)


def files_present(data_root=None, tc: int | None = None, **options) -> tuple[bool, str]:
    """Whether TC-``tc`` can be loaded; with ``tc=None`` (as the generic status check calls it), both."""
    reasons = []
    for k in ((10, 21) if tc is None else (_check_tc(tc),)):
        try:
            required_files(data_root, tc=k, **options)
        except InputError as err:  # DataFileError included
            reasons.append(str(err))
    return (not reasons), " | ".join(reasons)


def files_present_tc10(data_root=None, **options) -> tuple[bool, str]:
    return files_present(data_root, tc=10, **options)


def files_present_tc21(data_root=None, **options) -> tuple[bool, str]:
    return files_present(data_root, tc=21, **options)


# ---------------------------------------------------------------- reading each source

def _read_dcmh(tc: int, files: dict, opts: dict):
    name = _name(tc)
    labels = as_labels(name, files["labels"], read_mat(name, files["labels"], ["LAll"])["LAll"], tc)
    _no_empty_labels(name, files["labels"], labels)
    n = labels.shape[0]
    text = as_text(name, files["text"], read_mat(name, files["text"], ["YAll"])["YAll"], n)
    if opts["image_features"] is None:
        raw = read_mat(name, files["image"], ["IAll"])["IAll"]
    else:
        raw = read_array_file(name, files["image"], key=opts["image_key"], default_keys=("XAll", "IAll"))
    return as_image(name, files["image"], raw, n), text, labels, {}


def _read_single(tc: int, files: dict, opts: dict):
    name, path = _name(tc), files["single"]
    key = opts["image_key"] or "I"
    m = read_mat(name, path, [f"{key}_tr", f"{key}_te", "T_tr", "T_te", "L_tr", "L_te"])
    labels = as_labels(name, path, np.vstack([_dense(m["L_tr"]), _dense(m["L_te"])]), tc)
    _no_empty_labels(name, path, labels)
    n = labels.shape[0]
    text = as_text(name, path, sp.vstack([sp.csr_matrix(m["T_tr"]), sp.csr_matrix(m["T_te"])], format="csr"), n)
    image = as_image(name, path, np.vstack([_dense(m[f"{key}_tr"]), _dense(m[f"{key}_te"])]), n)
    return image, text, labels, {"n_file_train": int(m["L_tr"].shape[0])}


def _dense(x):
    return x.toarray() if hasattr(x, "toarray") else np.asarray(x)


def _no_empty_labels(name: str, path: Path, labels: np.ndarray) -> None:
    empty = int((labels.sum(axis=1) == 0).sum())
    if empty:
        raise DataFileError(f"{name}: {path}: {empty} item(s) have no label; a TC release has at least one per item")


def _read_official(tc: int, files: dict, opts: dict):
    name = _name(tc)
    columns = []
    n_images = None
    for path in files["label_files"]:
        col = read_text_matrix(name, path, n_rows=n_images)
        if col.shape[1] != 1:
            raise DataFileError(f"{name}: {path}: expected one 0/1 value per line, found {col.shape[1]} columns")
        columns.append(as_labels(name, path, col))
        n_images = col.shape[0]
    all_labels = np.hstack(columns)
    # Top-k concepts by positive count; a stable sort breaks ties in Concepts81 order.
    counts = all_labels.sum(axis=0, dtype=np.int64)  # signed: negating unsigned counts would wrap
    top = np.sort(np.argsort(-counts, kind="stable")[:tc])
    labels = all_labels[:, top]
    del all_labels, columns
    keep = labels.any(axis=1)
    text = read_text_matrix(name, files["tags"], keep=keep, sparse=True)
    if opts["require_tags"]:
        has_tag = np.diff(text.indptr) > 0
        text = text[has_tag]
        rows = np.flatnonzero(keep)
        keep = np.zeros_like(keep)
        keep[rows[has_tag]] = True
    labels = labels[keep]
    n = int(keep.sum())
    text = as_text(name, files["tags"], text, n)
    image_path = files["image"]
    if image_path.suffix.lower() in (".txt", ".dat", ".csv"):
        raw = read_text_matrix(name, image_path, keep=keep)
    else:
        raw = read_array_file(name, image_path, key=opts["image_key"], default_keys=("XAll", "IAll"))
        if raw.shape[0] != n_images:
            raise DataFileError(f"{name}: {image_path} has {raw.shape[0]} rows; expected {n_images} (one per image)")
        raw = raw[keep]
    image = as_image(name, image_path, raw, n)
    concepts = [files["concept_names"][i] for i in top]
    return image, text, labels, {"concepts": ",".join(concepts), "source_rows": np.flatnonzero(keep),
                                 "n_images_in_files": int(n_images)}


_READERS = {"dcmh": _read_dcmh, "single": _read_single, "official": _read_official}


def _load(tc: int, data_root, options: dict) -> Dataset:
    opts = _check(tc, options)
    source, files = _locate(tc, data_root, opts)
    image, text, labels, extra = _READERS[source](tc, files, opts)
    n = labels.shape[0]
    name = _name(tc)
    protocol = random_protocol(f"{name}-q{opts['n_query']}-t{opts['n_train']}", n, opts["n_query"],
                               opts["n_train"], seed=opts["seed"])
    used = _file_list(source, files)
    meta = {"source": source, "image_file": Path(files.get("image", files.get("single"))).name,
            "require_tags": bool(opts["require_tags"]), **extra}
    dataset = Dataset(name, image, text, labels, file_checksum(*used), protocol, meta=meta)
    protocol.validate_for(dataset)
    return dataset


def load_tc10(data_root=None, **options) -> Dataset:
    """NUS-WIDE TC-10 with its seeded 2100 / rest / 10500 protocol (see the module docstring)."""
    return _load(10, data_root, options)


def load_tc21(data_root=None, **options) -> Dataset:
    """NUS-WIDE TC-21 with its seeded 2100 / rest / 10500 protocol (see the module docstring)."""
    return _load(21, data_root, options)

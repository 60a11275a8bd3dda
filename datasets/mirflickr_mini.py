"""MIRFlickr-25K mini (bundled): 724 real multi-label image-text pairs with raw pixels.

The 724 MIRFlickr-25K photographs among im1 ... im1000 (Huiskes & Lew, MIR 2008) that map to exactly one
row of the DCMH release (Jiang & Li, CVPR 2017), with that row's 24 labels (``LAll``) and 1,386 binary
tags (``YAll``). Items are in ascending image id (= ascending DCMH row). The files are in
``_data/mirflickr25k-mini/`` (provenance, checksums and licences in its ``SOURCE.md``); they are rebuilt
from the shared copy by ``scripts/build_mirflickr_mini.py``.

* Image: raw pixels, uint8 ``(724, 128, 128, 3)`` RGB, decoded into memory (35.6 MB). Each photograph
  was resized as a whole to 128 x 128 (aspect ratio not kept, as DCMH's 224 x 224 ``IAll``) and stored as
  JPEG; 128 px, not DCMH's 224, keeps the bundle near 5 MB and CNN training on 2 CPU cores short.
* Text: the 1,386-d binary tag vectors as float32 CSR. Labels: uint8 ``(724, 24)`` in the release's
  column order (``LABEL_NAMES``). Every item has at least one label and one tag.
* ``meta["image_id"]`` (N of ``imN.jpg``) and ``meta["dcmh_row"]`` (0-based row of ``LAll``/``YAll``).

Protocol (stored in ``items.csv``, drawn at build time by :func:`draw_protocol` with seed 0): 100
random queries; the other 624 items are both the retrieval database and the training set (as Wiki's
train = database). Why these sizes: on 724 items every training item counts, so the query set is kept
as small as a usable MAP allows. With 100 queries the standard error of a MAP from the query sample is
about 0.015 to 0.019 for codes from chance (MAP 0.50: about half the database shares a label with a
query) up to MAP 0.7, and 0.008 near MAP 0.9 (measured in ``SOURCE.md``); 200 queries would only bring
0.017 to 0.012 and cost 100 of the 624 training items. The draw is repeated until every label is in the
training set (the rarest, lake, has 6 items in all); for seeds 0..1999 the first draw already is.

Option ``seed`` (default 0 = the stored split): another seed draws a new split of the same sizes
with the same rule. Option ``database="unseen"``: the same queries; the other 624 items are divided into
416 training items and a database of 208 items no method was fitted on (:func:`draw_unseen_split`,
repeated until every label is in the training set; for seed 0 stored in
``_data/mirflickr25k-mini-unseen-train.txt``). The checksum is the sha256 over ``items.csv`` then the images in item order.
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError
from cmhcore.params import Interval, Options
from datasets import check_options
from datasets.base import Dataset, Protocol, read_index_file

__all__ = ["load", "files_present", "required_files", "draw_protocol", "DATA_DIR", "ITEMS_FILE", "SUMS_FILE",
           "IMAGE_DIR", "CHECKSUM", "N_ITEMS", "N_QUERY", "N_LABELS", "N_TAGS", "STORED_SEED", "LABEL_NAMES",
           "ITEMS_HEADER", "draw_unseen_split", "N_UNSEEN_DATABASE", "UNSEEN_TRAIN_FILE"]

NAME = "mirflickr25k-mini"
DATA_DIR = Path(__file__).parent / "_data" / "mirflickr25k-mini"
ITEMS_FILE = DATA_DIR / "items.csv"
SUMS_FILE = DATA_DIR / "SHA256SUMS"
IMAGE_DIR = DATA_DIR / "images"
# sha256 over items.csv and then every image in item order: the checksum every result on this set records.
CHECKSUM = "26b6b684904435573a6d5c7911be286704554a0ff41e7ed4dcae416fbcdeb3bc"
N_ITEMS, N_QUERY, N_LABELS, N_TAGS = 724, 100, 24, 1386
STORED_SEED = 0
N_UNSEEN_DATABASE = 208  # a third of the 624 non-query items; the other two thirds train
UNSEEN_TRAIN_FILE = Path(__file__).parent / "_data" / "mirflickr25k-mini-unseen-train.txt"
# What methods that cannot read pixels get: GIST at the stored 128 px (LMgist's own default size), so the
# descriptor is not computed on upsampled images.
DEFAULT_IMAGE_FEATURES = {"image_features": "gist", "gist_size": 128}
# Columns of LAll: the 24 MIRFlickr annotation concepts in alphabetical order (confirmed against the
# official per-image annotations in ../shared/data/mirflickr25k/SOURCE.md; not stored in the .mat file).
LABEL_NAMES = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
               "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures",
               "sunset", "transport", "tree", "water")
# items.csv: labels and tags are space-separated 0-based column indices of LAll / YAll.
ITEMS_HEADER = ("row", "image_id", "dcmh_row", "file", "split", "labels", "tags")
SPLITS = ("query", "database")
# seed redraws the split; database="unseen" divides the non-query items into training set and database.
OPTION_CONSTRAINTS: dict[str, list] = {"seed": [Interval(int, 0, None, closed="left")],
                                       "database": [Options({"train", "unseen"})]}
_REINSTALL = "reinstall the package (or rebuild with scripts/build_mirflickr_mini.py)"


def required_files(data_root=None, **options) -> list[Path]:
    """The index files; the image files are listed in them."""
    return [ITEMS_FILE, SUMS_FILE]


def _listed_files() -> list[tuple[str, Path]]:
    """(sha256, path) per line of SHA256SUMS, in checksum order (items.csv first, then the images)."""
    out = []
    for i, line in enumerate(SUMS_FILE.read_text(encoding="ascii").splitlines()):
        digest, sep, rel = line.partition("  ")
        if not sep or len(digest) != 64 or not rel:
            raise DataFileError(f"{NAME}: {SUMS_FILE} line {i + 1} is not '<sha256>  <file>'; {_REINSTALL}")
        out.append((digest, DATA_DIR / rel))
    return out


def files_present(data_root=None, **options) -> tuple[bool, str]:
    """Whether every bundled file is there (``data_root`` is ignored: the data ships with the package)."""
    for path in required_files():
        if not path.is_file():
            return False, f"{NAME}: the bundled file {path} is missing; {_REINSTALL}"
    try:
        listed = _listed_files()
    except (DataFileError, OSError, UnicodeDecodeError) as exc:
        return False, str(exc) if isinstance(exc, DataFileError) else f"{NAME}: cannot read {SUMS_FILE}; {_REINSTALL}"
    missing = [p for _, p in listed if not p.is_file()]
    if missing:
        return False, f"{NAME}: {len(missing)} bundled file(s) missing, e.g. {missing[0]}; {_REINSTALL}"
    return True, ""


def _ints(field: str, where: str, hi: int) -> np.ndarray:
    try:
        idx = np.array([int(t) for t in field.split()], dtype=np.int64)
    except ValueError:
        raise DataFileError(f"{NAME}: {where}: {field!r} is not a list of column indices") from None
    if idx.size and (idx.min() < 0 or idx.max() >= hi or np.any(np.diff(idx) <= 0)):
        raise DataFileError(f"{NAME}: {where}: column indices must be increasing and in [0, {hi})")
    return idx


def _read_items(path: Path) -> dict:
    """Parse items.csv into arrays (labels dense uint8, tags CSR float32)."""
    try:
        with open(path, newline="", encoding="ascii") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataFileError(f"{NAME}: cannot read {path} ({type(exc).__name__}); {_REINSTALL}") from None
    if not rows or tuple(rows[0]) != ITEMS_HEADER:
        raise DataFileError(f"{NAME}: {path}: the header is not {','.join(ITEMS_HEADER)}; {_REINSTALL}")
    body = rows[1:]
    if len(body) != N_ITEMS or any(len(r) != len(ITEMS_HEADER) for r in body):
        raise DataFileError(f"{NAME}: {path}: expected {N_ITEMS} rows of {len(ITEMS_HEADER)} fields; {_REINSTALL}")
    try:
        row, image_id, dcmh_row = (np.array([int(r[k]) for r in body], dtype=np.int64) for k in range(3))
    except ValueError:
        raise DataFileError(f"{NAME}: {path}: row, image_id and dcmh_row must be integers; {_REINSTALL}") from None
    if not np.array_equal(row, np.arange(N_ITEMS)):
        raise DataFileError(f"{NAME}: {path}: the row column must be 0..{N_ITEMS - 1} in order; {_REINSTALL}")
    split = [r[4] for r in body]
    if any(s not in SPLITS for s in split):
        raise DataFileError(f"{NAME}: {path}: split must be one of {', '.join(SPLITS)}; {_REINSTALL}")
    labels = np.zeros((N_ITEMS, N_LABELS), dtype=np.uint8)
    tag_idx = []
    for i, r in enumerate(body):
        labels[i, _ints(r[5], f"{path} row {i} labels", N_LABELS)] = 1
        tag_idx.append(_ints(r[6], f"{path} row {i} tags", N_TAGS))
    indptr = np.concatenate([[0], np.cumsum([t.size for t in tag_idx])])
    indices = np.concatenate(tag_idx)
    text = sp.csr_matrix((np.ones(indices.size, dtype=np.float32), indices, indptr), shape=(N_ITEMS, N_TAGS))
    return {"image_id": image_id, "dcmh_row": dcmh_row, "file": [r[3] for r in body],
            "query": np.array([s == "query" for s in split]), "labels": labels, "text": text}


def draw_protocol(labels: np.ndarray, seed: int, n_query: int = N_QUERY) -> Protocol:
    """``n_query`` random queries; every other item is both database and training set.

    Permutations are drawn from ``np.random.default_rng(seed)`` until one leaves every label column with
    at least one training item (a label no training item carries cannot be learned, and its queries
    would test nothing the methods saw). On the 724 items the first draw qualifies for seeds 0..1999.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 < n_query < n:
        raise InputError(f"{NAME}: n_query={n_query} is invalid; valid: 1 .. {n - 1}")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        perm = rng.permutation(n)
        rest = np.sort(perm[n_query:])
        if labels[rest].sum(axis=0).all():
            return Protocol(f"{NAME}-{n_query}q-{n - n_query}db", int(seed), np.sort(perm[:n_query]), rest, rest)
    raise InputError(f"{NAME}: no split with seed {seed} keeps every label in the training set in 1000 draws")


def draw_unseen_split(labels: np.ndarray, rest: np.ndarray, seed: int,
                      n_database: int = N_UNSEEN_DATABASE) -> tuple[np.ndarray, np.ndarray]:
    """(train, database): ``rest`` (the non-query items) divided at random into a database of ``n_database``
    items and a training set of the others, redrawn until every label column has a training item.

    The stream ``np.random.default_rng([seed, 0x554E5345])`` ('UNSE') is distinct from the query draw's."""
    labels, rest = np.asarray(labels), np.asarray(rest)
    if not 0 < n_database < rest.size:
        raise InputError(f"{NAME}: an unseen database of {n_database} items does not fit {rest.size} non-query items")
    rng = np.random.default_rng([int(seed), 0x554E5345])
    for _ in range(1000):
        perm = rng.permutation(rest)
        train = np.sort(perm[n_database:])
        if labels[train].sum(axis=0).all():
            return train, np.sort(perm[:n_database])
    raise InputError(f"{NAME}: no unseen split with seed {seed} keeps every label in the training set in 1000 draws")


def _unseen(protocol: Protocol, labels: np.ndarray, seed: int) -> Protocol:
    rest = protocol.database
    if seed == STORED_SEED:
        train = read_index_file(NAME, UNSEEN_TRAIN_FILE, low=0, high=N_ITEMS, how_to_fix=_REINSTALL)
        if not np.isin(train, rest).all():
            raise DataFileError(f"{NAME}: {UNSEEN_TRAIN_FILE} lists query items; {_REINSTALL}")
        database = np.setdiff1d(rest, train)
    else:
        train, database = draw_unseen_split(labels, rest, seed)
    return Protocol(f"{NAME}-unseen-{protocol.query.size}q-{database.size}db-{train.size}t", int(seed),
                    protocol.query, database, train)


def _decode(paths: list[Path], blobs: list[bytes]) -> np.ndarray:
    from PIL import Image

    images = None
    for i, (path, blob) in enumerate(zip(paths, blobs)):
        try:
            with Image.open(io.BytesIO(blob)) as im:
                # Pixel values as stored, no colour management (as DCMH's MATLAB imread read its IAll).
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:  # Pillow raises many types for a damaged image; all mean "unreadable"
            raise DataFileError(f"{NAME}: cannot decode {path} ({type(exc).__name__}); {_REINSTALL}") from None
        if images is None:
            images = np.empty((len(blobs),) + arr.shape, dtype=np.uint8)
        if arr.shape != images.shape[1:]:
            raise DataFileError(f"{NAME}: {path} is {arr.shape}, the first image {images.shape[1:]}; {_REINSTALL}")
        images[i] = arr
    return images


def load(data_root=None, **options) -> Dataset:
    """The bundled 724-pair set with its stored protocol, or a split redrawn with ``seed``."""
    check_options(NAME, options, features=False)
    seed = int(options.get("seed", STORED_SEED))
    ok, why = files_present()
    if not ok:
        raise DataFileError(why)
    items = _read_items(ITEMS_FILE)
    paths = [ITEMS_FILE] + [IMAGE_DIR / f for f in items["file"]]
    blobs = [p.read_bytes() for p in paths]
    h = hashlib.sha256()
    for blob in blobs:
        h.update(blob)
    checksum = h.hexdigest()
    if checksum != CHECKSUM:
        # Every result on this set records the checksum: a changed bundle must not pass for the documented one.
        listed = dict((p, d) for d, p in _listed_files())
        bad = next((p for p, b in zip(paths, blobs) if listed.get(p) != hashlib.sha256(b).hexdigest()), SUMS_FILE)
        raise DataFileError(f"{NAME}: the bundle's sha256 is {checksum[:12]}..., not the documented {CHECKSUM[:12]}... "
                            f"(first differing file: {bad}); {_REINSTALL}")
    image = _decode(paths[1:], blobs[1:])
    labels = items["labels"]
    if seed == STORED_SEED:
        query = np.flatnonzero(items["query"])
        rest = np.flatnonzero(~items["query"])
        protocol = Protocol(f"{NAME}-{query.size}q-{rest.size}db", STORED_SEED, query, rest, rest)
    else:
        protocol = draw_protocol(labels, seed)
    if options.get("database", "train") == "unseen":
        protocol = _unseen(protocol, labels, seed)
    for a in (items["image_id"], items["dcmh_row"]):
        a.setflags(write=False)
    dataset = Dataset(
        NAME, image, items["text"], labels, checksum, protocol,
        meta={"source": "MIRFlickr-25K im1..im1000 (Huiskes & Lew 2008) with DCMH LAll/YAll rows (Jiang & Li 2017); "
                        "see datasets/_data/mirflickr25k-mini/SOURCE.md",
              "classes": ",".join(LABEL_NAMES), "single_label": False, "image_size": int(image.shape[1]),
              "image_id": items["image_id"], "dcmh_row": items["dcmh_row"]},
    )
    protocol.validate_for(dataset)
    return dataset

"""Datasets, protocols (seeded, stored splits) and label masking.

A :class:`Dataset` is what was loaded: the two modalities, the multi-hot labels, the name and a
checksum of the files it came from. A :class:`Protocol` is how it is used: query / database /
training indices, drawn with a seed and stored as data (saved with every result). Label masking
(:func:`mask_labels`) applies to the training set only and hides whole rows.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError

__all__ = ["Dataset", "Protocol", "MaskedLabels", "mask_labels", "random_protocol", "file_checksum",
           "without_training_items", "read_index_file"]


def file_checksum(*paths: Path | str) -> str:
    """sha256 over the bytes of the given files, in order (the dataset's provenance checksum)."""
    h = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _take(x, idx):
    if sp.issparse(x):
        return sp.csr_matrix(x)[idx]
    if getattr(type(x), "is_image_container", False):
        return x.take(idx)
    if isinstance(x, np.ndarray) and x.ndim == 4 and x.dtype == np.uint8:
        # Raw images: a split of MIRFlickr is GBs of pixels, so it is a lazy view, never a copy.
        from datasets.images import ImageArray

        return ImageArray.from_array(x).take(idx)
    return x[idx]


@dataclass(frozen=True, eq=False)
class Dataset:
    """Two aligned modalities plus multi-hot labels; row i of each is the same item.

    ``image`` is a float feature matrix ``(n, d)`` or raw ``uint8`` images ``(n, H, W, 3)`` (an ndarray, a
    memory map or a lazy :class:`~datasets.images.ImageArray`);
    ``text`` is a dense or scipy-sparse ``(n, d_text)`` matrix; ``labels`` is ``uint8`` ``(n, m)``.
    ``protocol`` is the dataset's standard protocol (seeded where the split is random).
    """

    name: str
    image: Any
    text: Any
    labels: np.ndarray
    checksum: str
    protocol: "Protocol"
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        n = self.labels.shape[0]
        if self.image.shape[0] != n or self.text.shape[0] != n:
            raise DataFileError(
                f"dataset {self.name!r}: row counts differ (image {self.image.shape[0]}, text {self.text.shape[0]}, labels {n})"
            )

    @property
    def n_items(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_kind(self) -> str:
        return "pixels" if getattr(self.image, "ndim", 2) == 4 else "features"

    def subset(self, idx) -> tuple[Any, Any, np.ndarray]:
        """(image, text, labels) rows at ``idx``; sparse text stays sparse.

        Raw images come back as a lazy :class:`~datasets.images.ImageArray` view (no pixels are read or
        copied); feature matrices as arrays.
        """
        idx = np.asarray(idx)
        return _take(self.image, idx), _take(self.text, idx), self.labels[idx]

    def describe(self) -> dict:
        return {
            "name": self.name,
            "n_items": self.n_items,
            "image": list(self.image.shape),
            "image_kind": self.image_kind,
            "text": list(self.text.shape),
            "text_sparse": bool(sp.issparse(self.text)),
            "n_labels": int(self.labels.shape[1]),
            "checksum": self.checksum,
            **{k: v for k, v in self.meta.items() if isinstance(v, (str, int, float, bool))},
        }


@dataclass(frozen=True, eq=False)
class Protocol:
    """Query / database / training indices into a :class:`Dataset`, stored as data."""

    name: str
    seed: int | None
    query: np.ndarray
    database: np.ndarray
    train: np.ndarray

    def __post_init__(self):
        for part in ("query", "database", "train"):
            arr = np.asarray(getattr(self, part), dtype=np.int64)
            arr.setflags(write=False)
            object.__setattr__(self, part, arr)
            if arr.ndim != 1 or arr.size == 0:
                raise InputError(f"protocol {self.name!r}: {part} indices must be a non-empty 1-D array")
            if np.unique(arr).size != arr.size:
                raise InputError(f"protocol {self.name!r}: {part} indices contain duplicates")
        if np.intersect1d(self.query, self.database).size:
            raise InputError(f"protocol {self.name!r}: query and database overlap")
        if np.intersect1d(self.query, self.train).size:
            raise InputError(f"protocol {self.name!r}: query items leak into the training set")

    @property
    def sizes(self) -> dict[str, int]:
        return {"query": int(self.query.size), "database": int(self.database.size), "train": int(self.train.size)}

    @property
    def train_in_database(self) -> bool:
        return bool(np.isin(self.train, self.database).all())

    @property
    def digest(self) -> str:
        """A short hash of the indices: two protocols with equal digests are the same split."""
        h = hashlib.sha256()
        for part in (self.query, self.database, self.train):
            h.update(np.ascontiguousarray(part, dtype="<i8").tobytes())
            h.update(b"|")
        return h.hexdigest()[:16]

    def validate_for(self, dataset: Dataset) -> None:
        """Indices in range, and every query/database item has at least one label (relevance needs one)."""
        n = dataset.n_items
        for part in ("query", "database", "train"):
            arr = getattr(self, part)
            if arr.min() < 0 or arr.max() >= n:
                raise InputError(f"protocol {self.name!r}: {part} indices outside [0, {n}) for dataset {dataset.name!r}")
        for part in ("query", "database"):
            empty = int((dataset.labels[getattr(self, part)].sum(axis=1) == 0).sum())
            if empty:
                raise InputError(
                    f"dataset {dataset.name!r}: {empty} {part} item(s) have an empty label set; "
                    "relevance (sharing a label) needs at least one label per item"
                )

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "seed": self.seed,
            "sizes": self.sizes,
            "train_in_database": self.train_in_database,
            "digest": self.digest,
        }

    def save(self, path: Path | str) -> Path:
        """Store the indices (npz) with a JSON header; written atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as fh:
            np.savez_compressed(
                fh, query=self.query, database=self.database, train=self.train,
                header=np.frombuffer(json.dumps({"name": self.name, "seed": self.seed}).encode(), dtype=np.uint8),
            )
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: Path | str) -> "Protocol":
        try:
            with np.load(path, allow_pickle=False) as z:
                header = json.loads(bytes(z["header"]).decode())
                return cls(header["name"], header["seed"], z["query"], z["database"], z["train"])
        except Exception as exc:  # noqa: BLE001 - a damaged file raises EOFError, BadZipFile, TypeError, ...
            raise DataFileError(f"protocol file {path}: cannot be read ({exc}); expected an npz written by Protocol.save") from None


def random_protocol(name: str, n_items: int, n_query: int, n_train: int, seed: int,
                    n_database: int | None = None, candidates: np.ndarray | None = None) -> Protocol:
    """The common 'random queries, rest is database, training sampled from the database' protocol.

    Draws from ``candidates`` (default: all items) with ``np.random.default_rng(seed)``.
    """
    pool = np.arange(n_items) if candidates is None else np.asarray(candidates)
    rest_size = pool.size - n_query
    n_database = rest_size if n_database is None else n_database
    if n_query <= 0 or n_database <= 0 or n_database > rest_size or n_train > n_database:
        raise InputError(
            f"protocol {name!r}: sizes query={n_query}, database={n_database}, train={n_train} "
            f"do not fit {pool.size} items"
        )
    rng = np.random.default_rng(seed)
    perm = rng.permutation(pool)
    query = np.sort(perm[:n_query])
    database = np.sort(perm[n_query:n_query + n_database])
    train = np.sort(rng.choice(database, size=n_train, replace=False))
    return Protocol(name, seed, query, database, train)


def without_training_items(protocol: Protocol, name: str) -> Protocol:
    """The same queries and training set with the training items taken out of the database: a protocol
    whose database holds no item a method was fitted on (``train_in_database`` is False)."""
    database = np.setdiff1d(protocol.database, protocol.train)
    return Protocol(name, protocol.seed, protocol.query, database, protocol.train)


def read_index_file(owner: str, path: Path, *, low: int, high: int, how_to_fix: str) -> np.ndarray:
    """Sorted, distinct item indices in ``[low, high)`` stored one per line (a stored split); a missing or
    malformed file is one DataFileError line naming it."""
    try:
        idx = np.loadtxt(path, dtype=np.int64, ndmin=1)
    except (OSError, ValueError) as exc:
        raise DataFileError(f"{owner}: cannot read the stored split {path} ({type(exc).__name__}); {how_to_fix}") from None
    if idx.size == 0 or np.any(np.diff(idx) <= 0) or idx[0] < low or idx[-1] >= high:
        raise DataFileError(f"{owner}: {path} must hold increasing item indices in [{low}, {high}); {how_to_fix}")
    return idx


@dataclass(frozen=True, eq=False)
class MaskedLabels:
    """Training labels as a method may see them: masked rows are zero, ``labeled`` says which rows are real."""

    labels: np.ndarray
    labeled: np.ndarray
    mask_rate: float
    seed: int

    @property
    def n_labeled(self) -> int:
        return int(self.labeled.sum())


def mask_labels(train_labels: np.ndarray, mask_rate: float, seed: int) -> MaskedLabels:
    """Hide all labels of ``round(mask_rate * n)`` training items, drawn with ``seed``.

    The returned matrix is a fresh copy whose masked rows are zero, so the hidden labels do not
    exist in anything handed to a method.
    """
    if isinstance(mask_rate, bool) or not isinstance(mask_rate, (int, float, np.floating)) or not 0 <= mask_rate < 1:
        raise InputError(f"mask_rate={mask_rate!r} is invalid; valid: a number in [0, 1)")
    train_labels = np.asarray(train_labels)
    n = train_labels.shape[0]
    n_masked = int(round(float(mask_rate) * n))
    n_masked = min(n_masked, n - 1)  # at least one labeled item is always left
    rng = np.random.default_rng([int(seed), 0x4D41534B])  # 'MASK': a stream distinct from split seeds
    labeled = np.ones(n, dtype=bool)
    labeled[rng.choice(n, size=n_masked, replace=False)] = False
    visible = np.zeros_like(train_labels, dtype=np.uint8)
    visible[labeled] = train_labels[labeled]
    visible.setflags(write=False)
    labeled.setflags(write=False)
    return MaskedLabels(visible, labeled, float(mask_rate), int(seed))

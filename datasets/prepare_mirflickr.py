"""Build the DCMH MIRFlickr-25K set (20,015 pairs) from the official MIRFlickr distribution.

``python -m benchmark prepare mirflickr25k --images DIR_OR_ZIP --annotations DIR_OR_ZIP [--tags DIR_OR_ZIP]
[--lall FILE] [--yall FILE] --out DIR [--size 224] [--rows A:B] [--strict]`` (or :func:`prepare`).

Inputs (the official distribution of Huiskes & Lew, MIR 2008, press.liacs.nl/mirflickr):

* ``mirflickr25k.zip`` ("image collection (incl. tags, EXIF), approx 2.9 Gb", md5
  A23D0A8564EE84CDA5622A6C2F947785 for the 2008 file, per the download page as mirrored in
  GarfieldEr007/garfielder007.github.io) or its unpacked folder: ``mirflickr/im1.jpg ... im25000.jpg``,
  the processed tags ``mirflickr/meta/tags/tags<N>.txt`` (one tag per line), ``meta/tags_raw`` (the raw
  Flickr tags; the site supplies the tags "in two forms"), EXIF and licence metafiles, and
  ``doc/common_tags.txt``. Public DCMH-style preprocessing code reads ``meta/tags/tags<N>.txt``. Tags
  are taken from the images source unless ``--tags`` names a folder or zip of ``tags<N>.txt`` files.
* ``mirflickr25k_annotations_v080.zip`` or its folder: ``<concept>.txt`` (potential labels) and
  ``<concept>_r1.txt`` (relevant labels, subsets of the former), one image id per line, and a
  README.txt. Public loaders (e.g. the DeepHash-pytorch preparation the shared data comes from) read
  exactly these files and skip README and ``_r1`` for the 24 labels. (Layouts checked with the search
  tool; no copy of the distribution was at hand, so the tests use fake folders in that layout.)

What it writes in ``--out`` (the names the ``mirflickr25k`` loader reads):

* ``mirflickr25k-iall.npy``: uint8 ``(n, S, S, 3)`` RGB, written through ``np.lib.format.open_memmap``
  (load it with ``image_features=<that file>``). Each image is decoded with Pillow, converted to RGB
  and resized as a whole to S x S (default 224; no crop, aspect ratio not kept) with Pillow's
  antialiased bicubic filter. The DCMH release's ``IAll`` is 20,015 images at 224 x 224 (a public
  script reading it, advanceflow/vdb ``src/DJSRH/dataview.py``, notes h5py shape (20015, 3, 224, 224));
  how DCMH resized is not public (no crop is the common reading of "resized to 224 x 224"), and
  MATLAB's ``imresize`` defaults to antialiased bicubic, hence this filter. ICC profiles and EXIF
  orientation are not applied (MATLAB's ``imread`` applies neither).
* ``mirflickr25k-lall.mat``: ``LAll`` uint8 (n, 24), columns in the release's order: the 24
  potential-label files in alphabetical order (``LABEL_NAMES``).
* ``mirflickr25k-yall.mat``: ``YAll`` uint8 (n, vocabulary) rebuilt from the tag files; without
  tag files, a copy of the rows of ``--yall`` (said so in the manifest); absent when neither is given.
* ``mirflickr25k-imageids.csv`` (``dcmh_row,image_id,status``), ``mirflickr25k-tags.txt`` (the
  vocabulary in column order, when rebuilt) and ``mirflickr25k-prepare-manifest.json`` (sha256 of
  every input and output, the checks and their outcome).

Rows follow the release through the bundled row -> image-id map (``_data/mirflickr25k-dcmh-row-to-
imageid.csv.gz``): 19,915 rows have one image, 100 have 2-3 candidates with equal labels (see
:func:`resolve_rows`). The set rule used in checks: DCMH kept the images with at least one
potential label and at least one tag of the vocabulary; the vocabulary is the tags that occur in at
least ``MIN_TAG_IMAGES`` = 20 images (public preprocessing notes say 1,386 tags occur in at least 20
images, and public code keeps ``doc/common_tags.txt`` entries with count >= 20 and expects 20,015 rows;
found with the search tool in excerpts without a repository name). The column order of ``YAll`` is not
documented and cannot be checked without the tag files: the tags are first sorted alphabetically; when
``--yall`` is given, each ``YAll`` column is matched to the rebuilt tag with the identical 0/1 vector
over the unique and resolved rows, and a full match reorders the output to the release's order (the
manifest says whether that order is alphabetical, by image count, or other).

Every result that can be compared with ``--lall``/``--yall`` is compared, per column; mismatches are
reported (stdout and manifest) and the exit status stays 0 unless ``strict``. The image array is
filled chunk by chunk; a small state file records the chunks done and the sha256 of every input, so
a rerun resumes, and a changed input starts over. Bad or missing inputs fail with a one-line
:class:`~benchmark.errors.DataFileError` naming the file before any output is written; an image that
exists but cannot be decoded is found while decoding and stops the run the same way (finished chunks kept).
"""
from __future__ import annotations

import csv
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cmhcore.errors import DataFileError, InputError

__all__ = ["prepare", "PrepareResult", "load_row_map", "resolve_rows", "build_vocabulary", "match_columns",
           "LABEL_NAMES", "N_IMAGES", "N_ROWS", "N_TAGS", "MIN_TAG_IMAGES", "MAP_FILE"]

NAME = "mirflickr25k"
N_IMAGES, N_ROWS, N_TAGS = 25000, 20015, 1386
MIN_TAG_IMAGES = 20
# The 24 potential labels; their alphabetical order is the release's LAll column order (confirmed in
# shared/data/mirflickr25k/SOURCE.md by the _r1 subset relations and the label inclusions).
LABEL_NAMES = ("animals", "baby", "bird", "car", "clouds", "dog", "female", "flower", "food", "indoor", "lake",
               "male", "night", "people", "plant_life", "portrait", "river", "sea", "sky", "structures", "sunset",
               "transport", "tree", "water")
MAP_FILE = Path(__file__).resolve().parent / "_data" / "mirflickr25k-dcmh-row-to-imageid.csv.gz"
OUT_IMAGES, OUT_LABELS, OUT_TEXT = "mirflickr25k-iall.npy", "mirflickr25k-lall.mat", "mirflickr25k-yall.mat"
OUT_IDS, OUT_VOCAB = "mirflickr25k-imageids.csv", "mirflickr25k-tags.txt"
OUT_MANIFEST, STATE_FILE = "mirflickr25k-prepare-manifest.json", ".mirflickr25k-prepare-state.json"
STATE_VERSION = 1
ZIP_MD5_2008 = "a23d0a8564ee84cda5622a6c2f947785"  # mirflickr25k.zip as published in 2008 (module docstring)
RESIZE = "PIL.Image.BICUBIC (antialiased), whole image to S x S"
_IMAGE_RE = re.compile(r"(?:^|/)im(\d+)\.jpg$")
_TAGS_RE = re.compile(r"(?:^|/)tags(\d+)\.txt$")


# ------------------------------------------------------------------------------------- sources
class _Source:
    """A folder or a zip archive, addressed by relative POSIX names."""

    def __init__(self, path: Path, what: str):
        self.path = Path(path)
        self.what = what
        if not self.path.exists():
            raise DataFileError(f"{NAME}: {what} {self.path} does not exist; valid: a folder or a .zip file")
        self.zip = None
        if self.path.is_file():
            try:
                self.zip = zipfile.ZipFile(self.path)
                self.names = [n for n in self.zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataFileError(f"{NAME}: {what} {self.path} is not a readable zip file ({exc}); "
                                    "valid: a folder or a .zip file") from None
        else:
            root = self.path
            self.names = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())

    def label(self, name: str) -> str:
        return f"{self.path}!{name}" if self.zip is not None else str(self.path / name)

    def read(self, name: str) -> bytes:
        try:
            if self.zip is not None:
                return self.zip.read(name)
            return (self.path / name).read_bytes()
        except (OSError, zipfile.BadZipFile, KeyError) as exc:
            raise DataFileError(f"{NAME}: cannot read {self.label(name)} ({type(exc).__name__}: {exc})") from None

    def digest(self, names=None) -> dict:
        """sha256 of the zip file, or of the listing "name sha256" of the folder's files used."""
        if self.zip is not None:
            sha, md5 = _sha256_file(self.path, with_md5=True)
            return {"path": str(self.path), "kind": "zip", "sha256": sha, "md5": md5}
        h = hashlib.sha256()
        names = sorted(self.names if names is None else names)
        for n in names:
            h.update(f"{n} {hashlib.sha256(self.read(n)).hexdigest()}\n".encode())
        return {"path": str(self.path), "kind": "folder", "files": len(names), "sha256": h.hexdigest(),
                "sha256_of": "lines 'relative/name sha256' of the files used, sorted by name"}


def _sha256_file(path: Path, with_md5: bool = False):
    h, m = hashlib.sha256(), hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
            if with_md5:
                m.update(block)
    return (h.hexdigest(), m.hexdigest()) if with_md5 else h.hexdigest()


def _index_by_id(source: _Source, pattern: re.Pattern, exclude: str | None = None) -> dict[int, str]:
    """image id -> entry name, for entries matching ``pattern`` (first in sorted order wins)."""
    out: dict[int, str] = {}
    for n in sorted(source.names):
        if exclude and exclude in n:
            continue
        m = pattern.search(n)
        if m:
            out.setdefault(int(m.group(1)), n)
    return out


# ------------------------------------------------------------------------------------- row map
def load_row_map(path: Path | str = MAP_FILE) -> tuple[np.ndarray, list[tuple[int, ...]]]:
    """(earliest image id per DCMH row, candidate ids per row) from the bundled map."""
    path = Path(path)
    try:
        with gzip.open(path, "rt", newline="") if path.suffix == ".gz" else open(path, newline="") as fh:
            rows = list(csv.DictReader(fh))
        ids = np.array([int(r["image_id"]) for r in rows], dtype=np.int64)
        cands = [tuple(int(c) for c in r["candidates"].split()) for r in rows]
        order = [int(r["dcmh_row"]) for r in rows]
    except (OSError, KeyError, ValueError, EOFError) as exc:
        raise DataFileError(f"{NAME}: cannot read the row map {path} ({type(exc).__name__}: {exc})") from None
    if order != list(range(N_ROWS)) or any(ids[i] != c[0] for i, c in enumerate(cands)):
        raise DataFileError(f"{NAME}: {path} is not the 20,015-row DCMH row map (rows 0..20014, image_id = first candidate)")
    return ids, cands


# ------------------------------------------------------------------------------------- labels
def _read_annotations(source: _Source) -> tuple[np.ndarray, dict]:
    """(25000 x 24 uint8 potential labels by image id - 1, {concept: entry name})."""
    by_base: dict[str, str] = {}
    for n in sorted(source.names):
        by_base.setdefault(n.rsplit("/", 1)[-1], n)
    labels = np.zeros((N_IMAGES, len(LABEL_NAMES)), dtype=np.uint8)
    files = {}
    for j, concept in enumerate(LABEL_NAMES):
        name = by_base.get(f"{concept}.txt")
        if name is None:
            raise DataFileError(f"{NAME}: annotation file {concept}.txt is missing in {source.path}; "
                                "valid: mirflickr25k_annotations_v080 (folder or zip) with the 24 <concept>.txt files")
        files[concept] = name
        text = source.read(name).decode("ascii", errors="replace").split()
        try:
            ids = np.array([int(t) for t in text], dtype=np.int64)
        except ValueError:
            bad = next(t for t in text if not t.lstrip("-").isdigit())
            raise DataFileError(f"{NAME}: {source.label(name)}: {bad!r} is not an image id; valid: one id 1..25000 per line") from None
        if ids.size and (ids.min() < 1 or ids.max() > N_IMAGES):
            bad = int(ids[(ids < 1) | (ids > N_IMAGES)][0])
            raise DataFileError(f"{NAME}: {source.label(name)}: image id {bad} is out of range; valid: 1..25000")
        labels[ids - 1, j] = 1
    return labels, files


# ------------------------------------------------------------------------------------- tags
def build_vocabulary(tag_sets: dict[int, frozenset], min_images: int = MIN_TAG_IMAGES) -> tuple[list[str], np.ndarray]:
    """(tags in >= ``min_images`` images, sorted; their image counts): DCMH's rule (20 images)."""
    counts: dict[str, int] = {}
    for tags in tag_sets.values():
        for t in tags:
            counts[t] = counts.get(t, 0) + 1
    vocab = sorted(t for t, c in counts.items() if c >= min_images)
    return vocab, np.array([counts[t] for t in vocab], dtype=np.int64)


def _read_tags(source: _Source, index: dict[int, str]) -> dict[int, frozenset]:
    """image id -> set of processed tags (one per line; the bytes decoded losslessly)."""
    out = {}
    for i, name in index.items():
        text = source.read(name).decode("utf-8", errors="surrogateescape")
        out[i] = frozenset(t.strip() for t in text.splitlines() if t.strip())
    return out


def _tag_matrix(ids: np.ndarray, tag_sets: dict[int, frozenset], vocab: list[str]) -> np.ndarray:
    col = {t: j for j, t in enumerate(vocab)}
    out = np.zeros((len(ids), len(vocab)), dtype=np.uint8)
    for r, i in enumerate(ids):
        js = [col[t] for t in tag_sets.get(int(i), ()) if t in col]
        out[r, js] = 1
    return out


def _column_keys(m: np.ndarray) -> list[bytes]:
    """Each column's 0/1 vector as bytes (bit-packed), to find identical columns by hashing."""
    packed = np.packbits(np.ascontiguousarray(m, dtype=np.uint8).T.astype(bool), axis=1)
    return [row.tobytes() for row in packed]


def match_columns(ours: np.ndarray, theirs: np.ndarray) -> tuple[np.ndarray, int]:
    """For each column of ``theirs``, a column of ``ours`` with the identical 0/1 vector (-1: none).

    Each of ours is used once; among identical columns the lowest index goes first. Returns the
    assignment and the number of ``theirs`` columns whose vector is shared by another column (ties:
    there the data cannot tell which name a column carries).
    """
    pool: dict[bytes, list[int]] = {}
    for j, k in enumerate(_column_keys(ours)):
        pool.setdefault(k, []).append(j)
    their_keys = _column_keys(theirs)
    counts: dict[bytes, int] = {}
    for k in their_keys:
        counts[k] = counts.get(k, 0) + 1
    assign = np.full(theirs.shape[1], -1, dtype=np.int64)
    for j, k in enumerate(their_keys):
        free = pool.get(k)
        if free:
            assign[j] = free.pop(0)
    tied = sum(1 for k in their_keys if counts[k] > 1)
    return assign, tied


# ------------------------------------------------------------------------------------- rows
def resolve_rows(cands: list[tuple[int, ...]], rows: range, *, tagged=None, row_matches=None):
    """Image id and status ('unique', 'resolved', 'ambiguous') of each selected row.

    Rows with several candidates are resolved jointly with their neighbours whose candidates
    overlap (6 such pairs exist): among the strictly increasing assignments, keep those where
    ``row_matches(row, id)`` holds (the candidate's tag vector equals the YAll row) and where, by the
    set rule, every chosen image has a vocabulary tag and every candidate left out has none
    (``tagged(id)``). When the set rule leaves no assignment it is dropped for that group. A row is
    resolved when all remaining assignments agree on it; otherwise it takes the earliest candidate
    left (or the map's earliest) and stays ambiguous. Returns (ids, status, notes).
    """
    ids = np.array([cands[r][0] for r in rows], dtype=np.int64)
    status = ["unique" if len(cands[r]) == 1 else "ambiguous" for r in rows]
    notes: list[str] = []
    if tagged is None and row_matches is None:
        return ids, status, notes
    sel = [r for r in rows if len(cands[r]) > 1]
    groups: list[list[int]] = []
    for r in sel:
        if groups and groups[-1][-1] == r - 1 and set(cands[r]) & set(cands[r - 1]):
            groups[-1].append(r)
        else:
            groups.append([r])
    start = rows.start
    for g in groups:
        assignments = [a for a in itertools.product(*(cands[r] for r in g)) if all(x < y for x, y in zip(a, a[1:]))]
        if row_matches is not None:
            assignments = [a for a in assignments if all(row_matches(r, i) for r, i in zip(g, a))]
        if tagged is not None:
            union = set().union(*(cands[r] for r in g))
            ruled = [a for a in assignments if all(tagged(i) for i in a) and not any(tagged(i) for i in union - set(a))]
            if ruled or not assignments:
                assignments = ruled
            else:
                notes.append(f"rows {g}: no assignment satisfies the set rule; resolved without it")
        for k, r in enumerate(g):
            choices = sorted({a[k] for a in assignments})
            if len(choices) == 1:
                ids[r - start], status[r - start] = choices[0], "resolved"
            elif choices:
                ids[r - start] = choices[0]
        if not assignments:
            notes.append(f"rows {g}: no candidate assignment agrees with the tags; earliest candidates kept")
    return ids, status, notes


def _parse_rows(spec) -> range:
    if spec is None:
        return range(N_ROWS)
    if isinstance(spec, range):
        a, b = spec.start, spec.stop
    else:
        m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", str(spec))
        if not m:
            raise InputError(f"--rows {spec!r} is invalid; valid: A:B with 0 <= A < B <= {N_ROWS} (0-based, B excluded)")
        a = int(m.group(1)) if m.group(1) else 0
        b = int(m.group(2)) if m.group(2) else N_ROWS
    if not 0 <= a < b <= N_ROWS:
        raise InputError(f"--rows {a}:{b} is invalid; valid: A:B with 0 <= A < B <= {N_ROWS} (0-based, B excluded)")
    return range(a, b)


def _read_release(path, key: str, n_cols: int) -> np.ndarray:
    from datasets._io import read_mat

    path = Path(path)
    if not path.is_file():
        raise DataFileError(f"{NAME}: --{key[0].lower()}all file {path} does not exist; valid: the DCMH mirflickr25k-{key[0].lower()}all.mat")
    arr = read_mat(NAME, path, [key])[key]
    arr = arr.toarray() if hasattr(arr, "toarray") else np.asarray(arr)
    if arr.shape != (N_ROWS, n_cols) or not np.isin(arr, (0, 1)).all():
        raise DataFileError(f"{NAME}: {path}: {key} has shape {arr.shape}; valid: 0/1 ({N_ROWS}, {n_cols}) as in the DCMH release")
    return arr.astype(np.uint8)


# ------------------------------------------------------------------------------------- images
def _load_image(data: bytes, size: int, label: str) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB").resize((size, size), Image.BICUBIC)
            return np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataFileError(f"{NAME}: cannot decode image {label} ({type(exc).__name__}: {exc})") from None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _savemat_bytes(key: str, arr: np.ndarray) -> bytes:
    import scipy.io

    buf = io.BytesIO()
    scipy.io.savemat(buf, {key: arr}, do_compression=True)
    data = bytearray(buf.getvalue())
    # The v5 header's 116 text bytes carry the creation time; a fixed text makes the file a function
    # of its contents, so reruns and resumed runs give the same bytes (and sha256).
    data[:116] = b"MATLAB 5.0 MAT-file, written by cmh-bench (datasets.prepare_mirflickr)".ljust(116)
    return bytes(data)


def _fill_images(out: Path, state_key: str, names: list[str], source: _Source, size: int, chunk: int,
                 workers: int, progress) -> dict:
    """Fill the image array chunk by chunk; the state file lists finished chunks under ``state_key``."""
    from tqdm.auto import tqdm

    n = len(names)
    path, state_path = out / OUT_IMAGES, out / STATE_FILE
    n_chunks = -(-n // chunk)
    done: set[int] = set()

    def save_state():
        _write_atomic(state_path, json.dumps({"version": STATE_VERSION, "key": state_key, "chunk": chunk,
                                              "done": sorted(done)}).encode())

    state = None
    if state_path.is_file():
        try:
            state = json.loads(state_path.read_text())
        except (OSError, ValueError):
            state = None
    arr = None
    if state and state.get("key") == state_key and state.get("chunk") == chunk and path.is_file():
        try:
            arr = np.load(path, mmap_mode="r+")
            if arr.shape != (n, size, size, 3) or arr.dtype != np.uint8:
                arr = None
            else:
                done = {int(c) for c in state.get("done", []) if 0 <= int(c) < n_chunks}
        except (OSError, ValueError):
            arr = None
    resumed = len(done)
    if arr is None:
        done = set()
        save_state()  # before the array is replaced: a crash in between must not leave old chunks marked done
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))

    save_state()
    show = sys.stderr.isatty() if progress is None else bool(progress)
    todo = [c for c in range(n_chunks) if c not in done]
    bar = tqdm(total=n, initial=n - sum(min(chunk, n - c * chunk) for c in todo), desc=f"{NAME} images",
               unit="img", disable=not show, file=sys.stderr, dynamic_ncols=True)
    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for c in todo:
                lo, hi = c * chunk, min(n, (c + 1) * chunk)
                # Bytes are read in this thread (zip members are read sequentially); Pillow releases
                # the GIL while decoding and resizing, so the threads share the work.
                blobs = [(source.read(nm), source.label(nm)) for nm in names[lo:hi]]
                for k, img in enumerate(pool.map(lambda b: _load_image(b[0], size, b[1]), blobs)):
                    arr[lo + k] = img
                arr.flush()
                done.add(c)
                save_state()
                bar.update(hi - lo)
    finally:
        bar.close()
        del arr
    return {"chunks": n_chunks, "chunks_resumed": resumed, "chunks_decoded_now": len(todo), "chunk_rows": chunk}


# ------------------------------------------------------------------------------------- main
@dataclass
class PrepareResult:
    """What :func:`prepare` did: output paths, the manifest dict, failed checks (one line each)."""

    out: Path
    manifest: dict
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _column_report(got: np.ndarray, ref: np.ndarray, names=None) -> dict:
    diff = got != ref
    per_col = diff.sum(axis=0)
    bad_rows = np.flatnonzero(diff.any(axis=1))
    cols = {(names[j] if names else str(j)): int(per_col[j]) for j in np.flatnonzero(per_col)}
    return {"rows_compared": int(got.shape[0]), "equal": not diff.any(), "mismatched_cells": int(diff.sum()),
            "mismatched_rows": int(bad_rows.size), "mismatches_per_column": cols,
            "first_mismatched_rows": [int(r) for r in bad_rows[:20]]}


def prepare(images, annotations, out, *, tags=None, lall=None, yall=None, size: int = 224, rows=None,
            chunk: int = 256, workers: int | None = None, min_tag_images: int = MIN_TAG_IMAGES,
            strict: bool = False, progress=None, echo=print) -> PrepareResult:
    """Build the set into ``out`` (see the module docstring); ``rows`` = ``"A:B"`` or a range restricts it."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or not 8 <= size <= 4096:
        raise InputError(f"--size {size!r} is invalid; valid: an integer from 8 to 4096 (pixels per side)")
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise InputError(f"chunk={chunk!r} is invalid; valid: a positive integer")
    if isinstance(min_tag_images, bool) or not isinstance(min_tag_images, (int, np.integer)) or min_tag_images < 1:
        raise InputError(f"min_tag_images={min_tag_images!r} is invalid; valid: a positive integer")
    sel = _parse_rows(rows)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; valid: a folder (created when absent)")
    workers = workers or min(4, os.cpu_count() or 1)

    # ---- inputs, all checked before any work
    img_src = _Source(images, "--images")
    img_index = _index_by_id(img_src, _IMAGE_RE)
    if not img_index:
        raise DataFileError(f"{NAME}: --images {img_src.path} holds no im<N>.jpg; valid: mirflickr25k.zip or its folder")
    ann_src = _Source(annotations, "--annotations")
    tag_src = _Source(tags, "--tags") if tags is not None else img_src
    tag_index = _index_by_id(tag_src, _TAGS_RE, exclude="tags_raw")
    if tags is not None and not tag_index:
        raise DataFileError(f"{NAME}: --tags {tag_src.path} holds no tags<N>.txt; valid: the folder or zip with meta/tags/tags<N>.txt")
    have_tags = bool(tag_index)
    release_l = _read_release(lall, "LAll", len(LABEL_NAMES)) if lall is not None else None
    release_y = _read_release(yall, "YAll", N_TAGS) if yall is not None else None
    map_ids, cands = load_row_map()
    labels_by_image, ann_files = _read_annotations(ann_src)
    tag_sets = _read_tags(tag_src, tag_index) if have_tags else {}
    n = len(sel)

    # ---- vocabulary and tag vectors
    problems: list[str] = []
    checks: dict = {}
    vocab: list[str] = []
    col_order = None
    if have_tags:
        vocab, counts = build_vocabulary(tag_sets, min_tag_images)
        vocab_idx = {t: j for j, t in enumerate(vocab)}
        has_tag = {i: any(t in vocab_idx for t in s) for i, s in tag_sets.items()}
        checks["vocabulary"] = {"rule": f"tags in >= {min_tag_images} of the {len(tag_sets)} tag files",
                                "size": len(vocab), "expected": N_TAGS, "equal_to_expected": len(vocab) == N_TAGS,
                                "tag_files": len(tag_sets)}
        if len(vocab) != N_TAGS:
            problems.append(f"vocabulary: the rule gives {len(vocab)} tags, the release has {N_TAGS}")
        labelled = labels_by_image.any(axis=1)
        rule_ids = [i for i in sorted(tag_sets) if labelled[i - 1] and has_tag[i]]
        checks["set_rule"] = {"images_with_label_and_vocabulary_tag": len(rule_ids), "expected": N_ROWS,
                              "note": "counted over the tag files present"}
        if len(tag_sets) == N_IMAGES and len(rule_ids) != N_ROWS:
            problems.append(f"set rule: {len(rule_ids)} images have a label and a vocabulary tag, the release has {N_ROWS}")
    unique_rows = np.array([r for r in sel if len(cands[r]) == 1], dtype=np.int64)

    # YAll's column order. Pass 1 groups the columns by their vector over the uniquely mapped rows; a
    # candidate of an ambiguous row fits when, in every group, it has as many tags as the YAll row
    # (exact where a group is one column; ties are not guessed). Pass 2 matches the columns over the
    # unique and the resolved rows.
    row_matches = None
    if have_tags and release_y is not None and len(unique_rows):
        group: dict[bytes, int] = {}
        g_ours = np.array([group.setdefault(k, len(group)) for k in
                           _column_keys(_tag_matrix(map_ids[unique_rows], tag_sets, vocab))], dtype=np.int64)
        g_theirs = np.array([group.setdefault(k, len(group)) for k in _column_keys(release_y[unique_rows])],
                            dtype=np.int64)

        def row_matches(r, i):
            v = _tag_matrix(np.array([i]), tag_sets, vocab)[0]
            return np.array_equal(np.bincount(g_ours, weights=v, minlength=len(group)),
                                  np.bincount(g_theirs, weights=release_y[r], minlength=len(group)))

    ids, status, notes = resolve_rows(cands, sel, tagged=(lambda i: has_tag.get(i, False)) if have_tags else None,
                                      row_matches=row_matches)
    if row_matches is not None:
        used = np.array([sel.start + k for k, s in enumerate(status) if s != "ambiguous"], dtype=np.int64)
        assign, tied = match_columns(_tag_matrix(ids[used - sel.start], tag_sets, vocab), release_y[used])
        matched = assign >= 0
        order_kind = "other"
        if matched.all() and len(vocab) == N_TAGS:
            col_order = assign
            if np.array_equal(assign, np.arange(N_TAGS)):
                order_kind = "alphabetical"
            elif np.array_equal(counts[assign], np.sort(counts)[::-1]):
                order_kind = "by image count, descending"
        checks["yall_columns"] = {
            "matched": int(matched.sum()), "of": N_TAGS, "tied_columns": int(tied), "rows_used": int(used.size),
            "order": order_kind if col_order is not None else "not recovered (output kept alphabetical)",
            "note": "a YAll column is matched to the rebuilt tag with the identical 0/1 vector over the unique and "
                    "resolved rows; tied columns share a vector there, so their names are not determined"}
        if col_order is None:
            problems.append(f"YAll columns: {int(matched.sum())} of {N_TAGS} match a rebuilt tag; output kept alphabetical")
    amb = [sel.start + k for k, s in enumerate(status) if s == "ambiguous"]
    checks["rows"] = {"selected": f"{sel.start}:{sel.stop}", "n": n, "unique": status.count("unique"),
                      "resolved_from_tags": status.count("resolved"), "ambiguous": len(amb),
                      "ambiguous_rows": {str(r): list(cands[r]) for r in amb}, "notes": notes,
                      "rule": "earliest remaining candidate for rows left ambiguous"}
    if amb:
        problems.append(f"rows: {len(amb)} row(s) left ambiguous (earliest candidate taken): "
                        + ", ".join(f"{r} {'/'.join(map(str, cands[r]))}" for r in amb))
    if np.any(np.diff(ids) <= 0):
        problems.append("rows: the chosen image ids are not strictly increasing")

    # ---- every file needed exists (before any work)
    missing = [int(i) for i in ids if int(i) not in img_index]
    if missing:
        raise DataFileError(f"{NAME}: image im{missing[0]}.jpg is missing in {img_src.path} ({len(missing)} of the "
                            f"{n} selected rows' images are absent; restrict with --rows A:B); valid: im1.jpg ... im25000.jpg")
    if have_tags and any(int(i) not in tag_sets for i in ids):
        i = next(int(i) for i in ids if int(i) not in tag_sets)
        raise DataFileError(f"{NAME}: tag file tags{i}.txt is missing in {tag_src.path}; valid: meta/tags/tags<N>.txt for every image")
    image_names = [img_index[int(i)] for i in ids]
    inputs = {"images": img_src.digest(image_names if img_src.zip is None else None),
              "annotations": ann_src.digest(list(ann_files.values())),
              "annotation_files": {c: hashlib.sha256(ann_src.read(nm)).hexdigest() for c, nm in ann_files.items()},
              "row_map": {"path": MAP_FILE.name, "sha256": _sha256_file(MAP_FILE)}}
    if img_src.zip is not None:
        # Informative only: later re-packagings of the archive (v2, v3b) may differ in bytes.
        inputs["images"]["md5_is_the_published_2008_zip"] = inputs["images"]["md5"] == ZIP_MD5_2008
    if have_tags:
        inputs["tags"] = (tag_src.digest(list(tag_index.values())) if tag_src.zip is None
                          else {**tag_src.digest(), "entries": len(tag_index)})
    for key, path in (("lall", lall), ("yall", yall)):
        if path is not None:
            inputs[key] = {"path": str(path), "sha256": _sha256_file(Path(path))}

    # ---- labels and tags of the selected rows, compared with the release
    out_l = labels_by_image[ids - 1]
    empty = int((out_l.sum(axis=1) == 0).sum())
    checks["labels"] = {"rows_without_label": empty}
    if empty:
        problems.append(f"labels: {empty} row(s) have no label (the release has none)")
    if release_l is not None:
        rep = _column_report(out_l, release_l[sel.start:sel.stop], list(LABEL_NAMES))
        checks["labels"]["vs_LAll"] = rep
        if not rep["equal"]:
            problems.append(f"labels: {rep['mismatched_rows']} row(s) differ from LAll (columns {rep['mismatches_per_column']})")
    out_y, text_source = None, None
    if have_tags:
        out_y = _tag_matrix(ids, tag_sets, vocab)
        if col_order is not None:
            out_y, vocab = out_y[:, col_order], [vocab[j] for j in col_order]
        text_source = f"rebuilt from the tag files ({len(vocab)} tags)"
        no_tag = int((out_y.sum(axis=1) == 0).sum())
        checks["tags"] = {"rows_without_vocabulary_tag": no_tag}
        if no_tag:
            problems.append(f"tags: {no_tag} row(s) have no vocabulary tag (the release has none)")
        if release_y is not None:
            if out_y.shape[1] == N_TAGS:
                rep = _column_report(out_y, release_y[sel.start:sel.stop])
                checks["tags"]["vs_YAll"] = rep
                if not rep["equal"]:
                    problems.append(f"tags: {rep['mismatched_rows']} row(s) differ from YAll in {len(rep['mismatches_per_column'])} column(s)")
            else:
                checks["tags"]["vs_YAll"] = {"equal": False, "reason": f"{out_y.shape[1]} columns, YAll has {N_TAGS}"}
    elif release_y is not None:
        out_y, text_source = release_y[sel.start:sel.stop], "copied from --yall (no tag files: not rebuilt)"
    checks["tags_source"] = text_source or "none (no tag files, no --yall): no mirflickr25k-yall.mat written"

    # ---- images (resumable), then the small outputs
    out.mkdir(parents=True, exist_ok=True)
    key_doc = {"inputs": {k: v.get("sha256") if isinstance(v, dict) and "sha256" in v else v for k, v in inputs.items()},
               "size": int(size), "rows": [sel.start, sel.stop], "ids_sha256": hashlib.sha256(ids.tobytes()).hexdigest(),
               "resize": RESIZE, "version": STATE_VERSION}
    state_key = hashlib.sha256(json.dumps(key_doc, sort_keys=True).encode()).hexdigest()
    fill = _fill_images(out, state_key, image_names, img_src, int(size), int(chunk), workers, progress)
    written = {OUT_IMAGES: out / OUT_IMAGES}
    _write_atomic(out / OUT_LABELS, _savemat_bytes("LAll", out_l))
    written[OUT_LABELS] = out / OUT_LABELS
    if out_y is not None:
        _write_atomic(out / OUT_TEXT, _savemat_bytes("YAll", np.ascontiguousarray(out_y, dtype=np.uint8)))
        written[OUT_TEXT] = out / OUT_TEXT
    lines = ["dcmh_row,image_id,status"] + [f"{sel.start + k},{int(i)},{s}" for k, (i, s) in enumerate(zip(ids, status))]
    _write_atomic(out / OUT_IDS, ("\n".join(lines) + "\n").encode())
    written[OUT_IDS] = out / OUT_IDS
    if have_tags:
        _write_atomic(out / OUT_VOCAB, ("\n".join(vocab) + "\n").encode("utf-8", errors="surrogateescape"))
        written[OUT_VOCAB] = out / OUT_VOCAB
    manifest = {
        "dataset": NAME, "rows": [sel.start, sel.stop], "n": n, "image_size": int(size), "resize": RESIZE,
        "label_columns": list(LABEL_NAMES), "text": text_source, "inputs": inputs, "images": fill,
        "outputs": {name: {"sha256": _sha256_file(p), "bytes": p.stat().st_size} for name, p in written.items()},
        "checks": checks, "problems": problems, "ok": not problems,
    }
    _write_atomic(out / OUT_MANIFEST, json.dumps(manifest, indent=1, sort_keys=False).encode())
    _report(manifest, echo)
    if problems:
        print(f"warning: {len(problems)} check(s) did not pass; details in {out / OUT_MANIFEST}"
              + (" (--strict: exit status 1)" if strict else ""), file=sys.stderr)
        for p in problems:
            print(f"warning: {p}", file=sys.stderr)
    return PrepareResult(out, manifest, problems)


def _report(m: dict, echo) -> None:
    c = m["checks"]
    r = c["rows"]
    echo(f"{NAME}: rows {r['selected']} ({r['n']}): {r['unique']} unique, {r['resolved_from_tags']} resolved from the tags, "
         f"{r['ambiguous']} ambiguous")
    vs = c["labels"].get("vs_LAll")
    echo("labels: " + ("not compared (no --lall)" if vs is None else
                       "equal to LAll in every column" if vs["equal"] else
                       f"{vs['mismatched_rows']} row(s) differ from LAll; per column {vs['mismatches_per_column']}"))
    if "vocabulary" in c:
        v = c["vocabulary"]
        echo(f"vocabulary: {v['size']} tags ({v['rule']}); the release has {v['expected']}")
    if "yall_columns" in c:
        y = c["yall_columns"]
        echo(f"YAll columns: {y['matched']} of {y['of']} matched to rebuilt tags ({y['tied_columns']} tied); order: {y['order']}")
    vy = c.get("tags", {}).get("vs_YAll")
    echo("tags: " + m["text"] if m["text"] else "tags: " + c["tags_source"])
    if vy is not None:
        echo("tags vs YAll: " + ("equal in every column" if vy["equal"] else
                                 vy.get("reason") or f"{vy['mismatched_rows']} row(s) differ; per column {vy['mismatches_per_column']}"))
    im = m["images"]
    echo(f"images: {m['n']} x {m['image_size']} x {m['image_size']} x 3 ({im['chunks_decoded_now']} chunk(s) decoded now, "
         f"{im['chunks_resumed']} resumed)")

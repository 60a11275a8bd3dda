"""Build the bundled ``mirflickr25k-mini`` files from the shared MIRFlickr-25K copy, deterministically.

Input (``--shared``, the folder described by its SOURCE.md): ``mirflickr25k-lall.mat`` (``LAll``),
``mirflickr25k-yall.mat`` (``YAll``) and ``images-first1000/`` (im1 ... im1000 at 256 px, with
``index.csv`` joining images to DCMH rows). Output (``--out``, default the package's
``datasets/_data/mirflickr25k-mini``):

* ``images/imN.jpg``: each of the 724 images with exactly one DCMH row, resized as a whole to
  ``IMAGE_SIZE`` x ``IMAGE_SIZE`` (aspect ratio not kept, as DCMH's ``IAll``) with Pillow's antialiased
  bicubic filter (the default of MATLAB's ``imresize``), saved as baseline JPEG, quality ``JPEG_QUALITY``,
  4:4:4 chroma, optimised Huffman tables, no ICC profile or other metadata;
* ``items.csv``: one row per item: row, image_id, dcmh_row, file, split (query / database), labels and
  tags as space-separated 0-based column indices of ``LAll`` / ``YAll``;
* ``SHA256SUMS``: sha256 of items.csv then of every image in item order (the loader's checksum order).

The protocol is ``datasets.mirflickr_mini.draw_protocol(labels, STORED_SEED)``. The same inputs with the
same Pillow/libjpeg give the same bytes; the script prints the dataset checksum for the loader's
``CHECKSUM`` and for SOURCE.md.

    python scripts/build_mirflickr_mini.py --shared ../shared/data/mirflickr25k
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import scipy.io  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from datasets import mirflickr_mini as mm  # noqa: E402

IMAGE_SIZE = 128
JPEG_QUALITY = 90
# sha256 of the shared inputs as documented in ../shared/data/mirflickr25k/SOURCE.md.
INPUT_SHA256 = {
    "mirflickr25k-lall.mat": "173eec1fb2603bb54c893467c127325556fbe5bc91dd7e647d136a8e4e9fd07d",
    "mirflickr25k-yall.mat": "a53d2ba6a5f3672b5e747aaa8b76d4af6be568d300715c6910d8c67bdef55f7e",
    "images-first1000/index.csv": "996ac424cfbdeda6e4756b6e05a54c4f04aebbd0be11273a7d6dc6fa6aea9592",
}


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _fail(msg: str) -> None:
    raise SystemExit(f"build_mirflickr_mini: {msg}")


def _shared_dir(path: Path) -> Path:
    """The folder holding the .mat files: the given one, or its ``mirflickr25k`` sub-folder."""
    for d in (path, path / "mirflickr25k", path / "data" / "mirflickr25k"):
        if (d / "mirflickr25k-lall.mat").is_file():
            return d
    _fail(f"{path}: no mirflickr25k-lall.mat there or in its mirflickr25k/ folder; pass the shared MIRFlickr folder")


def select_items(shared: Path) -> list[tuple[int, str, int]]:
    """(image_id, file, dcmh_row) of the images index.csv joins to exactly one DCMH row, by image id."""
    with open(shared / "images-first1000" / "index.csv", newline="", encoding="ascii") as fh:
        rows = [r for r in csv.DictReader(fh) if r["dcmh_row"].strip()]
    items = sorted((int(r["image_id"]), r["file"], int(r["dcmh_row"])) for r in rows)
    dcmh = np.array([it[2] for it in items])
    if len(items) != mm.N_ITEMS or np.unique(dcmh).size != dcmh.size or np.any(np.diff(dcmh) <= 0):
        _fail(f"index.csv gives {len(items)} images with a DCMH row (distinct, increasing expected); need {mm.N_ITEMS}")
    return items


def encode_image(path: Path) -> bytes:
    from PIL import Image

    with Image.open(path) as im:
        # Stored values, no colour management: a few sources carry an Adobe RGB or camera ICC profile,
        # which MATLAB's imread (behind DCMH's IAll) ignores as well.
        rgb = np.asarray(im.convert("RGB"))
    small = Image.fromarray(rgb).resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    # fromarray carries no metadata, so nothing but the pixels goes into the file.
    small.save(buf, "JPEG", quality=JPEG_QUALITY, subsampling=0, optimize=True)
    return buf.getvalue()


def build(shared: Path, out: Path) -> dict:
    shared = _shared_dir(Path(shared))
    for rel, want in INPUT_SHA256.items():
        p = shared / rel
        if not p.is_file():
            _fail(f"missing input {p}")
        if _sha256(p.read_bytes()) != want:
            _fail(f"{p} has sha256 {_sha256(p.read_bytes())[:12]}..., not the documented {want[:12]}...")
    items = select_items(shared)
    rows = np.array([it[2] for it in items])
    lall = np.asarray(scipy.io.loadmat(shared / "mirflickr25k-lall.mat", variable_names=["LAll"])["LAll"])
    yall = scipy.io.loadmat(shared / "mirflickr25k-yall.mat", variable_names=["YAll"])["YAll"]
    labels = lall[rows].astype(np.uint8)
    tags = sp.csr_matrix(yall[rows] if sp.issparse(yall) else np.asarray(yall)[rows])
    if labels.shape != (mm.N_ITEMS, mm.N_LABELS) or tags.shape != (mm.N_ITEMS, mm.N_TAGS):
        _fail(f"LAll/YAll rows have shapes {labels.shape}/{tags.shape}")
    if not ((labels == 0) | (labels == 1)).all() or not np.isin(tags.data, (0, 1)).all():
        _fail("LAll/YAll hold values other than 0/1")
    tags.eliminate_zeros()
    tags.sort_indices()
    n_lab, n_tag = labels.sum(axis=1), np.diff(tags.indptr)
    if n_lab.min() < 1 or n_tag.min() < 1:
        _fail(f"{int((n_lab == 0).sum())} item(s) without a label, {int((n_tag == 0).sum())} without a tag")

    protocol = mm.draw_protocol(labels, mm.STORED_SEED)
    is_query = np.zeros(mm.N_ITEMS, dtype=bool)
    is_query[protocol.query] = True

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    files = [f"im{image_id}.jpg" for image_id, _, _ in items]
    for stale in (out / "images").glob("*"):  # a rebuild over an older one must not leave extra files
        if stale.name not in files:
            stale.unlink()
    csv_buf = io.StringIO()
    w = csv.writer(csv_buf, lineterminator="\n")
    w.writerow(mm.ITEMS_HEADER)
    for i, ((image_id, _, dcmh_row), name) in enumerate(zip(items, files)):
        w.writerow([i, image_id, dcmh_row, name, "query" if is_query[i] else "database",
                    " ".join(map(str, np.flatnonzero(labels[i]))),
                    " ".join(map(str, tags.indices[tags.indptr[i]:tags.indptr[i + 1]]))])
    blobs = [("items.csv", csv_buf.getvalue().encode("ascii"))]
    for (_, src, _), name in zip(items, files):
        blobs.append((f"images/{name}", encode_image(shared / "images-first1000" / src)))
    total = hashlib.sha256()
    sums = []
    for rel, data in blobs:
        (out / rel).write_bytes(data)
        total.update(data)
        sums.append(f"{_sha256(data)}  {rel}\n")
    (out / "SHA256SUMS").write_text("".join(sums), encoding="ascii")
    image_bytes = sum(len(d) for r, d in blobs[1:])
    return {
        "checksum": total.hexdigest(),
        "sha256sums": _sha256("".join(sums).encode("ascii")),
        "items_csv_bytes": len(blobs[0][1]),
        "image_bytes": image_bytes,
        "n_query": int(protocol.query.size),
        "n_train": int(protocol.train.size),
        "label_counts_query": labels[protocol.query].sum(axis=0).tolist(),
        "label_counts_train": labels[protocol.train].sum(axis=0).tolist(),
        "labels_per_item": (int(n_lab.min()), float(n_lab.mean()), int(n_lab.max())),
        "tags_per_item": (int(n_tag.min()), float(n_tag.mean()), int(n_tag.max())),
        "tags_used": int((np.diff(tags.tocsc().indptr) > 0).sum()),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data" / "mirflickr25k",
                    help="the shared MIRFlickr-25K folder (with images-first1000/), or a folder above it")
    ap.add_argument("--out", type=Path, default=mm.DATA_DIR, help="output folder (default: the package's bundle)")
    args = ap.parse_args(argv)
    info = build(args.shared, args.out)
    for k, v in info.items():
        print(f"{k}: {v}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

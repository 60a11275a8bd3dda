"""Wiki (Rasiwasia et al., ACM MM 2010), bundled with the package: the default dataset.

2866 image-text pairs from Wikipedia featured articles, 10 single-label classes. Image: 128-d SIFT
bag-of-visual-words histogram (L1-normalised); text: 10-d LDA topic proportions. The bundled file
``_data/wiki.npz`` is a float32 conversion of the common ``wiki_data.mat`` (image values exact, text
values within 3e-8); its provenance, the conversion and the licence note are in ``_data/SOURCE.md``.

Protocols (option ``database``):

* ``train`` (default): the standard fixed split built into the release: the 693 test items are the
  queries, the 2173 training items are both the retrieval database and the training set (no seed:
  nothing is drawn);
* ``unseen``: the same 2173 training items; the 693 test items are split into 231 queries and a
  database of 462 items no method was fitted on, so that a model that memorises its training images
  cannot score by it. The split is stratified by class (a third of each class's test items, rounded,
  are queries), drawn with seed 0 by :func:`draw_unseen_queries` and stored in
  ``_data/wiki-unseen-queries.txt``, which the loader reads.

Items keep the file order: training rows first, then test rows.
"""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from cmhcore.errors import DataFileError
from cmhcore.params import Options
from datasets import check_options
from datasets._io import read_mat
from datasets.base import Dataset, Protocol, file_checksum, read_index_file

__all__ = ["load", "files_present", "required_files", "standard_protocol", "unseen_protocol", "draw_unseen_queries",
           "BUNDLED_FILE", "BUNDLED_SHA256", "UNSEEN_QUERIES_FILE", "UNSEEN_SEED", "N_TRAIN", "N_TEST"]

BUNDLED_FILE = Path(__file__).parent / "_data" / "wiki.npz"
# sha256 of the bundled file: the dataset checksum every Wiki result records.
BUNDLED_SHA256 = "a1b6ba0bab9429a1fd3d32ebafb26c42432b38b5d382312372ac03388024bce1"
# sha256 of the source file it was converted from (cuilimeng/MCTD wiki_data.mat).
SOURCE_SHA256 = "618dda68117816abb1264ca8dcf4350a547467d856ff6581d3d874bbf757dfc0"
N_TRAIN, N_TEST = 2173, 693
UNSEEN_QUERIES_FILE = Path(__file__).parent / "_data" / "wiki-unseen-queries.txt"
UNSEEN_SEED = 0
# Believed order of the class ids 1..10 (the original release's categories.list); not stored in the file.
CLASS_NAMES = ("art", "biology", "geography", "history", "literature", "media", "music", "royalty", "sport", "warfare")


# database: "train" is the standard protocol (the training set is the database); "unseen" keeps the
# 2173 training items and splits the 693 test items into queries and a database of unseen items.
OPTION_CONSTRAINTS: dict[str, list] = {"database": [Options({"train", "unseen"})]}
PIXELS = False  # SIFT features on the image side: image-feature options do not apply


def required_files(data_root=None, **options) -> list[Path]:
    return [BUNDLED_FILE]


def files_present(data_root=None, **options) -> tuple[bool, str]:
    if BUNDLED_FILE.is_file():
        return True, ""
    return False, f"wiki: the bundled file {BUNDLED_FILE} is missing; reinstall the package"


def standard_protocol() -> Protocol:
    train = np.arange(N_TRAIN)
    return Protocol("wiki-standard-693q-2173db", None, query=np.arange(N_TRAIN, N_TRAIN + N_TEST),
                    database=train, train=train)


def draw_unseen_queries(labels: np.ndarray, seed: int = UNSEEN_SEED) -> np.ndarray:
    """The query items of the ``unseen`` protocol: for each class in class order, a third (rounded) of its
    test items, drawn with one ``np.random.default_rng(seed)`` stream; sorted row indices."""
    test = np.arange(N_TRAIN, N_TRAIN + N_TEST)
    classes = np.asarray(labels)[test].argmax(axis=1)  # Wiki is single-label
    rng = np.random.default_rng(seed)
    picks = [rng.permutation(test[classes == c])[: int(round((classes == c).sum() / 3))]
             for c in range(labels.shape[1])]
    return np.sort(np.concatenate(picks))


def unseen_protocol() -> Protocol:
    """Training set as in the standard protocol; the stored queries and the other test items as database."""
    query = read_index_file("wiki", UNSEEN_QUERIES_FILE, low=N_TRAIN, high=N_TRAIN + N_TEST,
                            how_to_fix="reinstall the package")
    database = np.setdiff1d(np.arange(N_TRAIN, N_TRAIN + N_TEST), query)
    return Protocol(f"wiki-unseen-{query.size}q-{database.size}db", UNSEEN_SEED, query=query, database=database,
                    train=np.arange(N_TRAIN))


def load(data_root=None, **options) -> Dataset:
    """The bundled Wiki dataset with the protocol ``database`` names (default ``train``: the standard one);
    ``data_root`` is ignored: nothing to find."""
    check_options("wiki", options, features=False)
    if not BUNDLED_FILE.is_file():
        raise DataFileError(files_present()[1])
    try:
        with np.load(BUNDLED_FILE, allow_pickle=False) as z:
            image, text, labels = z["image"], z["text"], z["labels"]
    except Exception as exc:
        raise DataFileError(
            f"wiki: the bundled file {BUNDLED_FILE} cannot be read ({type(exc).__name__}); reinstall the package"
        ) from None
    checksum = file_checksum(BUNDLED_FILE)
    if checksum != BUNDLED_SHA256:
        # Every Wiki result records this checksum: a changed bundle must not pass for the documented one.
        raise DataFileError(f"wiki: the bundled file {BUNDLED_FILE} has sha256 {checksum[:12]}..., not the documented "
                            f"{BUNDLED_SHA256[:12]}... (see _data/SOURCE.md); reinstall the package")
    protocol = unseen_protocol() if options.get("database", "train") == "unseen" else standard_protocol()
    dataset = Dataset(
        "wiki", image, text, labels, checksum, protocol,
        meta={"source": "wiki_data.mat (Rasiwasia et al. 2010) via datasets/_data/SOURCE.md",
              "source_sha256": SOURCE_SHA256, "classes": ",".join(CLASS_NAMES), "single_label": True},
    )
    protocol.validate_for(dataset)
    return dataset


# ---------------------------------------------------------------- conversion (run once, kept for provenance)

def convert(mat_path: Path | str, out_path: Path | str = BUNDLED_FILE) -> Path:
    """Convert ``wiki_data.mat`` to the bundled npz: [train; test] rows, float32 features, uint8 one-hot.

    The image histograms are float32 values in the source (exact in float32); the LDA topic
    proportions lose at most ~3e-8 in float32. The zip entries get a fixed timestamp so that the
    same input and zlib give the same bytes.
    """
    m = read_mat("wiki", Path(mat_path), ["I_tr", "I_te", "T_tr", "T_te", "L_tr", "L_te"])
    image = np.vstack([m["I_tr"], m["I_te"]]).astype(np.float32)
    text = np.vstack([m["T_tr"], m["T_te"]]).astype(np.float32)
    class_id = np.concatenate([m["L_tr"].ravel(), m["L_te"].ravel()]).astype(np.int64)
    if image.shape != (N_TRAIN + N_TEST, 128) or text.shape != (N_TRAIN + N_TEST, 10):
        raise DataFileError(f"wiki: {mat_path}: unexpected shapes image {image.shape}, text {text.shape}")
    if class_id.min() < 1 or class_id.max() > 10:
        raise DataFileError(f"wiki: {mat_path}: class ids outside 1..10")
    labels = np.zeros((class_id.size, 10), dtype=np.uint8)
    labels[np.arange(class_id.size), class_id - 1] = 1
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out_path, "w") as zf:
        for name, arr in (("image", image), ("text", text), ("labels", labels)):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, buf.getvalue(), compresslevel=9)
    return out_path

"""The bundled Wiki dataset (datasets/wiki.py, datasets/_data/wiki.npz)."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

import datasets
from cmhcore.errors import DataFileError, InputError
from datasets import wiki

SOURCE_MAT = Path(__file__).resolve().parents[3] / "shared" / "data" / "wiki" / "wiki_data.mat"

# Per-class counts (class ids 1..10) of the standard split, as documented for the release.
TRAIN_COUNTS = [138, 272, 244, 248, 202, 178, 186, 144, 214, 347]
TEST_COUNTS = [34, 88, 96, 85, 65, 58, 51, 41, 71, 104]


@pytest.fixture(scope="module")
def ds():
    return wiki.load()


def test_loads_by_name_without_any_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv(datasets.DATA_ROOT_ENV, str(tmp_path / "nowhere"))
    monkeypatch.chdir(tmp_path)
    d = datasets.load_dataset("wiki")
    assert d.name == "wiki" and d.n_items == 2866
    assert datasets.dataset_status("wiki") == (True, "")


def test_shapes_and_types(ds):
    assert ds.image.shape == (2866, 128) and ds.image.dtype == np.float32
    assert ds.text.shape == (2866, 10) and ds.text.dtype == np.float32
    assert ds.labels.shape == (2866, 10) and ds.labels.dtype == np.uint8
    assert (ds.labels.sum(axis=1) == 1).all()                     # single-label
    assert ds.image_kind == "features"
    np.testing.assert_allclose(ds.image.sum(axis=1), 1.0, atol=1e-5)  # L1-normalised BoVW
    np.testing.assert_allclose(ds.text.sum(axis=1), 1.0, atol=1e-5)   # topic proportions
    assert (ds.image >= 0).all() and (ds.text > 0).all()


def test_class_counts_match_the_documented_split(ds):
    assert ds.labels[:2173].sum(axis=0).tolist() == TRAIN_COUNTS
    assert ds.labels[2173:].sum(axis=0).tolist() == TEST_COUNTS


def test_standard_protocol(ds):
    p = ds.protocol
    assert p.seed is None
    assert p.sizes == {"query": 693, "database": 2173, "train": 2173}
    np.testing.assert_array_equal(p.query, np.arange(2173, 2866))
    np.testing.assert_array_equal(p.database, np.arange(2173))
    np.testing.assert_array_equal(p.train, p.database)
    assert p.train_in_database
    assert p.digest == wiki.load().protocol.digest


def test_duplicate_image_quirk_is_kept(ds):
    # 10 pairs of identical image vectors; rows 386/533 carry different classes (SOURCE.md).
    assert np.unique(ds.image, axis=0).shape[0] == 2856
    np.testing.assert_array_equal(ds.image[386], ds.image[533])
    assert ds.labels[386].argmax() != ds.labels[533].argmax()


def test_checksum_is_the_bundled_file_sha256_and_stable(ds):
    digest = hashlib.sha256(wiki.BUNDLED_FILE.read_bytes()).hexdigest()
    assert ds.checksum == digest == wiki.BUNDLED_SHA256
    assert wiki.load().checksum == ds.checksum
    assert (wiki.BUNDLED_FILE.parent / "SOURCE.md").is_file()


def test_a_modified_bundle_is_refused(tmp_path, monkeypatch):
    copy = tmp_path / "wiki.npz"
    copy.write_bytes(wiki.BUNDLED_FILE.read_bytes() + b"\0")
    monkeypatch.setattr(wiki, "BUNDLED_FILE", copy)
    with pytest.raises(DataFileError, match="not the documented"):
        wiki.load()


def test_rejects_unknown_options():
    with pytest.raises(InputError, match="wiki: unknown option"):
        wiki.load(seed=3)
    with pytest.raises(InputError, match=r"^wiki option database='test' is invalid; valid: one of 'train', 'unseen'$"):
        wiki.load(database="test")


# ---------------------------------------------------------------- database: unseen

@pytest.fixture(scope="module")
def unseen():
    return wiki.load(database="unseen")


def test_default_and_explicit_train_database_are_the_standard_protocol(ds):
    assert ds.protocol.digest == "3c2fbd98a751c310"  # the standard split every recorded Wiki run used
    assert wiki.load(database="train").protocol.digest == ds.protocol.digest


def test_unseen_protocol_splits_the_test_items_and_keeps_training(ds, unseen):
    p = unseen.protocol
    assert p.name == "wiki-unseen-231q-462db" and p.seed == wiki.UNSEEN_SEED == 0
    assert p.sizes == {"query": 231, "database": 462, "train": 2173}
    np.testing.assert_array_equal(p.train, ds.protocol.train)
    assert np.intersect1d(p.query, p.database).size == 0
    assert np.intersect1d(p.database, p.train).size == 0 and not p.train_in_database
    np.testing.assert_array_equal(np.union1d(p.query, p.database), np.arange(2173, 2866))
    assert unseen.checksum == ds.checksum  # the same data, another protocol


def test_unseen_split_is_stratified_by_class(unseen):
    p = unseen.protocol
    expected = [round(c / 3) for c in TEST_COUNTS]
    assert unseen.labels[p.query].sum(axis=0).tolist() == expected
    assert unseen.labels[p.database].sum(axis=0).tolist() == [c - e for c, e in zip(TEST_COUNTS, expected)]


def test_unseen_split_is_stored_and_is_the_seeded_draw(unseen):
    stored = np.loadtxt(wiki.UNSEEN_QUERIES_FILE, dtype=np.int64)
    np.testing.assert_array_equal(unseen.protocol.query, stored)
    np.testing.assert_array_equal(wiki.draw_unseen_queries(unseen.labels, seed=0), stored)
    other = wiki.draw_unseen_queries(unseen.labels, seed=1)
    assert other.size == stored.size and not np.array_equal(other, stored)
    assert wiki.load(database="unseen").protocol.digest == unseen.protocol.digest == "0227525589c77376"


def test_a_damaged_stored_split_is_one_line(tmp_path, monkeypatch):
    bad = tmp_path / "q.txt"
    bad.write_text("2200\n2190\n")  # not increasing
    monkeypatch.setattr(wiki, "UNSEEN_QUERIES_FILE", bad)
    with pytest.raises(DataFileError, match=r"q.txt must hold increasing item indices in \[2173, 2866\)"):
        wiki.load(database="unseen")
    monkeypatch.setattr(wiki, "UNSEEN_QUERIES_FILE", tmp_path / "missing.txt")
    with pytest.raises(DataFileError, match="cannot read the stored split"):
        wiki.load(database="unseen")


@pytest.mark.skipif(not SOURCE_MAT.is_file(), reason="shared source wiki_data.mat not available")
def test_bundled_file_is_the_conversion_of_the_source(tmp_path, ds):
    assert hashlib.sha256(SOURCE_MAT.read_bytes()).hexdigest() == wiki.SOURCE_SHA256
    out = wiki.convert(SOURCE_MAT, tmp_path / "w.npz")
    with np.load(out) as z:
        np.testing.assert_array_equal(z["image"], ds.image)
        np.testing.assert_array_equal(z["text"], ds.text)
        np.testing.assert_array_equal(z["labels"], ds.labels)
    import scipy.io

    m = scipy.io.loadmat(SOURCE_MAT)
    np.testing.assert_array_equal(ds.labels, np.vstack([m["L_train"], m["L_test"]]))
    np.testing.assert_allclose(ds.text, np.vstack([m["T_tr"], m["T_te"]]), rtol=1e-7, atol=0)
    np.testing.assert_array_equal(ds.image, np.vstack([m["I_tr"], m["I_te"]]))  # exact in float32

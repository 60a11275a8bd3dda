"""The bundled Wiki dataset (datasets/wiki.py, datasets/_data/wiki.npz)."""
import hashlib
from pathlib import Path

import numpy as np
import pytest

import datasets
from benchmark.errors import DataFileError, InputError
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

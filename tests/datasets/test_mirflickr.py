"""MIRFlickr-25K loader (datasets/mirflickr.py): the real DCMH LAll/YAll plus image files written here."""
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

import datasets
from cmhcore.errors import DataFileError, InputError
from datasets import mirflickr
from datasets.base import file_checksum

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
REAL = SHARED / "mirflickr25k"
needs_real = pytest.mark.skipif(not (REAL / "mirflickr25k-lall.mat").is_file(),
                                reason="real MIRFlickr LAll/YAll not available")
# Positives per LAll column, documented with the release (shared/data/mirflickr25k/SOURCE.md).
COLUMN_POSITIVES = [2647, 179, 644, 986, 3230, 581, 4614, 1554, 813, 6320, 704, 4743, 2243, 7848, 7413, 2740,
                    811, 1133, 6818, 8463, 1840, 2450, 3981, 2885]


def _one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.fixture(scope="module")
def xall(tmp_path_factory):
    """A GIST-like feature file in the real release format: v5 .mat holding XAll (20015 x 16)."""
    path = tmp_path_factory.mktemp("feat") / "mirflickr25k-xall-test.mat"
    feats = np.random.default_rng(0).random((20015, 16)).astype(np.float32)
    scipy.io.savemat(path, {"XAll": feats})
    return path, feats


@pytest.fixture(scope="module")
def real(xall):
    return mirflickr.load(SHARED, image_features=str(xall[0]))


@needs_real
def test_real_labels_text_and_written_features(real, xall):
    ds = real
    assert ds.name == "mirflickr25k" and ds.n_items == 20015
    np.testing.assert_array_equal(ds.image, xall[1])
    assert ds.labels.dtype == np.uint8 and ds.labels.shape == (20015, 24)
    assert ds.labels.sum(axis=0).tolist() == COLUMN_POSITIVES
    assert sp.issparse(ds.text) and ds.text.format == "csr" and ds.text.dtype == np.float32
    y = scipy.io.loadmat(REAL / "mirflickr25k-yall.mat")["YAll"]
    assert ds.text.shape == (20015, 1386)
    assert (ds.text != sp.csr_matrix(y.astype(np.float32))).nnz == 0
    assert ds.checksum == file_checksum(REAL / "mirflickr25k-lall.mat", REAL / "mirflickr25k-yall.mat", xall[0])


@needs_real
def test_real_protocol(real):
    p = real.protocol
    assert p.seed == 0
    assert p.sizes == {"query": 2000, "database": 18015, "train": 10000}
    assert p.train_in_database and np.intersect1d(p.query, p.train).size == 0


@needs_real
def test_protocol_seeded(xall):
    a = mirflickr.load(SHARED, image_features=str(xall[0]), seed=0).protocol
    b = mirflickr.load(SHARED, image_features=str(xall[0]), seed=0).protocol
    c = mirflickr.load(SHARED, image_features=str(xall[0]), seed=1, n_train=5000).protocol
    assert a.digest == b.digest != c.digest
    assert c.sizes == {"query": 2000, "database": 18015, "train": 5000}


@needs_real
def test_npy_features_by_name_in_the_data_root(tmp_path):
    # Relative names are looked up in <root> and <root>/mirflickr25k, like the DCMH files.
    (tmp_path / "mirflickr25k").mkdir()
    for f in ("mirflickr25k-lall.mat", "mirflickr25k-yall.mat"):
        (tmp_path / "mirflickr25k" / f).symlink_to(REAL / f)
    feats = np.random.default_rng(1).standard_normal((20015, 8)).astype(np.float32)
    np.save(tmp_path / "cnn.npy", feats)
    ds = datasets.load_dataset("mirflickr25k", data_root=tmp_path, image_features="cnn.npy")
    np.testing.assert_array_equal(ds.image, feats)
    assert ds.meta["image_file"] == "cnn.npy"


# ---------------------------------------------------------------- raw images (tiny fake release)



def _fake_release(root, n=12, h=5, w=7, layout="matlab", labels=None):
    rng = np.random.default_rng(0)
    lab = labels if labels is not None else (rng.random((n, 24)) < 0.3).astype(np.uint8)
    if labels is None:
        lab[lab.sum(1) == 0, 0] = 1
    tags = (rng.random((n, 30)) < 0.2).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)
    stored = {"nhwc": pixels, "nchw": pixels.transpose(0, 3, 1, 2), "matlab": pixels.transpose(1, 2, 3, 0)}[layout]
    scipy.io.savemat(root / "mirflickr25k-lall.mat", {"LAll": lab})
    scipy.io.savemat(root / "mirflickr25k-yall.mat", {"YAll": tags})
    scipy.io.savemat(root / "mirflickr25k-iall.mat", {"IAll": stored})
    return lab, tags, pixels


@pytest.mark.parametrize("layout", ["matlab", "nchw", "nhwc"])
def test_raw_images_by_default_in_any_layout(tmp_path, layout):
    lab, tags, pixels = _fake_release(tmp_path, layout=layout)
    ds = mirflickr.load(tmp_path, n_query=3, n_train=4)
    assert ds.image_kind == "pixels" and ds.image.dtype == np.uint8
    np.testing.assert_array_equal(ds.image, pixels)
    np.testing.assert_array_equal(ds.labels, lab)
    assert ds.protocol.sizes == {"query": 3, "database": 9, "train": 4}


def test_raw_images_mat73(tmp_path, write_mat73):
    pytest.importorskip("h5py")
    lab, tags, pixels = _fake_release(tmp_path)
    write_mat73(tmp_path / "mirflickr25k-iall.mat", {"IAll": pixels.transpose(1, 2, 3, 0)})
    write_mat73(tmp_path / "mirflickr25k-yall.mat", {"YAll": sp.csr_matrix(tags)})
    ds = mirflickr.load(tmp_path, n_query=3, n_train=4)
    np.testing.assert_array_equal(ds.image, pixels)
    np.testing.assert_array_equal(ds.text.toarray(), tags)


# ---------------------------------------------------------------- missing and corrupt files

def test_missing_files_one_line(tmp_path):
    with pytest.raises(DataFileError) as err:
        mirflickr.load(tmp_path)
    msg = _one_line(err)
    assert "mirflickr25k-lall.mat" in msg and str(tmp_path / "mirflickr25k") in msg and "DCMH" in msg
    present, reason = mirflickr.files_present(tmp_path)
    assert not present and reason == msg


def test_missing_image_side_names_it(tmp_path):
    _fake_release(tmp_path)
    (tmp_path / "mirflickr25k-iall.mat").unlink()
    with pytest.raises(DataFileError) as err:
        mirflickr.load(tmp_path, n_query=3, n_train=4)
    assert "mirflickr25k-iall.mat" in _one_line(err) and "image_features" in str(err.value)
    with pytest.raises(DataFileError, match="missing file nope.npy"):
        mirflickr.load(tmp_path, image_features="nope.npy")


def _corrupt(tmp_path, case):
    lab, tags, _ = _fake_release(tmp_path)
    n = lab.shape[0]
    if case == "truncated":
        p = tmp_path / "mirflickr25k-lall.mat"
        p.write_bytes(p.read_bytes()[:60])
    elif case == "wrong_key":
        scipy.io.savemat(tmp_path / "mirflickr25k-yall.mat", {"Y": tags})
    elif case == "rows_differ":
        scipy.io.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": tags[:-1]})
    elif case == "non_binary_labels":
        bad = lab.copy()
        bad[2, 3] = 2
        scipy.io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": bad})
    elif case == "label_count":
        scipy.io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": lab[:, :23]})
    elif case == "empty_label_row":
        bad = lab.copy()
        bad[4] = 0
        scipy.io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": bad})
    elif case == "nan_features":
        f = np.ones((n, 4))
        f[1, 1] = np.nan
        scipy.io.savemat(tmp_path / "feat.mat", {"XAll": f})
        return {"image_features": "feat.mat"}
    elif case == "feature_rows":
        np.save(tmp_path / "feat.npy", np.ones((n + 1, 4), np.float32))
        return {"image_features": "feat.npy"}
    elif case == "not_a_mat":
        (tmp_path / "mirflickr25k-iall.mat").write_text("hello")
    elif case == "wrong_pixel_shape":
        scipy.io.savemat(tmp_path / "mirflickr25k-iall.mat", {"IAll": np.zeros((n, 5, 7), np.uint8)})
    return {}


@pytest.mark.parametrize("case, expect", [
    ("truncated", "cannot read"), ("wrong_key", "no variable YAll"), ("rows_differ", "rows must match"),
    ("non_binary_labels", "must be 0/1"), ("label_count", "23 columns"), ("empty_label_row", "no label"),
    ("nan_features", "NaN"), ("feature_rows", "has 13 rows"), ("not_a_mat", "cannot read"),
    ("wrong_pixel_shape", "2-D feature matrix or 4-D uint8"),
])
def test_corrupt_files_one_line(tmp_path, case, expect):
    opts = _corrupt(tmp_path, case)
    with pytest.raises(DataFileError) as err:
        mirflickr.load(tmp_path, n_query=3, n_train=4, **opts)
    assert expect in _one_line(err)


def test_bad_options_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown option"):
        mirflickr.load(tmp_path, image_feature="x.npy")
    with pytest.raises(InputError, match="seed=-1"):
        mirflickr.load(tmp_path, seed=-1)
    _fake_release(tmp_path)
    with pytest.raises(InputError, match="do not fit 12 items"):
        mirflickr.load(tmp_path)  # the standard 2000 queries cannot come from 12 items


# ---------------------------------------------------------------- lazy raw images (.npy first, then v7.3)

def test_raw_images_npy_is_memory_mapped_and_preferred(tmp_path):
    from datasets.images import ImageArray

    lab, tags, pixels = _fake_release(tmp_path)
    (tmp_path / "mirflickr25k-iall.mat").write_text("an unreadable .mat that must not be opened")
    npy = tmp_path / "mirflickr25k" / "mirflickr25k-iall.npy"
    npy.parent.mkdir()
    np.save(npy, pixels)
    ds = mirflickr.load(tmp_path, n_query=3, n_train=4)
    assert isinstance(ds.image, ImageArray) and isinstance(ds.image._source.arr, np.memmap)
    assert ds.image.shape == pixels.shape and ds.image_kind == "pixels"
    assert ds.meta["image_file"] == "mirflickr25k-iall.npy"
    assert ds.checksum == file_checksum(tmp_path / "mirflickr25k-lall.mat", tmp_path / "mirflickr25k-yall.mat", npy)
    train, _, _ = ds.subset(ds.protocol.train)
    assert isinstance(train, ImageArray) and train._source is ds.image._source
    np.testing.assert_array_equal(train[:], pixels[ds.protocol.train])


def test_raw_images_mat73_are_lazy(tmp_path, write_mat73):
    from datasets.images import ImageArray

    lab, tags, pixels = _fake_release(tmp_path)
    write_mat73(tmp_path / "mirflickr25k-iall.mat", {"IAll": pixels})  # MATLAB n x H x W x 3
    ds = mirflickr.load(tmp_path, n_query=3, n_train=4)
    assert isinstance(ds.image, ImageArray) and ds.image._source._file is None  # nothing read yet
    q, _, _ = ds.subset(ds.protocol.query)
    np.testing.assert_array_equal(q[:], pixels[ds.protocol.query])
    np.testing.assert_array_equal(ds.image, pixels)


@pytest.mark.parametrize("write, expect", [
    (lambda p, px: p.write_bytes(b"\x93NUMPY\x01\x00garbage"), "cannot read"),
    (lambda p, px: np.save(p, px.astype(np.float32)), "must be uint8 with 4 axes"),
    (lambda p, px: np.save(p, px[:-1]), "do not fit 12 items"),
])
def test_bad_npy_images_one_line(tmp_path, write, expect):
    _, _, pixels = _fake_release(tmp_path)
    write(tmp_path / "mirflickr25k-iall.npy", pixels)
    with pytest.raises(DataFileError) as err:
        mirflickr.load(tmp_path, n_query=3, n_train=4)
    msg = _one_line(err)
    assert msg.startswith("mirflickr25k: ") and expect in msg and "mirflickr25k-iall.npy" in msg


def test_unseen_database_keeps_queries_and_training_items_and_drops_training_from_the_database(tmp_path):
    _fake_release(tmp_path, n=20)
    std = mirflickr.load(tmp_path, n_query=4, n_train=6).protocol
    uns = mirflickr.load(tmp_path, n_query=4, n_train=6, database="unseen").protocol
    np.testing.assert_array_equal(uns.query, std.query)
    np.testing.assert_array_equal(uns.train, std.train)
    np.testing.assert_array_equal(uns.database, np.setdiff1d(std.database, std.train))
    assert uns.sizes == {"query": 4, "database": 10, "train": 6}
    assert not uns.train_in_database and std.train_in_database
    assert "unseen" in uns.name and "unseen" not in std.name
    # database="train" is the default protocol itself
    assert mirflickr.load(tmp_path, n_query=4, n_train=6, database="train").protocol.digest == std.digest
    with pytest.raises(InputError, match=r"^mirflickr25k option database='seen' is invalid; valid: one of 'train', 'unseen'$"):
        mirflickr.load(tmp_path, n_query=4, n_train=6, database="seen")

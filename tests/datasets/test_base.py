"""Protocols (seeded, stored splits), label masking and the Dataset container (datasets/base.py)."""
import numpy as np
import pytest
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError
from datasets.base import Dataset, Protocol, file_checksum, mask_labels, random_protocol


def _labels(n=300, m=6, seed=0):
    rng = np.random.default_rng(seed)
    lab = (rng.random((n, m)) < 0.3).astype(np.uint8)
    lab[lab.sum(1) == 0, 0] = 1
    return lab


# ---------------------------------------------------------------- protocols

def test_random_protocol_sizes_and_disjointness():
    p = random_protocol("p", 1000, n_query=100, n_train=300, seed=3)
    assert p.sizes == {"query": 100, "database": 900, "train": 300}
    assert p.train_in_database
    assert np.intersect1d(p.query, p.train).size == 0
    assert np.intersect1d(p.query, p.database).size == 0
    assert np.union1d(p.query, p.database).size == 1000  # query + database cover every item


def test_random_protocol_is_reproducible_by_seed():
    a = random_protocol("p", 500, 50, 100, seed=7)
    b = random_protocol("p", 500, 50, 100, seed=7)
    c = random_protocol("p", 500, 50, 100, seed=8)
    for part in ("query", "database", "train"):
        np.testing.assert_array_equal(getattr(a, part), getattr(b, part))
    assert a.digest == b.digest != c.digest
    assert not np.array_equal(a.query, c.query)


def test_random_protocol_explicit_database_and_candidates():
    p = random_protocol("p", 100, 10, 20, seed=0, n_database=50)
    assert p.sizes == {"query": 10, "database": 50, "train": 20}
    cand = np.arange(0, 100, 2)
    q = random_protocol("p", 100, 5, 10, seed=0, candidates=cand)
    assert np.isin(np.concatenate([q.query, q.database]), cand).all()


@pytest.mark.parametrize("kwargs", [dict(n_query=0, n_train=5), dict(n_query=90, n_train=20),
                                    dict(n_query=10, n_train=5, n_database=95)])
def test_random_protocol_impossible_sizes(kwargs):
    with pytest.raises(InputError, match="do not fit 100 items"):
        random_protocol("p", 100, seed=0, **kwargs)


def test_protocol_indices_are_read_only_and_leaks_rejected():
    p = random_protocol("p", 50, 5, 10, seed=0)
    with pytest.raises(ValueError):
        p.query[0] = 1
    with pytest.raises(InputError, match="leak into the training set"):
        Protocol("bad", 0, query=[0, 1], database=[2, 3], train=[1, 2])
    with pytest.raises(InputError, match="overlap"):
        Protocol("bad", 0, query=[0, 1], database=[1, 3], train=[3])
    with pytest.raises(InputError, match="duplicates"):
        Protocol("bad", 0, query=[0, 0], database=[1], train=[1])


def test_protocol_save_load_roundtrip(tmp_path):
    p = random_protocol("p", 200, 20, 50, seed=5)
    q = Protocol.load(p.save(tmp_path / "split.npz"))
    assert q.name == p.name and q.seed == 5 and q.digest == p.digest
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataFileError, match="cannot be read"):
        Protocol.load(tmp_path / "bad.npz")


def test_validate_for_range_and_empty_label_sets():
    lab = _labels(20)
    ds = Dataset("d", np.zeros((20, 2), np.float32), np.zeros((20, 3), np.float32), lab, "x",
                 random_protocol("p", 20, 2, 5, seed=0))
    with pytest.raises(InputError, match=r"outside \[0, 20\)"):
        Protocol("p", 0, query=[25], database=[1], train=[1]).validate_for(ds)
    lab0 = lab.copy()
    lab0[3] = 0
    ds0 = Dataset("d", ds.image, ds.text, lab0, "x", ds.protocol)
    with pytest.raises(InputError, match="empty label set"):
        Protocol("p", 0, query=[3], database=[1, 2], train=[1]).validate_for(ds0)
    Protocol("p", 0, query=[1], database=[2], train=[3]).validate_for(ds0)  # training items may be unlabeled


# ---------------------------------------------------------------- label masking

def test_mask_rate_zero_keeps_everything():
    lab = _labels()
    m = mask_labels(lab, 0.0, seed=1)
    assert m.labeled.all() and m.n_labeled == lab.shape[0]
    np.testing.assert_array_equal(m.labels, lab)


@pytest.mark.parametrize("n, rate", [(300, 0.7), (2173, 0.7), (2173, 0.3), (10, 0.25)])
def test_mask_rate_hides_round_rate_n_rows(n, rate):
    lab = _labels(n)
    m = mask_labels(lab, rate, seed=0)
    assert int((~m.labeled).sum()) == int(round(rate * n))
    assert not m.labels[~m.labeled].any()                      # masked rows are all zero
    np.testing.assert_array_equal(m.labels[m.labeled], lab[m.labeled])


def test_mask_is_seeded_and_never_shares_the_hidden_labels():
    lab = _labels()
    original = lab.copy()
    a, b, c = mask_labels(lab, 0.7, 4), mask_labels(lab, 0.7, 4), mask_labels(lab, 0.7, 5)
    np.testing.assert_array_equal(a.labeled, b.labeled)
    assert not np.array_equal(a.labeled, c.labeled)
    np.testing.assert_array_equal(lab, original)               # input not mutated
    assert not np.shares_memory(a.labels, lab)                 # a method cannot reach the hidden rows
    with pytest.raises(ValueError):
        a.labels[0, 0] = 1
    with pytest.raises(ValueError):
        a.labeled[0] = True


@pytest.mark.parametrize("rate", [-0.1, 1.0, 1.5, float("nan"), "0.5", None, True])
def test_invalid_mask_rate_is_one_line_input_error(rate):
    with pytest.raises(InputError) as err:
        mask_labels(_labels(), rate, seed=0)
    assert "mask_rate" in str(err.value) and "[0, 1)" in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- Dataset

def test_dataset_rows_must_match_and_subset_keeps_sparse():
    lab = _labels(10)
    text = sp.random(10, 7, density=0.3, format="csr", random_state=0)
    with pytest.raises(DataFileError, match="row counts differ"):
        Dataset("d", np.zeros((9, 2)), text, lab, "x", random_protocol("p", 10, 2, 3, seed=0))
    ds = Dataset("d", np.arange(20.0).reshape(10, 2), text, lab, "x", random_protocol("p", 10, 2, 3, seed=0))
    img, txt, lb = ds.subset([3, 1])
    assert sp.issparse(txt) and txt.shape == (2, 7)
    np.testing.assert_array_equal(img, [[6, 7], [2, 3]])
    np.testing.assert_array_equal(lb, lab[[3, 1]])


def test_file_checksum_depends_on_content_and_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one")
    b.write_bytes(b"two")
    assert file_checksum(a, b) == file_checksum(a, b) != file_checksum(b, a)
    assert len(file_checksum(a)) == 64


# ---------------------------------------------------------------- raw images stay lazy in subsets

def _pixel_dataset(image, n):
    lab = _labels(n, 4, seed=1)
    return Dataset("px", image, sp.csr_matrix(np.eye(n, 5, dtype=np.float32)), lab, "x",
                   random_protocol("p", n, 3, 6, seed=0))


def test_subset_of_memmapped_pixels_is_a_lazy_view(tmp_path):
    from datasets.images import ImageArray

    n = 20
    pixels = np.random.default_rng(0).integers(0, 256, (n, 4, 5, 3)).astype(np.uint8)
    mm = np.lib.format.open_memmap(tmp_path / "i.npy", mode="w+", dtype=np.uint8, shape=pixels.shape)
    mm[:] = pixels
    ds = _pixel_dataset(mm, n)
    assert ds.image_kind == "pixels"
    idx = ds.protocol.train
    image, text, labels = ds.subset(idx)
    assert isinstance(image, ImageArray) and image.shape == (idx.size, 4, 5, 3)
    assert np.shares_memory(image._source.arr, mm)  # the view reads the same mapped pages
    np.testing.assert_array_equal(image[:], pixels[idx])
    np.testing.assert_array_equal(labels, ds.labels[idx])
    # An in-memory pixel array is not copied either.
    image2, _, _ = _pixel_dataset(pixels, n).subset(idx)
    assert isinstance(image2, ImageArray) and image2._source.arr is pixels


def test_subset_of_a_lazy_container_reads_nothing():
    from datasets import images as im

    n = 12
    pixels = np.random.default_rng(2).integers(0, 256, (n, 3, 3, 3)).astype(np.uint8)
    reads = []

    class Counting(im._ArraySource):
        def read(self, idx):
            reads.append(idx.size)
            return super().read(idx)

    ds = _pixel_dataset(im.ImageArray(Counting(pixels, "nhwc")), n)
    image, _, _ = ds.subset(ds.protocol.database)
    assert ds.image_kind == "pixels" and ds.describe()["image"] == [n, 3, 3, 3]
    assert reads == [] and image.index.tolist() == ds.protocol.database.tolist()
    np.testing.assert_array_equal(image[[0]], pixels[ds.protocol.database[:1]])
    assert reads == [1]


def test_subset_of_features_is_still_an_array():
    ds = _pixel_dataset(np.arange(40, dtype=np.float32).reshape(20, 2), 20)
    image, _, _ = ds.subset([3, 1])
    assert type(image) is np.ndarray and ds.image_kind == "features"
    np.testing.assert_array_equal(image, [[6, 7], [2, 3]])

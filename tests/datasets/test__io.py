"""File helpers of the loaders (datasets/_io.py): text matrices, MATLAB files, pixel layouts, checks."""
import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError
from datasets import _io


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg and msg
    return msg




# ---------------------------------------------------------------- text matrices

@pytest.mark.parametrize("body", [
    b"1 2 3\n4 5 6\n7 8 9\n",
    b"1\t2\t3\t\n4\t5\t6\t\n7\t8\t9\t\n",   # tab-separated with a trailing tab (AllTags1k style)
    b"1 2 3 \r\n4 5 6 \r\n7 8 9",           # CRLF, trailing space, no final newline
])
def test_text_matrix_separators(tmp_path, body):
    p = tmp_path / "m.txt"
    p.write_bytes(body)
    got = _io.read_text_matrix("t", p, chunk_rows=2)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.arange(1, 10, dtype=np.float32).reshape(3, 3))


def test_text_matrix_keep_and_sparse_across_chunks(tmp_path):
    rng = np.random.default_rng(0)
    full = (rng.random((50, 7)) < 0.3).astype(np.float32)
    p = tmp_path / "tags.txt"
    p.write_text("\n".join(" ".join(str(int(v)) for v in row) for row in full) + "\n")
    keep = rng.random(50) < 0.5
    dense = _io.read_text_matrix("t", p, keep=keep, chunk_rows=8)
    np.testing.assert_array_equal(dense, full[keep])
    csr = _io.read_text_matrix("t", p, keep=keep, sparse=True, chunk_rows=8)
    assert sp.isspmatrix_csr(csr) or sp.issparse(csr)
    np.testing.assert_array_equal(csr.toarray(), full[keep])


@pytest.mark.parametrize("body, expect", [
    (b"1 2 3\n4 5\n7 8 9\n", "row 2"),          # short line
    (b"1 2 3\n4 5 6 7\n7 8 9\n", "cannot read"),  # long line
    (b"1 2 3\n4 x 6\n", "cannot read"),          # not a number
    (b"1 2 nan\n", "non-finite"),
    (b"", "cannot read"),
])
def test_text_matrix_corrupt_is_one_line(tmp_path, body, expect):
    p = tmp_path / "bad.dat"
    p.write_bytes(body)
    with pytest.raises(DataFileError) as err:
        _io.read_text_matrix("t", p)
    msg = _one_line(err)
    assert expect in msg and str(p) in msg


def test_text_matrix_row_count_checked(tmp_path):
    p = tmp_path / "m.txt"
    p.write_text("1\n0\n1\n")
    with pytest.raises(DataFileError, match="has 3 rows; expected 4"):
        _io.read_text_matrix("t", p, n_rows=4)
    with pytest.raises(DataFileError, match="more than 2 rows"):
        _io.read_text_matrix("t", p, keep=np.ones(2, bool))


# ---------------------------------------------------------------- MATLAB files

def test_read_mat_v5_and_missing_variable(tmp_path):
    p = tmp_path / "a.mat"
    scipy.io.savemat(p, {"LAll": np.eye(3, dtype=np.uint8), "other": np.zeros(2)})
    assert _io.mat_kind(p) == "v5"
    np.testing.assert_array_equal(_io.read_mat("t", p, ["LAll"])["LAll"], np.eye(3))
    with pytest.raises(DataFileError) as err:
        _io.read_mat("t", p, ["YAll"])
    assert "no variable YAll" in _one_line(err) and "LAll" in str(err.value)


def test_read_mat_truncated_and_garbage(tmp_path):
    src = tmp_path / "a.mat"
    scipy.io.savemat(src, {"LAll": np.ones((200, 30))}, do_compression=True)
    cut = tmp_path / "cut.mat"
    cut.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    junk = tmp_path / "junk.mat"
    junk.write_bytes(b"this is not a MAT file at all" * 10)
    for p in (cut, junk):
        with pytest.raises(DataFileError) as err:
            _io.read_mat("t", p, ["LAll"])
        assert "cannot read" in _one_line(err) and p.name in str(err.value)


def test_mat73_without_h5py_is_one_line(tmp_path, monkeypatch):
    p = tmp_path / "v73.mat"
    p.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(512) + b"\x89HDF\r\n\x1a\n" + bytes(64))
    assert _io.mat_kind(p) == "v73"
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(DataFileError) as err:
        _io.read_mat("t", p, ["LAll"])
    msg = _one_line(err)
    assert "v7.3" in msg and "h5py" in msg and str(p) in msg


def test_mat73_read_with_h5py(tmp_path, write_mat73):
    pytest.importorskip("h5py")
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 2, (7, 5)).astype(np.uint8)
    sparse = sp.random(7, 9, density=0.3, random_state=0, format="csr")
    pixels = rng.integers(0, 255, (4, 6, 3, 7)).astype(np.uint8)
    p = tmp_path / "v73.mat"
    write_mat73(p, {"LAll": dense, "YAll": sparse, "IAll": pixels})
    got = _io.read_mat("t", p, ["LAll", "YAll", "IAll"])
    np.testing.assert_array_equal(got["LAll"], dense)
    np.testing.assert_allclose(got["YAll"].toarray(), sparse.toarray())
    np.testing.assert_array_equal(got["IAll"], pixels)
    assert sorted(_io.mat_variable_names("t", p)) == ["IAll", "LAll", "YAll"]


# ---------------------------------------------------------------- array files and checks

def test_read_array_file_formats(tmp_path):
    x = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.save(tmp_path / "x.npy", x)
    np.savez(tmp_path / "x.npz", feats=x)
    scipy.io.savemat(tmp_path / "x.mat", {"XAll": x, "junk": np.ones(1)})
    (tmp_path / "x.txt").write_text("\n".join(" ".join(map(str, r)) for r in x.tolist()))
    assert isinstance(_io.read_array_file("t", tmp_path / "x.npy"), np.memmap)  # lazy for NUS-scale files
    for name in ("x.npy", "x.npz", "x.mat", "x.txt"):
        np.testing.assert_array_equal(_io.read_array_file("t", tmp_path / name, default_keys=("XAll",)), x)
    with pytest.raises(DataFileError, match="unsupported file type"):
        _io.read_array_file("t", tmp_path / "x.csvx")
    scipy.io.savemat(tmp_path / "two.mat", {"a": x, "b": x})
    with pytest.raises(DataFileError, match="image_key"):
        _io.read_array_file("t", tmp_path / "two.mat", default_keys=("XAll",))


def test_pixel_layouts_agree():
    rng = np.random.default_rng(0)
    nhwc = rng.integers(0, 256, (5, 4, 6, 3)).astype(np.uint8)   # H=4 != W=6 pins the orientation
    layouts = [nhwc, nhwc.transpose(0, 3, 1, 2), nhwc.transpose(1, 2, 3, 0)]  # NHWC, NCHW, MATLAB HxWx3xN
    for arr in layouts:
        np.testing.assert_array_equal(_io.as_pixels("t", "f", arr, 5), nhwc)
    with pytest.raises(DataFileError, match="do not fit 7 items"):
        _io.as_pixels("t", "f", nhwc, 7)
    with pytest.raises(DataFileError, match="uint8"):
        _io.as_pixels("t", "f", nhwc.astype(np.float32), 5)


def test_checks_reject_bad_content():
    with pytest.raises(DataFileError, match="labels must be 0/1, found 2"):
        _io.as_labels("t", "f", np.array([[0, 2], [1, 0]]))
    with pytest.raises(DataFileError, match="3 columns"):
        _io.as_labels("t", "f", np.ones((2, 3)), n_labels=24)
    with pytest.raises(DataFileError, match="NaN or inf"):
        _io.as_features("t", "f", np.array([[0.0, np.nan]]), 1)
    with pytest.raises(DataFileError, match="has 2 rows but the labels have 3"):
        _io.as_features("t", "f", np.ones((2, 2)), 3)
    with pytest.raises(DataFileError, match="NaN or inf"):
        _io.as_text("t", "f", np.array([[0.0, np.inf]]), 1)
    text = _io.as_text("t", "f", np.array([[0, 1], [2, 0]], dtype=np.uint8), 2)
    assert sp.issparse(text) and text.dtype == np.float32 and text.nnz == 2


def test_missing_file_message(tmp_path):
    with pytest.raises(DataFileError) as err:
        _io.find_file("ds", "f.mat", [tmp_path, tmp_path / "sub"], "get it from X")
    msg = _one_line(err)
    assert "missing file f.mat" in msg and str(tmp_path / "sub") in msg and "get it from X" in msg


def test_memmapped_pixels_stay_lazy_in_any_layout(tmp_path):
    from datasets.images import ImageArray

    nhwc = np.random.default_rng(1).integers(0, 256, (5, 4, 6, 3)).astype(np.uint8)
    for i, arr in enumerate([nhwc, nhwc.transpose(0, 3, 1, 2), nhwc.transpose(1, 2, 3, 0)]):
        np.save(tmp_path / f"{i}.npy", np.ascontiguousarray(arr))
        got = _io.as_image("t", tmp_path / f"{i}.npy", _io.read_array_file("t", tmp_path / f"{i}.npy"), 5)
        assert isinstance(got, ImageArray)
        np.testing.assert_array_equal(got[:], nhwc)


def test_read_raw_images_npy_v73_v5(tmp_path, write_mat73):
    from datasets.images import ImageArray

    nhwc = np.random.default_rng(2).integers(0, 256, (6, 4, 5, 3)).astype(np.uint8)
    np.save(tmp_path / "a.npy", nhwc)
    write_mat73(tmp_path / "b.mat", {"IAll": nhwc.transpose(1, 2, 3, 0)})  # MATLAB H x W x 3 x n
    scipy.io.savemat(tmp_path / "c.mat", {"IAll": nhwc})
    for name, lazy in (("a.npy", True), ("b.mat", True), ("c.mat", False)):
        got = _io.read_raw_images("t", tmp_path / name, 6)
        assert isinstance(got, ImageArray) == lazy
        np.testing.assert_array_equal(np.asarray(got), nhwc)
    for name, expect in (("a.npy", "do not fit 7 items"), ("b.mat", "do not fit 7 items")):
        with pytest.raises(DataFileError) as err:
            _io.read_raw_images("t", tmp_path / name, 7)
        assert _one_line(err).startswith("t: ") and expect in str(err.value)
    with pytest.raises(DataFileError, match="valid: .npy, .mat"):
        _io.read_raw_images("t", tmp_path / "x.png", 6)

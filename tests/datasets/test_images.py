"""Lazy image containers (datasets/images.py): memmaps, MATLAB v7.3 / HDF5 datasets, image folders."""
import pickle

import numpy as np
import pytest
from PIL import Image

from cmhcore.errors import DataFileError, InputError
from datasets import images as im
from datasets.images import ImageArray, pixel_layout


def _one_line(err) -> str:
    assert "\n" not in str(err.value)
    return str(err.value)


def _pixels(n=9, h=5, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3)).astype(np.uint8)


@pytest.fixture
def npy(tmp_path):
    pixels = _pixels()
    path = tmp_path / "iall.npy"
    mm = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=pixels.shape)
    mm[:] = pixels
    mm.flush()
    del mm
    return path, pixels


def _write_matlab_h5(path, pixels, layout="nhwc"):
    """IAll as MATLAB writes it: the MATLAB array in column-major order, so h5py sees the axes reversed.

    Built element by element from the definition (h5[k3, k2, k1, k0] = matlab[k0, k1, k2, k3]) rather
    than with ``.T``, so the test does not share the reader's reasoning.
    """
    import h5py

    matlab = {"nhwc": pixels, "hwcn": pixels.transpose(1, 2, 3, 0), "nchw": pixels.transpose(0, 3, 1, 2)}[layout]
    stored = np.empty(matlab.shape[::-1], dtype=np.uint8)
    for k in np.ndindex(*matlab.shape):
        stored[k[::-1]] = matlab[k]
    with h5py.File(path, "w", userblock_size=512) as f:
        f["IAll"] = stored
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: test".ljust(128))
    return path


# ---------------------------------------------------------------- indexing semantics

INDEXES = [3, -1, slice(2, 7), slice(None, None, -2), np.array([4, 0, 4, 8, 2]), np.array([], dtype=np.int64),
           np.arange(9) % 2 == 0, [1, 1, 1], (5, 2, slice(1, 3))]


def _assert_same_indexing(x, ref):
    assert x.shape == ref.shape and x.dtype == np.uint8 and x.ndim == 4 and len(x) == len(ref)
    for key in INDEXES:
        got = x[key]
        want = ref[tuple(key) if isinstance(key, tuple) else (list(key) if isinstance(key, list) else key)]
        assert type(got) is np.ndarray and got.dtype == np.uint8
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(np.asarray(x), ref)


def test_array_and_npy_index_like_numpy(npy):
    path, pixels = npy
    _assert_same_indexing(ImageArray.from_array(pixels), pixels)
    _assert_same_indexing(ImageArray.from_npy(path), pixels)


@pytest.mark.parametrize("layout", ["nhwc", "hwcn", "nchw"])
def test_mat73_in_matlab_order(tmp_path, layout):
    pixels = _pixels()
    path = _write_matlab_h5(tmp_path / "iall.mat", pixels, layout)
    x = ImageArray.from_hdf5(path, "IAll", n_items=9)
    assert x._source.matlab_order and x._source.layout == layout
    _assert_same_indexing(x, pixels)


def test_mat73_written_by_conftest_writer(tmp_path, write_mat73):
    # The fixture stores arrays as MATLAB does (transposed), the same as the element-wise writer above.
    pixels = _pixels(n=9, h=4, w=6)
    write_mat73(tmp_path / "a.mat", {"IAll": pixels})
    _assert_same_indexing(ImageArray.from_hdf5(tmp_path / "a.mat", n_items=9), pixels)


def test_plain_hdf5_is_not_transposed(tmp_path):
    import h5py

    pixels = _pixels()
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["images"] = pixels
    x = ImageArray.from_hdf5(tmp_path / "p.h5", "images")
    assert not x._source.matlab_order
    _assert_same_indexing(x, pixels)


def test_hdf5_sparse_and_dense_selections(tmp_path):
    # Both read paths (one hyperslab for dense index sets, a point list for sparse ones) agree with NumPy.
    pixels = _pixels(n=60, h=3, w=4)
    x = ImageArray.from_hdf5(_write_matlab_h5(tmp_path / "i.mat", pixels), n_items=60)
    for idx in (np.array([59, 0, 30]), np.array([10, 12, 11, 13, 10]), np.arange(60)[::-1]):
        np.testing.assert_array_equal(x[idx], pixels[idx])


def test_memmap_layouts_transposed_per_read(tmp_path):
    pixels = _pixels()
    for layout, stored in (("nchw", pixels.transpose(0, 3, 1, 2)), ("hwcn", pixels.transpose(1, 2, 3, 0))):
        np.save(tmp_path / f"{layout}.npy", np.ascontiguousarray(stored))
        x = ImageArray.from_npy(tmp_path / f"{layout}.npy", n_items=9)
        assert x._source.layout == layout
        _assert_same_indexing(x, pixels)


def test_pixel_layout():
    assert pixel_layout((10, 5, 7, 3)) == "nhwc"
    assert pixel_layout((10, 3, 5, 7)) == "nchw"
    assert pixel_layout((5, 7, 3, 10)) == "hwcn"
    assert pixel_layout((5, 7, 3, 10), n_items=10) == "hwcn"
    assert pixel_layout((10, 5, 7, 3), n_items=11) is None
    assert pixel_layout((10, 5, 7)) is None


# ---------------------------------------------------------------- views

def test_views_compose_and_read_nothing(npy):
    path, pixels = npy
    x = ImageArray.from_npy(path)
    a = np.array([8, 1, 5, 3, 0, 2])
    v = x.take(a)
    assert isinstance(v, ImageArray) and v.shape == (6, 5, 7, 3) and v._source is x._source
    vv = v.take(np.array([5, 0, 2]))
    np.testing.assert_array_equal(vv.index, a[[5, 0, 2]])
    _assert_same_indexing(x.take(np.arange(9)[::-1]), pixels[::-1])
    np.testing.assert_array_equal(vv[:], pixels[a][[5, 0, 2]])
    np.testing.assert_array_equal(v.take(slice(1, 4))[[2, 0]], pixels[a][1:4][[2, 0]])
    np.testing.assert_array_equal(v.take(v.index % 2 == 0)[:], pixels[a][a % 2 == 0])
    assert "view of 3 of 9" in repr(vv) and str(path) in repr(vv)


def test_take_rejects_scalars_and_out_of_range(npy):
    x = ImageArray.from_npy(npy[0])
    with pytest.raises(IndexError, match="scalar"):
        x.take(3)
    with pytest.raises(IndexError, match="index 9 is out of range for 9"):
        x.take([0, 9])
    with pytest.raises(IndexError, match="out of range"):
        x[-10]
    with pytest.raises(IndexError, match="boolean mask"):
        x[np.ones(4, bool)]
    with pytest.raises(IndexError, match="integer array"):
        x[np.array([0.5])]
    assert len(list(x.take([1, 2]))) == 2  # iteration stops


def test_reads_only_the_indexed_rows():
    pixels = _pixels(n=20)
    reads = []

    class Counting(im._ArraySource):
        def read(self, idx):
            reads.append(idx.copy())
            return super().read(idx)

    x = ImageArray(Counting(pixels, "nhwc"))
    v = x.take(np.arange(20)[::2]).take(np.array([1, 3]))
    assert reads == []
    np.testing.assert_array_equal(v[[1, 0]], pixels[[6, 2]])
    assert len(reads) == 1 and reads[0].tolist() == [6, 2]


# ---------------------------------------------------------------- pickling (DataLoader workers)

def test_npy_and_memmap_pickle_by_path(npy):
    path, pixels = npy
    for x in (ImageArray.from_npy(path), ImageArray.from_array(np.load(path, mmap_mode="r"))):
        v = x.take([7, 2, 2])
        blob = pickle.dumps(v)
        assert len(blob) < pixels.nbytes  # the pixels are not in the pickle
        back = pickle.loads(blob)
        assert isinstance(back._source.arr, np.memmap)
        np.testing.assert_array_equal(back[:], pixels[[7, 2, 2]])


def test_in_memory_array_pickles_its_data():
    pixels = _pixels()
    back = pickle.loads(pickle.dumps(ImageArray.from_array(pixels).take([3, 1])))
    np.testing.assert_array_equal(back[:], pixels[[3, 1]])


def test_hdf5_pickles_by_path_and_reopens(tmp_path):
    pixels = _pixels()
    x = ImageArray.from_hdf5(_write_matlab_h5(tmp_path / "i.mat", pixels)).take([4, 1])
    np.testing.assert_array_equal(x[:], pixels[[4, 1]])  # opens the file in this process
    assert x._source._file is not None
    blob = pickle.dumps(x)
    back = pickle.loads(blob)
    assert back._source._file is None and len(blob) < 2000
    np.testing.assert_array_equal(back[[1, 0]], pixels[[1, 4]])
    # A forked process has another pid: the inherited handle is not reused.
    first = x._source._file
    x._source._pid = -1
    np.testing.assert_array_equal(x[0], pixels[4])
    assert x._source._file is not first


# ---------------------------------------------------------------- folders of image files

def _write_folder(folder, n=5):
    rng = np.random.default_rng(3)
    names, originals = [], []
    for i in range(n):
        h, w = 6 + i, 9 - i
        arr = rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
        name = f"im{i}.png"
        if i == 2:
            Image.fromarray(arr[..., 0], mode="L").save(folder / name)  # grayscale file -> RGB
            arr = np.repeat(arr[..., :1], 3, axis=2)
        else:
            Image.fromarray(arr).save(folder / name)
        names.append(name)
        originals.append(arr)
    return names, originals


def test_folder_decodes_and_resizes(tmp_path):
    names, originals = _write_folder(tmp_path)
    x = ImageArray.from_folder(tmp_path, names, (8, 7))
    assert x.shape == (5, 8, 7, 3)
    want = np.stack([np.asarray(Image.fromarray(a).resize((7, 8), Image.BILINEAR)) for a in originals])
    np.testing.assert_array_equal(x[:], want)
    np.testing.assert_array_equal(x.take([4, 2])[[1, 0, 1]], want[[2, 4, 2]])
    assert x[2][..., 0].tolist() == x[2][..., 1].tolist()  # gray became RGB
    back = pickle.loads(pickle.dumps(x.take([3])))
    np.testing.assert_array_equal(back[0], want[3])
    assert "folder" in repr(x)


def test_folder_errors(tmp_path):
    names, _ = _write_folder(tmp_path)
    with pytest.raises(DataFileError) as err:
        ImageArray.from_folder(tmp_path, names + ["nope.jpg"], 8)
    assert "1 of 6 indexed files are missing" in _one_line(err) and "nope.jpg" in str(err.value)
    with pytest.raises(InputError, match="size="):
        ImageArray.from_folder(tmp_path, names, (8, 0))
    with pytest.raises(InputError, match="lists no files"):
        ImageArray.from_folder(tmp_path, [], 8)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    x = ImageArray.from_folder(tmp_path, names + ["bad.jpg"], 8)
    np.testing.assert_array_equal(x[0].shape, (8, 8, 3))
    with pytest.raises(DataFileError) as err:
        x[[0, 5]]
    assert "cannot decode" in _one_line(err) and "bad.jpg" in str(err.value)


# ---------------------------------------------------------------- bad inputs

def test_bad_files_one_line(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((4, 5, 7, 3), np.float32))
    np.save(tmp_path / "r.npy", np.zeros((4, 5, 7), np.uint8))
    np.save(tmp_path / "c.npy", np.zeros((4, 5, 7, 2), np.uint8))
    (tmp_path / "t.npy").write_bytes(b"\x93NUMPY garbage")
    cases = [
        (lambda: ImageArray.from_npy(tmp_path / "f.npy"), "must be uint8 with 4 axes, got float32"),
        (lambda: ImageArray.from_npy(tmp_path / "r.npy"), "must be uint8 with 4 axes"),
        (lambda: ImageArray.from_npy(tmp_path / "c.npy"), "do not fit n items"),
        (lambda: ImageArray.from_npy(tmp_path / "t.npy"), "cannot read"),
        (lambda: ImageArray.from_npy(tmp_path / "missing.npy"), "missing file"),
        (lambda: ImageArray.from_npy(tmp_path / "f.npy", name="mirflickr25k"), "mirflickr25k: "),
    ]
    for make, expect in cases:
        with pytest.raises(DataFileError) as err:
            make()
        assert expect in _one_line(err)


def test_bad_hdf5_one_line(tmp_path, write_mat73):
    write_mat73(tmp_path / "k.mat", {"XAll": _pixels()})
    (tmp_path / "corrupt.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(600, b"\0"))
    write_mat73(tmp_path / "n.mat", {"IAll": _pixels(n=9)})
    for make, expect in [
        (lambda: ImageArray.from_hdf5(tmp_path / "k.mat"), "no variable IAll (it holds: XAll)"),
        (lambda: ImageArray.from_hdf5(tmp_path / "corrupt.mat"), "cannot read"),
        (lambda: ImageArray.from_hdf5(tmp_path / "n.mat", n_items=10), "do not fit 10 items"),
        (lambda: ImageArray.from_hdf5(tmp_path / "none.mat"), "missing file"),
    ]:
        with pytest.raises(DataFileError) as err:
            make()
        assert expect in _one_line(err)


def test_from_array_input_errors():
    with pytest.raises(InputError, match="got float32"):
        ImageArray.from_array(np.zeros((2, 3, 3, 3), np.float32))
    with pytest.raises(InputError, match="got uint8 shape \\(2, 3, 3\\)"):
        ImageArray.from_array(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(InputError, match="no 3-channel axis"):
        ImageArray.from_array(np.zeros((2, 4, 4, 4), np.uint8))
    with pytest.raises(InputError, match="numpy array"):
        ImageArray.from_array([[1]])

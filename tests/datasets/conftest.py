"""Shared fixtures of the dataset tests."""
import numpy as np
import pytest
import scipy.sparse as sp


def _write_mat73(path, arrays):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 with a 512-byte header block, arrays transposed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for key, value in arrays.items():
            if sp.issparse(value):
                c = sp.csc_matrix(value)
                g = f.create_group(key)
                g.attrs["MATLAB_sparse"] = np.uint64(c.shape[0])
                g["data"], g["ir"], g["jc"] = c.data, c.indices.astype(np.uint64), c.indptr.astype(np.uint64)
            else:
                f[key] = np.ascontiguousarray(np.asarray(value).T)
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: test".ljust(128))


@pytest.fixture
def write_mat73():
    """Writer of MATLAB v7.3 files in the real layout (needs h5py)."""
    pytest.importorskip("h5py")
    return _write_mat73

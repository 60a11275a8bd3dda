"""File helpers shared by the dataset loaders (private).

Finding files under a data root, reading MATLAB (v4/v5 through scipy, v7.3/HDF5 through h5py when it
is installed), NumPy and whitespace-separated text matrices, and checking what was read. Every problem
surfaces as a one-line :class:`~cmhcore.errors.DataFileError` that names the file, before the
loader does any further work.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io
import scipy.sparse as sp

from cmhcore.errors import DataFileError, InputError

__all__ = [
    "DATA_ROOT_ENV", "resolve_data_root", "search_dirs", "find_file", "try_find_file", "mat_kind",
    "mat_variable_names", "read_mat", "read_array_file", "read_text_matrix", "as_labels", "as_text",
    "as_features", "as_pixels", "as_image", "read_raw_images",
]

_MAT73_HEADER = b"MATLAB 7.3 MAT-file"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MATLAB_META = ("__header__", "__version__", "__globals__")


# ---------------------------------------------------------------- paths

DATA_ROOT_ENV = "CMH_DATA_ROOT"


def resolve_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The argument, else ``$CMH_DATA_ROOT``, else ``./data``."""
    if data_root is not None:
        return Path(data_root)
    env = os.environ.get(DATA_ROOT_ENV)
    return Path(env) if env else Path("data")


def search_dirs(data_root, *subdirs: str) -> list[Path]:
    """The data root itself, then the given sub-folders of it (the layouts people actually use)."""
    root = resolve_data_root(data_root)
    return [root] + [root / s for s in subdirs]


def try_find_file(names: str | os.PathLike | Sequence[str | os.PathLike], dirs: Sequence[Path]) -> Path | None:
    """First existing file among ``names`` (relative names are tried in each dir, in order)."""
    names = [names] if isinstance(names, (str, os.PathLike)) else list(names)
    for name in names:
        p = Path(name)
        if p.is_absolute():
            if p.is_file():
                return p
            continue
        for d in dirs:
            if (d / p).is_file():
                return d / p
    return None


def find_file(dataset: str, names, dirs: Sequence[Path], how_to_get: str) -> Path:
    found = try_find_file(names, dirs)
    if found is None:
        names = [names] if isinstance(names, (str, os.PathLike)) else list(names)
        shown = " or ".join(str(n) for n in names)
        where = ", ".join(str(d) for d in dirs)
        raise DataFileError(f"{dataset}: missing file {shown} (looked in {where}); {how_to_get}")
    return found


# ---------------------------------------------------------------- MATLAB files

def mat_kind(path: Path) -> str:
    """'v73' (MATLAB v7.3 = HDF5 with a MATLAB header), 'hdf5' (plain HDF5) or 'v5' (v4/v5: scipy's)."""
    with open(path, "rb") as fh:
        head = fh.read(520)
    if head.startswith(_MAT73_HEADER):
        return "v73"
    if head[:8] == _HDF5_MAGIC or head[512:520] == _HDF5_MAGIC:
        return "hdf5"
    return "v5"


def _h5py(dataset: str, path: Path):
    try:
        import h5py
    except ImportError:
        raise DataFileError(
            f"{dataset}: {path} is a MATLAB v7.3 (HDF5) file and h5py is not installed; "
            "install it (pip install h5py) or re-save the file in MATLAB with save(..., '-v7')"
        ) from None
    return h5py


def _bad_file(dataset: str, path: Path, exc: BaseException, what: str = "a MATLAB .mat file") -> DataFileError:
    detail = f"{type(exc).__name__}: {exc}".strip()
    return DataFileError(f"{dataset}: cannot read {path} as {what} (corrupt or wrong format; {detail[:200]})")


def mat_variable_names(dataset: str, path: Path) -> list[str]:
    """Names of the variables stored in a .mat file, without loading them."""
    path = Path(path)
    kind = mat_kind(path)
    try:
        if kind == "v5":
            return [name for name, _, _ in scipy.io.whosmat(path)]
        h5py = _h5py(dataset, path)
        with h5py.File(path, "r") as f:
            return [k for k in f.keys() if not k.startswith("#")]
    except DataFileError:
        raise
    except Exception as exc:  # scipy/h5py raise many types for a damaged file; all mean "unreadable"
        raise _bad_file(dataset, path, exc) from None


def _read_h5_variable(obj, matlab_order: bool):
    import h5py

    if isinstance(obj, h5py.Group):
        # MATLAB v7.3 stores a sparse matrix as a group of CSC arrays plus its row count.
        if "jc" in obj and "ir" in obj and "MATLAB_sparse" in obj.attrs:
            jc = np.asarray(obj["jc"][()], dtype=np.int64)
            ir = np.asarray(obj["ir"][()], dtype=np.int64)
            data = obj["data"][()] if "data" in obj else np.ones(ir.size, dtype=np.uint8)
            n_rows = int(np.asarray(obj.attrs["MATLAB_sparse"]).ravel()[0])
            return sp.csc_matrix((data, ir, jc), shape=(n_rows, jc.size - 1)).tocsr()
        raise ValueError(f"variable {obj.name!r} is a group (struct/cell), not a matrix")
    arr = obj[()]
    # MATLAB is column-major: HDF5 sees every array with its axes reversed.
    return np.ascontiguousarray(arr.T) if matlab_order else arr


def read_mat(dataset: str, path: Path, names: Sequence[str]) -> dict:
    """Load the named variables of a .mat file (v4/v5 via scipy, v7.3 via h5py) in MATLAB's orientation."""
    path = Path(path)
    kind = mat_kind(path)
    if kind != "v5":
        h5py = _h5py(dataset, path)
    try:
        if kind == "v5":
            data = scipy.io.loadmat(path, variable_names=list(names))
            present = [k for k in data if k not in _MATLAB_META]
        else:
            with h5py.File(path, "r") as f:
                present = [k for k in f.keys() if not k.startswith("#")]
                data = {k: _read_h5_variable(f[k], kind == "v73") for k in names if k in f}
    except Exception as exc:  # truncated / not a MAT file / unsupported content
        raise _bad_file(dataset, path, exc) from None
    missing = [k for k in names if k not in data]
    if missing:
        try:
            stored = mat_variable_names(dataset, path)
        except DataFileError:
            stored = present
        raise DataFileError(
            f"{dataset}: {path} has no variable {', '.join(missing)} "
            f"(it holds: {', '.join(stored) or 'nothing'}); expected {', '.join(names)}"
        )
    return {k: data[k] for k in names}


# ---------------------------------------------------------------- other array files

def read_text_matrix(dataset: str, path: Path, *, keep: np.ndarray | None = None, sparse: bool = False,
                     n_rows: int | None = None, chunk_rows: int = 8192):
    """A whitespace-separated numeric text file (one row per line) as float32, streamed in chunks.

    ``keep`` (bool, one entry per line) selects rows while reading, so a 269,648-line file never
    exists in memory at full size; ``sparse`` returns CSR (for bag-of-words files).
    """
    import pandas as pd

    path = Path(path)
    expected = n_rows if keep is None else int(keep.size)
    out_dense = None
    parts: list = []
    total = written = 0
    n_cols = None
    try:
        reader = pd.read_csv(path, sep=r"\s+", header=None, dtype=np.float32, engine="c", chunksize=chunk_rows)
        for chunk in reader:
            block = chunk.to_numpy(dtype=np.float32, copy=False)
            if n_cols is None:
                n_cols = block.shape[1]
            if not np.isfinite(block).all():
                # pandas pads short lines with NaN: a short line and a literal nan are both corrupt.
                bad = total + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
                raise DataFileError(
                    f"{dataset}: {path}: row {bad + 1} has fewer than {n_cols} values or a non-finite value"
                )
            rows = block.shape[0]
            if keep is not None:
                if total + rows > keep.size:
                    raise DataFileError(f"{dataset}: {path} has more than {keep.size} rows; expected {keep.size}")
                block = block[keep[total:total + rows]]
            if sparse:
                parts.append(sp.csr_matrix(block))
            elif keep is not None:
                # Pre-allocated output: peak memory is the kept rows plus one chunk.
                if out_dense is None:
                    out_dense = np.empty((int(keep.sum()), n_cols), dtype=np.float32)
                out_dense[written:written + block.shape[0]] = block
                written += block.shape[0]
            else:
                parts.append(block.copy())
            total += rows
    except DataFileError:
        raise
    except (pd.errors.EmptyDataError, pd.errors.ParserError, ValueError, UnicodeDecodeError, OSError) as exc:
        raise _bad_file(dataset, path, exc, what="a whitespace-separated numeric text matrix") from None
    if n_cols is None:
        raise DataFileError(f"{dataset}: {path} is empty; expected a whitespace-separated numeric matrix")
    if expected is not None and total != expected:
        raise DataFileError(f"{dataset}: {path} has {total} rows; expected {expected} (one per image)")
    if sparse:
        return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, n_cols), dtype=np.float32)
    if keep is not None:
        return out_dense if out_dense is not None else np.empty((0, n_cols), dtype=np.float32)
    return np.concatenate(parts, axis=0)


def read_array_file(dataset: str, path: Path, *, key: str | None = None, default_keys: Sequence[str] = (),
                    keep: np.ndarray | None = None, sparse_text: bool = False):
    """A matrix from .npy (memory-mapped), .npz, .mat (``key`` or the first of ``default_keys`` present,
    or the only variable) or a whitespace-separated .txt/.dat file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".txt", ".dat", ".csv"):
        return read_text_matrix(dataset, path, keep=keep, sparse=sparse_text)
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise _bad_file(dataset, path, exc, what="a .npy array") from None
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                arr = z[_pick_key(dataset, path, list(z.files), key, default_keys)]
        except DataFileError:
            raise
        except Exception as exc:
            raise _bad_file(dataset, path, exc, what="a .npz archive") from None
    elif suffix == ".mat":
        names = mat_variable_names(dataset, path)
        name = _pick_key(dataset, path, names, key, default_keys)
        arr = read_mat(dataset, path, [name])[name]
    else:
        raise DataFileError(f"{dataset}: {path}: unsupported file type {suffix!r}; valid: .mat, .npy, .npz, .txt, .dat")
    return arr[keep] if keep is not None else arr


def _pick_key(dataset: str, path: Path, names: list[str], key: str | None, default_keys: Sequence[str]) -> str:
    if key is not None:
        if key not in names:
            held = ", ".join(names) or "nothing"
            raise DataFileError(f"{dataset}: {path} has no variable {key!r} (it holds: {held})")
        return key
    for k in default_keys:
        if k in names:
            return k
    if len(names) == 1:
        return names[0]
    wanted = f"one of {', '.join(default_keys)}" if default_keys else "a single variable"
    raise DataFileError(
        f"{dataset}: {path} holds {', '.join(names) or 'nothing'}; expected {wanted} (or name it with image_key=...)"
    )


# ---------------------------------------------------------------- checks of what was read

def _dense(arr):
    return arr.toarray() if sp.issparse(arr) else np.asarray(arr)


def as_labels(dataset: str, path: Path, arr, n_labels: int | None = None) -> np.ndarray:
    """Multi-hot labels as uint8 (n, m); anything other than 0/1 is a corrupt file."""
    arr = _dense(arr)
    if arr.ndim != 2 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataFileError(
            f"{dataset}: {path}: labels must be a non-empty 2-D matrix (items x labels), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise DataFileError(f"{dataset}: {path}: labels have dtype {arr.dtype}; expected 0/1 numbers")
    bad = ~((arr == 0) | (arr == 1))
    if bad.any():
        found = np.unique(arr[bad])[:5]
        raise DataFileError(f"{dataset}: {path}: labels must be 0/1, found {', '.join(map(str, found.tolist()))}")
    if n_labels is not None and arr.shape[1] != n_labels:
        raise DataFileError(f"{dataset}: {path}: labels have {arr.shape[1]} columns; {dataset} has {n_labels} labels")
    return arr.astype(np.uint8)


def as_text(dataset: str, path: Path, arr, n_items: int) -> sp.csr_matrix:
    """Bag-of-words text as float32 CSR (NUS-WIDE's 195k x 1000 tags must never be dense)."""
    if not sp.issparse(arr):
        arr = np.asarray(arr)
        if arr.ndim != 2:
            raise DataFileError(f"{dataset}: {path}: text must be a 2-D matrix (items x words), got shape {arr.shape}")
        if arr.dtype.kind not in "biuf":
            raise DataFileError(f"{dataset}: {path}: text has dtype {arr.dtype}; expected numbers")
    text = sp.csr_matrix(arr, dtype=np.float32)
    if text.nnz and not np.isfinite(text.data).all():
        raise DataFileError(f"{dataset}: {path}: text contains NaN or inf")
    _check_rows(dataset, path, text.shape[0], n_items)
    text.eliminate_zeros()
    return text


def _check_rows(dataset: str, path: Path, got: int, n_items: int) -> None:
    if got != n_items:
        raise DataFileError(
            f"{dataset}: {path} has {got} rows but the labels have {n_items}; rows must match item for item"
        )


def as_features(dataset: str, path: Path, arr, n_items: int) -> np.ndarray:
    """An image feature matrix as float32 (n, d); a read-only float32 memmap is kept as is."""
    if sp.issparse(arr):
        arr = arr.toarray()
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise DataFileError(
            f"{dataset}: {path}: image features must be a 2-D matrix (items x dims), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "biuf":
        raise DataFileError(f"{dataset}: {path}: image features have dtype {arr.dtype}; expected numbers")
    _check_rows(dataset, path, arr.shape[0], n_items)
    if not (isinstance(arr, np.memmap) and arr.dtype == np.float32):
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    step = max(1, (1 << 26) // (4 * arr.shape[1]))  # check finiteness in ~64 MB slices (memmaps stay lazy)
    for start in range(0, arr.shape[0], step):
        block = np.asarray(arr[start:start + step])
        if not np.isfinite(block).all():
            row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
            raise DataFileError(f"{dataset}: {path}: image features contain NaN or inf (row {row})")
    return arr


def as_pixels(dataset: str, path: Path, arr, n_items: int):
    """Raw images as uint8 (n, H, W, 3), from (n, H, W, 3), (n, 3, H, W) or MATLAB's (H, W, 3, n).

    An in-memory array is returned (transposed into a contiguous copy when needed); a memory map or
    an :class:`~datasets.images.ImageArray` stays lazy (an ImageArray that transposes per read).
    """
    from datasets.images import ImageArray, pixel_layout

    if getattr(type(arr), "is_image_container", False):
        _check_rows(dataset, path, arr.shape[0], n_items)
        return arr
    if arr.ndim != 4 or arr.dtype != np.uint8:
        raise DataFileError(
            f"{dataset}: {path}: raw images must be uint8 with 4 axes, got {arr.dtype} shape {arr.shape}"
        )
    s = arr.shape
    layout = pixel_layout(s, n_items)
    if layout is None:
        raise DataFileError(
            f"{dataset}: {path}: raw images of shape {s} do not fit {n_items} items; "
            f"valid: ({n_items}, H, W, 3), ({n_items}, 3, H, W) or MATLAB's (H, W, 3, {n_items})"
        )
    if isinstance(arr, np.memmap):
        return ImageArray.from_array(arr, layout)
    if layout == "nhwc":
        return arr
    return np.ascontiguousarray(arr.transpose((0, 2, 3, 1) if layout == "nchw" else (3, 0, 1, 2)))


def read_raw_images(dataset: str, path: Path, n_items: int, key: str = "IAll"):
    """Raw uint8 images of ``n_items`` items from a file, read lazily where the format allows.

    ``.npy``: memory-mapped; ``.mat`` v7.3 / HDF5: an h5py-backed ImageArray (nothing read yet); ``.mat``
    v4/v5: loaded into memory (scipy cannot read part of a variable). The result is an ndarray or an
    :class:`~datasets.images.ImageArray` of shape (n_items, H, W, 3).
    """
    from datasets.images import ImageArray

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return ImageArray.from_npy(path, n_items, name=dataset)
    if suffix != ".mat":
        raise DataFileError(f"{dataset}: {path}: unsupported raw image file type {suffix!r}; valid: .npy, .mat")
    kind = mat_kind(path)
    if kind == "v5":
        return as_image(dataset, path, read_mat(dataset, path, [key])[key], n_items)
    _h5py(dataset, path)
    return ImageArray.from_hdf5(path, key, n_items, matlab_order=kind == "v73", name=dataset)


def as_image(dataset: str, path: Path, arr, n_items: int) -> np.ndarray:
    """Features (2-D) or raw pixels (4-D uint8), whichever the file holds."""
    ndim = 2 if sp.issparse(arr) else getattr(arr, "ndim", 0)
    if ndim == 4:
        return as_pixels(dataset, path, arr, n_items)
    if ndim != 2:
        raise DataFileError(
            f"{dataset}: {path}: the image side must be a 2-D feature matrix or 4-D uint8 raw images, got shape "
            f"{getattr(arr, 'shape', None)}"
        )
    return as_features(dataset, path, arr, n_items)

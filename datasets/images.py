"""Lazy raw-image containers: uint8 ``(n, H, W, 3)`` RGB images that are read only when indexed.

An :class:`ImageArray` behaves like a read-only uint8 array of shape ``(n, H, W, 3)``: it has ``shape``,
``dtype``, ``ndim`` and ``len``, and ``x[i]`` / ``x[a:b]`` / ``x[int_array]`` / ``x[bool_mask]`` return
ndarrays exactly as NumPy indexing would. ``take(indices)`` returns a lazy view (no pixels are read) and
views of views compose. Three sources are supported:

* a NumPy array or memory map (``from_array``, ``from_npy``): rows are read with NumPy indexing, so a
  ``.npy`` opened with ``mmap_mode='r'`` is paged in only where indexed;
* an HDF5 dataset, e.g. ``IAll`` of a MATLAB v7.3 ``.mat`` file (``from_hdf5``): each read is one h5py
  selection of sorted, distinct item indices along the item axis, reordered afterwards;
* a folder of image files with an index (``from_folder``): files are decoded with Pillow to RGB and
  resized (bilinear) to a fixed ``(H, W)`` given at construction.

Stored layouts other than ``(n, H, W, 3)`` (``(n, 3, H, W)``, MATLAB's ``(H, W, 3, n)``) are transposed per
read, never as a whole. Containers pickle cheaply: memory maps and HDF5 files are stored by path and reopened
in the receiving process (and h5py files are reopened after a fork), so torch DataLoader workers can use them.
"""
from __future__ import annotations

import mmap
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from cmhcore.errors import DataFileError, InputError

__all__ = ["ImageArray", "pixel_layout", "LAYOUT_AXES"]

# Permutation that turns an array stored in a given layout into (n, H, W, 3).
LAYOUT_AXES = {"nhwc": (0, 1, 2, 3), "nchw": (0, 2, 3, 1), "hwcn": (3, 0, 1, 2)}


def pixel_layout(shape: Sequence[int], n_items: int | None = None) -> str | None:
    """Which layout a 4-D image array of ``shape`` is stored in ('nhwc', 'nchw', 'hwcn'), or None.

    With ``n_items`` the item axis must have that length; without it the 3-channel axis decides.
    """
    s = tuple(int(v) for v in shape)
    if len(s) != 4:
        return None
    for name, (axis_n, axis_c) in (("nhwc", (0, 3)), ("nchw", (0, 1)), ("hwcn", (3, 2))):
        if s[axis_c] == 3 and (n_items is None or s[axis_n] == n_items):
            return name
    return None


def _as_index(key, n: int, what: str) -> np.ndarray:
    """An int, slice, integer array or boolean mask -> int64 positions in [0, n)."""
    if isinstance(key, slice):
        return np.arange(n, dtype=np.int64)[key]
    arr = np.asarray(key)
    if arr.dtype == bool:
        if arr.shape != (n,):
            raise IndexError(f"{what}: boolean mask of shape {arr.shape} does not fit {n} images")
        return np.flatnonzero(arr).astype(np.int64)
    if arr.dtype.kind not in "iu" or arr.ndim > 1:
        raise IndexError(f"{what}: index must be an int, a slice, a 1-D integer array or a boolean mask, got {arr.dtype} {arr.shape}")
    arr = arr.astype(np.int64, copy=False).reshape(-1)
    if arr.size and (arr.min() < -n or arr.max() >= n):
        bad = int(arr[(arr < -n) | (arr >= n)][0])
        raise IndexError(f"{what}: index {bad} is out of range for {n} images")
    return np.where(arr < 0, arr + n, arr)


# ---------------------------------------------------------------- sources (whole stored sets)

class _ArraySource:
    """An ndarray / memmap in any of the layouts; a direct memmap pickles as its file."""

    def __init__(self, arr: np.ndarray, layout: str, path: Path | None = None):
        self.arr, self.layout, self.path = arr, layout, path
        self._memmap = None
        if path is None and isinstance(arr, np.memmap) and isinstance(arr.base, mmap.mmap) and arr.filename:
            # A memmap made directly on a file (not a slice of one) can be reopened from the file.
            self._memmap = (arr.filename, arr.dtype.str, arr.shape, int(arr.offset), "F" if arr.flags.f_contiguous and not arr.flags.c_contiguous else "C")

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path is not None or self._memmap is not None:
            state["arr"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.arr is None:
            if self.path is not None:
                self.arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
            else:
                fn, dt, shape, offset, order = self._memmap
                self.arr = np.memmap(fn, dtype=dt, mode="r", shape=shape, offset=offset, order=order)

    @property
    def stored_shape(self):
        return self.arr.shape

    def describe(self) -> str:
        if self.path is not None:
            return f"npy {str(self.path)!r}"
        if self._memmap is not None:
            return f"memmap {self._memmap[0]!r}"
        return "in-memory array"

    def read(self, idx: np.ndarray) -> np.ndarray:
        axes = LAYOUT_AXES[self.layout]
        block = np.asarray(np.take(self.arr, idx, axis=axes[0]))  # a plain ndarray, not a file-less memmap
        return np.ascontiguousarray(block.transpose(axes)) if self.layout != "nhwc" else block


class _HDF5Source:
    """A dataset of an HDF5 / MATLAB v7.3 file, opened lazily (per process) by path."""

    def __init__(self, path: Path, key: str, layout: str, stored_shape: tuple, matlab_order: bool):
        self.path, self.key, self.layout, self.matlab_order = Path(path), key, layout, matlab_order
        self.stored_shape = tuple(int(v) for v in stored_shape)  # as h5py sees it
        self._file = None
        self._pid = None

    def __getstate__(self):
        return {**self.__dict__, "_file": None, "_pid": None}

    def _dataset(self):
        if self._file is None or self._pid != os.getpid():
            # h5py handles must not cross a fork: a DataLoader worker opens its own.
            import h5py

            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file[self.key]

    def describe(self) -> str:
        return f"hdf5 {str(self.path)!r}:{self.key}"

    def _h5_axes(self) -> tuple[int, ...]:
        # MATLAB is column-major: h5py sees its axes reversed, so MATLAB axis k is h5py axis 3 - k.
        axes = LAYOUT_AXES[self.layout]
        return tuple(3 - a for a in axes) if self.matlab_order else axes

    def read(self, idx: np.ndarray) -> np.ndarray:
        axes = self._h5_axes()
        item_axis = axes[0]
        uniq, inverse = np.unique(idx, return_inverse=True)
        sel = [slice(None)] * 4
        if uniq.size == 0:
            shape = [self.stored_shape[a] for a in axes]
            return np.empty((0, *shape[1:]), dtype=np.uint8)
        lo, hi = int(uniq[0]), int(uniq[-1]) + 1
        try:
            ds = self._dataset()
            if hi - lo <= 2 * uniq.size:
                # Dense enough: one contiguous hyperslab is faster in HDF5 than a point list.
                sel[item_axis] = slice(lo, hi)
                block = np.take(ds[tuple(sel)], uniq - lo, axis=item_axis)
            else:
                sel[item_axis] = uniq.tolist()
                block = ds[tuple(sel)]
        except (OSError, KeyError, ValueError) as exc:
            raise DataFileError(f"images {self.describe()}: cannot be read ({type(exc).__name__}: {str(exc)[:200]})") from None
        block = np.ascontiguousarray(block.transpose(axes))
        return block if uniq.size == idx.size and (np.diff(idx) > 0).all() else block[inverse.reshape(-1)]


class _FolderSource:
    """Image files under a folder, listed by an index; decoded with Pillow and resized to (H, W)."""

    def __init__(self, folder: Path, files: Sequence[str], size: tuple[int, int]):
        self.folder, self.files, self.size = Path(folder), list(files), (int(size[0]), int(size[1]))
        self.stored_shape = (len(self.files), self.size[0], self.size[1], 3)
        self.layout = "nhwc"

    def describe(self) -> str:
        return f"folder {str(self.folder)!r}, resized to {self.size[0]}x{self.size[1]}"

    def read(self, idx: np.ndarray) -> np.ndarray:
        from PIL import Image

        h, w = self.size
        out = np.empty((idx.size, h, w, 3), dtype=np.uint8)
        for row, i in enumerate(idx.tolist()):
            path = self.folder / self.files[i]
            try:
                with Image.open(path) as im:
                    im = im.convert("RGB")
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.BILINEAR)
                    out[row] = np.asarray(im, dtype=np.uint8)
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for missing/truncated/unknown files
                raise DataFileError(f"images {self.describe()}: cannot decode {path} ({type(exc).__name__}: {str(exc)[:160]})") from None
        return out


# ---------------------------------------------------------------- the container

class ImageArray:
    """A read-only, lazily read uint8 ``(n, H, W, 3)`` image set, or a view of one.

    Build with :meth:`from_array`, :meth:`from_npy`, :meth:`from_hdf5` or :meth:`from_folder`.
    ``index`` is None for the whole stored set, or the int64 positions (into the stored set) of this view.
    Indexing returns ndarrays; ``take`` returns another ImageArray sharing the same source.
    ``np.asarray(x)`` reads every image of the view (meant for small sets and tests).
    """

    is_image_container = True  # marker read by methods.base / methods.pixels (no import of datasets there)
    dtype = np.dtype(np.uint8)
    ndim = 4

    def __init__(self, source, index: np.ndarray | None = None):
        self._source = source
        self._index = None if index is None else np.asarray(index, dtype=np.int64)
        if self._index is not None:
            self._index.setflags(write=False)
        s = source.stored_shape
        axes = source._h5_axes() if isinstance(source, _HDF5Source) else LAYOUT_AXES[source.layout]
        n_stored = s[axes[0]]
        self._n_stored = int(n_stored)
        self.shape = (self._n_stored if index is None else int(self._index.size), *(int(s[a]) for a in axes[1:]))
        if self.shape[3] != 3:
            raise DataFileError(f"images {source.describe()}: stored shape {tuple(s)} has no 3-channel axis")

    # ------------------------------------------------------------ constructors
    @classmethod
    def from_array(cls, arr, layout: str | None = None) -> "ImageArray":
        """Over an ndarray or memmap (not copied) stored as (n,H,W,3), (n,3,H,W) or MATLAB's (H,W,3,n)."""
        if not isinstance(arr, np.ndarray):
            raise InputError(f"images: expected a numpy array or memmap, got {type(arr).__name__}")
        if arr.ndim != 4 or arr.dtype != np.uint8:
            raise InputError(f"images: raw images must be uint8 with 4 axes (n, H, W, 3), got {arr.dtype} shape {arr.shape}")
        layout = layout or pixel_layout(arr.shape)
        if layout not in LAYOUT_AXES:
            raise InputError(f"images: shape {arr.shape} has no 3-channel axis; valid: (n, H, W, 3), (n, 3, H, W), (H, W, 3, n)")
        return cls(_ArraySource(arr, layout))

    @classmethod
    def from_npy(cls, path, n_items: int | None = None, name: str = "images") -> "ImageArray":
        """Memory-map a ``.npy`` file (``mmap_mode='r'``) of uint8 images; nothing is read yet.

        ``n_items`` (optional) is the expected number of images; ``name`` prefixes error messages.
        """
        path = Path(path)
        if not path.is_file():
            raise DataFileError(f"{name}: missing file {path}; expected a .npy of uint8 images (n, H, W, 3)")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:  # numpy raises ValueError/OSError/EOFError/... for a damaged header
            raise DataFileError(f"{name}: cannot read {path} as a .npy array (corrupt or wrong format; {type(exc).__name__}: {str(exc)[:160]})") from None
        layout = _check_stored(name, path, arr.shape, arr.dtype, n_items)
        return cls(_ArraySource(arr, layout, path=path))

    @classmethod
    def from_hdf5(cls, path, key: str = "IAll", n_items: int | None = None,
                  matlab_order: bool | None = None, name: str = "images") -> "ImageArray":
        """Over dataset ``key`` of an HDF5 file; a MATLAB v7.3 file's axes are read reversed.

        ``matlab_order=None`` detects MATLAB v7.3 from the file header.
        """
        path = Path(path)
        if not path.is_file():
            raise DataFileError(f"{name}: missing file {path}; expected a MATLAB v7.3 / HDF5 file holding {key}")
        if matlab_order is None:
            with open(path, "rb") as fh:
                matlab_order = fh.read(19) == b"MATLAB 7.3 MAT-file"
        try:
            import h5py
        except ImportError:
            raise DataFileError(f"{name}: {path} is an HDF5 file and h5py is not installed; install it (pip install h5py)") from None
        try:
            with h5py.File(path, "r") as f:
                if key not in f or not isinstance(f[key], h5py.Dataset):
                    held = ", ".join(k for k in f.keys() if not k.startswith("#")) or "nothing"
                    raise DataFileError(f"{name}: {path} has no variable {key} (it holds: {held}); expected {key}")
                shape, dtype = f[key].shape, f[key].dtype
        except DataFileError:
            raise
        except Exception as exc:  # h5py raises OSError for truncated / non-HDF5 files
            raise DataFileError(f"{name}: cannot read {path} as an HDF5 file (corrupt or wrong format; {type(exc).__name__}: {str(exc)[:160]})") from None
        as_matlab = tuple(reversed(shape)) if matlab_order else tuple(shape)
        layout = _check_stored(name, path, as_matlab, dtype, n_items)
        return cls(_HDF5Source(path, key, layout, shape, matlab_order))

    @classmethod
    def from_folder(cls, folder, files: Sequence[str], size) -> "ImageArray":
        """Image files ``folder/files[i]`` (any format Pillow reads), as RGB resized to ``size = (H, W)``."""
        folder = Path(folder)
        if isinstance(size, (int, np.integer)):
            size = (int(size), int(size))
        if (len(size) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size)):
            raise InputError(f"images: size={size!r} is invalid; valid: (H, W) positive integers")
        files = [str(f) for f in files]
        if not files:
            raise InputError(f"images: the index of {folder} lists no files")
        if not folder.is_dir():
            raise DataFileError(f"images: missing folder {folder}")
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DataFileError(f"images: {len(missing)} of {len(files)} indexed files are missing under {folder}, e.g. {missing[0]}")
        return cls(_FolderSource(folder, files, tuple(size)))

    # ------------------------------------------------------------ array-like interface
    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape))

    @property
    def index(self) -> np.ndarray | None:
        """Positions of this view in the stored set (None: the whole set, in stored order)."""
        return self._index

    def _base(self, idx: np.ndarray) -> np.ndarray:
        return idx if self._index is None else self._index[idx]

    def take(self, indices) -> "ImageArray":
        """A lazy view of the images at ``indices`` (int array, bool mask or slice); nothing is read."""
        idx = _as_index(indices, len(self), "take")
        if np.ndim(indices) == 0 and not isinstance(indices, slice):
            raise IndexError("take: expected an index array, a mask or a slice, got a scalar")
        return ImageArray(self._source, self._base(idx))

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):
            # rows first (the only lazy axis), then NumPy indexing of the remaining axes on what was read
            if not key:
                return self[slice(None)]
            rows = self[key[0]]
            scalar = isinstance(key[0], (int, np.integer)) and not isinstance(key[0], bool)
            return rows[tuple(key[1:])] if scalar else rows[(slice(None),) + tuple(key[1:])]
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            return self._read(_as_index([key], len(self), "images"))[0]
        return self._read(_as_index(key, len(self), "images"))

    def _read(self, idx: np.ndarray) -> np.ndarray:
        return self._source.read(self._base(idx))

    def __array__(self, dtype=None, copy=None):
        arr = self._read(np.arange(len(self), dtype=np.int64))
        return arr if dtype is None else arr.astype(dtype)

    def __iter__(self):
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        n, h, w, _ = self.shape
        view = "" if self._index is None else f", view of {len(self)} of {self._n_stored}"
        return f"ImageArray({n} x {h} x {w} x 3 uint8, {self._source.describe()}{view})"


def _check_stored(name: str, path: Path, shape, dtype, n_items: int | None) -> str:
    if len(shape) != 4 or np.dtype(dtype) != np.uint8:
        raise DataFileError(f"{name}: {path}: raw images must be uint8 with 4 axes, got {np.dtype(dtype)} shape {tuple(shape)}")
    layout = pixel_layout(shape, n_items)
    if layout is None:
        n = "n" if n_items is None else str(n_items)
        raise DataFileError(
            f"{name}: {path}: raw images of shape {tuple(shape)} do not fit {n} items; "
            f"valid: ({n}, H, W, 3), ({n}, 3, H, W) or MATLAB's (H, W, 3, {n})"
        )
    return layout

"""The codes file of a run: what a method produced, stored so that metrics can be recomputed later.

One ``.npz`` per run holding

* ``db_image``, ``db_text``, ``query_image``, ``query_text``: {-1, +1} codes packed along each row with
  :func:`pack_code_rows` (+1 -> bit 1, ``np.packbits`` order), and ``n_bits`` to unpack them;
* ``query_image_repr`` / ``query_text_repr``: the query representations of a method that ranks by its
  own distance (what its ``distance`` takes as queries);
* ``state__<key>``: the arrays of such a method's ``distance_state()`` (for example CDQ's codebooks),
  restored with ``set_distance_state`` when the run is rescored.

The storage packer here (uint8 rows) is not the metrics' word packer (:func:`benchmark.metrics.pack_code_words`,
uint64 words for XOR + popcount).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cmhcore.errors import DataFileError

__all__ = ["CODE_ARRAYS", "REPR_ARRAYS", "STATE_PREFIX", "pack_code_rows", "unpack_code_rows", "codes_arrays",
           "read_codes_file", "split_state"]

CODE_ARRAYS = ("db_image", "db_text", "query_image", "query_text")
REPR_ARRAYS = ("query_image_repr", "query_text_repr")
STATE_PREFIX = "state__"


def pack_code_rows(codes: np.ndarray) -> np.ndarray:
    """{-1,+1} codes (n, n_bits) -> uint8 (n, ceil(n_bits / 8)), bits packed along each row (+1 -> 1)."""
    return np.packbits(np.asarray(codes) > 0, axis=1)


def unpack_code_rows(packed: np.ndarray, n_bits: int) -> np.ndarray:
    """The inverse of :func:`pack_code_rows`: int8 {-1, +1} codes of ``n_bits`` columns."""
    bits = np.unpackbits(np.asarray(packed, dtype=np.uint8), axis=1, count=n_bits)
    return np.where(bits > 0, np.int8(1), np.int8(-1))


def codes_arrays(codes: dict[str, np.ndarray], n_bits: int, query_repr: dict[str, np.ndarray] | None = None,
                 state: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """The arrays of one codes file, ready for ``np.savez_compressed`` (codes packed, state prefixed)."""
    arrays = {name: pack_code_rows(c) for name, c in codes.items()}
    arrays["n_bits"] = np.array(n_bits)
    arrays.update(query_repr or {})
    for key, arr in (state or {}).items():
        arrays[f"{STATE_PREFIX}{key}"] = np.asarray(arr)
    return arrays


def split_state(stored: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The ``distance_state`` arrays of a read codes file, without their prefix."""
    return {k[len(STATE_PREFIX):]: v for k, v in stored.items() if k.startswith(STATE_PREFIX)}


def read_codes_file(path: Path | str) -> dict[str, np.ndarray]:
    """Unpacked codes (and every other array) of one codes file; DataFileError when unreadable."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            n_bits = int(z["n_bits"])
            return {k: (unpack_code_rows(z[k], n_bits) if k in CODE_ARRAYS else z[k]) for k in z.files if k != "n_bits"}
    except Exception as exc:  # noqa: BLE001 - a corrupt zip raises many kinds; all mean "cannot be read"
        raise DataFileError(f"codes file {path}: cannot be read ({type(exc).__name__}: {exc})") from None

"""The one JSON normaliser of the benchmark: records, suites and a method's extras all go through it."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from cmhcore.errors import InputError

__all__ = ["to_jsonable"]

_MAX_DEPTH = 50


def to_jsonable(value: Any, *, nonfinite: str = "null", other: str = "raise", where: str = "value",
                _depth: int = 0) -> Any:
    """Plain JSON types with a stable form: numpy scalars and arrays -> Python, tuples -> lists, keys -> str.

    ``nonfinite``: ``"null"`` writes NaN and infinities as None (records); ``"raise"`` rejects them with a
    one-line :class:`InputError` naming ``where`` (suite parameters, which are hashed into run ids).
    ``other``: what to do with any other type: ``"raise"`` (InputError for suites, TypeError for records),
    or ``"repr"`` (a method's free-form extras: objects with ``tolist`` are converted, the rest become
    their repr).
    """
    kw = {"nonfinite": nonfinite, "other": other, "where": where, "_depth": _depth + 1}
    if _depth > _MAX_DEPTH:
        if other == "repr":
            return repr(value)
        raise InputError(f"{where}: nested more than {_MAX_DEPTH} levels deep")
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if math.isfinite(v):
            return v
        if nonfinite == "raise":
            raise InputError(f"{where}: {value!r} is not a finite number")
        return None
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist(), **kw)
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), **kw)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v, **kw) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v, **kw) for v in value]
    if isinstance(value, Path):
        return str(value)
    if other == "repr":
        if hasattr(value, "tolist"):  # torch tensors and other array types
            try:
                return to_jsonable(value.tolist(), **kw)
            except Exception:  # noqa: BLE001 - a failing tolist falls back to the repr
                pass
        return repr(value)
    if nonfinite == "raise":  # the suite flavour: the user's input
        raise InputError(f"{where}: value {value!r} of type {type(value).__name__} cannot be recorded; use numbers, "
                         "strings, booleans, null or lists")
    raise TypeError(f"cannot write {type(value).__name__} into a record")

"""The Hasher contract that every method of the suite implements.

Conventions follow scikit-learn's estimators:

* ``__init__`` only stores its keyword arguments (no validation, no work);
* ``fit(image, text, labels, labeled)`` learns and returns ``self``;
* learned state lives in attributes whose names end in ``_``;
* randomness comes only from ``random_state``;
* ``get_params`` / ``set_params`` are derived from the ``__init__`` signature, so ``clone`` and grids
  work without per-method code.

Codes are ``np.int8`` arrays with values in ``{-1, +1}``, one row per item, ``n_bits`` columns.
Binarisation is ``x >= 0 -> +1`` (``np.sign`` would map exact zeros to 0 and make codes ternary).

Retrieval defaults to Hamming ranking of the codes. A method that ranks by its own distance (for
example CDQ's asymmetric quantiser distance) overrides :meth:`Hasher.query_image` /
:meth:`Hasher.query_text` (what a query is turned into) and :meth:`Hasher.distance` (query
representation x database codes -> distances). The evaluator has no special cases: it asks
:meth:`Hasher.uses_own_distance`.
"""
from __future__ import annotations

import inspect
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import InputError
from cmhcore.params import Interval, check_params

__all__ = ["Hasher", "NotFittedError", "binarize", "check_modality", "clone"]


class NotFittedError(InputError, AttributeError):
    """``encode_*`` was called before ``fit``."""


def binarize(values) -> np.ndarray:
    """Real-valued projections -> int8 codes in {-1, +1}, with ``x >= 0 -> +1``."""
    arr = np.asarray(values)
    return np.where(arr >= 0, np.int8(1), np.int8(-1)).astype(np.int8, copy=False)


def clone(hasher: "Hasher") -> "Hasher":
    """A new unfitted hasher with the same parameters."""
    return type(hasher)(**hasher.get_params())


def check_modality(x, name: str, *, allow_sparse: bool, allow_pixels: bool = False):
    """Validate one modality's input matrix; return it as float ndarray, CSR matrix or uint8 pixels.

    Raises :class:`InputError` (one line) for wrong types, wrong rank, NaN or inf. With ``allow_pixels``,
    raw images (uint8 ``(n, H, W, 3)``: an ndarray, a memory map or a lazy image container such as
    ``datasets.images.ImageArray``) are returned as they are, checked by dtype and shape only, so a
    lazy or memory-mapped set is never read here.
    """
    if getattr(type(x), "is_image_container", False):
        if not allow_pixels:
            raise InputError(f"{name}: raw images ({type(x).__name__} {tuple(x.shape)}) are not accepted here; pass a 2-D feature matrix")
        return _check_pixels(x, name)
    if sp.issparse(x):
        if not allow_sparse:
            raise InputError(f"{name}: sparse input is not supported here; pass a dense array")
        x = sp.csr_matrix(x)
        if x.dtype.kind not in "biuf":
            raise InputError(f"{name}: dtype {x.dtype} is not numeric")
        if x.ndim != 2:
            raise InputError(f"{name}: expected a 2-D matrix, got shape {x.shape}")
        if x.nnz and not np.isfinite(x.data).all():
            raise InputError(f"{name}: contains NaN or inf; features must be finite")
        return x
    if isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        x = np.asarray(x)
    else:
        raise InputError(f"{name}: expected a numpy array or scipy sparse matrix, got {type(x).__name__}")
    if x.dtype.kind not in "biuf":
        raise InputError(f"{name}: dtype {x.dtype} is not numeric")
    if x.ndim == 4 and allow_pixels:
        return _check_pixels(x, name)
    if x.ndim != 2:
        valid = "a 2-D feature matrix" + (" or 4-D uint8 images (n, H, W, 3)" if allow_pixels else "")
        raise InputError(f"{name}: expected {valid}, got shape {x.shape}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        raise InputError(f"{name}: {bad} row(s) contain NaN or inf; features must be finite")
    return x


def _check_pixels(x, name: str):
    """dtype and shape of raw images; no pixel is read (values 0..255 are guaranteed by uint8)."""
    if x.dtype != np.uint8:
        raise InputError(f"{name}: raw images must be uint8 (n, H, W, 3), got {x.dtype}")
    if x.ndim != 4 or x.shape[3] != 3 or min(x.shape[1:3]) < 1:
        raise InputError(f"{name}: raw images must have shape (n, H, W, 3) with H, W >= 1, got {tuple(x.shape)}")
    return x


class Hasher:
    """Base class of all cross-modal hashers.

    Subclasses implement ``fit``, ``encode_image`` and ``encode_text`` and declare their
    hyper-parameters as keyword arguments of ``__init__`` (``n_bits`` and ``random_state`` at least).

    Class attributes a subclass may set:

    * ``bits_range``: inclusive ``(min, max)`` code lengths the method supports;
    * ``needs_labels``: ``True`` for supervised methods (then at least one labeled item is required);
    * ``accepts_pixels``: whether the image side may be raw ``uint8`` images;
    * ``known_check_failures``: ``{check_name: reason}`` for common checks that the method is known
      to fail (reported as xfail, never silently skipped);
    * ``check_params``: keyword overrides that make the common checks fast (fewer epochs, ...);
    * ``_parameter_constraints``: ``{param: [allowed forms]}`` (see :mod:`cmhcore.params`), checked by
      :meth:`validate_params`. ``n_bits`` (from ``bits_range``) and ``random_state`` (an int >= 0 or
      None) have defaults here that a subclass may override;
    * ``unconstrained_params``: ``{param: reason}`` for parameters deliberately left without a
      constraint (the common check ``params_validated`` fails for any other unconstrained parameter).
    """

    bits_range: ClassVar[tuple[int, int]] = (1, 1024)
    needs_labels: ClassVar[bool] = True
    accepts_pixels: ClassVar[bool] = False
    known_check_failures: ClassVar[dict[str, str]] = {}
    check_params: ClassVar[dict[str, Any]] = {}
    _parameter_constraints: ClassVar[dict[str, list]] = {}
    unconstrained_params: ClassVar[dict[str, str]] = {}

    # ------------------------------------------------------------------ parameters (sklearn-style)
    @classmethod
    def _get_param_names(cls) -> list[str]:
        init = cls.__init__
        if init is object.__init__:
            return []
        sig = inspect.signature(init)
        names = []
        for p in sig.parameters.values():
            if p.name == "self":
                continue
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must list its parameters explicitly (no *args/**kwargs)")
            names.append(p.name)
        return sorted(names)

    def get_params(self, deep: bool = False) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._get_param_names()}

    def set_params(self, **params) -> "Hasher":
        valid = set(self._get_param_names())
        for key, value in params.items():
            if key not in valid:
                raise InputError(
                    f"{type(self).__name__}: unknown parameter {key!r}; valid: {', '.join(sorted(valid))}"
                )
            setattr(self, key, value)
        return self

    @classmethod
    def parameter_constraints(cls) -> dict[str, list]:
        """The constraints :meth:`validate_params` checks: the class's ``_parameter_constraints`` over
        the defaults for ``n_bits`` and ``random_state`` (only for parameters ``__init__`` declares)."""
        names = set(cls._get_param_names())
        lo, hi = cls.bits_range
        defaults = {"n_bits": [Interval(int, lo, hi, closed="both")],
                    "random_state": [Interval(int, 0, None, closed="left"), None]}
        merged = {k: v for k, v in defaults.items() if k in names}
        merged.update(cls._parameter_constraints)
        return merged

    def validate_params(self) -> None:
        """Check :meth:`get_params` against :meth:`parameter_constraints`; one-line InputError naming the
        first invalid parameter and its valid forms. Does no other work."""
        check_params(type(self).__name__, self.get_params(), self.parameter_constraints())

    def _validate_params(self):
        """Called first thing in ``fit``; subclasses that add cross-parameter rules call this first."""
        self.validate_params()

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ the contract
    def fit(self, image, text, labels, labeled=None) -> "Hasher":  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_image(self, image) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode_text(self, text) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    # Retrieval hooks. Defaults: queries are codes, distance is Hamming (the evaluator's fast path).
    def query_image(self, image):
        """What an image query is turned into before ranking (codes unless overridden)."""
        return self.encode_image(image)

    def query_text(self, text):
        """What a text query is turned into before ranking (codes unless overridden)."""
        return self.encode_text(text)

    def distance(self, queries, database_codes) -> np.ndarray:
        """Distances (n_queries, n_database), smaller = closer. Default: Hamming distance of codes."""
        q = np.asarray(queries, dtype=np.int32)
        d = np.asarray(database_codes, dtype=np.int32)
        return (q.shape[1] - q @ d.T) // 2

    def distance_state(self) -> dict[str, np.ndarray]:
        """The fitted arrays :meth:`distance` needs besides its two arguments (CDQ: its codebooks), so that
        stored query representations and database codes can be re-ranked without refitting. Default:
        none (Hamming distance needs nothing)."""
        return {}

    def set_distance_state(self, state: dict[str, np.ndarray]) -> "Hasher":
        """Restore :meth:`distance_state` on a fresh instance built from the recorded parameters, after
        which ``distance(queries, database_codes)`` works. Default: nothing to restore."""
        return self

    @classmethod
    def uses_own_distance(cls) -> bool:
        """True when the method ranks by its own distance rather than by Hamming distance."""
        return cls.distance is not Hasher.distance

    # ------------------------------------------------------------------ helpers for subclasses
    def _validate_bits(self) -> int:
        lo, hi = self.bits_range
        bits = getattr(self, "n_bits", None)
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)) or not lo <= bits <= hi:
            raise InputError(f"n_bits={bits!r} is not supported by {type(self).__name__}; valid: an integer in [{lo}, {hi}]")
        return int(bits)

    def _validate_fit(self, image, text, labels, labeled=None):
        """Check and convert fit inputs before any work; returns (image, text, labels, labeled).

        ``labels`` comes back as uint8 with the rows of unlabeled items zeroed, so a method that
        uses this helper cannot read a masked label even if the caller passed one.
        """
        self._validate_bits()
        image = check_modality(image, "image", allow_sparse=True, allow_pixels=self.accepts_pixels)
        text = check_modality(text, "text", allow_sparse=True)
        if sp.issparse(labels):
            labels = labels.toarray()
        labels = np.asarray(labels)
        if labels.ndim != 2:
            raise InputError(f"labels: expected a 2-D multi-hot matrix (n_items, n_labels), got shape {labels.shape}")
        n = image.shape[0]
        if text.shape[0] != n or labels.shape[0] != n:
            raise InputError(
                f"row counts differ: image has {n}, text has {text.shape[0]}, labels has {labels.shape[0]}; "
                "row i of each must be the same item"
            )
        if n < 2:
            raise InputError(f"need at least 2 training items, got {n}")
        if labeled is None:
            labeled = np.ones(n, dtype=bool)
        labeled = np.asarray(labeled)
        if labeled.shape != (n,) or labeled.dtype != bool:
            raise InputError(f"labeled: expected a boolean mask of shape ({n},), got {labeled.dtype} {labeled.shape}")
        vis = labels[labeled]
        if vis.size and not np.isin(vis, (0, 1)).all():
            raise InputError("labels: values must be 0 or 1 (multi-hot)")
        if self.needs_labels and not labeled.any():
            raise InputError(f"{type(self).__name__} is supervised: at least one training item must be labeled")
        empty = int((vis.sum(axis=1) == 0).sum()) if vis.size else 0
        if empty:
            raise InputError(
                f"labels: {empty} labeled training item(s) have an empty label set; "
                "mark them unlabeled (labeled=False) or drop them"
            )
        clean = np.zeros(labels.shape, dtype=np.uint8)
        clean[labeled] = vis.astype(np.uint8)
        return image, text, clean, labeled.copy()

    def extras(self) -> dict[str, Any]:
        """Method-specific results kept in each run record: loss curves, training diagnostics, and how
        defaults were chosen.

        The default gathers every learned attribute whose name ends in ``history_`` (``loss_history_``,
        ``history_``, ...) under its name without the trailing underscore, a class attribute
        ``validation_selection`` if there is one, and the dict ``extras_`` if the method sets one.
        """
        out: dict[str, Any] = {}
        selection = getattr(type(self), "validation_selection", None)
        if selection:
            out["validation_selection"] = selection
        for name, value in vars(self).items():
            if name.endswith("history_"):
                out[name[:-1]] = value
        out.update(getattr(self, "extras_", None) or {})
        return out

    def _check_fitted(self, *attrs: str) -> None:
        fitted = [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]
        if not fitted or any(not hasattr(self, a) for a in attrs):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet; call fit(image, text, labels, labeled) first")

    def _validate_encode(self, x, modality: str, n_features: int | None):
        """Check an encode input against what fit saw; returns it converted."""
        self._check_fitted()
        allow_pixels = self.accepts_pixels and modality == "image"
        x = check_modality(x, modality, allow_sparse=True, allow_pixels=allow_pixels)
        if n_features is not None and x.ndim == 2 and x.shape[1] != n_features:
            raise InputError(f"{modality}: has {x.shape[1]} features, but {type(self).__name__} was fitted with {n_features}")
        return x

"""Common checks applied to every registered method (and to any user plug-in).

Like scikit-learn's estimator checks: small functions, each taking a hasher *class* plus the
parameters to build it with, each raising ``AssertionError`` with a one-line reason on failure.
``tests/benchmark/test_checks.py`` runs every check on every registered method (one pytest id per
(method, check)); users run them on their own class with::

    python -m benchmark check mypkg.hashers:MyHasher      # or
    from benchmark.checks import check_hasher; check_hasher(MyHasher)

A method declares checks it is known to fail in ``known_check_failures = {check: reason}``; they
are reported as expected failures, never silently skipped. ``check_params`` on the class makes the
checks fast (fewer epochs, smaller layers); the checks never change anything else.

A method cannot pass by accident: each check gets its own fresh copies of the data, every array
handed to ``fit`` and ``encode_*`` is read-only (an in-place write raises, and the finding says
so), and determinism is checked both within this process and across two fresh processes with
different ``hash()`` salts. Each finding is one line: the check, what failed, and the fix.

The ``pixels_*`` checks repeat the main checks with the image side as raw uint8 images
(:func:`check_pixel_data`: 32 x 32 pictures whose coloured blocks depend on the labels). A method
with ``accepts_pixels`` runs them with ``check_params`` updated by its ``pixel_check_params`` (e.g.
a small ``image_size`` and fewer epochs: CNN-F costs far more per item than the MLP on features);
a method without it must refuse pixels with a one-line InputError before any work.
"""
from __future__ import annotations

import contextvars
import copy
import importlib.util
import os
import pickle
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from cmhcore.errors import InputError
from cmhcore.params import describe, invalid_values
from methods.base import Hasher, NotFittedError

__all__ = ["CHECKS", "FIXES", "applies", "check_hasher", "check_names", "finding", "resolve_hasher", "CheckData",
           "check_data", "check_pixel_data"]

N_BITS = 16
PIXEL_SIDE = 32  # stored image side; methods resize to their backbone's input size


@dataclass(frozen=True)
class CheckData:
    """Small easy synthetic data: training rows (half of them labeled) + queries + database."""

    train: tuple  # (image, text, labels, labeled), labels with unlabeled rows zeroed
    train_scrambled_labels: np.ndarray  # same labels but garbage in the unlabeled rows
    query: tuple  # (image, text, labels)
    database: tuple  # (image, text, labels)


@lru_cache(maxsize=1)
def check_data() -> CheckData:
    from datasets.base import mask_labels
    from datasets.synthetic import make_synthetic

    ds = make_synthetic(n_items=600, n_labels=8, image_dim=24, text_dim=80, latent_dim=12, noise=0.3,
                        label_density=0.12, words_per_item=8, n_query=100, n_train=300, seed=7)
    p = ds.protocol
    img, txt, lab = ds.subset(p.train)
    masked = mask_labels(lab, 0.5, seed=3)
    rng = np.random.default_rng(11)
    scrambled = np.array(masked.labels)
    garbage = (rng.random((int((~masked.labeled).sum()), lab.shape[1])) < 0.5).astype(np.uint8)
    scrambled[~masked.labeled] = garbage
    train = (img, txt, np.array(masked.labels), np.array(masked.labeled))
    return _fresh(CheckData(train, scrambled, ds.subset(p.query), ds.subset(p.database)))  # cached: read-only


def _label_images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """uint8 (n, 32, 32, 3): noise, plus for each label of an item a block of that label's colour in
    that label's cell of a 2 x 4 grid (16 x 8 pixels), itself noisy. Images of items that share a
    label share a block, so image content predicts the labels (and the retrieval relevance)."""
    n, n_labels = labels.shape
    x = rng.normal(90.0, 25.0, (n, PIXEL_SIDE, PIXEL_SIDE, 3))
    palette = np.array([[230, 40, 40], [40, 230, 40], [40, 40, 230], [230, 230, 40],
                        [230, 40, 230], [40, 230, 230], [250, 250, 250], [10, 10, 10]], dtype=np.float64)
    h, w = PIXEL_SIDE // 2, PIXEL_SIDE // 4
    for lab in range(n_labels):
        r, c = divmod(lab % 8, 4)
        on = labels[:, lab] > 0
        block = palette[lab % 8] + rng.normal(0.0, 20.0, (int(on.sum()), h, w, 3))
        x[on, r * h:(r + 1) * h, c * w:(c + 1) * w] = block
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def check_pixel_data() -> CheckData:
    """:func:`check_data` with the image side replaced by raw uint8 images drawn from each item's labels.

    The training images are drawn from the true labels of every item, masked or not (a picture
    exists whether or not its labels are known); the methods still see only the visible labels.
    """
    from datasets.base import mask_labels
    from datasets.synthetic import make_synthetic

    ds = make_synthetic(n_items=600, n_labels=8, image_dim=24, text_dim=80, latent_dim=12, noise=0.3,
                        label_density=0.12, words_per_item=8, n_query=100, n_train=300, seed=7)
    base = check_data()
    rng = np.random.default_rng(23)
    p = ds.protocol
    _, _, lab_train = ds.subset(p.train)
    masked = mask_labels(lab_train, 0.5, seed=3)
    train = (_label_images(np.asarray(lab_train), rng), *base.train[1:])
    assert np.array_equal(masked.labels, base.train[2])  # same items and mask as the feature data
    query = (_label_images(np.asarray(base.query[2]), rng), *base.query[1:])
    database = (_label_images(np.asarray(base.database[2]), rng), *base.database[1:])
    return _fresh(CheckData(train, base.train_scrambled_labels, query, database))


# The data the running check uses: the feature data, or the pixel data inside a pixels_* check.
_PIXELS = contextvars.ContextVar("check_pixels", default=False)


def _readonly(x):
    """A fresh copy of an array (dense or sparse) on which any in-place write raises ValueError."""
    if sp.issparse(x):
        y = x.copy()
        for name in ("data", "indices", "indptr", "row", "col"):
            part = getattr(y, name, None)
            if isinstance(part, np.ndarray):
                part.setflags(write=False)
        return y
    y = np.array(x, copy=True)
    y.setflags(write=False)
    return y


def _fresh(d: CheckData) -> CheckData:
    """Read-only copies of everything: no check can see what a method did to another check's arrays."""
    return CheckData(tuple(map(_readonly, d.train)), _readonly(d.train_scrambled_labels),
                     tuple(map(_readonly, d.query)), tuple(map(_readonly, d.database)))


def _data() -> CheckData:
    return _fresh(check_pixel_data() if _PIXELS.get() else check_data())


def _copy_inputs(train):
    return tuple(_readonly(x) for x in train)


def resolve_hasher(method) -> tuple[type[Hasher], dict[str, Any]]:
    """A registered name, 'module:Class', a Hasher class or instance -> (class, base params)."""
    from methods import get_method

    if isinstance(method, Hasher):
        return type(method), method.get_params()
    if isinstance(method, type):
        if not issubclass(method, Hasher):
            raise InputError(f"{method.__name__} is not a subclass of methods.Hasher")
        return method, {}
    if isinstance(method, str):
        return get_method(method), {}
    raise InputError(f"cannot check {method!r}: pass a method name, 'module:Class', a Hasher class or instance")


def _build(cls: type[Hasher], params: dict, **overrides) -> Hasher:
    names = set(cls._get_param_names())
    merged = {**params, **cls.check_params}
    if _PIXELS.get():
        merged.update(getattr(cls, "pixel_check_params", {}))
    merged.setdefault("n_bits", N_BITS)
    merged.setdefault("random_state", 0)
    if "device" in names:
        merged["device"] = "cpu"
    merged.update(overrides)
    return cls(**{k: v for k, v in merged.items() if k in names})


def _fit(cls, params, labels=None, **overrides) -> Hasher:
    d = _data()
    img, txt, lab, labeled = _copy_inputs(d.train)
    return _build(cls, params, **overrides).fit(img, txt, lab if labels is None else _readonly(labels), labeled)


def _encode_both(h: Hasher, part) -> tuple[np.ndarray, np.ndarray]:
    return h.encode_image(part[0]), h.encode_text(part[1])


def _assert_same_codes(a, b, what: str):
    for name, x, y in zip(("image", "text"), a, b):
        if not np.array_equal(x, y):
            frac = float(np.mean(np.asarray(x) != np.asarray(y)))
            raise AssertionError(f"{what}: {name} codes differ ({frac:.1%} of entries)")


# ---------------------------------------------------------------------------------------- checks
def check_init_only_stores(cls, params):
    """__init__ stores its parameters unchanged; get_params/set_params round-trip; nothing learned yet."""
    h = _build(cls, params)
    p = h.get_params()
    h2 = cls(**p)
    assert h2.get_params() == p, "get_params() of a rebuilt hasher differs"
    learned = [a for a in vars(h2) if a.endswith("_") and not a.startswith("_")]
    assert not learned, f"__init__ set learned attributes {learned}"
    h2.set_params(random_state=123)
    assert h2.get_params()["random_state"] == 123, "set_params did not set random_state"


def check_encode_before_fit_raises(cls, params):
    """Encoding an unfitted hasher fails with NotFittedError (one line), not an AttributeError deep inside."""
    d = _data()
    h = _build(cls, params)
    for enc, x in ((h.encode_image, d.query[0]), (h.encode_text, d.query[1])):
        try:
            enc(x)
        except NotFittedError:
            continue
        raise AssertionError(f"{enc.__name__} before fit did not raise NotFittedError")


def check_codes_format(cls, params):
    """Codes are int8 {-1,+1}, one row per item, n_bits columns, and not all identical."""
    d = _data()
    h = _fit(cls, params)
    n_bits = h.get_params()["n_bits"]
    for name, codes, n in (("image", h.encode_image(d.database[0]), d.database[0].shape[0]),
                           ("text", h.encode_text(d.database[1]), d.database[1].shape[0])):
        assert isinstance(codes, np.ndarray), f"{name} codes are {type(codes).__name__}, not ndarray"
        assert codes.dtype == np.int8, f"{name} codes have dtype {codes.dtype}, expected int8"
        assert codes.shape == (n, n_bits), f"{name} codes have shape {codes.shape}, expected {(n, n_bits)}"
        assert np.isin(codes, (-1, 1)).all(), f"{name} codes contain values other than -1/+1"
        assert np.unique(codes, axis=0).shape[0] > 1, f"{name} codes collapsed to a single code"
    q = h.query_image(d.query[0])
    assert np.asarray(q).shape[0] == d.query[0].shape[0], "query_image returns the wrong number of rows"


def check_same_seed_same_codes(cls, params):
    """Two fresh hashers with the same random_state give identical codes."""
    d = _data()
    a = _encode_both(_fit(cls, params), d.database)
    b = _encode_both(_fit(cls, params), d.database)
    _assert_same_codes(a, b, "same random_state")


# Run in a fresh interpreter by check_same_codes_across_processes: fit on the check data, write the
# database codes. argv: payload (cloudpickle of (class, params)), output .npz.
_CHILD = """
import pickle, sys
import numpy as np
from benchmark import checks
with open(sys.argv[1], "rb") as fh:
    cls, params = pickle.load(fh)
h = checks._fit(cls, params)
image, text = checks._encode_both(h, checks._data().database)
np.savez(sys.argv[2], image=np.asarray(image), text=np.asarray(text))
"""


def _importable(module_name: str) -> bool:
    if module_name in ("__main__", "__mp_main__") or module_name not in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return False
    origin = getattr(sys.modules[module_name], "__file__", None)
    return spec is not None and (origin is None or spec.origin == origin)


def check_same_codes_across_processes(cls, params):
    """Two fresh processes, each with its own hash() salt and pid, give identical codes for the same
    random_state (a method seeded from hash(), os.getpid(), time or id() passes in one process only)."""
    try:
        import cloudpickle  # a dependency of joblib >= 1.5
    except ImportError:  # older joblib vendors it
        from joblib.externals import cloudpickle

    module = sys.modules.get(cls.__module__)
    by_value = module is not None and not _importable(cls.__module__)
    if by_value:  # a class the child cannot import (a test module, a notebook): ship its code
        cloudpickle.register_pickle_by_value(module)
    try:
        payload = cloudpickle.dumps((cls, params))
    finally:
        if by_value:
            cloudpickle.unregister_pickle_by_value(module)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)  # the parent's imports resolve the same
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[var] = "1"  # the two children run side by side
    with tempfile.TemporaryDirectory(prefix="cmh-check-") as tmp:
        src = os.path.join(tmp, "payload.pkl")
        with open(src, "wb") as fh:
            fh.write(payload)
        procs = []
        for salt in ("1", "2"):
            out = os.path.join(tmp, f"codes{salt}.npz")
            procs.append((out, subprocess.Popen([sys.executable, "-c", _CHILD, src, out], env={**env, "PYTHONHASHSEED": salt},
                                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)))
        codes = []
        for out, proc in procs:
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                last = (err.strip().splitlines() or ["(no output)"])[-1]
                raise AssertionError(f"fitting in a fresh process failed: {last}")
            with np.load(out, allow_pickle=False) as z:
                codes.append((z["image"], z["text"]))
    _assert_same_codes(codes[0], codes[1], "two processes, same random_state")


def check_fit_twice(cls, params):
    """Refitting the same object gives the same codes as the first fit (no state leaks between fits)."""
    d = _data()
    h = _fit(cls, params)
    first = _encode_both(h, d.database)
    img, txt, lab, labeled = _copy_inputs(d.train)
    h.fit(img, txt, lab, labeled)
    _assert_same_codes(first, _encode_both(h, d.database), "fit twice")


def _snapshot(x):
    return x.copy() if not sp.issparse(x) else x.copy().tocsr()


def _equal(a, b) -> bool:
    if sp.issparse(a):
        return sp.issparse(b) and a.shape == b.shape and (a != b).nnz == 0
    return np.array_equal(a, b)


def check_inputs_not_mutated(cls, params):
    """fit and encode leave their input arrays untouched."""
    d = _data()
    inputs = _copy_inputs(d.train)
    before = [_snapshot(x) for x in inputs]
    h = _build(cls, params).fit(*inputs)
    for name, x, y in zip(("image", "text", "labels", "labeled"), inputs, before):
        assert _equal(x, y), f"fit mutated its {name} input"
    q_img, q_txt = _readonly(d.query[0]), _readonly(d.query[1])
    h.encode_image(q_img), h.encode_text(q_txt), h.query_image(q_img), h.query_text(q_txt)
    assert _equal(q_img, d.query[0]) and _equal(q_txt, d.query[1]), "encoding mutated its input"


def check_pickle_roundtrip(cls, params):
    """A fitted hasher survives pickling and encodes identically afterwards."""
    d = _data()
    h = _fit(cls, params)
    h2 = pickle.loads(pickle.dumps(h))
    _assert_same_codes(_encode_both(h, d.query), _encode_both(h2, d.query), "after pickling")


def check_batch_equals_single(cls, params):
    """Encoding rows in one batch equals encoding them one at a time (no batch statistics)."""
    d = _data()
    h = _fit(cls, params)
    img, txt = d.query[0][:12], d.query[1][:12]
    batch = _encode_both(h, (img, txt))
    single = (np.concatenate([h.encode_image(img[i:i + 1]) for i in range(12)]),
              np.concatenate([h.encode_text(txt[i:i + 1]) for i in range(12)]))
    _assert_same_codes(batch, single, "batch vs one-by-one")


def check_masked_labels_ignored(cls, params):
    """Garbage in the rows of unlabeled items changes nothing: a method never reads a masked label."""
    d = _data()
    clean = _encode_both(_fit(cls, params), d.database)
    scrambled = _encode_both(_fit(cls, params, labels=d.train_scrambled_labels), d.database)
    _assert_same_codes(clean, scrambled, "masked labels scrambled")


def check_rejects_bad_input(cls, params):
    """NaN features, mismatched rows, non-binary labels and unsupported n_bits fail with InputError before work."""
    d = _data()
    img, txt, lab, labeled = _copy_inputs(d.train)
    nan_img = img.astype(np.float64)
    nan_img[3, 0] = np.nan
    nan_img = _readonly(nan_img)
    lo, hi = cls.bits_range
    cases = {
        "NaN image features": lambda: _build(cls, params).fit(nan_img, txt, lab, labeled),
        "mismatched rows": lambda: _build(cls, params).fit(img[:-1], txt, lab, labeled),
        "non-binary labels": lambda: _build(cls, params).fit(img, txt, lab * 2, labeled),
        "n_bits above range": lambda: _build(cls, params, n_bits=hi + 1).fit(img, txt, lab, labeled),
        "n_bits below range": lambda: _build(cls, params, n_bits=lo - 1).fit(img, txt, lab, labeled),
    }
    _expect_one_line_errors(cases)


def _expect_one_line_errors(cases: dict[str, Callable]) -> None:
    """Each call must raise InputError with a one-line message."""
    for what, call in cases.items():
        try:
            call()
        except InputError as exc:
            assert "\n" not in str(exc), f"{what}: error message is not one line"
            continue
        raise AssertionError(f"{what} did not raise InputError")



class _DataTouched(AssertionError):
    """Raised by :class:`_Untouchable` when a method reads its fit inputs."""


class _Untouchable:
    """A stand-in for a fit input that fails on any use: a method that validates its parameters
    before any work raises InputError without ever touching it."""

    def __init__(self, name: str):
        object.__setattr__(self, "_name", name)

    def _touched(self, *_args, **_kwargs):
        raise _DataTouched(f"fit read its {object.__getattribute__(self, '_name')} input before rejecting the "
                           "invalid parameter")

    def __getattr__(self, _attr):
        self._touched()

    __array__ = __len__ = __getitem__ = __iter__ = __bool__ = _touched


def check_params_validated(cls, params):
    """Every ``__init__`` parameter has a declared constraint (or a reasoned entry in
    ``unconstrained_params``); the defaults satisfy them; and each kind of bad value the constraints
    allow deriving (wrong type, below/above an interval, an unknown option, a bool for an int) fails
    with a one-line InputError naming the parameter, both at ``validate_params`` and at the start of
    ``fit``, before the inputs are touched."""
    names = set(cls._get_param_names())
    constraints = cls.parameter_constraints()
    stray = sorted(set(constraints) - names)
    assert not stray, f"constraints name parameter(s) {', '.join(stray)} that __init__ does not take"
    exempt = dict(cls.unconstrained_params)
    stray = sorted(set(exempt) - names)
    assert not stray, f"unconstrained_params names parameter(s) {', '.join(stray)} that __init__ does not take"
    both = sorted(set(exempt) & set(constraints))
    assert not both, f"parameter(s) {', '.join(both)} are both constrained and listed in unconstrained_params"
    missing = sorted(names - set(constraints) - set(exempt))
    assert not missing, (f"parameter(s) without a declared constraint: {', '.join(missing)}; declare them in "
                         "_parameter_constraints or list them in unconstrained_params with the reason")
    _build(cls, params).validate_params()  # the defaults (with the checks' overrides) must be valid
    untouchable = tuple(_Untouchable(n) for n in ("image", "text", "labels", "labeled"))
    for name, forms in constraints.items():
        valid = " or ".join(describe(f) for f in forms)
        for kind, value in invalid_values(forms):
            what = f"{name}={value!r} ({kind}; valid: {valid})"
            for stage in ("validate_params", "fit"):
                h = _build(cls, params, **{name: value})
                call = h.validate_params if stage == "validate_params" else (lambda: h.fit(*untouchable))
                try:
                    call()
                except InputError as exc:
                    msg = str(exc)
                    assert "\n" not in msg, f"{stage} with {what}: the error message is not one line"
                    assert f"{name}=" in msg, f"{stage} with {what}: the error does not name the parameter: {msg}"
                    continue
                raise AssertionError(f"{stage} with {what} did not raise InputError")


def check_beats_random_floor(cls, params):
    """On easy synthetic data the method beats the random-projection floor by a wide margin, both directions."""
    from benchmark.metrics import mean_average_precision
    from methods.random_projection import RandomProjection

    def maps(h, d):
        out = []
        for q_side, db_side in ((0, 1), (1, 0)):  # image->text, text->image
            q = h.query_image(d.query[0]) if q_side == 0 else h.query_text(d.query[1])
            db = h.encode_text(d.database[1]) if db_side == 1 else h.encode_image(d.database[0])
            dist = h.distance if type(h).uses_own_distance() else None
            out.append(mean_average_precision(q, db, d.query[2], d.database[2], distance=dist).value)
        return np.array(out)

    # The floor of random codes depends on the labels only; on the pixel data (same items and labels)
    # it is taken from the feature data, since random projections need feature vectors.
    token = _PIXELS.set(False)
    try:
        floor = maps(_fit(RandomProjection, {}), _fresh(check_data()))
    finally:
        _PIXELS.reset(token)
    got = maps(_fit(cls, params), _data())
    margin = 0.1
    assert (got >= floor + margin).all(), (
        f"MAP I->T/T->I {got.round(3).tolist()} does not beat the random floor {floor.round(3).tolist()} by {margin}"
    )


def check_pixels_rejected_or_backbone_checked(cls, params):
    """Without ``accepts_pixels``: fitting on raw images fails with a one-line InputError. With it:
    the image backbone must fit the input (a feature backbone on pixels, a pixel backbone on
    features, and pixels given to a hasher fitted on features all fail in one line)."""
    feats, pix = _fresh(check_data()), _fresh(check_pixel_data())
    img, txt, lab, labeled = _copy_inputs(pix.train)
    names = set(cls._get_param_names())
    cases = {}
    if not cls.accepts_pixels:
        cases["fit on raw pixels"] = lambda: _build(cls, params).fit(img, txt, lab, labeled)
    else:
        cases["encode pixels after a fit on features"] = lambda: _fit(cls, params).encode_image(pix.query[0])
        if "image_backbone" in names:
            cases["image_backbone='mlp' on pixels"] = lambda: _build(cls, params, image_backbone="mlp").fit(
                img, txt, lab, labeled)
            f_img, f_txt, f_lab, f_labeled = _copy_inputs(feats.train)
            cases["image_backbone='cnnf' on features"] = lambda: _build(cls, params, image_backbone="cnnf").fit(
                f_img, f_txt, f_lab, f_labeled)
    _expect_one_line_errors(cases)


def _on_pixels(check: Callable, name: str) -> Callable:
    def run(cls, params):
        if not cls.accepts_pixels:
            return  # nothing to run on pixels; pixels_rejected_or_backbone_checked covers the refusal
        token = _PIXELS.set(True)
        try:
            check(cls, params)
        finally:
            _PIXELS.reset(token)

    run.__name__ = f"check_pixels_{name}"
    run.__doc__ = f"On raw uint8 images (check_pixel_data): {check.__doc__}"
    return run


CHECKS: dict[str, Callable] = {
    "init_only_stores": check_init_only_stores,
    "encode_before_fit_raises": check_encode_before_fit_raises,
    "codes_format": check_codes_format,
    "same_seed_same_codes": check_same_seed_same_codes,
    "same_codes_across_processes": check_same_codes_across_processes,
    "fit_twice": check_fit_twice,
    "inputs_not_mutated": check_inputs_not_mutated,
    "pickle_roundtrip": check_pickle_roundtrip,
    "batch_equals_single": check_batch_equals_single,
    "masked_labels_ignored": check_masked_labels_ignored,
    "rejects_bad_input": check_rejects_bad_input,
    "params_validated": check_params_validated,
    "beats_random_floor": check_beats_random_floor,
    "pixels_rejected_or_backbone_checked": check_pixels_rejected_or_backbone_checked,
}
for _name in ("codes_format", "same_seed_same_codes", "inputs_not_mutated", "batch_equals_single",
              "masked_labels_ignored", "beats_random_floor"):
    CHECKS[f"pixels_{_name}"] = _on_pixels(CHECKS[_name], _name)


# What to change when a check fails: each finding is "check: what failed; fix: ...".
FIXES: dict[str, str] = {
    "init_only_stores": "__init__ must only store its arguments, unchanged, under the same names",
    "encode_before_fit_raises": "call self._check_fitted(...) at the start of encode_image/encode_text",
    "codes_format": "return int8 codes in {-1, +1} of shape (n_items, n_bits), e.g. through methods.binarize",
    "same_seed_same_codes": "draw every random number from np.random.default_rng(self.random_state) (or a "
                            "torch.Generator seeded from it), never from global random state",
    "same_codes_across_processes": "seed only from random_state: never from hash(), os.getpid(), time or id(), "
                                   "and iterate over sets/dicts of strings in sorted order",
    "fit_twice": "reset every learned attribute at the start of fit",
    "inputs_not_mutated": "copy an input before changing it (x = np.array(x, dtype=np.float32))",
    "pickle_roundtrip": "keep only picklable attributes (no lambdas, open files or live generators)",
    "batch_equals_single": "encode each row on its own: no statistics of the batch at encode time",
    "masked_labels_ignored": "read labels only in rows where labeled is True (or use _validate_fit's output)",
    "rejects_bad_input": "call self._validate_fit / self._validate_encode first; they raise InputError",
    "params_validated": "declare every __init__ parameter in _parameter_constraints (cmhcore.params forms) and "
                        "call self._validate_params() first thing in fit",
    "beats_random_floor": "check the objective and its defaults, or declare the failure in known_check_failures "
                          "with the reason",
    "pixels_rejected_or_backbone_checked": "validate the image side with self._validate_fit / _validate_encode "
                                           "before any work",
}
READ_ONLY_FIX = "the inputs are read-only here: copy an input before changing it (x = np.array(x, dtype=np.float32))"


def finding(name: str, exc: BaseException) -> str:
    """One line: the check, what failed, and the fix."""
    msg = " ".join(f"{type(exc).__name__}: {exc}".split())
    if isinstance(exc, ValueError) and "read-only" in str(exc):
        return f"{name}: the method wrote into an input array in place ({msg}); fix: {READ_ONLY_FIX}"
    base = name[len("pixels_"):] if name.startswith("pixels_") and name not in FIXES else name
    fix = FIXES.get(base)
    return f"{name}: {msg}" + (f"; fix: {fix}" if fix else "")


def check_names() -> list[str]:
    return list(CHECKS)


def applies(cls, name: str) -> bool:
    """Whether check ``name`` applies to ``cls``: the pixel variants need ``accepts_pixels``."""
    return cls.accepts_pixels or not (name.startswith("pixels_") and name != "pixels_rejected_or_backbone_checked")


def check_hasher(method, checks: list[str] | None = None, verbose: bool = False, echo=print) -> dict[str, str]:
    """Run the common checks on ``method``; returns {check: 'passed' | 'xfail: reason'}.

    Raises ``AssertionError`` naming every failed check (and the first error of each) at the end.
    """
    cls, params = resolve_hasher(method)
    names = checks or check_names()
    unknown = sorted(set(names) - set(CHECKS))
    if unknown:
        raise InputError(f"unknown check(s) {', '.join(unknown)}; valid: {', '.join(CHECKS)}")
    results, failures = {}, []
    for name in names:
        if not applies(cls, name):
            results[name] = "not applicable (accepts_pixels is False)"
            if verbose:
                echo(f"{cls.__name__}: {name}: {results[name]}")
            continue
        known = cls.known_check_failures.get(name)
        try:
            CHECKS[name](cls, copy.deepcopy(params))
        except Exception as exc:  # a check reports any exception as a failure of that check
            if known:
                results[name] = f"xfail: {known}"
            else:
                line = finding(name, exc)
                results[name] = f"FAILED: {line}"
                failures.append(line)
        else:
            results[name] = "passed" if not known else "XPASS (declared as known failure)"
            if known:
                failures.append(f"{name} (declared in known_check_failures but passed)")
        if verbose:
            echo(f"{cls.__name__}: {name}: {results[name]}")
    if failures:
        raise AssertionError(f"{cls.__name__} failed {len(failures)} check(s): " + " | ".join(failures))
    return results

"""Every common check on every registered method: one pytest id per (method, check)."""
import numpy as np
import pytest

from methods import REGISTRY, get_method
from benchmark.checks import CHECKS, applies, check_hasher, resolve_hasher

from cmhcore.errors import InputError
from methods.base import Hasher, binarize


class _LinearCodes(Hasher):
    """Test hashers' codes: sign(x W) with the weights ``wi_`` / ``wt_`` their ``fit`` draws."""

    needs_labels = False

    def encode_image(self, image):
        self._check_fitted("wi_")
        return binarize(self._validate_encode(image, "image", self.wi_.shape[0]) @ self.wi_)

    def encode_text(self, text):
        self._check_fitted("wt_")
        return binarize(self._validate_encode(text, "text", self.wt_.shape[0]) @ self.wt_)


# CNN-F makes each pixel check cost seconds: the RDCMH ablations, whose networks and pipeline are
# RDCMH's, run only the pixel check that exercises their own code paths (ND: a linear map of the
# pixels; NS: a subset of the images by index; NJ: two-stage fitting) within CI's time.
ABLATION_PIXEL_CHECKS = {"pixels_same_seed_same_codes"}


def _cases():
    for name in sorted(REGISTRY):
        try:
            cls = get_method(name)
        except InputError:  # collected anyway: test_common_check fails it with the reason
            yield from (pytest.param(name, check, id=f"{name}-{check}") for check in CHECKS)
            continue
        for check in CHECKS:
            if not applies(cls, check):  # the pixel variants run only where accepts_pixels is True
                continue
            if name.startswith("rdcmh-") and check.startswith("pixels_") and check not in ABLATION_PIXEL_CHECKS:
                continue
            yield pytest.param(name, check, id=f"{name}-{check}")


@pytest.mark.parametrize("name,check", list(_cases()))
def test_common_check(name, check):
    try:
        cls = get_method(name)
    except InputError as exc:
        pytest.fail(f"registered method {name!r} cannot be imported: {exc}")
    reason = cls.known_check_failures.get(check)
    if reason:
        # Declared failures must really fail (strict): a stale declaration is an error too.
        with pytest.raises(AssertionError):
            CHECKS[check](cls, {})
        pytest.xfail(reason)
    CHECKS[check](cls, {})


def test_check_hasher_reports_a_broken_plugin():
    """A user plug-in that ignores random_state is caught by the same one-call API."""
    import numpy as np


    class Unseeded(_LinearCodes):

        def __init__(self, n_bits=16, random_state=0):
            self.n_bits = n_bits
            self.random_state = random_state

        def fit(self, image, text, labels, labeled=None):
            image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
            rng = np.random.default_rng()  # ignores random_state on purpose
            self.wi_ = rng.standard_normal((image.shape[1], self.n_bits))
            self.wt_ = rng.standard_normal((text.shape[1], self.n_bits))
            return self

    with pytest.raises(AssertionError, match="same_seed_same_codes"):
        check_hasher(Unseeded, checks=["codes_format", "same_seed_same_codes"])
    assert check_hasher(Unseeded, checks=["codes_format", "rejects_bad_input"]) == {
        "codes_format": "passed", "rejects_bad_input": "passed"}


def test_resolve_hasher_accepts_plugin_string():
    cls, params = resolve_hasher("methods.random_projection:RandomProjection")
    assert cls.__name__ == "RandomProjection" and params == {}


# ---------------------------------------------------------------------------------------- the checks cannot be fooled
def _random_projection_variant(name, **methods_):
    from methods.random_projection import RandomProjection

    return type(name, (RandomProjection,), methods_)


def test_a_method_writing_into_its_encode_input_fails_and_the_finding_names_check_and_fix():
    """The shared check data used to be writable: rounding the input in place passed every check."""
    import numpy as np

    from methods.random_projection import RandomProjection

    def encode_image(self, image):
        np.round(image, 1, out=image)  # in place, on the caller's array
        return RandomProjection.encode_image(self, image)

    rounds = _random_projection_variant("RoundsInPlace", encode_image=encode_image)
    with pytest.raises(AssertionError) as info:
        check_hasher(rounds, checks=["codes_format", "inputs_not_mutated"])
    msg = str(info.value)
    assert "\n" not in msg
    assert "codes_format: the method wrote into an input array in place (ValueError: output array is read-only)" in msg
    assert "inputs_not_mutated: the method wrote into an input array in place" in msg
    assert "fix: the inputs are read-only here: copy an input before changing it" in msg


def test_a_method_seeded_from_hash_fails_only_the_check_across_processes():
    """hash() of a str differs per process: one process sees the same codes twice, two do not."""
    from methods.random_projection import RandomProjection

    def fit(self, image, text, labels, labeled=None):
        seed, self.random_state = self.random_state, hash("cmh-bench") % 2**32
        try:
            return RandomProjection.fit(self, image, text, labels, labeled)
        finally:
            self.random_state = seed

    hashed = _random_projection_variant("HashSeeded", fit=fit)
    assert check_hasher(hashed, checks=["same_seed_same_codes", "fit_twice"]) == {
        "same_seed_same_codes": "passed", "fit_twice": "passed"}
    with pytest.raises(AssertionError) as info:
        check_hasher(hashed, checks=["same_codes_across_processes"])
    msg = str(info.value)
    assert "same_codes_across_processes: AssertionError: two processes, same random_state: image codes differ" in msg
    assert "fix: seed only from random_state: never from hash()" in msg and "\n" not in msg


def test_every_check_gets_fresh_read_only_arrays():
    from benchmark import checks

    a, b = checks._data(), checks._data()
    for part in ("train", "query", "database"):
        for x, y in zip(getattr(a, part), getattr(b, part)):
            arrays = [x.data, y.data] if hasattr(x, "indptr") else [x, y]
            assert all(not arr.flags.writeable for arr in arrays), part
            assert not np.shares_memory(arrays[0], arrays[1]), part
    assert not checks.check_data().train[0].flags.writeable  # the cache itself cannot be changed either


def test_every_check_has_a_fix():
    from benchmark.checks import FIXES

    missing = [name for name in CHECKS if name not in FIXES and name.removeprefix("pixels_") not in FIXES]
    assert missing == []


# ---------------------------------------------------------------------------------------- params_validated
def _toy(name, constraints=None, unconstrained=None, validate_first=True):
    """A small hasher with a float and an option parameter, declared as given."""
    from cmhcore.params import Interval, Options

    def __init__(self, n_bits=16, scale=1.0, mode="a", random_state=0):
        self.n_bits, self.scale, self.mode, self.random_state = n_bits, scale, mode, random_state

    def fit(self, image, text, labels, labeled=None):
        if validate_first:
            self._validate_params()
        image, text, labels, labeled = self._validate_fit(image, text, labels, labeled)
        self._validate_params()
        rng = np.random.default_rng(self.random_state)
        self.wi_ = rng.standard_normal((image.shape[1], self.n_bits)) * self.scale
        self.wt_ = rng.standard_normal((text.shape[1], self.n_bits)) * self.scale
        return self

    if constraints is None:
        constraints = {"scale": [Interval(float, 0, None, closed="neither")], "mode": [Options({"a", "b"})]}
    return type(name, (_LinearCodes,), {"__init__": __init__, "fit": fit,
                                        "_parameter_constraints": constraints,
                                  "unconstrained_params": unconstrained or {}, "__module__": __name__})


def test_params_validated_passes_a_method_that_declares_and_validates_first():
    assert check_hasher(_toy("Declared"), checks=["params_validated"]) == {"params_validated": "passed"}


def test_params_validated_fails_undeclared_parameters_unless_exempted_with_a_reason():
    from cmhcore.params import Interval

    only_scale = {"scale": [Interval(float, 0, None, closed="neither")]}
    with pytest.raises(AssertionError, match=r"params_validated: .*without a declared constraint: mode;"):
        check_hasher(_toy("Undeclared", constraints=only_scale), checks=["params_validated"])
    exempted = _toy("Exempted", constraints=only_scale, unconstrained={"mode": "any string is a valid mode"})
    assert check_hasher(exempted, checks=["params_validated"]) == {"params_validated": "passed"}
    with pytest.raises(AssertionError, match="without a declared constraint: mode, scale"):
        check_hasher(_toy("Nothing", constraints={}), checks=["params_validated"])


def test_params_validated_fails_a_fit_that_reads_its_inputs_before_validating():
    late = _toy("ValidatesLate", validate_first=False)
    with pytest.raises(AssertionError, match="fit read its image input before rejecting the invalid parameter"):
        check_hasher(late, checks=["params_validated"])


def test_params_validated_fails_constraints_the_defaults_violate():
    from cmhcore.params import Interval, Options

    strict = {"scale": [Interval(float, 2, None, closed="left")], "mode": [Options({"a", "b"})]}
    with pytest.raises(AssertionError, match=r"StrictDefaults parameter scale=1.0 is invalid; valid: a float in \[2, inf\)"):
        check_hasher(_toy("StrictDefaults", constraints=strict), checks=["params_validated"])


def test_params_validated_fails_a_method_that_ignores_its_constraints():
    """A method that overrides validation with a no-op lets every bad value through: the finding names
    the value, its kind and the valid forms."""
    ignores = _toy("Ignores")
    ignores.validate_params = lambda self: None
    with pytest.raises(AssertionError) as info:
        check_hasher(ignores, checks=["params_validated"])
    msg = str(info.value)
    assert "validate_params with " in msg and "did not raise InputError" in msg and "\n" not in msg
    assert "valid: " in msg

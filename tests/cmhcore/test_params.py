"""Unit tests of the parameter-constraint mechanism (cmhcore.params) and its Hasher hook."""
import math

import numpy as np
import pytest

from cmhcore.errors import InputError
from cmhcore.params import Interval, Options, check_params, describe, invalid_values, satisfies
from methods.base import Hasher


@pytest.mark.parametrize("value, ok", [
    (1, True), (np.int64(5), True), (10 ** 12, True), (0, False), (True, False), (np.bool_(True), False),
    (1.0, False), ("1", False), (None, False),
])
def test_int_interval_accepts_ints_not_bools(value, ok):
    assert Interval(int, 1, None, closed="left").is_satisfied_by(value) is ok


@pytest.mark.parametrize("value, ok", [
    (0, True), (0.0, True), (np.float32(0.5), True), (np.int32(3), True), (-1e-12, False), (True, False),
    (math.nan, False), (math.inf, False), ("0.1", False),
])
def test_float_interval_accepts_ints_rejects_nan_inf_bool(value, ok):
    assert Interval(float, 0, None, closed="left").is_satisfied_by(value) is ok


@pytest.mark.parametrize("closed, low_ok, high_ok", [
    ("both", True, True), ("left", True, False), ("right", False, True), ("neither", False, False),
])
def test_interval_closed_sides(closed, low_ok, high_ok):
    iv = Interval(float, 0, 1, closed=closed)
    assert iv.is_satisfied_by(0) is low_ok
    assert iv.is_satisfied_by(1) is high_ok
    assert iv.is_satisfied_by(0.5)
    assert not iv.is_satisfied_by(1.0000001) and not iv.is_satisfied_by(-0.0000001)


def test_explicit_infinite_bound_admits_infinity():
    assert Interval(float, 0, math.inf, closed="both").is_satisfied_by(math.inf)
    assert not Interval(float, 0, None, closed="both").is_satisfied_by(math.inf)
    assert not Interval(float, None, 0, closed="both").is_satisfied_by(-math.inf)


@pytest.mark.parametrize("iv, text", [
    (Interval(float, 0, None, closed="left"), "a float in [0, inf)"),
    (Interval(int, 1, None, closed="left"), "an int in [1, inf)"),
    (Interval(int, 1, 1024, closed="both"), "an int in [1, 1024]"),
    (Interval(float, 0, 1, closed="right"), "a float in (0, 1]"),
    (Interval(float, None, 0.5, closed="neither"), "a float in (-inf, 0.5)"),
    (Interval(float, 1e-3, 1, closed="both"), "a float in [0.001, 1]"),
])
def test_interval_description(iv, text):
    assert str(iv) == text


@pytest.mark.parametrize("bad", [
    lambda: Interval(str, 0, 1), lambda: Interval(int, 2, 1), lambda: Interval(int, 0, 1, closed="open"),
    lambda: Options(set()),
])
def test_malformed_constraints_are_programming_errors(bad):
    with pytest.raises(TypeError):
        bad()


def test_options():
    opt = Options({"bins", "pairs"})
    assert opt.is_satisfied_by("bins") and not opt.is_satisfied_by("Bins")
    assert not opt.is_satisfied_by(["bins"])  # unhashable: never an option, no crash
    assert str(opt) == "one of 'bins', 'pairs'"
    num = Options({1, 2})
    assert num.is_satisfied_by(1) and num.is_satisfied_by(np.int64(2))
    assert not num.is_satisfied_by(True)  # True == 1 but a bool is not the option 1


def test_plain_types_none_callable():
    assert satisfies("x", str) and not satisfies(1, str)
    assert satisfies(True, bool) and satisfies(np.bool_(False), bool) and not satisfies(1, bool)
    assert satisfies(3, int) and not satisfies(True, int)
    assert satisfies(3, float) and not satisfies(False, float)
    assert satisfies(None, None) and not satisfies(0, None)
    assert satisfies(len, callable) and not satisfies(3, callable)
    assert satisfies({}, dict) and not satisfies([], dict)
    assert describe(str) == "a str" and describe(int) == "an int" and describe(None) == "None"
    assert describe(callable) == "a callable"
    with pytest.raises(TypeError):
        satisfies(1, "int")  # a string is not a constraint form


def test_check_params_message_is_one_line_naming_parameter_and_valid_forms():
    constraints = {"lam": [Interval(float, 0, None, closed="left")], "image_weights": [str, None]}
    check_params("RDCMH", {"lam": 0.1, "image_weights": None}, constraints)
    with pytest.raises(InputError) as err:
        check_params("RDCMH", {"lam": -1, "image_weights": None}, constraints)
    assert str(err.value) == "RDCMH parameter lam=-1 is invalid; valid: a float in [0, inf)"
    with pytest.raises(InputError) as err:
        check_params("RDCMH", {"lam": 1, "image_weights": 3}, constraints)
    assert str(err.value) == "RDCMH parameter image_weights=3 is invalid; valid: a str or None"


def test_check_params_long_values_are_cut_to_one_short_line():
    with pytest.raises(InputError) as err:
        check_params("M", {"x": np.arange(1000).reshape(10, 100)}, {"x": [int]})
    msg = str(err.value)
    assert "\n" not in msg and len(msg) < 120 and msg.startswith("M parameter x=array(")


def test_check_params_unchecked_and_unknown_names():
    check_params("M", {"free": object()}, {})  # parameters without constraints are not checked here
    with pytest.raises(TypeError, match="unknown parameter"):
        check_params("M", {"a": 1}, {"b": [int]})


@pytest.mark.parametrize("forms", [
    [Interval(int, 1, None, closed="left")],
    [Interval(float, 0, 1, closed="neither")],
    [Interval(float, 0, None, closed="left"), None],
    [Options({"hinge", "linear"})],
    [Options({8, 16, 32})],
    [str, None],
    [bool],
    [callable, None],
])
def test_invalid_values_violate_every_form(forms):
    found = invalid_values(forms)
    assert found, "nothing derived"
    for kind, value in found:
        assert not any(satisfies(value, f) for f in forms), (kind, value)
        with pytest.raises(InputError):
            check_params("M", {"p": value}, {"p": forms})


def test_invalid_values_cover_each_kind():
    kinds = {k for k, _ in invalid_values([Interval(int, 1, 10, closed="both")])}
    assert {"wrong type", "below interval", "above interval", "bool for int"} <= kinds
    assert {k for k, _ in invalid_values([Options({"a", "b"})])} == {"wrong type", "unknown option"}
    assert "nan" in {k for k, _ in invalid_values([Interval(float, 0, 1, closed="both")])}
    # an unbounded side yields no out-of-range probe on that side
    kinds = {k for k, _ in invalid_values([Interval(float, None, None, closed="neither")])}
    assert "below interval" not in kinds and "above interval" not in kinds


class _Toy(Hasher):
    bits_range = (4, 64)
    _parameter_constraints = {"lam": [Interval(float, 0, None, closed="left")], "mode": [Options({"a", "b"})]}

    def __init__(self, n_bits=16, lam=0.1, mode="a", random_state=0):
        self.n_bits, self.lam, self.mode, self.random_state = n_bits, lam, mode, random_state


def test_hasher_validate_params_uses_declared_and_default_constraints():
    _Toy().validate_params()
    _Toy(random_state=None).validate_params()
    cases = {"lam": -0.5, "mode": "c", "n_bits": 3, "random_state": -1}
    for name, value in cases.items():
        with pytest.raises(InputError, match=rf"^_Toy parameter {name}=") as err:
            _Toy(**{name: value}).validate_params()
        assert "valid:" in str(err.value)
    with pytest.raises(InputError, match=r"n_bits=True .*an int in \[4, 64\]"):
        _Toy(n_bits=True)._validate_params()
    assert set(_Toy.parameter_constraints()) == {"n_bits", "random_state", "lam", "mode"}


def test_subclass_constraint_overrides_default():
    class Wide(_Toy):
        _parameter_constraints = {**_Toy._parameter_constraints, "random_state": [int, None]}
    Wide(random_state=-3).validate_params()


def test_distance_state_defaults():
    h = _Toy()
    assert h.distance_state() == {}
    assert h.set_distance_state({}) is h

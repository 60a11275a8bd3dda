"""Parameter constraints declared as data and checked in one place.

A constraint table maps each parameter name to a list of allowed forms; a value is valid when it
satisfies at least one of them (the scikit-learn ``_parameter_constraints`` convention):

* ``Interval(int | float, low, high, closed="both"|"left"|"right"|"neither")``: a number in a range.
  ``int`` accepts Python and numpy integers but not bools; ``float`` accepts any non-bool real number,
  integers included. ``None`` as a bound means unbounded on that side, and then infinity itself is
  not admitted (NaN never is);
* ``Options({...})``: one of a fixed set of values;
* a plain type (``str``, ``bool``, ``int``, ``float``, ``dict``, ...): any instance of it, with the same
  bool rules as ``Interval`` for ``int`` and ``float``;
* ``None``: the value ``None``;
* ``callable``: anything callable.

:func:`check_params` raises one :class:`~cmhcore.errors.InputError` line for the first invalid
parameter, naming the owner, the parameter, its value and every valid form:
``"RDCMH parameter lam=-1 is invalid; valid: a float in [0, inf)"``.
:func:`invalid_values` derives values that violate a parameter's constraints (wrong type, below or
above an interval, an unknown option, a bool for an int), for tests that feed them to an owner.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Mapping

import numpy as np

from cmhcore.errors import InputError

__all__ = ["Interval", "Options", "check_params", "describe", "invalid_values", "satisfies"]

_CLOSED = ("both", "left", "right", "neither")
# Longest value repr kept in a message; an array or a long list is cut so the line stays readable.
_MAX_REPR = 60


def _is_int(value) -> bool:
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_real(value) -> bool:
    return isinstance(value, (numbers.Real, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _fmt_bound(value) -> str:
    if value is None:
        return "inf"
    if isinstance(value, float) and value.is_integer():
        return str(int(value)) if abs(value) < 1e15 else repr(value)
    return repr(value)


class Interval:
    """Numbers of type ``int`` or ``float`` between ``low`` and ``high``.

    ``closed`` says which bounds are included. A ``None`` bound means unbounded on that side; that
    side is then open whatever ``closed`` says, so infinities are only valid when a bound is
    explicitly ``math.inf`` and closed.
    """

    def __init__(self, type_: type, low, high, *, closed: str = "both"):
        if type_ not in (int, float):
            raise TypeError(f"Interval type must be int or float, got {type_!r}")
        if closed not in _CLOSED:
            raise TypeError(f"Interval closed must be one of {', '.join(_CLOSED)}, got {closed!r}")
        if low is not None and high is not None and low > high:
            raise TypeError(f"Interval low={low!r} exceeds high={high!r}")
        self.type = type_
        self.low = low
        self.high = high
        self.closed = closed

    @property
    def _low_closed(self) -> bool:
        return self.low is not None and self.closed in ("both", "left")

    @property
    def _high_closed(self) -> bool:
        return self.high is not None and self.closed in ("both", "right")

    def is_satisfied_by(self, value) -> bool:
        if not (_is_int(value) if self.type is int else _is_real(value)):
            return False
        v = float(value) if self.type is float else int(value)
        if isinstance(v, float) and math.isnan(v):
            return False
        if self.low is None:
            if v == -math.inf:
                return False
        elif v < self.low or (v == self.low and not self._low_closed):
            return False
        if self.high is None:
            if v == math.inf:
                return False
        elif v > self.high or (v == self.high and not self._high_closed):
            return False
        return True

    def __str__(self) -> str:
        lb = "[" if self._low_closed else "("
        rb = "]" if self._high_closed else ")"
        low = "-inf" if self.low is None else _fmt_bound(self.low)
        article = "an" if self.type is int else "a"
        return f"{article} {self.type.__name__} in {lb}{low}, {_fmt_bound(self.high)}{rb}"

    def __repr__(self) -> str:
        return f"Interval({self.type.__name__}, {self.low!r}, {self.high!r}, closed={self.closed!r})"

    def _violations(self) -> list[tuple[str, Any]]:
        out: list[tuple[str, Any]] = []
        step = 1 if self.type is int else 0.5
        if self.low is not None and math.isfinite(self.low):
            out.append(("below interval", self.low if not self._low_closed else self.type(self.low - step)))
        if self.high is not None and math.isfinite(self.high):
            out.append(("above interval", self.high if not self._high_closed else self.type(self.high + step)))
        if self.type is int:
            out.append(("bool for int", True))
            out.append(("float for int", 1.5))
        else:
            out.append(("nan", math.nan))
            out.append(("bool for float", True))
        return out


class Options:
    """One of a fixed set of values (compared by equality; a bool never matches a non-bool option)."""

    def __init__(self, options: Iterable):
        options = frozenset(options)
        if not options:
            raise TypeError("Options needs at least one value")
        self.options = options

    def is_satisfied_by(self, value) -> bool:
        if isinstance(value, (bool, np.bool_)) and not any(isinstance(o, bool) for o in self.options):
            return False
        try:
            return value in self.options
        except TypeError:  # unhashable values (lists, arrays) are never an option
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in sorted(self.options, key=repr))

    def __repr__(self) -> str:
        return f"Options({set(self.options)!r})"

    def _violations(self) -> list[tuple[str, Any]]:
        if all(isinstance(o, str) for o in self.options):
            return [("unknown option", "not-an-option")]
        numeric = [o for o in self.options if _is_real(o)]
        if numeric:
            return [("unknown option", max(numeric) + 1)]
        return []


def _check_form(form) -> None:
    if form is None or form is callable or isinstance(form, (Interval, Options, type)):
        return
    raise TypeError(f"unsupported parameter constraint {form!r}; use Interval, Options, a type, None or callable")


def satisfies(value, form) -> bool:
    """Whether ``value`` satisfies one constraint form."""
    _check_form(form)
    if form is None:
        return value is None
    if form is callable:
        return callable(value)
    if isinstance(form, (Interval, Options)):
        return form.is_satisfied_by(value)
    if form is int:
        return _is_int(value)
    if form is float:
        return _is_real(value)
    if form is bool:
        return isinstance(value, (bool, np.bool_))
    return isinstance(value, form)


def describe(form) -> str:
    """A constraint form in words, as it appears after ``valid:`` in a message."""
    _check_form(form)
    if form is None:
        return "None"
    if form is callable:
        return "a callable"
    if isinstance(form, (Interval, Options)):
        return str(form)
    name = form.__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def _short_repr(value) -> str:
    text = " ".join(repr(value).split())
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


def check_params(owner: str, params: Mapping[str, Any], constraints: Mapping[str, list], *,
                 kind: str = "parameter") -> None:
    """Check every parameter of ``params`` that ``constraints`` names; raise one InputError line for
    the first that satisfies none of its forms (``"<owner> <kind> <name>=<value> is invalid; valid: ..."``;
    datasets pass ``kind="option"``).

    Parameters absent from ``constraints`` are not checked here. A constraint naming a parameter
    that ``params`` lacks is a programming error (``TypeError``), so a renamed parameter cannot
    silently lose its check.
    """
    unknown = sorted(set(constraints) - set(params))
    if unknown:
        raise TypeError(f"{owner}: constraints name unknown parameter(s) {', '.join(unknown)}")
    for name, forms in constraints.items():
        value = params[name]
        if not any(satisfies(value, form) for form in forms):
            valid = " or ".join(describe(form) for form in forms) or "nothing"
            raise InputError(f"{owner} {kind} {name}={_short_repr(value)} is invalid; valid: {valid}")


class _NotValid:
    """A value of a type no constraint admits (used for the wrong-type probe)."""

    def __repr__(self) -> str:
        return "<not a valid value>"


def invalid_values(forms: list) -> list[tuple[str, Any]]:
    """``(kind, value)`` pairs that violate every form in ``forms``.

    Kinds: ``wrong type`` (always, unless ``forms`` admits any object), ``below interval``,
    ``above interval``, ``bool for int``, ``float for int``, ``bool for float``, ``nan``,
    ``unknown option``. A candidate that some form admits is dropped, so each returned value must be
    rejected by :func:`check_params`.
    """
    for form in forms:
        _check_form(form)
    candidates: list[tuple[str, Any]] = [("wrong type", _NotValid())]
    if not any(form is str or isinstance(form, Options) for form in forms):
        candidates.append(("wrong type", "not-a-valid-value"))
    for form in forms:
        if isinstance(form, (Interval, Options)):
            candidates.extend(form._violations())
    out, seen = [], set()
    for kind, value in candidates:
        key = (kind, repr(value))
        if key in seen or any(satisfies(value, form) for form in forms):
            continue
        seen.add(key)
        out.append((kind, value))
    return out

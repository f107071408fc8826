"""One validation scheme for every checked input: `Config`, `SharpnessSettings`, a study params file,
and the arguments of `samlib.sam.SAM`, `samlib.looksam.LookSAM` and `samlib.data`'s functions.

A `Checker` knows one kind of value (its type, its range or its choices) and says in words what it
allows. Called with a key path and a value, it returns the value normalised (an int given for a
number becomes a float, a list a tuple) or raises one `ConfigError` (or, `Checker.raising`, another
error of the library: `DataError` for `samlib.data`'s arguments)::

    <label> '<key path>' has value <value>[ of type <type>]; allowed: <what>[ (<why not>)][<YAML hint>]

The YAML hint: YAML 1.1 reads ``1e-3`` (no dot) as a string, so a string that parses as a number,
given where a number is wanted, adds " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)".

`check_keys` checks a mapping's keys (unknown, missing) with the same wording, `mapping` that a value
is a mapping with text keys, and `checked` / `check_instance` bind checkers to the fields of a frozen
dataclass, so that building one directly validates it too (`Config`, `SharpnessSettings`).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

YAML_HINT = " (YAML reads numbers like 1e-3 as strings: write 1.0e-3)"
CHECK = "check"  # the dataclass field metadata key of a field's Checker


class ConfigError(ValueError):
    """A configuration value (or an argument) is missing, unknown, of the wrong type or out of range."""


class DataError(ValueError):
    """A data set could not be found, downloaded or parsed, or a data argument is out of range; the
    message says what was expected (`samlib.data` and `samlib.idx` raise it)."""


def join(parent: str, key: Any) -> str:
    """The key path ``parent.key`` (just ``key`` at the top)."""
    return f"{parent}.{key}" if parent else str(key)


def yaml_hint(value: Any) -> str:
    """`YAML_HINT` for a string that parses as a number, else ''."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return ""
        return YAML_HINT
    return ""


def invalid(key: str, value: Any, allowed: str, label: str = "key", why: str = "", of_type: bool = False,
            hint: str = "", error: type[ValueError] = ConfigError) -> ValueError:
    """The one message: ``<label> '<key>' has value <value>[ of type T]; allowed: <allowed>[ (<why>)][hint]``,
    as an `error` (default `ConfigError`)."""
    kind = f" of type {type(value).__name__}" if of_type and value is not None else ""
    return error(
        f"{label} {key!r} has value {value!r}{kind}; allowed: {allowed}"
        + (f" ({why})" if why else "") + hint
    )


# ---------------------------------------------------------------------- checkers
class Checker:
    """One kind of value: accepted Python `types` (a bool is never an integer or a number here), a
    `test` of the value's range or choice, a `convert` to its stored form, and `allowed`, the words of
    the error message (`plural`: the same for a list of them); it raises `error` (`raising`)."""

    def __init__(self, allowed: str, types: tuple[type, ...], test: Callable[[Any], bool] = lambda v: True,
                 convert: Callable[[Any], Any] = lambda v: v, numeric: bool = False, plural: str | None = None):
        self.allowed, self.types, self.test, self.convert = allowed, types, test, convert
        self.numeric = numeric  # a numeric string gets the YAML hint
        self.plural = plural or f"values, each {allowed}"
        self.optional = False
        self.error: type[ValueError] = ConfigError

    def or_none(self) -> "Checker":
        """The same checker that also accepts None (YAML ``null``)."""
        other = copy.copy(self)
        other.optional, other.allowed, other.plural = True, f"{self.allowed} or null", f"{self.plural} or null"
        return other

    def raising(self, error: type[ValueError]) -> "Checker":
        """The same checker raising `error` (e.g. `DataError`) instead of `ConfigError`."""
        other = copy.copy(self)
        other.error = error
        return other

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.optional
        return self._type_ok(value) and bool(self.test(value))

    def _type_ok(self, value: Any) -> bool:
        return isinstance(value, self.types) and (bool in self.types or not isinstance(value, bool))

    def __call__(self, key: str, value: Any, label: str = "key") -> Any:
        """`value` normalised; a `ConfigError` (`error`) naming `key`, the value and what is allowed if it is bad."""
        if value is None and self.optional:
            return None
        hint = yaml_hint(value) if self.numeric else ""
        if not self._type_ok(value):
            raise invalid(key, value, self.allowed, label, of_type=True, hint=hint, error=self.error)
        if not self.test(value):
            raise invalid(key, value, self.allowed, label, hint=hint, error=self.error)
        return self.convert(value)


def _num(x: float) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _bounds(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = ([("> " if lo_open else ">= ") + _num(lo)] if lo is not None else []) + (
        [("< " if hi_open else "<= ") + _num(hi)] if hi is not None else [])
    return (" " + " and ".join(parts)) if parts else ""


def _within(v: float, lo, hi, lo_open: bool = False, hi_open: bool = False) -> bool:
    return not ((lo is not None and (v < lo or (lo_open and v == lo)))
                or (hi is not None and (v > hi or (hi_open and v == hi))))


def integer(lo: int | None = None, hi: int | None = None) -> Checker:
    """An int (not a bool) with lo <= value <= hi."""
    bounds = _bounds(lo, hi, False, False)
    return Checker(f"an integer{bounds}", (int,), lambda v: _within(v, lo, hi), numeric=True,
                   plural=f"integers{bounds}")


def number(lo: float | None = None, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> Checker:
    """A finite int or float (not a bool) in the range, stored as a float."""
    bounds = _bounds(lo, hi, lo_open, hi_open)
    return Checker(f"a number{bounds}", (int, float), lambda v: math.isfinite(v) and _within(v, lo, hi, lo_open, hi_open),
                   convert=float, numeric=True, plural=f"numbers{bounds}")


def boolean() -> Checker:
    return Checker("true or false", (bool,), plural="true or false values")


def choice(options: Sequence[str]) -> Checker:
    """One of `options` (strings)."""
    options = tuple(options)
    return Checker(", ".join(options), (str,), lambda v: v in options, plural=f"values from {', '.join(options)}")


def text(pattern: str | re.Pattern | None = None, allowed: str = "a text") -> Checker:
    """A string; with `pattern`, one that matches it whole."""
    return Checker(allowed, (str,), lambda v: pattern is None or re.fullmatch(pattern, v) is not None)


class ListOf(Checker):
    """A list (or tuple) of values each accepted by `item`, stored as a tuple; optionally non-empty
    and without duplicates."""

    def __init__(self, item: Checker, non_empty: bool = True, distinct: bool = False):
        allowed = f"a {'non-empty ' if non_empty else ''}list of {'distinct ' if distinct else ''}{item.plural}"
        super().__init__(allowed, (list, tuple), convert=tuple)
        self.item, self.non_empty, self.distinct = item, non_empty, distinct

    def __call__(self, key: str, value: Any, label: str = "key") -> Any:
        if value is None and self.optional:
            return None
        if not self._type_ok(value):
            raise invalid(key, value, self.allowed, label, of_type=True, error=self.error)
        if self.non_empty and not value:
            raise invalid(key, value, self.allowed, label, error=self.error)
        out = []
        for v in value:
            if not self.item.accepts(v):
                hint = yaml_hint(v) if self.item.numeric else ""
                why = getattr(self.item, "why_not", lambda _: None)(v) or f"{v!r} is not"
                raise invalid(key, value, self.allowed, label, why=why, hint=hint, error=self.error)
            out.append(self.item.convert(v) if v is not None else None)
        if self.distinct and len(set(out)) != len(out):
            raise invalid(key, value, self.allowed, label, why="duplicates", error=self.error)
        return tuple(out)


def list_of(item: Checker, non_empty: bool = True, distinct: bool = False) -> ListOf:
    return ListOf(item, non_empty, distinct)


# ---------------------------------------------------------------------- mappings
def mapping(key: str, value: Any, label: str = "key", optional: bool = True) -> dict[str, Any]:
    """`value` as a dict with text keys (None: {} when `optional`)."""
    if value is None and optional:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(key, value, "a mapping of keys to values", label)
    for k in value:
        if not isinstance(k, str):
            raise invalid(join(key, k), value[k], "string keys only", label)
    return dict(value)


def check_keys(values: Mapping[str, Any], allowed: Iterable[str], where: str = "", label: str = "key",
               required: Iterable[str] = ()) -> None:
    """Every key of `values` one of `allowed` and every `required` key present, else one `ConfigError`:
    ``unknown <label> '<where>.<k>' (value v); allowed keys[ under '<where>']: ...`` or ``missing
    required <label> '<where>.<k>'``."""
    allowed = list(allowed)
    for k, v in values.items():
        if k not in allowed:
            raise ConfigError(
                f"unknown {label} {join(where, k)!r} (value {v!r}); allowed keys"
                + (f" under {where!r}" if where else "") + f": {', '.join(allowed)}"
            )
    for k in required:
        if k not in values:
            raise ConfigError(f"missing required {label} {join(where, k)!r}")


def check_values(values: Mapping[str, Any], checks: Mapping[str, Checker], where: str = "",
                 label: str = "key") -> dict[str, Any]:
    """Each value checked by its key's checker (`check_keys` first), normalised."""
    check_keys(values, checks, where, label)
    return {k: checks[k](join(where, k), v, label) for k, v in values.items()}


# ---------------------------------------------------------------------- dataclasses
def checked(default: Any, check: Checker) -> Any:
    """A dataclass field with its `Checker` (see `check_instance`)."""
    return dataclasses.field(default=default, metadata={CHECK: check})


def checks_of(cls: type) -> dict[str, Checker]:
    """Field name → Checker of a dataclass built with `checked` fields, in field order."""
    return {f.name: f.metadata[CHECK] for f in dataclasses.fields(cls)}


def check_instance(obj: Any, label: str = "key") -> None:
    """For ``__post_init__`` of a frozen dataclass: check every field and store its normalised value."""
    for f in dataclasses.fields(obj):
        value = f.metadata[CHECK](f.name, getattr(obj, f.name), label)
        object.__setattr__(obj, f.name, value)

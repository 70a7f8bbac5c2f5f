"""Plugin options checked before anything runs: unknown names, wrong types, values out of range.

A plugin declares its options with their defaults (``ProtocolSpec.defaults``, and
``BackboneSpec.options`` / ``DatasetSpec.options``) and may bound their values
(``limits``: :func:`at_least`, :func:`fraction`, :func:`between`, :func:`one_of`). An option a
run sets that the plugin does not declare would do nothing yet be written into every record as
if it had; a value of the wrong type or out of range would fail deep inside a cell with a bare
Python error, or silently do something else (a negative temperature inverts kNN's weighting).
All are user errors found here, naming the plugin and the option, before any cell runs.
A list option (a grid) must not be empty. Specs that declare no options are not checked here;
their ``load`` checks what it is given.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import UserError

_NAMES = {
    bool: ("true or false", "true/false values"),
    int: ("an integer", "integers"),
    float: ("a number", "numbers"),
    str: ("a string", "strings"),
}


@dataclass(frozen=True)
class OptionLimit:
    """The values an option may take beyond its type: a range (each bound open or closed) or a
    set of choices. For a list option, every element must satisfy it."""

    minimum: float | None = None
    maximum: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True
    choices: tuple[Any, ...] | None = None

    def describe(self) -> str:
        """The allowed values in words: ``at least 1``, ``in (0, 1)``, ``one of 'a', 'b'``."""
        if self.choices is not None:
            return "one of " + ", ".join(repr(c) for c in self.choices)
        if self.maximum is None:
            return f"{'at least' if self.min_inclusive else 'greater than'} {self.minimum:g}"
        if self.minimum is None:
            return f"{'at most' if self.max_inclusive else 'less than'} {self.maximum:g}"
        left, right = "[" if self.min_inclusive else "(", "]" if self.max_inclusive else ")"
        return f"in {left}{self.minimum:g}, {self.maximum:g}{right}"

    def allows(self, value: Any) -> bool:
        """Whether one (scalar) value is allowed."""
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return False
        if self.minimum is not None and (value < self.minimum or (value == self.minimum and not self.min_inclusive)):
            return False
        return self.maximum is None or not (value > self.maximum or (value == self.maximum and not self.max_inclusive))


def at_least(minimum: float) -> OptionLimit:
    """A number of at least ``minimum`` (``at_least(1)`` for counts such as k)."""
    return OptionLimit(minimum=minimum)


def greater_than(minimum: float) -> OptionLimit:
    """A number strictly greater than ``minimum`` (``greater_than(0)`` for temperatures, rates)."""
    return OptionLimit(minimum=minimum, min_inclusive=False)


def between(minimum: float, maximum: float, inclusive: bool = True) -> OptionLimit:
    """A number in ``[minimum, maximum]`` (or the open interval with ``inclusive=False``)."""
    return OptionLimit(minimum=minimum, maximum=maximum, min_inclusive=inclusive, max_inclusive=inclusive)


def fraction() -> OptionLimit:
    """A fraction strictly between 0 and 1 (a split share, a label-smoothing amount)."""
    return between(0.0, 1.0, inclusive=False)


def one_of(*choices: Any) -> OptionLimit:
    """One of the given values."""
    return OptionLimit(choices=tuple(choices))


def _scalar_type(value: Any) -> type | None:
    for t in (bool, int, float, str):  # bool before int: True is an int to Python
        if isinstance(value, t):
            return t
    return None


def _fits_scalar(kind: type, value: Any) -> bool:
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, kind)


def _expected(default: Any) -> tuple[type | None, str]:
    """The scalar type a default stands for (its own, or its elements') and how to name it."""
    if isinstance(default, (list, tuple)):
        kinds = {_scalar_type(d) for d in default}
        kind = kinds.pop() if len(kinds) == 1 else None
        return kind, f"a list of {_NAMES[kind][1]}" if kind else "a list"
    kind = _scalar_type(default)
    return kind, _NAMES[kind][0] if kind else ""


def _fits(default: Any, value: Any, grids: bool = True) -> bool:
    """A value fits a default of its own type; with ``grids`` (protocols) a scalar option may
    also take a list of such values (a grid, e.g. kNN temperatures) and a list option a single
    such value."""
    if default is None:
        return True
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    kind, _ = _expected(default)
    if kind is None:
        return isinstance(value, (list, tuple)) if isinstance(default, (list, tuple)) else True
    if not grids and isinstance(value, (list, tuple)) != isinstance(default, (list, tuple)):
        return False
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(_fits_scalar(kind, v) for v in values)


def check_plugin_options(
    kind: str,
    name: str,
    declared: Mapping[str, Any] | None,
    options: Mapping[str, Any],
    limits: Mapping[str, OptionLimit] | None = None,
) -> None:
    """Raise ``UserError`` for an option the ``kind`` plugin ``name`` does not declare, a value
    of the wrong type, an empty grid, or a value outside its limit. ``declared`` maps each
    option to its default; ``None`` (or empty) means the plugin declares none: not checked."""
    if not declared:
        return
    for key, value in options.items():
        if key not in declared:
            close = difflib.get_close_matches(key, list(declared), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"{kind} {name!r}: unknown option {key!r}; {hint}it takes {', '.join(sorted(declared))}")
        default = declared[key]
        if not _fits(default, value, grids=kind == "protocol"):
            raise UserError(
                f"{kind} {name!r}: option {key!r} must be {_expected(default)[1]}, not {value!r} (default: {default!r})"
            )
        if isinstance(value, (list, tuple)) and not value:
            raise UserError(f"{kind} {name!r}: option {key!r} is an empty list; give at least one value")
        limit = (limits or {}).get(key)
        if limit is None or value is None:
            continue
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if not limit.allows(v):
                raise UserError(
                    f"{kind} {name!r}: option {key!r} must be {limit.describe()}, not {v!r} (default: {default!r})"
                )


def check_protocol_options(
    protocol: str,
    defaults: Mapping[str, Any],
    options: Mapping[str, Any],
    limits: Mapping[str, OptionLimit] | None = None,
) -> None:
    """:func:`check_plugin_options` for a protocol (its ``defaults`` declare its options)."""
    check_plugin_options("protocol", protocol, defaults, options, limits)


def as_declared(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with a single value given for a list option (a grid) made a one-element list,
    so a protocol always receives the shape its default has (``k_grid = 5`` means ``[5]``)."""
    out = dict(options)
    for key, value in options.items():
        if isinstance(defaults.get(key), (list, tuple)) and not isinstance(value, (list, tuple)):
            out[key] = [value]
    return out

"""Protocol options checked before anything runs: unknown names and wrongly typed values.

A protocol declares its options with their defaults (``ProtocolSpec.defaults``). An option a
run sets that the protocol does not declare would do nothing yet be written into every record
as if it had; a value of the wrong type would fail deep inside a cell with a bare Python error.
Both are user errors found here, naming the protocol and the option, before any cell runs.
Protocols that declare no options are not checked. Value ranges are the protocol's business.
"""

from __future__ import annotations

import difflib
from typing import Any, Mapping

from .errors import UserError


_NAMES = {bool: ("true or false", "true/false values"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


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


def _fits(default: Any, value: Any) -> bool:
    """A value fits a default of its own type; a scalar option may also take a list of such
    values (a grid, e.g. kNN temperatures) and a list option a single such value."""
    if default is None:
        return True
    if isinstance(default, Mapping):
        return isinstance(value, Mapping)
    kind, _ = _expected(default)
    if kind is None:
        return isinstance(value, (list, tuple)) if isinstance(default, (list, tuple)) else True
    values = value if isinstance(value, (list, tuple)) else [value]
    return all(_fits_scalar(kind, v) for v in values)


def check_protocol_options(protocol: str, defaults: Mapping[str, Any], options: Mapping[str, Any]) -> None:
    """Raise ``UserError`` for an option ``protocol`` does not take or a value of the wrong type."""
    if not defaults:
        return
    for key, value in options.items():
        if key not in defaults:
            close = difflib.get_close_matches(key, list(defaults), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UserError(f"protocol {protocol!r}: unknown option {key!r}; {hint}it takes "
                            f"{', '.join(sorted(defaults))}")
        if not _fits(defaults[key], value):
            raise UserError(f"protocol {protocol!r}: option {key!r} must be {_expected(defaults[key])[1]}, "
                            f"not {value!r} (default: {defaults[key]!r})")

"""What a value read from a result record may be: strict JSON, printable text, finite numbers.

Records come from strangers (pull requests), so every byte is input. ``strict_json`` parses
with no NaN or Infinity, no integers longer than 18 digits, no duplicate keys and a depth
limit; ``check_values`` walks the result and refuses text with control, zero-width, bidi or
other invisible characters, numbers that are not finite or absurdly large, and overlong
strings. Each failure is a ``ValueError`` whose message names the JSON path.
"""

from __future__ import annotations

import json
import math
import unicodedata
from typing import Any

MAX_DEPTH = 32
MAX_NUMBER = 1e100
MAX_INT_DIGITS = 18
MAX_TEXT = 4096
MAX_MULTILINE_TEXT = 20000
# Unicode general categories never allowed in record text: controls, format characters (zero
# width, bidi embeddings and isolates, soft hyphen), surrogates, private use, unassigned, and the
# line and paragraph separators.
FORBIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or abs(value) > MAX_NUMBER:
        raise ValueError(f"the number {text[:30]} is not finite or exceeds {MAX_NUMBER:g} in magnitude")
    return value


def _parse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number; records hold only finite numbers (use null)")


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} appears twice in one object")
        out[key] = value
    return out


def strict_json(data: bytes) -> Any:
    """Parse UTF-8 JSON bytes strictly; ``ValueError`` with a readable reason otherwise."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
            object_pairs_hook=_no_duplicate_keys,
        )
    except json.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    except RecursionError:
        raise ValueError(f"nested deeper than {MAX_DEPTH} levels") from None


def text_problem(text: str, multiline: bool = False) -> str | None:
    """Why ``text`` is not allowed in a record (``None`` when it is fine)."""
    limit = MAX_MULTILINE_TEXT if multiline else MAX_TEXT
    if len(text) > limit:
        return f"text of {len(text)} characters (at most {limit})"
    for ch in text:
        if multiline and ch in "\n\t":
            continue
        category = unicodedata.category(ch)
        if category in FORBIDDEN_CATEGORIES:
            name = unicodedata.name(ch, "")
            return f"the invisible or control character U+{ord(ch):04X}{' ' + name if name else ''}"
    return None


def check_text(text: str, where: str, multiline: bool = False) -> None:
    """Raise ``ValueError`` naming ``where`` when ``text`` holds forbidden characters."""
    problem = text_problem(text, multiline)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")


def check_values(obj: Any, where: str = "", multiline_keys: frozenset[str] = frozenset(), depth: int = 0) -> None:
    """Walk parsed JSON: printable strings (keys included), finite bounded numbers, bounded depth."""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where or '(top level)'}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise ValueError(f"{where}: a key that is not a string")
            check_text(key, f"{where}/{key}" if where else key)
            path = f"{where}/{key}" if where else key
            if isinstance(value, str):
                check_text(value, path, multiline=key in multiline_keys)
            else:
                check_values(value, path, multiline_keys, depth + 1)
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            path = f"{where}/{i}"
            if isinstance(value, str):
                check_text(value, path)
            else:
                check_values(value, path, multiline_keys, depth + 1)
    elif isinstance(obj, bool) or obj is None:
        return
    elif isinstance(obj, int):
        if abs(obj) > 10**MAX_INT_DIGITS:
            raise ValueError(f"{where}: integer too large")
    elif isinstance(obj, float):
        if not math.isfinite(obj) or abs(obj) > MAX_NUMBER:
            raise ValueError(f"{where}: the number {obj!r} is not finite or exceeds {MAX_NUMBER:g} in magnitude")
    elif isinstance(obj, str):
        check_text(obj, where or "(top level)")
    else:
        raise ValueError(f"{where}: a {type(obj).__name__} is not a JSON value")

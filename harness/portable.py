"""Records without local paths: the same configuration gives the same record on every machine.

An absolute path in a record leaks a directory layout and makes its configuration hash
machine-specific. ``portable`` rewrites every absolute path in a record to one relative to a
named root (``$WORKDIR/data/medmnist``, ``$CACHE/splits/x.json``, ``$HOME/...``) or, outside
every root, to ``<local>/`` plus its last component. ``hash_view`` goes further for the
configuration hash: path values are replaced by a placeholder, because where a file lives never
changes a number; what it holds is recorded separately (the weights' sha256, the data set's
fingerprint and test-set identity).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Mapping

PATH_PLACEHOLDER = "<path>"
REDACTED_PREFIX = "<local>/"
PATH_KEYS = frozenset({"root", "weights", "file", "path", "folder", "cache", "image_cache"})
_PATH_SUFFIXES = ("_path", "_file", "_dir", "_root", "_folder", "_cache")
_WINDOWS_ABSOLUTE = re.compile(r"^[A-Za-z]:[\\/]")


def looks_absolute(text: str) -> bool:
    """An absolute POSIX or Windows path, or one starting at the home folder."""
    return text.startswith("/") or text.startswith("~/") or bool(_WINDOWS_ABSOLUTE.match(text))


def is_path_key(key: str) -> bool:
    """Whether an option or info key names a file or folder (``root``, ``split_file``...)."""
    return key in PATH_KEYS or key.endswith(_PATH_SUFFIXES)


def _relative_to_root(text: str, roots: Mapping[str, Path]) -> str:
    expanded = os.path.expanduser(text) if text.startswith("~") else text
    try:
        path = Path(os.path.normpath(expanded))
    except (TypeError, ValueError):
        return REDACTED_PREFIX + "path"
    best: tuple[int, str, Path] | None = None
    for name, root in roots.items():
        root = Path(os.path.normpath(str(root)))
        try:
            rel = path.relative_to(root)
        except ValueError:
            continue
        depth = len(root.parts)
        if best is None or depth > best[0]:
            best = (depth, name, rel)
    if best is not None:
        rel_text = best[2].as_posix()
        return f"${best[1]}" if rel_text in ("", ".") else f"${best[1]}/{rel_text}"
    return REDACTED_PREFIX + (path.name or "path")


def _rewrite_text(text: str, roots: Mapping[str, Path]) -> str:
    if looks_absolute(text):
        return _relative_to_root(text, roots)
    # messages ("could not read /home/x/data/a.png: ...") carry paths inside longer text
    return (
        re.sub(r"(?<![\w.$<>:/])(/[^\s'\"(),:;]+)", lambda m: _relative_to_root(m.group(1), roots), text)
        if "/" in text and not text.startswith(("$", "<", "http://", "https://"))
        else text
    )


def is_pattern_key(key: str) -> bool:
    """Whether a key holds a regular expression (``group_regex``, ``grouped_by``), not a path."""
    return key.endswith(("regex", "pattern")) or key == "grouped_by"


def portable(obj: Any, roots: Mapping[str, Path], key: str = "") -> Any:
    """``obj`` with every absolute path rewritten relative to a named root, or redacted.
    Regular expressions (under a key such as ``group_regex``) are kept as written."""
    if isinstance(obj, dict):
        return {k: portable(v, roots, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [portable(v, roots, key) for v in obj]
    if isinstance(obj, str) and "/" in obj and not is_pattern_key(key):
        return _rewrite_text(obj, roots)
    return obj


def hash_view(obj: Any, key: str = "") -> Any:
    """``obj`` with path values (by key, or by looking absolute) replaced by ``<path>``."""
    if isinstance(obj, dict):
        return {k: hash_view(v, k) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [hash_view(v, key) for v in obj]
    if isinstance(obj, str) and (is_path_key(key) or looks_absolute(obj)):
        return PATH_PLACEHOLDER
    return obj


def default_roots(workdir: str | os.PathLike, feature_cache: str | os.PathLike | None = None) -> dict[str, Path]:
    """``WORKDIR`` (where the run was started or its config file lives), ``CACHE`` (medfm's cache of
    splits and decoded images), ``FEATURES`` (the run's feature cache, where it lies elsewhere) and ``HOME``."""
    from .image_cache import default_cache_root

    roots = {"HOME": Path.home(), "WORKDIR": Path(workdir).resolve(), "CACHE": default_cache_root().resolve()}
    if feature_cache is not None:
        features = Path(feature_cache).expanduser().resolve()
        if features != roots["CACHE"]:
            roots["FEATURES"] = features
    return roots


def local_path(text: str, roots: Mapping[str, Path]) -> Path | None:
    """The local path a portable ``$ROOT/...`` value names (``None`` for a redacted one)."""
    if text.startswith(REDACTED_PREFIX):
        return None
    if text.startswith("$"):
        name, _, rest = text[1:].partition("/")
        return roots[name] / rest if name in roots else None
    return Path(text)


def absolute_paths_in(obj: Any, where: str = "") -> list[str]:
    """JSON paths of every value that still looks like an absolute local path."""
    found: list[str] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            found += absolute_paths_in(v, f"{where}/{k}" if where else k)
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found += absolute_paths_in(v, f"{where}/{i}")
    elif isinstance(obj, str) and looks_absolute(obj) and not is_pattern_key(where.rsplit("/", 1)[-1]):
        found.append(where)
    return found

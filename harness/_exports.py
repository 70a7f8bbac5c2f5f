"""Lazy public names (PEP 562): a public module lists where each name lives and imports it on use.

Listing plugins, printing ``--help`` or declaring a spec must not import torch, scikit-learn or
scipy, which take seconds; a name is imported from its defining module the first time it is used.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping


def lazy_exports(module_name: str, where: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``module_name``: ``where`` maps each public name to its
    defining module, relative to the ``medfm`` package (``"specs"``, ``"training"``)."""
    module = importlib.import_module(module_name)

    def __getattr__(name: str) -> Any:
        try:
            source = where[name]
        except KeyError:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"medfm.{source}"), name)
        setattr(module, name, value)  # later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(module)) | set(where))

    return __getattr__, __dir__

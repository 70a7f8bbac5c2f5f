"""Plugin discovery: entry points in the ``medfm`` group, loaded one at a time.

A plugin that fails to import or to register becomes a recorded error with its name, never a
crash, and one plugin's exception never hides another's specs: each hook implementation is
called on its own (pluggy would stop a hook call at the first exception).
"""

from __future__ import annotations

import importlib.metadata as importlib_metadata
import os
import traceback
from dataclasses import dataclass, field
from typing import Any

import pluggy

from . import hookspecs

ENTRY_POINT_GROUP = "medfm"
BLOCK_ENV = "MEDFM_BLOCK_PLUGINS"
HOOKS = ("register_backbones", "register_datasets", "register_protocols")


@dataclass
class PluginInfo:
    """What the core knows of one plugin: where it came from and what it did."""

    name: str
    module: str = ""
    distribution: str | None = None
    version: str | None = None
    specs: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    blocked: bool = False

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view, for ``medfm plugins --json``."""
        return {
            "name": self.name,
            "module": self.module,
            "distribution": self.distribution,
            "version": self.version,
            "blocked": self.blocked,
            "errors": list(self.errors),
            "specs": [{"kind": k, "name": n} for k, n in self.specs],
        }


def blocked_plugins() -> set[str]:
    """Plugin names listed in ``MEDFM_BLOCK_PLUGINS`` (comma separated; ``DIST:NAME`` blocks only
    the entry point of that distribution)."""
    return {p.strip() for p in os.environ.get(BLOCK_ENV, "").split(",") if p.strip()}


def _one_line(exc: BaseException) -> str:
    message = " ".join(str(exc).split()) or "(no message)"
    return f"{type(exc).__name__}: {message}"


def _where(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return ""
    last = frames[-1]
    return f" (at {os.path.basename(last.filename)}:{last.lineno})"


def make_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager with medfm's hookspecs and no plugins registered."""
    pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
    pm.add_hookspecs(hookspecs)
    return pm


def load_entry_point_plugins(pm: pluggy.PluginManager) -> list[PluginInfo]:
    """Import and register each ``medfm`` entry point, recording failures instead of raising."""
    infos: list[PluginInfo] = []
    blocked = blocked_plugins()
    eps = sorted(importlib_metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
    seen: set[str] = set()
    for ep in eps:
        dist = getattr(ep, "dist", None)
        info = PluginInfo(
            name=ep.name,
            module=ep.value,
            distribution=dist.metadata["Name"] if dist is not None else None,
            version=dist.version if dist is not None else None,
        )
        infos.append(info)
        if ep.name in blocked or f"{info.distribution}:{ep.name}" in blocked:
            info.blocked = True
            continue
        if ep.name in seen:
            # a second distribution's plugin of the same name: loaded under a qualified name, so
            # that a clash of the names it registers is reported and settled like any other
            info.name = f"{info.distribution or 'unknown'}:{ep.name}"
            if info.name in seen:
                info.errors.append(
                    f"another installed plugin is already named {ep.name!r}; "
                    f"uninstall one of them or block one with {BLOCK_ENV}"
                )
                continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=info.name)
            seen.add(info.name)
        except Exception as exc:  # a broken plugin must not break the CLI or other plugins
            info.errors.append(f"failed to load: {_one_line(exc)}{_where(exc)}")
    for _ in range(len(infos) + 1):  # each failure unregisters one plugin; check again for the next
        try:
            pm.check_pending()
            break
        except pluggy.PluginValidationError as exc:
            bad = getattr(exc, "plugin", None)
            if bad is None:
                break
            name = pm.get_name(bad)
            for info in infos:
                if info.name == name:
                    info.errors.append(f"misspelled hook: {_one_line(exc)}")
            pm.unregister(bad)
    return infos

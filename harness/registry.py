"""The registry of specs: built from the plugin manager, queried by name or glob pattern."""

from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

import pluggy

from .errors import DuplicateSpecError, UnknownNameError, UserError
from .plugins import HOOKS, PluginInfo, _one_line, _where, load_entry_point_plugins, make_plugin_manager
from .specs import BackboneSpec, DatasetSpec, Family, ProtocolSpec

KINDS = ("backbone", "dataset", "protocol")
_HOOK_KIND = {"register_backbones": "backbone", "register_datasets": "dataset", "register_protocols": "protocol"}
_SPEC_KIND = {BackboneSpec: "backbone", DatasetSpec: "dataset", ProtocolSpec: "protocol"}
_RESOLUTION = re.compile(r"^(?P<base>.+)@(?P<size>\d{2,4})$")


@dataclass(frozen=True)
class Entry:
    """A registered spec (or family) and the plugin that registered it."""

    spec: Any
    plugin: PluginInfo


@dataclass
class Registry:
    """All specs of all plugins, with their provenance, load errors and name clashes."""

    plugins: list[PluginInfo] = field(default_factory=list)
    entries: dict[str, dict[str, Entry]] = field(default_factory=lambda: {k: {} for k in KINDS})
    families: dict[str, list[Entry]] = field(default_factory=lambda: {k: [] for k in KINDS})
    duplicates: list[str] = field(default_factory=list)
    # every plugin that registered a name another plugin also registered, first one first
    clashes: dict[tuple[str, str], list[Entry]] = field(default_factory=dict)

    # ----------------------------------------------------------------- building
    @classmethod
    def from_plugin_manager(cls, pm: pluggy.PluginManager, infos: Iterable[PluginInfo] = ()) -> "Registry":
        """Call every hook implementation separately, collecting specs and errors per plugin."""
        registry = cls(plugins=list(infos))
        by_name = {info.name: info for info in registry.plugins}
        for plugin in pm.get_plugins():
            name = pm.get_name(plugin)
            assert name is not None  # get_plugins() lists registered plugins, and each has its name
            if name not in by_name:
                by_name[name] = PluginInfo(name=name, module=getattr(plugin, "__name__", type(plugin).__name__))
                registry.plugins.append(by_name[name])
        for hook_name in HOOKS:
            for impl in getattr(pm.hook, hook_name).get_hookimpls():
                info = by_name[impl.plugin_name]
                expected = _HOOK_KIND[hook_name]
                try:
                    impl.function(register=registry._register_callback(info, expected))
                except Exception as exc:
                    info.errors.append(f"{hook_name} raised {_one_line(exc)}{_where(exc)}")
        registry.plugins.sort(key=lambda p: p.name)
        return registry

    def _register_callback(self, info: PluginInfo, expected_kind: str):
        def register(spec: Any) -> None:
            kind = spec.kind if isinstance(spec, Family) else _SPEC_KIND.get(type(spec))
            if kind is None:
                raise TypeError(
                    f"register() takes a BackboneSpec, DatasetSpec, ProtocolSpec or Family, not {type(spec).__name__}"
                )
            if kind != expected_kind:
                raise TypeError(f"a {kind} spec ({spec.name!r}) was registered from the {expected_kind} hook")
            if isinstance(spec, Family):
                for other in self.families[kind]:
                    if other.spec.prefix == spec.prefix:
                        self._duplicate(kind, spec.name, other.plugin, info)
                        return
                self.families[kind].append(Entry(spec, info))
            else:
                existing = self.entries[kind].get(spec.name)
                if existing is not None:
                    self.clashes.setdefault((kind, spec.name), [existing]).append(Entry(spec, info))
                    self._duplicate(kind, spec.name, existing.plugin, info)
                    return
                self.entries[kind][spec.name] = Entry(spec, info)
            info.specs.append((kind, spec.name))

        return register

    def _duplicate(self, kind: str, name: str, first: PluginInfo, second: PluginInfo) -> None:
        message = (
            f"{kind} {name!r} is registered by two plugins, {_origin(first)} and {_origin(second)}; "
            f"say which to use with --source {kind}:{name}={second.distribution or second.name} "
            f"(or a [sources] table in the run file), or block one with MEDFM_BLOCK_PLUGINS={second.name}"
        )
        self.duplicates.append(message)
        second.errors.append(message)

    def choose_sources(self, sources: Mapping[str, str]) -> None:
        """Settle name clashes: ``{"protocol:knn": "my-dist"}`` picks the spec of that distribution
        (or plugin name). A choice for a name without a clash is accepted only if it names the
        one provider; anything else is a ``UserError``."""
        for key, wanted in sources.items():
            kind, sep, name = key.partition(":")
            if not sep or kind not in KINDS or not name:
                raise UserError(f"source {key!r} must look like KIND:NAME with KIND one of {KINDS}")
            candidates = self.clashes.get((kind, name)) or (
                [self.entries[kind][name]] if name in self.entries[kind] else []
            )
            if not candidates:
                raise UserError(f"source {key}={wanted}: no plugin registers {kind} {name!r}")
            chosen = [e for e in candidates if wanted in (e.plugin.distribution, e.plugin.name)]
            if len(chosen) != 1:
                offered = ", ".join(_origin(e.plugin) for e in candidates)
                raise UserError(f"source {key}={wanted}: {kind} {name!r} is provided by {offered}; name one of them")
            self.entries[kind][name] = chosen[0]
            if (kind, name) in self.clashes:
                prefix = f"{kind} {name!r} is registered by two plugins"
                self.duplicates = [d for d in self.duplicates if not d.startswith(prefix)]
                for entry in candidates:
                    entry.plugin.errors = [e for e in entry.plugin.errors if not e.startswith(prefix)]

    # ----------------------------------------------------------------- queries
    @property
    def load_errors(self) -> list[str]:
        """One line per plugin problem, for warnings."""
        return [f"plugin {p.name!r}: {e}" for p in self.plugins for e in p.errors]

    def check_duplicates(self) -> None:
        """Raise if any name is registered twice: results must never depend on load order."""
        if self.duplicates:
            raise DuplicateSpecError(self.duplicates[0])

    def names(self, kind: str) -> list[str]:
        """Sorted names of the concrete specs of one kind (families excluded)."""
        return sorted(self.entries[kind])

    def specs(self, kind: str) -> list[Any]:
        """Concrete specs of one kind, sorted by name."""
        return [self.entries[kind][n].spec for n in self.names(kind)]

    def provenance(self, kind: str, name: str) -> PluginInfo | None:
        """The plugin that provided ``name`` (directly or through a family)."""
        entry = self.entries[kind].get(name)
        if entry is not None:
            return entry.plugin
        base = _RESOLUTION.match(name)
        if base and base["base"] in self.entries[kind]:
            return self.entries[kind][base["base"]].plugin
        for fam in self.families[kind]:
            if name.startswith(fam.spec.prefix):
                return fam.plugin
        return None

    def get(self, kind: str, name: str) -> Any:
        """The spec called ``name``, resolving families and ``@size``; raises with suggestions."""
        entry = self.entries[kind].get(name)
        if entry is not None:
            return entry.spec
        if kind == "backbone":
            m = _RESOLUTION.match(name)
            if m:
                return self.get(kind, m["base"]).at_resolution(int(m["size"]))
        for fam in self.families[kind]:
            prefix = fam.spec.prefix
            if name.startswith(prefix) and len(name) > len(prefix):
                try:
                    spec = fam.spec.resolve(name[len(prefix) :])
                except (KeyError, UnknownNameError) as exc:
                    raise UnknownNameError(self._unknown_message(kind, name, fam.spec, str(exc))) from None
                return spec
        raise UnknownNameError(self._unknown_message(kind, name))

    def _unknown_message(self, kind: str, name: str, family: Family | None = None, detail: str = "") -> str:
        pool = list(self.entries[kind])
        if family is not None and family.candidates is not None:
            try:
                pool += [family.prefix + c for c in family.candidates()]
            except Exception:
                pass
        pool += [f.spec.name for f in self.families[kind]]
        close = difflib.get_close_matches(name, pool, n=3, cutoff=0.6)
        hint = (
            f"; did you mean {', '.join(repr(c) for c in close)}?"
            if close
            else f"; run `medfm list {kind}s` to see them"
        )
        reason = f" ({detail.strip(chr(39))})" if detail else ""
        return f"unknown {kind} {name!r}{reason}{hint}"

    def match(self, kind: str, patterns: Sequence[str]) -> list[Any]:
        """Specs matching any of the glob patterns, in pattern order, without repeats.

        A pattern with no wildcard is looked up by name, so family members (``timm/resnet18``)
        and resolutions (``name@448``) work. A pattern that matches nothing is a user error.
        """
        chosen: dict[str, Any] = {}
        for pattern in patterns:
            if any(ch in pattern for ch in "*?["):
                hits = [n for n in self.names(kind) if fnmatch.fnmatchcase(n, pattern)]
                if not hits:
                    raise UserError(
                        f"{kind} pattern {pattern!r} matches nothing; run `medfm list {kind}s` to see the names"
                    )
                for n in hits:
                    chosen.setdefault(n, self.entries[kind][n].spec)
            else:
                spec = self.get(kind, pattern)
                chosen.setdefault(spec.name, spec)
        return list(chosen.values())


def _origin(info: PluginInfo) -> str:
    """``'knn' (distribution medfm 0.1.0)``: a plugin and where it comes from."""
    if not info.distribution:
        return repr(info.name)
    version = f" {info.version}" if info.version else ""
    return f"{info.name!r} (distribution {info.distribution}{version})"


def load_registry(pm: pluggy.PluginManager | None = None) -> Registry:
    """Discover all installed plugins through entry points and build the registry."""
    if pm is None:
        pm = make_plugin_manager()
        infos = load_entry_point_plugins(pm)
    else:
        infos = []
    return Registry.from_plugin_manager(pm, infos)

"""Run configuration: a TOML file, overridden by command-line flags.

```toml
backbones = ["timm/vit_small_patch14_dinov2"]
datasets = ["medmnist/breastmnist"]
protocols = ["knn", "linear_probe"]
seed = 0
device = "auto"

[backbone."timm/vit_small_patch14_dinov2"]
weights = "../shared/assets/weights/dinov2_vits14.safetensors"

[dataset."medmnist/*"]
root = "../shared/assets/medmnist"

[protocol.linear_probe]
epochs = 50
```
Option tables are keyed by a spec name or a glob pattern; every matching table applies,
more specific (longer) patterns last. Relative paths written in the file (``results_dir``,
``cache_dir``, ``leaderboard``, and plugin options such as ``root`` or ``weights``) are
relative to the file's folder; everything else is relative to the working directory.
"""

from __future__ import annotations

import copy
import fnmatch
import sys
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from .errors import UserError

DEFAULT_BACKBONES = ("efficientnet_lite0.in1k", "random/tf_efficientnet_lite0")
DEFAULT_DATASETS = ("synthetic/cxr-nodules", "synthetic/cxr-nodules-seg")
DEFAULT_PROTOCOLS = ("knn", "linear_probe", "seg_linear")
OPTION_KINDS = ("backbone", "dataset", "protocol")


@dataclass
class RunConfig:
    """Everything a run needs; see the module docstring for the TOML form."""

    backbones: list[str] = field(default_factory=lambda: list(DEFAULT_BACKBONES))
    datasets: list[str] = field(default_factory=lambda: list(DEFAULT_DATASETS))
    protocols: list[str] = field(default_factory=lambda: list(DEFAULT_PROTOCOLS))
    seed: int = 0
    device: str = "auto"
    batch_size: int = 64
    extraction_chunk: int = 4096  # images per cached chunk of a long extraction (a kill loses one)
    workers: int | None = None  # DataLoader decode workers; None: follow the device (see default_workers)
    amp: bool = True
    resize: str | None = None
    bootstrap: int = 1000
    results_dir: str = "results"
    cache_dir: str | None = None
    leaderboard: str = "leaderboard.md"
    rerun: bool = False
    fail_fast: bool = False
    submitter: str | None = None
    sources: dict[str, str] = field(default_factory=dict)
    options: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {k: {} for k in OPTION_KINDS})
    base_dir: str = "."

    def options_for(self, kind: str, name: str) -> dict[str, Any]:
        """Merged options of every table whose key matches ``name`` (exact or glob).

        A resolution variant ``model@112`` also takes the options of its base name ``model``
        (weights, revision, ...), which its own tables override. More specific keys win: the
        full name over the base name, an exact key over a glob, a longer glob over a shorter one.
        """
        tables = self.options.get(kind, {})
        names = [name.split("@", 1)[0], name] if "@" in name else [name]
        hits = []
        for rank, candidate in enumerate(names):
            hits += [
                (rank, k == candidate, len(k), k) for k in tables if k == candidate or fnmatch.fnmatchcase(candidate, k)
            ]
        merged: dict[str, Any] = {}
        for *_, key in sorted(hits):
            merged.update(tables[key])
        return merged

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else Path(self.base_dir) / p


_SCALARS = {f.name for f in fields(RunConfig)} - {"options", "base_dir", "sources"}


def load_config(path: str | Path) -> RunConfig:
    """Parse a TOML run file; unknown keys and bad values are user errors naming the file."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"config file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise UserError(f"config file {path} cannot be read: {exc.strerror or exc}") from None
    config = RunConfig()
    base = path.parent.resolve()
    for key, value in data.items():
        if key == "sources":
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise UserError(
                    f'{path}: [sources] must map "KIND:NAME" to a distribution name, e.g. "protocol:knn" = "medfm"'
                )
            config.sources = dict(value)
        elif key in OPTION_KINDS:
            if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
                raise UserError(f'{path}: [{key}] must hold tables such as [{key}."NAME"]')
            config.options[key] = {
                name: {k: _resolve_path_option(k, v, base) for k, v in opts.items()} for name, opts in value.items()
            }
        elif key in _SCALARS:
            expected = int if key == "workers" else type(getattr(RunConfig(), key))
            if key in ("backbones", "datasets", "protocols"):
                value = [value] if isinstance(value, str) else value
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise UserError(f"{path}: {key} must be a list of name patterns")
            elif key in ("resize", "cache_dir", "submitter") and (value is None or isinstance(value, str)):
                value = _resolve_path_option(key, value, base) if key == "cache_dir" else value
            elif not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                raise UserError(f"{path}: {key} must be {expected.__name__}, not {type(value).__name__}")
            if key in ("results_dir", "leaderboard"):
                value = _resolve_path_option(key, value, base)
            setattr(config, key, value)
        else:
            close = [k for k in sorted(_SCALARS | set(OPTION_KINDS)) if k.startswith(key[:3])]
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UserError(f"{path}: unknown key {key!r}{hint}")
    return config


PATH_KEYS = ("root", "weights", "results_dir", "cache_dir", "leaderboard")


def _resolve_path_option(key: str, value: Any, base: Path) -> Any:
    """Make a relative path option absolute against the config file's folder."""
    is_path = key in PATH_KEYS or key.endswith(("_path", "_file", "_dir"))
    if is_path and isinstance(value, str) and value and not Path(value).expanduser().is_absolute():
        return str(base / value)
    return value


def parse_override(text: str) -> tuple[str, str, str, Any]:
    """``protocol.linear_probe.epochs=10`` -> (kind, name, key, value); the value is TOML-typed."""
    if "=" not in text:
        raise UserError(f"option {text!r} must look like KIND.NAME.KEY=VALUE")
    target, raw = text.split("=", 1)
    kind, _, rest = target.partition(".")
    name, _, key = rest.rpartition(".")
    if kind not in OPTION_KINDS or not name or not key:
        raise UserError(f"option {text!r} must look like KIND.NAME.KEY=VALUE with KIND one of {OPTION_KINDS}")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return kind, name.strip('"'), key, value


def with_overrides(config: RunConfig, **flags: Any) -> RunConfig:
    """Command-line flags (non-``None``) replace the file's values; ``set`` adds options."""
    updates = {k: v for k, v in flags.items() if v is not None and k not in ("set", "source")}
    for key in ("backbones", "datasets", "protocols"):
        if key in updates and not updates[key]:
            del updates[key]
    config = replace(config, **updates)
    config.options = copy.deepcopy(config.options)
    if flags.get("source"):
        config.sources = dict(config.sources)
        for item in flags["source"]:
            key, sep, dist = item.partition("=")
            if not sep or ":" not in key or not dist:
                raise UserError(f"--source {item!r} must look like KIND:NAME=DISTRIBUTION, e.g. protocol:knn=medfm")
            config.sources[key] = dist
    for item in flags.get("set") or []:
        kind, name, key, value = parse_override(item)
        config.options.setdefault(kind, {}).setdefault(name, {})[key] = value
    return config

"""Typed, frozen specs that plugins register. Listing a spec never calls its ``load`` factory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Iterable, Literal, Mapping

if TYPE_CHECKING:
    from .backbone import Backbone
    from .context import Context, ProtocolOutput
    from .dataset import Dataset
    from .option_checks import OptionLimit

TaskType = Literal["binary", "multiclass", "ordinal", "multilabel", "segmentation"]
TASK_TYPES: tuple[str, ...] = ("binary", "multiclass", "ordinal", "multilabel", "segmentation")
Objective = Literal["self-supervised", "supervised", "vision-language", "segmentation", "none"]
OBJECTIVES: tuple[str, ...] = ("self-supervised", "supervised", "vision-language", "segmentation", "none")
PROTOCOL_NEEDS: tuple[str, ...] = ("features", "trainable", "masks")


def _check_name(kind: str, name: str) -> None:
    if not name or not isinstance(name, str) or name != name.strip() or any(c in name for c in "\n\r\t"):
        raise ValueError(f"{kind} name {name!r} must be a non-empty single-line string")


def _check_limits(kind: str, name: str, declared: Mapping[str, Any] | None, limits: Mapping[str, Any]) -> None:
    if limits and declared is None:
        raise ValueError(f"{kind} {name!r}: limits need declared options")
    unknown = sorted(set(limits) - set(declared or {}))
    if unknown:
        raise ValueError(f"{kind} {name!r}: limits for undeclared options {unknown}")


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: metadata plus a lazy factory ``load(spec, **options) -> Backbone``.

    ``params`` is the parameter count of the feature extractor (no classifier head), ``None``
    when it is only known once built (family members). ``input_size``, ``mean``, ``std`` and
    ``interpolation`` are the model's own pretrained preprocessing. ``options`` declares the
    options ``load`` takes, with their defaults (``None``: undeclared, checked by ``load`` only),
    and ``limits`` bounds their values; both are checked before any cell runs.
    """

    name: str
    load: Callable[..., "Backbone"] = field(repr=False, compare=False)
    family: str = ""
    params: int | None = None
    embed_dim: int | None = None
    input_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bicubic"
    pretraining: str = ""
    objective: str = "supervised"
    license: str = ""
    citation: str = ""
    revision: str = "1"
    feature_kinds: tuple[str, ...] = ()
    description: str = ""
    options: Mapping[str, Any] | None = None
    limits: Mapping[str, OptionLimit] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_name("backbone", self.name)
        _check_limits("backbone", self.name, self.options, self.limits)
        if self.objective not in OBJECTIVES:
            raise ValueError(f"backbone {self.name!r}: objective must be one of {OBJECTIVES}")

    def at_resolution(self, size: int) -> "BackboneSpec":
        """The same backbone run at another input resolution (``name@size``)."""
        base = self.name.split("@", 1)[0]
        # params=None: absolute position embeddings change size with the resolution
        return replace(
            self, name=f"{base}@{size}", input_size=size, params=None if size != self.input_size else self.params
        )

    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata (no factory)."""
        return {
            "name": self.name,
            "family": self.family,
            "params": self.params,
            "embed_dim": self.embed_dim,
            "input_size": self.input_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "pretraining": self.pretraining,
            "objective": self.objective,
            "license": self.license,
            "citation": self.citation,
            "revision": self.revision,
            "feature_kinds": list(self.feature_kinds),
            "description": self.description,
            "options": None if self.options is None else dict(self.options),
        }


@dataclass(frozen=True)
class DatasetSpec:
    """A data set: metadata plus a lazy factory ``load(spec, **options) -> Dataset``.

    ``splits`` maps split names to their sizes where known without loading (``None`` if not).
    ``primary_metric`` is the metric the leaderboard ranks by. ``test_identity`` is the identity
    (``medfm.test_set.split_identity``) of the published test split, where the plugin knows it:
    a run whose files give another test set fails, and a record on another one is rejected.
    ``synthetic`` marks generated data: the leaderboard ranks it in a smoke-test section of its own.
    ``options`` declares the options ``load`` takes, with their defaults (``None``: undeclared),
    and ``limits`` bounds their values; both are checked before any cell runs.
    Segmentation data sets (``task="segmentation"``, ``primary_metric="dice"``) name background
    first in ``classes``; ``nsd_tolerance_mm`` is the tolerance of their normalised surface Dice
    (in pixels where the data set has no spacing).
    """

    name: str
    load: Callable[..., "Dataset"] = field(repr=False, compare=False)
    task: str = "binary"
    classes: tuple[str, ...] = ()
    splits: Mapping[str, int | None] = field(default_factory=lambda: {"train": None, "val": None, "test": None})
    primary_metric: str = "auroc"
    modality: str = ""
    license: str = ""
    citation: str = ""
    revision: str = "1"
    description: str = ""
    test_identity: str | None = None
    synthetic: bool = False
    options: Mapping[str, Any] | None = None
    limits: Mapping[str, OptionLimit] = field(default_factory=dict)
    nsd_tolerance_mm: float = 2.0

    def __post_init__(self) -> None:
        _check_name("dataset", self.name)
        if not self.nsd_tolerance_mm > 0:
            raise ValueError(f"dataset {self.name!r}: nsd_tolerance_mm must be positive")
        _check_limits("dataset", self.name, self.options, self.limits)
        if self.test_identity is not None and not re.fullmatch(r"[0-9a-f]{64}", self.test_identity):
            raise ValueError(f"dataset {self.name!r}: test_identity must be a sha256 hex digest")
        if self.task not in TASK_TYPES:
            raise ValueError(f"dataset {self.name!r}: task must be one of {TASK_TYPES}, not {self.task!r}")

    def __hash__(self) -> int:
        return hash(self.name)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata (no factory)."""
        return {
            "name": self.name,
            "task": self.task,
            "classes": list(self.classes),
            "splits": dict(self.splits),
            "primary_metric": self.primary_metric,
            "modality": self.modality,
            "license": self.license,
            "citation": self.citation,
            "revision": self.revision,
            "description": self.description,
            "test_identity": self.test_identity,
            "synthetic": self.synthetic,
            "options": None if self.options is None else dict(self.options),
            "nsd_tolerance_mm": self.nsd_tolerance_mm,
        }


@dataclass(frozen=True)
class ProtocolSpec:
    """An evaluation protocol: ``run(context) -> ProtocolOutput``.

    ``needs`` says what the protocol consumes: ``"features"`` (cached frozen features),
    ``"trainable"`` (the backbone module itself) or ``"masks"``. ``defaults`` are its
    hyper-parameters, overridable per run, and ``limits`` bounds their values (``k_grid``
    at least 1, a temperature above 0): both are checked before any cell runs, and so is
    ``validate(options)`` when given (the merged options; it raises ``UserError`` for a
    combination the limits cannot express).
    ``feature_kinds(options)`` lists the feature kinds it will ask for, so the runner extracts
    them in one pass. Segmentation protocols give ``map_levels(options)``: how many blocks'
    (or stages') spatial maps they read through ``ctx.feature_maps``; the runner extracts the
    most that any planned protocol needs on a backbone and data set in one pass.
    """

    name: str
    run: Callable[["Context"], "ProtocolOutput"] = field(repr=False, compare=False)
    needs: frozenset[str] = frozenset({"features"})
    version: str = "1"
    defaults: Mapping[str, Any] = field(default_factory=dict)
    tasks: tuple[str, ...] = ("binary", "multiclass", "ordinal", "multilabel")
    description: str = ""
    citation: str = ""
    license: str = "Apache-2.0"
    limits: Mapping[str, OptionLimit] = field(default_factory=dict)
    validate: Callable[[Mapping[str, Any]], None] | None = field(default=None, repr=False, compare=False)
    map_levels: Callable[[Mapping[str, Any]], int] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name("protocol", self.name)
        _check_limits("protocol", self.name, self.defaults, self.limits)
        unknown = set(self.needs) - set(PROTOCOL_NEEDS)
        if unknown:
            raise ValueError(f"protocol {self.name!r}: unknown needs {sorted(unknown)}; use {PROTOCOL_NEEDS}")

    def __hash__(self) -> int:
        return hash(self.name)

    def feature_kinds(self, options: Mapping[str, Any]) -> tuple[str, ...]:
        """Feature kinds this protocol reads with these options (``"default"`` = backbone's own)."""
        kinds = options.get("feature_kinds", options.get("feature_kind", "default"))
        return tuple([kinds] if isinstance(kinds, str) else kinds)

    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata (no callable)."""
        return {
            "name": self.name,
            "needs": sorted(self.needs),
            "version": self.version,
            "defaults": dict(self.defaults),
            "tasks": list(self.tasks),
            "description": self.description,
            "citation": self.citation,
            "license": self.license,
        }


@dataclass(frozen=True)
class Family:
    """A parameterised family of specs, such as ``timm/<any timm model name>``.

    ``resolve(suffix)`` builds the spec for ``prefix + suffix`` on demand and raises
    ``KeyError`` (or ``UnknownNameError``) for a suffix the family does not know.
    ``candidates()`` cheaply lists known suffixes, for "did you mean" suggestions.
    """

    kind: Literal["backbone", "dataset", "protocol"]
    prefix: str
    resolve: Callable[[str], Any] = field(repr=False, compare=False)
    candidates: Callable[[], Iterable[str]] | None = field(default=None, repr=False, compare=False)
    description: str = ""
    examples: tuple[str, ...] = ()
    license: str = ""
    citation: str = ""

    def __post_init__(self) -> None:
        if not self.prefix.endswith("/"):
            raise ValueError(f"family prefix {self.prefix!r} must end with '/'")

    @property
    def name(self) -> str:
        """The family's display name, e.g. ``timm/<name>``."""
        return f"{self.prefix}<name>"

    def metadata(self) -> dict[str, Any]:
        """JSON-ready metadata."""
        return {
            "name": self.name,
            "kind": self.kind,
            "prefix": self.prefix,
            "description": self.description,
            "examples": list(self.examples),
            "license": self.license,
            "citation": self.citation,
        }


def BackboneFamily(prefix: str, resolve: Callable[[str], BackboneSpec], **kw: Any) -> Family:
    """A family of backbones, e.g. ``BackboneFamily("timm/", resolve_timm)``."""
    return Family("backbone", prefix, resolve, **kw)


def DatasetFamily(prefix: str, resolve: Callable[[str], DatasetSpec], **kw: Any) -> Family:
    """A family of data sets, e.g. ``DatasetFamily("hf/", resolve_hub_dataset)``."""
    return Family("dataset", prefix, resolve, **kw)


AnySpec = BackboneSpec | DatasetSpec | ProtocolSpec | Family

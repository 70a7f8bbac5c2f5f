"""The runner: plans backbone x dataset x protocol cells and runs each one in isolation.

A failing cell is recorded (status ``error``, exception, end of traceback) and the run goes
on. A cell whose record exists, verifies and has the same configuration hash is skipped, so
a killed run resumes where it stopped. Backbones and data sets are loaded once per run;
frozen features are extracted once per (weights, data, split, preprocessing, kind) and
cached on disk for every later protocol and run.
"""

from __future__ import annotations

import gc
import os
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from . import leaderboard
from .backbone import Backbone
from .cache import FeatureCache, feature_key
from .config import RunConfig
from .context import Context, FeatureSet
from .dataset import Dataset
from .device import deterministic, describe, select_device
from .errors import UserError
from .extract import extract_features
from .io import sha256_file_memo, sha256_json
from .metrics import degenerate_flags, evaluate
from .option_checks import check_protocol_options
from .portable import default_roots, hash_view, portable
from .records import SCHEMA_VERSION, CellPaths, cell_lock, cell_paths, write_record, write_result
from .registry import Registry
from .seeding import cell_seed, seed_everything
from .specs import BackboneSpec, DatasetSpec, ProtocolSpec
from .submission import resolve_submitter, submission_block
from .test_set import identity_block
from .truth import attach_truth
from .verification import MIN_RESAMPLES, KnownSpecs, verify_file
from .versions import environment_versions

MAX_RESAMPLES = 100_000

PREPROCESSING_OPTIONS = ("resize", "interpolation")
TRACEBACK_LINES = 20


@dataclass(frozen=True)
class Cell:
    """One (backbone, data set, protocol) combination."""

    backbone: BackboneSpec
    dataset: DatasetSpec
    protocol: ProtocolSpec

    @property
    def label(self) -> str:
        """``backbone × dataset × protocol``."""
        return f"{self.backbone.name} × {self.dataset.name} × {self.protocol.name}"


@dataclass
class CellOutcome:
    """What happened to one cell in this run."""

    cell: Cell
    status: str  # ok | error | cached | skipped
    record_path: Path | None = None
    primary_metric: str | None = None
    value: float | None = None
    ci: tuple[float | None, float | None] = (None, None)
    flags: list[str] = field(default_factory=list)
    seconds: float = 0.0
    message: str = ""


class Hooks:
    """Callbacks for progress display; the CLI plugs rich in, tests leave them silent."""

    def log(self, message: str) -> None:
        """A one-line note (warnings, extraction starts)."""

    def extraction(self, description: str, total: int) -> Callable[[int], None]:
        """Start an extraction progress bar; returns an ``advance(n_images)`` callback."""
        return lambda n: None

    def extraction_done(self) -> None:
        """Close the current extraction progress bar."""

    def cell_start(self, cell: Cell) -> None:
        """A cell begins."""

    def cell_end(self, outcome: CellOutcome) -> None:
        """A cell ended (any status)."""


class _Failure:
    """A loading failure remembered for the run, so later cells fail fast with the same error."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Runner:
    """Runs the cross product described by a ``RunConfig`` with specs from a ``Registry``."""

    def __init__(self, registry: Registry, config: RunConfig, hooks: Hooks | None = None) -> None:
        self.registry = registry
        self.config = config
        self.hooks = hooks or Hooks()
        self.device = select_device(config.device)
        self.cache = FeatureCache(config.path(config.cache_dir) if config.cache_dir else None)
        self.results_dir = config.path(config.results_dir)
        self.submitter = resolve_submitter(config.submitter)
        self.known = KnownSpecs.from_registry(registry)
        self._roots = default_roots(config.base_dir, self.cache.root)
        self._datasets: dict[str, Dataset | _Failure] = {}
        self._backbones: dict[str, Backbone | _Failure] = {}
        self._features: dict[str, FeatureSet] = {}
        self._versions = environment_versions()
        # under torchrun every rank runs the whole plan; only rank 0 writes results
        self.writes = _is_main_process()
        self._memory_notes: list[str] = []  # out-of-memory retries of the current cell, for its record

    # ------------------------------------------------------------------ planning
    def plan(self) -> list[Cell]:
        """All cells, backbone-major so each model is loaded once. Unknown names are user errors."""
        self.registry.choose_sources(self.config.sources)
        self.registry.check_duplicates()
        backbones = self.registry.match("backbone", self.config.backbones)
        datasets = self.registry.match("dataset", self.config.datasets)
        protocols = self.registry.match("protocol", self.config.protocols)
        return [Cell(b, d, p) for b in backbones for d in datasets for p in protocols]

    # ------------------------------------------------------------------ running
    def run(self, cells: Iterable[Cell] | None = None) -> list[CellOutcome]:
        """Run every cell (or the given ones); then refresh the leaderboard."""
        cells = list(cells if cells is not None else self.plan())
        self.check(cells)
        outcomes: list[CellOutcome] = []
        current_backbone: str | None = None
        for cell in cells:
            if current_backbone is not None and cell.backbone.name != current_backbone:
                self._release_backbone(current_backbone)
            current_backbone = cell.backbone.name
            outcome = self.run_cell(cell)
            outcomes.append(outcome)
            if outcome.status == "error" and self.config.fail_fast:
                break
        if self.writes:
            self.refresh_leaderboard()
        return outcomes

    def check(self, cells: Iterable[Cell]) -> None:
        """Settings that would make every cell fail, found before any runs: a ``UserError``."""
        from .preprocessing import RESIZE_POLICIES

        if self.config.resize is not None and self.config.resize not in RESIZE_POLICIES:
            raise UserError(f"--resize {self.config.resize!r} is not a resize policy; use one of {RESIZE_POLICIES}")
        if self.config.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.config.batch_size}")
        if not 0 <= self.config.seed < 2 ** 62:
            raise UserError(f"--seed must be a non-negative integer; got {self.config.seed}")
        if not 0 <= self.config.bootstrap <= MAX_RESAMPLES:
            raise UserError(f"--bootstrap must be between 0 and {MAX_RESAMPLES}; got {self.config.bootstrap}")
        if self.config.bootstrap < MIN_RESAMPLES:
            self.hooks.log(f"--bootstrap {self.config.bootstrap}: records with fewer than {MIN_RESAMPLES} resamples "
                           "are kept but not ranked on the leaderboard")
        for protocol in {c.protocol.name: c.protocol for c in cells}.values():
            check_protocol_options(protocol.name, protocol.defaults, self.config.options_for("protocol", protocol.name))

    def refresh_leaderboard(self) -> bool:
        """Regenerate the leaderboard from the verified records under the results folder."""
        from .standings import build_standings, load_policy
        from .verification import scan_results

        target = self.config.path(self.config.leaderboard)
        scan = scan_results(self.results_dir, self.known)
        for rejected in scan.rejected:
            self.hooks.log(f"not on the leaderboard: {rejected.problem}")
        policy = load_policy(target.parent)
        return leaderboard.update_file(target, build_standings(scan, self.known, policy))

    def cell_config(self, cell: Cell) -> dict[str, Any]:
        """Everything that determines a cell's numbers; its hash decides whether to rerun."""
        protocol_options = {**cell.protocol.defaults, **self.config.options_for("protocol", cell.protocol.name)}
        return {
            "backbone": {"name": cell.backbone.name, "revision": cell.backbone.revision,
                         "options": self._backbone_options(cell.backbone)},
            "dataset": {"name": cell.dataset.name, "revision": cell.dataset.revision,
                        "options": self.config.options_for("dataset", cell.dataset.name)},
            "protocol": {"name": cell.protocol.name, "version": cell.protocol.version, "options": protocol_options},
            "seed": self.config.seed,
            "bootstrap_resamples": self.config.bootstrap,
            "record_schema": SCHEMA_VERSION,
        }

    def config_hash(self, config: dict[str, Any]) -> str:
        """sha256 of a cell's configuration without its paths: the same on every machine."""
        return sha256_json(hash_view(config))

    def paths(self, cell: Cell) -> CellPaths:
        """This run's submission files for ``cell`` (``<submitter>.seed<seed>.*``)."""
        return cell_paths(self.results_dir, cell.backbone.name, cell.dataset.name, cell.protocol.name,
                          self.submitter, self.config.seed)

    def _backbone_options(self, spec: BackboneSpec) -> dict[str, Any]:
        options = self.config.options_for("backbone", spec.name)
        if self.config.resize and "resize" not in options:
            options["resize"] = self.config.resize
        return options

    def run_cell(self, cell: Cell) -> CellOutcome:
        """Run one cell, or skip it if its current record exists; never raises for cell failures."""
        paths = self.paths(cell)
        config = self.cell_config(cell)
        config_hash = self.config_hash(config)
        if not self.config.rerun:
            cached = self._current_record(paths.record, config_hash, config)
            if cached is not None:
                outcome = _outcome_from_record(cell, "cached", paths.record, cached)
                self.hooks.cell_end(outcome)
                return outcome
        self.hooks.cell_start(cell)
        start = time.perf_counter()
        seed = cell_seed(self.config.seed, cell.backbone.name, cell.dataset.name, cell.protocol.name)
        base = self._record_base(cell, config, config_hash, seed)
        try:
            record = self._execute(cell, config, seed, base, paths)
        except Exception as exc:  # one cell's failure must not stop the others
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            record = {**base, "status": "error",
                      "error": {"type": type(exc).__name__, "message": str(exc) or repr(exc),
                                "traceback": "".join(tb[-TRACEBACK_LINES:])}}
            record["timings"] = {"total_s": round(time.perf_counter() - start, 3)}
            message = f"{type(exc).__name__}: {exc}"
            record = portable(record, self._roots)
            kept = self.writes and self._holds_good_record(paths.record)
            if kept:  # a failed attempt (often a mistyped option) must not destroy a computed result
                write_record(paths.failed, record)
                message += f" (the earlier result in {paths.record.name} is kept; details in {paths.failed.name})"
            elif self.writes:
                with cell_lock(paths):
                    write_record(paths.record, record)
                    paths.predictions.unlink(missing_ok=True)
            outcome = CellOutcome(cell, "error", paths.failed if kept else paths.record,
                                  seconds=time.perf_counter() - start, message=message)
            self.hooks.cell_end(outcome)
            return outcome
        outcome = _outcome_from_record(cell, "ok", paths.record, record)
        outcome.seconds = time.perf_counter() - start
        self.hooks.cell_end(outcome)
        return outcome

    def _current_record(self, path: Path, config_hash: str, config: dict[str, Any]) -> dict[str, Any] | None:
        if not path.exists():
            return None
        checked = verify_file(path, self.results_dir, self.known)
        if not checked.valid:
            self.hooks.log(f"recomputing: {checked.problem}")
            return None
        record = checked.record
        if record["status"] != "ok" or record["config_hash"] != config_hash:
            return None
        weights = config["backbone"]["options"].get("weights")
        if isinstance(weights, str) and Path(weights).is_file() and \
                sha256_file_memo(weights) != record["backbone"].get("weights_sha256"):
            self.hooks.log(f"recomputing {path.name}: the weights file {Path(weights).name} changed since it was written")
            return None
        return record

    def _holds_good_record(self, path: Path) -> bool:
        """Whether ``path`` holds a verified, successful record (with its predictions)."""
        if not path.exists():
            return False
        checked = verify_file(path, self.results_dir, self.known)
        return checked.valid and checked.record["status"] == "ok"

    def _record_base(self, cell: Cell, config: dict, config_hash: str, seed: int) -> dict[str, Any]:
        def prov(kind: str, name: str) -> dict[str, Any]:
            info = self.registry.provenance(kind, name)
            return {"name": info.name if info else None, "distribution": info.distribution if info else None,
                    "version": info.version if info else None}

        return {
            "schema_version": SCHEMA_VERSION,
            "submission": submission_block(self.submitter, self.config.seed, self._versions.get("medfm"), self.device),
            "backbone": {"name": cell.backbone.name, "revision": cell.backbone.revision,
                         "plugin": prov("backbone", cell.backbone.name), "params": cell.backbone.params,
                         "objective": cell.backbone.objective, "pretraining": cell.backbone.pretraining},
            "dataset": {"name": cell.dataset.name, "revision": cell.dataset.revision,
                        "plugin": prov("dataset", cell.dataset.name), "task": cell.dataset.task,
                        "classes": list(cell.dataset.classes), "primary_metric": cell.dataset.primary_metric,
                        "modality": cell.dataset.modality},
            "protocol": {"name": cell.protocol.name, "version": cell.protocol.version,
                         "plugin": prov("protocol", cell.protocol.name)},
            "config": config, "config_hash": config_hash, "seed": seed,
            "versions": self._versions, "device": describe(self.device),
        }

    def _execute(self, cell: Cell, config: dict, seed: int, base: dict, paths: CellPaths) -> dict[str, Any]:
        dataset = self._dataset(cell.dataset)
        if dataset.task not in cell.protocol.tasks:
            raise UserError(f"protocol {cell.protocol.name!r} does not support {dataset.task} tasks "
                            f"(data set {cell.dataset.name!r}); it supports {list(cell.protocol.tasks)}")
        options = config["protocol"]["options"]
        self._memory_notes = []
        kinds = cell.protocol.feature_kinds(options)
        used_kinds: list[str] = []

        def load_features(split: str, kind: str) -> FeatureSet:
            fs = self._feature_set(cell, dataset, split, kind, kinds, ctx)
            if fs.kind not in used_kinds:
                used_kinds.append(fs.kind)
            return fs

        ctx = Context(backbone_spec=cell.backbone, dataset_spec=cell.dataset, protocol_spec=cell.protocol,
                      options=options, seed=seed, device=self.device,
                      dataset_loader=lambda: dataset, backbone_loader=lambda: self._backbone(cell.backbone),
                      feature_loader=load_features, log=self.hooks.log,
                      work_dir=paths.work, record_path=paths.record)
        test_split = dataset.split("test")
        test_set = identity_block(test_split, dataset.info)
        published = getattr(cell.dataset, "test_identity", None)
        if published is not None and published != test_set["identity"]:
            raise UserError(f"data set {cell.dataset.name!r}: the test split read from its files is not the "
                            f"published one (identity {test_set['identity'][:12]}, published {published[:12]}); "
                            "use the official files")
        seed_everything(seed)
        start = time.perf_counter()
        with deterministic():
            output = cell.protocol.run(ctx)
        total = time.perf_counter() - start
        preds = attach_truth(cell.protocol.name, test_split, output, dataset.task, len(dataset.classes))
        # metrics from exactly the float32 scores that are stored, so the record verifies
        preds.scores = np.asarray(preds.scores, dtype=np.float32).astype(np.float64)
        groups = preds.groups if preds.groups is not None else None
        metrics = evaluate(dataset.task, preds.labels, preds.scores, groups=groups,
                           resamples=self.config.bootstrap, seed=seed)
        flags = sorted(set(output.flags) | set(degenerate_flags(dataset.task, preds.labels, preds.scores, metrics)))
        backbone = self._backbones.get(cell.backbone.name)
        record = dict(base)
        record["backbone"] = dict(base["backbone"])
        if isinstance(backbone, Backbone):
            record["backbone"].update({
                "params": backbone.num_parameters, "weights_sha256": backbone.weights_sha256,
                "weights_source": backbone.weights_source, "preprocessing": backbone.preprocessing.as_dict(),
                "feature_kind": ",".join(used_kinds) or None})
        record["dataset"] = {**base["dataset"], "fingerprint": dataset.fingerprint,
                             "classes": [str(c) for c in dataset.classes] or list(cell.dataset.classes),
                             "split_sizes": {s: len(dataset.split(s)) for s in dataset.split_names},
                             "info": _jsonable(dataset.info)}
        record["test_set"] = test_set
        extraction = ctx.timings.pop("extraction", 0.0)
        timings = {"extraction_s": round(extraction, 3), "fit_s": round(max(0.0, total - extraction), 3),
                   "total_s": round(time.perf_counter() - start, 3),
                   **{f"{k}_s": round(v, 3) for k, v in ctx.timings.items()}}
        record.update({
            "status": "ok", "primary_metric": cell.dataset.primary_metric,
            "metrics": {k: v.as_dict() for k, v in metrics.items()},
            "ci": {"method": "percentile bootstrap", "level": 0.95, "resamples": self.config.bootstrap,
                   "unit": "patient" if groups is not None else "sample"},
            "flags": flags, "selected": _jsonable(output.selected), "extra": _jsonable(output.extra),
            "timings": timings, "error": None,
        })
        if self._memory_notes:
            record["extra"]["extraction_memory"] = list(self._memory_notes)
        if cell.dataset.primary_metric not in record["metrics"]:
            raise ValueError(f"data set {cell.dataset.name!r} declares primary metric "
                             f"{cell.dataset.primary_metric!r}, which is not computed for {dataset.task} tasks")
        record = portable(record, self._roots)
        if self.writes:
            write_result(paths, record, preds)  # under the submission's lock, with its predictions
            paths.failed.unlink(missing_ok=True)
        else:  # another rank writes the files; this record is never written
            record["predictions"] = {"file": paths.predictions.name, "sha256": "0" * 64, "n": len(preds.ids)}
        return record

    # ------------------------------------------------------------------ shared loading
    def _dataset(self, spec: DatasetSpec) -> Dataset:
        got = self._datasets.get(spec.name)
        if got is None:
            try:
                got = spec.load(spec, **self.config.options_for("dataset", spec.name))
                if not isinstance(got, Dataset):
                    raise TypeError(f"data set plugin {spec.name!r} returned {type(got).__name__}, not Dataset")
                got.check_group_leaks()
            except Exception as exc:
                got = _Failure(exc)
            self._datasets[spec.name] = got
        if isinstance(got, _Failure):
            raise got.exc
        return got

    def _backbone(self, spec: BackboneSpec) -> Backbone:
        got = self._backbones.get(spec.name)
        if got is None:
            options = self._backbone_options(spec)
            preprocessing = {k: options.pop(k) for k in PREPROCESSING_OPTIONS if k in options}
            try:
                torch.manual_seed(cell_seed(self.config.seed, "init", spec.name))
                got = spec.load(spec, **options)
                if not isinstance(got, Backbone):
                    raise TypeError(f"backbone plugin {spec.name!r} returned {type(got).__name__}, not Backbone")
                if preprocessing:
                    got.preprocessing = got.preprocessing.with_options(**preprocessing)
            except Exception as exc:
                got = _Failure(exc)
            self._backbones[spec.name] = got
        if isinstance(got, _Failure):
            raise got.exc
        return got

    def _release_backbone(self, name: str) -> None:
        self._backbones.pop(name, None)
        self._features.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _feature_key_parts(self, cell: Cell, backbone: Backbone, dataset: Dataset, split: str, kind: str) -> dict:
        return {
            "backbone": {"name": cell.backbone.name.split("@")[0], "revision": cell.backbone.revision,
                         "weights": backbone.weights_sha256 or _state_digest(backbone)},
            "kind": kind, "preprocessing": backbone.preprocessing.as_dict(),
            "dataset": {"name": cell.dataset.name, "revision": cell.dataset.revision,
                        "fingerprint": dataset.fingerprint},
            "split": split,
        }

    def _feature_set(self, cell: Cell, dataset: Dataset, split: str, kind: str, planned: Iterable[str],
                     ctx: Context) -> FeatureSet:
        backbone = self._backbone(cell.backbone)
        kind = backbone.resolve_kind(kind)
        data = dataset.split(split)
        key = feature_key(self._feature_key_parts(cell, backbone, dataset, split, kind))
        if key not in self._features:
            tensors = self.cache.get(key)
            if tensors is None:
                self._extract_missing(cell, backbone, dataset, split, [kind, *planned], ctx, known_missing=kind)
            else:
                self._features[key] = FeatureSet(tensors["features"], data.labels, data.groups, data.ids, kind)
        return self._features[key]

    def _extract_missing(self, cell: Cell, backbone: Backbone, dataset: Dataset, split: str,
                         kinds: Iterable[str], ctx: Context, known_missing: str | None = None) -> None:
        data = dataset.split(split)
        wanted: dict[str, dict] = {}
        for k in kinds:
            try:
                k = backbone.resolve_kind(k)
            except ValueError:
                continue
            parts = self._feature_key_parts(cell, backbone, dataset, split, k)
            key = feature_key(parts)
            if key in self._features or k in wanted:
                continue
            cached = None if k == known_missing else self.cache.get(key)
            if cached is not None:
                self._features[key] = FeatureSet(cached["features"], data.labels, data.groups, data.ids, k)
            else:
                wanted[k] = parts
        if not wanted:
            return
        advance = self.hooks.extraction(f"{cell.backbone.name} on {cell.dataset.name}/{split}", len(data))
        try:
            with ctx.timer("extraction"):
                result = extract_features(backbone, data.images, list(wanted), self.device,
                                          batch_size=self.config.batch_size, num_workers=self.config.workers,
                                          amp=self.config.amp, progress=advance)
        finally:
            self.hooks.extraction_done()
        if result.oom_retries:
            message = (f"out of memory extracting {cell.backbone.name} on {cell.dataset.name}/{split}: batch size "
                       f"halved {result.oom_retries} time(s), to {result.batch_size}")
            self.hooks.log(message)
            self._memory_notes.append(message)
        for k, parts in wanted.items():
            key = feature_key(parts)
            self.cache.put(key, {"features": result.features[k]}, parts)
            self._features[key] = FeatureSet(result.features[k], data.labels, data.groups, data.ids, k)


def _is_main_process() -> bool:
    """False on torchrun ranks other than 0 (``RANK`` is set by torchrun for every rank)."""
    return int(os.environ.get("RANK", "0") or 0) == 0


def _state_digest(backbone: Backbone) -> str:
    """Hash of the module's weights, for backbones without a weight file (random init, hub)."""
    cached = getattr(backbone, "_medfm_state_digest", None)
    if cached is None:
        import hashlib

        h = hashlib.sha256()
        for name, tensor in sorted(backbone.module.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str((str(t.dtype), tuple(t.shape))).encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes())
        cached = h.hexdigest()
        backbone._medfm_state_digest = cached
    return cached


def _outcome_from_record(cell: Cell, status: str, path: Path, record: dict[str, Any]) -> CellOutcome:
    metric = record.get("primary_metric")
    m = (record.get("metrics") or {}).get(metric or "", {})
    return CellOutcome(cell, status, path, metric, m.get("value"), (m.get("ci_low"), m.get("ci_high")),
                       list(record.get("flags") or []), float((record.get("timings") or {}).get("total_s", 0.0)))


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        v = float(obj)
        return v if np.isfinite(v) else None
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    return obj

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
import re
import time
import traceback
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch

from . import leaderboard
from .backbone import Backbone
from .cache import FeatureCache, feature_key
from .config import RunConfig
from .context import Context, FeatureSet
from .dataset import Dataset
from .dense_features import FeatureMaps
from .device import default_workers, describe, deterministic, select_device
from .errors import UserError
from .extract import ExtractionResult, extract_features
from .io import remove_stale_temporaries, sha256_file_memo, sha256_json
from .map_cache import MapStore
from .metrics import degenerate_flags, evaluate
from .option_checks import as_declared, check_plugin_options
from .portable import default_roots, hash_view, portable
from .predictions import Predictions
from .records import SCHEMA_VERSION, CellPaths, cell_lock, cell_paths, write_record, write_result
from .registry import Registry
from .run_events import RunEvents
from .seeding import cell_seed, seed_everything
from .seg_predictions import SegmentationPredictions, attach_masks, score_segmentation, truth_masks
from .specs import BackboneSpec, DatasetSpec, ProtocolSpec
from .submission import resolve_submitter, submission_block
from .test_set import identity_block
from .truth import attach_truth
from .verification import MIN_RESAMPLES, KnownSpecs, verify_file
from .versions import environment_versions

MAX_RESAMPLES = 100_000

PREPROCESSING_OPTIONS = ("resize", "interpolation")
FEW_RESAMPLES = "few_resamples"  # --bootstrap below MIN_RESAMPLES
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


class _OutputNotWritten(Exception):
    """Writing a cell's result failed (a full disk, permissions): not the cell's own error."""

    def __init__(self, error: OSError) -> None:
        super().__init__(str(error))
        self.error = error


class _Failure:
    """A loading failure remembered for the run, so later cells fail fast with the same error."""

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class Runner:
    """Runs the cross product described by a ``RunConfig`` with specs from a ``Registry``."""

    def __init__(self, registry: Registry, config: RunConfig, events: RunEvents | None = None) -> None:
        self.registry = registry
        self.config = config
        self.events = events or RunEvents()
        self.device = select_device(config.device)
        self.workers = config.workers if config.workers is not None else default_workers(self.device)
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
        self._chunks_to_drop: list[str] = []  # cache entries of a chunked extraction, once it is whole
        self.maps = MapStore(self.cache.root)
        self._planned_levels: dict[tuple[str, str], int] = {}  # most map levels any planned cell reads
        self._planned_kinds: dict[tuple[str, str], tuple[str, ...]] = {}  # every kind any planned cell reads
        self._maps: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ planning
    def plan(self) -> list[Cell]:
        """All cells, backbone-major so each model is loaded once. Unknown names are user errors."""
        self.registry.choose_sources(self.config.sources)
        self.registry.check_duplicates()
        backbones = self.registry.match("backbone", self.config.backbones)
        datasets = self.registry.match("dataset", self.config.datasets)
        protocols = self.registry.match("protocol", self.config.protocols)
        # a classification protocol on a segmentation set (or the reverse) cannot run: such
        # pairs are left out of the cross product, unless nothing else is left
        pairs = [(d, p) for d in datasets for p in protocols if d.task in p.tasks]
        if not pairs and datasets and protocols:
            d, p = datasets[0], protocols[0]
            raise UserError(
                f"protocol {p.name!r} does not support {d.task} tasks (data set {d.name!r}); "
                f"it supports {list(p.tasks)}: choose protocols for the data sets' tasks"
            )
        skipped = len(datasets) * len(protocols) - len(pairs)
        if skipped:
            self.events.log(
                f"{skipped} data set x protocol pair(s) left out of the plan: the protocol does not support the task"
            )
        return [Cell(b, d, p) for b in backbones for d, p in pairs]

    # ------------------------------------------------------------------ running
    def run(self, cells: Iterable[Cell] | None = None) -> list[CellOutcome]:
        """Run every cell (or the given ones); then refresh the leaderboard."""
        cells = list(cells if cells is not None else self.plan())
        self.check(cells)
        self.prepare(cells)
        outcomes: list[CellOutcome] = []
        current_backbone: str | None = None
        self.events.run_start(len(cells))
        self._remove_stale_temporaries()
        for cell in cells:
            if current_backbone is not None and cell.backbone.name != current_backbone:
                self._release_backbone(current_backbone)
            current_backbone = cell.backbone.name
            outcome = self.run_cell(cell)
            outcomes.append(outcome)
            if outcome.status == "error" and self.config.fail_fast:
                break
        if self.writes:
            try:
                self.refresh_leaderboard()
            except OSError as exc:
                self.events.log(f"the leaderboard was not updated: {_os_reason(exc)}; run `medfm leaderboard` later")
        return outcomes

    def _plan_map_levels(self, cells: list[Cell]) -> dict[tuple[str, str], int]:
        """Per backbone and data set, the most spatial map levels a planned protocol reads, so
        the maps are extracted in one pass for every segmentation protocol on the pair."""
        levels: dict[tuple[str, str], int] = {}
        for cell in cells:
            if cell.protocol.map_levels is None:
                continue
            try:
                n = int(cell.protocol.map_levels(self._cell_options(cell)))
            except Exception:
                continue  # the cell reports its own error when it runs
            key = (cell.backbone.name, cell.dataset.name)
            levels[key] = max(levels.get(key, 0), n)
        return levels

    def _plan_feature_kinds(self, cells: list[Cell]) -> dict[tuple[str, str], tuple[str, ...]]:
        """Per backbone and data set, every feature kind a planned cell reads, in plan order:
        the first cell to extract a split extracts them all in one forward pass, so knn, the
        linear probe and the few-shot protocols on one pair cost one pass, not one each."""
        kinds: dict[tuple[str, str], dict[str, None]] = {}
        for cell in cells:
            if "features" not in cell.protocol.needs or cell.protocol.map_levels is not None:
                continue  # segmentation protocols read spatial maps, not feature vectors
            try:
                wanted = cell.protocol.feature_kinds(self._cell_options(cell))
            except Exception:
                continue  # the cell reports its own error when it runs
            kinds.setdefault((cell.backbone.name, cell.dataset.name), {}).update(dict.fromkeys(wanted))
        return {key: tuple(v) for key, v in kinds.items()}

    def _cell_options(self, cell: Cell) -> dict[str, Any]:
        return {
            **cell.protocol.defaults,
            **as_declared(cell.protocol.defaults, self.config.options_for("protocol", cell.protocol.name)),
        }

    def prepare(self, cells: list[Cell]) -> None:
        """Gather what the whole plan reads (feature kinds and map levels per backbone and data
        set), so that the first extraction of a split serves every cell. ``run`` calls it; an
        executor that runs cells elsewhere calls it with the full plan on each worker's runner."""
        self._planned_levels = self._plan_map_levels(cells)
        self._planned_kinds = self._plan_feature_kinds(cells)

    def split_sizes(self, cell: Cell) -> dict[str, int]:
        """Images per split of the cell's data set (loading the data set, not the backbone)."""
        dataset = self._dataset(cell.dataset)
        return {s: len(dataset.split(s)) for s in dataset.split_names}

    def prefetch(self, cell: Cell, split: str | None = None, shard: tuple[int, int] | None = None) -> None:
        """Extract into the cache every feature kind and map level the prepared plan reads on the
        cell's backbone and data set: all splits, one split, or one shard ``(start, stop)`` of a
        split (see ``shard_ranges``), so a cluster can extract the shards of a large split in
        parallel and the cells then find everything cached."""
        dataset = self._dataset(cell.dataset)
        backbone = self._backbone(cell.backbone)
        pair = (cell.backbone.name, cell.dataset.name)
        kinds, levels = self._planned_kinds.get(pair, ()), self._planned_levels.get(pair, 0)
        for name in [split] if split is not None else list(dataset.split_names):
            if shard is not None:
                if kinds:
                    wanted = self._wanted(cell, backbone, dataset, name, kinds)
                    if wanted:
                        self._extract_shard(backbone, dataset.split(name).images, wanted, *shard, lambda n: None)
                continue
            if kinds:
                self._extract_missing(cell, backbone, dataset, name, kinds, None)
            if levels:
                self._feature_maps(cell, dataset, name, levels, None, [])

    def _kind_parts(
        self, cell: Cell, backbone: Backbone, dataset: Dataset, split: str, kinds: Iterable[str]
    ) -> dict[str, dict]:
        """Cache-key parts of each kind the backbone offers (resolved, once each), in order."""
        out: dict[str, dict] = {}
        for k in kinds:
            try:
                k = backbone.resolve_kind(k)
            except ValueError:
                continue
            if k not in out:
                out[k] = self._feature_key_parts(cell, backbone, dataset, split, k)
        return out

    def _wanted(self, cell: Cell, backbone: Backbone, dataset: Dataset, split: str, kinds: Iterable[str]) -> dict:
        """Key parts of each kind the backbone offers whose whole split is not cached yet."""
        parts = self._kind_parts(cell, backbone, dataset, split, kinds)
        return {k: p for k, p in parts.items() if not self.cache.path(feature_key(p)).exists()}

    def _check_writable(self) -> None:
        """The results folder and the leaderboard can be written: found before any cell runs."""
        results, board = self.results_dir, self.config.path(self.config.leaderboard)
        if results.exists() and not results.is_dir():
            raise UserError(f"--results {results} is a file, not a folder; name a folder")
        if board.is_dir():
            raise UserError(f"--leaderboard {board} is a folder; name a markdown file")
        try:
            results.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create the results folder {results}: {_os_reason(exc)}") from None
        if not os.access(results, os.W_OK | os.X_OK):
            raise UserError(f"the results folder {results} is not writable; fix its permissions or pass --results")

    def _remove_stale_temporaries(self) -> None:
        """Half-written files of an earlier run that was killed (a feature file can be large)."""
        removed = remove_stale_temporaries(self.results_dir) + remove_stale_temporaries(self.cache.root)
        if removed:
            size = sum(n for _, n in removed)
            self.events.log(
                f"removed {len(removed)} temporary file(s) left by a run that was stopped"
                + (f" ({size / 1e6:.1f} MB)" if size else "")
            )

    def check(self, cells: Iterable[Cell]) -> None:
        """Settings that would make every cell fail, found before any runs: a ``UserError``."""
        cells = list(cells)
        from .preprocessing import RESIZE_POLICIES

        if self.config.resize is not None and self.config.resize not in RESIZE_POLICIES:
            raise UserError(f"--resize {self.config.resize!r} is not a resize policy; use one of {RESIZE_POLICIES}")
        if self.config.extraction_chunk < 1:
            raise UserError(f"extraction_chunk must be at least 1; got {self.config.extraction_chunk}")
        if self.config.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1; got {self.config.batch_size}")
        if not 0 <= self.config.seed < 2**62:
            raise UserError(f"--seed must be a non-negative integer; got {self.config.seed}")
        if not 0 <= self.config.bootstrap <= MAX_RESAMPLES:
            raise UserError(f"--bootstrap must be between 0 and {MAX_RESAMPLES}; got {self.config.bootstrap}")
        if self.config.bootstrap < MIN_RESAMPLES:
            self.events.log(
                f"--bootstrap {self.config.bootstrap}: records with fewer than {MIN_RESAMPLES} resamples "
                "are kept but not ranked on the leaderboard"
            )
        # the planned specs, and those an options table names without planning them: a run file
        # kept for many plans still gets its typos and bad values reported, not silently ignored
        named = self._check_option_tables(cells)
        backbones = {**named["backbone"], **{c.backbone.name: c.backbone for c in cells}}
        datasets = {**named["dataset"], **{c.dataset.name: c.dataset for c in cells}}
        protocols = {**named["protocol"], **{c.protocol.name: c.protocol for c in cells}}
        for name, backbone in backbones.items():
            given = {k: v for k, v in self._backbone_options(backbone, name).items() if k not in PREPROCESSING_OPTIONS}
            check_plugin_options("backbone", name, backbone.options, given, backbone.limits)
        for name, dataset in datasets.items():
            given = self.config.options_for("dataset", name)
            check_plugin_options("dataset", name, dataset.options, given, dataset.limits)
        for protocol in protocols.values():
            given = as_declared(protocol.defaults, self.config.options_for("protocol", protocol.name))
            check_plugin_options("protocol", protocol.name, protocol.defaults, given, protocol.limits)
            if protocol.validate is not None:
                try:
                    protocol.validate({**protocol.defaults, **given})
                except UserError:
                    raise
                except Exception as exc:
                    raise UserError(
                        f"protocol {protocol.name!r}: its options do not validate: {type(exc).__name__}: {exc}"
                    ) from None
        if self.writes:  # last: it creates the results folder, which a mistake above must not
            self._check_writable()

    def _check_option_tables(self, cells: list[Cell]) -> dict[str, dict[str, Any]]:
        """Every options table (``--set KIND.NAME.KEY=...`` or a run file's ``[KIND."NAME"]``) names
        a spec that exists: a misspelt name would otherwise run the defaults without a word.
        Returns, per kind, the specs that exact (not glob) table keys name outside the plan."""
        import fnmatch

        from .errors import UnknownNameError

        unplanned: dict[str, dict[str, Any]] = {"backbone": {}, "dataset": {}, "protocol": {}}
        for kind, tables in self.config.options.items():
            planned = {getattr(c, kind).name for c in cells}
            for key in tables:
                where = f'options for {kind} {key!r} (--set {kind}.{key}.KEY=VALUE or a [{kind}."{key}"] table)'
                if any(ch in key for ch in "*?["):
                    known = planned | set(self.registry.names(kind))
                    literal = re.split(r"[*?\[]", key, maxsplit=1)[0]
                    # a family's members are not listed: `timm/convnext_*` is fine when timm/ exists
                    family = any(
                        literal.startswith(f.spec.prefix) or f.spec.prefix.startswith(literal)
                        for f in self.registry.families.get(kind, [])
                    )
                    if not family and not any(fnmatch.fnmatchcase(n, key) for n in known):
                        raise UserError(f"{where}: the pattern matches no registered {kind}; see `medfm list {kind}s`")
                    continue
                try:
                    spec = self.registry.get(kind, key.split("@", 1)[0])
                except UnknownNameError as exc:
                    raise UserError(f"{where}: {exc}") from None
                if key not in planned and kind in unplanned:
                    unplanned[kind][key] = spec
        return unplanned

    def refresh_leaderboard(self) -> bool:
        """Regenerate the leaderboard from the verified records under the results folder."""
        from .standings import build_standings, load_policy
        from .verification import scan_results

        target = self.config.path(self.config.leaderboard)
        scan = scan_results(self.results_dir, self.known)
        for rejected in scan.rejected:
            self.events.log(f"not on the leaderboard: {rejected.problem}")
        policy = load_policy(target.parent)
        return leaderboard.update_file(target, build_standings(scan, self.known, policy))

    def cell_config(self, cell: Cell) -> dict[str, Any]:
        """Everything that determines a cell's numbers; its hash decides whether to rerun."""
        given = as_declared(cell.protocol.defaults, self.config.options_for("protocol", cell.protocol.name))
        protocol_options = {**cell.protocol.defaults, **given}
        return {
            "backbone": {
                "name": cell.backbone.name,
                "revision": cell.backbone.revision,
                "options": self._backbone_options(cell.backbone),
            },
            "dataset": {
                "name": cell.dataset.name,
                "revision": cell.dataset.revision,
                "options": self.config.options_for("dataset", cell.dataset.name),
            },
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
        return cell_paths(
            self.results_dir,
            cell.backbone.name,
            cell.dataset.name,
            cell.protocol.name,
            self.submitter,
            self.config.seed,
        )

    def _backbone_options(self, spec: BackboneSpec, name: str | None = None) -> dict[str, Any]:
        options = self.config.options_for("backbone", name or spec.name)
        if self.config.resize and "resize" not in options:
            options["resize"] = self.config.resize
        return options

    def run_cell(self, cell: Cell) -> CellOutcome:
        """Run one cell, or skip it if its current record exists; never raises for cell failures,
        including an output that cannot be written (the other cells still run)."""
        start = time.perf_counter()
        try:
            return self._run_cell(cell)
        except OSError as exc:
            outcome = CellOutcome(
                cell,
                "error",
                None,
                seconds=time.perf_counter() - start,
                message=f"cannot write this cell's results: {_os_reason(exc)}; check the results folder "
                "(free space, permissions)",
            )
            self.events.cell_end(outcome)
            return outcome

    def _run_cell(self, cell: Cell) -> CellOutcome:
        paths = self.paths(cell)
        config = self.cell_config(cell)
        config_hash = self.config_hash(config)
        if not self.config.rerun:
            cached = self._current_record(cell, paths.record, config_hash, config)
            if cached is not None:
                outcome = _outcome_from_record(cell, "cached", paths.record, cached)
                self.events.cell_end(outcome)
                return outcome
        self.events.cell_start(cell)
        start = time.perf_counter()
        seed = cell_seed(self.config.seed, cell.backbone.name, cell.dataset.name, cell.protocol.name)
        base = self._record_base(cell, config, config_hash, seed)
        try:
            record = self._execute(cell, config, seed, base, paths)
        except _OutputNotWritten as failure:  # the results folder itself: see run_cell
            raise failure.error from None
        except Exception as exc:  # one cell's failure must not stop the others
            tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
            record = {
                **base,
                "status": "error",
                "error": {
                    "type": type(exc).__name__,
                    "message": str(exc) or repr(exc),
                    "traceback": "".join(tb[-TRACEBACK_LINES:]),
                },
            }
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
            outcome = CellOutcome(
                cell,
                "error",
                paths.failed if kept else paths.record,
                seconds=time.perf_counter() - start,
                message=message,
            )
            self.events.cell_end(outcome)
            return outcome
        outcome = _outcome_from_record(cell, "ok", paths.record, record)
        outcome.seconds = time.perf_counter() - start
        self.events.cell_end(outcome)
        return outcome

    def _current_record(
        self, cell: Cell, path: Path, config_hash: str, config: dict[str, Any]
    ) -> dict[str, Any] | None:
        """The record at ``path`` if it is current: verified, same configuration, and neither the
        weights file nor the data set's files changed since it was written."""
        if not path.exists():
            return None
        checked = verify_file(path, self.results_dir, self.known)
        if not checked.valid:
            self.events.log(f"recomputing: {checked.problem}")
            return None
        record = checked.record
        assert record is not None  # a valid entry holds its record
        if record["status"] != "ok" or record["config_hash"] != config_hash:
            return None
        weights = config["backbone"]["options"].get("weights")
        if (
            isinstance(weights, str)
            and Path(weights).is_file()
            and sha256_file_memo(weights) != record["backbone"].get("weights_sha256")
        ):
            self.events.log(
                f"recomputing {path.name}: the weights file {Path(weights).name} changed since it was written"
            )
            return None
        changed = self._data_changed(cell.dataset, record)
        if changed:
            self.events.log(f"recomputing {path.name}: {changed}")
            return None
        return record

    def _data_changed(self, spec: DatasetSpec, record: dict[str, Any]) -> str | None:
        """Why the data set's files no longer match the record (``None`` when they do).

        The data set is loaded (once per run) to compare its fingerprint, and for file-based sets
        the state of the files on disk now (paths, sizes, modification times): a file replaced
        by another of the same size is caught too. A data set that no longer loads is changed.
        """
        try:
            dataset = self._dataset(spec)
        except Exception as exc:
            return f"the data set {spec.name} does not load any more ({type(exc).__name__})"
        stated = record.get("dataset") or {}
        if dataset.fingerprint != stated.get("fingerprint"):
            return f"the data set {spec.name} changed since it was written (its fingerprint differs)"
        now, then = (dataset.info or {}).get("disk_state"), (stated.get("info") or {}).get("disk_state")
        if now is not None and then is not None and now != then:  # records older than disk_state: fingerprint only
            return f"files of the data set {spec.name} were modified since it was written"
        return None

    def _holds_good_record(self, path: Path) -> bool:
        """Whether ``path`` holds a verified, successful record (with its predictions)."""
        if not path.exists():
            return False
        checked = verify_file(path, self.results_dir, self.known)
        return checked.valid and checked.record is not None and checked.record["status"] == "ok"

    def _record_base(self, cell: Cell, config: dict, config_hash: str, seed: int) -> dict[str, Any]:
        def prov(kind: str, name: str) -> dict[str, Any]:
            info = self.registry.provenance(kind, name)
            return {
                "name": info.name if info else None,
                "distribution": info.distribution if info else None,
                "version": info.version if info else None,
            }

        return {
            "schema_version": SCHEMA_VERSION,
            "submission": submission_block(self.submitter, self.config.seed, self._versions.get("medfm"), self.device),
            "backbone": {
                "name": cell.backbone.name,
                "revision": cell.backbone.revision,
                "plugin": prov("backbone", cell.backbone.name),
                "params": cell.backbone.params,
                "objective": cell.backbone.objective,
                "pretraining": cell.backbone.pretraining,
            },
            "dataset": {
                "name": cell.dataset.name,
                "revision": cell.dataset.revision,
                "plugin": prov("dataset", cell.dataset.name),
                "task": cell.dataset.task,
                "classes": list(cell.dataset.classes),
                "primary_metric": cell.dataset.primary_metric,
                "modality": cell.dataset.modality,
            },
            "protocol": {
                "name": cell.protocol.name,
                "version": cell.protocol.version,
                "plugin": prov("protocol", cell.protocol.name),
            },
            "config": config,
            "config_hash": config_hash,
            "seed": seed,
            "versions": self._versions,
            "device": describe(self.device),
        }

    def _execute(self, cell: Cell, config: dict, seed: int, base: dict, paths: CellPaths) -> dict[str, Any]:
        dataset = self._dataset(cell.dataset)
        if dataset.task not in cell.protocol.tasks:
            raise UserError(
                f"protocol {cell.protocol.name!r} does not support {dataset.task} tasks "
                f"(data set {cell.dataset.name!r}); it supports {list(cell.protocol.tasks)}"
            )
        options = config["protocol"]["options"]
        self._memory_notes = []
        kinds = cell.protocol.feature_kinds(options)
        used_kinds: list[str] = []

        def load_features(split: str, kind: str) -> FeatureSet:
            fs = self._feature_set(cell, dataset, split, kind, kinds, ctx)
            if fs.kind not in used_kinds:
                used_kinds.append(fs.kind)
            return fs

        ctx = Context(
            backbone_spec=cell.backbone,
            dataset_spec=cell.dataset,
            protocol_spec=cell.protocol,
            options=options,
            seed=seed,
            device=self.device,
            dataset_loader=lambda: dataset,
            backbone_loader=lambda: self._backbone(cell.backbone),
            feature_loader=load_features,
            log=self.events.log,
            work_dir=paths.work,
            record_path=paths.record,
            map_loader=lambda split, levels: self._feature_maps(cell, dataset, split, levels, ctx, used_kinds),
            mask_loader=lambda split, size: self._resized_masks(cell, dataset, split, size),
        )
        test_split = dataset.split("test")
        segmentation = dataset.task == "segmentation"
        truth = truth_masks(test_split) if segmentation else None
        test_set = identity_block(test_split, dataset.info, truth)
        published = getattr(cell.dataset, "test_identity", None)
        if published is not None and published != test_set["identity"]:
            raise UserError(
                f"data set {cell.dataset.name!r}: the test split read from its files is not the "
                f"published one (identity {test_set['identity'][:12]}, published {published[:12]}); "
                "use the official files"
            )
        seed_everything(seed)
        start = time.perf_counter()
        with deterministic():
            output = cell.protocol.run(ctx)
        total = time.perf_counter() - start
        preds: Predictions | SegmentationPredictions
        if segmentation:
            preds = attach_masks(cell.protocol.name, test_split, output, len(dataset.classes), truth)
            scored = score_segmentation(
                preds, len(dataset.classes), cell.dataset.nsd_tolerance_mm, self.config.bootstrap, seed
            )
            metric_dicts = scored["metrics"]
            raised = set(output.flags) | set(scored["flags"])
            groups = preds.groups
            segmentation_block = {
                "scored": "volume" if preds.volumes else "image",
                "cases": len(scored["cases"]),
                "unit": "pixel" if preds.spacing is None else "mm",
                "nsd_tolerance": float(cell.dataset.nsd_tolerance_mm),
                "foreground_classes": len(dataset.classes) - 1,
                "notes": scored["notes"],
            }
        else:
            preds = attach_truth(cell.protocol.name, test_split, output, dataset.task, len(dataset.classes))
            # metrics from exactly the float32 scores that are stored, so the record verifies
            preds.scores = np.asarray(preds.scores, dtype=np.float32).astype(np.float64)
            groups = preds.groups if preds.groups is not None else None
            metrics = evaluate(
                dataset.task, preds.labels, preds.scores, groups=groups, resamples=self.config.bootstrap, seed=seed
            )
            metric_dicts = {k: v.as_dict() for k, v in metrics.items()}
            raised = set(output.flags) | set(degenerate_flags(dataset.task, preds.labels, preds.scores, metrics))
            segmentation_block = None
        if self.config.bootstrap < MIN_RESAMPLES:  # intervals too rough to rank by: say so in the record
            raised.add(FEW_RESAMPLES)
        flags = sorted(raised)
        backbone = self._backbones.get(cell.backbone.name)
        record = dict(base)
        record["backbone"] = dict(base["backbone"])
        if isinstance(backbone, Backbone):
            record["backbone"].update(
                {
                    "params": backbone.num_parameters,
                    "weights_sha256": backbone.weights_sha256,
                    "weights_source": backbone.weights_source,
                    "preprocessing": backbone.preprocessing.as_dict(),
                    "feature_kind": ",".join(used_kinds) or None,
                }
            )
        record["dataset"] = {
            **base["dataset"],
            "fingerprint": dataset.fingerprint,
            "classes": [str(c) for c in dataset.classes] or list(cell.dataset.classes),
            "split_sizes": {s: len(dataset.split(s)) for s in dataset.split_names},
            "info": _jsonable(dataset.info),
        }
        record["test_set"] = test_set
        extraction = ctx.timings.pop("extraction", 0.0)
        timings = {
            "extraction_s": round(extraction, 3),
            "fit_s": round(max(0.0, total - extraction), 3),
            "total_s": round(time.perf_counter() - start, 3),
            **{f"{k}_s": round(v, 3) for k, v in ctx.timings.items()},
        }
        record.update(
            {
                "status": "ok",
                "primary_metric": cell.dataset.primary_metric,
                "metrics": metric_dicts,
                "ci": {
                    "method": "percentile bootstrap",
                    "level": 0.95,
                    "resamples": self.config.bootstrap,
                    "unit": "patient" if groups is not None else "sample",
                },
                "flags": flags,
                "selected": _jsonable(output.selected),
                "extra": _jsonable(output.extra),
                "timings": timings,
                "error": None,
            }
        )
        if segmentation_block is not None:
            record["segmentation"] = segmentation_block
        if self._memory_notes:
            record["extra"]["extraction_memory"] = list(self._memory_notes)
        if cell.dataset.primary_metric not in record["metrics"]:
            raise ValueError(
                f"data set {cell.dataset.name!r} declares primary metric "
                f"{cell.dataset.primary_metric!r}, which is not computed for {dataset.task} tasks"
            )
        record = portable(record, self._roots)
        if self.writes:
            try:
                write_result(paths, record, preds)  # under the submission's lock, with its predictions
            except OSError as exc:
                raise _OutputNotWritten(exc) from exc
            paths.failed.unlink(missing_ok=True)
            for action in ctx.after_record:  # e.g. deleting checkpoints: only now that the record exists
                try:
                    action()
                except Exception as exc:  # tidying up must not fail a computed cell
                    self.events.log(f"{cell.label}: cleaning up after the record failed: {type(exc).__name__}: {exc}")
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
        self._maps.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _feature_key_parts(self, cell: Cell, backbone: Backbone, dataset: Dataset, split: str, kind: str) -> dict:
        return {
            "backbone": {
                "name": cell.backbone.name.split("@")[0],
                "revision": cell.backbone.revision,
                "weights": backbone.weights_sha256 or _state_digest(backbone),
            },
            "kind": kind,
            "preprocessing": backbone.preprocessing.as_dict(),
            "dataset": {
                "name": cell.dataset.name,
                "revision": cell.dataset.revision,
                "fingerprint": dataset.fingerprint,
            },
            "split": split,
        }

    def _feature_set(
        self, cell: Cell, dataset: Dataset, split: str, kind: str, planned: Iterable[str], ctx: Context
    ) -> FeatureSet:
        backbone = self._backbone(cell.backbone)
        kind = backbone.resolve_kind(kind)
        data = dataset.split(split)
        key = feature_key(self._feature_key_parts(cell, backbone, dataset, split, kind))
        if key not in self._features:
            tensors = self.cache.get(key)
            if tensors is None:
                also = self._planned_kinds.get((cell.backbone.name, cell.dataset.name), ())
                self._extract_missing(cell, backbone, dataset, split, [kind, *planned, *also], ctx, known_missing=kind)
            else:
                self._features[key] = FeatureSet(tensors["features"], data.labels, data.groups, _ids(data), kind)
        return self._features[key]

    def _feature_maps(
        self, cell: Cell, dataset: Dataset, split: str, levels: int, ctx: Context | None, used: list[str]
    ) -> FeatureMaps:
        """The last ``levels`` spatial maps of ``split`` (memory-mapped from the map cache), extracting
        on a miss every level any planned protocol on this backbone and data set reads, in one pass."""
        from .dense_features import extract_maps

        if levels < 1:
            raise UserError(f"protocol {cell.protocol.name!r} asked for {levels} map levels; ask for at least 1")
        backbone = self._backbone(cell.backbone)
        want = max(levels, self._planned_levels.get((cell.backbone.name, cell.dataset.name), 0))
        parts = {i: self._feature_key_parts(cell, backbone, dataset, split, f"map{i}") for i in range(-want, 0)}
        keys = {i: feature_key(p) for i, p in parts.items()}
        needed = range(-levels, 0)
        for i in needed:
            if keys[i] not in self._maps:
                got = self.maps.get(keys[i])
                if got is not None:
                    self._maps[keys[i]] = got
        if any(keys[i] not in self._maps for i in needed):
            data = dataset.split(split)
            self._decode_on_device(data.images)
            advance = self.events.extraction(f"{cell.backbone.name} maps on {cell.dataset.name}/{split}", len(data))
            try:
                with _extraction_timer(ctx):
                    arrays, _ = extract_maps(
                        backbone, data.images, want, self.device, self.maps,
                        [keys[i] for i in range(-want, 0)], [parts[i] for i in range(-want, 0)],
                        batch_size=self.config.batch_size, num_workers=self.workers,
                        amp=self.config.amp, progress=advance,
                    )  # fmt: skip
            finally:
                self.events.extraction_done()
            for i, array in zip(range(-want, 0), arrays):
                self._maps[keys[i]] = array
        kind = f"maps_last{levels}"
        if kind not in used:
            used.append(kind)
        return FeatureMaps([self._maps[keys[i]] for i in needed], _ids(dataset.split(split)))

    def _decode_on_device(self, images: Any) -> None:
        """On CUDA, decode the split's uncached JPEGs with nvJPEG into the image cache first."""
        if self.device.type != "cuda":
            return
        from .gpu_decode import device_decodes_jpeg, fill_jpeg_cache

        if device_decodes_jpeg(self.device):
            try:
                fill_jpeg_cache(images, self.device, batch_size=max(1, self.config.batch_size))
            except Exception as exc:  # nvJPEG missing or out of memory: the CPU workers decode instead
                self.events.log(f"GPU JPEG decoding unavailable ({type(exc).__name__}: {exc}); decoding on the CPU")

    def _resized_masks(self, cell: Cell, dataset: Dataset, split: str, size: int) -> np.ndarray:
        """``split``'s masks at ``size`` x ``size``, memory-mapped from the map cache."""
        from .dense_features import resized_masks

        parts = {
            "kind": "masks",
            "size": int(size),
            "dataset": {
                "name": cell.dataset.name,
                "revision": cell.dataset.revision,
                "fingerprint": dataset.fingerprint,
            },
            "split": split,
        }
        key = feature_key(parts)
        if key not in self._maps:
            data = dataset.split(split)
            if data.masks is None:
                raise UserError(f"data set {cell.dataset.name!r}: split {split!r} has no masks")
            self._maps[key] = resized_masks(data.masks, int(size), self.maps, key, parts)
        return self._maps[key]

    def shard_ranges(self, n: int) -> list[tuple[int, int]]:
        """The ``[start, stop)`` shards a split of ``n`` images is extracted in: one shard up to
        ``extraction_chunk`` images, else shards of whole batches. Each shard is cached on its own,
        so a killed extraction resumes at the shard where it stopped, and shards can be extracted
        in parallel (the Ray executor) and merged in order with the same features as one pass."""
        batch = max(1, self.config.batch_size)
        chunk = max(batch, self.config.extraction_chunk // batch * batch)
        if n <= chunk:
            return [(0, n)]
        return [(start, min(n, start + chunk)) for start in range(0, n, chunk)]

    def _shard_keys(self, wanted: dict[str, dict], start: int, stop: int) -> dict[str, str]:
        return {k: feature_key({**p, "chunk": [start, stop]}) for k, p in wanted.items()}

    def _extract_shard(
        self, backbone: Backbone, images: Any, wanted: dict[str, dict], start: int, stop: int,
        advance: Callable[[int], None],
    ) -> tuple[dict[str, torch.Tensor], ExtractionResult | None]:  # fmt: skip
        """Shard ``start:stop`` of every wanted kind: from the cache, else extracted and cached."""
        keys = self._shard_keys(wanted, start, stop)
        cached = {k: self.cache.get(key) for k, key in keys.items()}
        if all(c is not None for c in cached.values()):
            advance(stop - start)
            return {k: c["features"] for k, c in cached.items()}, None  # type: ignore[index]
        got = extract_features(
            backbone, _Slice(images, start, stop), list(wanted), self.device, batch_size=max(1, self.config.batch_size),
            num_workers=self.workers, amp=self.config.amp, progress=advance,
        )  # fmt: skip
        for k, key in keys.items():
            self.cache.put(key, {"features": got.features[k]}, {**wanted[k], "chunk": [start, stop]})
        return got.features, got

    def _extract_in_chunks(
        self, backbone: Backbone, images: Any, wanted: dict[str, dict], advance: Callable[[int], None]
    ) -> ExtractionResult:
        """Extract every wanted kind for ``images``, a shard at a time (see ``shard_ranges``), each
        shard kept in the feature cache as soon as it is done: a run killed during a long extraction
        loses at most one shard. The shard entries are removed once the whole split is cached."""
        batch = max(1, self.config.batch_size)
        n = len(images)
        shards = self.shard_ranges(n)
        if len(shards) == 1:
            return extract_features(
                backbone, images, list(wanted), self.device, batch_size=batch,
                num_workers=self.workers, amp=self.config.amp, progress=advance,
            )  # fmt: skip
        parts: dict[str, list] = {k: [] for k in wanted}
        chunk_keys: list[str] = []
        seconds, retries, used_batch = 0.0, 0, batch
        for start, stop in shards:
            chunk_keys += self._shard_keys(wanted, start, stop).values()
            features, got = self._extract_shard(backbone, images, wanted, start, stop, advance)
            if got is not None:
                seconds, retries, used_batch = seconds + got.seconds, retries + got.oom_retries, got.batch_size
            for k in wanted:
                parts[k].append(features[k])
        merged = {k: torch.cat(v) for k, v in parts.items()}
        self._chunks_to_drop = chunk_keys
        return ExtractionResult(merged, seconds, n, used_batch, retries)

    def _extract_missing(
        self,
        cell: Cell,
        backbone: Backbone,
        dataset: Dataset,
        split: str,
        kinds: Iterable[str],
        ctx: Context | None,
        known_missing: str | None = None,
    ) -> None:
        data = dataset.split(split)
        wanted: dict[str, dict] = {}
        for k, parts in self._kind_parts(cell, backbone, dataset, split, kinds).items():
            key = feature_key(parts)
            if key in self._features:
                continue
            cached = None if k == known_missing else self.cache.get(key)
            if cached is not None:
                self._features[key] = FeatureSet(cached["features"], data.labels, data.groups, _ids(data), k)
            else:
                wanted[k] = parts
        if not wanted:
            return
        self._decode_on_device(data.images)
        advance = self.events.extraction(f"{cell.backbone.name} on {cell.dataset.name}/{split}", len(data))
        try:
            with _extraction_timer(ctx):
                result = self._extract_in_chunks(backbone, data.images, wanted, advance)
        finally:
            self.events.extraction_done()
        if result.oom_retries:
            message = (
                f"out of memory extracting {cell.backbone.name} on {cell.dataset.name}/{split}: batch size "
                f"halved {result.oom_retries} time(s), to {result.batch_size}"
            )
            self.events.log(message)
            self._memory_notes.append(message)
        for k, parts in wanted.items():
            key = feature_key(parts)
            self.cache.put(key, {"features": result.features[k]}, parts)
            self._features[key] = FeatureSet(result.features[k], data.labels, data.groups, _ids(data), k)
        for key in self._chunks_to_drop:  # the whole split is cached now
            self.cache.path(key).unlink(missing_ok=True)
        self._chunks_to_drop = []


def _extraction_timer(ctx: Context | None) -> AbstractContextManager[Any]:
    """The cell's extraction timer; none for an extraction ahead of the cells (``prefetch``)."""
    return ctx.timer("extraction") if ctx is not None else nullcontext()


class _Slice:
    """Images ``start:stop`` of an image source, as an image source."""

    def __init__(self, images: Any, start: int, stop: int) -> None:
        self.images, self.start, self.stop = images, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self.images[self.start + index]


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
                h.update(
                    t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool else t.numpy().tobytes()
                )
        cached = h.hexdigest()
        backbone._medfm_state_digest = cached  # type: ignore[attr-defined]  # memo on the instance
    return cached


def _os_reason(exc: OSError) -> str:
    """An OS error in one line: what failed and on which file."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def _ids(split: Any) -> Sequence[str]:
    """A split's sample ids (``Split`` names every sample once it is built)."""
    assert split.ids is not None
    return split.ids


def _outcome_from_record(cell: Cell, status: str, path: Path, record: dict[str, Any]) -> CellOutcome:
    metric = record.get("primary_metric")
    m = (record.get("metrics") or {}).get(metric or "", {})
    return CellOutcome(
        cell,
        status,
        path,
        metric,
        m.get("value"),
        (m.get("ci_low"), m.get("ci_high")),
        list(record.get("flags") or []),
        float((record.get("timings") or {}).get("total_s", 0.0)),
    )


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

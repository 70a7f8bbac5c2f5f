"""The cross product on a Ray cluster: ``medfm run --executor ray [--address ADDR]``.

The driver plans and checks the run exactly as the local runner does, then submits tasks:

* per backbone, one **extraction task** that loads the model once and fills the feature cache
  with every kind and map level the plan reads, for each of its data sets (asking Ray for
  ``num_gpus``); a split longer than ``extraction_chunk`` images is first cut into shards,
  each one a task of its own, extracted in parallel and cached on its own;
* per cell, one **cell task** that depends on its backbone's extraction and runs the cell
  with the local runner's code, so records, predictions and cache entries are the same files
  a local run writes, written atomically.

Results and the feature cache must live on storage every worker can reach (a shared file
system path is enough). A task that fails fails only its cells; a worker that dies is retried
by Ray (``max_retries``) and the retry resumes from the cache; a killed driver is resumed by
running the same command again, which skips every cell whose current record exists. The
leaderboard is written once, at the end, by the driver. Ray is imported only here, so the
local path never pays for it.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from .errors import UserError
from .records import load_record
from .registry import Registry
from .run_events import RunEvents
from .runner import Cell, CellOutcome, Runner, _outcome_from_record

RegistryBuilder = Callable[[], Registry]


@dataclass(frozen=True)
class RayOptions:
    """How the plan is spread over the cluster.

    ``address``: an existing cluster (``"auto"``, ``"ray://host:10001"``, ``"host:6379"``);
    ``None`` starts a local one for the run, limited to ``num_cpus`` (default: this machine's
    cores). ``gpus_per_task``: GPUs each extraction and training task asks for (default: 1
    where the cluster has GPUs and the run's device is not ``cpu``, else 0). ``cpus_per_task``:
    CPUs each task asks for (their decode workers and torch threads). ``max_retries``: retries
    of a task whose worker died."""

    address: str | None = None
    num_cpus: int | None = None
    gpus_per_task: float | None = None
    cpus_per_task: float = 1.0
    max_retries: int = 3


def run_on_ray(
    build_registry: RegistryBuilder,
    config: RunConfig,
    options: RayOptions | None = None,
    events: RunEvents | None = None,
) -> list[CellOutcome]:
    """Run ``config``'s plan on a Ray cluster and return one outcome per cell, in plan order.

    ``build_registry`` builds the plugin registry; it is sent to every worker (a module-level
    function such as ``medfm.plugins.load_registry`` is sent by reference, so each worker needs
    medfm and the plugins installed, as a local cluster has)."""
    ray = _import_ray()
    options = options or RayOptions()
    events = events or RunEvents()
    driver = Runner(build_registry(), config, events)
    cells = driver.plan()
    driver.check(cells)
    driver.prepare(cells)
    started_here = _connect(ray, options)
    try:
        return _run(ray, driver, build_registry, config, cells, options, events)
    finally:
        if started_here:
            ray.shutdown()


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise UserError(
            "the Ray executor needs Ray: pip install 'medfm[ray]' (or run without --executor ray)"
        ) from None
    return ray


def _connect(ray: Any, options: RayOptions) -> bool:
    """Join the named cluster, or start a local one; True when this call started it."""
    if ray.is_initialized():
        return False
    # a local cluster's workers import what the driver imports (plugins outside site-packages
    # too); a remote cluster's nodes have their own environment, which must hold medfm and the plugins
    env = {"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}}
    try:
        if options.address:
            ray.init(address=options.address, log_to_driver=False)
        else:
            ray.init(
                num_cpus=options.num_cpus or os.cpu_count() or 1,
                include_dashboard=False,
                runtime_env=env,
                log_to_driver=False,
            )
    except Exception as exc:  # a wrong address, a cluster that is down
        where = options.address or "a local cluster"
        raise UserError(f"could not connect to Ray at {where}: {exc}; check --address (or leave it out)") from None
    return True


def _run(
    ray: Any,
    driver: Runner,
    build_registry: RegistryBuilder,
    config: RunConfig,
    cells: list[Cell],
    options: RayOptions,
    events: RunEvents,
) -> list[CellOutcome]:
    resources = ray.cluster_resources()
    if options.gpus_per_task is not None:
        gpus = float(options.gpus_per_task)
    else:
        gpus = 1.0 if resources.get("GPU", 0) >= 1 and config.device != "cpu" else 0.0
    plan = ray.put(_Plan(uuid.uuid4().hex, build_registry, _absolute(config, driver), [_names(c) for c in cells]))
    task = {"num_cpus": options.cpus_per_task, "max_retries": options.max_retries}
    extract = ray.remote(_extract_task).options(**task, num_gpus=gpus)
    shard = ray.remote(_shard_task).options(**task, num_gpus=gpus)
    run_cell = ray.remote(_cell_task)

    by_backbone: dict[str, list[Cell]] = {}
    for cell in cells:
        by_backbone.setdefault(cell.backbone.name, []).append(cell)
    events.run_start(len(cells))
    refs: list[Any] = []
    for group in by_backbone.values():
        pairs = list({c.dataset.name: c for c in group}.values())  # one cell per data set
        shard_refs = [
            shard.remote(plan, _names(cell), split, start, stop)
            for cell in pairs
            for split, start, stop in _shards(driver, cell)
        ]
        extracted = extract.remote(plan, [_names(c) for c in pairs], *shard_refs)
        for cell in group:
            trains = bool({"trainable", "masks"} & set(cell.protocol.needs))
            refs.append(run_cell.options(**task, num_gpus=gpus if trains else 0).remote(plan, _names(cell), extracted))
    outcomes = _gather(ray, cells, refs, events)
    if driver.writes:
        try:
            driver.refresh_leaderboard()
        except OSError as exc:
            events.log(f"the leaderboard was not updated: {exc}; run `medfm leaderboard` later")
    return outcomes


def _absolute(config: RunConfig, driver: Runner) -> RunConfig:
    """The config with every folder absolute: a worker's working directory is not the driver's."""
    base = Path(config.base_dir).resolve()
    return replace(
        config,
        base_dir=str(base),
        results_dir=str(driver.results_dir.resolve()),
        cache_dir=str(driver.cache.root.resolve()),
        leaderboard=str(config.path(config.leaderboard).resolve()),
    )


def _shards(driver: Runner, cell: Cell) -> list[tuple[str, int, int]]:
    """The shards of the cell's data set's long splits (none for splits of one shard)."""
    try:
        sizes = driver.split_sizes(cell)
    except Exception:
        return []  # the data set fails to load: its cells say why
    out = []
    for split, n in sizes.items():
        ranges = driver.shard_ranges(n)
        if len(ranges) > 1:
            out += [(split, start, stop) for start, stop in ranges]
    return out


def _gather(ray: Any, cells: list[Cell], refs: list[Any], events: RunEvents) -> list[CellOutcome]:
    """Outcomes in plan order, reported as they finish; a lost task fails only its cell."""
    outcomes: dict[int, CellOutcome] = {}
    index = {ref: i for i, ref in enumerate(refs)}
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            i = index[ref]
            try:
                outcome = _outcome(cells[i], ray.get(ref))
            except Exception as exc:  # the worker died more often than max_retries, or Ray failed
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                outcome = CellOutcome(
                    cells[i], "error", message=f"Ray task lost: {first}; run the same command again to resume"
                )
            outcomes[i] = outcome
            events.cell_end(outcome)
    return [outcomes[i] for i in range(len(cells))]


def _outcome(cell: Cell, result: dict[str, Any]) -> CellOutcome:
    path = Path(result["record_path"]) if result.get("record_path") else None
    if result["status"] in ("ok", "cached") and path is not None:
        outcome = _outcome_from_record(cell, result["status"], path, load_record(path))
        outcome.seconds = result["seconds"]
        return outcome
    return CellOutcome(cell, result["status"], path, seconds=result["seconds"], message=result["message"])


# ---------------------------------------------------------------------------- on the workers
Names = tuple[str, str, str]


@dataclass(frozen=True)
class _Plan:
    """What every task needs to rebuild the driver's runner: sent once, shared by reference."""

    token: str
    build_registry: RegistryBuilder
    config: RunConfig
    cells: list[Names]


def _names(cell: Cell) -> Names:
    return (cell.backbone.name, cell.dataset.name, cell.protocol.name)


_WORKER: dict[str, Any] = {}  # this worker process's runner, kept across tasks of one run


def _worker_runner(plan: _Plan) -> tuple[Runner, dict[Names, Cell]]:
    """The runner of this worker process for ``plan``: built once, so a model loaded by one task
    serves the next task of the same backbone on this worker."""
    if _WORKER.get("token") != plan.token:
        _WORKER.clear()
        runner = Runner(plan.build_registry(), plan.config, RunEvents())
        cells = {_names(c): c for c in runner.plan()}
        runner.prepare([cells[n] for n in plan.cells if n in cells])
        _WORKER.update(token=plan.token, runner=runner, cells=cells, backbone=None)
    return _WORKER["runner"], _WORKER["cells"]


def _use_backbone(runner: Runner, name: str) -> None:
    """Keep one model in this worker's memory: the one its current task needs."""
    previous = _WORKER.get("backbone")
    if previous is not None and previous != name:
        runner._release_backbone(previous)
    _WORKER["backbone"] = name


def _shard_task(plan: _Plan, names: Names, split: str, start: int, stop: int) -> str | None:
    """Cache shard ``start:stop`` of ``split``; an error is returned, not raised, so the
    extraction and the cells still run (and report it in their records)."""
    try:
        runner, cells = _worker_runner(plan)
        _use_backbone(runner, names[0])
        runner.prefetch(cells[names], split, (start, stop))
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"


def _extract_task(plan: _Plan, pairs: list[Names], *shards: str | None) -> list[str]:
    """Fill the cache for one backbone on each of its data sets (the shards are cached by now)."""
    errors = [s for s in shards if s]
    runner, cells = _worker_runner(plan)
    for names in pairs:
        try:
            _use_backbone(runner, names[0])
            runner.prefetch(cells[names])
        except Exception as exc:  # the cells of this pair meet the same error and record it
            errors.append(f"{names[1]}: {type(exc).__name__}: {exc}")
    return errors


def _cell_task(plan: _Plan, names: Names, extracted: list[str]) -> dict[str, Any]:
    """Run one cell with the local runner's code; its record is the file a local run writes."""
    start = time.perf_counter()
    runner, cells = _worker_runner(plan)
    _use_backbone(runner, names[0])
    outcome = runner.run_cell(cells[names])
    return {
        "status": outcome.status,
        "record_path": str(outcome.record_path) if outcome.record_path else None,
        "message": outcome.message,
        "seconds": time.perf_counter() - start,
    }

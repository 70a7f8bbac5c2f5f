"""Running a plan and reading its results from Python: for notebooks and scripts.

The command line is a thin layer over the same objects; here they are wrapped so that a study
is three lines::

    from medfm.api import run_benchmark, records_frame
    records = run_benchmark(["timm/vit_small_patch14_dinov2"], ["medmnist/breastmnist"], ["knn"])
    table = records_frame(records)          # one row per record, pandas
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from .config import RunConfig
from .errors import UserError

if TYPE_CHECKING:
    import pandas

    from .registry import Registry
    from .run_events import RunEvents


def run_benchmark(
    backbones: Sequence[str],
    datasets: Sequence[str],
    protocols: Sequence[str],
    *,
    options: Mapping[str, Mapping[str, Mapping[str, Any]]] | None = None,
    registry: Registry | None = None,
    events: RunEvents | None = None,
    **settings: Any,
) -> list[dict[str, Any]]:
    """Run backbones x datasets x protocols and return the record of every cell, in plan order.

    ``options`` maps ``"backbone" | "dataset" | "protocol"`` to ``{name or glob: {option: value}}``,
    as the run file's tables do. ``settings`` are the other ``RunConfig`` fields (``seed``,
    ``device``, ``results_dir``, ``cache_dir``, ``leaderboard``, ``bootstrap``, ``rerun``, ...).
    Cells that are up to date are not recomputed; a cell that failed returns its error record
    (``status == "error"``). Names and options are checked before anything runs, as ``medfm run``
    does, so a mistake raises ``UserError`` at once.
    """
    from .records import load_record
    from .registry import load_registry
    from .runner import Runner

    config = RunConfig(backbones=list(backbones), datasets=list(datasets), protocols=list(protocols), **settings)
    for kind, tables in (options or {}).items():
        if kind not in config.options:
            raise UserError(f"options for {kind!r}: the kinds are {', '.join(config.options)}")
        config.options[kind] = {name: dict(values) for name, values in tables.items()}
    runner = Runner(registry or load_registry(), config, events)
    outcomes = runner.run(runner.plan())
    records = []
    for outcome in outcomes:
        if outcome.record_path is None:
            raise UserError(f"{outcome.cell.label}: no record was written ({outcome.message or outcome.status})")
        records.append(load_record(outcome.record_path))
    return records


def verified_records(results_dir: str | Path = "results", registry: Registry | None = None) -> list[dict[str, Any]]:
    """Every record under ``results_dir`` that verifies (numbers recomputed from its predictions),
    as ``medfm validate`` checks them; rejected files are left out (``scan_results`` says why)."""
    from .registry import load_registry
    from .verification import KnownSpecs, scan_results

    folder = Path(results_dir)
    if not folder.is_dir():
        raise UserError(f"{folder}: no such results folder")
    scan = scan_results(folder, KnownSpecs.from_registry(registry or load_registry()))
    return [c.record for c in scan.valid if c.record is not None]


COLUMNS = (
    "backbone", "dataset", "protocol", "seed", "submitter", "status", "metric", "value", "ci_low", "ci_high",
    "n_test", "test_identity", "flags", "protocol_version", "backbone_params", "objective", "config_hash",
)  # fmt: skip


def _row(record: Mapping[str, Any]) -> dict[str, Any]:
    metric = record.get("primary_metric")
    value = ((record.get("metrics") or {}).get(metric or "") or {}) if metric else {}
    backbone, test_set = record.get("backbone") or {}, record.get("test_set") or {}
    return {
        "backbone": backbone.get("name"),
        "dataset": (record.get("dataset") or {}).get("name"),
        "protocol": (record.get("protocol") or {}).get("name"),
        "seed": (record.get("submission") or {}).get("seed", record.get("seed")),
        "submitter": (record.get("submission") or {}).get("submitter"),
        "status": record.get("status"),
        "metric": metric,
        "value": value.get("value"),
        "ci_low": value.get("ci_low"),
        "ci_high": value.get("ci_high"),
        "n_test": test_set.get("n"),
        "test_identity": test_set.get("identity"),
        "flags": ",".join(record.get("flags") or []),
        "protocol_version": (record.get("protocol") or {}).get("version"),
        "backbone_params": backbone.get("params"),
        "objective": backbone.get("objective"),
        "config_hash": record.get("config_hash"),
    }


def records_frame(records: Iterable[Mapping[str, Any]] | str | Path) -> pandas.DataFrame:
    """One row per record: names, seed, submitter, status, the primary metric with its 95% CI,
    test-set size and identity, flags. ``records`` is a list of records or a results folder
    (read through :func:`verified_records`). Every metric of a record is also a column
    ``metric:<name>``, so ``frame.pivot_table(index="backbone", columns="dataset", values="value")``
    gives the leaderboard's grid and ``groupby([...]).value.agg(["mean", "std", "count"])`` the spread
    over seeds."""
    import pandas as pd

    if isinstance(records, (str, Path)):
        records = verified_records(records)
    rows = []
    for record in records:
        row = _row(record)
        for name, metric in sorted((record.get("metrics") or {}).items()):
            row[f"metric:{name}"] = metric.get("value") if isinstance(metric, Mapping) else metric
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=list(COLUMNS))
    return frame

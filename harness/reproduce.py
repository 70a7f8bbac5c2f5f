"""``medfm verify --sample N``: re-run submitted cells and check that their numbers reproduce.

``medfm validate`` proves a record is consistent with its predictions; only running the cell
again proves the predictions came from the stated backbone, data and protocol. A maintainer
runs this before merging: N records chosen at random (seeded) among those whose data set and
weights are available on this machine are re-run with the record's own seed and options (local
paths from the run file or ``--set``), into a scratch folder, and every metric is compared
within a tolerance. A record whose plugins, data or weights are not here is reported as
unavailable and another is drawn.
"""

from __future__ import annotations

import copy
import math
import random
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .config import RunConfig
from .portable import is_path_key
from .registry import Registry
from .verification import Checked, Scan

DEFAULT_TOLERANCE = 0.01


@dataclass
class MetricCheck:
    """One metric: what the record says, what the re-run gave."""

    name: str
    claimed: float | None
    reproduced: float | None
    tolerance: float

    @property
    def ok(self) -> bool:
        """Equal within the tolerance (both undefined counts as equal)."""
        if self.claimed is None or self.reproduced is None:
            return self.claimed is None and self.reproduced is None
        return abs(self.claimed - self.reproduced) <= self.tolerance


@dataclass
class Reproduction:
    """The outcome for one record: reproduced, differs, unavailable or failed."""

    relpath: str
    status: str
    reason: str = ""
    metrics: list[MetricCheck] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "record": self.relpath,
            "status": self.status,
            "reason": self.reason,
            "seconds": round(self.seconds, 2),
            "metrics": [
                {"name": m.name, "claimed": m.claimed, "reproduced": m.reproduced, "tolerance": m.tolerance, "ok": m.ok}
                for m in self.metrics
            ],
        }


def _options(record_options: dict[str, Any] | None, local: dict[str, Any]) -> dict[str, Any]:
    """The record's options without its (redacted) paths, with this machine's paths."""
    merged = {k: v for k, v in (record_options or {}).items() if not is_path_key(k)}
    merged.update(local)
    return merged


def cell_config(record: dict[str, Any], base: RunConfig, scratch: Path) -> RunConfig:
    """A run config that repeats ``record``'s cell here (seed, options, resamples)."""
    cfg = copy.deepcopy(base)
    b, d, p = record["backbone"]["name"], record["dataset"]["name"], record["protocol"]["name"]
    cfg.backbones, cfg.datasets, cfg.protocols = [b], [d], [p]
    cfg.seed = int(record["submission"]["seed"])
    cfg.bootstrap = int((record.get("ci") or {}).get("resamples") or 0)
    cfg.results_dir = str(scratch / "results")
    cfg.leaderboard = str(scratch / "leaderboard.md")
    cfg.submitter = "verify"
    cfg.rerun = True
    rc = record["config"]
    resize = ((rc.get("backbone") or {}).get("options") or {}).get("resize")
    cfg.resize = resize if isinstance(resize, str) else None
    cfg.options = {kind: {} for kind in ("backbone", "dataset", "protocol")}
    cfg.options["backbone"][b] = _options((rc.get("backbone") or {}).get("options"), base.options_for("backbone", b))
    cfg.options["dataset"][d] = _options((rc.get("dataset") or {}).get("options"), base.options_for("dataset", d))
    cfg.options["protocol"][p] = {k: v for k, v in ((rc.get("protocol") or {}).get("options") or {}).items()}
    return cfg


def _availability(runner: Any, cell: Any, record: dict[str, Any]) -> str | None:
    """Why this cell cannot be re-run here (``None`` when it can)."""
    if str(cell.protocol.version) != str(record["protocol"]["version"]):
        stated = record["protocol"]["version"]
        return f"protocol {cell.protocol.name} is v{cell.protocol.version} here, v{stated} in the record"
    if str(cell.dataset.revision) != str(record["dataset"]["revision"]):
        return f"data set {cell.dataset.name} is revision {cell.dataset.revision} here"
    try:
        dataset = runner._dataset(cell.dataset)
    except Exception as exc:
        return f"data set not available here ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    if dataset.fingerprint != record["dataset"].get("fingerprint"):
        return "the data set's files here differ from the record's (fingerprint)"
    try:
        backbone = runner._backbone(cell.backbone)
    except Exception as exc:
        return f"backbone not available here ({type(exc).__name__}: {' '.join(str(exc).split())[:160]})"
    want = record["backbone"].get("weights_sha256")
    if want is not None and backbone.weights_sha256 != want:
        return "the weights here differ from the record's (sha256)"
    return None


def reproduce(checked: Checked, registry: Registry, base: RunConfig, tolerance: float, scratch: Path) -> Reproduction:
    """Re-run one record's cell and compare its metrics."""
    import time

    from .errors import UserError
    from .runner import Cell, Runner

    record = checked.verified_record
    start = time.perf_counter()
    try:
        cfg = cell_config(record, base, scratch)
        runner = Runner(registry, cfg)
        cells = runner.plan()
    except (UserError, KeyError, ValueError) as exc:
        return Reproduction(checked.relpath, "unavailable", f"cannot be planned here: {exc}")
    cell: Cell = cells[0]
    missing = _availability(runner, cell, record)
    if missing is not None:
        return Reproduction(checked.relpath, "unavailable", missing)
    outcome = runner.run_cell(cell)
    seconds = time.perf_counter() - start
    if outcome.status != "ok":
        return Reproduction(checked.relpath, "failed", outcome.message, seconds=seconds)
    from .records import load_record

    assert outcome.record_path is not None  # an ok outcome names its record
    again = load_record(outcome.record_path)
    if again["test_set"]["identity"] != record["test_set"]["identity"]:
        return Reproduction(checked.relpath, "differs", "the re-run used another test set", seconds=seconds)
    checks = [
        MetricCheck(name, claimed.get("value"), (again["metrics"].get(name) or {}).get("value"), tolerance)
        for name, claimed in sorted(record["metrics"].items())
    ]
    bad = [m for m in checks if not m.ok]
    status = "reproduced" if not bad else "differs"
    reason = "" if not bad else "; ".join(f"{m.name} {m.claimed} vs {m.reproduced}" for m in bad[:3])
    return Reproduction(checked.relpath, status, reason, checks, seconds)


def reproduce_sample(
    scan: Scan,
    registry: Registry,
    base: RunConfig,
    n: int,
    seed: int = 0,
    tolerance: float = DEFAULT_TOLERANCE,
    scratch: Path | None = None,
    progress: Callable[[Reproduction], None] = lambda r: None,
) -> list[Reproduction]:
    """Draw verified ok records at random (seeded) and re-run them until ``n`` were available."""
    pool = sorted((c for c in scan.valid if c.verified_record["status"] == "ok"), key=lambda c: c.relpath)
    random.Random(seed).shuffle(pool)
    out: list[Reproduction] = []
    done = 0
    with tempfile.TemporaryDirectory(prefix="medfm-verify-") as tmp:
        root = Path(scratch) if scratch is not None else Path(tmp)
        for i, checked in enumerate(pool):
            if done >= n:
                break
            result = reproduce(checked, registry, base, tolerance, root / f"cell{i}")
            out.append(result)
            progress(result)
            if result.status != "unavailable":
                done += 1
    return out


def max_difference(result: Reproduction) -> float:
    """The largest |claimed − reproduced| over the metrics (0 when none)."""
    diffs = [
        abs(m.claimed - m.reproduced) for m in result.metrics if m.claimed is not None and m.reproduced is not None
    ]
    return max(diffs) if diffs else (0.0 if result.metrics else math.nan)

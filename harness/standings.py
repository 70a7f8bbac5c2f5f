"""The leaderboard as data: verified records grouped into tables, rows, columns and ranks.

``build_standings`` turns a ``Scan`` of verified records into ``Standings``, which both the
markdown leaderboard and the web page render. The rules, in order:

- **Trust.** A record is ranked only if its protocol and data set come from a trusted
  distribution (medfm itself plus the ``trusted_distributions`` of ``leaderboard.toml``) *and*
  the installed plugins agree: the claimed distribution provides that name at that version.
  Everything else goes to the *unverified* section, shown but never ranked.
- **Tables** are per protocol (name, version, distribution). **Columns** are keyed by data set,
  test-set identity and primary metric: a record on another test set gets its own column,
  labelled with its size and identity. **Rows** are keyed by backbone name, weights sha256 and
  the options that change numbers (protocol and backbone options, paths excluded).
- **Replicates**: all rankable records of one (row, column), usually one per seed, are
  averaged; the spread and n are shown.
- **Ranks**: rows covering the same columns form a block (complete rows first); within a block
  rows are ordered by the mean primary metric over the columns, equal values share a rank, and
  every pair of rows is compared by a paired bootstrap on the stored predictions (cases, or
  patients, resampled jointly within each column), Holm-corrected over the block. A row's rank
  group is the range of ranks it could take: from 1 + the rows significantly better to the block
  size − the rows significantly worse.
- Records with flags, fewer than 1000 resamples or no intervals are listed with their reasons,
  never ranked; small test sets and wide intervals are marked.
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from .errors import UserError
from .io import sha256_json
from .paired import ALPHA, COMPARISON_RESAMPLES, PairedResult, holm, metric_draws, paired_difference, resampling_weights
from .portable import hash_view
from .predictions import Predictions
from .verification import Checked, KnownSpecs, Scan

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

POLICY_FILE = "leaderboard.toml"
HARNESS_DISTRIBUTION = "medfm"


@dataclass(frozen=True)
class Policy:
    """What the ranked tables trust, and how rows are compared (``leaderboard.toml``)."""

    trusted_distributions: tuple[str, ...] = (HARNESS_DISTRIBUTION,)
    comparison_resamples: int = COMPARISON_RESAMPLES
    alpha: float = ALPHA

    def trusts(self, distribution: str | None) -> bool:
        """Whether plugins of ``distribution`` may feed ranked tables."""
        return distribution is not None and distribution in self.trusted_distributions


def load_policy(folder: str | Path, path: str | Path | None = None) -> Policy:
    """``leaderboard.toml`` in ``folder`` (or ``path``); the defaults where there is none."""
    file = Path(path) if path is not None else Path(folder) / POLICY_FILE
    if not file.is_file():
        if path is not None:
            raise UserError(f"{file}: no such leaderboard policy file")
        return Policy()
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{file} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"trusted_distributions", "comparison_resamples", "alpha"})
    if unknown:
        raise UserError(f"{file}: unknown keys {unknown}; use trusted_distributions, comparison_resamples, alpha")
    trusted = data.get("trusted_distributions", [])
    if not isinstance(trusted, list) or not all(isinstance(t, str) and t for t in trusted):
        raise UserError(f"{file}: trusted_distributions must be a list of distribution names")
    resamples = data.get("comparison_resamples", COMPARISON_RESAMPLES)
    alpha = data.get("alpha", ALPHA)
    if not isinstance(resamples, int) or not 200 <= resamples <= 100_000:
        raise UserError(f"{file}: comparison_resamples must be an integer from 200 to 100000")
    if not isinstance(alpha, float) or not 0 < alpha < 0.5:
        raise UserError(f"{file}: alpha must be a number between 0 and 0.5")
    return Policy(tuple(dict.fromkeys([HARNESS_DISTRIBUTION, *trusted])), resamples, alpha)


# ------------------------------------------------------------------ the model
@dataclass
class Column:
    """One data set on one test set, ranked by one metric."""

    key: tuple[str, str, str]
    dataset: str
    identity: str
    metric: str
    n_cases: int
    label: str = ""
    published: bool | None = None
    distribution: str | None = None
    modality: str = ""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "id": column_id(self.key),
            "dataset": self.dataset,
            "identity": self.identity,
            "metric": self.metric,
            "n_cases": self.n_cases,
            "label": self.label,
            "published": self.published,
            "distribution": self.distribution,
            "modality": self.modality,
        }


def column_id(key: tuple[str, str, str]) -> str:
    """A short stable id for a column key."""
    return sha256_json(list(key))[:12]


SEGMENTATION_ALONGSIDE = ("nsd", "hd95")


@dataclass
class CellView:
    """One (row, column): its rankable replicates and the records that are only shown."""

    rankable: list[Checked] = field(default_factory=list)
    shown: list[Checked] = field(default_factory=list)  # verified but unranked (flags, few resamples)
    errors: list[Checked] = field(default_factory=list)
    draws: np.ndarray | None = field(default=None, repr=False)  # bootstrap of the replicate mean
    held_back: str | None = None  # why replicates that verified are not ranked either

    @property
    def values(self) -> list[float]:
        """The primary metric of each rankable replicate."""
        return [_primary(c.verified_record)["value"] for c in self.rankable]

    @property
    def value(self) -> float | None:
        """Mean over replicates (``None`` when nothing here is rankable)."""
        v = self.values
        return float(np.mean(v)) if v else None

    @property
    def alongside(self) -> dict[str, float]:
        """Metrics shown beside the primary one, means over the rankable replicates: for
        segmentation, NSD and HD95 next to Dice (empty for other tasks)."""
        out: dict[str, float] = {}
        if not self.rankable or self.rankable[0].verified_record["dataset"].get("task") != "segmentation":
            return out
        for name in SEGMENTATION_ALONGSIDE:
            vals = [(c.verified_record["metrics"].get(name) or {}).get("value") for c in self.rankable]
            known = [float(v) for v in vals if v is not None]
            if len(known) == len(vals):
                out[name] = float(np.mean(known))
        return out

    @property
    def sd(self) -> float | None:
        """Standard deviation over replicates (n > 1)."""
        v = self.values
        return float(np.std(v, ddof=1)) if len(v) > 1 else None

    @property
    def interval(self) -> tuple[float | None, float | None]:
        """The 95% interval: the record's own for one replicate; for several, the percentile interval
        of their mean under the column's shared resampling (``cell_draws``)."""
        if len(self.rankable) == 1:
            p = _primary(self.rankable[0].verified_record)
            return p.get("ci_low"), p.get("ci_high")
        if self.draws is None:
            return None, None
        finite = self.draws[np.isfinite(self.draws)]
        if not len(finite):
            return None, None
        lo, hi = np.percentile(finite, [2.5, 97.5])
        return float(lo), float(hi)

    @property
    def warnings(self) -> list[str]:
        """Warnings of the rankable replicates (small test set, wide interval)."""
        return sorted({w for c in self.rankable for w in c.warnings})

    @property
    def reasons(self) -> list[str]:
        """Why nothing here is ranked (empty when something is)."""
        if self.rankable:
            return []
        if self.shown:
            return ([self.held_back] if self.held_back else []) + sorted({r for c in self.shown for r in c.unranked})
        return ["error: " + _error_line(c.verified_record) for c in self.errors][:1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        lo, hi = self.interval
        return {
            "value": _r(self.value),
            "sd": _r(self.sd),
            "n": len(self.rankable),
            "ci_low": _r(lo),
            "ci_high": _r(hi),
            "alongside": {k: _r(v) for k, v in self.alongside.items()},
            "warnings": self.warnings,
            "reasons": self.reasons,
            "values": [_r(v) for v in self.values],
            "seeds": [c.verified_record["submission"]["seed"] for c in self.rankable],
            "submitters": sorted({c.verified_record["submission"]["submitter"] for c in self.rankable + self.shown}),
            "shown_values": [_r(_primary(c.verified_record)["value"]) for c in self.shown],
            "records": [c.relpath for c in self.rankable + self.shown + self.errors],
            "error": bool(self.errors and not self.rankable and not self.shown),
        }


@dataclass
class Row:
    """One backbone (with its weights and options) across a table's columns."""

    key: tuple[str, str | None, str]
    backbone: str
    weights_sha256: str | None
    variant: str
    params: int | None = None
    objective: str = ""
    distribution: str | None = None
    label: str = ""
    cells: dict[tuple[str, str, str], CellView] = field(default_factory=dict)
    mean: float | None = None
    rank: int | None = None
    rank_low: int | None = None
    rank_high: int | None = None
    vs_next: PairedResult | None = None

    @property
    def coverage(self) -> frozenset:
        """The columns where this row has a rankable value."""
        return frozenset(k for k, c in self.cells.items() if c.value is not None)

    @property
    def group(self) -> str:
        """The rank group, e.g. ``1-3``, or the rank alone when it is separated from every other row."""
        if self.rank_low is None:
            return ""
        return str(self.rank_low) if self.rank_low == self.rank_high else f"{self.rank_low}–{self.rank_high}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "backbone": self.backbone,
            "label": self.label,
            "weights_sha256": self.weights_sha256,
            "variant": self.variant,
            "params": self.params,
            "objective": self.objective,
            "distribution": self.distribution,
            "mean": _r(self.mean),
            "rank": self.rank,
            "rank_low": self.rank_low,
            "rank_high": self.rank_high,
            "group": self.group,
            "vs_next": self.vs_next.as_dict() if self.vs_next else None,
            "cells": {column_id(k): c.as_dict() for k, c in self.cells.items()},
        }


@dataclass
class Block:
    """Rows covering the same columns, ranked among themselves."""

    columns: list[tuple[str, str, str]]
    rows: list[Row]
    complete: bool
    comparisons: list[tuple[str, str, PairedResult]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "columns": [column_id(k) for k in self.columns],
            "complete": self.complete,
            "rows": [r.as_dict() for r in self.rows],
            "comparisons": [{"a": a, "b": b, **p.as_dict()} for a, b, p in self.comparisons],
        }


@dataclass
class Table:
    """One protocol's results in one section (ranked or unverified)."""

    section: str
    protocol: str
    version: str
    distribution: str | None
    columns: list[Column]
    blocks: list[Block]
    unranked: list[Row]
    trust_notes: list[str] = field(default_factory=list)
    synthetic: bool = False

    @property
    def title(self) -> str:
        """``knn v2`` (plus the distribution outside the harness)."""
        dist = "" if self.distribution == HARNESS_DISTRIBUTION else f" from {self.distribution or 'unknown'}"
        return f"{self.protocol} v{self.version}{dist}"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {
            "section": self.section,
            "protocol": self.protocol,
            "version": self.version,
            "distribution": self.distribution,
            "title": self.title,
            "synthetic": self.synthetic,
            "columns": [c.as_dict() for c in self.columns],
            "blocks": [b.as_dict() for b in self.blocks],
            "unranked": [r.as_dict() for r in self.unranked],
            "trust_notes": self.trust_notes,
        }


@dataclass
class Standings:
    """Everything the leaderboard shows."""

    tables: list[Table]
    rejected: list[tuple[str, str]]
    policy: Policy
    records: int = 0

    def section(self, name: str, synthetic: bool | None = None) -> list[Table]:
        """The tables of one section (``ranked`` or ``unverified``), optionally only real or synthetic data."""
        return [t for t in self.tables if t.section == name and (synthetic is None or t.synthetic == synthetic)]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (the web page's data and ``--json`` output)."""
        return {
            "policy": {
                "trusted_distributions": list(self.policy.trusted_distributions),
                "comparison_resamples": self.policy.comparison_resamples,
                "alpha": self.policy.alpha,
            },
            "records": self.records,
            "tables": [t.as_dict() for t in self.tables],
            "rejected": [{"path": p, "reason": r} for p, r in self.rejected],
        }


# ------------------------------------------------------------------ building
def _primary(record: dict[str, Any]) -> dict[str, Any]:
    return record["metrics"].get(record["primary_metric"]) or {}


def _r(v: float | None) -> float | None:
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _error_line(record: dict[str, Any]) -> str:
    err = record.get("error") or {}
    return " ".join(f"{err.get('type', 'Error')}: {err.get('message', '')}".split())[:200]


def trust_problem(record: dict[str, Any], known: KnownSpecs, policy: Policy) -> str | None:
    """Why a verified record may not feed a ranked table (``None`` when it may)."""
    for kind, version_key in (("protocol", "version"), ("dataset", "revision")):
        part = record[kind]
        claimed = part["plugin"].get("distribution")
        name = part["name"]
        if not policy.trusts(claimed):
            return f"{kind} {name!r} comes from {claimed or 'an unnamed distribution'}, which is not trusted"
        installed = known.provider(kind, name)
        if installed is None:
            return f"the installed plugins provide no {kind} {name!r}, so its claimed source cannot be checked"
        dist, version = installed
        if dist != claimed:
            return f"{kind} {name!r} is installed from {dist or 'an unnamed distribution'}, not {claimed}"
        if version != str(part[version_key]):
            return f"{kind} {name!r} {version_key} {part[version_key]} is not the installed {version}"
    return None


def row_key(record: dict[str, Any]) -> tuple[str, str | None, str]:
    """(backbone, weights sha256, options variant): what makes two records the same model."""
    config = record["config"]
    options = {
        "protocol": (config.get("protocol") or {}).get("options"),
        "backbone": (config.get("backbone") or {}).get("options"),
    }
    return record["backbone"]["name"], record["backbone"].get("weights_sha256"), sha256_json(hash_view(options))[:8]


def column_key(record: dict[str, Any]) -> tuple[str, str, str]:
    """(data set, test-set identity, primary metric)."""
    return record["dataset"]["name"], record["test_set"]["identity"], record["primary_metric"]


def build_standings(scan: Scan, known: KnownSpecs | None = None, policy: Policy | None = None) -> Standings:
    """The leaderboard model of a scan (see the module docstring)."""
    known = known or KnownSpecs()
    policy = policy or Policy()
    groups: dict[tuple[str, bool, str, str, str | None], list[tuple[Checked, str | None]]] = defaultdict(list)
    for c in scan.valid:
        r = c.verified_record
        problem = trust_problem(r, known, policy)
        section = "ranked" if problem is None else "unverified"
        facts = known.dataset(r["dataset"]["name"])
        synthetic = bool(facts and facts.synthetic)  # from the installed plugin, never from the record
        groups[
            (
                section,
                synthetic,
                r["protocol"]["name"],
                str(r["protocol"]["version"]),
                r["protocol"]["plugin"].get("distribution"),
            )
        ].append((c, problem))
    columns = _columns(scan, known)
    tables = [
        _table(key, members, columns, policy)
        for key, members in sorted(
            groups.items(), key=lambda kv: (kv[0][0] != "ranked", kv[0][1], kv[0][2], kv[0][3], str(kv[0][4]))
        )
    ]
    tables = [t for t in tables if t.columns or t.unranked]
    rejected = [(c.relpath, c.problem or "") for c in scan.rejected]
    return Standings(tables, rejected, policy, records=len(scan.valid))


def _columns(scan: Scan, known: KnownSpecs) -> dict[tuple[str, str, str], Column]:
    """Every column of every ok record, labelled so that different test sets look different."""
    cols: dict[tuple[str, str, str], Column] = {}
    for c in scan.valid:
        r = c.verified_record
        if r["status"] != "ok":
            continue
        key = column_key(r)
        if key not in cols:
            facts = known.dataset(key[0])
            published = None if facts is None or facts.test_identity is None else facts.test_identity == key[1]
            cols[key] = Column(
                key,
                key[0],
                key[1],
                key[2],
                int(r["test_set"]["n"]),
                published=published,
                distribution=r["dataset"]["plugin"].get("distribution"),
                modality=str(r["dataset"].get("modality") or ""),
            )
    by_name: dict[str, list[Column]] = defaultdict(list)
    for col in cols.values():
        by_name[col.dataset].append(col)
    for name, same in by_name.items():
        identities = {c.identity for c in same}
        for col in same:
            plain = len(identities) == 1 or col.published is True
            suffix = "" if plain else f" · test n={col.n_cases} #{col.identity[:6]}"
            metric_clash = len({c.metric for c in same if c.identity == col.identity}) > 1
            col.label = name + suffix + (f" ({col.metric})" if metric_clash else "")
    return cols


def _table(
    key: tuple[str, bool, str, str, str | None],
    members: list[tuple[Checked, str | None]],
    all_columns: dict[tuple[str, str, str], Column],
    policy: Policy,
) -> Table:
    section, synthetic, protocol, version, distribution = key
    rows: dict[tuple, Row] = {}
    used: set[tuple[str, str, str]] = set()
    notes = sorted({p for _, p in members if p})
    for c, _ in members:
        r = c.verified_record
        rk = row_key(r)
        row = rows.get(rk)
        if row is None:
            row = rows[rk] = Row(
                rk,
                rk[0],
                rk[1],
                rk[2],
                params=r["backbone"].get("params"),
                objective=str(r["backbone"].get("objective") or ""),
                distribution=r["backbone"]["plugin"].get("distribution"),
            )
        if r["status"] != "ok":
            # an error shows only where no result exists; it never replaces one
            ck = _error_column(r, all_columns)
            if ck is not None:
                row.cells.setdefault(ck, CellView()).errors.append(c)
                used.add(ck)
            continue
        ck = column_key(r)
        used.add(ck)
        cell = row.cells.setdefault(ck, CellView())
        (cell.shown if c.unranked else cell.rankable).append(c)
    for row in rows.values():
        for cell in row.cells.values():
            _hold_back_flagged_cells(cell)
    columns = sorted((all_columns[k] for k in used), key=lambda col: (col.label, col.identity))
    _label_rows(list(rows.values()))
    ranked_rows = [row for row in rows.values() if row.coverage]
    unranked = sorted((row for row in rows.values() if not row.coverage), key=lambda r: r.label)
    blocks = _blocks(ranked_rows, [c.key for c in columns], all_columns, policy, rank=section == "ranked")
    return Table(section, protocol, version, distribution, columns, blocks, unranked, notes, synthetic)


def _hold_back_flagged_cells(cell: CellView) -> None:
    """A cell where some replicates are degenerate is not ranked at all: averaging only the seeds
    that worked would overstate the method. (Replicates left out for other reasons, such as too few
    resamples, are simply not replicates.)"""
    flagged = [c for c in cell.shown if c.verified_record.get("flags")]
    if flagged and cell.rankable:
        cell.held_back = f"{len(flagged)} of {len(flagged) + len(cell.rankable)} replicates flagged"
        cell.shown = cell.rankable + cell.shown
        cell.rankable = []


def _error_column(record: dict[str, Any], columns: dict[tuple[str, str, str], Column]) -> tuple[str, str, str] | None:
    """An error record's column: its test set if it reached one, else the data set's only column."""
    if record.get("test_set"):
        key = (record["dataset"]["name"], record["test_set"]["identity"], record.get("primary_metric") or "")
        if key in columns:
            return key
    same = [k for k in columns if k[0] == record["dataset"]["name"]]
    return same[0] if len(same) == 1 else None


def _label_rows(rows: list[Row]) -> None:
    by_name: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        by_name[row.backbone].append(row)
    for name, same in by_name.items():
        weights = {r.weights_sha256 for r in same}
        variants = {r.variant for r in same}
        for row in same:
            parts = [name]
            if len(weights) > 1:
                parts.append(f"weights {(row.weights_sha256 or 'none')[:6]}")
            if len(variants) > 1:
                parts.append(f"options {row.variant[:6]}")
            row.label = " · ".join(parts)


def _blocks(
    rows: list[Row],
    order: list[tuple[str, str, str]],
    columns: dict[tuple[str, str, str], Column],
    policy: Policy,
    rank: bool,
) -> list[Block]:
    by_coverage: dict[frozenset, list[Row]] = defaultdict(list)
    for row in rows:
        by_coverage[row.coverage].append(row)
    full = frozenset(order)
    blocks = []
    for coverage in sorted(by_coverage, key=lambda cv: (cv != full, -len(cv), sorted(columns[k].label for k in cv))):
        members = by_coverage[coverage]
        cols = [k for k in order if k in coverage]
        for row in members:
            row.mean = float(np.mean([row.cells[k].value for k in cols]))
            for k in cols:
                if len(row.cells[k].rankable) > 1:
                    cell_draws(row.cells[k], k, policy)  # the interval of a replicate mean
        members.sort(key=lambda r: (-round(_mean(r), 6), r.label))
        block = Block(cols, members, complete=coverage == full)
        if rank:
            _rank(block, columns, policy)
        blocks.append(block)
    return blocks


def _mean(row: Row) -> float:
    assert row.mean is not None, "a ranked row's mean is set by _blocks"
    return row.mean


def _rank(block: Block, columns: dict[tuple[str, str, str], Column], policy: Policy) -> None:
    rows = block.rows
    previous, rank = None, 0
    for i, row in enumerate(rows):
        value = round(_mean(row), 6)
        if value != previous:
            rank, previous = i + 1, value
        row.rank = rank
    if len(rows) == 1:
        rows[0].rank_low = rows[0].rank_high = 1
        return
    draws = _row_draws(rows, block.columns, columns, policy)
    pairs: list[tuple[int, int, PairedResult]] = []
    for i in range(len(rows)):
        for j in range(i + 1, len(rows)):
            pairs.append((i, j, paired_difference(_mean(rows[i]), _mean(rows[j]), draws[i], draws[j])))
    adjusted = holm([p.p for _, _, p in pairs])
    better = [0] * len(rows)
    worse = [0] * len(rows)
    for (i, j, p), p_holm in zip(pairs, adjusted):
        result = PairedResult(p.difference, p.ci_low, p.ci_high, p.p, p_holm, p.resamples)
        block.comparisons.append((rows[i].label, rows[j].label, result))
        if result.significant(policy.alpha) and result.difference != 0:
            winner, loser = (i, j) if result.difference > 0 else (j, i)
            better[loser] += 1
            worse[winner] += 1
        if j == i + 1:
            rows[i].vs_next = result
    for k, row in enumerate(rows):
        row.rank_low = 1 + better[k]
        row.rank_high = len(rows) - worse[k]


def _predictions(checked: Checked) -> Predictions:
    assert checked.predictions is not None, "a verified ok record holds its predictions"
    return checked.predictions


def cell_draws(cell: CellView, key: tuple[str, str, str], policy: Policy) -> np.ndarray:
    """The bootstrap distribution of a cell's replicate mean (cases, or patients, resampled with the
    column's shared weights, so every row of the column sees the same resamples); memoised on the cell."""
    if cell.draws is None:
        first = _predictions(cell.rankable[0])
        weights = resampling_weights(key[1], len(first.ids), first.groups, policy.comparison_resamples)
        task = cell.rankable[0].verified_record["dataset"]["task"]
        per = [
            metric_draws(task, key[2], _predictions(c).labels, _predictions(c).scores, weights) for c in cell.rankable
        ]
        cell.draws = np.mean(per, axis=0)
    return cell.draws


def _row_draws(
    rows: list[Row], cols: list[tuple[str, str, str]], columns: dict[tuple[str, str, str], Column], policy: Policy
) -> list[np.ndarray]:
    """Each row's bootstrap distribution of its mean over ``cols``."""
    return [np.mean([cell_draws(row.cells[key], key, policy) for key in cols], axis=0) for row in rows]


def comparisons_between(standings: Standings, a: str, b: str) -> list[dict[str, Any]]:
    """Every cell where backbones ``a`` and ``b`` both have rankable results (any section)."""
    out = []
    for table in standings.tables:
        rows = [r for block in table.blocks for r in block.rows]
        ra = [r for r in rows if r.backbone == a]
        rb = [r for r in rows if r.backbone == b]
        for x in ra:
            for y in rb:
                for col in table.columns:
                    if col.key in x.coverage and col.key in y.coverage:
                        out.append({"table": table, "column": col, "a": x, "b": y})
    return out


def uncompared_cells(standings: Standings, a: str, b: str) -> list[tuple[Table, Column, str]]:
    """Cells where both backbones have results but at least one is not ranked, with the reason."""
    out = []
    for table in standings.tables:
        rows = [*table.unranked, *(r for block in table.blocks for r in block.rows)]
        for col in table.columns:
            cells = {}
            for name in (a, b):
                found = [r.cells[col.key] for r in rows if r.backbone == name and col.key in r.cells]
                if found:
                    cells[name] = found[0]
            if len(cells) == 2 and any(c.value is None for c in cells.values()):
                why = "; ".join(f"{name}: {'; '.join(c.reasons)}" for name, c in cells.items() if c.value is None)
                out.append((table, col, why))
    return out


def compare_cells(items: Iterable[dict[str, Any]], policy: Policy) -> list[dict[str, Any]]:
    """Paired results (A − B) for each shared cell, Holm-corrected across them."""
    items = list(items)
    results = []
    for it in items:
        col = it["column"]
        draws = _row_draws([it["a"], it["b"]], [col.key], {col.key: col}, policy)
        va, vb = it["a"].cells[col.key].value, it["b"].cells[col.key].value
        results.append(paired_difference(va, vb, draws[0], draws[1]))
    adjusted = holm([r.p for r in results])
    return [
        {
            **it,
            "value_a": it["a"].cells[it["column"].key].value,
            "value_b": it["b"].cells[it["column"].key].value,
            "result": PairedResult(r.difference, r.ci_low, r.ci_high, r.p, p, r.resamples),
        }
        for it, r, p in zip(items, results, adjusted)
    ]

"""The web leaderboard: a static, self-contained folder (no CDN, works offline and on any static host).

``build_site(folder, standings, scan)`` writes

- ``index.html``: one page with its script, style and data inline; a view per protocol and per
  data set, sortable columns, filters (modality, objective, parameter count, ranked or
  unverified), CI bars in every cell, a forest plot per data set, rank groups shaded, and every
  number linked to its record;
- ``leaderboard.json`` (the standings) and ``leaderboard.csv`` (one line per cell) to download;
- ``records/<path>``: a copy of every verified record, re-serialised from its parsed content.

Record strings never become markup: the data sits in a JSON script element with ``<``, ``>``
and ``&`` escaped, the page builds its DOM with ``textContent`` only, and a Content Security
Policy allows just the page's own script (by hash), so even a mistake could not run injected
code.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import re
import shutil
from importlib import resources
from pathlib import Path
from typing import Any

from .io import atomic_write_text
from .standings import Standings
from .verification import Scan

ASSETS = "site_assets"
_PLACEHOLDER = re.compile(r"__(STYLE_HASH|SCRIPT_HASH|STYLE|SCRIPT|DATA)__")
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _asset(name: str) -> str:
    return resources.files("medfm").joinpath(ASSETS).joinpath(name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def embedded_json(obj: Any) -> str:
    """JSON that is inert inside an HTML ``<script type="application/json">`` element."""
    text = json.dumps(obj, ensure_ascii=True, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(standings: Standings) -> str:
    """The page's HTML, with script, style and data inline."""
    style, script = _asset("style.css"), _asset("app.js")
    parts = {
        "STYLE": style,
        "SCRIPT": script,
        "DATA": embedded_json(standings.as_dict()),
        "STYLE_HASH": _csp_hash(style),
        "SCRIPT_HASH": _csp_hash(script),
    }
    # one pass: text substituted in is never scanned for placeholders again
    return _PLACEHOLDER.sub(lambda m: parts[m.group(1)], _asset("index.html"))


def _csv_safe(value: Any) -> Any:
    """Spreadsheets run cells that start with ``=``, ``+``, ``-`` or ``@``: quote such text."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


CSV_FIELDS = (
    "section",
    "protocol",
    "protocol_version",
    "protocol_distribution",
    "block",
    "rank",
    "group",
    "backbone",
    "weights_sha256",
    "params",
    "objective",
    "dataset",
    "test_identity",
    "test_cases",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "sd",
    "replicates",
    "seeds",
    "row_mean",
    "warnings",
    "not_ranked_because",
    "records",
)


def csv_rows(standings: Standings) -> list[dict[str, Any]]:
    """One row per (table, row, column) cell."""
    out = []
    for table in standings.tables:
        cols = {c.key: c for c in table.columns}
        blocks = [(i, b.rows) for i, b in enumerate(table.blocks)] + [("unranked", table.unranked)]
        for block, rows in blocks:
            for row in rows:
                for key, cell in sorted(row.cells.items(), key=lambda kv: cols[kv[0]].label):
                    d = cell.as_dict()
                    out.append(
                        {
                            "section": table.section,
                            "protocol": table.protocol,
                            "protocol_version": table.version,
                            "protocol_distribution": table.distribution,
                            "block": block,
                            "rank": row.rank,
                            "group": row.group,
                            "backbone": row.label,
                            "weights_sha256": row.weights_sha256,
                            "params": row.params,
                            "objective": row.objective,
                            "dataset": cols[key].label,
                            "test_identity": cols[key].identity,
                            "test_cases": cols[key].n_cases,
                            "metric": cols[key].metric,
                            "value": d["value"],
                            "ci_low": d["ci_low"],
                            "ci_high": d["ci_high"],
                            "sd": d["sd"],
                            "replicates": d["n"],
                            "seeds": " ".join(map(str, d["seeds"])),
                            "row_mean": row.mean,
                            "warnings": "; ".join(d["warnings"]),
                            "not_ranked_because": "; ".join(d["reasons"]),
                            "records": " ".join(d["records"]),
                        }
                    )
    return out


def render_csv(standings: Standings) -> str:
    """The standings as CSV, formula-safe."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in csv_rows(standings):
        writer.writerow({k: _csv_safe(v) for k, v in row.items()})
    return buffer.getvalue()


def build_site(folder: str | Path, standings: Standings, scan: Scan) -> Path:
    """Write the web leaderboard into ``folder``; return the path of ``index.html``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    records = folder / "records"
    if records.is_dir() and not records.is_symlink():
        shutil.rmtree(records)
    for checked in scan.valid:
        target = records / checked.relpath
        if ".." in Path(checked.relpath).parts:  # canonical paths never hold '..'; refuse anyway
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(checked.record, indent=2, sort_keys=True, ensure_ascii=True) + "\n", encoding="utf-8"
        )
    atomic_write_text(
        folder / "leaderboard.json", json.dumps(standings.as_dict(), indent=1, sort_keys=True, ensure_ascii=True) + "\n"
    )
    atomic_write_text(folder / "leaderboard.csv", render_csv(standings))
    index = folder / "index.html"
    atomic_write_text(index, render_page(standings))
    return index

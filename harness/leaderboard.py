"""``leaderboard.md`` as a pure function of result records.

Only the region between the two marker comments is rewritten, so text around it survives,
and the file is written only when that region changed. Output has no timestamps.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError
from .io import atomic_write_text

START = "<!-- medfm:leaderboard:start -->"
END = "<!-- medfm:leaderboard:end -->"
FLAG_MARK = "⚠"
_ESCAPES = {"\\": "\\\\", "|": "\\|", "<": "&lt;", ">": "&gt;", "[": "\\[", "]": "\\]", "`": "\\`",
            "*": "\\*", "\r": " ", "\n": " ", "&": "&amp;"}


def escape(text: Any) -> str:
    """Make any name safe inside a markdown table cell: no table breaks, HTML or links."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def _fmt(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.3f}"


def _cell(record: dict[str, Any]) -> tuple[str, float | None, bool]:
    """Display text, rankable value and whether it is flagged."""
    if record["status"] != "ok":
        return "error", None, True
    metric = record["metrics"].get(record["primary_metric"], {})
    value = metric.get("value")
    text = f"{_fmt(value)} [{_fmt(metric.get('ci_low'))}, {_fmt(metric.get('ci_high'))}]"
    flags = record.get("flags") or []
    if flags:
        return f"{FLAG_MARK} {text}", None, True
    return text, value, False


def render(records: Iterable[dict[str, Any]]) -> str:
    """Markdown for all records: one table per protocol, backbones by mean primary metric."""
    by_protocol: dict[str, dict[tuple[str, str], dict[str, Any]]] = defaultdict(dict)
    metric_of: dict[str, str] = {}
    for r in records:
        by_protocol[r["protocol"]["name"]][(r["backbone"]["name"], r["dataset"]["name"])] = r
        if r["status"] == "ok":
            metric_of.setdefault(r["dataset"]["name"], r["primary_metric"])
    if not by_protocol:
        return "_No results yet: run `medfm run`._"
    parts: list[str] = []
    any_flag = False
    for protocol in sorted(by_protocol):
        cells = by_protocol[protocol]
        datasets = sorted({d for _, d in cells})
        backbones = sorted({b for b, _ in cells})
        rows = []
        for b in backbones:
            texts, values = [], []
            for d in datasets:
                r = cells.get((b, d))
                if r is None:
                    texts.append("")
                    continue
                text, value, flagged = _cell(r)
                any_flag |= flagged and r["status"] == "ok"
                texts.append(text)
                if value is not None:
                    values.append(value)
            complete = len(values) == len(datasets)
            mean = sum(values) / len(values) if values else None
            mean_text = _fmt(mean) + ("" if complete or mean is None else f" ({len(values)}/{len(datasets)})")
            # complete rows rank above partial ones: a mean over fewer data sets is not comparable
            rows.append(((0 if complete else 1, -(mean if mean is not None else -math.inf), b), b, texts, mean_text))
        rows.sort(key=lambda row: row[0])
        header = ["#", "backbone"] + [f"{escape(d)} ({escape(metric_of.get(d, '?'))})" for d in datasets] + ["mean"]
        lines = [f"### {escape(protocol)}", "", "| " + " | ".join(header) + " |",
                 "|" + "|".join(["---:", "---"] + ["---:"] * (len(datasets) + 1)) + "|"]
        for rank, (_, b, texts, mean_text) in enumerate(rows, 1):
            lines.append("| " + " | ".join([str(rank), escape(b), *texts, mean_text]) + " |")
        parts.append("\n".join(lines))
    legend = ("Primary metric of each data set with its 95% bootstrap confidence interval. "
              "Rows are sorted by the mean over data sets; a mean over only some data sets is marked (n/N) "
              "and ranked below complete rows.")
    if any_flag:
        legend += (f" {FLAG_MARK} marks a degenerate result (predictions collapsed to one class, an AUROC "
                   "interval containing 0.5 or below it, a NaN loss, or non-finite features or scores): "
                   "shown, but not counted in the mean.")
    return legend + "\n\n" + "\n\n".join(parts)


def splice(document: str, body: str) -> str:
    """Replace the marked region of ``document`` with ``body`` (appending markers if absent)."""
    block = f"{START}\n{body}\n{END}"
    if END in document:
        end = document.index(END)
        start = document.rfind(START, 0, end)
        if start >= 0:
            return document[:start] + block + document[end + len(END):]
    if START in document or END in document:
        raise UserError(f"the leaderboard file has an unbalanced {START if START in document else END} marker; "
                        "fix the markers by hand so that hand-written text is not lost")
    sep = "" if not document or document.endswith("\n\n") else ("\n" if document.endswith("\n") else "\n\n")
    return document + sep + block + "\n"


DEFAULT_HEADER = "# medfm leaderboard\n\nGenerated by `medfm leaderboard` from the records in `results/`.\n\n"


def update_file(path: str | Path, records: Iterable[dict[str, Any]]) -> bool:
    """Rewrite the leaderboard region of ``path``; return True if the file changed."""
    path = Path(path)
    current = path.read_text(encoding="utf-8") if path.exists() else DEFAULT_HEADER
    new = splice(current, render(records))
    if path.exists() and new == current:
        return False
    atomic_write_text(path, new)
    return True


def is_stale(path: str | Path, records: Iterable[dict[str, Any]]) -> bool:
    """True when ``path`` does not hold exactly what ``update_file`` would write."""
    path = Path(path)
    if not path.exists():
        return True
    current = path.read_text(encoding="utf-8")
    return splice(current, render(records)) != current

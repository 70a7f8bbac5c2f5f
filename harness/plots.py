"""Figures from result records: few-shot curves (metric vs labelled examples per class).

The few-shot protocols keep, in ``extra.curve``, every episode's value of every metric for
each number of shots; this module turns the records of a results folder into one figure with
a panel per data set and, per (backbone, classifier), the mean over episodes with a band of
plus or minus one standard deviation, as in the radiology study's few-shot plots.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import UserError


@dataclass(frozen=True)
class FewShotSeries:
    """One line of a few-shot figure: a backbone and classifier on a data set."""

    dataset: str
    backbone: str
    protocol: str
    metric: str
    shots: list[int]
    mean: list[float | None]
    std: list[float | None]
    episodes: int
    unit: str
    flags: list[str]

    @property
    def label(self) -> str:
        """Legend text; a flagged result says so."""
        warn = f" (flagged: {', '.join(self.flags)})" if self.flags else ""
        return f"{self.backbone} · {self.protocol}{warn}"


def few_shot_series(
    records: Iterable[dict[str, Any]], metric: str | None = None, dataset: str = "*", backbone: str = "*"
) -> list[FewShotSeries]:
    """The few-shot curves of ``records`` (any record whose ``extra.curve`` has per-shot values),
    for ``metric`` (default: the curve's own, the data set's primary metric), filtered by glob
    patterns on the data set and backbone names, sorted by data set, backbone and protocol."""
    series = []
    for r in records:
        curve = (r.get("extra") or {}).get("curve")
        if not isinstance(curve, dict) or "shots" not in curve or r.get("status") != "ok":
            continue
        name = metric or curve.get("metric") or r.get("primary_metric")
        if name not in curve.get("mean", {}):
            continue
        assert name is not None  # a JSON object's keys are strings
        ds, bb = r["dataset"]["name"], r["backbone"]["name"]
        if not (fnmatch.fnmatchcase(ds, dataset) and fnmatch.fnmatchcase(bb, backbone)):
            continue
        series.append(
            FewShotSeries(
                ds,
                bb,
                r["protocol"]["name"],
                name,
                [int(n) for n in curve["shots"]],
                list(curve["mean"][name]),
                list(curve["std"][name]),
                int((r.get("extra") or {}).get("episodes", 0)),
                str((r.get("extra") or {}).get("unit", "image")),
                list(r.get("flags", [])),
            )
        )
    return sorted(series, key=lambda s: (s.dataset, s.backbone, s.protocol))


def plot_few_shot(series: list[FewShotSeries], path: str | Path, title: str | None = None) -> Path:
    """Write the figure (PNG, SVG or PDF by the file's suffix) atomically and return its path."""
    if not series:
        raise UserError("no few-shot results to plot: run a few_shot_* protocol first, or loosen --dataset/--backbone")
    import matplotlib

    matplotlib.use("Agg", force=False)  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    from .io import atomic_path

    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "png"
    if fmt not in ("png", "svg", "pdf"):
        raise UserError(f"{path}: plots are written as .png, .svg or .pdf")
    datasets = sorted({s.dataset for s in series})
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(5.2 * len(datasets), 3.8), squeeze=False, constrained_layout=True
    )
    for ax, ds in zip(axes[0], datasets):
        mine = [s for s in series if s.dataset == ds]
        for i, s in enumerate(mine):
            points = [(n, m, sd or 0.0) for n, m, sd in zip(s.shots, s.mean, s.std) if m is not None]
            if not points:
                continue
            x, y, sd = (list(v) for v in zip(*points))
            style = "--" if s.flags else "-"
            ax.plot(x, y, style, marker="o", ms=3.5, color=f"C{i % 10}", label=s.label)
            ax.fill_between(
                x, [a - b for a, b in zip(y, sd)], [a + b for a, b in zip(y, sd)], color=f"C{i % 10}", alpha=0.15, lw=0
            )
        ax.set_xscale("log", base=2)
        shots = sorted({n for s in mine for n in s.shots})
        ax.set_xticks(shots, [str(n) for n in shots])
        unit = "patients" if all(s.unit == "patient" for s in mine) else "images"
        episodes = sorted({s.episodes for s in mine})
        ax.set(
            xlabel=f"labelled {unit} per class (n)",
            ylabel=mine[0].metric,
            title=f"{ds} (mean ± sd over {'/'.join(map(str, episodes))} episodes)",
        )
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    plt.close(fig)
    return path

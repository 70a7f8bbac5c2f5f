"""The ``medfm`` command line (typer + rich)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Optional

import click
import typer
from rich.console import Console
from rich.markup import escape as rich_escape

from .config import RunConfig, load_config, with_overrides
from .errors import UserError
from .registry import Registry, load_registry

if TYPE_CHECKING:
    from rich.table import Table

    from .runner import CellOutcome

# Only what every command needs is imported above: the work's own imports (torch, scikit-learn,
# scipy: seconds) are made inside the commands, so `--help`, `--version` and `list` answer at once.

app = typer.Typer(
    add_completion=True,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Benchmark natural-image foundation models on medical imaging.",
)
cache_app = typer.Typer(no_args_is_help=True, help="Inspect or clear the feature cache.")
app.add_typer(cache_app, name="cache")
plot_app = typer.Typer(no_args_is_help=True, help="Figures from the result records.")
app.add_typer(plot_app, name="plot")
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
KIND_OF = {"backbones": "backbone", "datasets": "dataset", "protocols": "protocol"}
# Recent typer versions vendor their own copy of click, whose exceptions are distinct classes.
# (typed loosely: the two ClickException classes share no base class but Exception)
USAGE_ERRORS: tuple[type[Any], ...] = (click.exceptions.ClickException,)
ABORTS: tuple[type[BaseException], ...] = (click.exceptions.Abort,)
try:
    from typer._click import exceptions as _typer_click

    USAGE_ERRORS += (_typer_click.ClickException,)
    ABORTS += tuple(getattr(_typer_click, name) for name in ("Abort",) if hasattr(_typer_click, name))
except ImportError:  # typer that uses the click package itself
    pass


def _print_version(value: bool) -> None:
    if value:
        from . import __version__

        out.print(f"medfm {__version__}")
        raise typer.Exit()


@app.callback()
def _main_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print medfm's version and exit."
    ),
) -> None:
    """Benchmark natural-image foundation models on medical imaging."""


def _registry(warn: bool = True) -> Registry:
    registry = load_registry()
    if warn:
        for line in registry.load_errors:
            err.print(f"[yellow]warning:[/] {rich_escape(line)}", soft_wrap=True)
    return registry


@app.command()
def plugins(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List installed plugins, what each registered, and any load errors (exit 1 if one failed)."""
    from rich.table import Table

    registry = _registry(warn=False)
    failed = [p for p in registry.plugins if p.errors]
    if as_json:
        out.print_json(json.dumps([p.as_dict() for p in registry.plugins]))
        if failed:
            raise typer.Exit(1)
        return
    table = Table("plugin", "distribution", "version", "registers", "status")
    for p in registry.plugins:
        names = ", ".join(n for _, n in p.specs)
        status = "[red]" + rich_escape("; ".join(p.errors)) + "[/]" if p.errors else ("blocked" if p.blocked else "ok")
        table.add_row(
            rich_escape(p.name),
            p.distribution or "",
            p.version or "",
            rich_escape(names if len(names) < 90 else names[:87] + "..."),
            status,
        )
    out.print(table)
    if failed:
        err.print(
            f"[red]{len(failed)} plugin(s) failed to load[/]: {rich_escape(', '.join(p.name for p in failed))}; "
            "fix or uninstall them (the rest of medfm works without them)"
        )
        raise typer.Exit(1)


def _fmt_params(n: Any) -> str:
    return "?" if not n else (f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}K")


@app.command("list")
def list_specs(
    kind: str = typer.Argument(..., help="backbones, datasets or protocols"),
    pattern: str = typer.Argument("*", help="glob pattern over names"),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List registered specs (never loads weights or data)."""
    from rich.table import Table

    if kind not in KIND_OF:
        raise UserError(f"unknown kind {kind!r}; use backbones, datasets or protocols")
    registry = _registry()
    k = KIND_OF[kind]
    import fnmatch

    specs = [s for s in registry.specs(k) if fnmatch.fnmatchcase(s.name, pattern)]
    families = [f.spec for f in registry.families[k] if fnmatch.fnmatchcase(f.spec.name, pattern)]
    if as_json:
        out.print_json(json.dumps([s.metadata() for s in specs] + [f.metadata() for f in families], default=str))
        return
    if k == "backbone":
        table = Table("name", "params", "input", "pretraining", "objective", "license", "citation")
        for s in specs:
            table.add_row(
                rich_escape(s.name),
                _fmt_params(s.params),
                str(s.input_size),
                rich_escape(s.pretraining),
                s.objective,
                rich_escape(s.license),
                rich_escape(s.citation[:60]),
            )
    elif k == "dataset":
        table = Table("name", "task", "classes", "splits", "primary", "license", "citation")
        for s in specs:
            classes = ", ".join(s.classes)
            splits = " / ".join(f"{n}:{v if v is not None else '?'}" for n, v in s.splits.items())
            table.add_row(
                rich_escape(s.name),
                s.task,
                rich_escape(classes[:50] + ("..." if len(classes) > 50 else "")),
                splits,
                s.primary_metric,
                rich_escape(s.license[:30]),
                rich_escape(s.citation[:50]),
            )
    else:
        table = Table("name", "needs", "version", "defaults", "description")
        for s in specs:
            table.add_row(
                rich_escape(s.name),
                ", ".join(sorted(s.needs)),
                s.version,
                rich_escape(json.dumps(dict(s.defaults))[:70]),
                rich_escape(s.description),
            )
    out.print(table)
    if families:
        out.print("families (any member can be named):")
        for f in families:
            out.print(f"  {rich_escape(f.name)}: {rich_escape(f.description)} e.g. {', '.join(f.examples)}")


def _outcome_json(o: CellOutcome) -> dict[str, Any]:
    return {
        "backbone": o.cell.backbone.name,
        "dataset": o.cell.dataset.name,
        "protocol": o.cell.protocol.name,
        "status": o.status,
        "record": str(o.record_path) if o.record_path else None,
        "metric": o.primary_metric,
        "value": o.value,
        "ci_low": o.ci[0],
        "ci_high": o.ci[1],
        "flags": list(o.flags),
        "seconds": round(o.seconds, 3),
        "message": o.message or None,
    }


def _summary(outcomes: list[CellOutcome]) -> Table:
    from rich.table import Table

    from .console_events import value_text as _v

    table = Table("backbone", "dataset", "protocol", "status", "primary metric [95% CI]", "flags", title="run summary")
    for o in outcomes:
        status = {"ok": "[green]ok[/]", "cached": "[dim]up to date[/]", "error": "[red]error[/]"}.get(
            o.status, o.status
        )
        value = "" if o.status == "error" else f"{o.primary_metric} {_v(o.value)} [{_v(o.ci[0])}, {_v(o.ci[1])}]"
        table.add_row(
            rich_escape(o.cell.backbone.name),
            rich_escape(o.cell.dataset.name),
            rich_escape(o.cell.protocol.name),
            status,
            rich_escape(value) if o.status != "error" else rich_escape(o.message[:80]),
            ", ".join(o.flags),
        )
    return table


@app.command()
def run(
    backbone: Optional[List[str]] = typer.Option(None, "-b", "--backbone", help="Backbone name or glob (repeatable)."),
    dataset: Optional[List[str]] = typer.Option(None, "-d", "--dataset", help="Data set name or glob (repeatable)."),
    protocol: Optional[List[str]] = typer.Option(None, "-p", "--protocol", help="Protocol name or glob (repeatable)."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="TOML run file; flags override it."),
    seed: Optional[int] = typer.Option(None, help="Global seed (default 0)."),
    device: Optional[str] = typer.Option(None, help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps."),
    batch_size: Optional[int] = typer.Option(None, help="Images per batch for extraction (default 64)."),
    workers: Optional[int] = typer.Option(
        None, help="Decode worker processes (default: cores - 1, at most 8, on CUDA; 0 on the CPU)."
    ),
    results: Optional[str] = typer.Option(None, "--results", help="Results folder (default results/)."),
    cache_dir: Optional[str] = typer.Option(None, help="Feature cache folder (default ~/.cache/medfm)."),
    leaderboard: Optional[str] = typer.Option(None, help="Leaderboard file (default leaderboard.md)."),
    resize: Optional[str] = typer.Option(None, help="Resize policy for every backbone: resize, resize_crop, pad."),
    bootstrap: Optional[int] = typer.Option(None, help="Bootstrap resamples for CIs (default 1000)."),
    rerun: bool = typer.Option(False, "--rerun", help="Recompute cells even if their records are current."),
    fail_fast: bool = typer.Option(False, "--fail-fast", help="Stop at the first failing cell."),
    no_amp: bool = typer.Option(False, "--no-amp", help="Disable bf16 autocast on CUDA."),
    set_: Optional[List[str]] = typer.Option(
        None, "--set", "-o", help="Plugin option KIND.NAME.KEY=VALUE (repeatable)."
    ),
    submitter: Optional[str] = typer.Option(
        None, "--submitter", help="Your submitter name (default: $MEDFM_SUBMITTER, git user.name, login)."
    ),
    source: Optional[List[str]] = typer.Option(
        None, "--source", help="KIND:NAME=DISTRIBUTION: which plugin to use for a name two register."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the outcome of every cell as JSON (stdout)."),
    executor: str = typer.Option(
        "local", "--executor", help="local (this process) or ray (a Ray cluster: pip install 'medfm[ray]')."
    ),
    address: Optional[str] = typer.Option(
        None, "--address", help="Ray cluster address (auto, host:6379, ray://host:10001); default: a local cluster."
    ),
    ray_gpus: Optional[float] = typer.Option(
        None, "--ray-gpus", help="GPUs per Ray extraction or training task (default 1 if the cluster has GPUs)."
    ),
) -> None:
    """Run backbone x dataset x protocol. With no arguments: the offline default benchmark."""
    cfg = load_config(config) if config else RunConfig()
    cfg = with_overrides(
        cfg,
        backbones=backbone,
        datasets=dataset,
        protocols=protocol,
        seed=seed,
        device=device,
        batch_size=batch_size,
        workers=workers,
        results_dir=results,
        cache_dir=cache_dir,
        leaderboard=leaderboard,
        resize=resize,
        bootstrap=bootstrap,
        rerun=rerun or None,
        fail_fast=fail_fast or None,
        amp=False if no_amp else None,
        set=set_,
        submitter=submitter,
        source=source,
    )
    from .console_events import ConsoleEvents
    from .runner import Runner

    if executor not in ("local", "ray"):
        raise UserError(f"--executor {executor!r}: choose local or ray")
    if executor == "local" and (address or ray_gpus is not None):
        raise UserError("--address and --ray-gpus need --executor ray")
    registry = _registry()
    runner = Runner(registry, cfg, ConsoleEvents(err))
    cells = runner.plan()
    runner.check(cells)
    where = f"Ray ({address or 'a local cluster'})" if executor == "ray" else str(runner.device)
    err.print(
        f"[bold]{len(cells)} cells[/] on {where}; results in {runner.results_dir} "
        f"as submitter {rich_escape(runner.submitter)}, seed {cfg.seed}"
    )
    if executor == "ray":
        from .ray_executor import RayOptions, run_on_ray

        outcomes = run_on_ray(load_registry, cfg, RayOptions(address=address, gpus_per_task=ray_gpus), runner.events)
    else:
        outcomes = runner.run(cells)
    if as_json:
        out.print_json(json.dumps([_outcome_json(o) for o in outcomes]))
    else:
        out.print(_summary(outcomes))
    failed = [o for o in outcomes if o.status == "error"]
    err.print(
        f"leaderboard: {cfg.path(cfg.leaderboard)}; feature cache: {runner.cache.stats.hits} hits, "
        f"{runner.cache.stats.misses} misses"
    )
    if failed:
        err.print(
            f"[red]{len(failed)} of {len(cells)} cells failed[/]; the tracebacks are in their records "
            "(or in <protocol>.failed.json beside an earlier result that was kept)"
        )
        raise typer.Exit(1)


def _results_folder(results: str) -> Path:
    """A results folder that exists (a missing one is a user error, not an empty result)."""
    path = Path(results)
    if not path.is_dir():
        raise UserError(f"{results}: no such results folder; run `medfm run` first or pass --results")
    return path


def _scan(results: str, registry: Registry | None = None, quiet: bool = False):
    """Every record under ``results``, verified; each rejected one printed as one warning line."""
    from .verification import KnownSpecs, scan_results

    registry = registry or _registry()
    scan = scan_results(_results_folder(results), KnownSpecs.from_registry(registry))
    if not quiet:
        for rejected in scan.rejected:
            err.print(f"[yellow]rejected:[/] {rich_escape(str(rejected.problem))}", soft_wrap=True)
    return scan, registry


def _verified_records(results: str) -> list[dict[str, Any]]:
    """The verified records under ``results`` (each rejected one printed as a warning)."""
    scan, _ = _scan(results)
    return [c.record for c in scan.valid]


def _standings(results: str, policy_file: Optional[Path], leaderboard_file: str, quiet: bool = False):
    from .standings import build_standings, load_policy
    from .verification import KnownSpecs

    scan, registry = _scan(results, quiet=quiet)
    policy = load_policy(Path(leaderboard_file).parent, policy_file)
    return scan, build_standings(scan, KnownSpecs.from_registry(registry), policy)


@app.command("leaderboard")
def leaderboard_cmd(
    check: bool = typer.Option(False, "--check", help="Exit 1 if the file is stale or a record is invalid."),
    results: str = typer.Option("results", "--results", help="Results folder."),
    file: str = typer.Option("leaderboard.md", "--file", "--leaderboard", help="Leaderboard file."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write the web leaderboard to this folder."),
    policy: Optional[Path] = typer.Option(
        None, "--policy", help="Trust policy (default: leaderboard.toml beside the file)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the standings as JSON."),
) -> None:
    """Regenerate leaderboard.md (and the web page) from the verified records under results/."""
    from . import leaderboard as lb

    scan, standings = _standings(results, policy, file, quiet=as_json)
    if as_json:
        out.print_json(json.dumps(standings.as_dict()))
    if check:
        if scan.rejected:
            err.print(
                f"[red]{len(scan.rejected)} invalid record(s)[/] under {rich_escape(results)}: fix or remove them"
            )
            raise typer.Exit(1)
        if lb.is_stale(file, standings):
            err.print(f"[red]{file} is stale[/]: run `medfm leaderboard` and commit the result")
            raise typer.Exit(1)
        err.print(f"{file} is up to date ({len(scan.valid)} verified records)")
        return
    changed = lb.update_file(file, standings)
    err.print(
        f"{file} {'updated' if changed else 'unchanged'} ({len(scan.valid)} verified records, "
        f"{len(scan.rejected)} rejected)"
    )
    if html is not None:
        from .site import build_site

        written = build_site(html, standings, scan)
        err.print(f"web leaderboard: {written}")


@app.command()
def validate(
    paths: List[Path] = typer.Argument(..., help="Record files or results folders to check."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Verify submitted records: every number recomputed from the predictions, nothing taken on trust."""
    from .verification import KnownSpecs, scan_results, verify_file

    for path in paths:
        if not path.exists() and not path.is_symlink():
            raise UserError(f"{path}: no such record file or folder")
    known = KnownSpecs.from_registry(_registry())
    checked = []
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            checked += scan_results(path, known).entries
        else:
            checked.append(verify_file(path, known=known))
    if not checked:
        raise UserError(f"no records under {', '.join(map(str, paths))}: nothing to validate")
    failures = [c for c in checked if not c.valid]
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "path": str(c.path),
                        "valid": c.valid,
                        "problem": c.problem,
                        "status": c.record["status"] if c.valid and c.record is not None else None,
                        "unranked": c.unranked,
                        "warnings": c.warnings,
                    }
                    for c in checked
                ]
            )
        )
    else:
        for c in checked:
            if not c.valid or c.record is None:
                out.print(f"[red]invalid[/] {rich_escape(str(c.problem))}", soft_wrap=True)
                continue
            notes = ([f"not ranked: {'; '.join(c.unranked)}"] if c.unranked else []) + c.warnings
            tail = f" [yellow]({rich_escape('; '.join(notes))})[/]" if notes else ""
            status = "" if c.record["status"] == "ok" else " [dim](error record)[/]"
            out.print(f"[green]ok[/] {rich_escape(str(c.path))}{status}{tail}", soft_wrap=True)
        err.print(f"{len(checked) - len(failures)} verified, {len(failures)} invalid")
    if failures:
        raise typer.Exit(1)


@app.command()
def compare(
    a: str = typer.Argument(..., help="First backbone name."),
    b: str = typer.Argument(..., help="Second backbone name."),
    results: str = typer.Option("results", "--results", help="Results folder."),
    protocol: str = typer.Option("*", "--protocol", "-p", help="Protocol name pattern."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Trust policy file."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Paired bootstrap of A − B on every cell both backbones have (same test set), Holm-corrected."""
    import fnmatch

    from rich.table import Table

    from . import leaderboard as lb
    from .console_events import value_text as _v
    from .standings import compare_cells, comparisons_between, uncompared_cells

    _, standings = _standings(results, policy, "leaderboard.md", quiet=as_json)
    items = [it for it in comparisons_between(standings, a, b) if fnmatch.fnmatchcase(it["table"].protocol, protocol)]
    if not items:
        names = sorted({r.backbone for t in standings.tables for bl in t.blocks for r in bl.rows})
        raise UserError(
            f"{a!r} and {b!r} share no ranked cell under {results}; backbones with results: "
            f"{', '.join(names[:20]) or 'none'}"
        )
    compared = compare_cells(items, standings.policy)
    skipped = [
        (t, c, why) for t, c, why in uncompared_cells(standings, a, b) if fnmatch.fnmatchcase(t.protocol, protocol)
    ]
    if as_json:
        out.print_json(
            json.dumps(
                [
                    {
                        "section": c["table"].section,
                        "protocol": c["table"].protocol,
                        "dataset": c["column"].label,
                        "metric": c["column"].metric,
                        "n_cases": c["column"].n_cases,
                        "a": c["a"].label,
                        "b": c["b"].label,
                        "value_a": c["value_a"],
                        "value_b": c["value_b"],
                        **c["result"].as_dict(),
                    }
                    for c in compared
                ]
            )
        )
        return
    table = Table(
        "section",
        "protocol",
        "data set",
        "metric",
        "A",
        "B",
        "A − B [95% CI]",
        "p",
        "p (Holm)",
        title=f"A = {rich_escape(a)}, B = {rich_escape(b)}: paired bootstrap "
        f"({standings.policy.comparison_resamples} resamples)",
    )
    for c in compared:
        r = c["result"]
        table.add_row(
            c["table"].section,
            rich_escape(c["table"].protocol),
            rich_escape(c["column"].label),
            c["column"].metric,
            _v(c["value_a"]),
            _v(c["value_b"]),
            f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]",
            lb._p(r.p),
            lb._p(r.p_holm),
        )
    out.print(table)
    for t, col, why in skipped:
        out.print(
            f"not compared: {rich_escape(t.protocol)} on {rich_escape(col.label)}: {rich_escape(why)}", soft_wrap=True
        )


@app.command("verify")
def verify_cmd(
    sample: int = typer.Option(..., "--sample", "-n", help="How many submitted cells to re-run."),
    results: str = typer.Option("results", "--results", help="Results folder."),
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", help="Run file with this machine's data roots and weights."
    ),
    set_: Optional[List[str]] = typer.Option(None, "--set", "-o", help="Plugin option KIND.NAME.KEY=VALUE."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random choice of cells."),
    tolerance: float = typer.Option(0.01, "--tolerance", help="Largest accepted |claimed − reproduced|."),
    device: Optional[str] = typer.Option(None, help="Device for the re-runs (default auto)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Re-run N randomly chosen submitted cells whose data and weights are here; check each metric reproduces."""
    from .reproduce import max_difference, reproduce_sample

    if sample < 1:
        raise UserError(f"--sample must be at least 1; got {sample}")
    if not 0 <= tolerance < 1:
        raise UserError(f"--tolerance must be between 0 and 1; got {tolerance}")
    base = load_config(config) if config else RunConfig()
    base = with_overrides(base, set=set_, device=device)
    scan, registry = _scan(results, quiet=as_json)

    def show(r) -> None:
        if as_json:
            return
        colour = {"reproduced": "green", "differs": "red", "failed": "red"}.get(r.status, "yellow")
        detail = f"max |Δ| {max_difference(r):.4f}" if r.metrics else rich_escape(r.reason)
        err.print(
            f"[{colour}]{r.status}[/] {rich_escape(r.relpath)}: {detail}"
            + (f" ({rich_escape(r.reason)})" if r.metrics and r.reason else ""),
            soft_wrap=True,
        )

    outcomes = reproduce_sample(scan, registry, base, sample, seed, tolerance, progress=show)
    if as_json:
        out.print_json(json.dumps([r.as_dict() for r in outcomes]))
    tried = [r for r in outcomes if r.status != "unavailable"]
    bad = [r for r in tried if r.status != "reproduced"]
    err.print(
        f"{len(tried) - len(bad)} of {len(tried)} re-run cells reproduced within {tolerance}; "
        f"{len(outcomes) - len(tried)} unavailable here"
    )
    if len(tried) < sample:
        err.print(f"[yellow]only {len(tried)} of the {sample} requested cells could be re-run here[/]")
    if bad:
        raise typer.Exit(1)


@plot_app.command("few-shot")
def plot_few_shot_cmd(
    results: str = typer.Option("results", "--results", help="Results folder."),
    out_file: Path = typer.Option(Path("few_shot.png"), "--out", "-o", help="Figure file (.png, .svg or .pdf)."),
    metric: Optional[str] = typer.Option(None, "--metric", help="Metric (default: each data set's primary)."),
    dataset: str = typer.Option("*", "--dataset", "-d", help="Data set name pattern."),
    backbone: str = typer.Option("*", "--backbone", "-b", help="Backbone name pattern."),
    title: Optional[str] = typer.Option(None, "--title", help="Figure title."),
) -> None:
    """Few-shot curves: metric vs labelled examples per class, mean ± sd over episodes."""
    from .plots import few_shot_series, plot_few_shot

    records = _verified_records(results)
    series = few_shot_series(records, metric, dataset, backbone)
    if not series and metric:
        known = sorted({m for r in records for m in ((r.get("extra") or {}).get("curve") or {}).get("mean", {})})
        if known and metric not in known:
            raise UserError(f"the few-shot records have no metric {metric!r}; they have {', '.join(known)}")
    written = plot_few_shot(series, out_file, title)
    out.print(
        f"wrote {rich_escape(str(written))}: {len(series)} curves, {len({s.dataset for s in series})} data set(s)"
    )


@cache_app.command("info")
def cache_info(
    cache_dir: Optional[str] = typer.Option(None, help="Feature cache folder."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Where the cache is and how big."""
    from .cache import FeatureCache

    info = FeatureCache(cache_dir).info()
    if as_json:
        out.print_json(json.dumps({k: str(v) if isinstance(v, Path) else v for k, v in info.items()}))
        return
    out.print(f"{info['root']}: {info['entries']} feature files, {info['bytes'] / 1e6:.1f} MB")


@cache_app.command("clear")
def cache_clear(cache_dir: Optional[str] = typer.Option(None, help="Feature cache folder.")) -> None:
    """Delete every cached feature file."""
    from .cache import FeatureCache

    n = FeatureCache(cache_dir).clear()
    out.print(f"removed {n} feature files")


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one red line and exit status 2."""
    try:
        rc = app(args=argv, standalone_mode=False)
    except UserError as exc:
        err.print(f"[red]error:[/] {rich_escape(str(exc))}", soft_wrap=True)
        sys.exit(2)
    except ABORTS:
        err.print("[red]aborted[/]")
        sys.exit(130)
    except USAGE_ERRORS as exc:
        exc.show()
        sys.exit(exc.exit_code)
    sys.exit(rc if isinstance(rc, int) else 0)


if __name__ == "__main__":  # pragma: no cover
    main()

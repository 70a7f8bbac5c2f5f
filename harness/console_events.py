"""The CLI's view of a run: an extraction progress bar, a line per cell, and the overall progress.

Kept apart from ``cli.py`` so that ``medfm --help`` does not import rich's progress machinery.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from rich.console import Console
from rich.markup import escape as rich_escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from .run_events import RunEvents

if TYPE_CHECKING:
    from .runner import Cell, CellOutcome


class _Rate(ProgressColumn):
    def render(self, task: Any) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "- img/s", style="cyan")


def value_text(x: float | None) -> str:
    """A metric value for a terminal line (``—`` when missing)."""
    return "—" if x is None else f"{x:.3f}"


def duration_text(seconds: float) -> str:
    """``1h02m``, ``4m10s`` or ``12s``."""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class OverallProgress:
    """Cells done of the total, time elapsed and an estimate of the time left.

    The estimate extrapolates the mean time of the cells that did work: cells that were up to
    date take no time and would make it optimistic.
    """

    def __init__(self, total: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.clock = total, 0, clock
        self.started = clock()
        self.worked, self.work_seconds = 0, 0.0

    def finished(self, seconds: float, did_work: bool) -> None:
        """One more cell ended after ``seconds``."""
        self.done += 1
        if did_work:
            self.worked += 1
            self.work_seconds += seconds

    def eta_seconds(self) -> float | None:
        """Seconds left at the mean pace of the cells that did work; ``None`` before the first."""
        if self.done >= self.total:
            return 0.0
        if not self.worked:
            return None
        return (self.total - self.done) * self.work_seconds / self.worked

    def line(self) -> str:
        """``3/12 cells, 1m23s elapsed, about 4m10s left``."""
        eta = self.eta_seconds()
        left = "" if eta is None or self.done >= self.total else f", about {duration_text(eta)} left"
        return f"{self.done}/{self.total} cells, {duration_text(self.clock() - self.started)} elapsed{left}"


class ConsoleEvents(RunEvents):
    """Progress bars for extraction, one line per finished cell with the overall progress."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.progress: Progress | None = None
        self.overall: OverallProgress | None = None

    def run_start(self, total_cells: int) -> None:
        self.overall = OverallProgress(total_cells)

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{rich_escape(message)}[/]")

    def extraction(self, description: str, total: int) -> Callable[[int], None]:
        progress = Progress(
            TextColumn("[bold]extract[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(),
            TimeRemainingColumn(),
            console=self.console,
            transient=False,
        )
        self.progress = progress
        progress.start()
        task = progress.add_task(rich_escape(description), total=total)
        return lambda n: progress.advance(task, n)

    def extraction_done(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def cell_start(self, cell: Cell) -> None:
        self.console.print(f"[bold]▶[/] {rich_escape(cell.label)}")

    def cell_end(self, o: CellOutcome) -> None:
        if o.status == "error":
            self.console.print(f"  [red]error[/] {rich_escape(o.cell.label)}: {rich_escape(o.message)}", soft_wrap=True)
        elif o.status == "cached":
            self.console.print(f"  [dim]up to date[/] {rich_escape(o.cell.label)}")
        else:
            self.console.print(
                f"  [green]done[/] {rich_escape(o.cell.label)}: {o.primary_metric} {value_text(o.value)} "
                f"[{value_text(o.ci[0])}, {value_text(o.ci[1])}] in {o.seconds:.1f}s"
                + (f" flags={o.flags}" if o.flags else "")
            )
        if self.overall is not None:
            self.overall.finished(o.seconds, did_work=o.status != "cached")
            self.console.print(f"  [cyan]{self.overall.line()}[/]")

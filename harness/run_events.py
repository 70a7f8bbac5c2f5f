"""What a run reports while it works: the listener interface the runner calls.

Not pluggy hooks (those are how plugins register specs): a ``RunEvents`` object is handed to
one ``Runner`` to display progress. The CLI's implementation prints with rich; the default
is silent, so scripts and tests get no output.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

if TYPE_CHECKING:
    from .runner import Cell, CellOutcome


class RunEvents:
    """Receives a run's progress; every method does nothing unless overridden."""

    def run_start(self, total_cells: int) -> None:
        """The run is about to work through ``total_cells`` cells."""

    def log(self, message: str) -> None:
        """A one-line note (warnings, extraction starts)."""

    def extraction(self, description: str, total: int) -> Callable[[int], None]:
        """Start an extraction progress bar; returns an ``advance(n_images)`` callback."""
        return lambda n: None

    def extraction_done(self) -> None:
        """Close the current extraction progress bar."""

    def cell_start(self, cell: Cell) -> None:
        """A cell begins."""

    def cell_end(self, outcome: CellOutcome) -> None:
        """A cell ended (any status)."""

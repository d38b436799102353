"""What a run shows a person: progress bars on stderr and result tables on stdout.

Progress is a log (stderr), so stdout holds only results. A bar is drawn from its first task on:
a run with nothing to show (an lm-eval task, whose loop is lm-eval's) prints nothing, not an empty
line. On a pipe rich draws no live updates, only each bar's final state once.

Result tables are printed at the width they need when that is more than the terminal's (or a
pipe's 80 columns): a cell is never cut or wrapped, since task and metric names are what users
copy into the next command. A table wider than the terminal wraps at the terminal, as any long
line does, and keeps every character.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

WIDE = 100_000
"""The width a table is measured at: wide enough that no cell is wrapped while measuring."""


class RunProgress(Progress):
    """A rich ``Progress`` on stderr that starts drawing when its first task is added."""

    def __init__(self, *columns: Any, enabled: bool = True, **kwargs: Any) -> None:
        columns = columns or (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        super().__init__(*columns, disable=not enabled, transient=False, console=Console(stderr=True), **kwargs)

    def start(self) -> None:
        """Deferred to the first ``add_task``."""

    def add_task(self, *args: Any, **kwargs: Any) -> Any:
        if not self.disable and not self.live.is_started:
            super().start()
        return super().add_task(*args, **kwargs)

    def stop(self) -> None:
        if self.live.is_started:
            super().stop()


@contextmanager
def work_progress(description: str, total: float, enabled: bool = True) -> Iterator[Callable[[float], None]]:
    """One bar of ``total`` units (e.g. formats x examples); yields ``advance(units)``. The bar is
    completed on exit: a search that stops before its upper bound still ends at 100%."""
    with RunProgress(enabled=enabled) as progress:
        task = progress.add_task(description, total=max(total, 1))

        def advance(units: float) -> None:
            progress.advance(task, units)

        yield advance
        progress.update(task, completed=max(total, 1))


def print_table(table: Any, console: Console | None = None) -> None:
    """Print a rich table on stdout (or ``console``) at least as wide as its widest row needs."""
    console = console or Console()
    needed = Measurement.get(console, console.options.update_width(WIDE), table).maximum
    if needed > console.width:
        console = Console(width=needed, file=console.file, highlight=False, force_terminal=console.is_terminal)
    console.print(table)

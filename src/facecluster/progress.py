"""rich progress bars on stderr, handed to the library as a plain ``ProgressFn``.

Silent with ``-q`` or when stderr is not a terminal::

    with progress_bar(quiet=False) as progress:
        detect_paths(catalog, paths, progress=progress)
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from facecluster.reporting import ProgressFn, null_progress

stderr_console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second over rich's recent window (photos for detect, faces for embed), blank until known.

    Example: ``Progress(BarColumn(), RateColumn())`` draws ``… 26.7/s``.
    """

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed  # update() never sets finished_speed, only advance()
        if speed is None:
            return Text("")
        return Text(f"{speed:.1f}/s" if speed < 100 else f"{speed:.0f}/s", style="progress.data.speed")


@contextmanager
def progress_bar(quiet: bool = False) -> Iterator[ProgressFn]:
    """Yield a progress callback drawing one rich bar per stage on stderr (or a no-op)."""
    if quiet or not sys.stderr.isatty():
        yield null_progress
        return
    columns = (
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    tasks: dict[str, TaskID] = {}
    with Progress(*columns, console=stderr_console, transient=False) as bars:

        def report(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                if total == 0:  # nothing to do in this stage (cluster embeds inside detect): no empty "0/0" bar
                    return
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        yield report

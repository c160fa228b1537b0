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
    """Items per second since the stage began (photos for detect, faces for embed), blank for 2 s.

    The average since the first report, not rich's windowed speed: workers finish batches in bursts, and
    a window of two reports a millisecond apart reads thousands a second. Work already done when the stage
    began (the task's ``done_before`` field: a re-run's skipped photos) is not counted. A finished bar
    keeps its rate. Example: ``Progress(BarColumn(), RateColumn())`` draws ``… 26.7/s``.
    """

    min_seconds = 2.0

    def render(self, task: Task) -> Text:
        elapsed = task.finished_time if task.finished_time is not None else task.elapsed
        if not elapsed or elapsed < self.min_seconds:
            return Text("")
        rate = (task.completed - task.fields.get("done_before", 0)) / elapsed
        return Text(f"{rate:.1f}/s" if rate < 100 else f"{rate:.0f}/s", style="progress.data.speed")


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
                tasks[stage] = bars.add_task(stage, total=total, done_before=done)
            bars.update(tasks[stage], completed=done, total=total)

        yield report

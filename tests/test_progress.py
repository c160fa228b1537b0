"""The progress bars on stderr: the rate column, and what a re-run's skipped work does to it."""

from __future__ import annotations

import sys

import pytest
from rich.progress import Progress

from facecluster import progress as progress_module
from facecluster.progress import RateColumn, progress_bar


def test_the_bars_show_the_rate_of_new_work_not_of_skipped_work(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    made: list[Progress] = []

    class Clocked(Progress):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, get_time=lambda: now[0], **kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(progress_module, "Progress", Clocked)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bars draw only on a terminal
    with progress_bar() as report:
        report("detect", 1500, 2000)  # a re-run: 1,500 photos were done before, skipped at once
        for _ in range(10):
            now[0] += 1.0
            report("detect", made[0].tasks[0].completed + 8, 2000)
        task = made[0].tasks[0]
        assert task.speed == pytest.approx(8.0)
        assert str(RateColumn().render(task)) == "8.0/s"
        assert any(isinstance(c, RateColumn) for c in made[0].columns)
        report("embed", 0, 0)  # a stage with nothing to do draws no bar
        assert [t.description for t in made[0].tasks] == ["detect"]


def test_the_rate_is_blank_until_known_and_rounded_when_large() -> None:
    now = [0.0]
    bars = Progress(get_time=lambda: now[0])
    task_id = bars.add_task("embed", total=10_000)
    assert str(RateColumn().render(bars.tasks[0])) == ""
    bars.update(task_id, completed=1)
    now[0] += 2.0
    bars.update(task_id, completed=501)
    assert str(RateColumn().render(bars.tasks[0])) == "250/s"


def test_a_finished_bar_keeps_its_rate() -> None:
    now = [0.0]
    bars = Progress(get_time=lambda: now[0])
    task_id = bars.add_task("detect", total=30)
    for done in (10, 20, 30):
        now[0] += 1.0
        bars.update(task_id, completed=done)
    assert bars.tasks[0].finished and str(RateColumn().render(bars.tasks[0])) == "10.0/s"

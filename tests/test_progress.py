"""The progress bars on stderr: the rate column, and what a re-run's skipped work does to it."""

from __future__ import annotations

import sys

import pytest
from rich.progress import Progress

from facecluster import progress as progress_module
from facecluster.progress import RateColumn, progress_bar


def _clocked(monkeypatch: pytest.MonkeyPatch, now: list[float]) -> list[Progress]:
    made: list[Progress] = []

    class Clocked(Progress):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, get_time=lambda: now[0], **kwargs)  # type: ignore[arg-type]
            made.append(self)

    monkeypatch.setattr(progress_module, "Progress", Clocked)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # the bars draw only on a terminal
    return made


def test_the_bars_show_the_rate_of_new_work_not_of_skipped_work(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    made = _clocked(monkeypatch, now)
    with progress_bar() as report:
        report("detect", 1500, 2000)  # a re-run: 1,500 photos were done before, skipped at once
        for _ in range(10):
            now[0] += 1.0
            report("detect", made[0].tasks[0].completed + 8, 2000)
        task = made[0].tasks[0]
        assert str(RateColumn().render(task)) == "8.0/s"
        assert any(isinstance(c, RateColumn) for c in made[0].columns)
        report("embed", 0, 0)  # a stage with nothing to do draws no bar
        assert [t.description for t in made[0].tasks] == ["detect"]


def test_bursts_do_not_read_as_thousands_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two workers hand in their batches a millisecond apart after 2 s of work: 32 photos in 2 s, not
    # 16 photos in 1 ms (rich's windowed speed).
    now = [0.0]
    made = _clocked(monkeypatch, now)
    with progress_bar() as report:
        report("detect", 0, 40)
        now[0] += 1.0
        assert str(RateColumn().render(made[0].tasks[0])) == ""  # too early to say
        now[0] += 1.0
        report("detect", 16, 40)
        now[0] += 0.001
        report("detect", 32, 40)
        assert made[0].tasks[0].speed is not None and made[0].tasks[0].speed > 10_000  # what rich would draw
        assert str(RateColumn().render(made[0].tasks[0])) == "16.0/s"


def test_a_finished_bar_keeps_its_rate(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    made = _clocked(monkeypatch, now)
    with progress_bar() as report:
        for done in (0, 10, 20, 30):
            report("detect", done, 30)
            now[0] += 1.0
        now[0] += 60.0  # clustering goes on below: the finished detect bar does not slow down
        assert made[0].tasks[0].finished and str(RateColumn().render(made[0].tasks[0])) == "10.0/s"


def test_large_rates_are_rounded() -> None:
    now = [0.0]
    bars = Progress(get_time=lambda: now[0])
    task_id = bars.add_task("embed", total=10_000)
    now[0] += 2.0
    bars.update(task_id, completed=700)
    assert str(RateColumn().render(bars.tasks[0])) == "350/s"

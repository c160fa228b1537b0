"""The CLI entry point and the catalog skeleton."""

from __future__ import annotations

import inspect
import os
import re
import shlex
import stat
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.migrations import MIGRATIONS


def test_help_lists_an_example() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    assert "Example" in result.output


def test_catalog_created_owner_only_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.db"
    with Catalog.open(path) as catalog:
        assert "faces" in catalog.db.table_names()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Reopening applies nothing twice.
    with Catalog.open(path) as catalog:
        assert catalog.db.execute("SELECT count(*) FROM _migrations").fetchone()[0] == len(MIGRATIONS)


def test_a_reader_that_stops_early_ends_the_command_quietly(tmp_path: Path) -> None:
    """`facecluster faces | head -1`: the closed pipe is no error message and no traceback."""
    import subprocess
    import sys

    from tests.fakes import insert_photo

    db = tmp_path / "c.db"
    with Catalog.open(db) as catalog, catalog.transaction():
        for k in range(3000):  # ~400 kB of JSON lines: far more than a pipe holds, so the writer must hit EPIPE
            photo = insert_photo(catalog.db, tmp_path / f"{k:05d}.jpg")
            catalog.db["faces"].insert({"photo_id": photo, "x1": 0, "y1": 0, "x2": 50, "y2": 50,
                                        "probability": 0.99, "created_at": "2026-01-01T00:00:00"})
    proc = subprocess.Popen([sys.executable, "-m", "facecluster", "--db", str(db), "faces"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().startswith(b'{"face_id": 1,')
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 1 and stderr == ""


def test_counted_agrees_in_number() -> None:
    from facecluster.output import counted

    assert [counted(n, "person", "people") for n in (0, 1, 2)] == ["0 people", "1 person", "2 people"]
    assert counted(1, "cluster") == "1 cluster" and counted(5, "cluster") == "5 clusters"


def test_json_output_writes_non_finite_floats_as_null(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    import numpy as np

    from facecluster.output import emit_json, emit_jsonl

    record = {"loss": float("nan"), "history": [{"loss": np.float32("inf")}, {"loss": 0.5}],
              "v": np.array([1.0, -np.inf]), "t": (np.float64("nan"), 1)}
    emit_json(record)
    emit_jsonl([record])
    lines = capsys.readouterr().out.splitlines()

    def strict(word: str) -> None:  # json.loads accepts NaN/Infinity unless told otherwise
        raise ValueError(f"not JSON: {word}")

    assert len(lines) == 2
    for line in lines:
        assert json.loads(line, parse_constant=strict) == {
            "loss": None, "history": [{"loss": None}, {"loss": 0.5}], "v": [1.0, None], "t": [None, 1]}


def test_csv_output_writes_non_finite_floats_as_empty_cells(capsys: pytest.CaptureFixture[str]) -> None:
    import csv
    import io

    import numpy as np

    from facecluster.output import emit_csv

    emit_csv([{"a": float("nan"), "b": np.float32("inf"), "c": [1.0, float("nan")], "d": 0.5, "e": None}],
             ["a", "b", "c", "d", "e"])
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows == [["a", "b", "c", "d", "e"], ["", "", "[1.0, null]", "0.5", ""]]


def test_a_file_system_error_is_one_plain_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the export folder should go")
    out = tmp_path / "file" / "by-person"
    Catalog.open(tmp_path / "c.db").close()  # export reads a catalog; it no longer makes an empty one
    result = CliRunner().invoke(cli, ["--db", str(tmp_path / "c.db"), "export", "--out", str(out)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: Not a directory: {out}\n"


def test_a_busy_catalog_is_one_line_that_says_so(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sqlite3

    from facecluster import catalog as catalog_module

    db = tmp_path / "c.db"
    Catalog.open(db).close()
    monkeypatch.setattr(catalog_module, "BUSY_TIMEOUT_S", 0.1)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another command in the middle of a write
    try:
        (tmp_path / "empty").mkdir()
        result = CliRunner().invoke(cli, ["--db", str(db), "detect", str(tmp_path / "empty")])
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert result.exit_code == 1
    assert result.stderr.startswith("Error: the catalog is busy: another facecluster command is writing")
    assert len(result.stderr.splitlines()) == 1


_SLOW_DETECT = """
import sys, time
from pathlib import Path
from facecluster import cli, pipeline
from facecluster.config import PipelineConfig
from tests.fakes import FakeDetector, fake_crop

busy, db, photos = sys.argv[1:]

class Slow(FakeDetector):
    def detect(self, images):
        if self.calls == 1:  # the second batch: tell the test, then hang until the signal comes
            Path(busy).write_text("busy")
            time.sleep(60)
        return super().detect(images)

pipeline.load_detector = lambda *a, **k: Slow()
pipeline.default_crop = lambda: fake_crop
pipeline.detect_paths.__kwdefaults__["pipeline"] = PipelineConfig(batch_size=2, workers=1)
sys.argv = ["facecluster", "--db", db, "detect", photos]
cli.main()
"""


@pytest.mark.parametrize("stop, code, word", [("term", 143, "Terminated"), ("int", 130, "Interrupted")])
def test_a_stop_while_options_are_parsed_is_not_clicks_aborted(monkeypatch: pytest.MonkeyPatch, stop: str, code: int,
                                                              word: str) -> None:
    from click.testing import CliRunner

    from facecluster import cli as cli_module

    def stopped(*args: object, **kwargs: object) -> None:
        raise cli_module.Terminated() if stop == "term" else KeyboardInterrupt()

    monkeypatch.setattr(cli_module.LazyGroup, "parse_args", stopped)
    result = CliRunner().invoke(cli_module.cli, ["people"])
    assert (result.exit_code, result.stdout, result.stderr) == (code, "", f"{word}: nothing was done.\n")


def test_sigterm_stops_a_command_like_ctrl_c(tmp_path: Path) -> None:
    """`kill PID`: the batch in progress is rolled back, the run recorded `interrupted` with how far it got."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.fakes import make_library

    root = Path(__file__).resolve().parent.parent
    make_library(tmp_path / "photos")
    busy, db = tmp_path / "busy", tmp_path / "c.db"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root / "src"), str(root), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_DETECT, str(busy), str(db), str(tmp_path / "photos")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 60
    while not busy.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert busy.exists(), "the command never reached its second batch"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert err.decode() == "Terminated: the catalog is consistent; run the command again to resume.\n"
    with Catalog.open(db) as catalog:
        (status, stats), = catalog.db.execute("SELECT status, stats FROM runs").fetchall()
        photos = catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0]
    assert status == "interrupted"
    assert photos == 2  # the first batch only: the second was rolled back
    assert json.loads(stats)["progress"]["detect"] == {"done": 2, "total": 8}


def test_a_read_only_catalog_is_one_line_that_says_so(tmp_path: Path, enforced_permissions: None) -> None:
    db = tmp_path / "c.db"
    Catalog.open(db).close()
    db.chmod(0o400)  # readable: it opens, and the first write fails
    result = CliRunner().invoke(cli, ["--db", str(db), "label", "--rename", "Ada", "Ada Lovelace"])
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: the catalog {db} is read-only: facecluster writes to it")
    assert len(result.stderr.splitlines()) == 1


def _help_examples(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(command path, example line) for every ``facecluster ...`` line after ``Example:`` in every help."""
    found = []
    text = inspect.cleandoc(command.help or "")
    lines = text.split("Example:", 1)[1].splitlines() if "Example:" in text else []
    joined: list[str] = []
    for line in lines:
        if joined and joined[-1].endswith("\\"):
            joined[-1] = joined[-1][:-1] + " " + line.strip()
        else:
            joined.append(line.strip())
    found += [(path, line) for line in joined if line.startswith("facecluster ")]
    if isinstance(command, click.Group):
        ctx = click.Context(command)
        for name in command.list_commands(ctx):
            found += _help_examples(command.get_command(ctx, name), (*path, name))
    return found


def _parse(args: list[str]) -> None:
    """Parse ``facecluster ARGS`` down to the subcommand, as the shell would, without running anything."""
    command: click.Command = cli
    name, parent = "facecluster", None
    while True:
        ctx = command.make_context(name, args, parent=parent)
        if not isinstance(command, click.Group):
            return
        rest = [*ctx._protected_args, *ctx.args]
        name, command, args = command.resolve_command(ctx, rest)
        parent = ctx


def test_every_help_example_parses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ``Example:`` line of every command's help names options and arguments the command takes."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    examples = _help_examples(cli)
    assert {path for path, _ in examples} >= {(name,) for name in cli.list_commands(click.Context(cli))}
    for path, line in examples:
        words = [os.path.expanduser(w) for w in shlex.split(re.split(r"\s[|>]\s", line)[0])[1:]]
        command: click.Command = cli
        for name in path:
            command = command.get_command(click.Context(command), name)  # type: ignore[attr-defined]
        needs = {opt: p.type for p in command.params for opt in p.opts
                 if isinstance(p.type, click.Path) and p.type.exists}
        for option, value in zip(words, words[1:]):  # what an example reads exists here (contents aside)
            if option in needs:
                if needs[option].dir_okay and not needs[option].file_okay:
                    Path(value).mkdir(parents=True, exist_ok=True)
                elif not Path(value).exists():
                    Path(value).touch()
        try:
            _parse(words)
        except click.UsageError as exc:
            pytest.fail(f"`facecluster {' '.join(path)} --help` example {line!r}: {exc.format_message()}")


@pytest.mark.parametrize("fmt", ["--json", "--csv"])
def test_output_never_stops_half_way_on_a_stdout_that_cannot_encode_a_name(tmp_path: Path, fmt: str) -> None:
    import csv
    import io
    import json
    import subprocess
    import sys

    from test_site import make_library

    lib = make_library(tmp_path)  # people "Zoë Ñúñez" and "AC/DC", paths under "Été 2024/"
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONIOENCODING": "ascii", "PYTHONPATH": str(root / "src")}
    done = subprocess.run([sys.executable, "-m", "facecluster", "--db", str(lib.db), "faces", fmt],
                          capture_output=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    text = done.stdout.decode("ascii")  # nothing but ASCII went out
    if fmt == "--json":  # escaped as \uXXXX: the same JSON
        assert "Zoë Ñúñez" in {json.loads(line)["person"] for line in text.splitlines()}
    else:  # no escape exists in CSV: the characters come out as \xNN, and every row is there
        rows = list(csv.DictReader(io.StringIO(text)))
        assert len(rows) == len(text.splitlines()) - 1 and r"Zo\xeb \xd1\xfa\xf1ez" in {r["person"] for r in rows}


def test_an_error_naming_a_path_that_is_not_utf8_or_holds_a_newline_is_one_printable_line(tmp_path: Path) -> None:
    db = os.fsdecode(bytes(tmp_path) + b"/caf\xe9\nx.db")  # Latin-1 bytes and a newline: legal in a Linux name
    result = CliRunner().invoke(cli, ["--db", db, "people"])
    assert result.exit_code == 1
    assert result.stderr == f"Error: no catalog at {tmp_path}/caf\\xe9\\nx.db: run facecluster cluster PHOTOS first\n"


def _run_with_closed(stream: int, args: list[str], cwd: Path) -> tuple[int, str, str]:
    """Run ``facecluster ARGS`` with file descriptor ``stream`` closed (``<&-``, ``>&-``, ``2>&-``): its exit
    code, stdout and stderr (empty for the closed one)."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    pipes = {0: subprocess.DEVNULL, 1: subprocess.PIPE, 2: subprocess.PIPE}
    pipes[stream] = None  # inherited, then closed in the child before Python starts
    done = subprocess.run([sys.executable, "-m", "facecluster", *args], stdin=pipes[0], stdout=pipes[1],
                          stderr=pipes[2], preexec_fn=lambda: os.close(stream), env=env, cwd=cwd, timeout=120)
    return done.returncode, (done.stdout or b"").decode(), (done.stderr or b"").decode()


def test_a_closed_stdin_is_an_empty_path_list(tmp_path: Path) -> None:
    """`facecluster detect - <&-` (a cron job or daemon with stdin closed): no paths, not a traceback."""
    code, out, err = _run_with_closed(0, ["--db", str(tmp_path / "c.db"), "detect", "-", "--json"], tmp_path)
    assert (code, err) == (0, "0 files: 0 detected (0 faces), 0 unchanged, 0 moved or renamed, 0 copies of "
                              "known photos, 0 failed\n")
    assert '"files": 0' in out


def test_a_closed_stderr_only_drops_the_messages(tmp_path: Path) -> None:
    """`facecluster detect - --json 2>&-`: the command runs; its messages have nowhere to go."""
    code, out, _ = _run_with_closed(2, ["--db", str(tmp_path / "c.db"), "detect", "-", "--json"], tmp_path)
    assert code == 0 and '"files": 0' in out


def test_a_closed_stdout_fails_only_a_command_that_writes_to_it(tmp_path: Path) -> None:
    """`>&-`: a command with nothing for stdout succeeds; one with data says in one line that it cannot write."""
    from tests.fakes import insert_photo

    db = tmp_path / "c.db"
    Catalog.open(db).close()
    assert _run_with_closed(1, ["--db", str(db), "people", "-q"], tmp_path) == (0, "", "")
    with Catalog.open(db) as catalog, catalog.transaction():
        photo = insert_photo(catalog.db, tmp_path / "a.jpg")
        catalog.db["faces"].insert({"photo_id": photo, "x1": 0, "y1": 0, "x2": 50, "y2": 50,
                                    "probability": 0.99, "created_at": "2026-01-01T00:00:00"})
    code, _, err = _run_with_closed(1, ["--db", str(db), "faces"], tmp_path)
    assert (code, err) == (1, "Error: stdout is closed: the output has nowhere to go\n")


def test_the_detect_summary_says_one_file_one_face_one_copy(capsys: pytest.CaptureFixture[str]) -> None:
    from facecluster.commands.detect import report_files
    from facecluster.pipeline import DetectReport

    report_files(DetectReport(files=1, detected=1, faces=1, copies=1), quiet=False)
    assert capsys.readouterr().err == ("1 file: 1 detected (1 face), 0 unchanged, 0 moved or renamed, 1 copy of "
                                       "known photos, 0 failed\n")

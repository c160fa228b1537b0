"""The CLI entry point and the catalog skeleton."""

from __future__ import annotations

import stat
from pathlib import Path

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


def test_a_file_system_error_is_one_plain_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("a file where the export folder should go")
    out = tmp_path / "file" / "by-person"
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

"""The CLI entry point and the catalog skeleton."""

from __future__ import annotations

import stat
from pathlib import Path

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

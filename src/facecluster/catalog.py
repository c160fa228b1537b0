"""The SQLite catalog: photos, faces, embeddings, clusters, people and runs in one file.

Opening applies pending migrations, turns on WAL and foreign keys, and creates the file readable by
its owner only (faces are biometric data)::

    catalog = Catalog.open(Path("photos.db"))
    catalog.db["photos"].count
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from sqlite_utils import Database

from facecluster.errors import CatalogError
from facecluster.migrations import apply_migrations


class Catalog:
    """A handle on one catalog file; ``.db`` is the sqlite-utils ``Database``."""

    def __init__(self, db: Database, path: Path | None) -> None:
        self.db = db
        self.path = path

    @classmethod
    def open(cls, path: Path | str | None) -> "Catalog":
        """Open (creating if needed) the catalog at ``path``; ``None`` or ``":memory:"`` is in memory."""
        if path is None or str(path) == ":memory:":
            db = Database(memory=True)
            file_path = None
        else:
            file_path = Path(path).expanduser()
            if file_path.is_dir():
                raise CatalogError(f"catalog path {file_path} is a directory; give a file name such as photos.db")
            try:
                file_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not file_path.exists():
                    # Create it owner-only before SQLite opens it: faces are biometric data.
                    fd = os.open(file_path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
                conn = sqlite3.connect(str(file_path), timeout=30)
            except (OSError, sqlite3.Error) as exc:
                raise CatalogError(f"cannot open catalog {file_path}: {exc}") from exc
            db = Database(conn)
        try:
            db.execute("PRAGMA foreign_keys = ON")
            if file_path is not None:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            apply_migrations(db)
        except sqlite3.DatabaseError as exc:
            raise CatalogError(f"cannot use catalog {file_path}: {exc}") from exc
        return cls(db, file_path)

    def close(self) -> None:
        """Close the underlying connection."""
        self.db.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""Numbered schema migrations, applied in order when the catalog opens.

Add a migration by appending a function ``mNNN_description(db)`` to ``MIGRATIONS``; never edit one
that has shipped. Each runs inside one transaction together with its row in ``_migrations``::

    def m002_add_photo_taken_at(db: Database) -> None:
        db["photos"].add_column("taken_at", str)
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import datetime, timezone

from sqlite_utils import Database

from facecluster.dblock import begin_immediate
from facecluster.errors import CatalogError


def m001_initial(db: Database) -> None:
    """Photos, the paths they were seen at, faces, models, embeddings, clusters, people, runs."""
    _execute_script(
        db,
        """
        CREATE TABLE photos (
            id INTEGER PRIMARY KEY,
            hash TEXT NOT NULL UNIQUE,          -- sha256 of the file content: identity of a photo
            path TEXT NOT NULL,                 -- where it was last seen
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            width INTEGER,                      -- after EXIF orientation
            height INTEGER,
            orientation INTEGER,                -- EXIF orientation tag (1 = none)
            status TEXT NOT NULL DEFAULT 'new', -- new | detected | error
            error TEXT,                         -- one-line reason when status = 'error'
            detector TEXT,                      -- detection configuration key that produced the faces
            n_faces INTEGER,
            added_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX photos_path ON photos(path);

        -- Every path a photo was seen at, so re-runs skip unchanged files without hashing them.
        CREATE TABLE files (
            path TEXT PRIMARY KEY,
            photo_id INTEGER REFERENCES photos(id) ON DELETE CASCADE,
            size INTEGER NOT NULL,
            mtime REAL NOT NULL,
            seen_at TEXT NOT NULL,
            error TEXT                          -- set when the file could not be read at all
        );
        CREATE INDEX files_photo ON files(photo_id);

        CREATE TABLE people (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE,
            created_at TEXT NOT NULL
        );

        CREATE TABLE models (
            id TEXT PRIMARY KEY,                -- e.g. 'casia-webface:415ef259' or 'trained:1a2b3c4d'
            kind TEXT NOT NULL,                 -- pretrained | trained
            path TEXT,
            sha256 TEXT,
            dim INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );

        CREATE TABLE runs (
            id INTEGER PRIMARY KEY,
            command TEXT NOT NULL,
            args TEXT,                          -- JSON
            started_at TEXT NOT NULL,
            finished_at TEXT,
            status TEXT NOT NULL DEFAULT 'running', -- running | ok | partial | error | interrupted
            stats TEXT                          -- JSON
        );

        CREATE TABLE clusters (
            id INTEGER PRIMARY KEY,
            model_id TEXT NOT NULL REFERENCES models(id),
            run_id INTEGER REFERENCES runs(id),
            person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
            size INTEGER NOT NULL DEFAULT 0,
            ignored INTEGER NOT NULL DEFAULT 0, -- marked "not a face" / ignored by the user
            created_at TEXT NOT NULL
        );

        CREATE TABLE faces (
            id INTEGER PRIMARY KEY,
            photo_id INTEGER NOT NULL REFERENCES photos(id) ON DELETE CASCADE,
            x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL, -- oriented pixels
            landmarks TEXT,                     -- JSON [[x, y] x 5]: eyes, nose, mouth corners
            probability REAL NOT NULL,
            crop BLOB,                          -- the aligned crop, encoded (see crop_format)
            crop_format TEXT,                   -- e.g. 'png' or 'jpeg'
            cluster_id INTEGER REFERENCES clusters(id) ON DELETE SET NULL,
            person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
            person_source TEXT,                 -- label (cluster named by user) | user (moved) | auto
            ignored INTEGER NOT NULL DEFAULT 0, -- "not a face" / ignored by the user
            created_at TEXT NOT NULL
        );
        CREATE INDEX faces_photo ON faces(photo_id);
        CREATE INDEX faces_cluster ON faces(cluster_id);
        CREATE INDEX faces_person ON faces(person_id);

        -- "this face is not this person": kept out of that person by every later clustering.
        CREATE TABLE face_rejections (
            face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
            person_id INTEGER NOT NULL REFERENCES people(id) ON DELETE CASCADE,
            created_at TEXT NOT NULL,
            PRIMARY KEY (face_id, person_id)
        );

        CREATE TABLE embeddings (
            face_id INTEGER NOT NULL REFERENCES faces(id) ON DELETE CASCADE,
            model_id TEXT NOT NULL REFERENCES models(id),
            dim INTEGER NOT NULL,
            dtype TEXT NOT NULL DEFAULT 'float32', -- float32 | uint8 (quantised, see scale)
            scale REAL,                            -- dequantisation scale for uint8
            vector BLOB NOT NULL,
            created_at TEXT NOT NULL,
            PRIMARY KEY (face_id, model_id)
        );
        CREATE INDEX embeddings_model ON embeddings(model_id);
        """
    )


def m002_faces_clustered_with(db: Database) -> None:
    """Which model's clustering last looked at a face, so a re-run with nothing new does nothing."""
    db.execute("ALTER TABLE faces ADD COLUMN clustered_with TEXT")


def m003_cluster_ids_never_reused(db: Database) -> None:
    """Cluster ids are never handed out twice (AUTOINCREMENT), so an old id is "no cluster", not another group.

    Users name clusters by id (``label 5 Ada``, the commands on a review site built earlier); without
    AUTOINCREMENT SQLite gives a new cluster the id of the largest deleted one. The table is rebuilt with
    foreign keys off (``apply_migrations``), so ``faces.cluster_id`` keeps pointing at the same rows.
    """
    db.execute(
        """
        CREATE TABLE clusters_new (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            model_id TEXT NOT NULL REFERENCES models(id),
            run_id INTEGER REFERENCES runs(id),
            person_id INTEGER REFERENCES people(id) ON DELETE SET NULL,
            size INTEGER NOT NULL DEFAULT 0,
            ignored INTEGER NOT NULL DEFAULT 0, -- marked "not a face" / ignored by the user
            created_at TEXT NOT NULL
        )
        """
    )
    db.execute("INSERT INTO clusters_new (id, model_id, run_id, person_id, size, ignored, created_at) "
               "SELECT id, model_id, run_id, person_id, size, ignored, created_at FROM clusters")
    db.execute("DROP TABLE clusters")
    db.execute("ALTER TABLE clusters_new RENAME TO clusters")


#: Migrations that rebuild a table other tables point at: run with foreign keys off, so dropping the old
#: table neither cascades nor sets references to NULL.
REBUILDS_TABLES = {"m003_cluster_ids_never_reused"}

MIGRATIONS: list[Callable[[Database], None]] = [m001_initial, m002_faces_clustered_with, m003_cluster_ids_never_reused]


def now() -> str:
    """UTC timestamp used in every ``*_at`` column, e.g. ``2026-11-22T05:28:21+00:00``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def timestamp(seconds: float) -> str:
    """``now()``'s format for a ``time.time()`` value, rounded down to the second.

    Example: ``timestamp(1e9)`` -> ``"2001-09-09T01:46:40+00:00"``.
    """
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds")


def check_is_catalog(db: Database) -> None:
    """Refuse (``CatalogError``) a database that has tables but no ``_migrations``: another program's file.

    Run it before anything writes (WAL mode, migrations): a ``--db`` that names some other application's
    SQLite file by mistake must be left exactly as it was. An empty database is a new catalog. Example::

        check_is_catalog(Database("places.sqlite"))
        # CatalogError: it is an SQLite database but not a facecluster catalog (its tables: moz_places) ...
    """
    tables = sorted(row[0] for row in db.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'").fetchall())
    if tables and "_migrations" not in tables:
        shown = ", ".join(tables[:5]) + (f" and {len(tables) - 5} more" if len(tables) > 5 else "")
        raise CatalogError(f"it is an SQLite database but not a facecluster catalog (its tables: {shown}); "
                           "it was left untouched: give another --db")


def pending_migrations(db: Database) -> list[str]:
    """The names of the migrations ``db`` still needs (oldest first), read without writing anything.

    Raises ``CatalogError`` for a catalog a newer facecluster has migrated further. Example::

        pending_migrations(Database(memory=True))   # every name in MIGRATIONS: a new, empty catalog
    """
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'").fetchone()
    done = {row[0] for row in db.execute("SELECT name FROM _migrations").fetchall()} if has_table else set()
    # A newer facecluster changed the schema in ways this one does not know: writing could damage it.
    unknown = sorted(done - {m.__name__ for m in MIGRATIONS})
    if unknown:
        raise CatalogError(f"it was written by a newer facecluster (schema step {unknown[-1]} is unknown here): "
                           "upgrade facecluster to use it")
    return [m.__name__ for m in MIGRATIONS if m.__name__ not in done]


def apply_migrations(db: Database) -> list[str]:
    """Apply every migration not yet recorded; return the names applied (oldest first)."""
    db.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    pending = set(pending_migrations(db))
    applied = []
    for migration in MIGRATIONS:
        name = migration.__name__
        if name not in pending:
            continue
        rebuild = name in REBUILDS_TABLES
        if rebuild:
            db.execute("PRAGMA foreign_keys = OFF")  # only takes effect outside a transaction, so here
        try:
            # One transaction holding the write lock: the schema change and its record land together, and
            # another process opening the catalog at the same moment waits, then finds the step done.
            begin_immediate(db.conn)
            try:
                if db.execute("SELECT 1 FROM _migrations WHERE name = ?", [name]).fetchone() is None:
                    migration(db)
                    db.execute("INSERT INTO _migrations (name, applied_at) VALUES (?, ?)", [name, now()])
                    applied.append(name)
            except BaseException:
                db.conn.rollback()
                raise
            db.conn.commit()
        finally:
            if rebuild:
                db.execute("PRAGMA foreign_keys = ON")
    return applied


def _execute_script(db: Database, script: str) -> None:
    """Run the statements of ``script`` one by one in the open transaction (``executescript`` would
    commit it first, letting another process in half-way)."""
    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in a migration: {statement.strip()[:60]}")

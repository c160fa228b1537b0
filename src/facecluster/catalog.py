"""The SQLite catalog: photos, faces, embeddings, clusters, people and runs in one file.

Opening applies pending migrations, turns on WAL and foreign keys, and creates the file readable by
its owner only (faces are biometric data)::

    catalog = Catalog.open(Path("photos.db"))
    catalog.db["photos"].count
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlite_utils import Database

from facecluster.dblock import begin_immediate, is_write_conflict
from facecluster.errors import CatalogError
from facecluster.migrations import apply_migrations, check_is_catalog, now, pending_migrations

#: How long a write waits for another process's write to finish before giving up (seconds).
BUSY_TIMEOUT_S = 30.0


class Catalog:
    """A handle on one catalog file; ``.db`` is the sqlite-utils ``Database``."""

    def __init__(self, db: Database, path: Path | None) -> None:
        self.db = db
        self.path = path
        self.read_only = False  # opened with ``only_reads`` where the file cannot be written
        self._depth = 0  # how many ``transaction()`` blocks are open (inner ones are savepoints)

    @classmethod
    def open(cls, path: Path | str | None, *, create: bool = True, only_reads: bool = False) -> "Catalog":
        """Open the catalog at ``path``; ``None`` or ``":memory:"`` is in memory.

        A missing file is created (with its folders) unless ``create=False``, for commands that only read or
        name: a mistyped ``--db`` then gets an error instead of a new, empty catalog. ``only_reads=True``
        (commands that never write, such as ``people``) opens a catalog that cannot be written (a backup
        on a read-only disk, another user's file) read-only instead of refusing it; a writable one opens
        as usual, so its pending migrations are still applied::

            Catalog.open("photos.db", create=False)   # CatalogError: no catalog at photos.db: ...
            Catalog.open("/mnt/backup/photos.db", create=False, only_reads=True).read_only   # True
        """
        try:
            return cls._open(path, create=create)
        except CatalogError as exc:
            file_path = Path(path).expanduser() if path is not None and str(path) != ":memory:" else None
            if not (only_reads and file_path is not None and file_path.is_file() and exc.write_refused):
                raise
            return cls._open_read_only(file_path, refusal=exc)

    @classmethod
    def _open_read_only(cls, path: Path, refusal: CatalogError) -> "Catalog":
        """Open ``path`` with SQLite's ``mode=ro``; where even reading a WAL catalog would need to create
        ``NAME-shm`` (a read-only folder), as ``immutable``. That is exact only while nothing writes the
        file: true here, since every connection to a WAL catalog keeps its ``NAME-shm``, and a missing one
        means none is open. It is still refused when ``NAME-wal`` holds changes the file itself lacks
        (``immutable`` would not see them)."""
        wal = path.with_name(path.name + "-wal")
        uri = path.absolute().as_uri()
        conn = None
        for query in ("mode=ro", "immutable=1"):
            if query == "immutable=1" and wal.exists() and wal.stat().st_size > 0:
                raise CatalogError(f"{refusal}; reading it without writing is not possible either: its "
                                   f"{wal.name} holds changes that SQLite can only read by writing {path.name}-shm")
            try:
                conn = sqlite3.connect(f"{uri}?{query}", uri=True, timeout=BUSY_TIMEOUT_S)
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # where mode=ro meets a missing -shm
                break
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                    conn = None
                if query == "immutable=1" or not _is_write_refusal(exc):
                    raise CatalogError(f"cannot use catalog {path}: {exc}") from exc
        assert conn is not None
        db = Database(conn)
        try:
            check_is_catalog(db)
            db.execute("PRAGMA foreign_keys = ON")
            pending = pending_migrations(db)
        except (sqlite3.DatabaseError, CatalogError) as exc:
            conn.close()
            raise CatalogError(f"cannot use catalog {path}: {exc}") from exc
        if pending:
            conn.close()
            raise CatalogError(f"{refusal}; it was written by an older facecluster, and reading it needs an "
                               "upgrade that writes to it (open it once where it is writable)")
        catalog = cls(db, path)
        catalog.read_only = True
        return catalog

    @classmethod
    def _open(cls, path: Path | str | None, *, create: bool) -> "Catalog":
        if path is None or str(path) == ":memory:":
            db = Database(memory=True)
            file_path = None
        else:
            file_path = Path(path).expanduser()
            if file_path.is_dir():
                raise CatalogError(f"catalog path {file_path} is a directory; give a file name such as photos.db")
            if not create and not file_path.exists():
                raise CatalogError(f"no catalog at {file_path}: run facecluster cluster PHOTOS first")
            try:
                file_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                if not file_path.exists():
                    # Create it owner-only before SQLite opens it: faces are biometric data.
                    fd = os.open(file_path, os.O_CREAT | os.O_WRONLY, 0o600)
                    os.close(fd)
                conn = sqlite3.connect(str(file_path), timeout=BUSY_TIMEOUT_S)
            except (OSError, sqlite3.Error) as exc:
                reason = unwritable_reason(file_path)
                raise CatalogError(reason or f"cannot open catalog {file_path}: {exc}",
                                   write_refused=reason is not None) from exc
            db = Database(conn)
        try:
            check_is_catalog(db)  # before WAL mode: another program's SQLite file stays exactly as it is
            db.execute("PRAGMA foreign_keys = ON")
            if file_path is not None:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("PRAGMA synchronous = NORMAL")
            apply_migrations(db)
        except (sqlite3.DatabaseError, CatalogError) as exc:
            db.conn.close()
            # Turning on WAL and migrating write to the file and create FILE-wal/-shm: say which one SQLite
            # could not write rather than its "attempt to write a readonly database".
            reason = unwritable_reason(file_path) if file_path is not None and _is_write_refusal(exc) else None
            raise CatalogError(reason or f"cannot use catalog {file_path or ':memory:'}: {exc}",
                               write_refused=file_path is not None and _is_write_refusal(exc)) from exc
        return cls(db, file_path)

    @contextmanager
    def transaction(self, *, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write: everything inside commits together or not at all.

        It takes the catalog's write lock at once (``BEGIN IMMEDIATE``, waiting up to ``BUSY_TIMEOUT_S`` for
        another process's write to finish), so what it reads inside is what it writes over: another command
        cannot change the catalog between the two. ``immediate=False`` is optimistic instead: it reads a
        snapshot without holding the lock, and its first write fails at once (``is_write_conflict``) if
        another process wrote since; the caller then does its work again (``cluster_catalog``: a long
        computation that should not make every other command wait). A ``transaction()`` inside another is
        a savepoint: an error inside undoes only its own writes, and the outer one commits. Use plain SQL
        inside (sqlite-utils' write helpers commit on their own)::

            with catalog.transaction() as conn:
                conn.execute("UPDATE people SET name = ? WHERE id = ?", ["Ada", 1])
        """
        conn = self.db.conn
        if self._depth:
            yield from self._savepoint(conn)
            return
        if not conn.in_transaction:  # (one opened by a bare write before is simply carried on)
            if immediate:
                begin_immediate(conn)
            else:
                conn.execute("BEGIN")
        self._depth = 1
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        else:
            conn.commit()
        finally:
            self._depth = 0

    def _savepoint(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        name = f"facecluster_{self._depth}"
        conn.execute(f"SAVEPOINT {name}")
        self._depth += 1
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:  # (SQLite may have rolled everything back already, e.g. on a full disk)
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        else:
            conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    # -- runs ---------------------------------------------------------------------------------------

    @contextmanager
    def run(self, command: str, args: dict[str, Any] | None = None) -> Iterator["Run"]:
        """Record one command in ``runs``: ``ok``/``partial`` from ``run.status``, else error/interrupted.

            with catalog.run("detect", {"paths": ["~/Pictures"]}) as run:
                run.stats["photos"] = 12
        """
        with self.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (command, args, started_at, status) VALUES (?, ?, ?, 'running')",
                [command, json.dumps(args or {}, default=str), now()],
            )
        record = Run(id=int(cursor.lastrowid or 0))
        status = "error"
        try:
            yield record
            status = record.status
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        finally:
            self.db.conn.rollback()  # anything half-written by the interrupted batch
            with self.transaction() as conn:
                conn.execute(
                    "UPDATE runs SET finished_at = ?, status = ?, stats = ? WHERE id = ?",
                    [now(), status, json.dumps(record.stats, default=str), record.id],
                )

    def last_run_args(self, command: str) -> dict[str, Any] | None:
        """The arguments of the latest finished (ok or partial) run of ``command``, or None.

        Arguments that are not a JSON object (a catalog edited by hand, or by an older ``forget``) count
        as no previous run: they only inform the next run, which must not fail for them::

            catalog.last_run_args("cluster")   # {"paths": [], "full": False, ...}
        """
        row = self.db.execute(
            "SELECT args FROM runs WHERE command = ? AND status IN ('ok', 'partial') ORDER BY id DESC LIMIT 1",
            [command],
        ).fetchone()
        if not row or not row[0]:
            return None
        try:
            args = json.loads(row[0])
        except ValueError:
            return None
        return args if isinstance(args, dict) else None

    # -- models and embeddings ----------------------------------------------------------------------

    def ensure_model(self, model_id: str, dim: int, *, path: str | None = None, sha256: str | None = None) -> None:
        """Register a model row (once); its kind is ``trained`` for ``trained:...`` ids."""
        kind = "trained" if model_id.startswith("trained:") else "pretrained"
        with self.transaction() as conn:
            row = conn.execute("SELECT dim FROM models WHERE id = ?", [model_id]).fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO models (id, kind, path, sha256, dim, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [model_id, kind, path, sha256, dim, now()],
                )
            elif int(row[0]) != dim:
                raise CatalogError(f"model {model_id} is recorded with dimension {row[0]}, not {dim}")

    def load_embeddings(self, model_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(face_ids, X)`` for every face with a vector of ``model_id``; X is (n, dim) float32."""
        rows = self.db.execute(
            "SELECT face_id, dim, dtype, scale, vector FROM embeddings WHERE model_id = ? ORDER BY face_id",
            [model_id],
        ).fetchall()
        if not rows:
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32)
        ids = np.array([r[0] for r in rows], dtype=np.int64)
        X = np.stack([decode_vector(r[1], r[2], r[3], r[4]) for r in rows])
        return ids, X

    def close(self) -> None:
        """Close the underlying connection."""
        self.db.conn.close()

    def __enter__(self) -> "Catalog":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Run:
    """The ``runs`` row of the command in progress: set ``status`` to ``partial`` and fill ``stats``."""

    id: int
    status: str = "ok"
    stats: dict[str, Any] = field(default_factory=dict)


def encode_vector(vector: np.ndarray) -> bytes:
    """The ``embeddings.vector`` blob of a float32 vector (little-endian)."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(dim: int, dtype: str, scale: float | None, blob: bytes) -> np.ndarray:
    """Inverse of ``encode_vector``: the float32 vector of one ``embeddings`` row.

    Also reads 8-bit rows (``dtype = 'uint8'``, see ``facecluster.quantize``), back on the unit sphere."""
    if dtype == "float32":
        vector = np.frombuffer(blob, dtype="<f4")
    elif dtype == "uint8" and scale is not None:
        from facecluster.quantize import from_blob

        vector = from_blob(blob, scale)
    else:
        raise CatalogError(f"embedding dtype {dtype!r} is not readable; re-run `facecluster embed --force`")
    if vector.shape[0] != dim:
        raise CatalogError(f"an embedding blob holds {vector.shape[0]} values, not {dim}")
    return vector.astype(np.float32)


def _is_write_refusal(exc: BaseException) -> bool:
    # SQLITE_READONLY* ("attempt to write a readonly database") or SQLITE_CANTOPEN ("unable to open ...").
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN")) or "readonly" in str(exc) or "unable to open" in str(exc)


def unwritable_reason(path: Path) -> str | None:
    """Why the catalog at ``path`` cannot be written, as one line, or None when nothing stands in the way.

    Besides the file, SQLite (in WAL mode) creates ``NAME-wal`` and ``NAME-shm`` next to it, so its folder
    must be writable too (unless both already exist and are writable)::

        unwritable_reason(Path("/mnt/backup/photos.db"))   # 'the catalog /mnt/backup/photos.db is read-only: ...'
    """
    path = Path(path)
    if not path.exists():
        folder = path.parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            return f"cannot create the catalog {path}: {folder} is a file, not a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"cannot create the catalog {path}: the folder {folder} is not writable"
        return None
    if not os.access(path, os.W_OK):
        return (f"the catalog {path} is read-only: facecluster writes to it (make it writable, or copy it to a "
                "writable folder and pass that copy with --db)")
    sidecars = [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]
    for sidecar in sidecars:
        if sidecar.exists() and not os.access(sidecar, os.W_OK):
            return f"the catalog's {sidecar} is read-only: make it writable (SQLite writes to it)"
    if not all(s.exists() for s in sidecars) and not os.access(path.parent, os.W_OK | os.X_OK):
        return (f"the catalog's folder {path.parent} is not writable: SQLite needs to create {path.name}-wal and "
                f"{path.name}-shm next to {path.name} (make the folder writable, or move the catalog)")
    return None

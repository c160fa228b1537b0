"""The catalog: migrations, runs, models, vectors, transactions."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from facecluster.catalog import Catalog, decode_vector, encode_vector
from facecluster.errors import CatalogError
from facecluster.migrations import MIGRATIONS


def test_migrations_applied_once(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Catalog.open(path).close()
    with Catalog.open(path) as catalog:
        names = [r[0] for r in catalog.db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == [m.__name__ for m in MIGRATIONS]
        assert "clustered_with" in catalog.db["faces"].columns_dict
        assert catalog.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_directory_is_not_a_catalog(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="directory"):
        Catalog.open(tmp_path)


def test_a_catalog_from_a_newer_version_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    with Catalog.open(path) as catalog, catalog.transaction() as conn:
        conn.execute("INSERT INTO _migrations (name, applied_at) VALUES ('m999_from_the_future', 'x')")
    before = path.read_bytes()
    with pytest.raises(CatalogError, match="newer facecluster .*m999_from_the_future"):
        Catalog.open(path)
    assert path.read_bytes() == before


@pytest.mark.parametrize("schema", ["CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)",
                                    "CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)"])
def test_another_programs_sqlite_file_is_refused_untouched(tmp_path: Path, schema: str) -> None:
    # `--db ~/.mozilla/.../places.sqlite` by mistake: facecluster's tables were added to it (or, where a
    # table name clashed, a stray _migrations table was left behind and the open failed half-way).
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    with conn:
        conn.execute(schema)
        conn.execute("INSERT INTO " + schema.split()[2] + " (id) VALUES (1)")
    conn.close()
    before = path.read_bytes()
    for create in (True, False):
        with pytest.raises(CatalogError, match=r"^cannot use catalog .*other.sqlite: it is an SQLite database but "
                                               r"not a facecluster catalog \(its tables: "):
            Catalog.open(path, create=create)
    assert path.read_bytes() == before
    assert not (tmp_path / "other.sqlite-wal").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("PRAGMA user_version = 0").connection.close()  # an SQLite file, no tables
    with Catalog.open(empty) as catalog:
        assert "_migrations" in catalog.db.table_names()


def test_run_rows_record_status_and_stats() -> None:
    catalog = Catalog.open(None)
    with catalog.run("detect", {"paths": ["a"]}) as run:
        run.stats["photos"] = 3
    with catalog.run("detect") as run:
        run.status = "partial"
    with pytest.raises(KeyboardInterrupt), catalog.run("cluster"):
        raise KeyboardInterrupt
    with pytest.raises(ValueError), catalog.run("cluster"):
        raise ValueError("boom")
    rows = catalog.db.execute("SELECT command, status, stats, finished_at IS NOT NULL FROM runs ORDER BY id").fetchall()
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("detect", "ok", 1), ("detect", "partial", 1), ("cluster", "interrupted", 1), ("cluster", "error", 1),
    ]
    assert '"photos": 3' in rows[0][2]
    assert catalog.last_run_args("detect") == {}
    assert catalog.last_run_args("cluster") is None


def test_transaction_rolls_back_on_error() -> None:
    catalog = Catalog.open(None)
    with pytest.raises(RuntimeError), catalog.transaction() as conn:
        conn.execute("INSERT INTO people (name, created_at) VALUES ('x', 'now')")
        raise RuntimeError
    assert catalog.db.execute("SELECT count(*) FROM people").fetchone()[0] == 0


def test_models_and_vectors() -> None:
    catalog = Catalog.open(None)
    catalog.ensure_model("trained:1234abcd", 128)
    catalog.ensure_model("trained:1234abcd", 128)
    assert catalog.db.execute("SELECT kind, dim FROM models").fetchall() == [("trained", 128)]
    with pytest.raises(CatalogError, match="dimension"):
        catalog.ensure_model("trained:1234abcd", 512)
    v = np.random.default_rng(0).normal(size=128).astype(np.float32)
    np.testing.assert_array_equal(decode_vector(128, "float32", None, encode_vector(v)), v)
    with pytest.raises(CatalogError):
        decode_vector(64, "float32", None, encode_vector(v))
    from facecluster.quantize import quantize

    unit = v / np.linalg.norm(v)
    codes, scale = quantize(unit[None])
    back = decode_vector(128, "uint8", float(scale[0]), codes[0].tobytes())
    assert float(((back - unit) ** 2).sum()) < 1e-3
    ids, X = catalog.load_embeddings("trained:1234abcd")
    assert ids.shape == (0,) and X.shape[0] == 0


@pytest.mark.parametrize("args", ['{"full": f[forgotten]se}', "[1, 2]", '"text"', ""])
def test_unreadable_run_arguments_count_as_no_previous_run(args: str) -> None:
    catalog = Catalog.open(None)
    with catalog.run("cluster", {"full": False}):
        pass
    assert catalog.last_run_args("cluster") == {"full": False}
    catalog.db.execute("UPDATE runs SET args = ?", [args])
    assert catalog.last_run_args("cluster") is None


def test_a_read_only_catalog_or_folder_is_named_as_such(tmp_path: Path, enforced_permissions: None) -> None:
    folder = tmp_path / "photos"
    Catalog.open(folder / "c.db").close()  # closed cleanly: no c.db-wal or c.db-shm left
    folder.chmod(0o555)
    try:
        with pytest.raises(CatalogError, match=r"folder .*photos is not writable: SQLite needs to create c\.db-wal"):
            Catalog.open(folder / "c.db")
        with pytest.raises(CatalogError, match=r"^cannot create the catalog .*new\.db: the folder .*photos is not writable$"):
            Catalog.open(folder / "sub" / "new.db")
    finally:
        folder.chmod(0o755)


def test_a_read_only_catalog_is_read_by_commands_that_only_read(tmp_path: Path, enforced_permissions: None) -> None:
    folder = tmp_path / "backup"
    with Catalog.open(folder / "c.db") as catalog:
        catalog.db.execute("INSERT INTO people (name, created_at) VALUES ('Ada', '2026-01-01')")
        catalog.db.conn.commit()
    (folder / "c.db").chmod(0o444)
    folder.chmod(0o555)  # nothing can be created next to it either: no c.db-shm
    try:
        with pytest.raises(CatalogError, match="is read-only: facecluster writes to it"):
            Catalog.open(folder / "c.db", create=False)
        with Catalog.open(folder / "c.db", create=False, only_reads=True) as catalog:
            assert catalog.read_only
            assert catalog.db.execute("SELECT name FROM people").fetchall() == [("Ada",)]
        assert sorted(p.name for p in folder.iterdir()) == ["c.db"]
    finally:
        folder.chmod(0o755)


def _refused_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A catalog whose writable open fails as a read-only file's does (chmod cannot stop root)."""
    path = tmp_path / "c.db"
    Catalog.open(path).close()

    def refused(cls: type[Catalog], path: object, *, create: bool) -> Catalog:
        raise CatalogError("the catalog is read-only", write_refused=True)

    monkeypatch.setattr(Catalog, "_open", classmethod(refused))
    return path


def test_a_read_only_open_never_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    path = _refused_catalog(tmp_path, monkeypatch)
    before = path.read_bytes()
    with Catalog.open(path, create=False, only_reads=True) as catalog:
        assert catalog.read_only and catalog.db["photos"].count == 0
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            catalog.db.execute("INSERT INTO people (name, created_at) VALUES ('Ada', '2026-01-01')")
    assert path.read_bytes() == before
    with pytest.raises(CatalogError, match="^the catalog is read-only$"):
        Catalog.open(path, create=False)  # without only_reads: refused as before


def test_a_read_only_catalog_that_needs_an_upgrade_or_is_newer_is_refused(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    path = _refused_catalog(tmp_path, monkeypatch)
    with sqlite3.connect(path) as conn:
        conn.execute("DELETE FROM _migrations WHERE name = 'm003_cluster_ids_never_reused'")
    with pytest.raises(CatalogError, match=r"^the catalog is read-only; it was written by an older facecluster, "
                                           r"and reading it needs an upgrade that writes to it"):
        Catalog.open(path, create=False, only_reads=True)
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO _migrations VALUES ('m003_cluster_ids_never_reused', 'x'), ('m999_future', 'x')")
    with pytest.raises(CatalogError, match=r"cannot use catalog .*c\.db: it was written by a newer facecluster"):
        Catalog.open(path, create=False, only_reads=True)


def test_a_read_only_wal_catalog_without_its_shm_is_read_unless_its_wal_holds_changes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where ``NAME-shm`` is missing and cannot be created, ``mode=ro`` fails; ``immutable`` reads the file
    alone, which is right only while ``NAME-wal`` holds nothing the file lacks."""
    import sqlite3

    import facecluster.catalog as catalog_module

    path = _refused_catalog(tmp_path, monkeypatch)
    real_connect = sqlite3.connect
    uris: list[str] = []

    def connect(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        uris.append(database)
        if "mode=ro" in database:  # what SQLite says when it cannot create the -shm of a WAL file
            raise sqlite3.OperationalError("unable to open database file")
        return real_connect(database, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(catalog_module.sqlite3, "connect", connect)
    with Catalog.open(path, create=False, only_reads=True) as catalog:
        assert catalog.read_only and catalog.db["faces"].count == 0
    assert [uri.rsplit("?", 1)[1] for uri in uris] == ["mode=ro", "immutable=1"]
    path.with_name("c.db-wal").write_bytes(b"\0" * 4096)  # a WAL with frames the file does not have yet
    with pytest.raises(CatalogError, match=r"^the catalog is read-only; reading it without writing is not possible "
                                           r"either: its c\.db-wal holds changes"):
        Catalog.open(path, create=False, only_reads=True)


def test_cluster_ids_are_never_reused_and_an_older_catalog_keeps_its_clusters(tmp_path: Path) -> None:
    import sqlite3

    from sqlite_utils import Database

    from facecluster.migrations import apply_migrations

    # A catalog written before m003: clusters 1-3, faces in 2 and 3.
    path = tmp_path / "old.db"
    db = Database(sqlite3.connect(str(path)))
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    for migration in MIGRATIONS[:2]:
        migration(db)
        db.execute("INSERT INTO _migrations VALUES (?, 'then')", [migration.__name__])
    db.conn.commit()
    db.execute("INSERT INTO models (id, kind, dim, created_at) VALUES ('m', 'pretrained', 2, 'then')")
    db.execute("INSERT INTO photos (id, hash, path, size, mtime, added_at, updated_at) VALUES (1, 'h', 'p', 1, 0, 't', 't')")
    for cid in (1, 2, 3):
        db.execute("INSERT INTO clusters (id, model_id, size, created_at) VALUES (?, 'm', 1, 'then')", [cid])
    for fid, cid in ((1, 2), (2, 3)):
        db.execute("INSERT INTO faces (id, photo_id, x1, y1, x2, y2, probability, cluster_id, created_at) "
                   "VALUES (?, 1, 0, 0, 1, 1, 0.9, ?, 'then')", [fid, cid])
    db.conn.commit()
    db.conn.close()
    with Catalog.open(path) as catalog:
        conn = catalog.db.conn
        assert conn.execute("SELECT id, cluster_id FROM faces ORDER BY id").fetchall() == [(1, 2), (2, 3)]
        assert conn.execute("PRAGMA foreign_keys").fetchone() == (1,)
        assert conn.execute("PRAGMA foreign_key_check").fetchall() == []
        with catalog.transaction():
            conn.execute("DELETE FROM clusters WHERE id = 3")  # the largest id goes (faces -> NULL)
            new = conn.execute("INSERT INTO clusters (model_id, created_at) VALUES ('m', 'now')").lastrowid
        assert new == 4  # not 3: a site or a note that says "cluster 3" must not name this one
        assert conn.execute("SELECT cluster_id FROM faces WHERE id = 2").fetchone() == (None,)


def test_a_file_where_the_catalog_folder_should_be_is_named_as_such(tmp_path: Path) -> None:
    # `--db notes.txt/c.db` (a typo, or a file named like the folder): not "the folder is not writable".
    (tmp_path / "notes.txt").write_text("not a folder")
    for db in (tmp_path / "notes.txt" / "c.db", tmp_path / "notes.txt" / "sub" / "c.db"):
        with pytest.raises(CatalogError) as info:
            Catalog.open(db)
        assert str(info.value) == f"cannot create the catalog {db}: {tmp_path / 'notes.txt'} is a file, not a folder"

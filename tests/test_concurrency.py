"""Two commands on one catalog at once: a write that comes while another command works waits for it, and
nothing a command read before that write is written back over it."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np

from facecluster.catalog import BUSY_TIMEOUT_S, Catalog
from facecluster.people import cluster_catalog, ignore_cluster, name_cluster
from tests.fakes import FakeAlgorithms
from tests.test_people import CONFIG, MODEL, add_faces


class Meanwhile(FakeAlgorithms):
    """Clustering during which another process writes to the catalog (``write(db_path)`` in a thread).

    The thread gets ``wait_s`` to finish before clustering goes on: it does unless something (the
    clustering's hold on the catalog) makes it wait."""

    def __init__(self, db: Path, write, wait_s: float = 0.5) -> None:
        self.db, self.write, self.wait_s = db, write, wait_s
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []
        self.calls = 0  # clusterings run: 2 when the other write made the first one start over
        self.held_up = False  # the other write had to wait for the clustering

    def _other_process(self) -> None:
        try:
            with Catalog.open(self.db) as other:
                self.write(other)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)

    def cluster_embeddings(self, X, config, **kwargs):  # type: ignore[override]
        from facecluster.cluster import cluster_embeddings

        self.calls += 1
        if self.thread is None:
            self.thread = threading.Thread(target=self._other_process)
            self.thread.start()
            self.thread.join(self.wait_s)
            self.held_up = self.thread.is_alive()
        return cluster_embeddings(X, config, **kwargs)

    def finish(self) -> None:
        assert self.thread is not None
        self.thread.join(30)
        assert not self.thread.is_alive() and not self.errors, self.errors


def _state(catalog: Catalog, cluster: int) -> tuple:
    ignored, size, person = catalog.db.execute(
        "SELECT ignored, size, person_id FROM clusters WHERE id = ?", [cluster]).fetchone()
    faces = catalog.db.execute("SELECT count(*), sum(ignored) FROM faces WHERE cluster_id = ?", [cluster]).fetchone()
    return ignored, size, person, faces[0], faces[1]


def _recluster_while_another_process_writes(catalog: Catalog, db: Path, write) -> tuple[int, Meanwhile]:
    """Two people of 3 faces clustered, then clustered again (--full) while another process runs
    ``write(other_catalog, cluster)`` on the first one's cluster; returns that cluster and the recording."""
    ids = add_faces(catalog, [[0], [0], [0], [1], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=FakeAlgorithms())
    target = catalog.db.execute("SELECT cluster_id FROM faces WHERE id = ?", [ids[0]]).fetchone()[0]
    algorithms = Meanwhile(db, lambda other: write(other, target))
    cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=algorithms)
    algorithms.finish()
    return target, algorithms


def test_ignore_cluster_while_full_clustering_runs_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    with Catalog.open(db) as catalog:
        target, algorithms = _recluster_while_another_process_writes(catalog, db, ignore_cluster)
        # The ignore landed at once (clustering holds no lock while it computes), then clustering ran again.
        assert (algorithms.held_up, algorithms.calls) == (False, 2)
        # The ignored cluster still holds its 3 faces, all ignored (so --unignore-cluster can bring them back).
        assert _state(catalog, target) == (1, 3, None, 3, 3)


def test_label_while_full_clustering_runs_names_the_cluster(tmp_path: Path) -> None:
    db = tmp_path / "catalog.db"
    with Catalog.open(db) as catalog:
        target, algorithms = _recluster_while_another_process_writes(
            catalog, db, lambda other, cluster: name_cluster(other, cluster, "Ada"))
        person = catalog.db.execute("SELECT id FROM people WHERE name = 'Ada'").fetchone()[0]
        assert _state(catalog, target) == (0, 3, person, 3, 0)
        assert (algorithms.held_up, algorithms.calls) == (False, 2)


def test_a_transaction_holds_the_write_lock_from_its_first_read(tmp_path: Path) -> None:
    import sqlite3

    import pytest

    db = tmp_path / "catalog.db"
    with Catalog.open(db) as catalog, Catalog.open(db) as other:
        other.db.conn.execute("PRAGMA busy_timeout = 0")
        with catalog.transaction() as conn:
            conn.execute("SELECT count(*) FROM people").fetchone()  # a read: what the write below relies on
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                with other.transaction() as conn2:
                    conn2.execute("INSERT INTO people (name, created_at) VALUES ('Bob', 'now')")
        assert other.db.execute("SELECT count(*) FROM people").fetchone()[0] == 0


def test_an_inner_transaction_that_fails_undoes_only_its_own_writes() -> None:
    import pytest

    catalog = Catalog.open(None)
    with catalog.transaction() as conn:
        conn.execute("INSERT INTO people (name, created_at) VALUES ('Ada', 'now')")
        with pytest.raises(ValueError):
            with catalog.transaction() as inner:
                inner.execute("INSERT INTO people (name, created_at) VALUES ('Bob', 'now')")
                raise ValueError("undo Bob")
        with catalog.transaction() as inner:
            inner.execute("INSERT INTO people (name, created_at) VALUES ('Cy', 'now')")
    assert [r[0] for r in catalog.db.execute("SELECT name FROM people ORDER BY id")] == ["Ada", "Cy"]
    with pytest.raises(KeyError), catalog.transaction() as conn:
        conn.execute("INSERT INTO people (name, created_at) VALUES ('Dee', 'now')")
        raise KeyError("undo all")
    assert catalog.db.execute("SELECT count(*) FROM people").fetchone()[0] == 2


def test_two_commands_creating_one_catalog_at_once_both_open_it(tmp_path: Path, monkeypatch) -> None:
    # `find ... | xargs -P4 facecluster detect` on a new catalog: each process sees no migration applied
    # yet; the one that comes second must wait and find them done, not fail on "table photos already exists".
    from facecluster import migrations

    db = tmp_path / "new" / "catalog.db"
    first, *rest = migrations.MIGRATIONS
    others: list[threading.Thread] = []
    errors: list[BaseException] = []

    def other_process() -> None:
        try:
            Catalog.open(db).close()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def m001_initial(database) -> None:  # the first process, half-way: another one opens the catalog
        if not others:
            others.append(threading.Thread(target=other_process))
            others[0].start()
            others[0].join(0.5)
        first(database)

    monkeypatch.setattr(migrations, "MIGRATIONS", [m001_initial, *rest])
    with Catalog.open(db) as catalog:
        others[0].join(30)
        assert not errors, errors
        names = [r[0] for r in catalog.db.execute("SELECT name FROM _migrations ORDER BY name")]
        assert names == sorted(m.__name__ for m in [first, *rest])


def test_faces_deleted_or_redetected_while_embed_runs_get_no_stale_vector(tmp_path: Path) -> None:
    # `embed` reads crops, computes (minutes on a CPU), then writes. Meanwhile `forget` deletes a face and a
    # `detect --force` of another process stores a new crop (and drops the face's vectors): the first must
    # not stop embed with a foreign-key error, the second must not get the vector of its old crop.
    from facecluster.pipeline import detect_paths, embed_pending, encode_crop
    from facecluster.config import PipelineConfig
    from tests.fakes import FakeDetector, FakeEmbedder, fake_crop, make_library

    db = tmp_path / "catalog.db"
    make_library(tmp_path / "photos")
    with Catalog.open(db) as catalog:
        detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
        gone, changed, *kept = [r[0] for r in catalog.db.execute("SELECT id FROM faces ORDER BY id")]
        new_crop = encode_crop(np.full((160, 160, 3), 7, dtype=np.uint8), PipelineConfig())

        class Meanwhile(FakeEmbedder):
            def embed(self, crops):
                with Catalog.open(db) as other, other.transaction() as conn:
                    conn.execute("DELETE FROM faces WHERE id = ?", [gone])
                    conn.execute("UPDATE faces SET crop = ? WHERE id = ?", [new_crop, changed])
                return super().embed(crops)

        report = embed_pending(catalog, Meanwhile())
        assert report.embedded == len(kept)
        vectors = {r[0] for r in catalog.db.execute("SELECT face_id FROM embeddings")}
        assert vectors == set(kept)  # `changed` is embedded by the next run, from its new crop
        assert embed_pending(catalog, FakeEmbedder()).embedded == 1


def test_ctrl_c_while_waiting_for_the_write_lock_stops_at_once(tmp_path: Path) -> None:
    # SQLite's busy wait is C code: a signal is only acted on when it returns, up to BUSY_TIMEOUT_S later.
    # A child process waits for the lock this test holds; Ctrl-C (SIGINT) must stop it within moments.
    path = tmp_path / "c.db"
    Catalog.open(path).db.conn.close()
    holder = sqlite3.connect(path)
    holder.execute("BEGIN IMMEDIATE")  # another command writing
    child = textwrap.dedent(f"""
        import sys, time
        from facecluster.catalog import Catalog
        catalog = Catalog.open({str(path)!r})
        print("waiting", flush=True)
        try:
            with catalog.transaction() as conn:
                print("got the lock", flush=True)
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(130)
        with catalog.transaction() as conn:  # usable afterwards, with its full timeout again
            print("timeout", conn.execute("PRAGMA busy_timeout").fetchone()[0], flush=True)
    """)
    try:
        proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        start = time.monotonic()
        proc.send_signal(signal.SIGINT)
        try:
            rc = proc.wait(timeout=BUSY_TIMEOUT_S * 2)
        finally:
            proc.kill()
        elapsed = time.monotonic() - start
    finally:
        holder.rollback()
    assert rc == 130 and proc.stdout.read() == "interrupted\n"
    assert elapsed < BUSY_TIMEOUT_S / 3, elapsed


def test_the_lock_wait_keeps_its_full_length_and_the_connection_its_timeout(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    waited: list[float] = []
    timeouts: list[int] = []

    def write() -> None:  # another command: its connection set to wait 1.5 s for the lock
        with Catalog.open(path) as other:
            other.db.conn.execute("PRAGMA busy_timeout = 1500")
            start = time.monotonic()
            with other.transaction() as conn:
                conn.execute("INSERT INTO people (name, created_at) VALUES ('Bob', 'now')")
            waited.append(time.monotonic() - start)
            timeouts.append(other.db.execute("PRAGMA busy_timeout").fetchone()[0])

    with Catalog.open(path) as catalog:
        with catalog.transaction():
            thread = threading.Thread(target=write)
            thread.start()
            time.sleep(0.8)  # holding the lock: the other write waits, then gets it once this commits
        thread.join(10)
        assert waited and waited[0] >= 0.7 and timeouts == [1500]
        assert catalog.db.execute("SELECT count(*) FROM people").fetchone()[0] == 1

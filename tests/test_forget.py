"""``facecluster forget``: the person leaves no trace in the catalog (rows, crops, vectors, file bytes) or site."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_site import Library, make_library

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.errors import CatalogError
from facecluster.forget import forget_person, name_traces, plan_forget
from facecluster.migrations import now
from facecluster.site import build_site

NAME = "Ada Lovelace"


@pytest.fixture()
def library(tmp_path: Path) -> Library:
    lib = make_library(tmp_path)
    with Catalog.open(lib.db) as catalog:
        db = catalog.db
        # One of Ada's cluster faces was moved by the user to AC/DC: that cluster must survive, unnamed.
        db.execute(
            "UPDATE faces SET person_id = ?, person_source = 'user' WHERE id = ?",
            [lib.people["AC/DC"], lib.faces["A"][3]],
        )
        # "This face of cluster C is not Ada": a row that names her.
        db.execute(
            "INSERT INTO face_rejections (face_id, person_id, created_at) VALUES (?, ?, ?)",
            [lib.faces["C"][0], lib.people[NAME], now()],
        )
        db.conn.commit()
    return lib


def _secrets(lib: Library) -> tuple[list[int], list[bytes]]:
    """Ada's face ids and byte strings that must vanish from the catalog file: crops and vectors."""
    with Catalog.open(lib.db) as catalog:
        ids = lib.faces["A"][:3]
        marks = ",".join("?" * len(ids))
        crops = [r[0] for r in catalog.db.execute(f"SELECT crop FROM faces WHERE id IN ({marks})", ids)]
        vectors = [r[0] for r in catalog.db.execute(f"SELECT vector FROM embeddings WHERE face_id IN ({marks})", ids)]
    # The middle of each PNG (compressed pixels) is unique to that crop; a vector is 16 unique bytes.
    return ids, [c[len(c) // 2 - 24 : len(c) // 2 + 24] for c in crops] + vectors


def _file_bytes(db: Path) -> bytes:
    wal = db.with_name(db.name + "-wal")
    return db.read_bytes() + (wal.read_bytes() if wal.exists() else b"")


def _photo_hashes(lib: Library) -> dict[str, str]:
    return {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in lib.photos.items()}


def test_forget_deletes_rows_crops_vectors_and_emptied_clusters(library: Library) -> None:
    ids, secrets = _secrets(library)
    before = _photo_hashes(library)
    assert all(s in _file_bytes(library.db) for s in secrets)
    with Catalog.open(library.db) as catalog:
        plan = plan_forget(catalog, NAME)
        summary = forget_person(catalog, NAME)
        db = catalog.db
        assert (plan.faces, plan.crops, plan.vectors) == (3, 3, 3)
        assert (summary.faces, summary.crops, summary.vectors) == (3, 3, 3)
        assert summary.rejections == 1 and summary.runs_redacted == 1 and summary.checkpointed
        assert summary.clusters_deleted == 0 and summary.clusters_kept == 1
        marks = ",".join("?" * len(ids))
        assert db.execute(f"SELECT count(*) FROM faces WHERE id IN ({marks})", ids).fetchone()[0] == 0
        assert db.execute(f"SELECT count(*) FROM embeddings WHERE face_id IN ({marks})", ids).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM people WHERE name = ?", [NAME]).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM face_rejections").fetchone()[0] == 0
        # Cluster A keeps the face moved to AC/DC, no longer named; its size is right.
        assert db.execute("SELECT person_id, size FROM clusters WHERE id = ?", [library.clusters["A"]]).fetchone() == (
            None,
            1,
        )
        # Everyone else is intact.
        assert db.execute("SELECT count(*) FROM faces").fetchone()[0] == 13
        assert name_traces(db.conn, NAME) == []
        assert "[forgotten]" in db.execute("SELECT args FROM runs").fetchone()[0]
    # Not in the file either (nor in its WAL): secure_delete zeroed the freed cells.
    raw = _file_bytes(library.db)
    assert NAME.encode() not in raw
    assert not [s for s in secrets if s in raw]
    assert _photo_hashes(library) == before  # the photos themselves are untouched


def test_without_secure_delete_the_bytes_would_linger(library: Library) -> None:
    """The control for the test above: a plain DELETE leaves the crop in the file's free space."""
    ids, secrets = _secrets(library)
    conn = sqlite3.connect(library.db)
    conn.execute("PRAGMA secure_delete = OFF")
    with conn:
        conn.execute("DELETE FROM embeddings WHERE face_id = ?", [ids[0]])
        conn.execute("DELETE FROM faces WHERE id = ?", [ids[0]])
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    assert secrets[0] in _file_bytes(library.db)


def test_forget_the_last_face_deletes_the_cluster(library: Library) -> None:
    with Catalog.open(library.db) as catalog:
        summary = forget_person(catalog, "zoë ñúñez")  # case and accents as typed
        assert summary.name == "Zoë Ñúñez" and summary.faces == 3 and summary.clusters_deleted == 1
        assert (
            catalog.db.execute("SELECT count(*) FROM clusters WHERE id = ?", [library.clusters["B"]]).fetchone()[0] == 0
        )
        assert name_traces(catalog.db.conn, "Zoë Ñúñez") == []


def test_forget_with_site_removes_pages_and_thumbnails(library: Library, tmp_path: Path) -> None:
    site = tmp_path / "site"
    with Catalog.open(library.db) as catalog:
        build_site(catalog, site)
    person_id = library.people[NAME]
    thumbs = [p for fid in library.faces["A"][:3] for p in site.glob(f"thumbs/0/{fid}-*.jpg")]
    assert len(thumbs) == 3 and (site / f"groups/person-{person_id}.html").exists()
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", NAME, "--yes", "--site", str(site), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["faces"] == 3 and data["site_files_removed"] == 4
    assert "Forgot Ada Lovelace: deleted 3 faces, 3 crops, 3 vectors" in result.stderr
    assert not any(p.exists() for p in thumbs)
    assert not (site / f"groups/person-{person_id}.html").exists()
    # The refreshed site mentions her nowhere, and no page links to a deleted face.
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert NAME not in text
        assert not any(re.search(rf"face {fid}\b", text) for fid in library.faces["A"][:3])


def test_forget_asks_first_and_no_means_nothing_changes(library: Library) -> None:
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", NAME], input="n\n")
    assert result.exit_code == 1
    assert "Forget Ada Lovelace: 3 faces, 3 crops, 3 vectors, 0 clusters?" in result.output
    with Catalog.open(library.db) as catalog:
        assert catalog.db.execute("SELECT count(*) FROM people WHERE name = ?", [NAME]).fetchone()[0] == 1
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", NAME], input="y\n")
    assert result.exit_code == 0


def test_unknown_person(library: Library) -> None:
    with Catalog.open(library.db) as catalog, pytest.raises(CatalogError, match="no person named 'Nobody'"):
        forget_person(catalog, "Nobody")
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", "Nobody", "--yes"])
    assert result.exit_code == 1 and "Error: no person named 'Nobody'" in result.output


def test_vacuum_option_also_leaves_no_trace(library: Library) -> None:
    _, secrets = _secrets(library)
    with Catalog.open(library.db) as catalog:
        summary = forget_person(catalog, NAME, vacuum=True)
    assert summary.vacuumed
    raw = _file_bytes(library.db)
    assert NAME.encode() not in raw and not [s for s in secrets if s in raw]


def test_wrong_site_folder_is_refused_before_anything_is_deleted(library: Library, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", NAME, "--yes", "--site", str(tmp_path)])
    assert result.exit_code == 1 and "is not a facecluster site" in result.output
    with Catalog.open(library.db) as catalog:
        assert catalog.db.execute("SELECT count(*) FROM people WHERE name = ?", [NAME]).fetchone()[0] == 1


def test_default_site_is_cleaned_without_site_option(library: Library) -> None:
    from facecluster.commands.show import default_site_dir

    assert CliRunner().invoke(cli, ["--db", str(library.db), "show", "-q"]).exit_code == 0
    site = default_site_dir()
    page = site / f"groups/person-{library.people[NAME]}.html"
    assert page.exists()
    result = CliRunner().invoke(cli, ["--db", str(library.db), "forget", NAME, "--yes"])
    assert result.exit_code == 0, result.output
    assert f"from {site} and refreshed it" in result.stderr
    assert not page.exists()
    assert not any(NAME in p.read_text() for p in site.rglob("*.html"))


def test_site_of_another_catalog_is_refused(library: Library, tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "other.db") as other:
        build_site(other, tmp_path / "other-site")
    result = CliRunner().invoke(
        cli, ["--db", str(library.db), "forget", NAME, "--yes", "--site", str(tmp_path / "other-site")]
    )
    assert result.exit_code == 1 and "shows the catalog" in result.output


def _runs(catalog: Catalog, *records: dict) -> None:
    for record in records:
        catalog.db.execute(
            "INSERT INTO runs (command, args, stats, started_at, status) VALUES ('label', ?, ?, ?, 'ok')",
            [json.dumps(record["args"]), json.dumps(record.get("stats", {})), now()],
        )
    catalog.db.conn.commit()


def _args(catalog: Catalog) -> list:
    return [json.loads(r[0]) for r in catalog.db.execute("SELECT args FROM runs ORDER BY id")]


@pytest.mark.parametrize("name", ["1", "e", "al", "true", "null", "Zoë"])
def test_runs_are_redacted_value_by_value_and_stay_json(name: str) -> None:
    catalog = Catalog.open(None)
    catalog.db.execute("INSERT INTO people (name, created_at) VALUES (?, ?)", [name, now()])
    config = {"method": "average", "threshold": 1.0, "min_cluster_size": 2, "flag": True, "none": None}
    _runs(
        catalog,
        {"args": {"full": False, "force": True, "config": config, "paths": ["photos/e x", "photos/true"]}},
        {"args": {"action": "name", "value": ["5", name.upper()]}, "stats": {"person": name, "faces": 1}},
    )
    summary = forget_person(catalog, name)
    assert summary.runs_redacted >= 1
    cluster_args, label_args = _args(catalog)
    assert cluster_args["full"] is False and cluster_args["force"] is True and cluster_args["config"] == config
    assert label_args == {"action": "name", "value": ["5", "[forgotten]"]}
    stats = json.loads(catalog.db.execute("SELECT stats FROM runs ORDER BY id DESC").fetchone()[0])
    assert stats == {"person": "[forgotten]", "faces": 1}
    if name in ("e", "true"):  # a path with the name as a word names the person too
        assert "[forgotten]" in cluster_args["paths"]


def test_redaction_spares_another_person_whose_name_contains_the_forgotten_one() -> None:
    catalog = Catalog.open(None)
    for name in ("Tom", "Tom Ridge"):
        catalog.db.execute("INSERT INTO people (name, created_at) VALUES (?, ?)", [name, now()])
    _runs(
        catalog,
        {"args": {"action": "name", "value": ["3", "Tom Ridge"]}},
        {"args": {"action": "merge", "value": ["tom", "Tom Ridge"]}},
        {"args": {"action": "rename", "value": ["Tommy", "Tom"]}},
        {"args": {"paths": ["trip/Tom Ridge and Tom/1.jpg", "Tomas/2.jpg"]}},
    )
    forget_person(catalog, "Tom")
    assert _args(catalog) == [
        {"action": "name", "value": ["3", "Tom Ridge"]},
        {"action": "merge", "value": ["[forgotten]", "Tom Ridge"]},
        {"action": "rename", "value": ["Tommy", "[forgotten]"]},
        {"paths": ["[forgotten]", "Tomas/2.jpg"]},
    ]


def test_runs_an_older_forget_garbled_are_still_redacted() -> None:
    catalog = Catalog.open(None)
    catalog.db.execute("INSERT INTO people (name, created_at) VALUES ('Ada', ?)", [now()])
    catalog.db.execute(
        "INSERT INTO runs (command, args, started_at, status) VALUES ('label', ?, ?, 'ok')",
        ['{"full": f[forgotten]se, "value": ["3", "Ada"]}', now()],
    )
    forget_person(catalog, "Ada")
    assert name_traces(catalog.db.conn, "Ada") == []


def test_forget_counts_in_the_singular_for_one(tmp_path: Path) -> None:
    lib = make_library(tmp_path)  # AC/DC: one face, with its crop and vector
    asked = CliRunner().invoke(cli, ["--db", str(lib.db), "forget", "AC/DC"], input="n\n")
    assert "Forget AC/DC: 1 face, 1 crop, 1 vector, 0 clusters?" in asked.output
    result = CliRunner().invoke(cli, ["--db", str(lib.db), "forget", "AC/DC", "--yes"])
    assert result.exit_code == 0 and "Forgot AC/DC: deleted 1 face, 1 crop, 1 vector, 0 clusters" in result.stderr


def test_forget_holds_the_write_lock_from_finding_her_faces_to_deleting_them(library: Library,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Another process naming one more face after her in between (a `cluster`, a `label --move`) would
    # leave that face behind, no longer named (ON DELETE SET NULL): it must wait until the faces are gone.
    import facecluster.forget as forget_module

    plan, refused = forget_module.plan_forget, []
    other_face = library.faces["C"][1]

    def plan_then_another_process_writes(catalog: Catalog, name: str):  # type: ignore[no-untyped-def]
        summary = plan(catalog, name)
        with Catalog.open(library.db) as other:
            other.db.conn.execute("PRAGMA busy_timeout = 0")
            try:
                with other.transaction() as conn:
                    conn.execute("UPDATE faces SET person_id = ?, person_source = 'user' WHERE id = ?",
                                 [summary.person_id, other_face])
            except sqlite3.OperationalError as exc:
                refused.append(str(exc))
        return summary

    monkeypatch.setattr(forget_module, "plan_forget", plan_then_another_process_writes)
    with Catalog.open(library.db) as catalog:
        forget_person(catalog, NAME)
        assert refused == ["database is locked"]
        assert catalog.db.execute("SELECT person_id FROM faces WHERE id = ?", [other_face]).fetchone() == (None,)

"""people.py: clustering the catalog, names, corrections, incremental assignment (synthetic vectors)."""

from __future__ import annotations

import numpy as np
import pytest

from facecluster.catalog import Catalog, encode_vector
from facecluster.config import ClusterConfig
from facecluster.errors import CatalogError
from facecluster.migrations import now
from facecluster.people import (
    cluster_catalog,
    ignore_cluster,
    ignore_face,
    iter_faces,
    list_people,
    merge_people,
    move_face,
    name_cluster,
    reject_face,
    rename_person,
)
from tests.fakes import FakeAlgorithms

MODEL = "test:model"
CONFIG = ClusterConfig(threshold=1.0, min_cluster_size=2)


class Recording(FakeAlgorithms):
    """Engineer E's average linkage, remembering the constraints it was given."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def cluster_embeddings(self, X, config, **kwargs):  # type: ignore[override]
        from facecluster.cluster import cluster_embeddings

        self.calls.append(kwargs)
        return cluster_embeddings(X, config, **kwargs)


def _vector(identity: int, rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    v = rng.normal(0, 0.05, dim).astype(np.float32)
    v[identity] += 1
    return v / np.linalg.norm(v)


def add_faces(catalog: Catalog, identities: list[list[int]], *, seed: int = 0, probability: float = 0.99,
              side: float = 60) -> list[int]:
    """One photo per inner list, one face (with a vector) per identity in it; returns the face ids."""
    rng = np.random.default_rng(seed)
    ids = []
    conn = catalog.db.conn
    catalog.ensure_model(MODEL, 8)
    start = catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0]
    with catalog.transaction():
        for k, faces in enumerate(identities):
            cursor = conn.execute(
                "INSERT INTO photos (hash, path, size, mtime, status, added_at, updated_at) VALUES (?, ?, 1, 0, 'detected', ?, ?)",
                [f"h{start + k}", f"/p/{start + k}.jpg", now(), now()],
            )
            photo = cursor.lastrowid
            for identity in faces:
                cursor = conn.execute(
                    "INSERT INTO faces (photo_id, x1, y1, x2, y2, probability, created_at) VALUES (?, 0, 0, ?, ?, ?, ?)",
                    [photo, side, side, probability, now()],
                )
                ids.append(int(cursor.lastrowid))
                conn.execute(
                    "INSERT INTO embeddings (face_id, model_id, dim, vector, created_at) VALUES (?, ?, 8, ?, ?)",
                    [ids[-1], MODEL, encode_vector(_vector(identity, rng)), now()],
                )
    return ids


def clusters_of(catalog: Catalog, face_ids: list[int]) -> list[int | None]:
    marks = ",".join("?" * len(face_ids))
    rows = dict(catalog.db.execute(f"SELECT id, cluster_id FROM faces WHERE id IN ({marks})", face_ids).fetchall())
    return [rows[i] for i in face_ids]


def person_of(catalog: Catalog, face_id: int) -> str | None:
    row = catalog.db.execute(
        "SELECT p.name FROM faces f LEFT JOIN people p ON p.id = f.person_id WHERE f.id = ?", [face_id]
    ).fetchone()
    return row[0]


def test_full_clustering_groups_identities_and_reports() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0, 1], [0], [1], [0, 2], [3]])
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.mode == "full" and report.faces == 7 and report.clusters == 2 and report.noise == 2
    c = clusters_of(catalog, ids)
    assert c[0] == c[2] == c[4] and c[1] == c[3] and c[0] != c[1] and c[5] is None and c[6] is None


def test_floors_leave_faces_out() -> None:
    catalog = Catalog.open(None)
    add_faces(catalog, [[0], [0]])
    add_faces(catalog, [[0]], probability=0.5, seed=1)
    add_faces(catalog, [[0]], side=10, seed=2)
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert (report.low_probability, report.too_small, report.clustered) == (1, 1, 2)


def test_unchanged_then_incremental_assignment() -> None:
    catalog = Catalog.open(None)
    add_faces(catalog, [[0], [0], [1], [1], [2]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms()).mode == "unchanged"
    (c0,) = {r[0] for r in catalog.db.execute("SELECT cluster_id FROM faces WHERE id = 1")}
    name_cluster(catalog, c0, "Ada")
    new = add_faces(catalog, [[0], [2], [5]], seed=3)
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.mode == "incremental" and report.assigned == 1
    assert clusters_of(catalog, [new[0]]) == [c0] and person_of(catalog, new[0]) == "Ada"
    # the earlier lone identity-2 face and the new one now form a cluster together
    assert report.new_clusters == 1 and clusters_of(catalog, [5])[0] == clusters_of(catalog, [new[1]])[0]


def test_incremental_respects_photo_and_rejection_constraints() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    (c0,) = set(clusters_of(catalog, ids))
    name_cluster(catalog, c0, "Ada")
    # A new face of identity 0 in a photo already in the cluster cannot join it.
    conn = catalog.db.conn
    with catalog.transaction():
        cursor = conn.execute(
            "INSERT INTO faces (photo_id, x1, y1, x2, y2, probability, created_at) VALUES (1, 0, 0, 60, 60, 0.99, ?)", [now()]
        )
        twin = int(cursor.lastrowid)
        conn.execute("INSERT INTO embeddings (face_id, model_id, dim, vector, created_at) VALUES (?, ?, 8, ?, ?)",
                     [twin, MODEL, encode_vector(_vector(0, np.random.default_rng(9))), now()])
    rejected = add_faces(catalog, [[0]], seed=4)[0]
    with catalog.transaction():
        conn.execute("INSERT INTO face_rejections (face_id, person_id, created_at) VALUES (?, 1, ?)", [rejected, now()])
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.assigned == 0
    assert clusters_of(catalog, [twin, rejected]) != [c0, c0]
    assert person_of(catalog, twin) is None and person_of(catalog, rejected) is None


def test_full_reclustering_passes_constraints_and_keeps_ids_and_names() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [1], [1], [2], [2]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    before = clusters_of(catalog, ids)
    name_cluster(catalog, before[0], "Ada")
    name_cluster(catalog, before[2], "Bob")
    move_face(catalog, ids[4], "Ada")  # the user knows better than the embedding
    algorithms = Recording()
    cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=algorithms)
    call = algorithms.calls[-1]
    assert (call["must_link"] >= 0).sum() == 5  # Ada x3 (one moved), Bob x2
    assert len(call["cannot_link_pairs"]) == 1  # Ada vs Bob (the moved face had no person before)
    after = clusters_of(catalog, ids)
    assert after[0] == before[0] and after[2] == before[2]
    assert [person_of(catalog, i) for i in ids] == ["Ada", "Ada", "Bob", "Bob", "Ada", None]
    assert after[4] == after[0]


def _two_named_people(first: str, second: str) -> tuple[Catalog, list[int], int, int]:
    """A new catalog of 4 faces in two clusters (faces 0-1 and 2-3), named ``first`` and ``second``."""
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, b, _ = clusters_of(catalog, ids)
    name_cluster(catalog, a, first)
    name_cluster(catalog, b, second)
    return catalog, ids, a, b


def test_rename_merge_reject_ignore() -> None:
    catalog, ids, a, b = _two_named_people("A", "B")
    with pytest.raises(CatalogError, match="merge"):
        rename_person(catalog, "A", "B")
    rename_person(catalog, "A", "Ada")
    assert merge_people(catalog, "B", "Ada")["faces"] == 2
    assert [r["name"] for r in list_people(catalog)] == ["Ada"]
    reject_face(catalog, ids[3])
    assert person_of(catalog, ids[3]) is None
    cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=FakeAlgorithms())
    assert person_of(catalog, ids[3]) is None and person_of(catalog, ids[2]) == "Ada"
    ignore_face(catalog, ids[0])
    assert ids[0] not in {f["face_id"] for f in iter_faces(catalog)}
    (ada,) = {c for c in clusters_of(catalog, ids[1:3])}  # one cluster: must-link joined A and B's faces
    assert ignore_cluster(catalog, ada)["faces"] == 2
    # Every face of Ada's is ignored now: like `show` and `export`, `people` lists her only with --all.
    assert "Ada" not in {r["name"] for r in list_people(catalog)}
    (record,) = [r for r in list_people(catalog, include_ignored=True) if r["kind"] == "person"]
    assert record["name"] == "Ada" and record["faces"] == 0 and record["clusters"] == []
    report = cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=FakeAlgorithms())
    assert report.ignored >= 2
    with pytest.raises(CatalogError):
        name_cluster(catalog, 999, "X")
    with pytest.raises(CatalogError):
        move_face(catalog, 999, "X")
    with pytest.raises(CatalogError):
        merge_people(catalog, "Ada", "Ada")


def test_names_match_ignoring_case_and_unicode_form() -> None:
    import unicodedata

    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [1], [1], [2], [2]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, b, _, c, _ = clusters_of(catalog, ids)
    decomposed = unicodedata.normalize("NFD", "Zoë")  # what a macOS terminal may send
    assert name_cluster(catalog, a, decomposed)["person"] == "Zoë"  # stored composed
    # Another spelling of an existing name joins that person instead of making a second one.
    assert name_cluster(catalog, b, "ZOË")["person"] == "Zoë"
    assert [r["name"] for r in list_people(catalog) if r["name"]] == ["Zoë"]
    assert move_face(catalog, ids[4], "zoë")["person"] == "Zoë"
    # A case-only rename is a spelling fix; taking another person's name (in any case) is refused.
    assert rename_person(catalog, "zoë", "ZOË")["new"] == "ZOË"
    name_cluster(catalog, c, "Ada")
    with pytest.raises(CatalogError, match="merge"):
        rename_person(catalog, "Ada", "zoë")
    with pytest.raises(CatalogError, match="no person"):
        merge_people(catalog, "Bob", "Ada")
    assert merge_people(catalog, "ada", "zoë") == {"merged": "Ada", "into": "ZOË", "person_id": 1, "faces": 1}
    # Names that differ only in case (from before names were matched this way) need the exact spelling.
    catalog.db.execute("INSERT INTO people (name, created_at) VALUES ('zoë', ?)", [now()])
    with pytest.raises(CatalogError, match="several people"):
        name_cluster(catalog, a, "Zoë")
    assert name_cluster(catalog, a, "zoë")["person"] == "zoë"
    with pytest.raises(CatalogError, match="empty"):
        name_cluster(catalog, a, "  ")


def test_a_second_model_replaces_the_clustering_without_mixing_vectors() -> None:
    catalog = Catalog.open(None)
    add_faces(catalog, [[0], [0]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    catalog.ensure_model("other", 8)
    report = cluster_catalog(catalog, "other", CONFIG, algorithms=FakeAlgorithms())
    assert report.faces == 0 and report.mode == "full"
    assert catalog.db.execute("SELECT count(*) FROM clusters WHERE model_id = ?", [MODEL]).fetchone()[0] == 0


def test_report_names_the_model_whose_clusters_a_switch_replaced() -> None:
    catalog = Catalog.open(None)
    add_faces(catalog, [[0], [0]])
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms()).replaced_model is None
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms(), full=True).replaced_model is None
    ids = [int(r[0]) for r in catalog.db.execute("SELECT id FROM faces ORDER BY id")]
    catalog.ensure_model("other", 8)
    with catalog.transaction() as conn:
        conn.executemany("INSERT INTO embeddings (face_id, model_id, dim, vector, created_at) VALUES (?, 'other', 8, ?, ?)",
                         [(i, encode_vector(np.eye(8, dtype=np.float32)[0]), now()) for i in ids])
    report = cluster_catalog(catalog, "other", CONFIG, algorithms=FakeAlgorithms())
    assert report.mode == "full" and report.replaced_model == MODEL and report.to_dict()["replaced_model"] == MODEL
    assert cluster_catalog(catalog, "other", CONFIG, algorithms=FakeAlgorithms()).replaced_model is None


def test_hdbscan_on_a_tiny_library_and_a_few_new_faces() -> None:
    # 4 photos, then 4 new faces: fewer than HDBSCAN's neighbourhood (5 + 1) made every run fail.
    catalog = Catalog.open(None)
    hdbscan = ClusterConfig(method="hdbscan", min_cluster_size=2)
    ids = add_faces(catalog, [[0], [0], [1], [1]])
    assert cluster_catalog(catalog, MODEL, hdbscan).mode == "full"
    move_face(catalog, ids[0], "Ada")
    move_face(catalog, ids[1], "Ada")
    assert cluster_catalog(catalog, MODEL, hdbscan, full=True).clusters >= 1
    new = add_faces(catalog, [[0], [0], [2], [2]], seed=5)
    report = cluster_catalog(catalog, MODEL, hdbscan)
    assert report.mode == "incremental"
    assert cluster_catalog(catalog, MODEL, hdbscan).mode == "unchanged"  # the run finished: nothing left over
    assert clusters_of(catalog, ids[:2]) == [clusters_of(catalog, ids)[0]] * 2
    assert person_of(catalog, ids[0]) == "Ada" and person_of(catalog, new[2]) != "Ada"

def test_unignored_face_and_cluster_come_back_at_the_next_plain_clustering() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, _, b, _ = clusters_of(catalog, ids)
    name_cluster(catalog, a, "Ada")
    ignore_face(catalog, ids[0])
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms()).mode == "unchanged"
    ignore_face(catalog, ids[0], ignored=False)
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.mode == "incremental" and report.assigned == 1 and report.ignored == 0
    assert clusters_of(catalog, [ids[0]]) == [a] and person_of(catalog, ids[0]) == "Ada"
    # A whole cluster, through a plain clustering while it was ignored.
    ignore_cluster(catalog, b)
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    ignore_cluster(catalog, b, ignored=False)
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.ignored == 0 and report.clustered == 5 and report.noise == 0
    assert clusters_of(catalog, ids[3:]) == [b, b]
    # Unignoring a face that was never ignored changes nothing.
    ignore_face(catalog, ids[1], ignored=False)
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms()).mode == "unchanged"


def _names(catalog: Catalog) -> list[str]:
    return sorted(r[0] for r in catalog.db.execute("SELECT name FROM people"))


def test_relabelling_a_cluster_removes_the_person_it_left_without_faces() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [1], [1], [2], [2]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, b, _, c, _ = clusters_of(catalog, ids)
    assert name_cluster(catalog, a, "Pete Sampas")["removed"] is None
    assert name_cluster(catalog, a, "Pete Sampras")["removed"] == "Pete Sampas"  # a typo fixed
    assert _names(catalog) == ["Pete Sampras"]
    assert [r["name"] for r in list_people(catalog) if r["kind"] == "person"] == ["Pete Sampras"]
    # A person with faces elsewhere stays: two clusters named Bob, one of them renamed.
    name_cluster(catalog, b, "Bob")
    name_cluster(catalog, c, "Bob")
    assert name_cluster(catalog, c, "Carl")["removed"] is None
    assert _names(catalog) == ["Bob", "Carl", "Pete Sampras"]


def test_a_person_whose_last_face_is_moved_or_rejected_is_removed() -> None:
    catalog, ids, a, b = _two_named_people("Ada", "Bob")
    assert move_face(catalog, ids[0], "Bob")["removed"] is None
    assert move_face(catalog, ids[1], "Bob")["removed"] == "Ada"
    assert reject_face(catalog, ids[2])["removed"] is None
    # Bob's last faces rejected: Bob, his emptied cluster and the rejections that named him go.
    reject_face(catalog, ids[3])
    reject_face(catalog, ids[0])
    assert reject_face(catalog, ids[1])["removed"] == "Bob"
    assert _names(catalog) == [] and list_people(catalog) == []
    assert catalog.db.execute("SELECT count(*) FROM face_rejections").fetchone()[0] == 0
    assert catalog.db.execute("SELECT count(*) FROM clusters").fetchone()[0] == 0
    report = cluster_catalog(catalog, MODEL, CONFIG, full=True, algorithms=FakeAlgorithms())
    assert report.people == 0 and report.clustered == 4


def test_a_person_whose_faces_are_all_ignored_is_listed_only_with_all() -> None:
    catalog, ids, a, b = _two_named_people("Ada", "Bob")
    ignore_face(catalog, ids[0])
    ignore_face(catalog, ids[1])
    # Ada keeps her (ignored) faces, so she is not removed: unignoring brings her back.
    assert _names(catalog) == ["Ada", "Bob"]
    assert [r["name"] for r in list_people(catalog) if r["kind"] == "person"] == ["Bob"]
    everyone = {r["name"]: r["faces"] for r in list_people(catalog, include_ignored=True) if r["kind"] == "person"}
    assert everyone == {"Ada": 0, "Bob": 2}


def test_people_all_lists_an_ignored_cluster_even_when_it_is_named() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, b, _ = clusters_of(catalog, ids)
    name_cluster(catalog, a, "Ada")
    ignore_cluster(catalog, a)
    ignore_cluster(catalog, b)
    assert list_people(catalog) == []
    ignored = [r for r in list_people(catalog, include_ignored=True) if r["kind"] == "cluster"]
    assert ignored == [
        {"kind": "cluster", "id": a, "name": "Ada", "faces": 2, "clusters": [a], "ignored": True},
        {"kind": "cluster", "id": b, "name": None, "faces": 2, "clusters": [b], "ignored": True},
    ]
    ignore_cluster(catalog, a, ignored=False)
    assert list_people(catalog) == [{"kind": "person", "id": 1, "name": "Ada", "faces": 2, "clusters": [a],
                                     "ignored": False}]


def test_merge_counts_the_faces_people_shows() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a, _, _, b, _ = clusters_of(catalog, ids)
    name_cluster(catalog, a, "Ada")
    name_cluster(catalog, b, "Bob")
    ignore_face(catalog, ids[0])
    assert [r["faces"] for r in list_people(catalog) if r["name"] == "Ada"] == [2]
    assert merge_people(catalog, "Ada", "Bob")["faces"] == 2
    # The ignored face is Bob's now too: unignoring it brings it back under his name.
    assert person_of(catalog, ids[0]) == "Bob"


@pytest.mark.parametrize("bad", ["Ada\nLovelace", "Ada\tL", "Ada\x7f", "Ada\u2028L", "\u200b", " \u200b\u200d ", "\u0301"])
def test_names_with_control_characters_or_nothing_visible_are_refused(bad: str) -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    (a,) = set(clusters_of(catalog, ids))
    with pytest.raises(CatalogError, match="a person's name"):
        name_cluster(catalog, a, bad)
    with pytest.raises(CatalogError, match="a person's name"):
        move_face(catalog, ids[0], bad)
    name_cluster(catalog, a, "Ada")
    with pytest.raises(CatalogError, match="a person's name"):
        rename_person(catalog, "Ada", bad)
    assert [r[0] for r in catalog.db.execute("SELECT name FROM people")] == ["Ada"]
    # One stored by an older version can still be found, to be renamed (or forgotten).
    catalog.db.execute("UPDATE people SET name = ?", [bad.strip()])
    assert rename_person(catalog, bad, "Ada L")["new"] == "Ada L"


def test_names_with_invisible_joiners_between_visible_characters_are_kept() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    (a,) = set(clusters_of(catalog, ids))
    for name in ("\U0001f469\u200d\U0001f52c Ada", "\u0645\u06cc\u200c\u0631\u0648\u0632", "Zoë Ñúñez", "1"):
        assert name_cluster(catalog, a, name)["person"] == name


def test_rejected_faces_are_placed_again_at_the_next_plain_clustering() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a = clusters_of(catalog, ids)[0]
    # A look-alike pair clustered in with Ada (as real clustering sometimes does), named with her.
    with catalog.transaction() as conn:
        conn.execute("UPDATE faces SET cluster_id = ? WHERE id IN (?, ?)", [a, ids[3], ids[4]])
    name_cluster(catalog, a, "Ada")
    reject_face(catalog, ids[3])
    reject_face(catalog, ids[4])
    # No new photo: the plain run still places them (together, never back with Ada), as after an unignore.
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert report.mode == "incremental" and report.noise == 0
    c, d = clusters_of(catalog, ids[3:])
    assert c == d and c != a and person_of(catalog, ids[3]) is None
    assert cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms()).mode == "unchanged"


def test_assigned_counts_new_faces_only_and_earlier_lone_faces_apart() -> None:
    catalog = Catalog.open(None)
    ids = add_faces(catalog, [[0], [0], [0], [1], [1]])
    cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    a = clusters_of(catalog, ids)[0]
    # An earlier run left this face alone (full average linkage can, where the 5-nearest assignment
    # rule later accepts it): every incremental run offers such faces to the known clusters again.
    with catalog.transaction() as conn:
        conn.execute("UPDATE faces SET cluster_id = NULL WHERE id = ?", [ids[2]])
    new = add_faces(catalog, [[0]], seed=7)
    report = cluster_catalog(catalog, MODEL, CONFIG, algorithms=FakeAlgorithms())
    assert clusters_of(catalog, [ids[2], new[0]]) == [a, a]
    assert (report.assigned, report.assigned_earlier) == (1, 1)  # one new face, not two

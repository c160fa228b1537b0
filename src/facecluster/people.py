"""People: clustering the catalog's faces, naming clusters, and corrections that survive re-clustering.

Who decides a face's person (``faces.person_source``):

- ``label``: the user named the face's cluster (``facecluster label CLUSTER NAME``);
- ``user``: the user moved this very face to a person (``label --move FACE NAME``);
- ``auto``: the face joined a cluster that carries a name.

``label`` and ``user`` faces are never renamed by clustering: they are must-link constraints (all faces
a user gave one name end in one cluster), and each clustering maps its clusters to people by the names
of the faces inside. "Not this person" (``face_rejections``) becomes a cannot-link constraint::

    report = cluster_catalog(catalog, "casia-webface:415ef259", ClusterConfig())
    name_cluster(catalog, 3, "Ada Lovelace")
"""

from __future__ import annotations

import sqlite3
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from facecluster.catalog import Catalog
from facecluster.dblock import is_write_conflict
from facecluster.config import ClusterConfig
from facecluster.errors import CatalogError
from facecluster.migrations import now
from facecluster.reporting import ProgressFn, null_progress

#: person_source values that clustering never overrides
USER_SOURCES = ("label", "user")


class Algorithms(Protocol):
    """Engineer E's clustering functions (``facecluster.cluster``); tests pass fakes."""

    def cluster_embeddings(
        self, X: np.ndarray, config: ClusterConfig, *, groups: np.ndarray | None = ...,
        must_link: np.ndarray | None = ..., cannot_link_pairs: np.ndarray | None = ..., progress: ProgressFn = ...,
    ) -> np.ndarray: ...

    def assign_to_known(
        self, X_new: np.ndarray, X_known: np.ndarray, known_labels: np.ndarray, *, threshold: float, k: int = ...,
        groups_new: np.ndarray | None = ..., groups_known: np.ndarray | None = ..., rejected: np.ndarray | None = ...,
        ann_min_n: int = ..., progress: ProgressFn = ...,
    ) -> np.ndarray: ...


def default_algorithms() -> Algorithms:
    """The ``facecluster.cluster`` module (engineer E)."""
    from facecluster import cluster

    return cluster


@dataclass
class ClusterReport:
    """What one clustering did (also the ``--json`` output of ``facecluster cluster``)."""

    model_id: str
    mode: str = "full"  # full | incremental | unchanged
    faces: int = 0  # faces with a vector of this model
    ignored: int = 0  # marked ignored / not a face by the user
    low_probability: int = 0  # left out: detection probability below the floor
    too_small: int = 0  # left out: box smaller than the size floor
    clustered: int = 0  # faces in a cluster now
    noise: int = 0  # eligible faces in no cluster (alone, or in a group below the minimum size)
    assigned: int = 0  # incremental: new faces that joined an existing cluster
    assigned_earlier: int = 0  # incremental: faces an earlier run left alone that joined an existing cluster
    clusters: int = 0
    new_clusters: int = 0
    named_clusters: int = 0
    people: int = 0
    replaced_model: str | None = None  # the model whose clusters this run replaced (a switch of model)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


@dataclass
class _Faces:
    """The faces of one model that clustering looks at, as parallel arrays."""

    ids: np.ndarray
    X: np.ndarray
    photo: np.ndarray
    person: np.ndarray  # person id or -1
    source: list[str | None]
    cluster: np.ndarray  # current cluster id or -1
    eligible: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    seen: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))  # clustered before (this model)


def _load_faces(catalog: Catalog, model_id: str, config: ClusterConfig, report: ClusterReport) -> _Faces:
    ids, X = catalog.load_embeddings(model_id)
    rows = catalog.db.execute(
        "SELECT id, photo_id, x1, y1, x2, y2, probability, person_id, person_source, cluster_id, ignored, "
        "clustered_with = ? "
        "FROM faces WHERE id IN (SELECT face_id FROM embeddings WHERE model_id = ?) ORDER BY id",
        [model_id, model_id],
    ).fetchall()
    assert len(rows) == len(ids)
    n = len(rows)
    report.faces = n
    photo = np.array([r[1] for r in rows], dtype=np.int64)
    person = np.array([-1 if r[7] is None else r[7] for r in rows], dtype=np.int64)
    cluster = np.array([-1 if r[9] is None else r[9] for r in rows], dtype=np.int64)
    side = np.array([min(r[4] - r[2], r[5] - r[3]) for r in rows], dtype=np.float64).reshape(n)
    prob = np.array([r[6] for r in rows], dtype=np.float64).reshape(n)
    ignored = np.array([bool(r[10]) for r in rows], dtype=bool).reshape(n)
    low = ~ignored & (prob < config.min_probability)
    small = ~ignored & ~low & (side < config.min_face_px)
    report.ignored = int(ignored.sum())
    report.low_probability = int(low.sum())
    report.too_small = int(small.sum())
    faces = _Faces(ids, X, photo, person, [r[8] for r in rows], cluster)
    faces.seen = np.array([bool(r[11]) for r in rows], dtype=bool).reshape(n)
    faces.eligible = ~(ignored | low | small)
    return faces


def _constraints(faces: _Faces, index: np.ndarray, rejected: set[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """must_link (person id or -1) and cannot_link_pairs for the faces ``faces.ids[index]``, given the
    user's rejections ((face id, person id), ``_rejections``)."""
    must = np.full(len(index), -1, dtype=np.int64)
    for j, i in enumerate(index):
        if faces.source[i] in USER_SOURCES and faces.person[i] >= 0:
            must[j] = faces.person[i]
    # One representative face per named person: must-link joins the rest of them to it.
    rep: dict[int, int] = {}
    for j, pid in enumerate(must):
        if pid >= 0 and int(pid) not in rep:
            rep[int(pid)] = j
    pairs: list[tuple[int, int]] = []
    position = {int(faces.ids[i]): j for j, i in enumerate(index)}
    for face_id, person_id in rejected:
        at = position.get(face_id)
        if at is not None and person_id in rep:
            pairs.append((at, rep[person_id]))
    # Two named people never share a cluster (bounded: one pair per two people).
    reps = list(rep.values())
    if len(reps) <= 2000:
        pairs.extend((a, b) for k, a in enumerate(reps) for b in reps[k + 1 :])
    return must, np.array(pairs, dtype=np.int64).reshape(-1, 2)


def _rejections(catalog: Catalog) -> set[tuple[int, int]]:
    return {(int(f), int(p)) for f, p in catalog.db.execute("SELECT face_id, person_id FROM face_rejections")}


def cluster_catalog(
    catalog: Catalog,
    model_id: str,
    config: ClusterConfig = ClusterConfig(),
    *,
    full: bool = False,
    run_id: int | None = None,
    algorithms: Algorithms | None = None,
    progress: ProgressFn = null_progress,
) -> ClusterReport:
    """Cluster every face with a vector of ``model_id``, keeping names and corrections.

    Incremental by default: faces already in a cluster stay there, new faces join a known cluster through
    ``assign_to_known`` (engineer E's rule) or form new clusters among themselves. ``full=True`` (or no
    clusters of this model yet, or a different clustering method) re-clusters everything; cluster ids are
    reused for the new clusters that overlap old ones most, so ``label 3 NAME`` keeps meaning the same group::

        cluster_catalog(catalog, embedder.model_id, ClusterConfig(threshold=1.0), full=True)
    """
    # One transaction from reading the faces to writing the clusters, so no change of another process (a
    # `label`, `forget`, `detect`) is written over with what was read before it. First optimistically: the
    # clustering (a minute on a large library) runs on a snapshot without the lock, so other commands
    # write meanwhile; if one did, the first write here fails at once and the work is done again, this
    # time holding the lock from the start (others wait up to BUSY_TIMEOUT_S). Readers never wait.
    algos = algorithms or default_algorithms()
    try:
        with catalog.transaction(immediate=False):
            return _cluster_catalog(catalog, model_id, config, full, run_id, algos, progress)
    except sqlite3.OperationalError as exc:
        if not is_write_conflict(exc):
            raise
    with catalog.transaction():
        return _cluster_catalog(catalog, model_id, config, full, run_id, algos, progress)


def _cluster_catalog(catalog: Catalog, model_id: str, config: ClusterConfig, full: bool, run_id: int | None,
                     algos: Algorithms, progress: ProgressFn) -> ClusterReport:
    report = ClusterReport(model_id=model_id)
    faces = _load_faces(catalog, model_id, config, report)
    current = {
        int(r[0])
        for r in catalog.db.execute("SELECT id FROM clusters WHERE model_id = ? AND ignored = 0", [model_id])
    }
    # The clusters shown are of one model: another model's (the one most of them are of) are replaced.
    other = catalog.db.execute(
        "SELECT model_id FROM clusters WHERE model_id != ? AND ignored = 0 GROUP BY model_id "
        "ORDER BY count(*) DESC, model_id LIMIT 1", [model_id]
    ).fetchone()
    report.replaced_model = None if other is None else str(other[0])
    in_current = np.array([c in current for c in faces.cluster], dtype=bool).reshape(len(faces.ids))
    if not full and (not current or other is not None):
        full = True
    if full:
        report.mode = "full"
        _cluster_full(catalog, model_id, config, faces, algos, report, run_id, progress)
    else:
        # Faces outside every cluster are clustered again, but only together with faces never seen.
        new = faces.eligible & ~in_current
        if not (new & ~faces.seen).any():
            report.mode = "unchanged"
            _finish(catalog, model_id, report, faces)
            return report
        report.mode = "incremental"
        _cluster_incremental(catalog, model_id, config, faces, new, in_current, algos, report, run_id, progress)
    _finish(catalog, model_id, report, faces)
    return report


def _cluster_full(
    catalog: Catalog,
    model_id: str,
    config: ClusterConfig,
    faces: _Faces,
    algos: Algorithms,
    report: ClusterReport,
    run_id: int | None,
    progress: ProgressFn,
) -> None:
    index = np.flatnonzero(faces.eligible)
    labels = np.full(len(faces.ids), -1, dtype=np.int64)
    if len(index):
        must, cannot = _constraints(faces, index, _rejections(catalog))
        labels[index] = np.asarray(
            algos.cluster_embeddings(
                faces.X[index], config, groups=faces.photo[index], must_link=must,
                cannot_link_pairs=cannot, progress=progress,
            ),
            dtype=np.int64,
        )
    # Reuse old cluster ids for the new clusters that overlap them most (greedy by overlap size).
    overlap: Counter[tuple[int, int]] = Counter()
    for new_label, old_label in zip(labels.tolist(), faces.cluster.tolist()):
        if new_label >= 0 and old_label >= 0:
            overlap[(new_label, old_label)] += 1
    reusable = {
        int(r[0]) for r in catalog.db.execute("SELECT id FROM clusters WHERE ignored = 0")
    }
    mapping: dict[int, int] = {}
    used: set[int] = set()
    for (label, old), _count in sorted(overlap.items(), key=lambda kv: (-kv[1], kv[0])):
        if label not in mapping and old not in used and old in reusable:
            mapping[label] = old
            used.add(old)
    with catalog.transaction() as conn:
        stale = reusable - used
        # Faces of ignored clusters keep their cluster; every other face is reassigned below.
        conn.execute(
            "UPDATE faces SET cluster_id = NULL WHERE cluster_id IN (SELECT id FROM clusters WHERE ignored = 0)"
        )
        conn.executemany("DELETE FROM clusters WHERE id = ?", [(c,) for c in stale])
        for old in used:
            # Names live on the user's faces: the votes in _write_assignment put them back.
            conn.execute(
                "UPDATE clusters SET model_id = ?, run_id = ?, person_id = NULL WHERE id = ?", [model_id, run_id, old]
            )
        for label in sorted(set(int(v) for v in labels if v >= 0)):
            if label not in mapping:
                cursor = conn.execute(
                    "INSERT INTO clusters (model_id, run_id, created_at) VALUES (?, ?, ?)", [model_id, run_id, now()]
                )
                mapping[label] = int(cursor.lastrowid or 0)
                report.new_clusters += 1
        assignment = np.array([mapping[int(v)] if v >= 0 else -1 for v in labels], dtype=np.int64).reshape(-1)
        _write_assignment(conn, faces, assignment, model_id)


def _cluster_incremental(
    catalog: Catalog,
    model_id: str,
    config: ClusterConfig,
    faces: _Faces,
    new: np.ndarray,
    in_current: np.ndarray,
    algos: Algorithms,
    report: ClusterReport,
    run_id: int | None,
    progress: ProgressFn,
) -> None:
    known = faces.eligible & in_current
    new_index = np.flatnonzero(new)
    assignment = np.where(in_current, faces.cluster, -1)
    assigned = np.full(len(new_index), -1, dtype=np.int64)
    cluster_person = dict(catalog.db.execute("SELECT id, person_id FROM clusters WHERE person_id IS NOT NULL").fetchall())
    rejected = _rejections(catalog)
    if known.any():
        clusters_of: dict[int, list[int]] = defaultdict(list)
        for c, p in cluster_person.items():
            clusters_of[int(p)].append(int(c))
        position = {int(faces.ids[i]): j for j, i in enumerate(new_index)}
        rejected_rows = [
            (position[f], c) for f, p in rejected if f in position for c in clusters_of.get(p, [])
        ]
        assigned = np.asarray(
            algos.assign_to_known(
                faces.X[new_index], faces.X[known], faces.cluster[known],
                threshold=config.assign_threshold, k=config.assign_k, ann_min_n=config.ann_min_n,
                groups_new=faces.photo[new_index], groups_known=faces.photo[known],
                rejected=np.array(rejected_rows, dtype=np.int64).reshape(-1, 2),
            ),
            dtype=np.int64,
        ).reshape(-1)
    # Checked again here (cheap), so a looser assignment rule can never break a correction.
    cluster_photos: dict[int, set[int]] = defaultdict(set)
    for c, p in zip(faces.cluster[known], faces.photo[known]):
        cluster_photos[int(c)].add(int(p))
    for j, i in enumerate(new_index):
        c = int(assigned[j])
        if c < 0:
            continue
        person = cluster_person.get(c)
        own = int(faces.person[i]) if faces.source[i] in USER_SOURCES else -1
        if (
            int(faces.photo[i]) in cluster_photos[c]
            or (person is not None and (int(faces.ids[i]), int(person)) in rejected)
            or (own >= 0 and person is not None and own != person)
        ):
            assigned[j] = -1
            continue
        cluster_photos[c].add(int(faces.photo[i]))
        assignment[i] = c
        # Faces an earlier run left alone are offered to the known clusters again: counted apart, so
        # "new faces" never counts more faces than the run brought.
        if faces.seen[i]:
            report.assigned_earlier += 1
        else:
            report.assigned += 1
    rest = new_index[assigned < 0]
    labels = np.full(len(rest), -1, dtype=np.int64)
    if len(rest):
        must, cannot = _constraints(faces, rest, rejected)
        labels = np.asarray(
            algos.cluster_embeddings(
                faces.X[rest], config, groups=faces.photo[rest], must_link=must,
                cannot_link_pairs=cannot, progress=progress,
            ),
            dtype=np.int64,
        ).reshape(-1)
    with catalog.transaction() as conn:
        mapping: dict[int, int] = {}
        for label in sorted(set(int(v) for v in labels if v >= 0)):
            cursor = conn.execute(
                "INSERT INTO clusters (model_id, run_id, created_at) VALUES (?, ?, ?)", [model_id, run_id, now()]
            )
            mapping[label] = int(cursor.lastrowid or 0)
            report.new_clusters += 1
        for i, label in zip(rest, labels.tolist()):
            if label >= 0:
                assignment[i] = mapping[int(label)]
        # Eligible faces outside clusters, and faces no longer eligible, leave their old cluster.
        assignment[~faces.eligible & ~in_current] = -1
        _write_assignment(conn, faces, assignment, model_id)


def _write_assignment(conn: Any, faces: _Faces, assignment: np.ndarray, model_id: str) -> None:
    """Set cluster ids, map clusters to people by their named faces, give ``auto`` faces that name."""
    eligible_or_clustered = faces.eligible | (assignment >= 0)
    conn.executemany(
        "UPDATE faces SET cluster_id = ? WHERE id = ?",
        [
            (int(c) if c >= 0 else None, int(fid))
            for fid, c, keep in zip(faces.ids, assignment, eligible_or_clustered)
            if keep
        ],
    )
    votes: dict[int, Counter[int]] = defaultdict(Counter)
    for c, pid, source in zip(assignment, faces.person, faces.source):
        if c >= 0 and pid >= 0 and source in USER_SOURCES:
            votes[int(c)][int(pid)] += 1
    clusters = {int(c) for c in assignment if c >= 0}
    for c in clusters:
        if votes[c]:  # clusters without named faces keep what they had (none after a full re-clustering)
            person = votes[c].most_common(1)[0][0]
            conn.execute("UPDATE clusters SET person_id = ? WHERE id = ?", [person, c])
    # The faces this run clustered or left out, in a temp table the two updates below join against.
    conn.execute("CREATE TEMP TABLE IF NOT EXISTS _touched (id INTEGER PRIMARY KEY)")
    conn.execute("DELETE FROM _touched")
    conn.executemany("INSERT INTO _touched (id) VALUES (?)", [(int(i),) for i in faces.ids[eligible_or_clustered]])
    _propagate_names(conn)
    conn.execute("UPDATE faces SET clustered_with = ? WHERE id IN (SELECT id FROM _touched)", [model_id])


def _propagate_names(conn: Any) -> None:
    """``auto`` faces (and faces without a person) of ``_touched`` take their cluster's person, unless rejected."""
    conn.execute(
        "UPDATE faces SET person_id = ("
        "  SELECT c.person_id FROM clusters c WHERE c.id = faces.cluster_id AND NOT EXISTS ("
        "    SELECT 1 FROM face_rejections r WHERE r.face_id = faces.id AND r.person_id = c.person_id)),"
        " person_source = 'auto' "
        "WHERE (person_source IS NULL OR person_source = 'auto') AND faces.id IN (SELECT id FROM _touched)"
    )
    conn.execute("UPDATE faces SET person_source = NULL WHERE person_id IS NULL AND person_source = 'auto'")


def _finish(catalog: Catalog, model_id: str, report: ClusterReport, faces: _Faces) -> None:
    with catalog.transaction() as conn:
        _update_sizes(conn)
    row = catalog.db.execute(
        "SELECT count(*), sum(size), sum(person_id IS NOT NULL) FROM clusters WHERE model_id = ? AND ignored = 0",
        [model_id],
    ).fetchone()
    report.clusters = int(row[0] or 0)
    report.clustered = int(row[1] or 0)
    report.named_clusters = int(row[2] or 0)
    in_cluster = catalog.db.execute(
        "SELECT count(*) FROM faces f JOIN embeddings e ON e.face_id = f.id AND e.model_id = ? "
        "WHERE f.cluster_id IS NOT NULL AND f.ignored = 0",
        [model_id],
    ).fetchone()[0]
    report.noise = int(faces.eligible.sum()) - int(in_cluster)
    report.people = int(catalog.db.execute("SELECT count(*) FROM people").fetchone()[0])


def _update_sizes(conn: Any) -> None:
    conn.execute(
        "UPDATE clusters SET size = (SELECT count(*) FROM faces WHERE faces.cluster_id = clusters.id AND faces.ignored = 0) "
        "WHERE ignored = 0"
    )
    # A cluster emptied by moves, ignores or re-clustering disappears (unless it carries a name or an ignore).
    conn.execute("DELETE FROM clusters WHERE size = 0 AND ignored = 0 AND person_id IS NULL")


# -- naming and corrections ----------------------------------------------------------------------------


def fold_name(name: str) -> str:
    """The form in which names are compared: NFC, case-folded.

        fold_name("ZOE\u0308") == fold_name("zoë")   # True
    """
    return unicodedata.normalize("NFC", name).casefold()


def _clean_name(name: str) -> str:
    # NFC, so "Zoë" typed on macOS (decomposed) and on Linux (composed) is one stored name.
    name = unicodedata.normalize("NFC", name.strip())
    if not name:
        raise CatalogError("a person's name cannot be empty")
    return name


def _new_name(name: str) -> str:
    """``name`` cleaned as a name to store; one with a control character or nothing visible is refused.

    Only names being created or given are checked: one an older version stored stays findable, to be
    renamed or forgotten::

        _new_name(" Zoë ")   # 'Zoë'
        _new_name("\u200b")  # CatalogError
    """
    name = _clean_name(name)
    # Cc: tab, newline...; Zl/Zp: line breaks; Cs: bytes that were not UTF-8. Each breaks a listing's row.
    bad = sorted({c for c in name if unicodedata.category(c) in ("Cc", "Zl", "Zp", "Cs")})
    if bad:
        shown = ", ".join(repr(c) for c in bad)
        raise CatalogError(f"a person's name cannot contain control characters ({shown}): {name!r}")
    # A letter, digit, punctuation or symbol: zero-width spaces and joiners or lone accents show nothing.
    if not any(unicodedata.category(c)[0] in "LNPS" for c in name):
        raise CatalogError(f"a person's name needs a visible character: {name!r}")
    return name


def _name_matches(conn: Any, name: str) -> list[tuple[int, str]]:
    row = conn.execute("SELECT id, name FROM people WHERE name = ?", [name]).fetchone()
    if row is not None:
        return [(int(row[0]), str(row[1]))]
    # SQLite's NOCASE folds ASCII only: compare Unicode case-folded, NFC-normalised names here.
    return [(int(i), str(n)) for i, n in conn.execute("SELECT id, name FROM people") if fold_name(n) == fold_name(name)]


def _one_person(matches: list[tuple[int, str]], name: str) -> tuple[int, str]:
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise CatalogError(f"{name!r} matches several people ({', '.join(n for _, n in matches)}); give the exact name")
    raise CatalogError(f"no person named {name!r}; `facecluster people` lists them")


def find_person(conn: Any, name: str) -> tuple[int, str]:
    """``(id, name)`` of the person called ``name``: exact, else the one equal ignoring case and Unicode form.

    Every command that takes a person's name (``label``, ``forget``, ``export``) finds people this way::

        find_person(catalog.db.conn, "zoë ñúñez")   # (2, 'Zoë Ñúñez')
    """
    return _one_person(_name_matches(conn, _clean_name(name)), name)


def _person_id(conn: Any, name: str, *, create: bool) -> int:
    # An existing person is found as find_person finds it ("ada" names Ada's cluster as Ada); only a
    # name that matches nobody creates a person, and only where the command means to.
    name = _clean_name(name)
    matches = _name_matches(conn, name)
    if matches or not create:
        return _one_person(matches, name)[0]
    cursor = conn.execute("INSERT INTO people (name, created_at) VALUES (?, ?)", [_new_name(name), now()])
    return int(cursor.lastrowid or 0)


def _person_name(conn: Any, person_id: int) -> str:
    return str(conn.execute("SELECT name FROM people WHERE id = ?", [person_id]).fetchone()[0])


def _cluster_row(conn: Any, cluster_id: int) -> tuple[int, int | None, int]:
    row = conn.execute("SELECT id, person_id, ignored FROM clusters WHERE id = ?", [cluster_id]).fetchone()
    if row is None:
        raise CatalogError(f"no cluster {cluster_id}; `facecluster people` lists the clusters")
    return int(row[0]), row[1], int(row[2])


def _face_row(conn: Any, face_id: int) -> tuple[int, int | None, int | None]:
    row = conn.execute("SELECT id, person_id, cluster_id FROM faces WHERE id = ?", [face_id]).fetchone()
    if row is None:
        raise CatalogError(f"no face {face_id}; `facecluster faces` lists them")
    return int(row[0]), row[1], row[2]


#: People with no face of their own and none through a named cluster.
_FACELESS = ("NOT EXISTS (SELECT 1 FROM faces WHERE person_id = people.id) AND NOT EXISTS "
             "(SELECT 1 FROM faces f JOIN clusters c ON c.id = f.cluster_id WHERE c.person_id = people.id)")


def _remove_faceless(conn: Any, person_id: int | None = None) -> list[str]:
    """Delete person ``person_id`` (every person, if None) when no face is theirs any more (own or through a
    cluster); the names removed.

    A name left with no face is a typo fixed by relabelling, or a person every face was taken from;
    listing it would count a person nobody can see. Their "not this person" rows go too: with the
    person gone they constrain nothing, and a later person of that name is a new person."""
    where = _FACELESS + ("" if person_id is None else " AND id = ?")
    rows = conn.execute(f"SELECT id, name FROM people WHERE {where} ORDER BY id",
                        [] if person_id is None else [person_id]).fetchall()
    for pid, _ in rows:
        conn.execute("DELETE FROM face_rejections WHERE person_id = ?", [pid])
        conn.execute("UPDATE clusters SET person_id = NULL WHERE person_id = ?", [pid])
        conn.execute("DELETE FROM people WHERE id = ?", [pid])
    if rows:
        _update_sizes(conn)  # their emptied clusters, unnamed now, disappear
    return [name for _, name in rows]


def _remove_if_faceless(conn: Any, person_id: int | None) -> str | None:
    """``_remove_faceless`` for one person: their name if they were removed, else None."""
    if person_id is None:
        return None
    removed = _remove_faceless(conn, person_id)
    return removed[0] if removed else None


def tidy_after_deleted_faces(conn: Any) -> list[str]:
    """After faces were deleted outside naming (a photo replaced or gone, re-detection): remove the people
    left with no face, as naming does, and refresh cluster sizes. Returns the removed names.

        with catalog.transaction() as conn:
            tidy_after_deleted_faces(conn)   # -> ["Solo"]
    """
    removed = _remove_faceless(conn)
    if not removed:  # (removing people refreshed the sizes already)
        _update_sizes(conn)
    return removed


def name_cluster(catalog: Catalog, cluster_id: int, name: str) -> dict[str, Any]:
    """Give cluster ``cluster_id`` a name (an existing name joins that person): ``label 3 "Ada"``.

    Faces of the cluster that a user put elsewhere or rejected for this person keep their own state."""
    with catalog.transaction() as conn:
        _, previous, ignored = _cluster_row(conn, cluster_id)
        if ignored:
            raise CatalogError(f"cluster {cluster_id} is marked ignored; it cannot be named")
        person = _person_id(conn, name, create=True)
        conn.execute("UPDATE clusters SET person_id = ? WHERE id = ?", [person, cluster_id])
        cursor = conn.execute(
            "UPDATE faces SET person_id = ?, person_source = 'label' WHERE cluster_id = ? AND ignored = 0 "
            "AND (person_source IS NULL OR person_source IN ('auto', 'label')) "
            "AND NOT EXISTS (SELECT 1 FROM face_rejections r WHERE r.face_id = faces.id AND r.person_id = ?)",
            [person, cluster_id, person],
        )
        faces = cursor.rowcount
        # Relabelling fixes a name: the old one goes when this cluster was all it had.
        removed = _remove_if_faceless(conn, previous) if previous != person else None
        return {"cluster": cluster_id, "person": _person_name(conn, person), "person_id": person,
                "faces": faces, "removed": removed}


def rename_person(catalog: Catalog, old: str, new: str) -> dict[str, Any]:
    """Rename a person (``label --rename OLD NEW``); use ``merge_people`` to join two people."""
    with catalog.transaction() as conn:
        person = _person_id(conn, old, create=False)
        old_name, new_name = _person_name(conn, person), _new_name(new)
        # "ada" -> "Ada" fixes a spelling; a name another person answers to would make two people one name.
        if any(other != person for other, _ in _name_matches(conn, new_name)):
            raise CatalogError(f"{new!r} already exists; merge instead: facecluster label --merge {old!r} {new!r}")
        conn.execute("UPDATE people SET name = ? WHERE id = ?", [new_name, person])
        return {"person_id": person, "old": old_name, "new": new_name}


def merge_people(catalog: Catalog, source: str, target: str) -> dict[str, Any]:
    """Merge person ``source`` into ``target`` (``label --merge A B``: A's faces become B's, A is gone)."""
    with catalog.transaction() as conn:
        a = _person_id(conn, source, create=False)
        b = _person_id(conn, target, create=False)
        source_name = _person_name(conn, a)
        if a == b:
            raise CatalogError("cannot merge a person with itself")
        # A rejection of B on a face now named A would contradict the merge: the user's later word wins.
        conn.execute(
            "DELETE FROM face_rejections WHERE person_id = ? AND face_id IN (SELECT id FROM faces WHERE person_id = ?)",
            [b, a],
        )
        # Counted as `people` counts them: ignored faces change person too, but are not shown.
        faces = conn.execute("SELECT count(*) FROM faces WHERE person_id = ? AND ignored = 0", [a]).fetchone()[0]
        conn.execute("UPDATE faces SET person_id = ? WHERE person_id = ?", [b, a])
        conn.execute("UPDATE clusters SET person_id = ? WHERE person_id = ?", [b, a])
        conn.execute("UPDATE OR IGNORE face_rejections SET person_id = ? WHERE person_id = ?", [b, a])
        conn.execute("DELETE FROM people WHERE id = ?", [a])
        return {"merged": source_name, "into": _person_name(conn, b), "person_id": b, "faces": int(faces)}


def move_face(catalog: Catalog, face_id: int, name: str) -> dict[str, Any]:
    """Move one face to person ``name`` (``label --move FACE NAME``); it stays there for good.

    The face's previous person is recorded as a rejection, and the face joins that person's largest
    cluster (or a new one), so later clusterings keep it with ``name``."""
    with catalog.transaction() as conn:
        _, old_person, old_cluster = _face_row(conn, face_id)
        person = _person_id(conn, name, create=True)
        if old_person is not None and old_person != person:
            conn.execute(
                "INSERT OR IGNORE INTO face_rejections (face_id, person_id, created_at) VALUES (?, ?, ?)",
                [face_id, old_person, now()],
            )
        conn.execute("DELETE FROM face_rejections WHERE face_id = ? AND person_id = ?", [face_id, person])
        row = conn.execute(
            "SELECT id FROM clusters WHERE person_id = ? AND ignored = 0 ORDER BY size DESC, id LIMIT 1", [person]
        ).fetchone()
        if row is not None:
            cluster = int(row[0])
        else:
            model = None
            if old_cluster is not None:
                model = conn.execute("SELECT model_id FROM clusters WHERE id = ?", [old_cluster]).fetchone()
            if model is None:
                model = conn.execute(
                    "SELECT model_id FROM embeddings WHERE face_id = ? ORDER BY created_at DESC LIMIT 1", [face_id]
                ).fetchone()
            if model is None:
                cluster = None  # no vector yet: the face keeps its name and joins a cluster when clustered
            else:
                cursor = conn.execute(
                    "INSERT INTO clusters (model_id, person_id, created_at) VALUES (?, ?, ?)", [model[0], person, now()]
                )
                cluster = int(cursor.lastrowid or 0)
        conn.execute(
            "UPDATE faces SET person_id = ?, person_source = 'user', cluster_id = ?, ignored = 0 WHERE id = ?",
            [person, cluster, face_id],
        )
        _update_sizes(conn)
        removed = _remove_if_faceless(conn, old_person) if old_person != person else None
        return {"face": face_id, "person": _person_name(conn, person), "person_id": person, "cluster": cluster,
                "removed": removed}


def reject_face(catalog: Catalog, face_id: int) -> dict[str, Any]:
    """"Not this person" (``label --reject FACE``): the face leaves its person and cluster for good.

    The next ``cluster`` run (incremental is enough) places it again: another cluster or a new one, never
    that person's. Example::

        reject_face(catalog, 1234)  # {'face': 1234, 'rejected_person_id': 3, 'removed': None}
    """
    with catalog.transaction() as conn:
        _, person, _ = _face_row(conn, face_id)
        if person is None:
            raise CatalogError(f"face {face_id} has no person to reject; use --ignore-face to hide it")
        conn.execute(
            "INSERT OR IGNORE INTO face_rejections (face_id, person_id, created_at) VALUES (?, ?, ?)",
            [face_id, person, now()],
        )
        # Forget that clustering saw it (as for an unignored face): otherwise a plain run would call the
        # library unchanged and leave the face alone until a new photo or `--full` came along.
        conn.execute(
            "UPDATE faces SET person_id = NULL, person_source = NULL, cluster_id = NULL, clustered_with = NULL "
            "WHERE id = ?", [face_id]
        )
        _update_sizes(conn)
        return {"face": face_id, "rejected_person_id": person, "removed": _remove_if_faceless(conn, person)}


def ignore_face(catalog: Catalog, face_id: int, ignored: bool = True) -> dict[str, Any]:
    """Mark one face ignored / not a face (``label --ignore-face ID``); clustering leaves it out.

    ``ignored=False`` undoes it: the next ``cluster`` run (incremental is enough) places the face again."""
    with catalog.transaction() as conn:
        _face_row(conn, face_id)
        if ignored:
            conn.execute("UPDATE faces SET ignored = 1, cluster_id = NULL WHERE id = ?", [face_id])
        else:
            # Forget that clustering saw it (ignored, out of every cluster): the next plain run places it
            # again, as a new face. A face that was not ignored keeps its state.
            conn.execute("UPDATE faces SET ignored = 0, clustered_with = NULL WHERE id = ? AND ignored = 1", [face_id])
        _update_sizes(conn)
        return {"face": face_id, "ignored": ignored}


def ignore_cluster(catalog: Catalog, cluster_id: int, ignored: bool = True) -> dict[str, Any]:
    """Mark a whole cluster ignored / not faces (``label --ignore-cluster ID``); re-clustering keeps it so."""
    with catalog.transaction() as conn:
        _cluster_row(conn, cluster_id)
        conn.execute("UPDATE clusters SET ignored = ? WHERE id = ?", [int(ignored), cluster_id])
        cursor = conn.execute("UPDATE faces SET ignored = ? WHERE cluster_id = ?", [int(ignored), cluster_id])
        conn.execute(
            "UPDATE clusters SET size = (SELECT count(*) FROM faces WHERE cluster_id = clusters.id) WHERE id = ?",
            [cluster_id],
        )
        return {"cluster": cluster_id, "ignored": ignored, "faces": cursor.rowcount}


# -- listings ------------------------------------------------------------------------------------------


def list_people(catalog: Catalog, *, include_ignored: bool = False) -> list[dict[str, Any]]:
    """People (with their face and cluster counts) and then unnamed clusters, largest first.

    ``include_ignored`` adds people whose faces are all ignored and every ignored cluster (a named one
    carries its person's name). Every record has the same keys; ``ignored`` is true only for those.

        [{"kind": "person", "id": 1, "name": "Ada", "faces": 12, "clusters": [3], "ignored": False}, ...]
    """
    records: list[dict[str, Any]] = []
    for pid, name, n_faces in catalog.db.execute(
        "SELECT p.id, p.name, (SELECT count(*) FROM faces f WHERE f.person_id = p.id AND f.ignored = 0) AS n "
        "FROM people p ORDER BY n DESC, p.name"
    ):
        if n_faces == 0 and not include_ignored:
            continue  # every face ignored (as `show` and `export` leave them out); --all lists them
        clusters = [int(r[0]) for r in catalog.db.execute(
            "SELECT id FROM clusters WHERE person_id = ? AND ignored = 0 ORDER BY size DESC", [pid]
        )]
        records.append({"kind": "person", "id": int(pid), "name": name, "faces": int(n_faces), "clusters": clusters,
                        "ignored": n_faces == 0})
    sql = "SELECT c.id, c.size, c.ignored, p.name FROM clusters c LEFT JOIN people p ON p.id = c.person_id WHERE "
    # An ignored cluster is listed on its own with --all, named or not: its id is what --unignore-cluster takes.
    sql += "(c.person_id IS NULL OR c.ignored = 1)" if include_ignored else "c.person_id IS NULL AND c.ignored = 0"
    for cid, size, ignored, name in catalog.db.execute(sql + " ORDER BY c.size DESC, c.id"):
        records.append({"kind": "cluster", "id": int(cid), "name": name, "faces": int(size), "clusters": [int(cid)],
                        "ignored": bool(ignored)})
    return records


FACE_FIELDS = ("face_id", "photo", "box", "probability", "cluster_id", "person", "ignored")


def iter_faces(
    catalog: Catalog, *, person: str | None = None, cluster: int | None = None, include_ignored: bool = False
) -> Iterator[dict[str, Any]]:
    """One record per face: id, photo path, box, detection probability, cluster id, person name.

    ``person`` is found as :func:`find_person` finds it; a name nobody has, like a cluster id no cluster
    has, is an error, not an empty list."""
    where = []
    args: list[Any] = []
    if not include_ignored:
        where.append("f.ignored = 0")
    if person is not None:
        where.append("pe.id = ?")
        # Found now, not on the first next(): a typo fails before a CSV header is printed.
        args.append(find_person(catalog.db.conn, person)[0])
    if cluster is not None:
        where.append("f.cluster_id = ?")
        args.append(_cluster_row(catalog.db.conn, cluster)[0])  # checked now, like the person
    sql = (
        "SELECT f.id, ph.path, f.x1, f.y1, f.x2, f.y2, f.probability, f.cluster_id, pe.name, f.ignored "
        "FROM faces f JOIN photos ph ON ph.id = f.photo_id LEFT JOIN people pe ON pe.id = f.person_id"
        + (" WHERE " + " AND ".join(where) if where else "")
        + " ORDER BY f.id"
    )
    return (
        {
            "face_id": row[0], "photo": row[1], "box": [row[2], row[3], row[4], row[5]],
            "probability": round(float(row[6]), 6), "cluster_id": row[7], "person": row[8], "ignored": bool(row[9]),
        }
        for row in catalog.db.execute(sql, args)
    )

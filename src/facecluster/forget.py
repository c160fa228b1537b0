"""``facecluster forget``: delete a person's name, faces, crops and vectors; the photos stay untouched.

Deleted rows must not linger in the catalog file: the delete runs with ``PRAGMA secure_delete = ON``
(SQLite overwrites the freed content with zeros) and is followed by a ``wal_checkpoint(TRUNCATE)``, so
neither the database file nor its write-ahead log keeps the old pages. ``vacuum=True`` also shrinks
the file. Usage::

    plan = plan_forget(catalog, "Ada Lovelace")       # counts, nothing deleted yet
    summary = forget_person(catalog, "Ada Lovelace")   # the same counts, deleted
"""

from __future__ import annotations

import glob
import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecluster.catalog import Catalog
from facecluster.errors import DataError
from facecluster.export import PERSON_OF_FACE
from facecluster.people import find_person, fold_name
from facecluster.reporting import ProgressFn, null_progress

REDACTED = "[forgotten]"


@dataclass
class ForgetSummary:
    """What was (or, from ``plan_forget``, would be) deleted for one person."""

    person_id: int
    name: str
    faces: int = 0
    crops: int = 0
    vectors: int = 0
    clusters_deleted: int = 0
    clusters_kept: int = 0  # clusters that still hold other faces: only their name link is removed
    rejections: int = 0
    runs_redacted: int = 0
    site_files_removed: int = 0
    checkpointed: bool = False
    vacuumed: bool = False
    face_ids: list[int] = field(default_factory=list, repr=False)

    def as_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data.pop("face_ids")
        return data


def _in(ids: list[int]) -> str:
    return ",".join("?" * len(ids))


def plan_forget(catalog: Catalog, name: str) -> ForgetSummary:
    """Count what ``forget_person`` would delete for ``name``; change nothing.

        plan_forget(catalog, "Ada").faces   # 42
    """
    conn = catalog.db.conn
    person_id, real_name = find_person(conn, name)
    face_ids = [
        r[0]
        for r in conn.execute(
            f"SELECT f.id FROM faces f LEFT JOIN clusters c ON c.id = f.cluster_id WHERE ({PERSON_OF_FACE}) = ?",
            [person_id],
        )
    ]
    summary = ForgetSummary(person_id, real_name, faces=len(face_ids), face_ids=face_ids)
    for start in range(0, len(face_ids), 500):
        part = face_ids[start : start + 500]
        summary.crops += conn.execute(
            f"SELECT count(*) FROM faces WHERE crop IS NOT NULL AND id IN ({_in(part)})", part
        ).fetchone()[0]
        summary.vectors += conn.execute(
            f"SELECT count(*) FROM embeddings WHERE face_id IN ({_in(part)})", part
        ).fetchone()[0]
    summary.rejections = conn.execute(
        "SELECT count(*) FROM face_rejections WHERE person_id = ?", [person_id]
    ).fetchone()[0]
    for cluster_id in _clusters(conn, person_id, face_ids):
        remaining = _remaining(conn, cluster_id, set(face_ids))
        if remaining:
            summary.clusters_kept += 1
        else:
            summary.clusters_deleted += 1
    return summary


def _clusters(conn: sqlite3.Connection, person_id: int, face_ids: list[int]) -> list[int]:
    ids = {r[0] for r in conn.execute("SELECT id FROM clusters WHERE person_id = ?", [person_id])}
    for start in range(0, len(face_ids), 500):
        part = face_ids[start : start + 500]
        ids |= {
            r[0]
            for r in conn.execute(
                f"SELECT DISTINCT cluster_id FROM faces WHERE cluster_id IS NOT NULL AND id IN ({_in(part)})", part
            )
        }
    return sorted(ids)


def _remaining(conn: sqlite3.Connection, cluster_id: int, leaving: set[int]) -> int:
    members = [r[0] for r in conn.execute("SELECT id FROM faces WHERE cluster_id = ?", [cluster_id])]
    return sum(1 for m in members if m not in leaving)


def _name_forms(name: str) -> list[str]:
    # How the name can appear inside JSON text: raw, and with non-ASCII escaped (json.dumps default).
    forms = {name, json.dumps(name)[1:-1], json.dumps(name, ensure_ascii=False)[1:-1]}
    return sorted(forms, key=len, reverse=True)


def _mentions(value: str, name: str, others: list[str]) -> bool:
    """Whether ``value`` names the person ``name`` as a whole (folded for case and Unicode form).

    ``"Tom"`` is named by ``"Tom"`` and ``"~/Pictures/tom/1.jpg"``, not by ``"Tomas"``, nor by
    ``"Tom Ridge"`` while Tom Ridge is one of ``others`` (another person's name)::

        _mentions("Tom Ridge and Tom", "Tom", ["Tom Ridge"])   # True
    """
    text = fold_name(value)
    for other in others:
        text = _whole(other).sub(" ", text)
    return _whole(fold_name(name)).search(text) is not None


def _whole(folded: str) -> re.Pattern[str]:
    # Lookarounds, not \b: a name may start or end with a non-word character ("AC/DC", "Ada L.").
    return re.compile(rf"(?<!\w){re.escape(folded)}(?!\w)")


def _redact_value(value: Any, name: str, others: list[str]) -> Any:
    if isinstance(value, str):
        return REDACTED if _mentions(value, name, others) else value
    if isinstance(value, list):
        return [_redact_value(v, name, others) for v in value]
    if isinstance(value, dict):
        return {k: _redact_value(v, name, others) for k, v in value.items()}
    return value  # numbers, booleans and null never hold a name, whatever the name looks like


def _redact_json(text: str | None, name: str, others: list[str]) -> str | None:
    if not text:
        return text
    try:
        value = json.loads(text)
    except ValueError:
        # Not JSON (an older forget garbled it): nothing to keep intact, but the name must still go.
        for form in _name_forms(name):
            text = text.replace(form, REDACTED)
        return text
    redacted = _redact_value(value, name, others)
    # Re-serialised only when something changed, so untouched runs keep their text byte for byte.
    return text if redacted == value else json.dumps(redacted, default=str)


def _redact_runs(conn: sqlite3.Connection, name: str) -> int:
    # Names of the people left (the forgotten one is deleted by now) that contain this one as a whole.
    folded = fold_name(name)
    others = [
        fold_name(n) for (n,) in conn.execute("SELECT name FROM people")
        if fold_name(n) != folded and _whole(folded).search(fold_name(n))
    ]
    others.sort(key=len, reverse=True)
    changed = 0
    for run_id, args, stats in conn.execute("SELECT id, args, stats FROM runs").fetchall():
        new_args, new_stats = _redact_json(args, name, others), _redact_json(stats, name, others)
        if (new_args, new_stats) != (args, stats):
            conn.execute("UPDATE runs SET args = ?, stats = ? WHERE id = ?", [new_args, new_stats, run_id])
            changed += 1
    return changed


def name_traces(conn: sqlite3.Connection, name: str) -> list[str]:
    """``table.column`` of every text column in the catalog that still contains ``name``.

    Photo paths are listed too (a folder may be named after the person): they describe the photo
    files, which ``forget`` leaves alone.

        name_traces(conn, "Ada")   # ['photos.path']
    """
    hits = []
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    for table in tables:
        for _, column, decl, *_ in conn.execute(f'PRAGMA table_info("{table}")'):
            if "BLOB" in (decl or "").upper():
                continue
            for form in _name_forms(name):
                row = conn.execute(
                    f'SELECT 1 FROM "{table}" WHERE instr(CAST("{column}" AS TEXT), ?) > 0 LIMIT 1', [form]
                ).fetchone()
                if row:
                    hits.append(f"{table}.{column}")
                    break
    return hits


def _check_site(site: Path, catalog: Catalog | None = None) -> None:
    from facecluster.site import MARKER, catalog_key, site_catalog

    if not (site / MARKER).exists():
        raise DataError(f"{site} is not a facecluster site (no {MARKER}); give the folder `facecluster show` wrote")
    built_from = site_catalog(site)
    if catalog is not None and built_from is not None and built_from != catalog_key(catalog):
        # Face and person ids belong to one catalog: deleting by them in another's site would hit strangers.
        raise DataError(f"{site} shows the catalog {built_from}, not this one; give that catalog with --db")


def remove_site_files(site: Path, person_id: int, face_ids: list[int]) -> int:
    """Delete a person's sheet pages and face thumbnails from a ``facecluster show`` site; return how many.

        remove_site_files(Path("site"), 3, [17, 18])
    """
    _check_site(site)
    removed = 0
    patterns = [f"groups/person-{person_id}.html", f"groups/person-{person_id}-p*.html"]
    patterns += [f"thumbs/{face_id // 1000}/{face_id}-*.jpg" for face_id in face_ids]
    for pattern in patterns:
        for path in glob.glob(glob.escape(str(site)) + "/" + pattern):
            Path(path).unlink()
            removed += 1
    return removed


def forget_person(
    catalog: Catalog,
    name: str,
    site: Path | None = None,
    vacuum: bool = False,
    progress: ProgressFn = null_progress,
) -> ForgetSummary:
    """Delete ``name``'s person row, faces (with crops), vectors and emptied clusters, in one transaction.

    Clusters that keep other faces stay, unnamed. Runs whose arguments mention the name are redacted.
    With ``site``, the person's pages and thumbnails are deleted from that ``facecluster show`` folder
    (rebuild it afterwards to refresh the index; the CLI does).

        forget_person(catalog, "Ada Lovelace", site=Path("site"))
    """
    conn = catalog.db.conn
    if site is not None:
        _check_site(Path(site).expanduser(), catalog)  # before deleting anything: a wrong --site must not half-finish
    # Per connection; freed pages and cells are zeroed instead of being left in the file's free list.
    conn.execute("PRAGMA secure_delete = ON")
    # The faces to delete are found inside the write transaction: a `cluster` of another process cannot
    # name new faces after her between finding them and deleting them.
    with catalog.transaction():
        summary = plan_forget(catalog, name)
        ids = summary.face_ids
        clusters = _clusters(conn, summary.person_id, ids)
        leaving = set(ids)
        for start in range(0, len(ids), 500):
            part = ids[start : start + 500]
            conn.execute(f"DELETE FROM embeddings WHERE face_id IN ({_in(part)})", part)
            conn.execute(f"DELETE FROM face_rejections WHERE face_id IN ({_in(part)})", part)
            conn.execute(f"DELETE FROM faces WHERE id IN ({_in(part)})", part)
            progress("forget", min(start + 500, len(ids)), len(ids))
        conn.execute("DELETE FROM face_rejections WHERE person_id = ?", [summary.person_id])
        for cluster_id in clusters:
            remaining = _remaining(conn, cluster_id, leaving)
            if remaining == 0:
                conn.execute("DELETE FROM clusters WHERE id = ?", [cluster_id])
            else:
                conn.execute(
                    "UPDATE clusters SET size = ?, person_id = CASE WHEN person_id = ? THEN NULL ELSE person_id END "
                    "WHERE id = ?",
                    [remaining, summary.person_id, cluster_id],
                )
        conn.execute("DELETE FROM people WHERE id = ?", [summary.person_id])
        summary.runs_redacted = _redact_runs(conn, summary.name)
    if vacuum:
        conn.execute("VACUUM")
        summary.vacuumed = True
    if catalog.path is None:
        summary.checkpointed = True  # in memory: there is no file to clean
    else:
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        # busy = 1 when another process reads the catalog: the old pages stay in the WAL until it closes.
        summary.checkpointed = busy == 0
    if site is not None:
        summary.site_files_removed = remove_site_files(Path(site).expanduser(), summary.person_id, ids)
    return summary

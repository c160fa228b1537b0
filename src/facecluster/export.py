"""``facecluster export``: per-person folders of links (or copies) to the photos, plus data files.

Layout of the output folder::

    Ada Lovelace/IMG_0001.jpg -> /home/me/Pictures/IMG_0001.jpg   (symlink, or a copy with --mode copy)
    people.jsonl  photos.jsonl  faces.jsonl                          (or .csv with --format csv)
    .facecluster-export.json                                         what earlier runs created

Only files this module created (listed in the manifest) are ever replaced or removed, so re-runs are
idempotent and never touch a file the user put there: a photo link takes another name, and a data
file name held by the user's own file is an error. Usage::

    summary = export_people(catalog, Path("by-person"), mode="symlink")
    summary.missing   # photos whose file is gone: reported, never linked
"""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from facecluster.catalog import Catalog
from facecluster.errors import DataError
from facecluster.output import csv_cell, dumps
from facecluster.people import find_person
from facecluster.privacy import copy_private, private_dir, write_private_text
from facecluster.reporting import ProgressFn, null_progress

MANIFEST = ".facecluster-export.json"
MODES = ("symlink", "copy")
FORMATS = ("jsonl", "csv")
DATA_STEMS = ("people", "photos", "faces")
_MAX_NAME_BYTES = 200  # below the usual 255-byte limit, leaving room for a collision suffix

#: The person a face belongs to: its own label, else its cluster's (unless the user rejected it there).
PERSON_OF_FACE = """
CASE
  WHEN f.person_id IS NOT NULL THEN f.person_id
  WHEN EXISTS (SELECT 1 FROM face_rejections r WHERE r.face_id = f.id AND r.person_id = c.person_id) THEN NULL
  ELSE c.person_id
END"""


@dataclass
class ExportSummary:
    """What ``export_people`` did; ``missing`` lists photos whose file could not be found."""

    out: Path
    mode: str
    format: str
    people: int = 0
    photos: int = 0
    created: int = 0
    unchanged: int = 0
    removed: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


def current_photo_path(conn: sqlite3.Connection, photo_id: int) -> Path | None:
    """Where the photo's file is now: ``photos.path``, else the latest existing path in ``files``.

        current_photo_path(catalog.db.conn, 17)   # Path('/home/me/Pictures/2019/a.jpg') or None
    """
    row = conn.execute("SELECT path FROM photos WHERE id = ?", [photo_id]).fetchone()
    candidates = [row[0]] if row else []
    candidates += [
        r[0]
        for r in conn.execute(
            "SELECT path FROM files WHERE photo_id = ? AND error IS NULL ORDER BY seen_at DESC, path", [photo_id]
        )
    ]
    for candidate in candidates:
        path = Path(candidate)
        if path.is_file():
            return path
    return None


def safe_name(name: str, fallback: str = "_") -> str:
    """A file-name-safe version of ``name``: no slashes or control characters, not hidden, not too long.

    Non-ASCII letters are kept (NFC-normalised)::

        safe_name("AC/DC")        # 'AC_DC'
        safe_name("Zoë Ñúñez")    # 'Zoë Ñúñez'
        safe_name("..")           # '_'
    """
    text = unicodedata.normalize("NFC", name)
    text = "".join("_" if ch in "/\\" or unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") else ch for ch in text)
    text = text.strip().rstrip(".")  # trailing dots and spaces vanish on some file systems
    if text.startswith("."):
        text = "_" + text[1:]
    while len(text.encode("utf-8")) > _MAX_NAME_BYTES:
        text = text[:-1]
    return text or fallback


def _unique(base: str, suffix: str, extra: str, taken: set[str]) -> str:
    # Case-insensitive, because exports are often copied to macOS / Windows disks.
    candidate = f"{base}{suffix}"
    if candidate.casefold() not in taken:
        taken.add(candidate.casefold())
        return candidate
    n = 0
    while True:
        candidate = f"{base} ({extra}{'' if n == 0 else f'-{n}'}){suffix}"
        if candidate.casefold() not in taken:
            taken.add(candidate.casefold())
            return candidate
        n += 1


def _load_manifest(out: Path) -> tuple[dict[str, str], set[str] | None]:
    """The photo links (path -> source) and data files earlier runs wrote; ``None`` for data files when
    the manifest predates their listing."""
    path = out / MANIFEST
    if not path.exists():
        return {}, set()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        entries = {str(k): str(v) for k, v in data.get("entries", {}).items()}
        files = data.get("data")
        # Only names export writes: a hand-edited manifest cannot make a re-run delete other files.
        own = {f"{stem}.{fmt}" for stem in DATA_STEMS for fmt in FORMATS}
        return entries, (None if files is None else {str(name) for name in files} & own)
    except (OSError, ValueError, AttributeError, TypeError) as exc:
        raise DataError(f"export manifest {path} is unreadable ({exc}); delete it or choose another --out") from exc


def _save_manifest(out: Path, entries: dict[str, str], data: set[str]) -> None:
    write_private_text(
        out / MANIFEST, json.dumps({"entries": entries, "data": sorted(data)}, ensure_ascii=False, indent=0)
    )


def _people(conn: sqlite3.Connection, person: str | None) -> list[tuple[int, str]]:
    if person is None:
        return list(conn.execute("SELECT id, name FROM people ORDER BY name COLLATE NOCASE, id"))
    return [find_person(conn, person)]


def _faces(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    sql = f"""
        SELECT f.id, f.photo_id, f.x1, f.y1, f.x2, f.y2, f.probability, f.cluster_id,
               {PERSON_OF_FACE} AS person_id, f.person_source, f.ignored
        FROM faces f LEFT JOIN clusters c ON c.id = f.cluster_id ORDER BY f.id"""
    cols = [
        "id",
        "photo_id",
        "x1",
        "y1",
        "x2",
        "y2",
        "probability",
        "cluster_id",
        "person_id",
        "person_source",
        "ignored",
    ]
    return [dict(zip(cols, row, strict=True)) for row in conn.execute(sql)]


def _serialise(records: list[dict[str, Any]], fmt: str) -> str:
    if fmt == "jsonl":
        return "".join(dumps(r) + "\n" for r in records)
    buffer = io.StringIO()
    fields = list(records[0]) if records else []
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for r in records:
        writer.writerow({k: csv_cell(v) for k, v in r.items()})
    return buffer.getvalue()


def _same(target: Path, source: Path, mode: str) -> bool:
    if mode == "symlink":
        return target.is_symlink() and os.readlink(target) == str(source)
    if target.is_symlink() or not target.is_file():
        return False
    a, b = target.stat(), source.stat()
    return a.st_size == b.st_size and int(a.st_mtime) == int(b.st_mtime)


def export_people(
    catalog: Catalog,
    out: Path,
    mode: str = "symlink",
    person: str | None = None,
    fmt: str = "jsonl",
    progress: ProgressFn = null_progress,
) -> ExportSummary:
    """Write per-person folders and the data files into ``out``; return a summary.

    A photo whose file moved is linked at its current path (``photos.path``, else ``files``); a photo
    whose file is gone is listed in ``summary.missing`` instead of becoming a broken link.

        export_people(catalog, Path("by-person"), mode="copy", person="Ada Lovelace", fmt="csv")
    """
    if mode not in MODES:
        raise DataError(f"unknown export mode {mode!r}; use one of {', '.join(MODES)}")
    if fmt not in FORMATS:
        raise DataError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    out = Path(out).expanduser().absolute()
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give a folder for the export, e.g. --out by-person")
    conn = catalog.db.conn
    people = _people(conn, person)
    old, old_data = _load_manifest(out)
    data_names = {f"{stem}.{fmt}" for stem in DATA_STEMS}
    for name in sorted(data_names):
        target = out / name
        # Before any work: a user's file never gets overwritten. A manifest from before data files were
        # listed (old_data None) wrote these very names on every run, so they are taken as its own.
        if (target.is_symlink() or target.exists()) and old_data is not None and name not in old_data:
            raise DataError(f"{target} was not written by facecluster export; move it away or choose another --out")
    private_dir(out)
    summary = ExportSummary(out=out, mode=mode, format=fmt)

    faces = _faces(conn)
    names = dict(conn.execute("SELECT id, name FROM people"))
    wanted_people = {pid for pid, _ in people}
    photos_of: dict[int, set[int]] = defaultdict(set)
    faces_of: dict[int, int] = defaultdict(int)
    for f in faces:
        if f["person_id"] in wanted_people and not f["ignored"]:
            photos_of[f["person_id"]].add(f["photo_id"])
            faces_of[f["person_id"]] += 1

    # Folder names: safe, unique case-insensitively, stable across runs (ordered by name then id).
    all_people = list(conn.execute("SELECT id, name FROM people ORDER BY name COLLATE NOCASE, id"))
    taken_dirs = {
        name.casefold()
        for name in (MANIFEST, "people.jsonl", "photos.jsonl", "faces.jsonl", "people.csv", "photos.csv", "faces.csv")
    }
    folder_of = {pid: _unique(safe_name(name), "", str(pid), taken_dirs) for pid, name in all_people}

    paths: dict[int, Path | None] = {}
    entries: dict[str, str] = {}
    work: list[tuple[str, Path]] = []
    people_records = []
    for pid, name in people:
        if person is None and not faces_of[pid]:
            continue  # every face ignored: `people` and `show` leave them out too (their old files go below)
        folder = folder_of[pid]
        taken: set[str] = set()
        missing = 0
        for photo_id in sorted(photos_of[pid]):
            if photo_id not in paths:
                paths[photo_id] = current_photo_path(conn, photo_id)
            source = paths[photo_id]
            if source is None:
                stored = conn.execute("SELECT path FROM photos WHERE id = ?", [photo_id]).fetchone()[0]
                summary.missing.append({"photo_id": photo_id, "path": stored, "person": name})
                missing += 1
                continue
            stem, suffix = os.path.splitext(source.name)
            base = safe_name(stem, fallback=f"photo-{photo_id}")
            ext = suffix if suffix.isprintable() else ""
            rel = f"{folder}/{_unique(base, ext, str(photo_id), taken)}"
            # A file the user put there under that name is never overwritten: pick another name.
            while (out / rel).is_symlink() or (out / rel).exists():
                if rel in old:
                    break
                rel = f"{folder}/{_unique(base, ext, str(photo_id), taken)}"
            source = source.absolute()
            entries[rel] = str(source)
            work.append((rel, source))
        people_records.append(
            {
                "id": pid,
                "name": name,
                "folder": folder,
                "faces": faces_of[pid],
                "photos": len(photos_of[pid]),
                "missing": missing,
            }
        )
    summary.photos = len(work)
    summary.people = len(people_records)

    for done, (rel, source) in enumerate(work, 1):
        target = out / rel
        private_dir(target.parent)
        if rel in old and (target.is_symlink() or target.exists()):
            if old[rel] == str(source) and _same(target, source, mode):
                summary.unchanged += 1
                progress("export", done, len(work))
                continue
            target.unlink()
        if mode == "symlink":
            target.symlink_to(source)
        else:
            copy_private(source, target)
        summary.created += 1
        progress("export", done, len(work))

    # Entries of earlier runs that are no longer wanted (only for the people exported this time).
    scope = {folder_of[pid] for pid, _ in people}
    kept: dict[str, str] = {}
    for rel, old_source in old.items():
        if rel in entries:
            continue
        if rel.split("/", 1)[0] in scope or rel.split("/", 1)[0] not in folder_of.values():
            target = out / rel
            if target.is_symlink() or target.is_file():
                target.unlink()
                summary.removed += 1
            try:
                target.parent.rmdir()  # only when empty
            except OSError:
                pass
        else:
            kept[rel] = old_source
    # Data files are listed before they are written, so an interrupted run still knows them as its own.
    _save_manifest(out, {**kept, **entries}, (old_data or set()) | data_names)

    # Data files for other tools. With --person they hold only that person's faces and photos.
    if person is not None:
        faces = [f for f in faces if f["person_id"] in wanted_people]
    photo_ids = {f["photo_id"] for f in faces}
    photo_people: dict[int, set[str]] = defaultdict(set)
    for f in faces:
        f["person"] = names.get(f["person_id"]) if f["person_id"] is not None else None
        if f["person"] is not None and not f["ignored"]:
            photo_people[f["photo_id"]].add(f["person"])
    photo_records = []
    for row in conn.execute("SELECT id, hash, path, width, height, status, n_faces FROM photos ORDER BY id"):
        pid = row[0]
        if person is not None and pid not in photo_ids:
            continue
        if pid not in paths:
            paths[pid] = current_photo_path(conn, pid)
        current = paths[pid]
        photo_records.append(
            {
                "id": pid,
                "hash": row[1],
                "path": str(current) if current else row[2],
                "found": current is not None,
                "width": row[3],
                "height": row[4],
                "status": row[5],
                "n_faces": row[6],
                "people": sorted(photo_people.get(pid, ())),
            }
        )
    for stem, records in (("people", people_records), ("photos", photo_records), ("faces", faces)):
        path = out / f"{stem}.{fmt}"
        write_private_text(path, _serialise(records, fmt))
        summary.files.append(str(path))
    # The other format's files from an earlier run would be out of date: remove them.
    for name in sorted((old_data or set()) - data_names):
        target = out / name
        if target.is_symlink() or target.is_file():
            target.unlink()
            summary.removed += 1
    _save_manifest(out, {**kept, **entries}, data_names)
    return summary

"""The static review site of ``facecluster show``: people and clusters as contact sheets, from disk.

Plain HTML and CSS, no JavaScript and nothing loaded from the network. Layout under the output folder::

    index.html, index-2.html ...        people, then unnamed clusters, by size, one face each
    groups/person-3.html                a contact sheet (500 faces a page: person-3-p2.html ...)
    groups/cluster-12.html
    groups/unclustered.html             faces in no cluster and of no person
    photos/0/17.html                    a photo with every face box drawn over it (SVG)
    thumbs/0/17-1a2b3c4d5e.jpg          thumbnails, made once: later runs reuse them
    previews/0/17-1a2b3c4d5e.jpg        only for photos a browser cannot show (HEIC, TIFF)

Everything is created owner-only (biometric data). Usage::

    summary = build_site(catalog, Path("site"), commands=LabelCommands())
    print(summary.index)
"""

from __future__ import annotations

import hashlib
import html
import io
import json
import os
import shlex
import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from facecluster.catalog import Catalog, decode_vector
from facecluster.config import SiteConfig
from facecluster.errors import CatalogError, DataError, ImageError
from facecluster.export import current_photo_path
from facecluster.images import exif_orientation, load_image
from facecluster.output import counted
from facecluster.privacy import private_dir, write_private_bytes, write_private_text
from facecluster.reporting import ProgressFn, null_progress

#: Marks a folder as a facecluster site, so a rebuild never prunes files in someone else's folder.
MARKER = ".facecluster-site"
#: Formats every browser shows; others (HEIC, TIFF, ...) get a JPEG preview in the site.
WEB_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".avif", ".svg"})
#: Folders of the site that a rebuild owns and prunes.
OWNED_DIRS = ("groups", "photos", "thumbs", "previews")


@dataclass(frozen=True)
class LabelCommands:
    """The shell commands shown beside clusters and faces, ready to copy (``facecluster label`` shapes).

    ``prefix`` is how the user runs facecluster, e.g. ``facecluster --db photos.db``. Positional
    arguments follow ``--``, so a name such as ``-T-`` is not read as an option (option values need no
    such guard: Click takes the next words whatever they start with)::

        LabelCommands().name_cluster(12, "Ada Lovelace")  # "facecluster label -- 12 'Ada Lovelace'"
    """

    prefix: str = "facecluster"

    def name_cluster(self, cluster_id: int | str, name: str = "NAME") -> str:
        return f"{self.prefix} label -- {cluster_id} {_q(name)}"

    def ignore_cluster(self, cluster_id: int) -> str:
        return f"{self.prefix} label --ignore-cluster {cluster_id}"

    def rename(self, name: str, new: str = "NEW") -> str:
        return f"{self.prefix} label --rename {_q(name)} {_q(new)}"

    def merge(self, name: str, into: str = "OTHER") -> str:
        return f"{self.prefix} label --merge {_q(name)} {_q(into)}"

    def move(self, face_id: int | str, name: str = "NAME") -> str:
        return f"{self.prefix} label --move {face_id} {_q(name)}"

    def reject(self, face_id: int) -> str:
        return f"{self.prefix} label --reject {face_id}"

    def ignore_face(self, face_id: int) -> str:
        return f"{self.prefix} label --ignore-face {face_id}"

    def forget(self, name: str) -> str:
        return f"{self.prefix} forget -- {_q(name)}"


def _q(text: str) -> str:
    # Placeholders stay bare so they read as "replace me"; real names are shell-quoted.
    return text if text in ("NAME", "NEW", "OTHER") else shlex.quote(text)


@dataclass
class Face:
    """One face shown on the site (ignored faces and faces of ignored clusters are left out)."""

    id: int
    photo_id: int
    box: tuple[float, float, float, float]
    probability: float
    cluster_id: int | None
    person_id: int | None  # the face's own person, else its cluster's (unless the face was rejected)
    tag: str  # changes when the face row is replaced: names its thumbnail
    score: float = float("nan")  # cosine similarity to its group's mean embedding


@dataclass
class Group:
    """A person, an unnamed cluster, or the unclustered faces: one contact sheet."""

    kind: str  # person | cluster | unclustered
    id: int | None
    title: str
    faces: list[Face] = field(default_factory=list)
    name: str | None = None

    @property
    def slug(self) -> str:
        return "unclustered" if self.kind == "unclustered" else f"{self.kind}-{self.id}"

    def page(self, number: int) -> str:
        """Site-relative path of sheet page ``number`` (1-based)."""
        return f"groups/{self.slug}.html" if number == 1 else f"groups/{self.slug}-p{number}.html"


@dataclass
class SiteSummary:
    """What ``build_site`` did."""

    out: Path
    index: Path
    people: int = 0
    clusters: int = 0
    unclustered: int = 0
    faces: int = 0
    photos: int = 0
    pages: int = 0
    pages_unchanged: int = 0  # already on disk with the same content: not rewritten
    thumbs_made: int = 0
    thumbs_reused: int = 0
    thumbs_failed: int = 0
    previews_made: int = 0
    missing_photos: list[str] = field(default_factory=list)
    pruned: int = 0

    def as_dict(self) -> dict[str, object]:
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in self.__dict__.items()}


# --------------------------------------------------------------------------------------------- queries

_FACES_SQL = """
SELECT f.id, f.photo_id, f.x1, f.y1, f.x2, f.y2, f.probability, f.cluster_id,
       CASE
         WHEN f.person_id IS NOT NULL THEN f.person_id
         WHEN EXISTS (SELECT 1 FROM face_rejections r WHERE r.face_id = f.id AND r.person_id = c.person_id)
           THEN NULL
         ELSE c.person_id
       END AS person,
       f.created_at
FROM faces f LEFT JOIN clusters c ON c.id = f.cluster_id
WHERE f.ignored = 0 AND (f.person_id IS NOT NULL OR COALESCE(c.ignored, 0) = 0)
ORDER BY f.id
"""


def load_faces(db: sqlite3.Connection) -> list[Face]:
    """Every face the site shows, with the person it belongs to (its own, else its cluster's).

        faces = load_faces(catalog.db.conn)
    """
    faces = []
    for fid, pid, x1, y1, x2, y2, prob, cid, person, created in db.execute(_FACES_SQL):
        tag = hashlib.sha1(f"{fid}:{pid}:{created}:{x1}:{y1}:{x2}:{y2}".encode()).hexdigest()[:10]
        faces.append(Face(fid, pid, (x1, y1, x2, y2), prob, cid, person, tag))
    return faces


def group_faces(db: sqlite3.Connection, faces: Sequence[Face]) -> list[Group]:
    """People (by size), then unnamed clusters (by size), then the unclustered faces.

        groups = group_faces(conn, load_faces(conn))
    """
    names = dict(db.execute("SELECT id, name FROM people"))
    people: dict[int, Group] = {}
    clusters: dict[int, Group] = {}
    rest = Group("unclustered", None, "Unclustered faces")
    for face in faces:
        if face.person_id is not None:
            name = names.get(face.person_id, f"person {face.person_id}")
            group = people.setdefault(face.person_id, Group("person", face.person_id, name, name=name))
        elif face.cluster_id is not None:
            group = clusters.setdefault(
                face.cluster_id, Group("cluster", face.cluster_id, f"Cluster {face.cluster_id}")
            )
        else:
            group = rest
        group.faces.append(face)

    def by_size(groups: Iterable[Group]) -> list[Group]:
        return sorted(groups, key=lambda g: (-len(g.faces), g.id))

    ordered = by_size(people.values()) + by_size(clusters.values())
    return ordered + ([rest] if rest.faces else [])


def _vectors(db: sqlite3.Connection, model_id: str) -> Iterator[tuple[int, np.ndarray]]:
    for face_id, dim, dtype, scale, blob in db.execute(
        "SELECT face_id, dim, dtype, scale, vector FROM embeddings WHERE model_id = ? ORDER BY face_id", [model_id]
    ):
        try:
            yield face_id, decode_vector(dim, dtype, scale, blob)
        except CatalogError:
            pass  # an unreadable row: the face sorts by detection probability instead


def _score_model(db: sqlite3.Connection) -> str | None:
    # The model of the latest clustering, else the one with most vectors: scores compare like with like.
    row = db.execute("SELECT model_id FROM clusters ORDER BY id DESC LIMIT 1").fetchone()
    if row is None:
        row = db.execute("SELECT model_id FROM embeddings GROUP BY model_id ORDER BY count(*) DESC LIMIT 1").fetchone()
    return None if row is None else row[0]


def score_faces(db: sqlite3.Connection, groups: Sequence[Group]) -> None:
    """Set each face's cosine similarity to its group's mean embedding; sort each sheet by it.

    Two streaming passes over the vectors (sum per group, then dot products), so memory stays at one
    mean per group even for 100k faces. Faces without a vector sort after, by detection probability.
    """
    model_id = _score_model(db)
    where: dict[int, tuple[int, Face]] = {}
    for g, group in enumerate(groups):
        for face in group.faces:
            where[face.id] = (g, face)
    if model_id is not None and where:
        sums: dict[int, np.ndarray] = {}
        for face_id, vec in _vectors(db, model_id):
            if face_id in where:
                g = where[face_id][0]
                sums[g] = sums[g] + vec if g in sums else vec.astype(np.float64)
        means = {g: s / (np.linalg.norm(s) or 1.0) for g, s in sums.items()}
        for face_id, vec in _vectors(db, model_id):
            if face_id in where:
                g, face = where[face_id]
                norm = float(np.linalg.norm(vec)) or 1.0
                face.score = float(vec @ means[g]) / norm
    for group in groups:
        # Most typical face first: the first one is the group's representative on the index.
        group.faces.sort(key=lambda f: (np.isnan(f.score), -np.nan_to_num(f.score), -f.probability, f.id))


# --------------------------------------------------------------------------------------------- images


def _load_photo(path: Path, max_side: int | None = None) -> Image.Image | None:
    # The detector's own loader: the same orientation (box coordinates match), size limits, HEIC and
    # 16-bit handling, and JPEG draft decoding for previews. None when the file is unusable.
    try:
        loaded = load_image(path, max_side)
    except ImageError:
        return None
    return Image.fromarray(loaded.pixels)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def _shard(number: int) -> str:
    # 1000 files per folder at most: folders with 100k entries are slow to list and to open.
    return str(number // 1000)


def thumb_path(face: Face) -> str:
    """Site-relative path of a face's thumbnail, e.g. ``thumbs/0/17-1a2b3c4d5e.jpg``."""
    return f"thumbs/{_shard(face.id)}/{face.id}-{face.tag}.jpg"


def _thumb_from_crop(blob: bytes, size: int, quality: int) -> bytes:
    with Image.open(io.BytesIO(blob)) as crop:
        crop.load()
        return _jpeg(ImageOps.fit(crop.convert("RGB"), (size, size), Image.Resampling.LANCZOS), quality)


def _thumb_from_photo(photo: Image.Image, box: tuple[float, float, float, float], size: int, quality: int) -> bytes:
    """A square thumbnail around ``box`` (full-size oriented pixels) of the full-size ``photo``."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1) * 1.2  # a little context, like the stored crops' margin
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    region = photo.crop((int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2)))
    return _jpeg(region.resize((size, size), Image.Resampling.LANCZOS), quality)


def make_thumbs(
    db: sqlite3.Connection,
    out: Path,
    faces: Sequence[Face],
    paths: dict[int, Path | None],
    config: SiteConfig,
    summary: SiteSummary,
    progress: ProgressFn = null_progress,
) -> set[int]:
    """Write the thumbnails that do not exist yet; return the ids of faces that have none.

    The stored crop is used; a face without one is cut from its photo when the file is there.
    """
    missing = [f for f in faces if not (out / thumb_path(f)).exists()]
    summary.thumbs_reused = len(faces) - len(missing)
    failed: set[int] = set()
    by_id = {f.id: f for f in missing}
    need_photo: dict[int, list[Face]] = defaultdict(list)
    done = 0
    chunk = 500
    ids = list(by_id)
    for start in range(0, len(ids), chunk):
        part = ids[start : start + chunk]
        marks = ",".join("?" * len(part))
        for face_id, blob in db.execute(f"SELECT id, crop FROM faces WHERE id IN ({marks})", part):
            face = by_id[face_id]
            data = None
            if blob:
                try:
                    data = _thumb_from_crop(blob, config.thumb_size, config.thumb_quality)
                except (OSError, UnidentifiedImageError, ValueError):
                    data = None
            if data is None:
                need_photo[face.photo_id].append(face)
                continue
            target = out / thumb_path(face)
            private_dir(target.parent)
            write_private_bytes(target, data)
            summary.thumbs_made += 1
            done += 1
            progress("thumbnails", done, len(missing))
    for photo_id, group in need_photo.items():
        path = paths.get(photo_id)
        # Full size: the box is in full-size pixels and a small face needs them all.
        photo = _load_photo(path) if path is not None else None
        for face in group:
            done += 1
            progress("thumbnails", done, len(missing))
            if photo is None:
                failed.add(face.id)
                continue
            target = out / thumb_path(face)
            private_dir(target.parent)
            write_private_bytes(target, _thumb_from_photo(photo, face.box, config.thumb_size, config.thumb_quality))
            summary.thumbs_made += 1
    summary.thumbs_failed = len(failed)
    return failed


# --------------------------------------------------------------------------------------------- HTML

STYLE = """
:root { color-scheme: light dark; --fg: #1d1d1f; --bg: #fafafa; --card: #fff; --muted: #666; --accent: #0a66c2; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #eee; --bg: #161616; --card: #222; --muted: #aaa; --accent: #6cb4ff; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1400px; padding: 1rem 1.5rem 3rem; font: 15px/1.4 system-ui, sans-serif;
       color: var(--fg); background: var(--bg); }
a { color: var(--accent); }
h1 { font-size: 1.5rem; margin: .5rem 0 1rem; } h2 { font-size: 1.15rem; margin: 1.5rem 0 .5rem; }
.muted, .crumbs { color: var(--muted); }
.grid { display: grid; gap: .75rem; grid-template-columns: repeat(auto-fill, minmax(150px, 1fr)); }
.card { background: var(--card); border-radius: 8px; padding: .5rem; box-shadow: 0 1px 3px #0002; overflow: hidden; }
.card img, .sheet img { display: block; width: 100%; height: auto; aspect-ratio: 1; border-radius: 4px; }
.card .title { font-weight: 600; margin-top: .35rem; overflow-wrap: anywhere; }
.sheet { display: grid; gap: .5rem; grid-template-columns: repeat(auto-fill, minmax(118px, 1fr)); }
.sheet figure { margin: 0; background: var(--card); border-radius: 6px; padding: 3px; }
.sheet figcaption { font-size: 12px; padding: 2px; }
code.cmd { display: block; user-select: all; white-space: pre-wrap; overflow-wrap: anywhere; font-size: 12px;
           background: #8881; border-radius: 4px; padding: 2px 4px; margin: 2px 0; }
details summary { cursor: pointer; color: var(--muted); font-size: 12px; }
.commands { background: var(--card); border-radius: 8px; padding: .5rem .75rem; margin: .5rem 0 1rem; }
.pager { margin: 1rem 0; display: flex; gap: .5rem; flex-wrap: wrap; }
.pager a, .pager span { padding: 2px 8px; border-radius: 4px; background: var(--card); }
.pager span { font-weight: 700; }
.photo { position: relative; display: inline-block; max-width: 100%; }
.photo img { display: block; width: auto; height: auto; max-width: 100%; max-height: 85vh; }
.photo svg { position: absolute; inset: 0; width: 100%; height: 100%; }
.photo rect { fill: none; stroke: #ffd400; stroke-width: 3; vector-effect: non-scaling-stroke; }
.photo g:target rect { stroke: #ff2d55; stroke-width: 5; }
.photo text { fill: #ffd400; font: bold 14px system-ui, sans-serif; paint-order: stroke; stroke: #000;
              stroke-width: 3px; }
.missing { display: grid; place-items: center; aspect-ratio: 1; background: #8883; color: var(--muted);
           font-size: 12px; }
table.faces td { padding: 4px 8px; vertical-align: top; }
table.faces img { width: 72px; height: 72px; border-radius: 4px; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _page(title: str, body: str, depth: int) -> str:
    up = "../" * depth
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Nothing may leave the machine: the policy blocks any network load even if a path slipped in.
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src 'self' file: data:; "
        "style-src 'self' file: 'unsafe-inline'\">"
        '<meta name="referrer" content="no-referrer">'
        f'<title>{_e(title)}</title><link rel="stylesheet" href="{up}style.css"></head>\n'
        f"<body>\n{body}\n</body></html>\n"
    )


def _cmd(text: str) -> str:
    return f'<code class="cmd">{_e(text)}</code>'


def _pager(links: list[str], current: int, depth_prefix: str) -> str:
    if len(links) <= 1:
        return ""
    items = [
        f"<span>{n}</span>" if n == current else f'<a href="{depth_prefix}{_e(link)}">{n}</a>'
        for n, link in enumerate(links, 1)
    ]
    return f'<nav class="pager">Pages: {"".join(items)}</nav>'


def _thumb_img(face: Face, failed: set[int], up: str, size: int) -> str:
    if face.id in failed:
        return f'<div class="missing">no image<br>face {face.id}</div>'
    return f'<img src="{up}{_e(thumb_path(face))}" loading="lazy" width="{size}" height="{size}" alt="face {face.id}">'


def _photo_page_path(photo_id: int) -> str:
    return f"photos/{_shard(photo_id)}/{photo_id}.html"


def render_index(groups: Sequence[Group], failed: set[int], config: SiteConfig, catalog_name: str) -> list[str]:
    """The index pages (HTML strings): one card per group with its representative face."""
    per = config.groups_per_page
    chunks = [groups[i : i + per] for i in range(0, len(groups), per)] or [[]]
    links = ["index.html"] + [f"index-{n}.html" for n in range(2, len(chunks) + 1)]
    n_faces = sum(len(g.faces) for g in groups)
    n_people = sum(1 for g in groups if g.kind == "person")
    n_clusters = sum(1 for g in groups if g.kind == "cluster")
    pages = []
    for number, chunk in enumerate(chunks, 1):
        body = [
            "<h1>Faces by person</h1>",
            f'<p class="muted">{counted(n_people, "person", "people")}, {counted(n_clusters, "unnamed cluster")}, '
            f"{counted(n_faces, 'face')} "
            f"&middot; catalog {_e(catalog_name)} &middot; biometric data: keep this folder private.</p>",
            _pager(links, number, ""),
        ]
        kind = None
        for group in chunk:
            if group.kind != kind:
                if kind is not None:
                    body.append("</div>")
                kind = group.kind
                heading = {"person": "People", "cluster": "Unnamed clusters", "unclustered": "Not clustered"}[kind]
                body.append(f'<h2>{heading}</h2>\n<div class="grid">')
            rep = group.faces[0]
            count = len(group.faces)
            body.append(
                f'<div class="card" id="{_e(group.slug)}"><a href="{_e(group.page(1))}">'
                f"{_thumb_img(rep, failed, '', config.thumb_size)}</a>"
                f'<div class="title"><a href="{_e(group.page(1))}">{_e(group.title)}</a></div>'
                f'<div class="muted">{counted(count, "face")}</div></div>'
            )
        if kind is not None:
            body.append("</div>")
        if not groups:
            body.append("<p>No faces in the catalog yet: run <code>facecluster cluster PHOTOS</code> first.</p>")
        body.append(_pager(links, number, ""))
        pages.append(_page("facecluster: faces by person", "\n".join(body), 0))
    return pages


def _group_commands(group: Group, commands: LabelCommands) -> str:
    if group.kind == "cluster":
        lines = [
            ("Name this cluster (an existing name adds it to that person)", commands.name_cluster(group.id or 0)),
            ("Not faces: hide the whole cluster", commands.ignore_cluster(group.id or 0)),
        ]
    elif group.kind == "person":
        name = group.name or ""
        lines = [
            ("Add an unnamed cluster to this person", commands.name_cluster("CLUSTER", name)),
            ("Rename", commands.rename(name)),
            ("Merge into another person", commands.merge(name)),
            ("Forget this person (deletes their faces, crops and vectors)", commands.forget(name)),
        ]
    else:
        lines = [("Give a face a person", commands.move("FACE"))]
    items = "".join(f"<div>{_e(label)}: {_cmd(text)}</div>" for label, text in lines)
    return f'<div class="commands">{items}</div>'


def _face_commands(face: Face, commands: LabelCommands) -> str:
    # Rejecting needs a person to reject; every face can be moved or ignored.
    lines = [commands.move(face.id)]
    if face.person_id is not None:
        lines.append(commands.reject(face.id))
    lines.append(commands.ignore_face(face.id))
    return "".join(_cmd(line) for line in lines)


def render_sheets(group: Group, failed: set[int], config: SiteConfig, commands: LabelCommands) -> list[tuple[str, str]]:
    """The contact-sheet pages of one group as ``(site-relative path, html)``."""
    per = config.faces_per_page
    chunks = [group.faces[i : i + per] for i in range(0, len(group.faces), per)]
    links = [group.page(n) for n in range(1, len(chunks) + 1)]
    pages = []
    for number, chunk in enumerate(chunks, 1):
        figures = []
        for face in chunk:
            photo = f"../{_photo_page_path(face.photo_id)}#face-{face.id}"
            score = "" if np.isnan(face.score) else f" &middot; sim {face.score:.2f}"
            figures.append(
                f'<figure id="face-{face.id}"><a href="{_e(photo)}">'
                f'{_thumb_img(face, failed, "../", config.thumb_size)}</a>'
                f"<figcaption>face {face.id}{score}<details><summary>commands</summary>"
                f"{_face_commands(face, commands)}</details></figcaption></figure>"
            )
        count = len(group.faces)
        body = (
            f'<p class="crumbs"><a href="../index.html">All people</a> &rsaquo; {_e(group.title)}</p>'
            f"<h1>{_e(group.title)}</h1>"
            f'<p class="muted">{counted(count, "face")}, most typical first'
            f"{'' if group.kind != 'cluster' else f' &middot; cluster id {group.id}'}"
            f"{'' if group.kind != 'person' else f' &middot; person id {group.id}'}</p>"
            f"{_group_commands(group, commands)}"
            f"{_pager(links, number, '../')}"
            f'<div class="sheet">{"".join(figures)}</div>'
            f"{_pager(links, number, '../')}"
        )
        pages.append((links[number - 1], _page(f"{group.title} ({number}/{len(chunks)})", body, 1)))
    return pages


def render_photo(
    photo_id: int,
    path: Path | None,
    image_url: str | None,
    size: tuple[int, int] | None,
    faces: Sequence[tuple[Face, Group]],
    failed: set[int],
    commands: LabelCommands,
    config: SiteConfig,
) -> str:
    """The page of one photo: the image with every shown face's box drawn over it."""
    rows = []
    boxes = []
    for face, group in faces:
        x1, y1, x2, y2 = face.box
        boxes.append(
            f'<g id="face-{face.id}"><rect x="{x1:.1f}" y="{y1:.1f}" width="{x2 - x1:.1f}" height="{y2 - y1:.1f}"/>'
            f'<text x="{x1:.1f}" y="{max(y1 - 4, 12):.1f}">{face.id}</text></g>'
        )
        rows.append(
            f"<tr><td>{_thumb_img(face, failed, '../../', config.thumb_size)}</td>"
            f'<td>face {face.id} &middot; <a href="../../{_e(group.page(1))}">{_e(group.title)}</a>'
            f" &middot; p={face.probability:.3f}"
            f"{_face_commands(face, commands)}</td></tr>"
        )
    name = _e(path) if path is not None else "(file missing)"
    if image_url is not None and size is not None:
        width, height = size
        picture = (
            f'<div class="photo"><img src="{_e(image_url)}" width="{width}" height="{height}" alt="photo {photo_id}">'
            f'<svg viewBox="0 0 {width} {height}" preserveAspectRatio="none" aria-hidden="true">'
            f"{''.join(boxes)}</svg></div>"
        )
    else:
        picture = (
            '<p class="missing" style="aspect-ratio:auto;padding:1rem">The photo file is missing: it moved or was '
            "deleted. Run <code>facecluster detect</code> on its new folder to update the catalog.</p>"
        )
    body = (
        f'<p class="crumbs"><a href="../../index.html">All people</a> &rsaquo; photo {photo_id}</p>'
        f'<h1>Photo {photo_id}</h1><p class="muted">{name}</p>{picture}'
        f'<table class="faces">{"".join(rows)}</table>'
    )
    return _page(f"photo {photo_id}", body, 2)


# --------------------------------------------------------------------------------------------- build


def catalog_key(catalog: Catalog) -> str:
    """How a site records the catalog it shows: the absolute path, or ``:memory:``."""
    return str(catalog.path.absolute()) if catalog.path is not None else ":memory:"


def site_catalog(site: Path) -> str | None:
    """The catalog a site was built from (recorded in its marker file), or ``None`` when unknown.

        site_catalog(Path("site"))   # '/home/me/.local/share/facecluster/catalog.db'
    """
    try:
        data = json.loads((site / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("catalog") if isinstance(data, dict) else None


def _check_out(out: Path, catalog: Catalog) -> None:
    if out.exists() and not out.is_dir():
        raise DataError(f"{out} is a file; give a folder for the site, e.g. --out faces-site")
    if out.is_dir() and not (out / MARKER).exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and not a facecluster site; choose an empty or new folder")
    built_from = site_catalog(out)
    if built_from is not None and built_from != catalog_key(catalog):
        # Rebuilding would prune the other catalog's pages: one site folder shows one catalog.
        raise DataError(f"{out} shows the catalog {built_from}; choose another --out for this catalog")


def _photo_size(conn: sqlite3.Connection, photo_id: int, path: Path | None) -> tuple[int, int] | None:
    row = conn.execute("SELECT width, height FROM photos WHERE id = ?", [photo_id]).fetchone()
    if row and row[0] and row[1]:
        return int(row[0]), int(row[1])
    if path is None:
        return None
    try:
        # The header is enough: the stored size, swapped when EXIF says the photo is turned sideways.
        with Image.open(path) as image:
            width, height = image.size
            sideways = exif_orientation(image) in (5, 6, 7, 8)
    except (OSError, UnidentifiedImageError, ValueError):
        return None
    return (height, width) if sideways else (width, height)


def _preview(out: Path, photo_id: int, path: Path, config: SiteConfig, summary: SiteSummary) -> str | None:
    stat = path.stat()
    tag = hashlib.sha1(f"{path}:{stat.st_size}:{stat.st_mtime}".encode()).hexdigest()[:10]
    rel = f"previews/{_shard(photo_id)}/{photo_id}-{tag}.jpg"
    target = out / rel
    if not target.exists():
        image = _load_photo(path, config.preview_max_side)
        if image is None:
            return None
        data = _jpeg(image, config.thumb_quality)
        private_dir(target.parent)
        write_private_bytes(target, data)
        summary.previews_made += 1
    return rel


def build_site(
    catalog: Catalog,
    out: Path,
    commands: LabelCommands | None = None,
    config: SiteConfig | None = None,
    progress: ProgressFn = null_progress,
) -> SiteSummary:
    """Write (or refresh) the review site for ``catalog`` into ``out``; return what was done.

    Thumbnails and previews that exist are reused; pages are rewritten; files of the site that no
    longer belong to it (forgotten people, deleted faces) are removed.

        summary = build_site(Catalog.open("photos.db"), Path("site"))
    """
    commands = commands or LabelCommands()
    config = config or SiteConfig()
    out = Path(out).expanduser().absolute()
    _check_out(out, catalog)
    private_dir(out)
    marker = {"catalog": catalog_key(catalog), "note": "facecluster review site: `facecluster show` rebuilds it"}
    write_private_text(out / MARKER, json.dumps(marker, ensure_ascii=False) + "\n")
    conn = catalog.db.conn
    summary = SiteSummary(out=out, index=out / "index.html")

    faces = load_faces(conn)
    groups = group_faces(conn, faces)
    score_faces(conn, groups)
    summary.faces = len(faces)
    summary.people = sum(1 for g in groups if g.kind == "person")
    summary.clusters = sum(1 for g in groups if g.kind == "cluster")
    summary.unclustered = sum(len(g.faces) for g in groups if g.kind == "unclustered")

    photo_ids = sorted({f.photo_id for f in faces})
    paths: dict[int, Path | None] = {pid: current_photo_path(conn, pid) for pid in photo_ids}
    summary.photos = len(photo_ids)
    summary.missing_photos = sorted(
        str(conn.execute("SELECT path FROM photos WHERE id = ?", [pid]).fetchone()[0])
        for pid, p in paths.items()
        if p is None
    )
    failed = make_thumbs(conn, out, faces, paths, config, summary, progress)

    written: set[str] = {MARKER, "style.css"}

    def write(rel: str, text: str) -> None:
        target = out / rel
        data = text.encode("utf-8")
        written.add(rel)
        summary.pages += 1
        # Re-runs rewrite only the pages that changed: reading a small file is cheaper than an atomic write.
        if not target.is_symlink() and target.is_file() and target.stat().st_size == len(data):
            if target.read_bytes() == data:
                summary.pages_unchanged += 1
                return
        private_dir(target.parent)
        write_private_bytes(target, data)

    write_private_text(out / "style.css", STYLE)
    index_pages = render_index(groups, failed, config, catalog.path.name if catalog.path else ":memory:")
    for number, text in enumerate(index_pages, 1):
        write("index.html" if number == 1 else f"index-{number}.html", text)
    total_pages = len(groups) + len(photo_ids)
    done = 0
    face_group: dict[int, list[tuple[Face, Group]]] = defaultdict(list)
    for group in groups:
        for rel, text in render_sheets(group, failed, config, commands):
            write(rel, text)
        for face in group.faces:
            face_group[face.photo_id].append((face, group))
        done += 1
        progress("pages", done, total_pages)
    for photo_id in photo_ids:
        path = paths[photo_id]
        url = None
        if path is not None:
            if path.suffix.lower() in WEB_SUFFIXES:
                url = path.absolute().as_uri()
            else:
                preview = _preview(out, photo_id, path, config, summary)
                if preview is not None:
                    written.add(preview)
                    url = f"../../{preview}"
        size = _photo_size(conn, photo_id, path) if url is not None else None
        entries = sorted(face_group[photo_id], key=lambda fg: fg[0].id)
        write(_photo_page_path(photo_id), render_photo(photo_id, path, url, size, entries, failed, commands, config))
        done += 1
        progress("pages", done, total_pages)
    written.update(thumb_path(f) for f in faces if f.id not in failed)
    summary.pruned = prune(out, written)
    return summary


def prune(out: Path, keep: set[str]) -> int:
    """Remove files under the site's own folders that are not in ``keep``; return how many.

        prune(Path("site"), {"index.html", "thumbs/0/1-abc.jpg"})
    """
    removed = 0
    for top in ["index*.html"]:
        for page in out.glob(top):
            if page.name not in keep:
                page.unlink()
                removed += 1
    for folder in OWNED_DIRS:
        root = out / folder
        if not root.is_dir():
            continue
        for dirpath, _dirs, filenames in os.walk(root, topdown=False):
            for name in filenames:
                full = Path(dirpath) / name
                if full.relative_to(out).as_posix() not in keep:
                    full.unlink()
                    removed += 1
            if Path(dirpath) != root and not os.listdir(dirpath):
                os.rmdir(dirpath)
    return removed

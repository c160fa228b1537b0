"""The static review site of ``facecluster show``, on a small library made of generated photos.

``make_library`` is also used by test_export.py, test_forget.py and test_site_browser.py.
"""

from __future__ import annotations

import html
import io
import json
import os
import re
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image, ImageDraw

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.config import SiteConfig
from facecluster.migrations import now
from facecluster.site import LabelCommands, build_site
from tests.fakes import insert_photo

MODEL = "test:0001"


@dataclass
class Library:
    """A catalog of generated photos: people, unnamed clusters, one unclustered face."""

    db: Path
    photos: dict[str, Path]
    people: dict[str, int]
    clusters: dict[str, int]
    faces: dict[str, list[int]] = field(default_factory=dict)


def _crop(color: tuple[int, int, int], fmt: str = "PNG") -> bytes:
    image = Image.new("RGB", (40, 40), color)
    ImageDraw.Draw(image).ellipse((8, 6, 32, 36), fill=(255 - color[0], 200, 150))
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _photo(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (240, 160)) -> None:
    image = Image.new("RGB", size, color)
    ImageDraw.Draw(image).rectangle((20, 20, 80, 90), fill=(230, 190, 160))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None)


def make_library(root: Path) -> Library:
    """Photos under ``root/photos`` and a catalog ``root/catalog.db``:

    - "Ada Lovelace" (cluster A, 3 faces in 3 photos), "Zoë Ñúñez" (cluster B, 2 faces in a photo
      folder with a space and an accent), "AC/DC" (one face moved by the user, no cluster);
    - unnamed cluster C (4 faces, one without a stored crop), unnamed cluster D (2 faces);
    - one unclustered face; one ignored face; a run whose arguments mention Ada.
    """
    photos_dir = root / "photos"
    rng = np.random.default_rng(0)
    names = {
        "ada1": "ada 1.jpg",
        "ada2": "trip/ada 1.jpg",  # same file name as ada1: the export must resolve the collision
        "ada3": "Ada/IMG_3.jpg",
        "zoe1": "Été 2024/zoë.jpg",
        "zoe2": "Été 2024/zoë 2.png",
        "group": "group.jpg",
        "c1": "c1.jpg",
        "c2": "c2.jpg",
        "d1": "d1.jpg",
        "lone": "lone.jpg",
    }
    photos = {key: photos_dir / rel for key, rel in names.items()}
    for i, path in enumerate(photos.values()):
        _photo(path, (40 + 20 * i, 80, 120))
    lib = Library(db=root / "catalog.db", photos=photos, people={}, clusters={})
    with Catalog.open(lib.db) as catalog:
        db = catalog.db
        t = now()
        db["models"].insert({"id": MODEL, "kind": "pretrained", "dim": 4, "created_at": t})
        for name in ("Ada Lovelace", "Zoë Ñúñez", "AC/DC"):
            lib.people[name] = db["people"].insert({"name": name, "created_at": t}).last_pk
        photo_ids = {}
        for key, path in photos.items():
            with Image.open(path) as im:
                width, height = im.size
            photo_ids[key] = insert_photo(db, path, hash=f"h-{key}", size=path.stat().st_size,
                                          mtime=path.stat().st_mtime, width=width, height=height)
            db["files"].insert({"path": str(path), "photo_id": photo_ids[key], "size": 1, "mtime": 0.0, "seen_at": t})
        run = (
            db["runs"]
            .insert(
                {
                    "command": "label",
                    "args": json.dumps({"cluster": 1, "name": "Ada Lovelace"}),
                    "started_at": t,
                    "status": "ok",
                }
            )
            .last_pk
        )
        for key, person in (("A", "Ada Lovelace"), ("B", "Zoë Ñúñez"), ("C", None), ("D", None)):
            lib.clusters[key] = (
                db["clusters"]
                .insert(
                    {
                        "model_id": MODEL,
                        "run_id": run,
                        "person_id": lib.people.get(person or ""),
                        "size": 0,
                        "created_at": t,
                    }
                )
                .last_pk
            )
        centers = {k: rng.normal(size=4) for k in ("A", "B", "C", "D", "X", "Y")}

        def face(
            key: str,
            photo: str,
            cluster: str | None,
            person: str | None = None,
            crop: bool = True,
            box: tuple[float, float, float, float] = (20, 20, 80, 90),
            ignored: int = 0,
        ) -> int:
            color = tuple(int(v) for v in rng.integers(0, 255, size=3))
            # As `facecluster label CLUSTER NAME` leaves them: the faces of a named cluster carry the name.
            source = "user" if person else None
            if person is None and cluster in ("A", "B"):
                person, source = {"A": "Ada Lovelace", "B": "Zoë Ñúñez"}[cluster], "label"
            face_id = (
                db["faces"]
                .insert(
                    {
                        "photo_id": photo_ids[photo],
                        "x1": box[0],
                        "y1": box[1],
                        "x2": box[2],
                        "y2": box[3],
                        "probability": float(rng.uniform(0.9, 1.0)),
                        "crop": _crop(color) if crop else None,
                        "crop_format": "png" if crop else None,
                        "cluster_id": lib.clusters[cluster] if cluster else None,
                        "person_id": lib.people[person] if person else None,
                        "person_source": source,
                        "ignored": ignored,
                        "created_at": t,
                    }
                )
                .last_pk
            )
            vec = centers[cluster or "X"] + rng.normal(scale=0.1, size=4)
            vec = (vec / np.linalg.norm(vec)).astype(np.float32)
            db["embeddings"].insert(
                {"face_id": face_id, "model_id": MODEL, "dim": 4, "vector": vec.tobytes(), "created_at": t}
            )
            lib.faces.setdefault(cluster or person or "none", []).append(face_id)
            return face_id

        face("A", "ada1", "A")
        face("A", "ada2", "A")
        face("A", "ada3", "A")
        face("A", "group", "A", box=(20, 20, 80, 90))
        face("B", "zoe1", "B")
        face("B", "zoe2", "B")
        face("B", "group", "B", box=(120, 30, 180, 100))
        face("X", "group", None, person="AC/DC", box=(190, 40, 230, 90))
        for photo in ("c1", "c2", "group"):
            face("C", photo, "C", box=(20, 20, 80, 90) if photo != "group" else (100, 100, 140, 150))
        face("C", "c1", "C", crop=False, box=(120, 20, 200, 110))
        face("D", "d1", "D")
        face("D", "d1", "D", box=(130, 40, 200, 120))
        face("Y", "lone", None)
        face("Y", "lone", None, box=(150, 60, 200, 110), ignored=1)
        for cluster_id in lib.clusters.values():
            db.execute(
                "UPDATE clusters SET size = (SELECT count(*) FROM faces WHERE cluster_id = ?) WHERE id = ?",
                [cluster_id, cluster_id],
            )
        db.conn.commit()
    return lib


def make_big_library(
    root: Path, n_faces: int = 100_000, n_clusters: int = 2_000, n_people: int = 200, dim: int = 512, seed: int = 0
) -> Path:
    """A catalog shaped like a large library, for timing ``show``/``export``/``forget`` (not run by pytest).

    Two faces a photo, 160 px JPEG crops (1,000 distinct ones, reused), ``dim``-d float32 vectors,
    cluster sizes from a Zipf law (the largest spans many sheet pages), 10% of faces unclustered, the
    largest ``n_people`` clusters named. Photo files are hard links to one small JPEG. Usage::

        python -c "from test_site import make_big_library as m; from pathlib import Path; m(Path('/tmp/big'))"
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    photo_dir = root / "photos"
    photo_dir.mkdir(exist_ok=True)
    base = photo_dir / "base.jpg"
    _photo(base, (90, 110, 130), size=(640, 480))
    crops = []
    for _ in range(1000):
        image = Image.new("RGB", (160, 160), tuple(int(v) for v in rng.integers(0, 255, 3)))
        ImageDraw.Draw(image).ellipse((30, 20, 130, 150), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=95)
        crops.append(buffer.getvalue())
    weights = 1.0 / np.arange(1, n_clusters + 1) ** 1.1
    labels = rng.choice(n_clusters, size=n_faces, p=weights / weights.sum())
    labels[rng.random(n_faces) < 0.1] = -1
    centers = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    db_path = root / "catalog.db"
    t = now()
    with Catalog.open(db_path) as catalog:
        conn = catalog.db.conn
        with conn:
            conn.execute(
                "INSERT INTO models (id, kind, dim, created_at) VALUES (?, 'pretrained', ?, ?)", [MODEL, dim, t]
            )
            for p in range(n_people):
                conn.execute(
                    "INSERT INTO people (id, name, created_at) VALUES (?, ?, ?)", [p + 1, f"Person {p + 1}", t]
                )
            for c in range(n_clusters):
                person = c + 1 if c < n_people else None
                conn.execute(
                    "INSERT INTO clusters (id, model_id, person_id, size, created_at) VALUES (?, ?, ?, ?, ?)",
                    [c + 1, MODEL, person, int((labels == c).sum()), t],
                )
            n_photos = (n_faces + 1) // 2
            for p in range(n_photos):
                path = photo_dir / f"{p // 1000}" / f"IMG_{p:06d}.jpg"
                if not path.exists():
                    path.parent.mkdir(exist_ok=True)
                    os.link(base, path)
                conn.execute(
                    "INSERT INTO photos (id, hash, path, size, mtime, width, height, orientation, status, n_faces,"
                    " added_at, updated_at) VALUES (?, ?, ?, 1, 0, 640, 480, 1, 'detected', 2, ?, ?)",
                    [p + 1, f"h{p}", str(path), t, t],
                )
            for f in range(n_faces):
                label = int(labels[f])
                vec = (centers[label] if label >= 0 else rng.normal(size=dim)) + rng.normal(scale=0.5, size=dim)
                vec = (vec / np.linalg.norm(vec)).astype(np.float32)
                x = 40 + 300 * (f % 2)
                conn.execute(
                    "INSERT INTO faces (id, photo_id, x1, y1, x2, y2, probability, crop, crop_format, cluster_id,"
                    " created_at) VALUES (?, ?, ?, 100, ?, 260, 0.99, ?, 'jpeg', ?, ?)",
                    [f + 1, f // 2 + 1, x, x + 140, crops[f % 1000], label + 1 if label >= 0 else None, t],
                )
                conn.execute(
                    "INSERT INTO embeddings (face_id, model_id, dim, vector, created_at) VALUES (?, ?, ?, ?, ?)",
                    [f + 1, MODEL, dim, vec.tobytes(), t],
                )
    return db_path


@pytest.fixture()
def library(tmp_path: Path) -> Library:
    return make_library(tmp_path)


def _modes(root: Path) -> tuple[set[int], set[int]]:
    dirs, files = set(), set()
    for path in [root, *root.rglob("*")]:
        (dirs if path.is_dir() else files).add(stat.S_IMODE(path.stat().st_mode))
    return dirs, files


def test_site_lists_every_group_with_pages_thumbs_and_photo_boxes(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "site"
    with Catalog.open(library.db) as catalog:
        summary = build_site(catalog, out)
    assert (summary.people, summary.clusters, summary.unclustered) == (3, 2, 1)
    assert summary.faces == 15  # 16 faces, one ignored
    assert summary.thumbs_made == 15 and summary.thumbs_failed == 0
    index = (out / "index.html").read_text()
    for slug in (
        "person-1",
        "person-2",
        "person-3",
        f"cluster-{library.clusters['C']}",
        f"cluster-{library.clusters['D']}",
        "unclustered",
    ):
        assert f'id="{slug}"' in index
        assert (out / "groups" / f"{'unclustered' if slug == 'unclustered' else slug}.html").exists()
    # People first (largest first), then clusters by size.
    order = re.findall(r'class="card" id="([^"]+)"', index)
    assert order[:3] == ["person-1", "person-2", "person-3"]
    assert order[3:5] == [f"cluster-{library.clusters['C']}", f"cluster-{library.clusters['D']}"]
    assert "Zoë Ñúñez" in index and "AC/DC" in index
    # A sheet links every face to its photo page, which draws every face box of that photo.
    sheet = (out / f"groups/cluster-{library.clusters['C']}.html").read_text()
    assert 'loading="lazy"' in sheet
    assert "facecluster label --move" in sheet and "facecluster label --ignore-face" in sheet
    group_photo = (out / "photos/0/6.html").read_text()
    assert group_photo.count("<rect") == 4
    assert library.photos["group"].absolute().as_uri() in group_photo
    # Nothing on any page reaches the network.
    for page in out.rglob("*.html"):
        text = page.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_representative_is_the_face_nearest_the_mean(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "site"
    with Catalog.open(library.db) as catalog:
        build_site(catalog, out)
        cid = library.clusters["C"]
        rows = catalog.db.execute(
            "SELECT e.face_id, e.vector FROM embeddings e JOIN faces f ON f.id = e.face_id WHERE f.cluster_id = ?",
            [cid],
        ).fetchall()
    vecs = {fid: np.frombuffer(v, dtype=np.float32) for fid, v in rows}
    mean = np.mean(list(vecs.values()), axis=0)
    best = max(vecs, key=lambda fid: vecs[fid] @ mean / np.linalg.norm(vecs[fid]))
    index = (out / "index.html").read_text()
    card = re.search(rf'id="cluster-{cid}".*?alt="face (\d+)"', index, re.S)
    assert card is not None and int(card.group(1)) == best


def test_site_files_are_owner_only_whatever_the_umask(library: Library, tmp_path: Path) -> None:
    import os

    old = os.umask(0o022)
    try:
        with Catalog.open(library.db) as catalog:
            build_site(catalog, tmp_path / "site")
    finally:
        os.umask(old)
    dirs, files = _modes(tmp_path / "site")
    assert dirs == {0o700} and files == {0o600}


def test_rerun_reuses_thumbnails_and_pages_paginate(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "site"
    config = SiteConfig(faces_per_page=2, groups_per_page=4)
    with Catalog.open(library.db) as catalog:
        build_site(catalog, out, config=config)
        thumb = next((out / "thumbs").rglob("*.jpg"))
        before = thumb.stat().st_mtime_ns
        again = build_site(catalog, out, config=config)
    assert again.thumbs_made == 0 and again.thumbs_reused == 15
    assert again.pages_unchanged == again.pages  # nothing changed: no page rewritten
    assert thumb.stat().st_mtime_ns == before
    cid = library.clusters["C"]
    assert (out / f"groups/cluster-{cid}-p2.html").exists()  # 4 faces, 2 a page
    assert not (out / f"groups/cluster-{cid}-p3.html").exists()
    assert (out / "index-2.html").exists()  # 6 groups, 4 a page
    assert 'href="../groups/' not in (out / "index-2.html").read_text()  # index links are relative to root


def test_face_without_crop_is_cut_from_its_photo_and_missing_photo_degrades(library: Library, tmp_path: Path) -> None:
    library.photos["c1"].unlink()  # holds the face without a stored crop
    with Catalog.open(library.db) as catalog:
        summary = build_site(catalog, tmp_path / "site")
    assert summary.thumbs_failed == 1
    assert summary.missing_photos == [str(library.photos["c1"])]
    page = (tmp_path / "site/photos/0/7.html").read_text()
    assert "The photo file is missing" in page


def test_rebuild_prunes_pages_of_deleted_faces(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "site"
    with Catalog.open(library.db) as catalog:
        build_site(catalog, out)
        cid = library.clusters["D"]
        catalog.db.execute("DELETE FROM faces WHERE cluster_id = ?", [cid])
        catalog.db.conn.commit()
        summary = build_site(catalog, out)
    assert not (out / f"groups/cluster-{cid}.html").exists()
    assert summary.pruned >= 3  # the sheet, two thumbnails, the photo page


def test_refuses_a_non_empty_folder_that_is_not_a_site(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(cli, ["--db", str(library.db), "show", "--out", str(out)])
    assert result.exit_code == 1
    assert "not a facecluster site" in result.output
    assert (out / "notes.txt").exists()


def test_show_says_how_many_pages_a_rerun_rewrote(library: Library, tmp_path: Path) -> None:
    args = ["--db", str(library.db), "show", "--out", str(tmp_path / "site")]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    pages = int(re.search(r"Wrote (\d+) pages for", first.stderr).group(1))  # type: ignore[union-attr]
    again = CliRunner().invoke(cli, args)  # nothing changed in the catalog: no page is written again
    assert f"Wrote 0 of {pages} pages ({pages} unchanged) for " in again.stderr


def test_show_command_json_and_db_prefix(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "site"
    result = CliRunner().invoke(cli, ["--db", str(library.db), "show", "--out", str(out), "--json", "-q"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["people"] == 3 and data["index"] == str(out / "index.html")
    sheet = (out / f"groups/cluster-{library.clusters['C']}.html").read_text()
    assert f"facecluster --db {library.db}" in sheet


def test_show_says_how_many_photo_files_are_missing(library: Library, tmp_path: Path) -> None:
    library.photos["c1"].unlink()
    result = CliRunner().invoke(cli, ["--db", str(library.db), "show", "--out", str(tmp_path / "site")])
    assert "1 photo file is missing (moved or deleted)." in result.stderr


def test_label_commands_quote_names() -> None:
    commands = LabelCommands()
    assert commands.name_cluster(3, "Ada Lovelace") == "facecluster label -- 3 'Ada Lovelace'"
    assert commands.move(7, "O'Brien") == "facecluster label --move 7 'O'\"'\"'Brien'"
    assert commands.ignore_face(9) == "facecluster label --ignore-face 9"


def test_quantised_vectors_pick_the_same_representative(library: Library, tmp_path: Path) -> None:
    from facecluster.quantize import quantize

    with Catalog.open(library.db) as catalog:
        build_site(catalog, tmp_path / "float")
        rows = catalog.db.execute("SELECT face_id, vector FROM embeddings").fetchall()
        X = np.stack([np.frombuffer(v, dtype=np.float32) for _, v in rows])
        codes, scale = quantize(X)
        for (face_id, _), c, s in zip(rows, codes, scale, strict=True):
            catalog.db.execute(
                "UPDATE embeddings SET dtype = 'uint8', scale = ?, vector = ? WHERE face_id = ?",
                [float(s), c.tobytes(), face_id],
            )
        catalog.db.conn.commit()
        build_site(catalog, tmp_path / "uint8")
    first = re.findall(r'alt="face (\d+)"', (tmp_path / "float/index.html").read_text())
    assert first == re.findall(r'alt="face (\d+)"', (tmp_path / "uint8/index.html").read_text())


def test_person_page_shows_the_label_commands(library: Library, tmp_path: Path) -> None:
    with Catalog.open(library.db) as catalog:
        build_site(catalog, tmp_path / "site")
    page = (tmp_path / f"site/groups/person-{library.people['Zoë Ñúñez']}.html").read_text()
    for text in (
        "label -- CLUSTER 'Zoë Ñúñez'",
        "label --rename 'Zoë Ñúñez' NEW",
        "label --merge 'Zoë Ñúñez' OTHER",
        "forget -- 'Zoë Ñúñez'",
        f"label --reject {library.faces['B'][0]}",
    ):
        assert html.escape(f"facecluster {text}") in page, text
    cluster = (tmp_path / f"site/groups/cluster-{library.clusters['C']}.html").read_text()
    assert f"label --ignore-cluster {library.clusters['C']}" in cluster
    assert "label --reject" not in cluster  # unnamed faces have no person to reject


def test_empty_catalog_gives_a_helpful_index(tmp_path: Path) -> None:
    with Catalog.open(tmp_path / "empty.db") as catalog:
        summary = build_site(catalog, tmp_path / "site")
    assert summary.faces == 0 and summary.pages == 1
    assert "No faces in the catalog yet" in (tmp_path / "site/index.html").read_text()


def test_progress_is_reported_through_the_callback(library: Library, tmp_path: Path) -> None:
    calls: list[tuple[str, int, int | None]] = []
    with Catalog.open(library.db) as catalog:
        build_site(catalog, tmp_path / "site", progress=lambda stage, done, total: calls.append((stage, done, total)))
    stages = {stage for stage, _, _ in calls}
    assert stages == {"thumbnails", "pages"}
    assert ("thumbnails", 15, 15) in calls and calls[-1][0] == "pages" and calls[-1][1] == calls[-1][2]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="xdg-open is the Linux launcher")
@pytest.mark.parametrize("status", [0, 3])
def test_show_open_launches_the_index_or_says_it_could_not(
    library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, status: int
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    opener = bin_dir / "xdg-open"  # a stand-in launcher: records what it was asked to open
    opener.write_text(f'#!/bin/sh\necho "$1" > "{tmp_path}/opened"\necho "no method available" >&2\nexit {status}\n')
    opener.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    result = CliRunner().invoke(cli, ["--db", str(library.db), "show", "--out", str(tmp_path / "s"), "--open"])
    assert result.exit_code == 0, result.output
    index = tmp_path / "s" / "index.html"
    assert (tmp_path / "opened").read_text().strip() == str(index)
    assert "no method available" not in result.stderr  # the launcher's own noise stays out
    assert ("could not open a web browser" in result.stderr) == (status != 0)


def test_a_site_folder_shows_one_catalog(library: Library, tmp_path: Path) -> None:
    from facecluster.errors import DataError
    from facecluster.site import site_catalog

    with Catalog.open(library.db) as catalog:
        build_site(catalog, tmp_path / "site")
    assert site_catalog(tmp_path / "site") == str(library.db)
    with Catalog.open(tmp_path / "other.db") as other, pytest.raises(DataError, match="shows the catalog"):
        build_site(other, tmp_path / "site")


def test_commands_shown_on_the_site_run(library: Library, tmp_path: Path) -> None:
    """Every kind of command the pages show, with its placeholders filled in, is accepted by the CLI."""
    import shlex

    out = tmp_path / "site"
    runner = CliRunner()
    assert runner.invoke(cli, ["--db", str(library.db), "show", "--out", str(out), "-q"]).exit_code == 0
    cid, zoe = library.clusters["D"], library.people["Zoë Ñúñez"]
    pages = {
        "cluster": (out / f"groups/cluster-{cid}.html").read_text(),
        "person": (out / f"groups/person-{zoe}.html").read_text(),
    }
    commands = {
        kind: [html.unescape(c) for c in re.findall(r'<code class="cmd">(.*?)</code>', page)]
        for kind, page in pages.items()
    }

    def run(command: str, **fill: str) -> None:
        for placeholder, value in fill.items():
            command = command.replace(f" {placeholder}", f" {shlex.quote(value)}")
        args = shlex.split(command)
        assert args[0] == "facecluster"
        result = runner.invoke(cli, args[1:])
        assert result.exit_code == 0, (command, result.output)

    pick = lambda kind, text: next(c for c in commands[kind] if text in c)  # noqa: E731
    run(pick("cluster", "label --move"), NAME="Grace Hopper")
    run(pick("cluster", "label --ignore-face"))
    run(pick("person", "label --reject"))
    run(pick("person", "label --rename"), NEW="Zoë N.")
    run(pick("person", "label --merge").replace("'Zoë Ñúñez'", "'Zoë N.'"), OTHER="Grace Hopper")
    run(pick("cluster", f"label -- {cid} "), NAME="Grace Hopper")
    run(pick("cluster", "label --ignore-cluster"))
    with Catalog.open(library.db) as catalog:
        names = {r[0] for r in catalog.db.execute("SELECT name FROM people")}
    assert "Grace Hopper" in names and "Zoë Ñúñez" not in names


def test_every_command_on_the_site_runs_for_names_starting_with_a_dash(library: Library, tmp_path: Path) -> None:
    """A name like ``-T-`` must not be read as an option: each command of every page, placeholders filled
    with more such names, runs (each against the same starting catalog)."""
    import shlex
    import shutil

    runner = CliRunner()
    db = ["--db", str(library.db)]
    for old, new in (("Zoë Ñúñez", "-T-"), ("AC/DC", "-A-")):
        assert runner.invoke(cli, [*db, "label", "--rename", old, new, "-q"]).exit_code == 0
    out = tmp_path / "site"
    assert runner.invoke(cli, [*db, "show", "--out", str(out), "-q"]).exit_code == 0
    commands = {
        html.unescape(c)
        for page in out.rglob("*.html")
        for c in re.findall(r'<code class="cmd">(.*?)</code>', page.read_text(encoding="utf-8"))
    }
    fill = {"NAME": "-N-", "NEW": "-New-", "CLUSTER": str(library.clusters["D"]),
            "FACE": str(library.faces["C"][0])}
    saved = tmp_path / "saved.db"
    shutil.copy(library.db, saved)
    kinds = set()
    for command in sorted(commands):
        words = shlex.split(command)
        other = {"OTHER": "-T-" if "-A-" in words else "-A-"}  # merge into someone else
        args = [{**fill, **other}.get(arg, arg) for arg in words]
        assert args[:3] == ["facecluster", *db]
        shutil.copy(saved, library.db)
        result = runner.invoke(cli, args[1:], input="y\n")
        assert result.exit_code == 0, (command, result.output)
        kinds.add(" ".join(a for a in args[3:5] if a.startswith("-") or a.isalpha()))
    assert {"label --rename", "label --merge", "label --move", "label --reject", "label --ignore-face",
            "label --ignore-cluster", "label --", "forget --"} <= kinds
    # Exit 0 is not enough: naming a cluster and forgetting a person by such a name do what they say.
    shutil.copy(saved, library.db)
    name_cmd = next(c for c in commands if " label -- CLUSTER -T-" in c)
    assert runner.invoke(cli, [fill.get(a, a) for a in shlex.split(name_cmd)][1:]).exit_code == 0
    forget_cmd = next(c for c in commands if " forget -- " in c and "-A-" in c)
    assert runner.invoke(cli, shlex.split(forget_cmd)[1:], input="y\n").exit_code == 0
    with Catalog.open(library.db) as catalog:
        names = {r[0] for r in catalog.db.execute("SELECT name FROM people")}
        owner = catalog.db.execute("SELECT person_id FROM clusters WHERE id = ?", [library.clusters["D"]]).fetchone()
    assert "-A-" not in names and "-T-" in names
    assert owner[0] == library.people["Zoë Ñúñez"]


def test_counts_on_the_pages_agree_in_number(library: Library, tmp_path: Path) -> None:
    """One person, one unnamed cluster, one face: no '1 people', '1 unnamed clusters', '1 faces'."""
    with Catalog.open(library.db) as catalog:
        conn = catalog.db.conn
        keep_face = library.faces["D"][0]
        conn.execute("DELETE FROM embeddings WHERE face_id != ?", [keep_face])
        conn.execute("DELETE FROM faces WHERE id != ?", [keep_face])
        conn.execute("DELETE FROM clusters WHERE id != ?", [library.clusters["D"]])
        conn.execute("DELETE FROM people WHERE id != ?", [library.people["AC/DC"]])
        conn.commit()
        build_site(catalog, tmp_path / "one")
        conn.execute("UPDATE faces SET person_id = ?", [library.people["AC/DC"]])
        conn.commit()
        build_site(catalog, tmp_path / "person")
    index = (tmp_path / "one/index.html").read_text()
    assert "0 people, 1 unnamed cluster, 1 face " in index
    assert '<div class="muted">1 face</div>' in index
    assert "1 face, most typical first" in (tmp_path / f"one/groups/cluster-{library.clusters['D']}.html").read_text()
    assert "1 person, 0 unnamed clusters, 1 face " in (tmp_path / "person/index.html").read_text()

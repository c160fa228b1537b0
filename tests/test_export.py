"""``facecluster export``: per-person folders of links or copies, data files, moved and missing photos."""

from __future__ import annotations

import csv
import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_site import Library, make_library

from facecluster.catalog import Catalog
from facecluster.cli import cli
from facecluster.errors import EXIT_PARTIAL, CatalogError, DataError
from facecluster.export import export_people, safe_name


@pytest.fixture()
def library(tmp_path: Path) -> Library:
    return make_library(tmp_path)


def _tree(out: Path) -> dict[str, Path]:
    return {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_symlink() or p.is_file()}


def test_symlink_mode_people_folders_with_unicode_and_collisions(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    with Catalog.open(library.db) as catalog:
        summary = export_people(catalog, out)
    tree = _tree(out)
    ada = sorted(k for k in tree if k.startswith("Ada Lovelace/"))
    # Two photos are both called "ada 1.jpg": the second gets its photo id.
    assert ada == [
        "Ada Lovelace/IMG_3.jpg",
        "Ada Lovelace/ada 1 (2).jpg",
        "Ada Lovelace/ada 1.jpg",
        "Ada Lovelace/group.jpg",
    ]
    assert sorted(k for k in tree if k.startswith("Zoë Ñúñez/")) == [
        "Zoë Ñúñez/group.jpg",
        "Zoë Ñúñez/zoë 2.png",
        "Zoë Ñúñez/zoë.jpg",
    ]
    assert "AC_DC/group.jpg" in tree  # the slash of "AC/DC" cannot be a folder separator
    for rel, path in tree.items():
        if "/" in rel:
            assert path.is_symlink() and path.resolve().is_file()
    assert os.readlink(out / "Ada Lovelace/ada 1 (2).jpg") == str(library.photos["ada2"])
    assert summary.photos == 8 and summary.created == 8 and summary.missing == []
    # Owner-only folders and data files.
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "Zoë Ñúñez").stat().st_mode) == 0o700
    assert stat.S_IMODE((out / "faces.jsonl").stat().st_mode) == 0o600
    people = [json.loads(line) for line in (out / "people.jsonl").read_text().splitlines()]
    assert {p["name"]: p["photos"] for p in people} == {"Ada Lovelace": 4, "Zoë Ñúñez": 3, "AC/DC": 1}
    faces = [json.loads(line) for line in (out / "faces.jsonl").read_text().splitlines()]
    assert len(faces) == 16 and {f["person"] for f in faces} == {"Ada Lovelace", "Zoë Ñúñez", "AC/DC", None}
    photos = [json.loads(line) for line in (out / "photos.jsonl").read_text().splitlines()]
    group = next(p for p in photos if p["path"].endswith("group.jpg"))
    assert group["people"] == ["AC/DC", "Ada Lovelace", "Zoë Ñúñez"]


def test_copy_mode_person_and_csv(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    old = os.umask(0o002)
    try:
        with Catalog.open(library.db) as catalog:
            summary = export_people(catalog, out, mode="copy", person="zoë ñúñez", fmt="csv")
    finally:
        os.umask(old)
    tree = _tree(out)
    assert sorted(tree) == [
        ".facecluster-export.json",
        "Zoë Ñúñez/group.jpg",
        "Zoë Ñúñez/zoë 2.png",
        "Zoë Ñúñez/zoë.jpg",
        "faces.csv",
        "people.csv",
        "photos.csv",
    ]
    copy = out / "Zoë Ñúñez/zoë.jpg"
    assert not copy.is_symlink() and copy.read_bytes() == library.photos["zoe1"].read_bytes()
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in tree.values())
    assert summary.people == 1 and summary.photos == 3
    with open(out / "faces.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 3 and {r["person"] for r in rows} == {"Zoë Ñúñez"}
    assert library.photos["zoe1"].exists()  # originals untouched


def test_moved_photos_are_linked_where_they_are_now(library: Library, tmp_path: Path) -> None:
    moved = tmp_path / "elsewhere" / "IMG_3.jpg"
    moved.parent.mkdir()
    shutil.move(library.photos["ada3"], moved)
    renamed = tmp_path / "elsewhere" / "ada one.jpg"
    shutil.move(library.photos["ada1"], renamed)
    with Catalog.open(library.db) as catalog:
        db = catalog.db
        # ada3: the catalog already knows the new place (photos.path updated by a later detect).
        db.execute("UPDATE photos SET path = ? WHERE path = ?", [str(moved), str(library.photos["ada3"])])
        # ada1: only the files table has seen the new path.
        pid = db.execute("SELECT id FROM photos WHERE path = ?", [str(library.photos["ada1"])]).fetchone()[0]
        db.execute(
            "INSERT INTO files (path, photo_id, size, mtime, seen_at) VALUES (?, ?, 1, 0, '2030-01-01')",
            [str(renamed), pid],
        )
        db.conn.commit()
        summary = export_people(catalog, tmp_path / "export", person="Ada Lovelace")
    out = tmp_path / "export/Ada Lovelace"
    assert os.readlink(out / "IMG_3.jpg") == str(moved)
    assert os.readlink(out / "ada one.jpg") == str(renamed)
    assert summary.missing == []
    photos = [json.loads(line) for line in (tmp_path / "export/photos.jsonl").read_text().splitlines()]
    assert str(renamed) in {p["path"] for p in photos}


def test_missing_photo_is_reported_not_linked(library: Library, tmp_path: Path) -> None:
    library.photos["zoe2"].unlink()
    out = tmp_path / "export"
    result = CliRunner().invoke(cli, ["--db", str(library.db), "export", "--out", str(out), "--json"])
    assert result.exit_code == EXIT_PARTIAL
    data = json.loads(result.stdout)
    assert [m["path"] for m in data["missing"]] == [str(library.photos["zoe2"])]
    assert "missing: photo" in result.stderr
    assert not (out / "Zoë Ñúñez/zoë 2.png").is_symlink()
    assert all(p.resolve().exists() for p in out.rglob("*") if p.is_symlink())  # no broken link


def test_missing_photos_are_listed_even_with_quiet(library: Library, tmp_path: Path) -> None:
    # -q silences the summary, not the reason for exit code 3 (as `detect -q` still lists `failed:` files).
    library.photos["zoe2"].unlink()
    result = CliRunner().invoke(cli, ["--db", str(library.db), "export", "--out", str(tmp_path / "export"), "-q"])
    assert result.exit_code == EXIT_PARTIAL
    [line] = result.stderr.splitlines()
    assert line.startswith("missing: photo ") and line.endswith(f" of Zoë Ñúñez: {library.photos['zoe2']}")


def test_rerun_is_idempotent_and_only_removes_its_own_files(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out)
        mine = out / "Ada Lovelace" / "notes.txt"
        mine.write_text("mine")
        again = export_people(catalog, out)
        assert (again.created, again.unchanged, again.removed) == (0, 8, 0)
        # Ada's face in the group photo is moved to AC/DC: her link to it goes, the user's file stays.
        face = library.faces["A"][3]
        catalog.db.execute(
            "UPDATE faces SET person_id = ?, person_source = 'user' WHERE id = ?", [library.people["AC/DC"], face]
        )
        catalog.db.conn.commit()
        third = export_people(catalog, out)
    assert third.removed == 1 and not (out / "Ada Lovelace/group.jpg").exists()
    assert mine.read_text() == "mine"


def test_user_file_with_the_same_name_is_never_overwritten(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    (out / "AC_DC").mkdir(parents=True)
    (out / "AC_DC/group.jpg").write_text("not a photo")
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out, person="AC/DC")
    assert (out / "AC_DC/group.jpg").read_text() == "not a photo"
    assert (out / "AC_DC/group (6).jpg").is_symlink()


def test_unknown_person_is_one_clear_error(library: Library, tmp_path: Path) -> None:
    with Catalog.open(library.db) as catalog, pytest.raises(CatalogError, match="no person named 'Nobody'"):
        export_people(catalog, tmp_path / "x", person="Nobody")
    result = CliRunner().invoke(
        cli, ["--db", str(library.db), "export", "--out", str(tmp_path / "x"), "--person", "Nobody"]
    )
    assert result.exit_code == 1 and "Error: no person named 'Nobody'" in result.output


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("AC/DC", "AC_DC"),
        ("Zoë Ñúñez", "Zoë Ñúñez"),
        ("..", "_"),
        (".hidden", "_hidden"),
        ("a\nb\x00c", "a_b_c"),
        ("  spaced. ", "spaced"),
        ("Zoe\u0308", "Zoë"),
        ("é" * 300, "é" * 100),
    ],
)
def test_safe_name(name: str, safe: str) -> None:
    assert safe_name(name) == safe


def test_rerun_after_forget_removes_the_forgotten_persons_folder(library: Library, tmp_path: Path) -> None:
    from facecluster.forget import forget_person

    out = tmp_path / "export"
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out)
        forget_person(catalog, "Ada Lovelace")
        summary = export_people(catalog, out)
    assert summary.removed == 4 and not (out / "Ada Lovelace").exists()
    assert "Ada Lovelace" not in (out / "people.jsonl").read_text()
    assert "Ada Lovelace" not in (out / ".facecluster-export.json").read_text()


def test_a_data_file_the_user_put_there_is_never_overwritten(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    out.mkdir()
    (out / "people.csv").write_text("mine")
    (out / "faces.jsonl").write_text("mine too")  # the other format's name: simply left alone
    with Catalog.open(library.db) as catalog, pytest.raises(DataError, match="people.csv .*not written by"):
        export_people(catalog, out, fmt="csv")
    assert (out / "people.csv").read_text() == "mine"
    assert sorted(p.name for p in out.iterdir()) == ["faces.jsonl", "people.csv"]  # refused before any work
    result = CliRunner().invoke(cli, ["--db", str(library.db), "export", "--out", str(out), "--format", "csv"])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and result.output.startswith("Error: ")
    (out / "people.csv").unlink()
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out, fmt="csv", person="AC/DC")
        with pytest.raises(DataError, match="faces.jsonl .*not written by"):
            export_people(catalog, out, fmt="jsonl", person="AC/DC")
    assert (out / "faces.jsonl").read_text() == "mine too"


def test_switching_format_removes_the_data_files_of_the_other(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    names = lambda: sorted(p.name for p in out.iterdir() if p.is_file())  # noqa: E731
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out)
        (out / "notes.csv").write_text("mine")
        csv_run = export_people(catalog, out, fmt="csv")
        assert names() == [".facecluster-export.json", "faces.csv", "notes.csv", "people.csv", "photos.csv"]
        assert csv_run.removed == 3 and csv_run.unchanged == 8
        export_people(catalog, out, fmt="jsonl")
        assert names() == [".facecluster-export.json", "faces.jsonl", "notes.csv", "people.jsonl", "photos.jsonl"]


def test_an_export_made_before_data_files_were_listed_is_updated(library: Library, tmp_path: Path) -> None:
    out = tmp_path / "export"
    with Catalog.open(library.db) as catalog:
        export_people(catalog, out)
        manifest = out / ".facecluster-export.json"
        entries = json.loads(manifest.read_text())["entries"]
        manifest.write_text(json.dumps({"entries": entries}))  # as earlier versions wrote it
        again = export_people(catalog, out)
    assert again.unchanged == 8 and "data" in json.loads(manifest.read_text())

def test_people_without_a_visible_face_are_left_out_as_people_and_show_leave_them_out(
    library: Library, tmp_path: Path
) -> None:
    from facecluster.migrations import now
    from facecluster.people import ignore_face, list_people
    from facecluster.site import build_site

    with Catalog.open(library.db) as catalog:
        export_people(catalog, tmp_path / "export")
        assert (tmp_path / "export/Zoë Ñúñez").is_dir()
        for face_id in library.faces["B"]:  # every face of Zoë's ignored
            ignore_face(catalog, face_id)
        # A name left with no face by an older version (relabelled to fix a typo).
        catalog.db.execute("INSERT INTO people (name, created_at) VALUES ('Pete Sampas', ?)", [now()])
        catalog.db.conn.commit()
        listed = {r["name"] for r in list_people(catalog) if r["kind"] == "person"}
        site = build_site(catalog, tmp_path / "site")
        summary = export_people(catalog, tmp_path / "export")
    exported = [json.loads(line)["name"] for line in (tmp_path / "export/people.jsonl").read_text().splitlines()]
    assert listed == set(exported) == {"Ada Lovelace", "AC/DC"}
    assert summary.people == site.people == 2
    assert not (tmp_path / "export/Zoë Ñúñez").exists()  # her earlier links are removed

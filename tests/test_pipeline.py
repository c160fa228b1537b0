"""detect_paths / embed_pending over a generated library with fake models."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facecluster.catalog import Catalog
from facecluster.config import PipelineConfig
from facecluster.pipeline import (
    decode_crop,
    detect_paths,
    embed_pending,
    encode_crop,
    print_failures,
    read_path_list,
)
from tests.fakes import LIBRARY, FakeDetector, FakeEmbedder, fake_crop, make_library, unblocked_fifo


@pytest.fixture()
def library(tmp_path: Path) -> Path:
    make_library(tmp_path / "photos")
    return tmp_path / "photos"


def _faces(catalog: Catalog) -> int:
    return catalog.db.execute("SELECT count(*) FROM faces").fetchone()[0]


def test_detect_stores_photos_faces_and_crops(library: Path) -> None:
    catalog = Catalog.open(None)
    detector = FakeDetector()
    report = detect_paths(catalog, [library], detector, crop=fake_crop)
    assert report.files == len(LIBRARY) and report.detected == len(LIBRARY) and not report.failed
    assert report.faces == sum(len(v) for v in LIBRARY.values()) == _faces(catalog)
    crop = decode_crop(catalog.db.execute("SELECT crop FROM faces LIMIT 1").fetchone()[0])
    assert crop.shape == (160, 160, 3)
    assert detector.calls == 1  # eight photos: one batch
    assert catalog.db.execute("SELECT count(*) FROM files").fetchone()[0] == len(LIBRARY)


def test_detect_twice_skips_unchanged_files_without_loading_the_model(library: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    built = []
    report = detect_paths(catalog, [library], lambda: built.append(1) or FakeDetector(), crop=fake_crop)
    assert report.skipped == len(LIBRARY) and report.detected == 0 and not built
    forced = FakeDetector()
    report = detect_paths(catalog, [library], forced, crop=fake_crop, force=True)
    assert report.detected == len(LIBRARY) and forced.images == len(LIBRARY)
    assert _faces(catalog) == sum(len(v) for v in LIBRARY.values())  # updated in place, not duplicated


def test_force_keeps_face_ids(library: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    before = [r[0] for r in catalog.db.execute("SELECT id FROM faces ORDER BY id")]
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop, force=True)
    assert [r[0] for r in catalog.db.execute("SELECT id FROM faces ORDER BY id")] == before


def test_moved_and_renamed_files_keep_their_photo(library: Path, tmp_path: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    faces_before = catalog.db.execute("SELECT id, photo_id FROM faces ORDER BY id").fetchall()
    moved = tmp_path / "elsewhere"
    shutil.move(str(library), str(moved))
    os.rename(moved / "2020" / "a1.png", moved / "2020" / "renamed.png")
    detector = FakeDetector()
    report = detect_paths(catalog, [moved], detector, crop=fake_crop)
    assert report.moved == len(LIBRARY) and report.detected == 0 and detector.images == 0
    assert catalog.db.execute("SELECT id, photo_id FROM faces ORDER BY id").fetchall() == faces_before
    path = catalog.db.execute("SELECT path FROM photos p JOIN faces f ON f.photo_id = p.id WHERE f.id = ?",
                              [faces_before[0][0]]).fetchone()[0]
    assert path == str(moved / "2020" / "renamed.png")


def test_changed_file_content_replaces_its_photo(library: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    from tests.fakes import make_photo

    make_photo(library / "2021" / "d1.png", [3, 4])
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.detected == 1
    assert catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0] == len(LIBRARY)
    assert _faces(catalog) == sum(len(v) for v in LIBRARY.values()) + 1


def test_bad_files_are_recorded_and_the_run_goes_on(library: Path) -> None:
    (library / "zero.jpg").write_bytes(b"")
    (library / "text.jpg").write_text("not a photo")
    good = (library / "2020" / "a1.png").read_bytes()
    (library / "cut.png").write_bytes(good[: len(good) // 2])
    catalog = Catalog.open(None)
    report = detect_paths(catalog, [library, library / "missing.png"], FakeDetector(), crop=fake_crop)
    failed = {Path(f.path).name: f.error for f in report.failed}
    assert set(failed) == {"zero.jpg", "text.jpg", "cut.png", "missing.png"}
    assert all("\n" not in e for e in failed.values())
    assert report.detected == len(LIBRARY)
    errors = catalog.db.execute("SELECT count(*) FROM photos WHERE status = 'error'").fetchone()[0]
    assert errors == 3  # the missing file has no content to record
    assert catalog.db.execute("SELECT error FROM files WHERE path LIKE '%missing.png'").fetchone() is None


def test_a_fifo_named_like_a_photo_fails_without_hanging_the_run(library: Path) -> None:
    # In a folder and named on the command line: both are a `failed:` line, the other photos are detected.
    with unblocked_fifo(library / "x.jpg") as fifo:
        catalog = Catalog.open(None)
        report = detect_paths(catalog, [library, fifo], FakeDetector(), crop=fake_crop)
    failed = {Path(f.path).name: f.error for f in report.failed}
    assert failed == {"x.jpg": "not a regular file (a FIFO)"}
    assert report.detected == len(LIBRARY)


def test_failures_print_one_line_each_even_for_names_with_newlines(library: Path) -> None:
    # Linux allows any byte but "/" and NUL in a name: a newline or an escape sequence must neither break
    # the one-line `failed:` report nor reach the terminal raw. The report's data keeps the real path.
    for name in ("bad\nname.jpg", "tab\there.jpg", "esc\x1b[31mred.jpg"):
        (library / name).write_text("not a photo")
    catalog = Catalog.open(None)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert {Path(f.path).name for f in report.failed} == {"bad\nname.jpg", "tab\there.jpg", "esc\x1b[31mred.jpg"}
    out = io.StringIO()
    print_failures(report.failed, stream=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and all(line.startswith("failed: ") for line in lines)
    assert "\x1b" not in out.getvalue() and "\t" not in out.getvalue()
    assert any(line.startswith(f"failed: {library}/bad\\nname.jpg: not an image file") for line in lines)
    assert any("esc\\x1b[31mred.jpg" in line for line in lines)


def test_names_that_are_not_utf8_and_unlistable_folders_are_failures_not_crashes(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = (library / "2020" / "a1.png").read_bytes()
    latin1 = os.fsencode(library) + b"/caf\xe9.png"  # a Latin-1 name, as old cameras and Windows copies write
    with open(latin1, "wb") as handle:
        handle.write(good)
    (library / "locked").mkdir()
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "locked":  # (chmod 000 does not stop root, who runs CI)
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    catalog = Catalog.open(None)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    failed = {Path(f.path).name: f.error for f in report.failed}
    assert failed.keys() == {"caf\\xe9.png", "locked"}  # printable, storable text
    assert "not valid UTF-8" in failed["caf\\xe9.png"] and "Permission denied" in failed["locked"]
    assert report.detected == len(LIBRARY) and report.files == len(LIBRARY) + 2


def test_a_folder_whose_name_is_not_utf8_is_a_failure_not_a_crash(library: Path) -> None:
    # Named on the command line (`facecluster detect $'caf\xe9'`): its photos cannot be stored (the catalog
    # keeps paths as text), so each is a failure; the run must not die looking up what was under it.
    folder = os.fsencode(library) + b"/caf\xe9"
    os.mkdir(folder)
    with open(folder + b"/a.png", "wb") as handle:
        handle.write((library / "2020" / "a1.png").read_bytes())
    catalog = Catalog.open(None)
    for _ in range(2):
        report = detect_paths(catalog, [Path(os.fsdecode(folder)), library], FakeDetector(), crop=fake_crop)
        assert [(Path(f.path).parent.name, f.error.startswith("the folder name is not valid UTF-8: rename the folder"))
                for f in report.failed] == [("caf\\xe9", True)]
    assert catalog.db.execute("SELECT count(*) FROM files").fetchone()[0] == len(LIBRARY)


def test_batches_commit_separately_so_an_interrupt_keeps_finished_work(library: Path) -> None:
    class Interrupting(FakeDetector):
        def detect(self, images):
            if self.calls == 1:
                raise KeyboardInterrupt
            return super().detect(images)

    catalog = Catalog.open(None)
    with pytest.raises(KeyboardInterrupt):
        detect_paths(catalog, [library], Interrupting(), crop=fake_crop, pipeline=PipelineConfig(batch_size=3))
    catalog.db.conn.rollback()
    done = catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0]
    assert 3 <= done < len(LIBRARY)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop, pipeline=PipelineConfig(batch_size=3))
    assert report.skipped == done and report.detected == len(LIBRARY) - done


def test_embed_pending_is_idempotent_and_matches_inline_embedding(library: Path) -> None:
    catalog = Catalog.open(None)
    embedder = FakeEmbedder()
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop, embedder=embedder)
    n = report.faces
    assert report.embedded == n
    ids, inline = catalog.load_embeddings(embedder.model_id)
    assert len(ids) == n and np.allclose(np.linalg.norm(inline, axis=1), 1, atol=1e-5)
    assert embed_pending(catalog, embedder).embedded == 0
    assert embed_pending(catalog, embedder, force=True).embedded == n
    _, again = catalog.load_embeddings(embedder.model_id)
    np.testing.assert_allclose(again, inline, atol=1e-6)
    other = FakeEmbedder(dim=8, model_id="fake:other")
    assert embed_pending(catalog, other, batch_size=2).embedded == n  # a second model: its own vectors
    assert catalog.db.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 2 * n


def test_parallel_workers_write_the_same_catalog_as_one(library: Path) -> None:
    def content(workers: int) -> tuple[list, list]:
        catalog = Catalog.open(None)
        config = PipelineConfig(batch_size=2, workers=workers)  # four batches of two photos
        report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop, embedder=FakeEmbedder(),
                              pipeline=config)
        assert report.detected == len(LIBRARY) and report.embedded == report.faces
        faces = catalog.db.execute(
            "SELECT f.id, p.hash, f.x1, f.y1, f.x2, f.y2, f.crop FROM faces f JOIN photos p ON p.id = f.photo_id ORDER BY f.id"
        ).fetchall()
        vectors = catalog.db.execute("SELECT face_id, vector FROM embeddings ORDER BY face_id").fetchall()
        return faces, vectors

    one = content(1)
    assert content(3) == one and content(0) == one  # same ids, in the same order, same vectors


def test_compute_workers() -> None:
    import torch

    from facecluster.pipeline import compute_workers, threads_per_worker

    assert compute_workers(3, "cpu") == 3 and compute_workers(0, "cuda") == 1
    assert compute_workers(0, "cpu") == max(1, torch.get_num_threads())
    threads = torch.get_num_threads()
    assert threads_per_worker(1) == threads and threads_per_worker(10 * threads) == 1
    assert threads_per_worker(compute_workers(0, "cpu")) == 1  # the default: single-threaded workers


def test_workers_follow_the_detectors_device_when_the_first_batch_has_nothing_to_detect(
    library: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Four unreadable files sort first, so the first batch (4 x batch_size items) decodes nothing and the
    # detector factory is not called yet. The worker count used to be decided there all the same, from no
    # model at all ("cpu": one worker per CPU thread) although the detector then ran on a GPU.
    import facecluster.pipeline as pipeline

    for i in range(4):
        (library / f"0-junk-{i}.jpg").write_bytes(b"not an image")
    devices: list[str] = []
    real = pipeline.compute_workers
    monkeypatch.setattr(pipeline, "compute_workers", lambda setting, device: devices.append(device) or real(setting, device))

    class GpuDetector(FakeDetector):
        device = "cuda"

    catalog = Catalog.open(None)
    report = detect_paths(catalog, [library], lambda: GpuDetector(), crop=fake_crop, pipeline=PipelineConfig(batch_size=1))
    assert report.detected == len(LIBRARY) and len(report.failed) == 4
    assert devices == ["cuda"]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_crop_round_trip(fmt: str) -> None:
    crop = np.random.default_rng(0).integers(0, 255, (160, 160, 3), dtype=np.uint8)
    out = decode_crop(encode_crop(crop, PipelineConfig(crop_format=fmt)))
    assert out.shape == crop.shape
    if fmt == "png":
        assert (out == crop).all()


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_a_damaged_crop_is_one_plain_line(fmt: str) -> None:
    from facecluster.errors import ImageError

    blob = encode_crop(np.full((160, 160, 3), 90, dtype=np.uint8), PipelineConfig(crop_format=fmt))
    for damaged in (b"junk", blob[: len(blob) // 2]):
        with pytest.raises(ImageError) as info:
            decode_crop(damaged)
        assert "\n" not in str(info.value) and "object at 0x" not in str(info.value)


def test_read_path_list() -> None:
    assert read_path_list(b"a.jpg\n\n  \nb c.png\r\n") == [Path("a.jpg"), Path("b c.png")]
    assert read_path_list(b"last.jpg") == [Path("last.jpg")]  # no newline at the end


def test_read_path_list_nul_separated_and_not_utf8() -> None:
    # find -print0: names may hold newlines, spaces at either end, CR; only NUL separates them.
    assert read_path_list(b"new\nline.jpg\0 b.jpg\r\0\0c.png\0") == [
        Path("new\nline.jpg"), Path(" b.jpg\r"), Path("c.png")]
    # A Latin-1 name is kept as the file system would give it (surrogate escapes), not a decode error.
    assert read_path_list(b"caf\xe9.jpg\n") == [Path(os.fsdecode(b"caf\xe9.jpg"))]


# -- files that change between runs -------------------------------------------------------------------


def _face_of(catalog: Catalog, path: Path) -> list[int]:
    return [r[0] for r in catalog.db.execute(
        "SELECT f.id FROM faces f JOIN files fl ON fl.photo_id = f.photo_id WHERE fl.path = ? ORDER BY f.x1",
        [str(path)])]


def test_swapped_and_shifted_files_keep_their_faces(tmp_path: Path) -> None:
    from tests.fakes import make_photo

    lib = tmp_path / "lib"
    paths = [make_photo(lib / f"p{i}.png", [i]) for i in range(1, 4)]  # p1..p3, one identity each
    catalog = Catalog.open(None)
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    ids = {i: _face_of(catalog, p) for i, p in enumerate(paths, 1)}
    # Swap p1 and p2: p1's new content is only met again at p2, after p1's old photo lost its path.
    os.rename(paths[0], lib / "tmp.png"); os.rename(paths[1], paths[0]); os.rename(lib / "tmp.png", paths[1])
    detector = FakeDetector()
    report = detect_paths(catalog, [lib], detector, crop=fake_crop)
    assert detector.images == 0 and report.moved == 2 and not report.failed
    assert _face_of(catalog, paths[0]) == ids[2] and _face_of(catalog, paths[1]) == ids[1]
    # Shift the series by one and put a new photo first, as renaming tools do.
    for i in (3, 2, 1):
        os.rename(lib / f"p{i}.png", lib / f"p{i + 1}.png")
    make_photo(lib / "p1.png", [0])
    report = detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    assert report.detected == 1 and report.moved == 3 and not report.failed
    assert _face_of(catalog, lib / "p2.png") == ids[2] and _face_of(catalog, lib / "p4.png") == ids[3]
    assert catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0] == 4


def _detected_with_ada(root: Path, photo: Path) -> tuple[Catalog, list[int]]:
    """A catalog of ``root`` detected, and the first face of ``photo`` named Ada by the user: its face ids."""
    catalog = Catalog.open(None)
    detect_paths(catalog, [root], FakeDetector(), crop=fake_crop)
    before = _face_of(catalog, photo)
    conn = catalog.db.conn
    conn.execute("INSERT INTO people (id, name, created_at) VALUES (1, 'Ada', 'now')")
    conn.execute("UPDATE faces SET person_id = 1, person_source = 'user' WHERE id = ?", [before[0]])
    conn.commit()
    return catalog, before


def test_a_photo_whose_file_was_edited_keeps_face_ids_names_and_corrections(library: Path) -> None:
    from PIL import Image, PngImagePlugin

    photo = library / "2020" / "a2.png"  # identities 0 and 1
    catalog, before = _detected_with_ada(library, photo)
    conn = catalog.db.conn
    conn.execute("INSERT INTO people (id, name, created_at) VALUES (2, 'Bob', 'now')")
    conn.execute("INSERT INTO face_rejections (face_id, person_id, created_at) VALUES (?, 2, 'now')", [before[0]])
    conn.commit()
    # A photo manager writes a rating into the file: new bytes (new hash), the same pixels.
    info = PngImagePlugin.PngInfo()
    info.add_text("Rating", "5")
    with Image.open(photo) as image:
        image.load()
        image.save(photo, pnginfo=info)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.detected == 1
    assert _face_of(catalog, photo) == before
    assert conn.execute("SELECT person_id, person_source FROM faces WHERE id = ?", [before[0]]).fetchone() == (1, "user")
    assert conn.execute("SELECT count(*) FROM face_rejections").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == len(LIBRARY)  # the old photo is gone
    # Other faces at the same places (another photo saved over it) start afresh.
    from tests.fakes import make_photo

    make_photo(photo, [2, 3])
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert not set(_face_of(catalog, photo)) & set(before)
    assert conn.execute("SELECT count(*) FROM face_rejections").fetchone()[0] == 0


def _squares(path: Path, identities: list[int], left: int, top: int, size: tuple[int, int] = (160, 120)) -> None:
    """A grey photo with a 28-pixel square per identity, the first at (left, top), 36 pixels apart."""
    from PIL import Image

    from tests.fakes import BACKGROUND, PALETTE

    pixels = np.full((size[1], size[0], 3), BACKGROUND, dtype=np.uint8)
    for k, identity in enumerate(identities):
        pixels[top : top + 28, left + 36 * k : left + 36 * k + 28] = PALETTE[identity]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def test_a_cropped_photo_keeps_face_ids_names_and_corrections(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photos" / "group.png"
    _squares(photo, [0, 1, 2], left=30, top=40)
    catalog, before = _detected_with_ada(tmp_path / "photos", photo)
    conn = catalog.db.conn
    conn.execute("UPDATE faces SET ignored = 1 WHERE id = ?", [before[2]])
    conn.commit()
    # Cropped in a photo editor: 11 pixels off the left, 7 off the top, some off the right. Same faces.
    with Image.open(photo) as image:
        image.crop((11, 7, 150, 120)).save(photo)
    report = detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
    assert report.detected == 1 and report.removed_people == []
    assert _face_of(catalog, photo) == before
    assert conn.execute("SELECT x1, y1 FROM faces WHERE id = ?", [before[0]]).fetchone() == (19.0, 33.0)
    assert conn.execute("SELECT person_id, person_source FROM faces WHERE id = ?", [before[0]]).fetchone() == (1, "user")
    assert conn.execute("SELECT ignored FROM faces WHERE id = ?", [before[2]]).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == 1
    # Other faces a few pixels away (another photo saved under the name) start afresh; so do the same
    # faces moved farther than the photo's size changed (not a crop).
    _squares(photo, [3, 4, 5], left=21, top=35, size=(139, 113))
    detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
    assert not set(_face_of(catalog, photo)) & set(before)
    before = _face_of(catalog, photo)
    _squares(photo, [3, 4, 5], left=31, top=35, size=(139, 113))
    detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
    assert not set(_face_of(catalog, photo)) & set(before)


def _shaded(path: Path, seeds: list[int], size: tuple[int, int] = (200, 120)) -> None:
    """A grey photo with a 40-pixel face per seed, 60 pixels apart, shaded in the direction the seed picks
    (left to right, top to bottom, ..., in a colour odd seeds change), so that no face turned by a
    quarter, nor mirrored, crops like another seed's face or like itself."""
    from PIL import Image

    from tests.fakes import BACKGROUND

    pixels = np.full((size[1], size[0], 3), BACKGROUND, dtype=np.uint8)
    ramp = np.linspace(40, 220, 40)
    for k, seed in enumerate(seeds):
        red = [ramp[None, :], ramp[:, None], ramp[None, ::-1], ramp[::-1, None]][seed % 4] * np.ones((40, 40))
        face = np.stack([red, np.full((40, 40), 230.0 - 200 * (seed % 2)), 260 - red], axis=2)
        pixels[30 : 70, 20 + 60 * k : 60 + 60 * k] = face.astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.mark.parametrize("turns", [0, 1, 2, 3])
@pytest.mark.parametrize("scale", [1.0, 0.5, 1.6])
def test_framed_box_is_where_the_pixels_go(turns: int, scale: float) -> None:
    from PIL import Image

    from facecluster.pipeline import _framed_box, _frames

    pixels = np.zeros((40, 60), dtype=np.uint8)
    pixels[5:17, 30:38] = 255  # the box (30, 5, 38, 17) of a 60 x 40 photo
    image = Image.fromarray(pixels).rotate(-90 * turns, expand=True)  # PIL turns counter-clockwise
    image = image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.NEAREST)
    ys, xs = np.nonzero(np.asarray(image))
    assert _framed_box((30, 5, 38, 17), (60, 40), turns, scale) == pytest.approx(
        (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1), abs=1)
    expected = [] if (turns, scale) == (0, 1.0) else [(turns, scale)]
    assert [frame for frame in _frames((60, 40), image.size) if frame[0] == turns] == expected


@pytest.mark.parametrize("edit", ["turned", "turned back", "upside down", "exif orientation", "shrunk",
                                  "enlarged", "turned and shrunk"])
def test_a_rotated_or_resized_photo_keeps_face_ids_names_and_corrections(tmp_path: Path, edit: str) -> None:
    from PIL import Image

    photo = tmp_path / "photos" / "pair.png"
    _shaded(photo, [0, 1])
    catalog, before = _detected_with_ada(tmp_path / "photos", photo)
    conn = catalog.db.conn
    conn.execute("UPDATE faces SET ignored = 1 WHERE id = ?", [before[1]])
    conn.commit()
    with Image.open(photo) as image:
        image.load()
    if edit == "exif orientation":  # a lossless rotation: the same pixels, told to be shown turned
        exif = Image.Exif()
        exif[0x0112] = 6
        image.save(photo, exif=exif)
    else:
        turns = {"turned": 1, "turned back": 3, "upside down": 2, "turned and shrunk": 1}.get(edit, 0)
        scale = {"shrunk": 0.7, "enlarged": 1.5, "turned and shrunk": 0.8}.get(edit, 1.0)
        image = image.rotate(-90 * turns, expand=True)
        image.resize((round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS).save(photo)
    report = detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
    assert report.detected == 1 and report.removed_people == []
    assert sorted(_face_of(catalog, photo)) == sorted(before)
    assert conn.execute("SELECT person_id, person_source FROM faces WHERE id = ?", [before[0]]).fetchone() == (1, "user")
    assert conn.execute("SELECT ignored FROM faces WHERE id = ?", [before[1]]).fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == 1


def test_downhill_finds_the_minimum_of_a_bowl_as_brute_force_does() -> None:
    from facecluster.pipeline import _downhill

    rng = np.random.default_rng(0)
    for _ in range(50):
        cx, cy, a, b = rng.uniform(-8, 8), rng.uniform(-8, 8), rng.uniform(0.5, 3), rng.uniform(0.5, 3)

        def cost(x: int, y: int) -> float:
            return a * (x - cx) ** 2 + b * (y - cy) ** 2

        grid = [(x, y) for x in range(-20, 21) for y in range(-20, 21)]
        start = (int(rng.integers(-3, 4)), int(rng.integers(-3, 4)))
        assert _downhill(cost, start, steps=30) == min(grid, key=lambda k: cost(*k))
        # Out of steps it stops on the way, never somewhere costlier than the start.
        assert cost(*_downhill(cost, start, steps=1)) <= cost(*start)


class _Off(FakeDetector):
    """Boxes 6 px right, 5 px up and 8 px taller than the face: MTCNN's box of a face moves by that much
    when the photo around it is cropped (its image pyramid then samples the face elsewhere)."""

    def detect(self, images):  # type: ignore[no-untyped-def]
        from tests.fakes import FakeFace

        return [[FakeFace((f.box[0] + 6, f.box[1] - 9, f.box[2] + 6, f.box[3] - 1),
                          tuple((x + 6, y - 5) for x, y in f.landmarks), f.probability) for f in faces]
                for faces in super().detect(images)]


def test_a_cropped_photo_keeps_its_faces_although_the_detector_moves_several_pixels(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photos" / "pair.png"
    _shaded(photo, [0, 1])
    catalog, before = _detected_with_ada(tmp_path / "photos", photo)
    with Image.open(photo) as image:
        image.crop((13, 9, 190, 115)).save(photo)
    detect_paths(catalog, [tmp_path / "photos"], _Off(), crop=fake_crop)
    assert _face_of(catalog, photo) == before
    assert catalog.db.conn.execute("SELECT person_id FROM faces WHERE id = ?", [before[0]]).fetchone() == (1,)


def test_other_faces_where_a_turned_photo_would_show_them_start_afresh(tmp_path: Path) -> None:
    from PIL import Image

    photo = tmp_path / "photos" / "pair.png"
    _shaded(photo, [0, 1])
    catalog, before = _detected_with_ada(tmp_path / "photos", photo)
    # Another photo of the turned size, with faces just where the turned ones would be, shaded the other way.
    _shaded(photo, [2, 3])
    with Image.open(photo) as image:
        image.transpose(Image.Transpose.ROTATE_270).save(photo)
    detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
    after = _face_of(catalog, photo)
    assert len(after) == 2 and not set(after) & set(before)
    assert catalog.db.conn.execute("SELECT count(*) FROM people").fetchone()[0] == 0


def test_a_file_that_is_damaged_for_a_while_keeps_its_faces(library: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    photo = library / "2021" / "c2.png"
    before, good = _face_of(catalog, photo), photo.read_bytes()
    photo.write_bytes(good[:200])  # a half-finished sync
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert [Path(f.path).name for f in report.failed] == ["c2.png"]
    assert _face_of(catalog, photo) == before
    photo.write_bytes(good)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert not report.failed and report.detected == 0
    assert _face_of(catalog, photo) == before
    assert catalog.db.execute("SELECT error FROM files WHERE path = ?", [str(photo)]).fetchone() == (None,)


def test_copies_in_one_run_are_detected_once_and_removed_copies_are_forgotten(library: Path, tmp_path: Path) -> None:
    backup = tmp_path / "photos" / "backup"
    shutil.copytree(library / "2020", backup)
    (library / "link.png").symlink_to(library / "2021" / "c1.png")
    catalog = Catalog.open(None)
    detector = FakeDetector()
    report = detect_paths(catalog, [library], detector, crop=fake_crop)
    assert detector.images == len(LIBRARY) and report.detected == len(LIBRARY)
    assert report.faces == sum(len(v) for v in LIBRARY.values()) == _faces(catalog)
    assert report.copies == 5 and report.moved == 0  # the four copies in backup/ and the link: linked
    shutil.rmtree(backup)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    paths = [r[0] for r in catalog.db.execute("SELECT path FROM photos")] + \
            [r[0] for r in catalog.db.execute("SELECT path FROM files")]
    assert all(Path(p).exists() for p in paths)  # faces point at files that exist
    assert _faces(catalog) == sum(len(v) for v in LIBRARY.values())


def test_a_file_renamed_then_overwritten_leaves_no_ghost_faces(tmp_path: Path) -> None:
    from tests.fakes import make_photo

    lib = tmp_path / "lib"
    make_photo(lib / "a.png", [0])
    catalog = Catalog.open(None)
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    os.rename(lib / "a.png", lib / "b.png")
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    make_photo(lib / "b.png", [1, 2])
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    assert catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0] == 1
    assert _faces(catalog) == 2


def test_a_touched_file_is_unchanged_not_moved(library: Path) -> None:
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    photo = library / "2020" / "a1.png"
    os.utime(photo, (1e9, 1e9))
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.skipped == len(LIBRARY) and report.moved == 0 and report.detected == 0


def test_cluster_sizes_follow_faces_deleted_by_detect(library: Path) -> None:
    from tests.fakes import make_photo

    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop, embedder=FakeEmbedder())
    conn = catalog.db.conn
    conn.execute("INSERT INTO clusters (id, model_id, size, created_at) VALUES (1, 'fake:0001', 2, 'now')")
    conn.execute("UPDATE faces SET cluster_id = 1 WHERE photo_id IN (SELECT photo_id FROM files WHERE path LIKE '%/c2.png' "
                 "OR path LIKE '%/c1.png')")
    conn.execute("UPDATE clusters SET size = (SELECT count(*) FROM faces WHERE cluster_id = 1)")
    conn.commit()
    make_photo(library / "2021" / "c2.png", [])  # its two faces are gone
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert conn.execute("SELECT size FROM clusters WHERE id = 1").fetchone() == (1,)


def test_a_photo_left_without_a_path_by_an_interrupted_run_is_forgotten(library: Path) -> None:
    from tests.fakes import make_photo

    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    conn = catalog.db.conn
    orphan = conn.execute("SELECT photo_id FROM files WHERE path LIKE '%/d1.png'").fetchone()[0]
    # A run stopped after d1.png's path took other content, before that content's old path was reached;
    # meanwhile d1.png's content was deleted.
    conn.execute("DELETE FROM files WHERE photo_id = ?", [orphan])
    conn.commit()
    (library / "2021" / "d1.png").unlink()
    make_photo(library / "new.png", [1])
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert conn.execute("SELECT count(*) FROM photos WHERE id = ?", [orphan]).fetchone()[0] == 0


def test_photos_deleted_from_the_folders_walked_are_counted_and_keep_their_faces(library: Path) -> None:
    catalog = Catalog.open(None)
    assert detect_paths(catalog, [library], FakeDetector(), crop=fake_crop).missing == 0
    faces = catalog.db.execute("SELECT count(*) FROM faces").fetchone()[0]
    (library / "2021" / "d1.png").unlink()
    (library / "2020" / "trip" / "b1.png").unlink()
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.missing == 2 and report.skipped == len(LIBRARY) - 2
    assert catalog.db.execute("SELECT count(*) FROM faces").fetchone()[0] == faces  # kept: maybe a disk unplugged
    # Counted once when a folder and one inside it are both given; not at all where they were not walked.
    assert detect_paths(catalog, [library, library / "2021"], FakeDetector(), crop=fake_crop).missing == 2
    assert detect_paths(catalog, [library / "2020" / "a1.png"], FakeDetector(), crop=fake_crop).missing == 0


def test_files_the_walk_does_not_yield_and_files_that_never_decoded_are_not_missing(library: Path) -> None:
    from tests.fakes import make_photo

    catalog = Catalog.open(None)
    hidden = make_photo(library / ".hidden" / "h.png", [5])  # walks skip hidden folders; given by name, recorded
    (library / "2021" / "broken.png").write_text("not an image")
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    detect_paths(catalog, [hidden], FakeDetector(), crop=fake_crop)
    assert detect_paths(catalog, [library], FakeDetector(), crop=fake_crop).missing == 0
    assert catalog.db.execute("SELECT count(*) FROM files WHERE path = ?", [str(hidden)]).fetchone()[0] == 1
    (library / "2021" / "broken.png").unlink()  # it had no faces to keep
    assert detect_paths(catalog, [library], FakeDetector(), crop=fake_crop).missing == 0


def test_folders_that_could_not_be_listed_are_not_taken_for_deleted(library: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    backup = tmp_path / "photos" / "backup"
    shutil.copytree(library / "2020", backup)
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    real_scandir = os.scandir

    def scandir(path):  # type: ignore[no-untyped-def]
        if Path(path).name == "backup":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert catalog.db.execute("SELECT count(*) FROM files WHERE path LIKE '%/backup/%'").fetchone()[0] == 4


def test_a_deleted_copy_outside_the_folders_walked_is_not_shown_as_the_photo(library: Path, tmp_path: Path) -> None:
    backup = tmp_path / "backup"
    shutil.copytree(library, backup)
    catalog = Catalog.open(None)
    detect_paths(catalog, [backup], FakeDetector(), crop=fake_crop)  # the photos are first met in the backup
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.copies == len(LIBRARY) and report.moved == 0
    paths = [r[0] for r in catalog.db.execute("SELECT path FROM photos")]
    assert all(p.startswith(str(backup)) for p in paths)  # a copy does not change where a photo is shown
    shutil.rmtree(backup)
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert report.skipped == len(LIBRARY)
    paths = [r[0] for r in catalog.db.execute("SELECT path FROM photos")]
    assert all(Path(p).exists() for p in paths)


class _Jittery(FakeDetector):
    """Boxes (and landmarks) 2 px to the right: a real detector moves by a pixel or two on a re-saved photo."""

    def detect(self, images):  # type: ignore[no-untyped-def]
        from tests.fakes import FakeFace

        return [[FakeFace((f.box[0] + 2, f.box[1], f.box[2] + 2, f.box[3]),
                          tuple((x + 2, y) for x, y in f.landmarks), f.probability) for f in faces]
                for faces in super().detect(images)]


def test_a_re_saved_photo_keeps_its_faces_although_the_detector_moves_a_little(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    from tests.fakes import BACKGROUND

    # A face with fine texture (as real faces have: eyelashes, hair): 2 px stripes, so a 2 px shift
    # changes its crop more than another face would.
    pixels = np.full((96, 96, 3), BACKGROUND, dtype=np.int16)
    pixels[20:60, 10:50] = (220, 40, 40)
    for x in range(12, 50, 4):
        pixels[20:60, x:x + 2] = (40, 40, 220)
    photo = tmp_path / "lib" / "p.png"
    photo.parent.mkdir()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(photo)
    catalog = Catalog.open(None)
    detect_paths(catalog, [photo.parent], FakeDetector(), crop=fake_crop)
    (before,) = _face_of(catalog, photo)
    info = PngImagePlugin.PngInfo()
    info.add_text("Rating", "4")
    with Image.open(photo) as image:
        image.load()
        image.save(photo, pnginfo=info)
    detect_paths(catalog, [photo.parent], _Jittery(), crop=fake_crop)
    assert _face_of(catalog, photo) == [before]


def test_a_person_whose_last_face_went_with_its_photo_is_removed(library: Path) -> None:
    from tests.fakes import make_photo

    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    (face,) = _face_of(catalog, library / "2021" / "d1.png")
    conn = catalog.db.conn
    conn.execute("INSERT INTO models (id, kind, dim, created_at) VALUES ('m', 'pretrained', 2, 'now')")
    conn.execute("INSERT INTO people (id, name, created_at) VALUES (1, 'Solo', 'now')")
    conn.execute("INSERT INTO clusters (id, model_id, person_id, size, created_at) VALUES (7, 'm', 1, 1, 'now')")
    conn.execute("UPDATE faces SET person_id = 1, person_source = 'user', cluster_id = 7 WHERE id = ?", [face])
    conn.commit()
    make_photo(library / "2021" / "d1.png", [], colour=None)  # another picture, without a face
    report = detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert conn.execute("SELECT count(*) FROM people").fetchone()[0] == 0
    assert report.removed_people == ["Solo"] and report.to_dict()["removed_people"] == ["Solo"]
    assert conn.execute("SELECT count(*) FROM clusters").fetchone()[0] == 0


def test_an_edited_photo_keeps_its_faces_when_the_run_is_interrupted(library: Path) -> None:
    from PIL import Image, PngImagePlugin

    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    edited = [library / "2020" / "a2.png", library / "2021" / "c2.png"]
    before = [_face_of(catalog, photo) for photo in edited]
    conn = catalog.db.conn
    conn.execute("INSERT INTO people (id, name, created_at) VALUES (1, 'Ada', 'now')")
    conn.execute("UPDATE faces SET person_id = 1, person_source = 'user' WHERE id = ?", [before[0][0]])
    conn.commit()
    for photo in edited:
        info = PngImagePlugin.PngInfo()
        info.add_text("Rating", "5")
        with Image.open(photo) as image:
            image.load()
            image.save(photo, pnginfo=info)

    class Interrupting(FakeDetector):
        def detect(self, images):  # type: ignore[no-untyped-def]
            if self.calls == 1:
                raise KeyboardInterrupt  # after the first edited photo's batch was written
            return super().detect(images)

    with pytest.raises(KeyboardInterrupt):
        detect_paths(catalog, [library], Interrupting(), crop=fake_crop, pipeline=PipelineConfig(batch_size=1, workers=1))
    conn.rollback()
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    assert [_face_of(catalog, photo) for photo in edited] == before
    assert conn.execute("SELECT person_id FROM faces WHERE id = ?", [before[0][0]]).fetchone() == (1,)


def test_a_photo_whose_faces_were_carried_to_a_look_alike_is_detected_again_where_it_turns_up(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    from tests.fakes import make_photo

    lib = tmp_path / "lib"
    a = make_photo(lib / "a.png", [0])
    catalog = Catalog.open(None)
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    (face,) = _face_of(catalog, a)
    os.rename(a, lib / "c.png")  # a.png is renamed, and a re-tagged copy of it takes its old name
    info = PngImagePlugin.PngInfo()
    info.add_text("Rating", "5")
    with Image.open(lib / "c.png") as image:
        image.load()
        image.save(a, pnginfo=info)
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    assert _face_of(catalog, a) == [face]  # a.png was met first: the face went to the look-alike
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    assert len(_face_of(catalog, lib / "c.png")) == 1  # c.png, linked to the emptied photo, is detected again


def test_a_read_that_never_returns_does_not_keep_the_process_alive_after_ctrl_c(tmp_path: Path) -> None:
    # A hung network share: the reader thread never comes back. Ctrl-C stops the command, and the
    # process must then exit rather than wait at shutdown for that thread.
    import signal
    import subprocess
    import sys
    import textwrap

    child = textwrap.dedent(f"""
        import threading
        from pathlib import Path
        from facecluster import pipeline

        def hung(path, *args):
            print("reading", flush=True)
            threading.Event().wait()   # never returns

        pipeline._prepare = hung
        try:
            for item in pipeline._prefetched([Path({str(tmp_path / 'a.jpg')!r})], frozenset(), 1000, False, 2):
                pass
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == "reading\n"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    finally:
        proc.kill()
    assert rc == 0 and proc.stdout.read() == "interrupted\n"


# -- content checks: --checksum, and files recorded in the second they were written ------------------------

#: An mtime long before any test run (2001): a file with it was clearly written before it was recorded.
OLD = 1_000_000_000


def _aged(*paths: Path) -> None:
    for path in paths:
        os.utime(path, (OLD, OLD))


def _rewritten_keeping_size_and_mtime(path: Path, write) -> None:
    """Call ``write()`` to change ``path``'s bytes, then restore its mtime (as ``touch -r`` or a backup
    restore would); the new file must have the old size."""
    before = path.stat()
    write()
    assert path.stat().st_size == before.st_size
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert path.stat().st_mtime == before.st_mtime


def _counted_hashes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from facecluster import images

    hashed: list[Path] = []
    real = images.file_hash

    def counting(path: Path) -> str:
        hashed.append(Path(path))
        return real(path)

    monkeypatch.setattr(images, "file_hash", counting)
    return hashed


def test_checksum_notices_an_edit_that_kept_size_and_mtime(tmp_path: Path) -> None:
    from tests.fakes import make_photo

    lib = tmp_path / "lib"
    photos = [make_photo(lib / f"p{i}.bmp", [i]) for i in range(3)]  # BMP: other pixels, the same size
    _aged(*photos)
    catalog = Catalog.open(None)
    detect_paths(catalog, [lib], FakeDetector(), crop=fake_crop)
    _rewritten_keeping_size_and_mtime(photos[0], lambda: make_photo(photos[0], [3, 4]))
    detector = FakeDetector()
    report = detect_paths(catalog, [lib], detector, crop=fake_crop)
    assert report.skipped == 3 and detector.images == 0 and _faces(catalog) == 3  # size and mtime alone: missed
    report = detect_paths(catalog, [lib], detector, crop=fake_crop, checksum=True)
    assert report.detected == 1 and detector.images == 1 and report.skipped == 2
    assert (report.checked, report.checked_changed) == (3, 1)
    assert len(_face_of(catalog, photos[0])) == 2 and _faces(catalog) == 4
    assert catalog.db.execute("SELECT count(*) FROM photos").fetchone()[0] == 3  # the old content is gone
    report = detect_paths(catalog, [lib], detector, crop=fake_crop, checksum=True)
    assert (report.skipped, report.checked, report.checked_changed, detector.images) == (3, 3, 0, 1)


def test_checksum_hashes_unchanged_files_and_detects_none(library: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _aged(*(p for p in library.rglob("*") if p.is_file()))
    catalog = Catalog.open(None)
    detect_paths(catalog, [library], FakeDetector(), crop=fake_crop)
    hashed = _counted_hashes(monkeypatch)
    detector = FakeDetector()
    report = detect_paths(catalog, [library], detector, crop=fake_crop)
    assert report.skipped == len(LIBRARY) and report.checked == 0 and not hashed  # the default reads nothing
    built: list[int] = []

    def factory() -> FakeDetector:
        built.append(1)
        return detector

    reports: list[tuple[str, int, int | None]] = []
    report = detect_paths(catalog, [library], factory, crop=fake_crop, checksum=True,
                          progress=lambda *r: reports.append(r))
    assert report.skipped == len(LIBRARY) and report.detected == 0 and report.moved == 0
    # Hashing reports as its own stage, and detection begins with what hashing found unchanged, so the
    # files hashed never count as photos detected (the bars' rate).
    n = len(LIBRARY)
    assert reports[0] == ("hash", 1, n) and reports[n - 1] == ("hash", n, n) and reports[n] == ("detect", n, n)
    assert (report.checked, report.checked_changed) == (len(LIBRARY), 0)
    assert detector.calls == 0 and not built  # only the hashes were paid for, not the model
    assert sorted(hashed) == sorted(p for p in library.rglob("*") if p.is_file())  # each file read once


def test_checksum_keeps_names_when_an_edit_of_the_same_size_leaves_the_faces_alone(tmp_path: Path) -> None:
    from PIL import Image, PngImagePlugin

    from tests.fakes import make_photo

    def rated(path: Path, stars: str) -> None:  # a photo manager writes a rating into the file
        info = PngImagePlugin.PngInfo()
        info.add_text("Rating", stars)
        with Image.open(path) as image:
            image.load()
            image.save(path, pnginfo=info)

    photo = make_photo(tmp_path / "lib" / "a.png", [0, 1])
    rated(photo, "4")
    _aged(photo)
    catalog, before = _detected_with_ada(photo.parent, photo)
    _rewritten_keeping_size_and_mtime(photo, lambda: rated(photo, "5"))
    detector = FakeDetector()
    assert detect_paths(catalog, [photo.parent], detector, crop=fake_crop).skipped == 1 and detector.images == 0
    report = detect_paths(catalog, [photo.parent], detector, crop=fake_crop, checksum=True)
    assert report.detected == 1 and report.checked_changed == 1
    assert _face_of(catalog, photo) == before
    conn = catalog.db.conn
    assert conn.execute("SELECT person_id, person_source FROM faces WHERE id = ?", [before[0]]).fetchone() == (1, "user")
    assert conn.execute("SELECT count(*) FROM photos").fetchone()[0] == 1


def test_a_file_edited_in_the_second_it_was_recorded_is_checked_by_content(tmp_path: Path) -> None:
    # Git's "racy clean" files: written so soon after it was read that a second write may keep its mtime
    # (whole seconds on some file systems, 2 s on FAT). Such a file is hashed even without --checksum.
    from tests.fakes import make_photo

    photo = make_photo(tmp_path / "lib" / "a.bmp", [0])  # written now, and recorded now
    catalog = Catalog.open(None)
    detect_paths(catalog, [photo.parent], FakeDetector(), crop=fake_crop)
    _rewritten_keeping_size_and_mtime(photo, lambda: make_photo(photo, [1]))
    detector = FakeDetector()
    report = detect_paths(catalog, [photo.parent], detector, crop=fake_crop)
    assert report.detected == 1 and detector.images == 1 and (report.checked, report.checked_changed) == (1, 1)


def test_a_file_found_unchanged_by_its_hash_is_recorded_as_read_then(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from facecluster.migrations import timestamp
    from tests.fakes import make_photo

    photo = make_photo(tmp_path / "lib" / "a.bmp", [0])
    _aged(photo)
    catalog = Catalog.open(None)
    detect_paths(catalog, [photo.parent], FakeDetector(), crop=fake_crop)
    # As if it had been read in the second its mtime says it was written.
    catalog.db.conn.execute("UPDATE files SET seen_at = ?", [timestamp(OLD)])
    catalog.db.conn.commit()
    hashed = _counted_hashes(monkeypatch)
    report = detect_paths(catalog, [photo.parent], FakeDetector(), crop=fake_crop)
    assert (report.skipped, report.checked, report.checked_changed, len(hashed)) == (1, 1, 0, 1)
    report = detect_paths(catalog, [photo.parent], FakeDetector(), crop=fake_crop)
    assert (report.skipped, report.checked, len(hashed)) == (1, 0, 1)  # now clearly older: not read again


def test_files_are_recorded_as_seen_when_they_were_read_not_when_their_batch_was_written(
        tmp_path: Path) -> None:
    # A slow batch (a big photo on a CPU) writes its rows long after its files were read; a file written
    # between the two must still be recognised as possibly changed since.
    import time
    from datetime import datetime

    from tests.fakes import make_photo

    photo = make_photo(tmp_path / "lib" / "a.bmp", [0])

    class Slow(FakeDetector):
        def detect(self, images):
            time.sleep(2.0)  # floor(read + 2) > read + 1, whatever the fraction of read
            return super().detect(images)

    read = time.time()
    catalog = Catalog.open(None)
    detect_paths(catalog, [photo.parent], Slow(), crop=fake_crop)
    (seen_at,) = catalog.db.execute("SELECT seen_at FROM files").fetchone()
    assert datetime.fromisoformat(seen_at).timestamp() <= read + 1

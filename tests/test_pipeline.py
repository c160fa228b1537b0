"""detect_paths / embed_pending over a generated library with fake models."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from facecluster.catalog import Catalog
from facecluster.config import PipelineConfig
from facecluster.pipeline import decode_crop, detect_paths, embed_pending, encode_crop, read_path_list
from tests.fakes import LIBRARY, FakeDetector, FakeEmbedder, fake_crop, make_library


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
    assert read_path_list(["a.jpg\n", "\n", "b c.png\r\n"]) == [Path("a.jpg"), Path("b c.png")]

"""facecluster.images: finding photos, decoding every format and every kind of bad file (generated in tmp_path)."""

from __future__ import annotations

import hashlib
import struct
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from facecluster.errors import ImageError
from facecluster.images import SUPPORTED_SUFFIXES, LoadedImage, file_hash, iter_image_files, load_image
from tests.fakes import unblocked_fifo


def _photo(h: int = 60, w: int = 80) -> np.ndarray:
    # A smooth colour gradient: survives JPEG compression, so decoded colours can be compared.
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 128)]).astype(np.uint8)


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _png_header_only(path: Path, width: int, height: int) -> None:
    # A valid 1-bit PNG of width × height made of zeros, written row by row: ~50 kB for 20000², no big buffer.
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    comp = zlib.compressobj()
    row = b"\0" * (1 + (width + 7) // 8)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b""))


def test_supported_suffixes() -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"} == SUPPORTED_SUFFIXES


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".bmp", ".gif"])
def test_formats_decode_to_rgb_uint8(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"photo{suffix}"
    Image.fromarray(_photo()).save(path)
    image = load_image(path)
    assert isinstance(image, LoadedImage)
    assert image.pixels.shape == (60, 80, 3) and image.pixels.dtype == np.uint8
    assert (image.width, image.height, image.orientation, image.scale) == (80, 60, 1, 1.0)
    tolerance = 40 if suffix == ".gif" else 12  # GIF quantises to a palette
    assert np.abs(image.pixels.astype(int) - _photo()).mean() < tolerance


def test_uppercase_suffix_and_heic(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "IMG_0001.HEIC"
    pillow_heif.from_pillow(Image.fromarray(_photo())).save(path, quality=90)
    image = load_image(path)
    assert image.pixels.shape == (60, 80, 3)
    assert np.abs(image.pixels.astype(int) - _photo()).mean() < 12


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_makes_the_photo_upright(tmp_path: Path, orientation: int) -> None:
    upright = _photo(40, 64)
    # Store the photo as a camera would: the sensor's pixels plus the tag that says how to turn them.
    inverse = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 8, 7: 7, 8: 6}[orientation]
    stored = Image.fromarray(upright)
    if inverse != 1:
        stored = stored.transpose(
            {
                2: Image.Transpose.FLIP_LEFT_RIGHT,
                3: Image.Transpose.ROTATE_180,
                4: Image.Transpose.FLIP_TOP_BOTTOM,
                5: Image.Transpose.TRANSPOSE,
                6: Image.Transpose.ROTATE_270,
                7: Image.Transpose.TRANSVERSE,
                8: Image.Transpose.ROTATE_90,
            }[inverse]
        )
    path = tmp_path / f"o{orientation}.png"
    stored.save(path, exif=_exif(orientation))
    image = load_image(path)
    assert image.orientation == orientation
    assert (image.width, image.height) == (64, 40)
    np.testing.assert_array_equal(image.pixels, upright)


def test_large_jpeg_is_decoded_at_reduced_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.jpg"
    Image.fromarray(np.kron(_photo(30, 40), np.ones((100, 100, 1), np.uint8))).save(path, quality=80)  # 4000×3000
    decoded_sizes: list[tuple[int, int]] = []
    original_load = JpegImagePlugin.JpegImageFile.load

    def spy(self: JpegImagePlugin.JpegImageFile):  # type: ignore[no-untyped-def]
        decoded_sizes.append(self.size)
        return original_load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    image = load_image(path, max_side=1600)
    assert set(decoded_sizes) == {(2000, 1500)}  # JPEG draft at 1/2: never the full 4000×3000
    assert image.pixels.shape == (1200, 1600, 3)
    assert (image.width, image.height, image.scale) == (4000, 3000, 0.4)


def test_downscale_keeps_orientation_and_scale(tmp_path: Path) -> None:
    path = tmp_path / "portrait.jpg"
    Image.fromarray(_photo(300, 400)).save(path, exif=_exif(6))  # stored landscape, shown portrait
    image = load_image(path, max_side=200)
    assert (image.width, image.height) == (300, 400)
    assert image.pixels.shape == (200, 150, 3)
    assert image.scale == pytest.approx(0.5)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.linspace(0, 65535, 64 * 32).reshape(32, 64).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    image = load_image(path)
    expected = np.rint(values / 257).astype(np.uint8)
    np.testing.assert_array_equal(image.pixels[..., 0], expected)
    assert image.pixels.min() == 0 and image.pixels.max() == 255
    assert 100 < image.pixels.mean() < 155  # a clipped conversion would be almost all white


def test_cmyk_greyscale_palette_and_alpha(tmp_path: Path) -> None:
    photo = _photo()
    Image.fromarray(photo).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=95)
    Image.fromarray(photo).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(photo).convert("P").save(tmp_path / "palette.png")
    rgba = np.dstack([photo, np.zeros(photo.shape[:2], np.uint8)])
    rgba[:, :40, 3] = 255  # left half opaque, right half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")

    assert np.abs(load_image(tmp_path / "cmyk.jpg").pixels.astype(int) - photo).mean() < 12
    grey = load_image(tmp_path / "grey.png").pixels
    assert grey.shape == (60, 80, 3) and (grey[..., 0] == grey[..., 2]).all()
    assert np.abs(load_image(tmp_path / "palette.png").pixels.astype(int) - photo).mean() < 40
    alpha = load_image(tmp_path / "alpha.png").pixels
    np.testing.assert_array_equal(alpha[:, :40], photo[:, :40])
    assert (alpha[:, 40:] == 255).all()  # transparent -> white


def test_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 10), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    pixels = load_image(tmp_path / "anim.gif").pixels
    assert tuple(pixels[5, 5]) == (255, 0, 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_text("this is not a photo\n"), "not an image file"),
        (lambda p: None, "no such file"),
    ],
)
def test_bad_files_raise_one_line_image_errors(tmp_path: Path, make: object, message: str) -> None:
    path = tmp_path / "bad.jpg"
    make(path)  # type: ignore[operator]
    with pytest.raises(ImageError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value)


def test_truncated_and_corrupt_jpeg(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(_photo(200, 200)).save(good, quality=90)
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.jpg").write_bytes(data[:20] + bytes(range(256)) * 4)
    for name in ("truncated.jpg", "garbage.jpg"):
        with pytest.raises(ImageError) as info:
            load_image(tmp_path / name)
        assert str(info.value).startswith(name) and "\n" not in str(info.value)


def test_directory_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()
    with pytest.raises(ImageError, match="is a directory"):
        load_image(folder)
    with pytest.raises(ImageError, match="is a directory"):
        file_hash(folder)


def test_broken_exif_block_is_upright_and_silent(tmp_path: Path) -> None:
    # An APP1 "Exif" segment whose first IFD claims more entries than it holds: Pillow warns "Corrupt EXIF
    # data" (two lines with a site-packages path on stderr); the photo must load, upright, without a word.
    good = tmp_path / "good.jpg"
    Image.fromarray(_photo()).save(good, quality=90)
    data = good.read_bytes()
    payload = b"Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\xff\xff" + bytes(range(40))
    app1 = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[:2] + app1 + data[2:])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        image = load_image(broken)
    assert [str(w.message) for w in caught] == []
    assert image.orientation == 1 and image.pixels.shape == (60, 80, 3)


def test_decoding_in_two_threads_stays_silent_and_leaves_the_warning_filters_as_they_were(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # detect decodes in two prefetch threads. warnings.catch_warnings is not thread-safe: when the first
    # decode finished while the second was still running, it put the old filters back under the second
    # (whose Pillow warning then printed) and the second then left "ignore every warning" in place for the
    # rest of the process.
    import threading

    from facecluster import images

    Image.fromarray(_photo()).save(tmp_path / "a.jpg", quality=90)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    decode = images._decode

    def interleaved(image, name, *args):  # type: ignore[no-untyped-def]
        if threading.current_thread().name == "first":
            first_in.set()
            second_in.wait(5)
        else:
            second_in.set()
            first_out.wait(5)  # the first decode has finished by now
            warnings.warn("Corrupt EXIF data", UserWarning)  # as Pillow warns
        return decode(image, name, *args)

    monkeypatch.setattr(images, "_decode", interleaved)

    def first() -> None:
        load_image(tmp_path / "a.jpg")
        first_out.set()

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        threads = [threading.Thread(target=first, name="first")]
        threads[0].start()
        assert first_in.wait(5)
        threads.append(threading.Thread(target=load_image, args=(tmp_path / "a.jpg",), name="second"))
        threads[1].start()
        for thread in threads:
            thread.join(10)
        after = list(warnings.filters)
    assert first_out.is_set() and not any(t.is_alive() for t in threads)
    assert [str(w.message) for w in caught] == []
    assert after == before


def test_only_photo_formats_are_decoded_whatever_the_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow would open ~40 formats by content; an EPS file named .jpg runs Ghostscript on it (an external
    # interpreter fed an untrusted file from the photo folder). Only the formats of SUPPORTED_SUFFIXES
    # are tried: the rest is "not an image file in a supported format", and Ghostscript is never looked for.
    from PIL import EpsImagePlugin

    looked_for = []
    monkeypatch.setattr(EpsImagePlugin, "has_ghostscript", lambda: looked_for.append(1) or True)
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *a, **k: looked_for.append(2) or None)
    photo = Image.fromarray(_photo())
    photo.save(tmp_path / "eps.jpg", "EPS")
    photo.save(tmp_path / "icon.jpg", "ICO")
    photo.convert("L").save(tmp_path / "pgm.png", "PPM")
    for name in ("eps.jpg", "icon.jpg", "pgm.png"):
        with pytest.raises(ImageError, match="not an image file in a supported format$"):
            load_image(tmp_path / name)
    assert looked_for == []
    photo.save(tmp_path / "png_named.jpg", "PNG")  # a supported format under another supported suffix is fine
    assert load_image(tmp_path / "png_named.jpg").pixels.shape == (60, 80, 3)


def test_fifo_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    # A FIFO named x.jpg (or a link to /dev/zero) must not hang the run: open() of a FIFO waits for a
    # writer, and reading a device never ends.
    with unblocked_fifo(tmp_path / "x.jpg") as fifo:
        started = time.monotonic()
        for read in (load_image, file_hash):
            with pytest.raises(ImageError, match="not a regular file") as info:
                read(fifo)
            assert str(info.value).startswith("x.jpg: ") and "\n" not in str(info.value)
        assert time.monotonic() - started < 5
    if Path("/dev/zero").exists():
        (tmp_path / "zero.jpg").symlink_to("/dev/zero")
        for read in (load_image, file_hash):
            with pytest.raises(ImageError, match="not a regular file"):
                read(tmp_path / "zero.jpg")


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    _png_header_only(path, 20000, 20000)
    assert path.stat().st_size < 200_000
    with pytest.raises(ImageError, match="too large"):
        load_image(path, max_side=1600)
    small = tmp_path / "small.png"
    Image.fromarray(_photo()).save(small)
    with pytest.raises(ImageError, match="too large"):
        load_image(small, max_pixels=1000)  # our own limit applies below Pillow's


def test_iter_image_files_walks_sorted_and_skips_hidden(tmp_path: Path) -> None:
    for rel in ["b/2.JPG", "b/1.png", "a.heic", ".hidden/x.jpg", "b/._resource.jpg", "notes.txt", "c/d/e.webp"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in iter_image_files([tmp_path])]
    assert found == ["a.heic", "b/1.png", "b/2.JPG", "c/d/e.webp"]
    assert list(iter_image_files([tmp_path / "b" / "1.png", tmp_path / "notes.txt"])) == [tmp_path / "b" / "1.png"]
    assert list(iter_image_files([tmp_path / "missing"])) == []


def test_file_hash_streams_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    data = np.random.default_rng(0).bytes(3 * (1 << 20) + 17)  # spans several read blocks
    path.write_bytes(data)
    assert file_hash(path) == hashlib.sha256(data).hexdigest()
    with pytest.raises(ImageError, match="no such file"):
        file_hash(tmp_path / "missing.jpg")

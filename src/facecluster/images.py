"""Finding photos and decoding them for detection: EXIF orientation, reduced-size decoding, odd formats.

Every photo becomes an HxWx3 uint8 RGB array, upright, at most ``max_side`` pixels on its longer side;
a file that cannot be used raises ``ImageError`` with one line saying why::

    for path in iter_image_files([Path("~/Pictures").expanduser()]):
        image = load_image(path, max_side=1600)
        image.pixels.shape, image.width, image.height, image.scale
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import unicodedata
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecluster.config import DetectConfig
from facecluster.errors import ImageError

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".heic", ".heif"}
)
_HEIF_SUFFIXES = frozenset({".heic", ".heif"})
# The Pillow formats tried, whatever a file is named: those of SUPPORTED_SUFFIXES (MPO, a phone's JPEG
# with extra pictures, opens as JPEG). Pillow alone would try ~40 by content, EPS among them, which hands
# the file to Ghostscript, an interpreter we do not want to feed a file from a photo folder.
_PHOTO_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF")
_ORIENTATION_TAG = 0x0112
# EXIF orientation -> the Pillow transpose that makes the photo upright (2..8; 1 is already upright).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_heif_lock = threading.Lock()
_heif_registered = False
_quiet_lock = threading.Lock()
_quiet_decodes = 0  # decodes in progress, in every thread, while warnings are ignored
_filters_before: list[Any] = []  # warnings.filters as the first of them found it


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo ready for detection.

    ``pixels`` is HxWx3 uint8 RGB with EXIF orientation applied, possibly downscaled; ``width``/``height``
    are the full-size dimensions after orientation; ``scale = pixels.shape[1] / width`` (<= 1): divide
    coordinates found in ``pixels`` by it for full-size ones. Example::

        LoadedImage(pixels=np.zeros((1200, 1600, 3), np.uint8), width=4000, height=3000, orientation=1, scale=0.4)
    """

    pixels: np.ndarray
    width: int
    height: int
    orientation: int
    scale: float


def load_image(path: Path, max_side: int | None = None, *, max_pixels: int = DetectConfig().max_pixels) -> LoadedImage:
    """Decode ``path`` to an upright RGB array, at most ``max_side`` px on its longer side.

    JPEGs are decoded at 1/2, 1/4 or 1/8 size when that still covers ``max_side`` (a 4000×3000 photo asked at
    1600 px is decoded at 2000×1500, never in full). 16-bit images are scaled to 8 bits, CMYK and greyscale
    converted, transparency composited on white, GIFs give their first frame, HEIC/HEIF need pillow-heif.
    Images of more than ``max_pixels`` pixels are refused before decoding. Raises ``ImageError`` (one line)
    for anything unusable. Example::

        image = load_image(Path("IMG_0001.jpg"), max_side=1600)
    """
    path = Path(path)
    name = path.name
    with open_regular(path) as handle:  # never a FIFO or a device: opening or reading those blocks
        if os.fstat(handle.fileno()).st_size == 0:
            raise ImageError("empty file (0 bytes)", name)
        return _load_open(handle, path, max_side, max_pixels)


def _load_open(handle: BinaryIO, path: Path, max_side: int | None, max_pixels: int) -> LoadedImage:
    # ``load_image`` once the file is open: every decoder failure becomes one ImageError line.
    name = path.name
    if path.suffix.lower() in _HEIF_SUFFIXES:
        _register_heif()
    try:
        # Pillow's warnings (DecompressionBombWarning: we enforce our own pixel limit below; "Corrupt EXIF
        # data": the photo is then taken as upright; "Palette images with Transparency ...") would only put
        # two lines with a site-packages path on stderr: the photo either decodes or raises ImageError.
        with _warnings_off():
            with Image.open(handle, formats=_open_formats()) as image:
                return _decode(image, name, max_side, max_pixels)
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError(f"image too large to decode safely (over {max_pixels:,} pixels)", name) from None
    except UnidentifiedImageError:
        hint = " (HEIC/HEIF needs pillow-heif)" if path.suffix.lower() in _HEIF_SUFFIXES else ""
        raise ImageError(f"not an image file in a supported format{hint}", name) from None
    except MemoryError:
        raise ImageError("not enough memory to decode this image", name) from None
    except OSError as exc:
        if exc.errno is not None:  # a real I/O error (permissions, a vanished network share)
            raise ImageError(f"cannot read: {exc.strerror or exc}", name) from None
        raise ImageError(f"truncated or corrupt image data ({_first_line(exc)})", name) from None
    except Exception as exc:  # noqa: BLE001 - the decoders of a dozen formats raise a dozen exception types
        raise ImageError(f"corrupt image ({type(exc).__name__}: {_first_line(exc)})", name) from None


@contextmanager
def _warnings_off() -> Iterator[None]:
    """Warnings ignored while any thread decodes; the filters as they were once the last decode ends.

    Not ``warnings.catch_warnings``: it is not thread-safe, and detect decodes in two prefetch threads.
    A decode ending while another ran put the old filters back under the other (whose Pillow warning then
    printed), and the other then restored "ignore every warning" for the rest of the process."""
    global _quiet_decodes
    with _quiet_lock:
        if _quiet_decodes == 0:
            _filters_before[:] = warnings.filters
            warnings.simplefilter("ignore")
        _quiet_decodes += 1
    try:
        yield
    finally:
        with _quiet_lock:
            _quiet_decodes -= 1
            if _quiet_decodes == 0:
                warnings.filters[:] = _filters_before  # type: ignore[index]  # a list; typeshed says Sequence
                _filters_before.clear()


def _open_formats() -> list[str]:
    # Those of _PHOTO_FORMATS that are registered now (HEIF and AVIF only once pillow-heif is).
    Image.init()  # loads WebP and TIFF too (a no-op after the first call)
    return [name for name in _PHOTO_FORMATS if name in Image.OPEN]


def open_regular(path: Path) -> io.BufferedReader:
    """Open ``path`` for binary reading, refusing anything but a regular file with a one-line ``ImageError``.

    A FIFO is opened without blocking (a plain ``open`` waits for a writer for ever) and refused, as are
    devices (``/dev/zero`` never ends) and sockets; the check is made on the opened file, so a file
    swapped after a ``stat`` cannot slip through. Example::

        open_regular(Path("x.jpg"))   # ImageError: x.jpg: not a regular file (a FIFO)
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise ImageError("no such file", str(path)) from None
    except IsADirectoryError:
        raise ImageError("is a directory, not an image file", Path(path).name) from None
    except OSError as exc:
        raise ImageError(f"cannot read: {exc.strerror or exc}", Path(path).name) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a directory, not an image file", Path(path).name)
        if not stat.S_ISREG(mode):
            raise ImageError(f"not a regular file ({_file_kind(mode)})", Path(path).name)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: back to ordinary reads
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _file_kind(mode: int) -> str:
    kinds = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
             (stat.S_ISSOCK, "a socket"))
    return next((kind for test, kind in kinds if test(mode)), "not a file")


def _decode(image: Image.Image, name: str, max_side: int | None, max_pixels: int) -> LoadedImage:
    """Open image -> LoadedImage: size check, draft, decode, 8-bit RGB, resize, orientation."""
    stored_w, stored_h = image.size
    if stored_w * stored_h > max_pixels:
        raise ImageError(f"image too large to decode safely ({stored_w}×{stored_h} pixels)", name)
    if stored_w == 0 or stored_h == 0:
        raise ImageError(f"image has no pixels ({stored_w}×{stored_h})", name)
    orientation = exif_orientation(image)
    image.seek(0)  # GIF, TIFF, WebP: the first frame
    target = _target_size(stored_w, stored_h, max_side)
    if target != (stored_w, stored_h):
        image.draft(None, target)  # JPEG: decode at 1/2, 1/4 or 1/8 scale, still at least ``target``
    image.load()
    rgb = _to_rgb(image)
    if rgb.size != target:
        rgb = rgb.resize(target, Image.Resampling.BILINEAR, reducing_gap=3.0)
    if orientation in _TRANSPOSE:
        rgb = rgb.transpose(_TRANSPOSE[orientation])
    width, height = (stored_h, stored_w) if orientation in (5, 6, 7, 8) else (stored_w, stored_h)
    pixels = np.asarray(rgb, dtype=np.uint8)
    return LoadedImage(pixels=pixels, width=width, height=height, orientation=orientation, scale=pixels.shape[1] / width)


def _target_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if not max_side or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def exif_orientation(image: Image.Image) -> int:
    """The EXIF orientation tag of an opened image, 1..8 (1, upright, when absent or unreadable).

    Example: ``exif_orientation(Image.open("a.jpg")) in (5, 6, 7, 8)`` -> the photo is turned sideways.
    """
    try:
        value = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not lose the photo: treat it as upright
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB: 16/32-bit scaled (not clipped), alpha composited on white."""
    mode = image.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image if mode == "RGB" else image.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV


def _to_uint8(values: np.ndarray) -> np.ndarray:
    # 16-bit greyscale (PNG, TIFF) spans 0..65535: divide by 257 so white stays white and nothing clips.
    # Float images are taken as 0..1 when they fit in it, else as 0..255.
    if values.dtype.kind == "f":
        top = 1.0 if float(np.nanmax(values, initial=0.0)) <= 1.0 else 255.0
        scaled = np.nan_to_num(values) * (255.0 / top)
    else:
        top = 65535 if int(values.max(initial=0)) <= 65535 else int(values.max())
        scaled = values.astype(np.float64) * (255.0 / top)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def _register_heif() -> None:
    # pillow-heif is imported on the first HEIC/HEIF file only: its import costs time most runs never need.
    global _heif_registered
    with _heif_lock:
        if _heif_registered:
            return
        try:
            from pillow_heif import register_heif_opener
        except ImportError:
            return  # load_image then reports the file as unsupported, with a hint
        register_heif_opener()
        _heif_registered = True


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def iter_image_files(paths: Iterable[Path], on_error: Callable[[OSError], None] | None = None) -> Iterator[Path]:
    """Supported image files under ``paths``: folders walked in sorted order, hidden files and folders skipped.

    A path that is itself a supported file is yielded as given. A folder that cannot be listed is passed
    to ``on_error`` (it would be skipped silently otherwise). Example::

        list(iter_image_files([Path("Pictures")]))   # [Path("Pictures/2019/a.jpg"), Path("Pictures/b.HEIC")]
    """
    for root in paths:
        root = Path(root)
        if root.is_file():
            if root.suffix.lower() in SUPPORTED_SUFFIXES:
                yield root
            continue
        for folder, dirs, files in os.walk(root, onerror=on_error):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .git, .thumbnails, .Trash
            for file in sorted(files):
                # Hidden files include macOS "._IMG.jpg" resource forks, which are not images.
                if not file.startswith(".") and Path(file).suffix.lower() in SUPPORTED_SUFFIXES:
                    yield Path(folder) / file


def printable_path(path: Path | str) -> str:
    """``path`` as text that can be printed and stored: bytes that are not UTF-8 shown as ``\\xNN``.

    Linux file names are bytes; one written in Latin-1 comes to Python with surrogates, which neither
    SQLite nor a UTF-8 terminal accepts. Example::

        printable_path(os.fsdecode(b"caf\\xe9.jpg"))   # 'caf\\xe9.jpg'
    """
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def shown_path(path: Path | str) -> str:
    """``printable_path`` with control characters escaped too: a path to print inside one line of text.

    A newline, tab or terminal escape sequence is a legal byte of a Linux file name; printed raw it would
    split a one-line message or recolour the terminal. Example::

        shown_path("/photos/bad\\nname.jpg")   # '/photos/bad\\\\nname.jpg' (a backslash and an n)
    """
    text = printable_path(path)
    if text.isprintable():
        return text
    # Only what breaks a line or drives the terminal: other unprintables (a zero-width joiner in an
    # emoji, a no-break space) are part of real names and are shown as they are.
    return "".join(_escape_control(ch) if unicodedata.category(ch) in ("Cc", "Zl", "Zp") else ch for ch in text)


def _escape_control(ch: str) -> str:
    named = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return named.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")


def file_hash(path: Path) -> str:
    """SHA-256 hex digest of the file's content (photos are identified by it).

    Example: ``file_hash(Path("a.jpg"))`` → ``"9f86d08…"``; raises ``ImageError`` when unreadable.
    """
    with open_regular(path) as handle:  # never a FIFO or a device: those would block or never end
        try:
            return hashlib.file_digest(handle, "sha256").hexdigest()
        except OSError as exc:
            raise ImageError(f"cannot read: {exc.strerror or exc}", Path(path).name) from None

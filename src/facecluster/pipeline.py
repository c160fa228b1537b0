"""Detect and embed over the catalog: the hot path of ``facecluster detect|embed|cluster``.

A photo is identified by the sha256 of its content; the ``files`` table remembers where each photo was
seen with its size and mtime, so unchanged files are skipped without hashing (``checksum=True`` hashes
them too) and a moved or renamed file is recognised by its hash and keeps its faces (and their names)::

    with Catalog.open("photos.db") as catalog:
        report = detect_paths(catalog, [Path("~/Pictures").expanduser()], detector)
        embed_pending(catalog, embedder)

Work is committed one batch of photos at a time, so Ctrl-C leaves a consistent catalog and the next run
resumes where this one stopped. Models are passed in (``load_detector``/``load_embedder`` build the real
ones), which keeps the library testable with fakes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

from facecluster.catalog import Catalog, encode_vector
from facecluster.config import DetectConfig, EmbedConfig, PipelineConfig
from facecluster.embed import Embedder
from facecluster.errors import FaceclusterError, ImageError
from facecluster.migrations import now, timestamp
from facecluster.reporting import ProgressFn, null_progress

#: crop_face(pixels, face, size, margin) -> (size, size, 3) uint8; engineer B's ``align.crop_face``.
CropFn = Callable[..., np.ndarray]


class FaceLike(Protocol):
    """What a detector returns per face (``facecluster.detect.DetectedFace``)."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    probability: float


class DetectorLike(Protocol):
    """``facecluster.detect.Detector``: one list of faces per image, best first."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Any]]: ...


@dataclass(frozen=True)
class FileFailure:
    """A file that could not be used, with a one-line reason."""

    path: str
    error: str


@dataclass
class DetectReport:
    """What ``detect_paths`` did; ``failed`` lists files that were recorded as errors."""

    files: int = 0
    detected: int = 0  # photos decoded and run through the detector
    skipped: int = 0  # unchanged since a previous run
    # Files with the recorded size and mtime that were hashed all the same (``checksum``, or recorded
    # within ``PipelineConfig.racy_window_s`` of their mtime), and how many of them held other content: those
    # were detected again (or found moved or copied) and are counted there too.
    checked: int = 0
    checked_changed: int = 0
    moved: int = 0  # known content at a new path: faces kept, nothing redone
    copies: int = 0  # known content at a new path while another path of it still exists (a copy, a link)
    removed_people: list[str] = field(default_factory=list)  # left without a face by replaced photos
    # Photos recorded under the folders walked whose only file was not found: kept with their faces and
    # names (an unmounted disk must not lose them), and said, so a deletion does not pass unnoticed.
    missing: int = 0
    faces: int = 0  # faces found in the photos detected now
    embedded: int = 0  # faces embedded on the way (``embedder`` given)
    failed: list[FileFailure] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, e.g. ``{"files": 3, ..., "failed": [{"path": ..., "error": ...}]}``."""
        return asdict(self)


@dataclass
class EmbedReport:
    """What ``embed_pending`` did."""

    model_id: str
    embedded: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)  # {"face_id", "error"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


# -- model factories (the CLI calls these; tests monkeypatch them) -------------------------------------


def load_detector(config: DetectConfig, device: str = "cpu", progress: ProgressFn = null_progress) -> DetectorLike:
    """The MTCNN detector with resolved weights (engineer A's ``MTCNNDetector.pretrained``)."""
    from facecluster.detect import MTCNNDetector

    return MTCNNDetector.pretrained(config=config, device=device, progress=progress)


def load_embedder(
    weights: Path | None,
    model_path: Path | None,
    device: str = "cpu",
    config: EmbedConfig = EmbedConfig(),
    progress: ProgressFn = null_progress,
) -> Embedder:
    """The FaceNet embedder, its network loaded on first use (``facecluster.embed.open_embedder``)."""
    from facecluster.embed import open_embedder

    return open_embedder(weights=weights, model_path=model_path, device=device, config=config, progress=progress)


def default_crop() -> CropFn:
    """Engineer B's ``facecluster.align.crop_face``."""
    from facecluster.align import crop_face

    return crop_face


def detector_key(config: DetectConfig, crop_config: EmbedConfig = EmbedConfig()) -> str:
    """Identifies the detection and crop settings that produced a photo's faces, e.g. ``mtcnn:3f2a9c1b``.

    Photos detected under another key are detected (and cropped) again on the next run."""
    crop = {"crop_size": crop_config.crop_size, "margin": crop_config.margin, "align": crop_config.align}
    settings = {"detect": asdict(config), "crop": crop}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    return f"mtcnn:{digest[:8]}"


# -- finding files -------------------------------------------------------------------------------------


def read_path_list(data: bytes) -> list[Path]:
    """Paths from what a pipe sent (``find ... | facecluster detect -``), as bytes: one path a line, or
    NUL-separated when the data holds a NUL (``find -print0``, ``git ls-files -z``), the only way to
    pass names that contain a newline.

    Lines may end in CRLF; blank lines are ignored. Bytes are decoded as the file system does
    (``os.fsdecode``), whatever the locale, so a name that is not UTF-8 reaches ``expand_paths``, which
    reports it, instead of failing the whole read::

        read_path_list(b"a.jpg\r\n\nb c.png\n")      # [Path('a.jpg'), Path('b c.png')]
        read_path_list(b"new\nline.jpg\0b.jpg\0")    # [Path('new\nline.jpg'), Path('b.jpg')]
    """
    if b"\0" in data:
        return [Path(os.fsdecode(name)) for name in data.split(b"\0") if name]
    lines = (line.removesuffix(b"\r") for line in data.split(b"\n"))
    return [Path(os.fsdecode(line)) for line in lines if line.strip()]


UNLISTABLE = "cannot list folder"  # the reason given for a folder that could not be read


def expand_paths(paths: Iterable[Path]) -> tuple[list[Path], list[FileFailure]]:
    """Walk folders (sorted, supported images only); files named explicitly are always tried.

    Returns the files, absolute and de-duplicated in order, and failures for paths that do not exist,
    folders that cannot be listed and file names that are not UTF-8 (the catalog stores paths as text)::

        files, failures = expand_paths([Path("~/Pictures").expanduser()])
    """
    from facecluster.images import iter_image_files, printable_path

    files: list[Path] = []
    failures: list[FileFailure] = []
    seen: set[Path] = set()

    def unreadable_folder(exc: OSError) -> None:
        failures.append(FileFailure(printable_path(exc.filename or ""), f"{UNLISTABLE}: {exc.strerror}"))

    for raw in paths:
        path = Path(os.path.abspath(Path(raw).expanduser()))
        if path.is_dir():
            found: Iterable[Path] = (Path(os.path.abspath(p)) for p in iter_image_files([path], unreadable_folder))
        elif path.exists():
            found = [path]
        else:
            failures.append(FileFailure(printable_path(path), "no such file or directory"))
            continue
        for item in found:
            if item in seen:
                continue
            seen.add(item)
            shown = printable_path(item)
            if shown != str(item):
                what = "file" if printable_path(item.name) != item.name else "folder"
                failures.append(FileFailure(shown, f"the {what} name is not valid UTF-8: rename the {what} "
                                            f"(e.g. `convmv -f latin1 -t utf8 --notest {what.upper()}`)"))
                continue
            files.append(item)
    return files, failures


# -- detection -----------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    """One file after the prefetch thread: hashed, and decoded unless its content is already known."""

    path: Path
    size: int
    mtime: float
    seen: float  # time.time() before the file was looked at: the content read is no older than this
    hash: str | None = None
    image: Any = None  # facecluster.images.LoadedImage
    known: bool = False  # content already detected under the current key
    error: str | None = None


def _prepare(path: Path, known_hashes: frozenset[str], max_side: int, force: bool) -> _Prepared:
    # Runs in a worker thread: hashing and decoding release the GIL, so they overlap the models.
    from facecluster.images import file_hash, load_image

    seen = time.time()
    try:
        stat = path.stat()
    except OSError as exc:
        return _Prepared(path, 0, 0.0, seen, error=f"cannot read: {exc.strerror or exc}")
    item = _Prepared(path, stat.st_size, stat.st_mtime, seen)
    try:
        item.hash = file_hash(path)
    except ImageError as exc:  # file_hash turns every OSError into one: the file cannot be read at all
        item.error = exc.reason
        return item
    if item.hash in known_hashes and not force:
        item.known = True
        return item
    try:
        item.image = load_image(path, max_side=max_side)
    except ImageError as exc:
        item.error = exc.reason  # the report prints the path already
    except (OSError, ValueError, MemoryError) as exc:  # decoders raise these for odd files: record, go on
        item.error = f"cannot decode: {type(exc).__name__}: {exc}"
    return item


def _prefetched(
    paths: Sequence[Path], known: frozenset[str], max_side: int, force: bool, workers: int
) -> Iterator[_Prepared]:
    """Prepare files in a few threads, yielding them in order with a bounded read-ahead."""
    return _read_in_order(lambda path: _prepare(path, known, max_side, force), paths, workers)


def _content_hash(path: Path) -> tuple[str | None, float]:
    # Runs in a worker thread: (sha256, or None where the file cannot be read; time.time() before reading).
    from facecluster.images import file_hash

    seen = time.time()
    try:
        return file_hash(path), seen
    except ImageError:
        return None, seen


_T = TypeVar("_T")


def _read_in_order(read: Callable[[Path], _T], paths: Sequence[Path], workers: int) -> Iterator[_T]:
    """``read`` each path in ``workers`` threads (none: in this one), yielding in order, a few paths ahead.

    ``list(_read_in_order(len, [Path("a")], 2))`` -> ``[1]``"""
    if workers <= 0:
        for path in paths:
            yield read(path)
        return
    pool = _ReaderThreads(workers)
    pending: deque[Future[_T]] = deque()
    try:
        for path in paths:
            pending.append(pool.submit(read, path))
            if len(pending) >= 4 * workers + 8:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for future in pending:
            future.cancel()
        pool.shutdown()


class _ReaderThreads:
    """A few daemon threads running ``submit``-ted calls in order, each answered through a ``Future``.

    ``ThreadPoolExecutor``'s threads are waited for when Python exits, so one read that never returns (a
    hung network share) would keep the process alive after Ctrl-C; daemon threads are not waited for::

        pool = _ReaderThreads(2); future = pool.submit(len, "abc"); future.result(); pool.shutdown()   # 3
    """

    def __init__(self, workers: int) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None] = queue.SimpleQueue()
        self._workers = workers
        for index in range(workers):
            threading.Thread(target=self._work, name=f"facecluster-read-{index}", daemon=True).start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        """Let each thread end after its current job (jobs already cancelled are skipped)."""
        for _ in range(self._workers):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to the reader of the future, as the executor does
                future.set_exception(exc)


def encode_crop(crop: np.ndarray, config: PipelineConfig) -> bytes:
    """Encode an aligned crop for the ``faces.crop`` column (JPEG quality 95 by default, or PNG)."""
    buffer = io.BytesIO()
    image = Image.fromarray(np.ascontiguousarray(crop, dtype=np.uint8))
    if config.crop_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif config.crop_format == "jpeg":
        image.save(buffer, format="JPEG", quality=config.jpeg_quality, subsampling=0)
    else:
        raise FaceclusterError(f"unknown crop format {config.crop_format!r}; use jpeg or png")
    return buffer.getvalue()


def decode_crop(blob: bytes) -> np.ndarray:
    """The (H, W, 3) uint8 RGB array of a stored crop; ``ImageError`` with a one-line reason if it cannot be.

        decode_crop(b"junk")   # ImageError: not a JPEG or PNG image (4 bytes)
    """
    try:
        with Image.open(io.BytesIO(blob)) as image:
            return np.asarray(image.convert("RGB"))
    except UnidentifiedImageError as exc:  # its message is "cannot identify image file <_io.BytesIO object at 0x…>"
        raise ImageError(f"not a JPEG or PNG image ({len(blob)} bytes)") from exc
    except (OSError, ValueError) as exc:
        lines = str(exc).strip().splitlines()
        raise ImageError(f"cannot decode it ({lines[0] if lines else type(exc).__name__})") from exc


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _best_overlap(box: Sequence[float], candidates: Mapping[int, Sequence[float]]) -> int | None:
    """The key of the candidate box that overlaps ``box`` most, if by more than half (IoU > 0.5).

    >>> _best_overlap((0, 0, 10, 10), {1: (50, 50, 60, 60), 2: (1, 0, 11, 10)})
    2
    """
    best, best_iou = None, 0.5
    for key, other in candidates.items():
        overlap = _iou(box, other)
        if overlap > best_iou:
            best, best_iou = key, overlap
    return best


def _downhill(cost: Callable[[int, int], float], start: tuple[int, int], steps: int) -> tuple[int, int]:
    """From ``start``, step to the cheapest of the 8 neighbouring shifts while that lowers ``cost``, at most
    ``steps`` times; returns where it stopped (a local minimum, or where the steps ran out).

    >>> _downhill(lambda x, y: (x - 3) ** 2 + (y + 2) ** 2, (0, 0), steps=10)
    (3, -2)
    """
    here = start
    for _ in range(steps):
        best = min(((here[0] + ex, here[1] + ey) for ex in (-1, 0, 1) for ey in (-1, 0, 1)), key=lambda k: cost(*k))
        if cost(*best) >= cost(*here):
            break
        here = best
    return here


def _crop_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean absolute pixel difference of two crops (0-255; infinite when their shapes differ)."""
    x, y = np.asarray(a, dtype=np.int16), np.asarray(b, dtype=np.int16)
    return float(np.abs(x - y).mean()) if x.shape == y.shape else float("inf")


def _crops_alike(a: np.ndarray, b: np.ndarray, max_diff: float) -> bool:
    """Whether two crops show the same pixels, give or take re-encoding (mean |difference| <= max_diff)."""
    return _crop_diff(a, b) <= max_diff


@dataclass(frozen=True)
class _Geometry:
    """A stored face's box and landmarks, in the pixels of a (possibly downscaled) image: a ``FaceLike``."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    probability: float = 1.0


class RecropFn(Protocol):
    """Cuts the photo being written at an old face's full-size geometry: ``recrop(box, landmarks)``.

    With ``turns`` and ``scale`` (a ``_frames`` entry) the new photo is first turned back by ``turns``
    clockwise quarter turns, and the geometry is that of the old photo, which the new one shows ``scale``
    times as large; the crop then shows what the old one did.
    """

    def __call__(self, box: Sequence[float], landmarks: Sequence[Sequence[float]], turns: int = 0,
                 scale: float = 1.0) -> np.ndarray: ...


def _frames(old: tuple[int, int], new: tuple[int, int]) -> list[tuple[int, float]]:
    """The ways a photo of size ``old`` may have become one of size ``new`` by rotating and resizing it.

    Each is (clockwise quarter turns, scale), turned first; the sides must agree on the scale to within
    the rounding of a pixel. The unchanged photo, (0, 1.0), is left out.

    >>> _frames((300, 200), (100, 150))  # turned a quarter, either way, and halved
    [(1, 0.5), (3, 0.5)]
    >>> _frames((300, 200), (600, 401)), _frames((300, 200), (280, 190))
    ([(0, 2.0025), (2, 2.0025)], [])
    """
    found: list[tuple[int, float]] = []
    for turns in range(4):
        w, h = old if turns % 2 == 0 else (old[1], old[0])
        if min(w, h, *new) <= 0 or abs(new[0] / w - new[1] / h) > 1 / w + 1 / h:
            continue
        scale = round((new[0] / w + new[1] / h) / 2, 4)
        if (turns, new) != (0, old):
            found.append((turns, scale))
    return found


def _framed_box(box: Sequence[float], size: tuple[int, int], turns: int,
                scale: float) -> tuple[float, float, float, float]:
    """Where ``box`` of a photo of ``size`` lies once the photo is turned and resized as ``_frames`` says.

    >>> _framed_box((10, 20, 50, 80), (300, 200), 1, 0.5)  # a quarter turn clockwise: (x, y) -> (h - y, x)
    (60.0, 5.0, 90.0, 25.0)
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = size
    for _ in range(turns % 4):
        x1, y1, x2, y2 = h - y2, x1, h - y1, x2
        w, h = h, w
    return (x1 * scale, y1 * scale, x2 * scale, y2 * scale)


@dataclass
class _NewFace:
    box: tuple[float, float, float, float]  # full-size oriented pixels
    landmarks: list[list[float]]
    probability: float
    crop: bytes


class _Writer:
    """Writes one batch of prepared photos and their faces in the open transaction.

    A path whose content changed leaves its old photo behind, without that path. It is deleted only by
    ``finish``, at the end of the run, if no path holds it by then: when files are swapped or a numbered
    series is shifted by one, the old content turns up at another path later in the same run.
    """

    def __init__(self, catalog: Catalog, key: str, report: DetectReport, crop_format: str,
                 same_face_max_diff: float = PipelineConfig.same_face_max_diff,
                 same_face_shift_px: int = PipelineConfig.same_face_shift_px) -> None:
        self.conn = catalog.db.conn
        self.key = key
        self.report = report
        self.crop_format = crop_format
        self.same_face_max_diff = same_face_max_diff
        self.same_face_shift_px = same_face_shift_px
        self.deleted_faces = False  # faces went with their photos: people and cluster sizes need a look

    def upsert_file(self, item: _Prepared, photo_id: int | None, error: str | None) -> None:
        # seen_at is when the file was read, not now: a batch is written seconds after its files were read,
        # and a file written in between must not look older than its record (``_racy``).
        self.conn.execute(
            "INSERT INTO files (path, photo_id, size, mtime, seen_at, error) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(path) DO UPDATE SET photo_id = excluded.photo_id, size = excluded.size, "
            "mtime = excluded.mtime, seen_at = excluded.seen_at, error = excluded.error",
            [str(item.path), photo_id, item.size, item.mtime, timestamp(item.seen), error],
        )

    def reread(self, seen: Sequence[tuple[str, float]]) -> None:
        """Record that each (path, time.time() before it was read) was hashed and found unchanged."""
        self.conn.executemany("UPDATE files SET seen_at = ? WHERE path = ?",
                              [(timestamp(at), path) for path, at in seen])

    def _photo_id(self, item: _Prepared) -> int | None:
        row = self.conn.execute("SELECT id FROM photos WHERE hash = ?", [item.hash]).fetchone()
        return int(row[0]) if row else None

    def _previous_photo(self, item: _Prepared) -> int | None:
        # The photo this path held when it was last seen.
        row = self.conn.execute("SELECT photo_id FROM files WHERE path = ?", [str(item.path)]).fetchone()
        return int(row[0]) if row and row[0] is not None else None

    def _has_path(self, photo_id: int) -> bool:
        return self.conn.execute("SELECT 1 FROM files WHERE photo_id = ? LIMIT 1", [photo_id]).fetchone() is not None

    def known(self, item: _Prepared) -> None:
        photo_id = self._photo_id(item)
        if photo_id is None:  # another process removed it since this run started
            item.error = "the catalog changed during the run: run the command again"
            self.failed(item)
            return
        copy = False
        if self._previous_photo(item) == photo_id:
            self.report.skipped += 1  # same content, only touched (new mtime): nothing to do
        elif self._still_at_recorded_path(photo_id, item):
            self.report.copies += 1
            copy = True  # the photo stays shown at its recorded path; this one is remembered too
        else:
            self.report.moved += 1
        if not copy:
            self.conn.execute("UPDATE photos SET path = ?, size = ?, mtime = ?, updated_at = ? WHERE id = ?",
                              [str(item.path), item.size, item.mtime, now(), photo_id])
        self.upsert_file(item, photo_id, None)

    def _still_at_recorded_path(self, photo_id: int, item: _Prepared) -> bool:
        # The photo's recorded path still holds it, unchanged (same size and mtime as recorded): ``item`` is
        # a copy or a link of it, not the photo moved. (After a swap the recorded path holds other content.)
        row = self.conn.execute("SELECT f.path, f.size, f.mtime FROM photos p JOIN files f ON f.path = p.path "
                                "AND f.photo_id = p.id WHERE p.id = ?", [photo_id]).fetchone()
        if row is None or row[0] == str(item.path):
            return False
        try:
            stat = os.stat(row[0])
        except OSError:
            return False
        return stat.st_size == row[1] and stat.st_mtime == row[2]

    def failed(self, item: _Prepared) -> None:
        error = (item.error or "unknown error").splitlines()[0]
        self.report.failed.append(FileFailure(str(item.path), error))
        if item.hash is None:
            self.upsert_file(item, self._previous_photo(item), error)
            return
        photo_id = self._photo_id(item)
        if photo_id is None:
            previous = self._previous_photo(item)
            if previous is not None:
                # A photo that became unreadable (a half-synced or damaged file) keeps its faces and names:
                # the path stays linked to it, marked with the error, and is read again next run.
                self.upsert_file(item, previous, error)
                return
            cursor = self.conn.execute(
                "INSERT INTO photos (hash, path, size, mtime, status, error, added_at, updated_at) "
                "VALUES (?, ?, ?, ?, 'error', ?, ?, ?)",
                [item.hash, str(item.path), item.size, item.mtime, error, now(), now()],
            )
            photo_id = int(cursor.lastrowid or 0)
        else:
            # Keep faces found earlier (a file that became unreadable must not lose its names).
            self.conn.execute("UPDATE photos SET path = ?, error = ?, updated_at = ? WHERE id = ?",
                              [str(item.path), error, now(), photo_id])
        self.upsert_file(item, photo_id, error)

    def detected(self, item: _Prepared, faces: list[_NewFace], recrop: RecropFn | None = None) -> list[int]:
        """Store a detected photo; returns the ids of its faces that need (new) embeddings.

        ``recrop`` cuts the new photo at an old face's geometry: where this path held another photo that no
        other path holds, its faces still in the picture (``_match_same_faces``) are carried over at once,
        in this batch's transaction, so an interrupted run loses none of them."""
        image = item.image
        photo_id = self._photo_id(item)
        values = [str(item.path), item.size, item.mtime, image.width, image.height, image.orientation,
                  self.key, len(faces), now()]
        if photo_id is None:
            cursor = self.conn.execute(
                "INSERT INTO photos (path, size, mtime, width, height, orientation, detector, n_faces, "
                "updated_at, hash, status, added_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'detected', ?)",
                values + [item.hash, now()],
            )
            photo_id = int(cursor.lastrowid or 0)
        else:
            self.conn.execute(
                "UPDATE photos SET path = ?, size = ?, mtime = ?, width = ?, height = ?, orientation = ?, "
                "detector = ?, n_faces = ?, updated_at = ?, status = 'detected', error = NULL WHERE id = ?",
                values + [photo_id],
            )
        previous = self._previous_photo(item)
        self.upsert_file(item, photo_id, None)
        ids = self._store_faces(photo_id, faces)
        if previous is not None and previous != photo_id and recrop is not None and not self._has_path(previous):
            pairs = self._match_same_faces(previous, list(zip(ids, faces)), recrop, (image.width, image.height))
            if pairs:
                self._carry_faces(previous, photo_id, pairs)
                kept = {new_face: old_face for old_face, new_face in pairs.items()}
                ids = [kept.get(face_id, face_id) for face_id in ids]  # their vectors go to the old rows
        return ids

    def _match_same_faces(self, old: int, new_faces: list[tuple[int, _NewFace]], recrop: RecropFn,
                          size: tuple[int, int]) -> dict[int, int]:
        # An old face is still in the new picture when the new photo, cut at the old face's own box and
        # landmarks, gives the crop that was stored for it: re-saving or re-tagging changes a few levels,
        # another face at that place tens. (Comparing with the new detection's crop instead would also see
        # the detector's pixel of jitter, which moves a sharp crop by as much as another face.) Each old
        # face then goes to the new face that overlaps it most (IoU > 0.5). Faces left over are looked for
        # once more, moved by a few whole pixels, as in a cropped photo (``_shifted_match``).
        pairs: dict[int, int] = {}
        rows = self.conn.execute("SELECT id, x1, y1, x2, y2, landmarks, crop FROM faces WHERE photo_id = ?",
                                 [old]).fetchall()
        moved: list[tuple[int, tuple[float, float, float, float], list[list[float]], np.ndarray]] = []
        for face_id, x1, y1, x2, y2, landmarks, crop in rows:
            if crop is None or not landmarks:
                continue
            taken = set(pairs.values())
            box, points, stored = (x1, y1, x2, y2), json.loads(landmarks), decode_crop(crop)
            best = _best_overlap(box, {i: face.box for i, face in new_faces if i not in taken})
            if best is not None and _crops_alike(stored, recrop(box, points), self.same_face_max_diff):
                pairs[int(face_id)] = best
            else:
                moved.append((int(face_id), box, points, stored))
        # The photo was cropped (or given a border): the faces left over moved by one shift, in whole pixels,
        # by no more than the photo's width and height changed.
        row = self.conn.execute("SELECT width, height FROM photos WHERE id = ?", [old]).fetchone()
        if row is None or row[0] is None or row[1] is None:
            return pairs
        limit = (abs(size[0] - row[0]) + self.same_face_shift_px, abs(size[1] - row[1]) + self.same_face_shift_px)
        shifts: list[tuple[int, int]] = []  # found for earlier faces of this photo: tried first
        for face_id, box, points, stored in moved:
            candidates = {i: face.box for i, face in new_faces if i not in set(pairs.values())}
            found = self._shifted_match(box, points, stored, candidates, shifts, limit, recrop)
            if found is not None:
                pairs[face_id], shift = found
                if shift not in shifts:
                    shifts.append(shift)
        # The photo was rotated (its pixels, or only its EXIF orientation) or resized: the faces left over
        # are where the turn and the scale that make the old size the new one put them, and the new photo
        # turned back shows them as they were.
        for turns, scale in _frames((row[0], row[1]), size):
            for face_id, box, points, stored in moved:
                if face_id in pairs:
                    continue
                candidates = {i: face.box for i, face in new_faces if i not in set(pairs.values())}
                best = _best_overlap(_framed_box(box, (row[0], row[1]), turns, scale), candidates)
                if best is not None and _crops_alike(stored, recrop(box, points, turns=turns, scale=scale),
                                                     self.same_face_max_diff):
                    pairs[face_id] = best
        return pairs

    def _shifted_match(self, box: tuple[float, float, float, float], points: list[list[float]], stored: np.ndarray,
                       candidates: Mapping[int, Sequence[float]], shifts: list[tuple[int, int]],
                       limit: tuple[int, int], recrop: RecropFn) -> tuple[int, tuple[int, int]] | None:
        # (new face, shift) where the new photo, cut at the old geometry moved by shift, gives the stored crop.
        def cut(dx: int, dy: int) -> np.ndarray:
            return recrop((box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy), [[x + dx, y + dy] for x, y in points])

        def moved_box(dx: float, dy: float) -> tuple[float, float, float, float]:
            return (box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy)

        for dx, dy in shifts:  # the shift of a face found before: the same crop moved every face
            best = _best_overlap(moved_box(dx, dy), candidates)
            if best is not None and _crops_alike(stored, cut(dx, dy), self.same_face_max_diff):
                return best, (dx, dy)
        w, h = box[2] - box[0], box[3] - box[1]
        reach = range(-self.same_face_shift_px, self.same_face_shift_px + 1)
        for new_id, other in candidates.items():
            # A crop moves a face, it does not resize it: only a new face of about its size can be it (MTCNN's
            # box of one face differs by up to a tenth or so between the photo and its crop).
            if not (0.8 <= (other[2] - other[0]) / w <= 1.25 and 0.8 <= (other[3] - other[1]) / h <= 1.25):
                continue
            cx = round((other[0] + other[2] - box[0] - box[2]) / 2)
            cy = round((other[1] + other[3] - box[1] - box[3]) / 2)
            if abs(cx) > limit[0] or abs(cy) > limit[1]:
                continue  # farther than the photo's size changed: another face
            diffs: dict[tuple[int, int], float] = {}

            def diff_at(dx: int, dy: int) -> float:
                if (dx, dy) not in diffs:
                    far = abs(dx) > limit[0] or abs(dy) > limit[1]
                    diffs[dx, dy] = float("inf") if far else _crop_diff(stored, cut(dx, dy))
                return diffs[dx, dy]

            # The boxes say where the face went give or take the detector's jitter, which a crop changes by
            # several pixels (the image pyramid samples the photo elsewhere): from the best shift near the
            # boxes, follow the pixels downhill for up to a tenth of the face's size.
            start = min(((cx + ex, cy + ey) for ex in reach for ey in reach), key=lambda k: diff_at(*k))
            shift = _downhill(diff_at, start, steps=max(self.same_face_shift_px, round(max(w, h) / 10)))
            if diffs[shift] <= self.same_face_max_diff:
                return new_id, shift
        return None

    def finish(self) -> bool:
        """End of a completed run: forget photos no path holds any more; True if faces were deleted (now or
        by re-detection during the run). Faces of an edited photo were carried over already (``detected``).
        """
        deleted = self.deleted_faces
        # Photos whose path took other content, unless the old content turned up elsewhere (swapped, shifted
        # or copied files); and those an interrupted run left without a path.
        for (orphan,) in self.conn.execute(
            "SELECT id FROM photos p WHERE NOT EXISTS (SELECT 1 FROM files f WHERE f.photo_id = p.id)"
        ).fetchall():
            deleted |= self._delete_photo(int(orphan))
        return deleted

    def _delete_photo(self, photo_id: int) -> bool:
        faces = self.conn.execute("SELECT count(*) FROM faces WHERE photo_id = ?", [photo_id]).fetchone()[0]
        self.conn.execute("DELETE FROM photos WHERE id = ?", [photo_id])
        return faces > 0

    def _carry_faces(self, old: int, new: int, pairs: dict[int, int]) -> None:
        # Each new face that shows an old one gives up its row: the old face's row (id, person, cluster,
        # rejections, ignore) takes its geometry and crop instead, and its old vectors go (the caller stores
        # the new ones under the old id). Should the old content turn up at another path after all (files
        # swapped), it is detected again rather than linked without faces.
        for old_face, new_face in pairs.items():
            row = self.conn.execute("SELECT x1, y1, x2, y2, crop, landmarks, probability, crop_format FROM faces "
                                    "WHERE id = ?", [new_face]).fetchone()
            self.conn.execute("DELETE FROM embeddings WHERE face_id = ?", [old_face])
            self.conn.execute("DELETE FROM faces WHERE id = ?", [new_face])
            self.conn.execute(
                "UPDATE faces SET photo_id = ?, x1 = ?, y1 = ?, x2 = ?, y2 = ?, crop = ?, landmarks = ?, "
                "probability = ?, crop_format = ? WHERE id = ?",
                [new, *row, old_face],
            )
        self.conn.execute("UPDATE photos SET detector = NULL WHERE id = ?", [old])

    def relink(self, moves: Sequence[tuple[int, str, str]]) -> None:
        """Point each photo at an existing path of it instead of a recorded one that is gone (and forget that)."""
        for photo_id, path, gone in moves:
            self.conn.execute("UPDATE photos SET path = ? WHERE id = ?", [path, photo_id])
            self.conn.execute("DELETE FROM files WHERE path = ? AND photo_id = ?", [gone, photo_id])

    def prune_vanished(self, roots: Sequence[Path], found: set[str]) -> int:
        """Forget paths under the walked folders ``roots`` that are gone, where their photo has another path.

        A photo's only path is kept even when it is gone (an unmounted disk must not lose names); returns
        how many such photos there are, e.g. ``2`` after two photos were deleted from a walked folder."""
        missing: set[str] = set()  # a set: folders given twice (a folder and one inside it) count once
        for root in roots:
            prefix = str(root).rstrip(os.sep) + os.sep
            # A range over the primary key: every path that starts with prefix ("/" + 1 == "0").
            rows = self.conn.execute("SELECT f.path, f.photo_id, p.status FROM files f LEFT JOIN photos p "
                                     "ON p.id = f.photo_id WHERE f.path >= ? AND f.path < ?",
                                     [prefix, prefix[:-1] + chr(ord(os.sep) + 1)]).fetchall()
            for path, photo_id, status in rows:
                # Not walked is not gone: a file given by name in a hidden folder or with another suffix.
                if path in found or os.path.lexists(path):
                    continue
                if photo_id is not None:
                    other = self.conn.execute(
                        "SELECT path FROM files WHERE photo_id = ? AND path != ? ORDER BY error IS NOT NULL, "
                        "seen_at DESC LIMIT 1", [photo_id, path]).fetchone()
                    if other is None:
                        if status == "detected":  # a file that never decoded had no faces to keep
                            missing.add(path)
                        continue
                    self.conn.execute("UPDATE photos SET path = ? WHERE id = ? AND path = ?",
                                      [other[0], photo_id, path])
                self.conn.execute("DELETE FROM files WHERE path = ?", [path])
        return len(missing)

    def _store_faces(self, photo_id: int, faces: list[_NewFace]) -> list[int]:
        # Re-detection (--force, new settings) updates matching faces in place, so face ids, names and
        # corrections survive; only faces that no longer exist are deleted.
        old = self.conn.execute("SELECT id, x1, y1, x2, y2 FROM faces WHERE photo_id = ?", [photo_id]).fetchall()
        unmatched = {int(r[0]): (r[1], r[2], r[3], r[4]) for r in old}
        ids: list[int] = []
        for face in faces:
            best = _best_overlap(face.box, unmatched)
            row = [*face.box, json.dumps(face.landmarks), face.probability, face.crop, self.crop_format]
            if best is not None:
                del unmatched[best]
                self.conn.execute(
                    "UPDATE faces SET x1 = ?, y1 = ?, x2 = ?, y2 = ?, landmarks = ?, probability = ?, crop = ?, "
                    "crop_format = ? WHERE id = ?",
                    row + [best],
                )
                self.conn.execute("DELETE FROM embeddings WHERE face_id = ?", [best])
                ids.append(best)
            else:
                cursor = self.conn.execute(
                    "INSERT INTO faces (photo_id, x1, y1, x2, y2, landmarks, probability, crop, crop_format, "
                    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [photo_id] + row + [now()],
                )
                ids.append(int(cursor.lastrowid or 0))
        for face_id in unmatched:
            self.conn.execute("DELETE FROM faces WHERE id = ?", [face_id])
            self.deleted_faces = True
        return ids


def _scaled_face(face: FaceLike, scale: float) -> tuple[tuple[float, float, float, float], list[list[float]]]:
    inv = 1.0 / scale if scale > 0 else 1.0
    x1, y1, x2, y2 = (round(float(v) * inv, 2) for v in face.box)
    landmarks = [[round(float(x) * inv, 2), round(float(y) * inv, 2)] for x, y in face.landmarks]
    return (x1, y1, x2, y2), landmarks


@dataclass(frozen=True)
class _Recorded:
    """What the catalog holds about a path detected under the current key (``files`` and its photo)."""

    size: int
    mtime: float
    seen_at: str  # when the file was last read (``migrations.timestamp``)
    photo_id: int
    photo_path: str
    hash: str


def _racy(recorded: _Recorded, window: float) -> bool:
    """True when the file's mtime is not clearly older than the read that recorded it (git's "racy clean").

    A write in the tick the file was read in leaves its mtime as recorded, so only its content can show
    the change; ``window`` covers coarse timestamps. Example: mtime 12:00:00.4, read 12:00:00.6 -> True.
    """
    try:
        seen = datetime.fromisoformat(recorded.seen_at).timestamp()
    except ValueError:  # not written by facecluster: nothing vouches for the file
        return True
    return recorded.mtime >= seen - window


def detect_paths(
    catalog: Catalog,
    paths: Iterable[Path],
    detector: DetectorLike | Callable[[], DetectorLike],
    *,
    config: DetectConfig = DetectConfig(),
    crop_config: EmbedConfig = EmbedConfig(),
    pipeline: PipelineConfig = PipelineConfig(),
    embedder: Embedder | None = None,
    crop: CropFn | None = None,
    force: bool = False,
    checksum: bool = False,
    progress: ProgressFn = null_progress,
) -> DetectReport:
    """Detect faces in the photos under ``paths``, store them with their aligned crops; skip finished work.

    ``detector`` may be a zero-argument factory: it is then built only if some photo needs detection
    (a re-run over an unchanged library never loads the model). Crops follow ``crop_config`` (size, margin,
    landmark alignment: the embedder's preprocessing). With ``embedder``, the crops of each
    batch are embedded on the way, so ``cluster`` decodes every photo once. A file with the size and mtime
    recorded is skipped unread; with ``checksum`` it is hashed, and detected again if its content changed
    (``report.checked``, ``report.checked_changed``); ``force`` detects every file again::

        report = detect_paths(catalog, [Path("Pictures")], detector, checksum=True)
        report.failed  # [FileFailure(path=..., error=...)]
    """
    from facecluster.images import printable_path

    paths = [Path(os.path.abspath(Path(p).expanduser())) for p in paths]
    files, failures = expand_paths(paths)
    report = DetectReport(files=len(files) + len(failures), failed=list(failures))
    key = detector_key(config, crop_config)
    conn = catalog.db.conn
    writer = _Writer(catalog, key, report, pipeline.crop_format, pipeline.same_face_max_diff,
                     pipeline.same_face_shift_px)
    # Folders walked in full: a path under one of them that was not found is gone. (Not a folder with a
    # sub-folder that could not be listed: what is in it is unknown.)
    unlisted = [f.path for f in failures if f.error.startswith(UNLISTABLE)]
    # Nor a folder whose name is not UTF-8: the catalog holds no path under it (paths are stored as text).
    walked = [root for root in paths if root.is_dir() and printable_path(root) == str(root)
              and not any(p == str(root) or p.startswith(str(root).rstrip(os.sep) + os.sep) for p in unlisted)]
    crop_fn = crop
    # A factory is called only when a photo needs detection.
    model: DetectorLike | None = detector if hasattr(detector, "detect") else None

    # Unchanged files (same path, size and mtime, detected under this key) are skipped without hashing, but
    # those whose content the size and mtime cannot vouch for: every file with ``checksum``, and any
    # recorded too soon after its mtime (``_racy``). These are hashed, and detected again if it differs.
    done_files = {
        row[0]: _Recorded(*row[1:])
        for row in conn.execute(
            "SELECT f.path, f.size, f.mtime, f.seen_at, p.id, p.path, p.hash FROM files f "
            "JOIN photos p ON p.id = f.photo_id WHERE p.status = 'detected' AND p.detector = ? AND f.error IS NULL",
            [key],
        )
    }
    todo: set[Path] = set()
    unsure: list[tuple[Path, _Recorded]] = []
    relink: list[tuple[int, str, str]] = []  # (photo, an existing path of it, its recorded path that is gone)

    def unchanged(path: Path, previous: _Recorded) -> None:
        report.skipped += 1
        # A photo also seen at another path (a copy) that is gone: point it here.
        if previous.photo_path != str(path) and not os.path.exists(previous.photo_path):
            relink.append((previous.photo_id, str(path), previous.photo_path))

    for path in files:
        previous = done_files.get(str(path))
        if previous is not None and not force:
            try:
                stat = path.stat()
            except OSError:
                previous = None
            else:
                if stat.st_size == previous.size and stat.st_mtime == previous.mtime:
                    if checksum or _racy(previous, pipeline.racy_window_s):
                        unsure.append((path, previous))
                    else:
                        unchanged(path, previous)
                    continue
        todo.add(path)
    reread: list[tuple[str, float]] = []  # racy files found unchanged: (path, when they were read)
    hashes = _read_in_order(_content_hash, [path for path, _ in unsure], pipeline.prefetch_workers)
    for (path, previous), (digest, seen) in zip(unsure, hashes):
        report.checked += 1
        if digest == previous.hash:
            unchanged(path, previous)
            if _racy(previous, pipeline.racy_window_s):
                reread.append((str(path), seen))
        else:
            # Other content goes the way of any edited file (hashed once more there); so does a file that
            # cannot be read now, which is recorded as failed there.
            if digest is not None:
                report.checked_changed += 1
            todo.add(path)
        # A stage of its own: hashing runs at disk speed, and counted as detection it made its rate a lie.
        progress("hash", report.checked, len(unsure))
    progress("detect", report.skipped, len(files))
    if walked or relink or reread:
        with catalog.transaction():
            report.missing = writer.prune_vanished(walked, {str(path) for path in files})
            writer.relink(relink)
            writer.reread(reread)
    if not todo:
        return report
    ordered = [path for path in files if path in todo]  # as walked, with the files whose content changed

    known = frozenset(
        row[0] for row in conn.execute("SELECT hash FROM photos WHERE status = 'detected' AND detector = ?", [key])
    )
    if embedder is not None:
        catalog.ensure_model(embedder.model_id, embedder.dim, path=_str_or_none(getattr(embedder, "path", None)))

    batch: list[_Prepared] = []
    done = report.skipped

    def compute(loaded: list[_Prepared]) -> tuple[list[list[_NewFace]], np.ndarray | None]:
        # A worker thread's share: detect, crop and embed one batch (no catalog access off the main thread).
        if not loaded:
            return [], None
        assert model is not None and crop_fn is not None
        detections = model.detect([item.image.pixels for item in loaded])
        per_photo: list[list[_NewFace]] = []
        for item, faces in zip(loaded, detections):
            stored = []
            for face in faces:
                box, landmarks = _scaled_face(face, item.image.scale)
                pixels = crop_fn(item.image.pixels, face, size=crop_config.crop_size, margin=crop_config.margin,
                                 align=crop_config.align)
                stored.append(_NewFace(box, landmarks, float(face.probability), encode_crop(pixels, pipeline)))
            per_photo.append(stored)
        vectors: np.ndarray | None = None
        all_faces = [face for faces in per_photo for face in faces]
        if embedder is not None and all_faces:
            # Embed what is stored (the decoded crop), so `embed --force` later gives the same vectors.
            vectors = embedder.embed(np.stack([decode_crop(face.crop) for face in all_faces]))
        return per_photo, vectors

    def _recrop(item: _Prepared) -> RecropFn:
        turned: dict[int, np.ndarray] = {}

        def recrop(box: Sequence[float], landmarks: Sequence[Sequence[float]], turns: int = 0,
                   scale: float = 1.0) -> np.ndarray:
            pixels = item.image.pixels
            if turns % 4:
                if turns % 4 not in turned:  # np.rot90 turns counter-clockwise: it undoes clockwise turns
                    turned[turns % 4] = np.ascontiguousarray(np.rot90(pixels, turns % 4))
                pixels = turned[turns % 4]
            scale *= item.image.scale  # stored geometry is full-size; the pixels may be downscaled
            face = _Geometry(_framed_box(box, (0, 0), 0, scale),
                             tuple((float(x) * scale, float(y) * scale) for x, y in landmarks))
            assert crop_fn is not None
            return crop_fn(pixels, face, size=crop_config.crop_size, margin=crop_config.margin,
                           align=crop_config.align)

        return recrop

    def write(items: list[_Prepared], result: tuple[list[list[_NewFace]], np.ndarray | None]) -> None:
        nonlocal done
        per_photo, vectors = result
        loaded = [item for item in items if item.image is not None]
        with catalog.transaction():  # a batch's photos, faces and vectors land together
            face_ids: list[int] = []
            for item, faces in zip(loaded, per_photo):
                face_ids.extend(writer.detected(item, faces, _recrop(item)))
                report.detected += 1
                report.faces += len(faces)
            for item in items:  # after the detected ones: a copy of a photo of this batch needs its row
                if item.error is not None:
                    writer.failed(item)
                elif item.known:
                    writer.known(item)
            if vectors is not None and embedder is not None:
                _insert_embeddings(conn, embedder, face_ids, vectors)
                report.embedded += len(face_ids)
        done += len(items)
        progress("detect", done, len(files))

    in_flight: deque[tuple[list[_Prepared], Future[Any]]] = deque()
    pool: ThreadPoolExecutor | None = None
    workers = 0  # decided by the first batch that has the model (and so knows its device)

    def submit() -> None:
        nonlocal model, crop_fn, pool, workers
        items = list(batch)
        batch.clear()
        loaded = [item for item in items if item.image is not None]
        if loaded and model is None:
            model = detector()  # type: ignore[operator]  # model is None only when detector is the factory
        if crop_fn is None:
            crop_fn = default_crop()
        if not workers and model is not None:  # not before: a batch with nothing to detect builds no model
            workers = compute_workers(pipeline.workers, _device_of(model, embedder))
            if workers > 1:
                pool = ThreadPoolExecutor(workers, thread_name_prefix="facecluster-compute",
                                          initializer=_set_threads, initargs=(threads_per_worker(workers),))
        if pool is None:
            # One worker: this thread, with all its torch threads (a multi-threaded torch off the main
            # thread ran ~15-30% slower here), and each batch written as soon as it is computed.
            write(items, compute(loaded))
            return
        in_flight.append((items, pool.submit(compute, loaded)))
        while len(in_flight) > workers:  # bounded: at most one batch waiting per busy worker
            write_next()

    def write_next() -> None:
        items, future = in_flight.popleft()
        write(items, future.result())  # a worker's exception (or Ctrl-C while waiting) is raised here

    hashes_this_run: set[str] = set()
    try:
        for item in _prefetched(ordered, known, config.max_side, force, pipeline.prefetch_workers):
            if item.image is not None and item.hash is not None:
                if item.hash in hashes_this_run:
                    # A copy (or link) of a photo met earlier in this run: detected once, linked here.
                    item.image, item.known = None, True
                hashes_this_run.add(item.hash)
            batch.append(item)
            images = [b.image.pixels for b in batch if b.image is not None]
            if (len(images) >= pipeline.batch_size or len(batch) >= 4 * pipeline.batch_size
                    or sum(image.shape[0] * image.shape[1] for image in images) >= pipeline.batch_pixels):
                submit()
        if batch:
            submit()
        while in_flight:
            write_next()
        with catalog.transaction() as conn:
            if writer.finish():
                from facecluster.people import tidy_after_deleted_faces

                # People left without a face go, and clusters show the counts they have now.
                report.removed_people = tidy_after_deleted_faces(conn)
    finally:
        # On Ctrl-C or an error: drop batches not started; those running finish but are not written.
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return report


def compute_workers(setting: int, device: str) -> int:
    """How many batches run side by side: ``setting`` when positive; else one per CPU thread torch may use
    on the CPU (each worker then runs torch single-threaded, ``threads_per_worker``) and one on a GPU.

    Two single-threaded workers beat one two-threaded loop by ~30% on 2 cores: no barrier after every
    small operator, and one worker's numpy and Python steps overlap the other's convolutions. Example:
    ``compute_workers(0, "cuda")`` -> 1
    """
    if setting > 0:
        return setting
    if device != "cpu":
        return 1
    import torch

    return max(1, torch.get_num_threads())


def threads_per_worker(workers: int) -> int:
    """The torch threads each of ``workers`` gets: this thread's share, at least one.

    Example: with ``torch.get_num_threads() == 2``, ``threads_per_worker(2)`` -> 1, ``threads_per_worker(1)`` -> 2
    """
    import torch

    return max(1, torch.get_num_threads() // max(1, workers))


def _set_threads(threads: int) -> None:
    # A worker thread's torch thread count (torch keeps it per thread): its share of the cores.
    import torch

    torch.set_num_threads(threads)


def _device_of(*candidates: Any) -> str:
    # The torch device type of the first model that names one ("cpu" for fakes and factories).
    for candidate in candidates:
        device = getattr(candidate, "device", None)
        if device is not None:
            return str(getattr(device, "type", device)).split(":")[0]
    return "cpu"


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def _checked_vectors(embedder: Embedder, n: int, vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape != (n, embedder.dim):
        raise FaceclusterError(f"embedder {embedder.model_id} returned shape {vectors.shape}, expected ({n}, {embedder.dim})")
    return vectors


def _insert_embeddings(conn: Any, embedder: Embedder, face_ids: Sequence[int], vectors: np.ndarray) -> None:
    vectors = _checked_vectors(embedder, len(face_ids), vectors)
    stamp = now()
    conn.executemany(
        "INSERT OR REPLACE INTO embeddings (face_id, model_id, dim, dtype, vector, created_at) "
        "VALUES (?, ?, ?, 'float32', ?, ?)",
        [(int(fid), embedder.model_id, embedder.dim, encode_vector(vec), stamp) for fid, vec in zip(face_ids, vectors)],
    )


# -- embedding -----------------------------------------------------------------------------------------


def pending_faces(catalog: Catalog, model_id: str, *, force: bool = False) -> list[int]:
    """Ids of faces (with a stored crop) that have no vector of ``model_id`` (all of them with ``force``)."""
    if force:
        sql = "SELECT id FROM faces WHERE crop IS NOT NULL ORDER BY id"
        args: list[Any] = []
    else:
        sql = (
            "SELECT f.id FROM faces f LEFT JOIN embeddings e ON e.face_id = f.id AND e.model_id = ? "
            "WHERE f.crop IS NOT NULL AND e.face_id IS NULL ORDER BY f.id"
        )
        args = [model_id]
    return [int(row[0]) for row in catalog.db.execute(sql, args)]


def embed_pending(
    catalog: Catalog,
    embedder: Embedder,
    *,
    batch_size: int = PipelineConfig.embed_batch_size,
    force: bool = False,
    progress: ProgressFn = null_progress,
) -> EmbedReport:
    """Embed every face that has no vector for ``embedder.model_id``, from the stored crops, in batches.

    Each batch commits on its own (Ctrl-C keeps the finished ones)::

        embed_pending(catalog, embedder).embedded  # 1234
    """
    todo = pending_faces(catalog, embedder.model_id, force=force)
    if todo:  # ``dim`` may load the network (``LazyEmbedder``): only when there is work for it
        catalog.ensure_model(embedder.model_id, embedder.dim, path=_str_or_none(getattr(embedder, "path", None)))
    report = EmbedReport(model_id=embedder.model_id)
    progress("embed", 0, len(todo))
    conn = catalog.db.conn
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(f"SELECT id, crop FROM faces WHERE id IN ({marks})", chunk).fetchall()
        ids: list[int] = []
        crops: list[np.ndarray] = []
        blobs: dict[int, bytes] = {}
        for face_id, blob in rows:
            try:
                crops.append(decode_crop(blob))
                ids.append(int(face_id))
                blobs[int(face_id)] = blob
            except ImageError as exc:
                report.failed.append({"face_id": int(face_id), "error": f"stored crop unreadable: {exc.reason}"})
        if ids:
            vectors = _checked_vectors(embedder, len(ids), embedder.embed(np.stack(crops)))
            with catalog.transaction():
                # Another process may have deleted a face (forget, a replaced photo) or stored a new crop
                # for it (detect) while the model ran: those get no vector from the crop read before.
                marks = ",".join("?" * len(ids))
                same = {int(i) for i, blob in conn.execute(f"SELECT id, crop FROM faces WHERE id IN ({marks})", ids)
                        if blob == blobs[int(i)]}
                keep = [k for k, face_id in enumerate(ids) if face_id in same]
                _insert_embeddings(conn, embedder, [ids[k] for k in keep], vectors[keep])
            report.embedded += len(keep)
        progress("embed", start + len(chunk), len(todo))
    return report


def print_removed_people(names: Sequence[str], stream: Any = None) -> None:
    """One line on stderr naming the people a run removed because their last face went with its photo."""
    if names:
        (stream or sys.stderr).write(f"removed (no faces left: their photos were replaced): {', '.join(names)}\n")


def print_failures(failures: Sequence[FileFailure], limit: int = 20, stream: Any = None) -> None:
    """One line per failed file on stderr (the first ``limit``), then how many more."""
    from facecluster.images import shown_path

    out = stream or sys.stderr
    for failure in failures[:limit]:
        # A file name may hold a newline or an escape sequence: escaped, so each failure stays one line.
        out.write(f"failed: {shown_path(failure.path)}: {shown_path(failure.error)}\n")
    if len(failures) > limit:
        out.write(f"... and {len(failures) - limit} more failed files (see `facecluster faces` / the runs table)\n")

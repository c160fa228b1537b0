"""Fakes for tests: a detector, an embedder, a crop function, clustering, and a small generated library.

The generated photos are grey canvases with solid coloured squares: each square is a "face" and its
colour is the identity. ``FakeDetector`` finds the squares, ``FakeEmbedder`` maps a crop's colour to a
one-hot vector (plus a little noise), so identities are 2.0 apart in squared L2 and clustering is exact::

    paths = make_library(tmp_path / "photos")
    detect_paths(catalog, [tmp_path / "photos"], FakeDetector(), crop=fake_crop)
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

BACKGROUND = (128, 128, 128)
#: identity -> colour of its "face"
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 30, 30),
    (30, 200, 30),
    (30, 30, 230),
    (230, 230, 30),
    (230, 30, 230),
    (30, 230, 230),
    (250, 250, 250),
    (10, 10, 10),
)
#: squares of this colour are detected with a low probability (below ClusterConfig.min_probability)
LOW_PROBABILITY_COLOUR = (200, 120, 40)


@dataclass(frozen=True)
class FakeFace:
    """Same fields as ``facecluster.detect.DetectedFace``."""

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    probability: float


class FakeDetector:
    """Finds solid squares that differ from the grey background; counts its calls and images."""

    def __init__(self) -> None:
        self.calls = 0
        self.images = 0

    def detect(self, images: list[np.ndarray]) -> list[list[FakeFace]]:
        self.calls += 1
        self.images += len(images)
        out = []
        for pixels in images:
            mask = np.abs(pixels.astype(np.int16) - 128).max(axis=2) > 40
            labelled, n = ndimage.label(mask)
            faces = []
            for sl in ndimage.find_objects(labelled):
                if sl is None:
                    continue
                y1, y2, x1, x2 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
                if min(y2 - y1, x2 - x1) < 4:
                    continue
                colour = pixels[(y1 + y2) // 2, (x1 + x2) // 2].astype(int)
                low = np.abs(colour - np.array(LOW_PROBABILITY_COLOUR)).max() < 30
                w, h = x2 - x1, y2 - y1
                marks = ((x1 + 0.3 * w, y1 + 0.35 * h), (x1 + 0.7 * w, y1 + 0.35 * h), (x1 + 0.5 * w, y1 + 0.55 * h),
                         (x1 + 0.35 * w, y1 + 0.75 * h), (x1 + 0.65 * w, y1 + 0.75 * h))
                faces.append(FakeFace((float(x1), float(y1), float(x2), float(y2)), marks, 0.5 if low else 0.999))
            faces.sort(key=lambda f: -(f.box[2] - f.box[0]))
            out.append(faces)
        return out


def fake_crop(pixels: np.ndarray, face: Any, size: int = 160, margin: int = 0, **_: Any) -> np.ndarray:
    """Crop the box (clamped) and resize it to size x size, like ``align.crop_face``."""
    h, w = pixels.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in face.box)
    x1, y1, x2, y2 = max(0, x1 - margin // 2), max(0, y1 - margin // 2), min(w, x2 + margin // 2), min(h, y2 + margin // 2)
    region = Image.fromarray(np.ascontiguousarray(pixels[y1:y2, x1:x2]))
    return np.asarray(region.resize((size, size), Image.BILINEAR))


class FakeEmbedder:
    """One-hot vector of the nearest palette colour of the crop's centre, plus deterministic noise."""

    def __init__(self, dim: int = 16, model_id: str = "fake:0001", noise: float = 0.05) -> None:
        self.dim = dim
        self.model_id = model_id
        self.noise = noise
        self.embedded = 0

    def embed(self, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        self.embedded += len(crops)
        out = np.zeros((len(crops), self.dim), dtype=np.float32)
        palette = np.array(PALETTE + (LOW_PROBABILITY_COLOUR,), dtype=np.float32)
        for i, crop in enumerate(crops):
            h, w = crop.shape[:2]
            centre = crop[h // 2 - 2 : h // 2 + 2, w // 2 - 2 : w // 2 + 2].reshape(-1, 3).mean(axis=0)
            identity = int(np.argmin(((palette - centre) ** 2).sum(axis=1)))
            seed = int.from_bytes(hashlib.sha256(crop.tobytes()).digest()[:4], "little")
            vector = np.random.default_rng(seed).normal(0, self.noise, self.dim).astype(np.float32)
            vector[identity % self.dim] += 1.0
            out[i] = vector / np.linalg.norm(vector)
        return out


class FakeAlgorithms:
    """Stand-in for ``facecluster.cluster``: connected components below the threshold, with constraints."""

    @staticmethod
    def cluster_embeddings(X: np.ndarray, config: Any, *, groups=None, must_link=None, cannot_link_pairs=None,
                           progress=None) -> np.ndarray:
        n = len(X)
        parent = list(range(n))

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        members = {i: {i} for i in range(n)}
        bad = {(int(a), int(b)) for a, b in (cannot_link_pairs if cannot_link_pairs is not None else [])}

        def allowed(a: int, b: int) -> bool:
            ma, mb = members[a], members[b]
            if groups is not None and {groups[i] for i in ma} & {groups[j] for j in mb}:
                return False
            return not any((i, j) in bad or (j, i) in bad for i in ma for j in mb)

        def union(a: int, b: int) -> None:
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[rb] = ra
                members[ra] |= members.pop(rb)

        if must_link is not None:
            first: dict[int, int] = {}
            for i, m in enumerate(must_link):
                if m >= 0:
                    union(first.setdefault(int(m), i), i)
        d2 = ((X[:, None, :] - X[None, :, :]) ** 2).sum(-1)
        for a, b in sorted(((a, b) for a in range(n) for b in range(a + 1, n)), key=lambda p: d2[p]):
            if d2[a, b] > config.threshold:
                break
            ra, rb = find(a), find(b)
            if ra != rb and allowed(ra, rb):
                union(ra, rb)
        roots = [find(i) for i in range(n)]
        sizes = {r: roots.count(r) for r in set(roots)}
        kept = sorted((r for r in sizes if sizes[r] >= config.min_cluster_size), key=lambda r: (-sizes[r], r))
        index = {r: k for k, r in enumerate(kept)}
        return np.array([index.get(r, -1) for r in roots], dtype=np.int64)

    @staticmethod
    def assign_to_known(X_new, X_known, known_labels, *, threshold, k=10, **kwargs) -> np.ndarray:
        out = np.full(len(X_new), -1, dtype=np.int64)
        for i, x in enumerate(X_new):
            d2 = ((X_known - x) ** 2).sum(axis=1)
            j = int(np.argmin(d2))
            if d2[j] <= threshold:
                out[i] = known_labels[j]
        return out


def make_photo(path: Path, identities: list[int], size: int = 96, side: int = 28, colour: tuple | None = None) -> Path:
    """Save a grey photo with one square per identity (left to right); PNG or JPEG by suffix."""
    pixels = np.full((size, size, 3), BACKGROUND, dtype=np.uint8)
    for k, identity in enumerate(identities):
        x = 4 + k * (side + 8)
        pixels[20 : 20 + side, x : x + side] = colour if colour is not None else PALETTE[identity]
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=98) if path.suffix.lower() in {".jpg", ".jpeg"} else Image.fromarray(pixels).save(path)
    return path


#: the generated library: relative path -> identities in the photo
LIBRARY: dict[str, list[int]] = {
    "2020/a1.png": [0],
    "2020/a2.png": [0, 1],
    "2020/trip/b1.png": [1],
    "2020/trip/b2.jpg": [1, 2],
    "2021/c1.png": [2],
    "2021/c2.png": [2, 0],
    "2021/d1.png": [3],
    "2021/empty.png": [],
}


def make_library(root: Path, photos: dict[str, list[int]] | None = None) -> list[Path]:
    """Write the generated library under ``root``; returns the photo paths (sorted)."""
    return sorted(make_photo(root / rel, ids) for rel, ids in (photos or LIBRARY).items())


def insert_photo(db: Any, path: Path, **columns: Any) -> int:
    """Insert a detected photo's catalog row directly (test setup, no detector): its id.

    ``columns`` set or override fields (``hash`` defaults to one made from the path)::

        pid = insert_photo(catalog.db, tmp_path / "a.jpg", width=120, height=80)
    """
    from facecluster.migrations import now

    t = now()
    row = {"hash": f"h-{path}", "path": str(path), "size": 1, "mtime": 0.0, "orientation": 1,
           "status": "detected", "n_faces": 1, "added_at": t, "updated_at": t, **columns}
    return int(db["photos"].insert(row).last_pk)


@contextlib.contextmanager
def unblocked_fifo(path: Path, after: float = 10.0) -> Iterator[Path]:
    """Make a FIFO at ``path``; should the code under test block opening it, a writer opens and closes it
    after ``after`` seconds so the test fails instead of hanging the whole run::

        with unblocked_fifo(tmp_path / "x.jpg") as fifo:
            with pytest.raises(ImageError): load_image(fifo)
    """
    os.mkfifo(path)

    def unblock() -> None:
        try:  # succeeds only while a reader waits in open(): it then sees end-of-file
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        except OSError as exc:
            if exc.errno not in (errno.ENXIO, errno.ENOENT):
                raise

    timer = threading.Timer(after, unblock)
    timer.daemon = True
    timer.start()
    try:
        yield path
    finally:
        timer.cancel()

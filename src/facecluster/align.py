"""Face crops as FaceNet expects them: a square crop around the MTCNN box plus a margin, resized.

The margin is counted in pixels of the final crop (as in facenet-pytorch), so a face is framed the
same way whatever the photo's resolution: with ``size=160, margin=32`` the box fills 128 of the 160 pixels.
Parts of the margin that fall outside the photo are black, never squeezed (no aspect distortion)::

    crop = crop_face(pixels, face, size=160, margin=32)   # (160, 160, 3) uint8 RGB

With ``align=True`` the crop is instead a similarity transform (rotation, scale, shift) that maps the five
MTCNN landmarks onto where they sit on average in an upright margin crop (``LANDMARK_TEMPLATE``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from facecluster.errors import ImageError

#: Mean landmark positions (left eye, right eye, nose, left and right mouth corner) as fractions of the
#: MTCNN box, measured on 3,183 LFW-dev detections: used as the target for ``align=True``.
LANDMARK_TEMPLATE = np.array(
    [[0.2900, 0.3898], [0.7389, 0.3817], [0.5180, 0.5845], [0.3257, 0.7591], [0.7223, 0.7524]]
)


class FaceLike(Protocol):
    """What cropping needs from a detection (``facecluster.detect.DetectedFace`` has it)."""

    @property
    def box(self) -> object: ...  # x1, y1, x2, y2 in pixels

    @property
    def landmarks(self) -> object: ...  # 5 × (x, y) in pixels, or None


@dataclass(frozen=True)
class CentreFace:
    """A stand-in detection for photos where no face was found: a central square box, no landmarks."""

    box: tuple[float, float, float, float]
    landmarks: None = None
    probability: float = 0.0


def centre_face(shape: tuple[int, int], width: float = 0.37, height: float = 0.50) -> CentreFace:
    """A central box, ``width`` × ``height`` as fractions of the shorter image side.

    The defaults match the median MTCNN box on 250×250 LFW photos (93 × 124 px, centred), the use it
    exists for: a stand-in when no face is found in a photo known to show one::

        crop_face(pixels, centre_face(pixels.shape[:2]))
    """
    rows, cols = shape
    w, h = width * min(rows, cols), height * min(rows, cols)
    cx, cy = cols / 2, rows / 2
    return CentreFace((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))


def _expanded_box(box: np.ndarray, size: int, margin: int) -> np.ndarray:
    # margin is in final-crop pixels: the box becomes (size - margin) of size, margin/2 on each side.
    if not 0 <= margin < size:
        raise ValueError(f"margin must be in [0, {size}), got {margin}")
    x1, y1, x2, y2 = box
    grow_x = margin * (x2 - x1) / (size - margin) / 2
    grow_y = margin * (y2 - y1) / (size - margin) / 2
    return np.array([x1 - grow_x, y1 - grow_y, x2 + grow_x, y2 + grow_y])


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (Umeyama 1991) mapping ``src`` points onto ``dst``: 2×3 matrix."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:  # a reflection is not a pose change: forbid it
        d[1, 1] = -1
    rotation = u @ d @ vt
    scale = np.trace(np.diag(s) @ d) / src_c.var(0).sum()
    shift = dst_mean - scale * rotation @ src_mean
    return np.hstack([scale * rotation, shift[:, None]])


def crop_face(pixels: np.ndarray, face: FaceLike, size: int = 160, margin: int = 32,
              align: bool = False) -> np.ndarray:
    """Cut one face out of an (H, W, 3) uint8 RGB photo: (size, size, 3) uint8.

    Keyword arguments: ``size`` of the square crop [160]; ``margin`` in crop pixels around the box [32];
    ``align`` rotate/scale by the landmarks instead of cropping the box [False; falls back to the box
    when the face has no landmarks]. Example::

        crop = crop_face(np.asarray(img), faces[0], size=160, margin=32)
    """
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ImageError(f"crop_face needs an (H, W, 3) uint8 RGB array, got {pixels.dtype} {pixels.shape}")
    box = np.asarray(face.box, np.float64).reshape(4)
    if not np.all(np.isfinite(box)) or box[2] <= box[0] or box[3] <= box[1]:
        raise ImageError(f"face box {box.tolist()} is empty or not finite")
    image = Image.fromarray(pixels)
    landmarks = getattr(face, "landmarks", None)
    if align and landmarks is not None:
        points = np.asarray(landmarks, np.float64).reshape(5, 2)
        # Target: where the template puts the landmarks inside a margin crop of this size.
        inner = size - margin
        target = margin / 2 + LANDMARK_TEMPLATE * inner
        forward = np.vstack([_similarity(points, target), [0, 0, 1]])
        inverse = np.linalg.inv(forward)[:2].ravel()  # PIL maps output pixels back to input pixels
        out = image.transform((size, size), Image.Transform.AFFINE, tuple(inverse), Image.Resampling.BILINEAR)
        return np.asarray(out, dtype=np.uint8)
    x1, y1, x2, y2 = _expanded_box(box, size, margin)
    # PIL's crop pads outside the photo with black; the resize filter antialiases when shrinking.
    crop = image.crop((int(round(x1)), int(round(y1)), int(round(x2)), int(round(y2))))
    return np.asarray(crop.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)

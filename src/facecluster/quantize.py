"""8-bit embeddings: one byte per dimension (the FaceNet paper's 128 bytes per 128-d face).

Each row is scaled by its own largest magnitude, so every code in 1..255 is used around 128 = zero;
the catalog keeps the codes in ``embeddings.vector`` with ``dtype = 'uint8'`` and the row's scale in
``embeddings.scale``::

    codes, scale = quantize(X)          # uint8 (n, d), float32 (n,)
    X8 = dequantize(codes, scale)       # float32 (n, d), unit rows again

The accuracy cost on unit vectors is an error of at most ``scale / 2`` per coordinate; measured
figures (squared-distance error, verification and clustering) are in ``docs/scaling.md``.
"""

from __future__ import annotations

import numpy as np

from facecluster.errors import DataError

#: Codes are ``round(x / scale) + ZERO``; ``ZERO`` itself encodes 0.0.
ZERO = 128
_LEVELS = 127  # codes 1..255: symmetric around ZERO, so +x and -x quantise alike


def quantize(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quantise float rows to uint8 codes with one float32 scale per row.

    >>> codes, scale = quantize(np.array([[0.6, -0.8]], dtype=np.float32))
    >>> codes.tolist(), round(float(scale[0]), 5)
    ([[223, 1]], 0.0063)
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"embeddings to quantise must be 2-d, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("embeddings to quantise hold NaN or infinite values")
    peak = np.abs(X).max(axis=1) if X.shape[1] else np.zeros(len(X), dtype=np.float32)
    scale = np.where(peak > 0, peak / _LEVELS, 1.0).astype(np.float32)
    codes = np.rint(X / scale[:, None]).clip(-_LEVELS, _LEVELS) + ZERO
    return codes.astype(np.uint8), scale


def dequantize(codes: np.ndarray, scale: np.ndarray, *, normalize: bool = True) -> np.ndarray:
    """Float32 rows back from codes and scales; ``normalize`` puts them back on the unit sphere.

    >>> X = dequantize(*quantize(np.array([[0.6, -0.8]], dtype=np.float32)))
    >>> [round(float(x), 2) for x in X[0]]
    [0.6, -0.8]
    """
    codes = np.asarray(codes)
    if codes.dtype != np.uint8 or codes.ndim != 2:
        raise DataError(f"quantised embeddings must be a 2-d uint8 array, got {codes.dtype} {codes.shape}")
    scale = np.asarray(scale, dtype=np.float32).reshape(-1)
    if scale.shape != (len(codes),):
        raise DataError(f"need one scale per quantised row ({len(codes)}), got {scale.shape}")
    X = (codes.astype(np.float32) - ZERO) * scale[:, None]
    if normalize:
        norms = np.linalg.norm(X, axis=1, keepdims=True)
        X /= np.where(norms > 0, norms, 1.0)
    return X


def to_blob(codes_row: np.ndarray) -> bytes:
    """One quantised row as the bytes stored in ``embeddings.vector`` (d bytes).

    >>> len(to_blob(quantize(np.ones((1, 128), dtype=np.float32))[0][0]))
    128
    """
    return np.ascontiguousarray(codes_row, dtype=np.uint8).tobytes()


def from_blob(blob: bytes, scale: float, *, normalize: bool = True) -> np.ndarray:
    """One row back from ``embeddings.vector`` bytes and ``embeddings.scale``.

    >>> X = np.array([[0.6, -0.8]], dtype=np.float32); c, s = quantize(X)
    >>> [round(float(x), 2) for x in from_blob(to_blob(c[0]), float(s[0]))]
    [0.6, -0.8]
    """
    codes = np.frombuffer(blob, dtype=np.uint8)[None, :]
    return dequantize(codes, np.array([scale], dtype=np.float32), normalize=normalize)[0]

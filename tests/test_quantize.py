"""8-bit embeddings: round trip, error bound, byte layout, and what it costs clustering."""

from __future__ import annotations

import numpy as np
import pytest

from facecluster.cluster import cluster_embeddings
from facecluster.cluster_metrics import cluster_metrics
from facecluster.config import ClusterConfig
from facecluster.errors import DataError
from facecluster.quantize import ZERO, dequantize, from_blob, quantize, to_blob


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def test_codes_are_one_byte_per_dimension_and_symmetric() -> None:
    X = unit(np.random.default_rng(0).normal(size=(50, 128)))
    codes, scale = quantize(X)
    assert codes.dtype == np.uint8 and codes.shape == (50, 128) and codes.nbytes == 50 * 128
    assert scale.dtype == np.float32 and scale.shape == (50,)
    assert codes.min() >= 1  # 0 is never used: +x and -x have mirrored codes
    c_neg, _ = quantize(-X)
    assert ((c_neg.astype(int) - ZERO) == -(codes.astype(int) - ZERO)).all()


def test_round_trip_error_is_within_half_a_step() -> None:
    X = unit(np.random.default_rng(1).normal(size=(200, 128)))
    codes, scale = quantize(X)
    raw = dequantize(codes, scale, normalize=False)
    assert np.abs(raw - X).max() <= scale.max() / 2 + 1e-7
    back = dequantize(codes, scale)
    assert np.allclose(np.linalg.norm(back, axis=1), 1.0, atol=1e-6)


def test_squared_distances_barely_move() -> None:
    X = unit(np.random.default_rng(2).normal(size=(300, 128)))
    Q = dequantize(*quantize(X))
    d = ((X[:150] - X[150:]) ** 2).sum(1)
    dq = ((Q[:150] - Q[150:]) ** 2).sum(1)
    assert np.abs(d - dq).max() < 0.01


def test_blob_round_trip() -> None:
    X = unit(np.random.default_rng(3).normal(size=(1, 512)))
    codes, scale = quantize(X)
    blob = to_blob(codes[0])
    assert len(blob) == 512
    assert np.allclose(from_blob(blob, float(scale[0])), dequantize(codes, scale)[0])


def test_zero_rows_and_bad_input() -> None:
    codes, scale = quantize(np.zeros((2, 4), dtype=np.float32))
    assert (codes == ZERO).all() and (dequantize(codes, scale) == 0).all()
    with pytest.raises(DataError):
        quantize(np.ones(4))
    with pytest.raises(DataError):
        quantize(np.array([[np.nan, 1.0]]))
    with pytest.raises(DataError):
        dequantize(np.ones((2, 4), dtype=np.float32), np.ones(2))
    with pytest.raises(DataError):
        dequantize(np.ones((2, 4), dtype=np.uint8), np.ones(3))


def test_clustering_quantised_embeddings_gives_the_same_clusters() -> None:
    rng = np.random.default_rng(4)
    centres = unit(rng.normal(size=(30, 128)))
    truth = np.repeat(np.arange(30), 8)
    X = unit(centres[truth] + 0.06 * rng.normal(size=(len(truth), 128)))
    full = cluster_embeddings(X, ClusterConfig(min_cluster_size=1))
    q8 = cluster_embeddings(dequantize(*quantize(X)), ClusterConfig(min_cluster_size=1))
    assert cluster_metrics(truth, full).pairwise_f == 1.0
    assert cluster_metrics(full, q8).pairwise_f == 1.0

"""kNN graphs against brute force: the full distance matrix of a few hundred points."""

from __future__ import annotations

import numpy as np
import pytest

import facecluster.knn as knn
from facecluster.knn import approximate_knn, exact_knn, knn_graph, radius_pairs, recall


def brute(X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
    Y = X if Y is None else Y
    return ((X[:, None, :].astype(np.float64) - Y[None, :, :]) ** 2).sum(-1)


def points(n: int = 300, d: int = 16, seed: int = 0) -> np.ndarray:
    X = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def test_exact_knn_matches_brute_force_in_small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn, "_BLOCK_ELEMENTS", 300 * 7)  # 7 rows per block: many blocks
    X = points()
    idx, d2 = exact_knn(X, 5)
    D = brute(X)
    np.fill_diagonal(D, np.inf)
    want = np.argsort(D, axis=1)[:, :5]
    assert (idx == want).all()
    assert np.allclose(d2, np.take_along_axis(D, want, axis=1), atol=1e-5)


def test_exact_knn_against_another_set_and_small_k_edge_cases() -> None:
    X, Y = points(20, seed=1), points(30, seed=2)
    idx, d2 = exact_knn(X, 4, Y=Y)
    assert (idx == np.argsort(brute(X, Y), axis=1)[:, :4]).all()
    idx, _ = exact_knn(X[:3], 10)  # k larger than the other points
    assert idx.shape == (3, 2)
    assert exact_knn(X[:1], 3)[0].shape == (1, 0)


def test_radius_pairs_matches_brute_force(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(knn, "_BLOCK_ELEMENTS", 300 * 11)
    X = points()
    u, v, d2 = radius_pairs(X, 1.0)
    D = brute(X)
    iu, iv = np.nonzero(np.triu(D <= 1.0, 1))
    assert sorted(zip(u.tolist(), v.tolist())) == sorted(zip(iu.tolist(), iv.tolist()))
    assert np.allclose(d2, D[u, v], atol=1e-5)


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_knn_has_high_recall_and_true_distances(method: str) -> None:
    # Faces come in identities: points around 100 centres, as the clustering sees them.
    rng = np.random.default_rng(3)
    centres = points(100, 16, seed=4)
    X = centres[rng.integers(0, 100, size=2000)] + 0.08 * rng.normal(size=(2000, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    exact_idx, _ = exact_knn(X, 10)
    idx, d2 = approximate_knn(X, 10, method=method)
    assert idx.shape == (2000, 10)
    assert (idx != np.arange(2000)[:, None]).all()  # never itself
    assert recall(idx, exact_idx) > 0.9
    assert np.allclose(d2, ((X[:, None, :] - X[idx]) ** 2).sum(-1), atol=1e-4)


def test_knn_graph_switches_to_approximate_at_ann_min_n(monkeypatch: pytest.MonkeyPatch) -> None:
    used = []
    monkeypatch.setattr(knn, "approximate_knn", lambda X, k, **kw: used.append("ann") or exact_knn(X, k))
    X = points(50)
    knn_graph(X, 3, ann_min_n=100)
    assert used == []
    knn_graph(X, 3, ann_min_n=50)
    assert used == ["ann"]


def test_approximate_knn_against_another_set() -> None:
    X, Y = points(50, 8, seed=5), points(1000, 8, seed=6)
    idx, d2 = approximate_knn(X, 5, Y=Y, nprobe=50)  # every cell probed: exact
    want, want_d2 = exact_knn(X, 5, Y=Y)
    assert (idx == want).all() and np.allclose(d2, want_d2, atol=1e-5)

"""k-nearest-neighbour graphs of embeddings in squared L2, without ever holding an n x n matrix.

Small libraries get the exact graph from blocked matrix products; large ones an approximate graph from
faiss (an inverted-file index, chosen by measurement, see ``docs/scaling.md``)::

    idx, d2 = knn_graph(X, k=15)          # (n, 15) neighbour indices and squared distances, self excluded
    u, v, d2 = radius_pairs(X, 1.0)       # every pair i < j with ||x_i - x_j||^2 <= 1.0
"""

from __future__ import annotations

import numpy as np

from facecluster.errors import DataError
from facecluster.reporting import ProgressFn, null_progress

#: Elements of one block of the distance matrix (64 M float32 = 256 MB at most).
_BLOCK_ELEMENTS = 1 << 24


def _as_float32(X: np.ndarray, name: str = "X") -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-d array of embeddings, got shape {X.shape}")
    return X


def _block_rows(n_cols: int) -> int:
    return max(1, min(4096, _BLOCK_ELEMENTS // max(1, n_cols)))


def _sq_dists(Q: np.ndarray, Y: np.ndarray, y_sq: np.ndarray) -> np.ndarray:
    # ||q||^2 + ||y||^2 - 2 q.y; clipped because rounding can make it slightly negative.
    D = Q @ Y.T
    D *= -2.0
    D += (Q * Q).sum(1)[:, None]
    D += y_sq[None, :]
    np.maximum(D, 0.0, out=D)
    return D


def exact_knn(
    X: np.ndarray,
    k: int,
    *,
    Y: np.ndarray | None = None,
    progress: ProgressFn = null_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact k nearest rows of ``Y`` (default: of ``X`` itself, self excluded) for every row of ``X``.

    Returns ``(indices int64 (n, k'), squared distances float32 (n, k'))`` sorted by distance, with
    ``k' = min(k, candidates)``. Memory stays at one block of rows times ``len(Y)``.

    >>> idx, d2 = exact_knn(np.eye(3, dtype=np.float32), 1)
    >>> idx.shape, float(d2[0, 0])
    ((3, 1), 2.0)
    """
    X = _as_float32(X)
    self_query = Y is None
    Y = X if Y is None else _as_float32(Y, "Y")
    n, m = len(X), len(Y)
    kk = max(0, min(k, m - 1 if self_query else m))
    idx = np.empty((n, kk), dtype=np.int64)
    d2 = np.empty((n, kk), dtype=np.float32)
    if kk == 0 or n == 0:
        return idx, d2
    y_sq = (Y * Y).sum(1)
    step = _block_rows(m)
    for start in range(0, n, step):
        stop = min(n, start + step)
        D = _sq_dists(X[start:stop], Y, y_sq)
        if self_query:
            D[np.arange(stop - start), np.arange(start, stop)] = np.inf
        part = np.argpartition(D, kk - 1, axis=1)[:, :kk] if kk < m else np.tile(np.arange(m), (stop - start, 1))
        pd = np.take_along_axis(D, part, axis=1)
        order = np.argsort(pd, axis=1, kind="stable")
        idx[start:stop] = np.take_along_axis(part, order, axis=1)
        d2[start:stop] = np.take_along_axis(pd, order, axis=1)
        progress("knn", stop, n)
    return idx, d2


def radius_pairs(
    X: np.ndarray, radius: float, *, progress: ProgressFn = null_progress
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair ``i < j`` with squared distance ``<= radius``: ``(i int64, j int64, d2 float32)``.

    Blocked like :func:`exact_knn`; the output is as large as the number of close pairs.

    >>> radius_pairs(np.array([[1, 0], [1, 0], [0, 1]], dtype=np.float32), 0.5)[:2]
    (array([0]), array([1]))
    """
    X = _as_float32(X)
    n = len(X)
    x_sq = (X * X).sum(1)
    us, vs, ds = [], [], []
    step = _block_rows(n)
    for start in range(0, n, step):
        stop = min(n, start + step)
        # Only columns after each row: the pair (i, j) is found once, from its smaller index.
        D = _sq_dists(X[start:stop], X[start:], x_sq[start:])
        rows, cols = np.nonzero(D <= radius)
        cols = cols + start
        rows = rows + start
        keep = cols > rows
        us.append(rows[keep].astype(np.int64))
        vs.append(cols[keep].astype(np.int64))
        ds.append(D[rows[keep] - start, cols[keep] - start].astype(np.float32))
        progress("pairs", stop, n)
    if not us:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy(), np.empty(0, dtype=np.float32)
    return np.concatenate(us), np.concatenate(vs), np.concatenate(ds)


def approximate_knn(
    X: np.ndarray,
    k: int,
    *,
    Y: np.ndarray | None = None,
    method: str = "ivf",
    nprobe: int = 8,
    lists_per_sqrt_n: float = 2.0,
    hnsw_m: int = 16,
    progress: ProgressFn = null_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate kNN with faiss: rows of ``Y`` nearest each row of ``X`` (default: of ``X``, self
    excluded); same output as :func:`exact_knn`.

    ``method="ivf"`` (default, chosen by measurement in ``docs/scaling.md``): k-means cells,
    ``lists_per_sqrt_n * sqrt(n)`` of them, each face searched in its ``nprobe`` nearest cells; faces
    of one person share cells, which suits clustering. ``method="hnsw"``: a graph index with
    ``hnsw_m`` links per node. Missing neighbours (rare) are filled with ``-1`` / ``inf``.

    >>> X = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32)
    >>> approximate_knn(X, 5)[0].shape
    (500, 5)
    """
    try:
        import faiss  # imported here: only large libraries need it
    except ImportError as exc:  # pragma: no cover - faiss-cpu is a dependency
        raise DataError("the approximate kNN graph needs faiss-cpu: pip install faiss-cpu") from exc
    X = _as_float32(X)
    self_query = Y is None
    base = X if Y is None else _as_float32(Y, "Y")
    n, d = X.shape
    nb = len(base)
    kk = max(0, min(k, nb - 1 if self_query else nb))
    if kk == 0 or n == 0:
        return np.empty((n, kk), dtype=np.int64), np.empty((n, kk), dtype=np.float32)
    index: faiss.Index
    if method == "ivf":
        nlist = max(1, min(nb // 40, int(lists_per_sqrt_n * np.sqrt(nb))))
        quantizer = faiss.IndexFlatL2(d)  # kept in a variable: the index does not own it
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        # 50 training faces per cell (faiss's own minimum is 39), drawn reproducibly.
        sample = np.random.default_rng(0).choice(nb, size=min(nb, 50 * nlist), replace=False)
        progress("index", 0, nb)
        index.train(base[np.sort(sample)])
        index.nprobe = min(nprobe, nlist)
    elif method == "hnsw":
        index = faiss.IndexHNSWFlat(d, hnsw_m)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = max(32, 2 * (kk + 1))
    else:
        raise DataError(f"unknown approximate kNN method {method!r}: use ivf or hnsw")
    step = max(10000, nb // 20)
    for start in range(0, nb, step):
        index.add(base[start : start + step])
        progress("index", min(nb, start + step), nb)
    idx = np.empty((n, kk), dtype=np.int64)
    d2 = np.empty((n, kk), dtype=np.float32)
    for start in range(0, n, step):
        stop = min(n, start + step)
        if not self_query:
            D, I = index.search(X[start:stop], kk)
            idx[start:stop], d2[start:stop] = I, D
            progress("knn", stop, n)
            continue
        D, I = index.search(X[start:stop], kk + 1)
        # Drop each point itself (normally first; with duplicates anywhere) or, if absent, the farthest.
        keep = I != np.arange(start, stop)[:, None]
        no_self = keep.all(1)
        keep[no_self, -1] = False
        idx[start:stop] = I[keep].reshape(-1, kk)
        d2[start:stop] = D[keep].reshape(-1, kk)
        progress("knn", stop, n)
    d2[idx < 0] = np.inf
    return idx, d2


def knn_graph(
    X: np.ndarray,
    k: int,
    *,
    Y: np.ndarray | None = None,
    approximate: bool | None = None,
    ann_min_n: int = 20000,
    progress: ProgressFn = null_progress,
) -> tuple[np.ndarray, np.ndarray]:
    """k nearest rows of ``Y`` (default: of ``X``, self excluded) for each row of ``X``: exact while the
    searched rows are fewer than ``ann_min_n``, approximate (faiss) from there on, or as forced.

    >>> idx, d2 = knn_graph(np.eye(4, dtype=np.float32), 2)
    >>> idx.shape
    (4, 2)
    """
    if approximate is None:
        approximate = len(X if Y is None else Y) >= ann_min_n
    if approximate:
        return approximate_knn(X, k, Y=Y, progress=progress)
    return exact_knn(X, k, Y=Y, progress=progress)


def recall(approx_idx: np.ndarray, exact_idx: np.ndarray) -> float:
    """Fraction of the exact neighbours that the approximate graph found (recall@k).

    >>> recall(np.array([[1, 2]]), np.array([[2, 3]]))
    0.5
    """
    hits = sum(len(np.intersect1d(a, e)) for a, e in zip(approx_idx, exact_idx))
    return hits / max(1, exact_idx.size)

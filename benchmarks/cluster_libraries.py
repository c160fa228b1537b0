"""Which kNN backend builds the clustering graph: time, memory and recall@k on planted identities.

    python benchmarks/cluster_libraries.py --n 100000 --backends numpy,hnsw16,hnsw8,ivf
    python benchmarks/cluster_libraries.py --n 100000 --backends hnsw8 --cluster   # + clustering F on that graph

Prints one JSON line per backend. Recall is measured against the exact graph on ``--recall-queries``
random faces (exact search for those only). Memory: ru_maxrss of a fresh child process per backend
(whole process), so backends do not inherit each other's peaks. The clustering-library figures
(scikit-learn, hdbscan, fast-hdbscan) are in ``/work/shared/MEASUREMENTS.md`` and not re-measured.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import time

import numpy as np

from cluster_scale import _cpu_seconds, _rss_mb, synthetic
from facecluster.cluster import average_linkage_graph
from facecluster.cluster_metrics import cluster_metrics
from facecluster.config import ClusterConfig
from facecluster.knn import exact_knn


def _faiss_knn(X: np.ndarray, k: int, index) -> tuple[np.ndarray, np.ndarray]:
    index.add(X)
    D, I = index.search(X, k + 1)
    return I[:, 1:], D[:, 1:]


def build(backend: str, X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """kNN graph (self excluded, approximately for ANN backends) with one backend."""
    import faiss

    d = X.shape[1]
    if backend == "numpy":
        return exact_knn(X, k)
    if backend == "faiss-flat":
        return _faiss_knn(X, k, faiss.IndexFlatL2(d))
    if backend.startswith("hnsw"):
        m = int(backend[4:])
        index = faiss.IndexHNSWFlat(d, m)
        index.hnsw.efConstruction = 40
        index.hnsw.efSearch = max(32, 2 * (k + 1))
        return _faiss_knn(X, k, index)
    if backend.startswith("ivf"):  # ivf{nprobe}[s{c}]: nlist = c * sqrt(n) (c = 4 unless given)
        probe, _, c = backend[3:].partition("s")
        nlist = int(float(c or 4) * np.sqrt(len(X)))
        nprobe = int(probe or 8)
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        index.train(X[np.random.default_rng(0).choice(len(X), min(len(X), 40 * nlist), replace=False)])
        index.nprobe = nprobe
        return _faiss_knn(X, k, index)
    raise SystemExit(f"unknown backend {backend}")


def run_one(backend: str, n: int, dim: int, k: int, queries: int, do_cluster: bool, out: mp.Queue) -> None:
    X, truth = synthetic(n, dim)
    load = os.getloadavg()[0]
    start, cpu0 = time.perf_counter(), _cpu_seconds()
    idx, d2 = build(backend, X, k)
    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu0
    rng = np.random.default_rng(1)
    q = rng.choice(n, size=min(queries, n), replace=False)
    exact_idx, _ = exact_knn(X[q], k + 1, Y=X)
    hits = 0
    for i, row, e in zip(q, idx[q], exact_idx):
        hits += len(np.intersect1d(row, e[e != i][:k]))  # the exact k neighbours other than itself
    result = {
        "backend": backend,
        "n": n,
        "dim": dim,
        "k": k,
        "knn_seconds": round(seconds, 2),
        "knn_cpu_seconds": round(cpu, 2),
        "load_average_1min_at_start": round(load, 2),
        "recall_at_k": round(hits / (len(q) * k), 4),
        "peak_memory_mb": round(_rss_mb(), 1),
    }
    if do_cluster:
        # Average linkage on this backend's graph (the threshold and merge loop of cluster.py).
        rows = np.repeat(np.arange(n), idx.shape[1])
        ok = idx.ravel() >= 0
        u, v = np.minimum(rows[ok], idx.ravel()[ok]), np.maximum(rows[ok], idx.ravel()[ok])
        key = np.unique(u * n + v)
        start, cpu0 = time.perf_counter(), _cpu_seconds()
        roots = average_linkage_graph(X, key // n, key % n, ClusterConfig().threshold)
        result["merge_seconds"] = round(time.perf_counter() - start, 2)
        result["merge_cpu_seconds"] = round(_cpu_seconds() - cpu0, 2)
        result["pairwise_f"] = round(cluster_metrics(truth, roots).pairwise_f, 4)
    out.put(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=15)
    parser.add_argument("--backends", default="numpy,faiss-flat,hnsw16,hnsw8,ivf8s1,ivf8")
    parser.add_argument("--recall-queries", type=int, default=1000)
    parser.add_argument("--cluster", action="store_true", help="also cluster on each graph (pairwise F)")
    args = parser.parse_args()
    ctx = mp.get_context("spawn")
    for backend in args.backends.split(","):
        out: mp.Queue = ctx.Queue()
        proc = ctx.Process(target=run_one, args=(backend, args.n, args.dim, args.k, args.recall_queries, args.cluster, out))
        proc.start()
        result = out.get()
        proc.join()
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

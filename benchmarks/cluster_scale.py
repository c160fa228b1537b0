"""Clustering at library scale on synthetic embeddings with planted identities; prints one JSON object.

    python benchmarks/cluster_scale.py --n 100000               # 128-d, agglomerative
    python benchmarks/cluster_scale.py --n 100000 --dim 512 --method hdbscan

The data: identities with Zipf-like sizes (1-200 faces, exponent ``--zipf``) plus ``--strangers`` of
faces that are one-off singletons. Identity centres come in "families" (siblings, look-alikes) so that
different people are not all orthogonal; each face is its centre plus a random offset of random size.
The JSON reports the resulting same/different squared distances (percentiles of sampled pairs), so the
difficulty is visible: by default same-identity pairs ~0.3-1.0, different ones ~1.4-2.0.

``seconds`` is the clustering call alone (kNN graph included, data generation excluded), wall time;
``cpu_seconds`` its user + system CPU time over all threads (the machine is shared: compare both);
``peak_memory_mb`` is the process's ru_maxrss (peak resident set, data included); ``data_mb`` is the
embedding matrix itself and ``rss_before_mb`` the resident set just before clustering.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from dataclasses import replace

import numpy as np

from facecluster.cluster import cluster_embeddings
from facecluster.cluster_metrics import cluster_metrics
from facecluster.config import ClusterConfig


def _unit(a: np.ndarray) -> np.ndarray:
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return a


def synthetic(
    n: int,
    dim: int = 128,
    *,
    zipf: float = 1.8,
    max_size: int = 200,
    strangers: float = 0.05,
    family_size: int = 4,
    family_spread: float = 1.3,
    offset: tuple[float, float] = (0.45, 1.0),
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``(X float32 (n, dim) unit rows, truth int64 (n,))``; strangers get identities of their own."""
    rng = np.random.default_rng(seed)
    n_strangers = int(round(n * strangers))
    sizes: list[int] = []
    total = 0
    while total < n - n_strangers:
        batch = np.minimum(rng.zipf(zipf, size=4096), max_size)
        for s in batch.tolist():
            s = min(s, n - n_strangers - total)
            sizes.append(s)
            total += s
            if total >= n - n_strangers:
                break
    sizes.extend([1] * n_strangers)
    n_ids = len(sizes)
    # Families of look-alike identities: centres scattered around a family direction.
    n_fam = max(1, n_ids // family_size)
    fam = rng.integers(0, n_fam, size=n_ids)
    X = np.empty((n, dim), dtype=np.float32)
    truth = np.repeat(np.arange(n_ids, dtype=np.int64), sizes)
    perm = rng.permutation(n)  # faces in random order, like a library
    truth = truth[perm]
    chunk = 1 << 15
    fam_dirs = _unit(rng.standard_normal((n_fam, dim), dtype=np.float32))
    centres = _unit(fam_dirs[fam] + family_spread / np.sqrt(dim) * rng.standard_normal((n_ids, dim), dtype=np.float32))
    for start in range(0, n, chunk):
        t = truth[start : start + chunk]
        noise = _unit(rng.standard_normal((len(t), dim), dtype=np.float32))
        size = rng.uniform(*offset, size=(len(t), 1)).astype(np.float32)
        X[start : start + chunk] = _unit(centres[t] + size * noise)
    return X, truth


def distance_profile(X: np.ndarray, truth: np.ndarray, *, pairs: int = 20000, seed: int = 1) -> dict[str, list[float]]:
    """5th/50th/95th percentiles of squared distances of sampled same- and different-identity pairs."""
    rng = np.random.default_rng(seed)
    order = np.argsort(truth, kind="stable")
    t = truth[order]
    same_i = np.flatnonzero(t[1:] == t[:-1])
    pick = rng.choice(same_i, size=min(pairs, len(same_i)), replace=False) if len(same_i) else same_i
    a, b = order[pick], order[pick + 1]
    same = ((X[a] - X[b]) ** 2).sum(1)
    i, j = rng.integers(0, len(X), size=(2, pairs))
    diff_mask = truth[i] != truth[j]
    diff = ((X[i[diff_mask]] - X[j[diff_mask]]) ** 2).sum(1)
    # What decides clustering: how close the nearest face of another identity is (exact, sampled).
    from facecluster.knn import exact_knn

    qs = rng.choice(len(X), size=min(300, len(X)), replace=False)
    idx, d2 = exact_knn(X[qs], 64, Y=X)
    other = truth[idx] != truth[qs][:, None]
    nearest_other = np.where(other.any(1), np.where(other, d2, np.inf).min(1), np.nan)
    nearest_other = nearest_other[np.isfinite(nearest_other)]
    q = lambda v: [round(float(x), 3) for x in np.percentile(v, [5, 50, 95])] if len(v) else []  # noqa: E731
    return {
        "same_d2_p5_p50_p95": q(same),
        "different_d2_p5_p50_p95": q(diff),
        "nearest_other_identity_d2_p5_p50_p95": q(nearest_other),
    }


def from_catalog(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Real embeddings: ``(X, truth = folder name index, photo id)``, one face per photo.

    The face whose box centre is nearest the image centre (LFW photos show their subject there); the
    model with the most vectors in the catalog.
    """
    import os.path

    from facecluster.catalog import Catalog

    with Catalog.open(path) as catalog:
        db = catalog.db
        model = db.execute("SELECT model_id FROM embeddings GROUP BY model_id ORDER BY count(*) DESC").fetchone()[0]
        face_ids, X = catalog.load_embeddings(model)
        rows = db.execute(
            "SELECT f.id, p.id, p.path, p.width, p.height, f.x1, f.y1, f.x2, f.y2 FROM faces f JOIN photos p ON p.id = f.photo_id"
        ).fetchall()
    row_of = {int(fid): i for i, fid in enumerate(face_ids)}
    best: dict[int, tuple[float, int, str]] = {}
    for fid, pid, ppath, w, h, x1, y1, x2, y2 in rows:
        if fid not in row_of:
            continue
        dist = ((x1 + x2 - (w or 0)) / 2) ** 2 + ((y1 + y2 - (h or 0)) / 2) ** 2
        if pid not in best or dist < best[pid][0]:
            best[pid] = (dist, row_of[fid], os.path.basename(os.path.dirname(ppath)))
    pids = sorted(best)
    rows_kept = np.array([best[p][1] for p in pids], dtype=np.int64)
    names = np.array([best[p][2] for p in pids])
    truth = np.unique(names, return_inverse=True)[1].astype(np.int64)
    return X[rows_kept], truth, np.array(pids, dtype=np.int64)


def verification(X: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Best accuracy over thresholds on all same pairs and as many random different pairs."""
    order = np.argsort(truth, kind="stable")
    same = [(a, b) for i, a in enumerate(order) for b in order[i + 1 :] if truth[b] == truth[a]]
    same = np.array([p for p in same], dtype=np.int64).reshape(-1, 2)
    rng = np.random.default_rng(2)
    i, j = rng.integers(0, len(X), size=(2, 4 * max(1, len(same))))
    diff = np.stack([i, j], 1)[truth[i] != truth[j]][: len(same)]
    d_same = ((X[same[:, 0]] - X[same[:, 1]]) ** 2).sum(1)
    d_diff = ((X[diff[:, 0]] - X[diff[:, 1]]) ** 2).sum(1)
    best = (0.0, 0.0)
    for t in np.arange(0.5, 2.0, 0.005):
        acc = ((d_same <= t).sum() + (d_diff > t).sum()) / (len(d_same) + len(d_diff))
        best = max(best, (float(acc), float(t)))
    return {"accuracy": round(best[0], 4), "threshold": round(best[1], 3), "pairs": int(len(d_same) + len(d_diff))}


def incremental_check(X: np.ndarray, truth: np.ndarray, photos: np.ndarray, config: ClusterConfig, share: float) -> dict:
    """Cluster all but ``share`` of the photos, then assign the rest with ``assign_to_known``.

    A held-out face is "of a known person" when its identity's majority cluster exists among the
    clustered faces; it is correct when assigned to that cluster.
    """
    from facecluster.cluster import assign_to_known

    rng = np.random.default_rng(3)
    new = rng.random(len(X)) < share
    old_labels = cluster_embeddings(X[~new], config, groups=photos[~new])
    majority: dict[int, int] = {}  # identity -> cluster most of its clustered faces are in
    for ident in np.unique(truth[~new]):
        lab = old_labels[truth[~new] == ident]
        lab = lab[lab >= 0]
        if len(lab):
            majority[int(ident)] = int(np.bincount(lab).argmax())
    got = assign_to_known(X[new], X[~new], old_labels, threshold=config.assign_threshold, k=config.assign_k,
                          groups_new=photos[new], groups_known=photos[~new])
    known = np.array([int(t) in majority for t in truth[new]])
    want = np.array([majority.get(int(t), -2) for t in truth[new]])
    return {
        "new_faces": int(new.sum()),
        "new_faces_of_known_people": int(known.sum()),
        "assigned_correctly": round(float((got[known] == want[known]).mean()), 4) if known.any() else None,
        "assigned_wrongly": round(float(((got[known] >= 0) & (got[known] != want[known])).mean()), 4) if known.any() else None,
        "left_unassigned": round(float((got[known] < 0).mean()), 4) if known.any() else None,
        "unknown_people_assigned": int((got[~known] >= 0).sum()),
        "unknown_people_faces": int((~known).sum()),
    }


def _rss_mb() -> float:
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = 1 / 1024 if sys.platform != "darwin" else 1 / 1024 / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale


def _cpu_seconds() -> float:
    # user + system time of this process, all threads: less sensitive than wall time to other jobs.
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100000)
    parser.add_argument("--dim", type=int, default=128, choices=[128, 512])
    parser.add_argument("--method", default="agglomerative", choices=["agglomerative", "hdbscan"])
    parser.add_argument("--threshold", type=float, default=ClusterConfig().threshold)
    parser.add_argument("--k", type=int, default=ClusterConfig().k)
    parser.add_argument("--min-cluster-size", type=int, default=1, help="1: score every face (default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quantize", action="store_true", help="cluster 8-bit quantised embeddings")
    parser.add_argument("--from-catalog", metavar="DB", help="real embeddings of a catalog (truth: folder names)")
    parser.add_argument("--incremental", type=float, metavar="SHARE", help="with --from-catalog: hold out SHARE")
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    extra: dict = {}
    if args.from_catalog:
        X, truth, photos = from_catalog(args.from_catalog)
        args.n, args.dim = X.shape
        extra["source"] = args.from_catalog
        extra["verification_float32"] = verification(X, truth)
    else:
        X, truth = synthetic(args.n, args.dim, seed=args.seed)
        photos = None
    gen_seconds = time.perf_counter() - t0
    profile = distance_profile(X, truth)
    if args.quantize:
        from facecluster.quantize import dequantize, quantize

        X = dequantize(*quantize(X))
        if args.from_catalog:
            extra["verification_uint8"] = verification(X, truth)
    config = replace(
        ClusterConfig(),
        method=args.method,
        threshold=args.threshold,
        k=args.k,
        min_cluster_size=args.min_cluster_size,
    )
    stages: dict[str, float] = {}
    start = time.perf_counter()

    def progress(stage: str, done: int, total: int | None) -> None:
        stages[stage] = round(time.perf_counter() - start, 2)  # when the stage last reported

    rss_before = _rss_mb()
    cpu0 = _cpu_seconds()
    load = os.getloadavg()[0]
    labels = cluster_embeddings(X, config, progress=progress)
    seconds = time.perf_counter() - start
    cpu = _cpu_seconds() - cpu0
    peak = _rss_mb()
    m = cluster_metrics(truth, labels)
    if args.incremental:
        extra["incremental"] = incremental_check(X, truth, photos, config, args.incremental)
    result = {
        "n": args.n,
        "dim": args.dim,
        "method": args.method,
        "threshold": args.threshold,
        "k": args.k,
        "quantized": args.quantize,
        "seconds": round(seconds, 2),
        "cpu_seconds": round(cpu, 2),
        "load_average_1min_at_start": round(load, 2),
        "stage_end_seconds": stages,
        "peak_memory_mb": round(peak, 1),
        "peak_memory_source": "ru_maxrss (whole process, embeddings included)",
        "rss_before_mb": round(rss_before, 1),
        "data_mb": round(X.nbytes / 2**20, 1),
        "pairwise_precision": round(m.pairwise_precision, 4),
        "pairwise_recall": round(m.pairwise_recall, 4),
        "pairwise_f": round(m.pairwise_f, 4),
        "bcubed_f": round(m.bcubed_f, 4),
        "nmi": round(m.nmi, 4),
        "ari": round(m.ari, 4),
        "n_identities": m.n_identities,
        "n_clusters": m.n_clusters,
        **profile,
        **extra,
        "generate_seconds": round(gen_seconds, 2),
        "threads": {"omp": os.environ.get("OMP_NUM_THREADS"), "cpus": os.cpu_count()},
        "python": platform.python_version(),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()

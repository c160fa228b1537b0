"""Pure clustering functions: embeddings (+ what the user knows) -> cluster labels.

Average linkage with a distance threshold, on squared L2 distances, in near-linear memory::

    labels = cluster_embeddings(X, ClusterConfig(threshold=1.0), groups=photo_ids)
    new = assign_to_known(X_new, X_known, known_labels, threshold=1.0)

**Definition.** The distance between clusters A and B is the *mean of the squared distances*
``||a - b||^2`` over all pairs (a, b) (UPGMA on squared L2, not the square of the mean Euclidean
distance), computed exactly from per-cluster sums: ``q_A/n_A + q_B/n_B - 2 s_A.s_B/(n_A n_B)``.
Clusters merge, closest first, while it is ``<= threshold``. A graph says which clusters may merge:
up to ``exact_max_n`` faces every pair inside each single-linkage component at the threshold (no
final cluster can span two), so the result equals exact average linkage; above, the kNN graph.

**Constraints** are kept inside the merge loop: faces with one ``must_link`` id start as one cluster;
clusters sharing a photo (``groups``), holding a ``cannot_link_pairs`` pair, or carrying two different
``must_link`` ids never merge.

**Algorithm.** Average linkage is reducible, so merging every pair of clusters that are each other's
nearest neighbour (below the threshold) at once gives the same clusters as merging one pair at a time.
Each round does that with numpy over the edge list; a cluster with no mergeable edge left is final
and its edges are dropped. See ``docs/scaling.md``.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from facecluster.config import ClusterConfig
from facecluster.errors import DataError
from facecluster.knn import knn_graph, radius_pairs
from facecluster.reporting import ProgressFn, null_progress

METHODS = ("agglomerative", "hdbscan")


def _check_embeddings(X: np.ndarray, name: str = "X") -> np.ndarray:
    X = np.ascontiguousarray(X, dtype=np.float32)
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-d array of embeddings, got shape {X.shape}")
    if not np.isfinite(X).all():
        raise DataError("some face embeddings are NaN or infinite (the model that made them is broken): "
                        "re-embed those faces with a working model (`facecluster embed --force`)")
    return X


def _check_vector(a: np.ndarray | None, n: int, name: str) -> np.ndarray | None:
    if a is None:
        return None
    a = np.asarray(a, dtype=np.int64)
    if a.shape != (n,):
        raise DataError(f"{name} must have one entry per face ({n}), got shape {a.shape}")
    return a


def group_pairs(groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All pairs ``i < j`` of faces with the same group id (same photo); ids < 0 are ignored.

    >>> group_pairs(np.array([7, 3, 7, 7]))
    (array([0, 0, 2]), array([2, 3, 3]))
    """
    groups = np.asarray(groups, dtype=np.int64)
    idx = np.flatnonzero(groups >= 0)
    order = idx[np.argsort(groups[idx], kind="stable")]
    g = groups[order]
    us, vs = [], []
    offset = 1
    while offset < len(order):
        same = g[offset:] == g[:-offset]
        if not same.any():
            break  # sorted: no group holds more than `offset` faces
        a, b = order[:-offset][same], order[offset:][same]
        us.append(np.minimum(a, b))
        vs.append(np.maximum(a, b))
        offset += 1
    if not us:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    u, v = np.concatenate(us), np.concatenate(vs)
    order = np.lexsort((v, u))
    return u[order], v[order]


def _canonical(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.minimum(u, v), np.maximum(u, v)


def _must_link_roots(must_link: np.ndarray | None, n: int) -> np.ndarray:
    """Node of every face after pre-merging must-link groups: the first face of its person."""
    roots = np.arange(n, dtype=np.int64)
    if must_link is None:
        return roots
    linked = np.flatnonzero(must_link >= 0)
    if len(linked):
        ids, first = np.unique(must_link[linked], return_index=True)
        roots[linked] = linked[first][np.searchsorted(ids, must_link[linked])]
    return roots


#: Values gathered at once when computing linkages (two blocks of 8 M float32 = 64 MB).
_CHUNK_VALUES = 1 << 23


def _linkage(
    S: np.ndarray, count: np.ndarray, sq: np.ndarray, eu: np.ndarray, ev: np.ndarray
) -> np.ndarray:
    """Exact average linkage of squared L2 between clusters, from their sums (see the module doc).

    mean over a in A, b in B of ||a - b||^2 = sq_A/n_A + sq_B/n_B - 2 (s_A . s_B) / (n_A n_B)
    """
    out = np.empty(len(eu), dtype=np.float64)
    step = max(1024, _CHUNK_VALUES // max(1, S.shape[1]))
    for start in range(0, len(eu), step):
        a, b = eu[start : start + step], ev[start : start + step]
        dots = np.einsum("ij,ij->i", S[a], S[b], dtype=np.float64)
        out[start : start + step] = sq[a] / count[a] + sq[b] / count[b] - 2.0 * dots / (count[a] * count[b])
    return out


def _unique_edges(u: np.ndarray, v: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (u < v), deduplicated edges without self-loops."""
    u, v = _canonical(u, v)
    keep = u != v
    key = np.unique(u[keep] * n + v[keep])
    return key // n, key % n


def average_linkage_graph(
    X: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    threshold: float,
    *,
    must_link: np.ndarray | None = None,
    conflicts: tuple[np.ndarray, np.ndarray] | None = None,
    progress: ProgressFn = null_progress,
) -> np.ndarray:
    """Average linkage (squared L2) of the faces ``X`` along the graph ``u, v``; each face's root.

    Clusters may merge only along graph edges; their distance is the exact mean over all face pairs,
    computed from cluster sums. ``conflicts``: face pairs that must never share a cluster;
    ``must_link``: person id per face or -1. Faces end in the same cluster iff they share a root.

    >>> X = np.array([[1, 0], [0.8, 0.6], [0, 1]], dtype=np.float32)
    >>> average_linkage_graph(X, np.array([0, 1]), np.array([1, 2]), 1.0)
    array([0, 0, 2])
    """
    n = len(X)
    roots = _must_link_roots(must_link, n)
    person = np.full(n, -1, dtype=np.int64)
    if must_link is not None:
        person[roots] = np.maximum(person[roots], must_link)  # the root carries the person id
    # Cluster sums, named by their first face; must-linked faces start inside their root's cluster.
    S = np.array(X, dtype=np.float32, copy=True)
    count = np.ones(n, dtype=np.float64)
    sq = np.einsum("ij,ij->i", X, X, dtype=np.float64)
    linked = np.flatnonzero(roots != np.arange(n))
    if len(linked):
        np.add.at(S, roots[linked], X[linked])
        np.add.at(count, roots[linked], 1.0)
        np.add.at(sq, roots[linked], sq[linked])
    eu, ev = _unique_edges(roots[u], roots[v], n)
    dist = _linkage(S, count, sq, eu, ev)
    if conflicts is not None and len(conflicts[0]):
        cu, cv = _canonical(roots[conflicts[0]], roots[conflicts[1]])
        keep = cu != cv  # a must-link beats a conflict the user created themselves
        cu, cv = cu[keep], cv[keep]
    else:
        cu = cv = np.empty(0, dtype=np.int64)
    conflict_keys = np.unique(cu * n + cv)
    merges_a: list[np.ndarray] = []
    merges_b: list[np.ndarray] = []
    total = len(eu)
    # Scratch arrays over face ids are reset after each use, so a round costs time in its number of
    # edges, not in n (late rounds have few edges left).
    flag = np.zeros(n, dtype=bool)
    best_w = np.full(n, np.inf)
    best_to = np.full(n, n, dtype=np.int64)
    parent = np.arange(n, dtype=np.int64)
    while len(eu):
        eligible = dist <= threshold
        pu, pv = person[eu], person[ev]
        eligible &= ~((pu >= 0) & (pv >= 0) & (pu != pv))
        if len(conflict_keys):
            keys = eu * n + ev
            pos = np.searchsorted(conflict_keys, keys).clip(0, len(conflict_keys) - 1)
            eligible &= conflict_keys[pos] != keys
        # A cluster with no mergeable edge is final: merging averages linkages, so with every pair
        # of the graph present (the exact path) it could never come below the threshold again; on a
        # kNN graph this is the approximation that keeps the rounds cheap. Drop its edges.
        mu, mv = eu[eligible], ev[eligible]
        flag[mu] = True
        flag[mv] = True
        keep = flag[eu] & flag[ev]
        flag[mu] = False
        flag[mv] = False
        eu, ev, dist, eligible = eu[keep], ev[keep], dist[keep], eligible[keep]
        if not eligible.any():
            break
        # Nearest mergeable neighbour of each cluster; ties go to the smaller id (no cycles > 2).
        src = np.concatenate([eu[eligible], ev[eligible]])
        dst = np.concatenate([ev[eligible], eu[eligible]])
        w = np.concatenate([dist[eligible], dist[eligible]])
        np.minimum.at(best_w, src, w)
        closest = w == best_w[src]
        np.minimum.at(best_to, src[closest], dst[closest])
        a, b = src[closest], dst[closest]
        pick = (best_to[a] == b) & (best_to[b] == a) & (a < b)
        a, b = a[pick], b[pick]
        best_w[src] = np.inf
        best_to[src] = n
        merges_a.append(a)
        merges_b.append(b)
        # Pair weights before the merge: a merged edge whose old edges cover every pair of the new
        # clusters gets its mean by the Lance-Williams update (no dot products: the exact path).
        pairs = count[eu] * count[ev]
        weighted = pairs * dist
        # Each cluster merges at most once a round, so plain fancy-index updates are safe.
        S[a] += S[b]
        count[a] += count[b]
        sq[a] += sq[b]
        person[a] = np.maximum(person[a], person[b])
        parent[b] = a
        mu, mv = _canonical(parent[eu], parent[ev])
        alive = mu != mv
        key, inv = np.unique(mu[alive] * n + mv[alive], return_inverse=True)
        covered = np.bincount(inv, weights=pairs[alive], minlength=len(key))
        dist = np.bincount(inv, weights=weighted[alive], minlength=len(key)) / covered
        eu, ev = key // n, key % n
        # Pairs the graph lacks between clusters that grew: the exact mean from the sums.
        partial = covered != count[eu] * count[ev]
        dist[partial] = _linkage(S, count, sq, eu[partial], ev[partial])
        if len(conflict_keys):
            cu, cv = _canonical(parent[conflict_keys // n], parent[conflict_keys % n])
            conflict_keys = np.unique(cu * n + cv)
        parent[b] = b
        progress("cluster", total - len(eu), total)
    progress("cluster", total, total)
    # Faces of one cluster: connected through must-links and the merges made.
    pa = np.concatenate([np.arange(n, dtype=np.int64), *merges_a])
    pb = np.concatenate([roots, *merges_b])
    graph = coo_matrix((np.ones(len(pa)), (pa, pb)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    first_face = np.full(comp.max() + 1 if n else 0, n, dtype=np.int64)
    np.minimum.at(first_face, comp, np.arange(n, dtype=np.int64))
    return first_face[comp]


def _finish(roots: np.ndarray, min_size: int, keep_roots: np.ndarray | None = None) -> np.ndarray:
    """Roots -> labels 0..m-1 by decreasing size (ties: smallest face first); small clusters -> -1."""
    n = len(roots)
    uniq, first, inv, counts = np.unique(roots, return_index=True, return_inverse=True, return_counts=True)
    big = counts >= min_size
    if keep_roots is not None:
        big |= np.isin(uniq, keep_roots)
    order = np.lexsort((first, -counts))
    order = order[big[order]]
    rank = np.full(len(uniq), -1, dtype=np.int64)
    rank[order] = np.arange(len(order))
    labels = rank[inv] if n else np.empty(0, dtype=np.int64)
    return labels.astype(np.int64)


def _conflicts(
    n: int, groups: np.ndarray | None, cannot_link_pairs: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    us, vs = [], []
    if groups is not None:
        gu, gv = group_pairs(groups)
        us.append(gu)
        vs.append(gv)
    if cannot_link_pairs is not None:
        pairs = np.asarray(cannot_link_pairs, dtype=np.int64).reshape(-1, 2)
        if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
            raise DataError(f"cannot_link_pairs refers to faces outside 0..{n - 1}")
        us.append(pairs[:, 0])
        vs.append(pairs[:, 1])
    if not us:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(us), np.concatenate(vs)


#: Above this many pairs inside single-linkage components, the exact graph gives way to the kNN graph.
EXACT_MAX_PAIRS = 5_000_000


def _exact_edges(
    X: np.ndarray, threshold: float, roots: np.ndarray, progress: ProgressFn
) -> tuple[np.ndarray, np.ndarray] | None:
    """Every pair (u, v) inside each single-linkage component at ``threshold`` (must-links join components).

    ``None`` when that is more than ``EXACT_MAX_PAIRS`` pairs (faces chained into a huge component). The
    distances are not returned: ``average_linkage_graph`` computes each edge's from ``X`` itself.
    """
    n = len(X)
    ru, rv, _ = radius_pairs(X, threshold, progress=progress)
    linked = np.flatnonzero(roots != np.arange(n))
    graph = coo_matrix(
        (np.ones(len(ru) + len(linked)), (np.concatenate([ru, linked]), np.concatenate([rv, roots[linked]]))),
        shape=(n, n),
    )
    _, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp).astype(np.float64)
    if (sizes * (sizes - 1) / 2).sum() > EXACT_MAX_PAIRS:
        return None
    return _pairs_within(comp)


def _pairs_within(comp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (u < v) of indices whose ``comp`` values are equal.

    >>> _pairs_within(np.array([4, 9, 4, 4]))
    (array([0, 0, 2]), array([2, 3, 3]))
    """
    order = np.argsort(comp, kind="stable")
    bounds = np.flatnonzero(np.diff(comp[order])) + 1
    us, vs = [], []
    for members in np.split(order, bounds):
        if len(members) < 2:
            continue
        i, j = np.triu_indices(len(members), 1)
        us.append(members[i])
        vs.append(members[j])
    if not us:
        empty = np.empty(0, dtype=np.int64)
        return empty, empty.copy()
    return np.concatenate(us), np.concatenate(vs)


def _knn_edges(
    X: np.ndarray, config: ClusterConfig, roots: np.ndarray, progress: ProgressFn
) -> tuple[np.ndarray, np.ndarray]:
    """Symmetrised kNN edges (u, v), keeping only those inside single-linkage components at the threshold."""
    n = len(X)
    idx, d2 = knn_graph(X, config.k, ann_min_n=config.ann_min_n, progress=progress)
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols, dist = idx.ravel(), d2.ravel()
    ok = (cols >= 0) & np.isfinite(dist)
    u, v = _canonical(rows[ok], cols[ok])
    dist = dist[ok]
    key, first = np.unique(u * n + v, return_index=True)
    u, v, dist = key // n, key % n, dist[first]
    close = dist <= config.threshold
    linked = np.flatnonzero(roots != np.arange(n))
    graph = coo_matrix(
        (
            np.ones(int(close.sum()) + len(linked)),
            (np.concatenate([u[close], linked]), np.concatenate([v[close], roots[linked]])),
        ),
        shape=(n, n),
    )
    _, comp = connected_components(graph, directed=False)
    inside = comp[u] == comp[v]  # edges across components never enter an average that can merge
    return u[inside], v[inside]


def _hdbscan(
    X: np.ndarray, config: ClusterConfig, progress: ProgressFn
) -> np.ndarray:
    """HDBSCAN (scikit-learn) on the sparse kNN graph; components joined by far edges. Any number of faces:
    with fewer than ``hdbscan_min_samples + 2``, the neighbourhood shrinks to what the library holds."""
    from sklearn.cluster import HDBSCAN

    n = len(X)
    if n < 2:
        return np.full(n, -1, dtype=np.int64)  # scikit-learn needs two faces; one is no group anyway
    min_samples = max(1, config.hdbscan_min_samples)
    k = max(config.k, min_samples + 1)
    idx, d2 = knn_graph(X, k, ann_min_n=config.ann_min_n, progress=progress)
    rows = np.repeat(np.arange(n, dtype=np.int64), idx.shape[1])
    cols, dist = idx.ravel(), d2.ravel()
    ok = (cols >= 0) & np.isfinite(dist)
    rows, cols = rows[ok], cols[ok]
    # Euclidean distances; a zero would read as a missing entry in a sparse matrix.
    dist = np.maximum(np.sqrt(dist[ok]), 1e-6)
    graph = coo_matrix((dist, (rows, cols)), shape=(n, n)).tocsr()
    graph = graph.maximum(graph.T)
    n_comp, comp = connected_components(graph, directed=False)
    if n_comp > 1:
        # scikit-learn needs one connected graph: chain the components with edges just longer than
        # any in the graph, so they meet only at the top of the hierarchy. Much longer bridges (e.g.
        # 4.0) make each component live so long that HDBSCAN picks whole components as clusters
        # (measured: 60k faces, 147 components -> pairwise F 0.006 instead of 0.991).
        firsts = np.unique(comp, return_index=True)[1]
        a, b = firsts[:-1], firsts[1:]
        far = np.full(len(a), float(dist.max()) * 1.01)
        bridge = coo_matrix((np.concatenate([far, far]), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n))
        graph = (graph + bridge.tocsr()).tocsr()
    # scikit-learn refuses a face with fewer stored neighbours than min_samples: in a library (or a
    # batch of new faces) smaller than the neighbourhood, use every neighbour there is.
    fewest = int(np.diff(graph.indptr).min())
    progress("hdbscan", 0, 1)
    model = HDBSCAN(
        min_cluster_size=max(2, config.min_cluster_size),
        min_samples=min(min_samples + 1, fewest),  # scikit-learn counts the point itself
        metric="precomputed",
        allow_single_cluster=False,
        # the graph is ours: let scikit-learn change it in place where its version can (>= 1.5)
        **({"copy": False} if "copy" in HDBSCAN().get_params() else {}),
    )
    labels = model.fit_predict(graph)
    progress("hdbscan", 1, 1)
    return labels.astype(np.int64)


def _enforce_after(
    X: np.ndarray,
    labels: np.ndarray,
    config: ClusterConfig,
    must_link: np.ndarray | None,
    conflicts: tuple[np.ndarray, np.ndarray],
    progress: ProgressFn = null_progress,
) -> np.ndarray:
    """Constraints for methods that cannot hold them while clustering (HDBSCAN): each face's root.

    A person's faces first join the cluster most of them are in (or a new one). Then each cluster
    holding two people or a conflicting pair is split by the default method's constrained average
    linkage (``average_linkage_graph``, no threshold): its people and conflicting faces end apart, the
    other faces with the part they are closest to on average. Unclustered faces (-1) stay alone.
    """
    n = len(labels)
    labels = labels.copy()
    next_label = labels.max() + 1 if n else 0
    person = np.full(n, -1, dtype=np.int64) if must_link is None else must_link
    for pid in np.unique(person[person >= 0]):
        members = np.flatnonzero(person == pid)
        found = labels[members][labels[members] >= 0]
        if len(found):
            labels[members] = np.bincount(found).argmax()
        else:
            labels[members] = next_label
            next_label += 1
    faces = np.arange(n, dtype=np.int64)
    clustered = labels >= 0
    first = np.full(next_label, n, dtype=np.int64)
    np.minimum.at(first, labels[clustered], faces[clustered])
    roots = faces.copy()  # unclustered faces: each alone
    roots[clustered] = first[labels[clustered]]
    # Clusters breaking a rule: two people in one (the move above can cause it), or a conflicting pair
    # of faces that are not one person (a must-link beats a conflict, as in the default method).
    named = clustered & (person >= 0)
    held = np.unique(np.stack([labels[named], person[named]]), axis=1)[0]
    bad = [held[1:][held[1:] == held[:-1]]]
    cu, cv = conflicts
    clash = (labels[cu] == labels[cv]) & (labels[cu] >= 0) & ~((person[cu] >= 0) & (person[cu] == person[cv]))
    bad.append(labels[cu[clash]])
    split = np.flatnonzero(np.isin(labels, np.concatenate(bad)))
    if not len(split):
        return roots
    local = np.full(n, -1, dtype=np.int64)
    local[split] = np.arange(len(split))
    within = labels[split]
    sizes = np.bincount(within).astype(np.float64)
    if (sizes * (sizes - 1) / 2).sum() <= EXACT_MAX_PAIRS:
        u, v = _pairs_within(within)  # all pairs: exact average linkage under the constraints
    else:
        # Huge clusters: their kNN edges only (a split may then leave a few more parts than needed).
        idx, _ = knn_graph(X[split], config.k, ann_min_n=config.ann_min_n, progress=progress)
        u = np.repeat(np.arange(len(split), dtype=np.int64), idx.shape[1])
        v = idx.ravel()
        keep = (v >= 0) & (within[u] == within[np.maximum(v, 0)])
        u, v = u[keep], v[keep]
    inside = (local[cu] >= 0) & (labels[cu] == labels[cv])
    sub_roots = average_linkage_graph(
        X[split], u, v, np.inf,
        must_link=None if must_link is None else must_link[split],
        conflicts=(local[cu[inside]], local[cv[inside]]),
        progress=progress,
    )
    roots[split] = split[sub_roots]
    return roots


def cluster_embeddings(
    X: np.ndarray,
    config: ClusterConfig,
    *,
    groups: np.ndarray | None = None,
    must_link: np.ndarray | None = None,
    cannot_link_pairs: np.ndarray | None = None,
    progress: ProgressFn = null_progress,
) -> np.ndarray:
    """Cluster unit embeddings into people: int64 labels 0..m-1 (largest first), -1 = unclustered.

    ``groups[i]``: photo id of face i (faces of one photo never share a cluster); ``must_link[i]``: a
    person id or -1 (faces of one person share a cluster, which is kept whatever its size);
    ``cannot_link_pairs``: (m, 2) face index pairs kept apart. ``config.method``: ``agglomerative``
    (average linkage of squared L2 distances, merging while the mean is <= ``config.threshold``) or
    ``hdbscan`` (constraints applied after clustering, by the same constrained average linkage inside
    each cluster that breaks one). Clusters smaller than
    ``config.min_cluster_size`` become -1.

    >>> X = np.array([[1, 0], [0.995, 0.0998], [0, 1]], dtype=np.float32)
    >>> cluster_embeddings(X, ClusterConfig(min_cluster_size=1)).tolist()
    [0, 0, 1]
    """
    X = _check_embeddings(X)
    n = len(X)
    groups = _check_vector(groups, n, "groups")
    must_link = _check_vector(must_link, n, "must_link")
    if config.method not in METHODS:
        raise DataError(f"unknown clustering method {config.method!r}: use one of {', '.join(METHODS)}")
    if n == 0:
        return np.empty(0, dtype=np.int64)
    conflicts = _conflicts(n, groups, cannot_link_pairs)
    if config.method == "hdbscan":
        roots = _enforce_after(X, _hdbscan(X, config, progress), config, must_link, conflicts, progress)
        keep = None if must_link is None else np.unique(roots[must_link >= 0])
        return _finish(roots, config.min_cluster_size, keep)
    roots0 = _must_link_roots(must_link, n)
    edges = _exact_edges(X, config.threshold, roots0, progress) if n <= config.exact_max_n else None
    u, v = edges if edges is not None else _knn_edges(X, config, roots0, progress)
    roots = average_linkage_graph(
        X, u, v, config.threshold, must_link=must_link, conflicts=conflicts, progress=progress
    )
    keep = None if must_link is None else np.unique(roots[must_link >= 0])
    return _finish(roots, config.min_cluster_size, keep)


def assign_to_known(
    X_new: np.ndarray,
    X_known: np.ndarray,
    known_labels: np.ndarray,
    *,
    threshold: float,
    k: int = 5,
    groups_new: np.ndarray | None = None,
    groups_known: np.ndarray | None = None,
    rejected: np.ndarray | None = None,
    ann_min_n: int = 20000,
    progress: ProgressFn = null_progress,
) -> np.ndarray:
    """Assign new faces to known clusters/people by their nearest known faces; -1 = leave for clustering.

    **Rule.** Take the ``k`` nearest known faces that carry a label (>= 0). Votes: how many of those
    within ``threshold`` carry each label; score: the mean squared distance to all of that label's
    faces among the ``k``. The label with the most votes (ties: lower score) wins if it holds a strict
    majority of the votes (so a face between two similar people, e.g. siblings, stays unassigned) and
    its score is ``<= threshold``. Constraints: a new face never joins a label that
    already holds a face of its photo (``groups_new`` vs ``groups_known``), nor one listed for it in
    ``rejected`` ((m, 2) rows of new-face index, label); two new faces of one photo never join the same
    label (the closer keeps it). From ``ann_min_n`` labelled known faces on, the neighbours come from
    faiss (approximate) instead of an exact blocked search.

    >>> known = np.array([[1, 0], [0.99, 0.141], [0, 1]], dtype=np.float32)
    >>> assign_to_known(np.array([[0.995, 0.0998]], dtype=np.float32), known, np.array([4, 4, 7]),
    ...                 threshold=1.0, k=3).tolist()
    [4]
    """
    X_new = _check_embeddings(X_new, "X_new")
    X_known = _check_embeddings(X_known, "X_known")
    known_labels = np.asarray(known_labels, dtype=np.int64)
    if known_labels.shape != (len(X_known),):
        raise DataError(f"known_labels must have one entry per known face ({len(X_known)})")
    n_new = len(X_new)
    result = np.full(n_new, -1, dtype=np.int64)
    labelled = np.flatnonzero(known_labels >= 0)
    if n_new == 0 or len(labelled) == 0:
        return result
    if X_new.shape[1] != X_known.shape[1]:
        raise DataError(f"new embeddings have {X_new.shape[1]} dimensions, known ones {X_known.shape[1]}")
    groups_new = _check_vector(groups_new, n_new, "groups_new")
    groups_known = _check_vector(groups_known, len(X_known), "groups_known")
    # Large libraries: approximate neighbours (faiss), as for clustering.
    idx, d2 = knn_graph(X_new, k, Y=X_known[labelled], ann_min_n=ann_min_n, progress=progress)
    idx = np.where(idx >= 0, idx, 0)  # faiss may return fewer than k neighbours: -1 (their d2 is inf)
    lab = known_labels[labelled][idx]  # (n_new, k') labels of the neighbours

    forbidden: set[tuple[int, int]] = set()
    if rejected is not None:
        forbidden.update((face, label) for face, label in np.asarray(rejected, dtype=np.int64).reshape(-1, 2).tolist())
    if groups_new is not None and groups_known is not None:
        # label -> photos it already holds; a new face from one of those photos cannot join it.
        photos_of: dict[int, set[int]] = {}
        for g, lbl in zip(groups_known[labelled].tolist(), known_labels[labelled].tolist()):
            photos_of.setdefault(lbl, set()).add(g)
    else:
        photos_of = {}

    scores = np.full(n_new, np.inf)
    for i in range(n_new):
        within = d2[i] <= threshold
        if not within.any():
            continue
        votes: dict[int, int] = {}
        for lbl in lab[i][within].tolist():
            votes[lbl] = votes.get(lbl, 0) + 1
        best, best_key = -1, None
        for lbl, count in votes.items():
            if (i, lbl) in forbidden:
                continue
            if groups_new is not None and groups_new[i] in photos_of.get(lbl, ()):
                continue
            # mean over every neighbour of that label among the k, near or not: linkage to the
            # label's nearest faces, not just to its single closest one
            key = (-count, float(d2[i][lab[i] == lbl].mean()))
            if best_key is None or key < best_key:
                best, best_key = lbl, key
        if best < 0 or best_key is None or best_key[1] > threshold:
            continue
        if 2 * -best_key[0] <= int(within.sum()):
            continue  # no strict majority of the near neighbours
        result[i], scores[i] = best, best_key[1]
    if groups_new is not None:
        # Two new faces of one photo under one label: keep the closer one.
        order = np.lexsort((scores, result, groups_new))
        g, r = groups_new[order], result[order]
        dup = np.zeros(len(order), dtype=bool)
        dup[1:] = (g[1:] == g[:-1]) & (r[1:] == r[:-1]) & (r[1:] >= 0)
        result[order[dup]] = -1
    return result

"""Clustering against brute force: average linkage of squared L2, constraints, incremental assignment."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from facecluster.cluster import (
    METHODS,
    assign_to_known,
    average_linkage_graph,
    cluster_embeddings,
    group_pairs,
)
from facecluster.config import ClusterConfig
from facecluster.errors import DataError


def unit(a: np.ndarray) -> np.ndarray:
    return (a / np.linalg.norm(a, axis=1, keepdims=True)).astype(np.float32)


def planted(n_ids: int, per_id: int, dim: int = 16, noise: float = 0.12, seed: int = 0):
    """Identities as random centres with faces scattered around them; returns (X, truth)."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(n_ids, dim)))
    truth = np.repeat(np.arange(n_ids), per_id)
    X = unit(centres[truth] + noise * rng.normal(size=(len(truth), dim)))
    return X, truth


def brute_force(
    X: np.ndarray,
    threshold: float,
    *,
    must_link: np.ndarray | None = None,
    conflicts: list[tuple[int, int]] = (),
) -> list[frozenset[int]]:
    """Sequential average linkage on the full matrix of squared distances, one merge at a time."""
    D = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    clusters: list[set[int]] = []
    person: list[int] = []
    seen: dict[int, int] = {}
    for i in range(len(X)):
        pid = -1 if must_link is None else int(must_link[i])
        if pid >= 0 and pid in seen:
            clusters[seen[pid]].add(i)
            continue
        if pid >= 0:
            seen[pid] = len(clusters)
        clusters.append({i})
        person.append(pid)
    bad = {frozenset(p) for p in conflicts}
    while True:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if person[a] >= 0 and person[b] >= 0 and person[a] != person[b]:
                    continue
                if any(frozenset((i, j)) in bad for i in clusters[a] for j in clusters[b]):
                    continue
                avg = np.mean([D[i, j] for i in clusters[a] for j in clusters[b]])
                if best is None or avg < best[0]:
                    best = (avg, a, b)
        if best is None or best[0] > threshold:
            break
        _, a, b = best
        clusters[a] |= clusters.pop(b)
        person[a] = max(person[a], person.pop(b))
    return sorted((frozenset(c) for c in clusters), key=min)


def partition(labels: np.ndarray) -> list[frozenset[int]]:
    """Clusters as sets of face indices; each -1 face alone."""
    groups: dict[int, set[int]] = {}
    for i, lbl in enumerate(labels.tolist()):
        groups.setdefault(lbl if lbl >= 0 else -1 - i, set()).add(i)
    return sorted((frozenset(g) for g in groups.values()), key=min)


ALL = ClusterConfig(min_cluster_size=1)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.3, 0.8, 1.2])
def test_small_n_equals_brute_force_average_linkage(seed: int, threshold: float) -> None:
    X, _ = planted(6, 7, dim=8, noise=0.35, seed=seed)
    labels = cluster_embeddings(X, replace(ALL, threshold=threshold))
    assert partition(labels) == brute_force(X, threshold)


def test_small_n_equals_scikit_learn_on_squared_distances() -> None:
    from sklearn.cluster import AgglomerativeClustering

    X, _ = planted(20, 10, dim=16, noise=0.3, seed=3)
    D = ((X[:, None, :].astype(np.float64) - X[None, :, :]) ** 2).sum(-1)
    ref = AgglomerativeClustering(
        n_clusters=None, metric="precomputed", linkage="average", distance_threshold=0.9
    ).fit_predict(D)
    labels = cluster_embeddings(X, replace(ALL, threshold=0.9))
    assert partition(labels) == partition(ref)


def test_labels_are_int64_largest_first_and_small_clusters_are_noise() -> None:
    X, truth = planted(3, 5, seed=4)
    X = np.vstack([X[:5], X[5:8], unit(np.random.default_rng(9).normal(size=(1, 16)))])
    labels = cluster_embeddings(X, ClusterConfig(threshold=1.0, min_cluster_size=2))
    assert labels.dtype == np.int64
    assert labels.tolist() == [0] * 5 + [1] * 3 + [-1]


def test_cannot_link_same_photo_is_respected_and_matches_brute_force() -> None:
    X, _ = planted(4, 6, dim=8, noise=0.3, seed=5)
    groups = np.arange(len(X))
    groups[[0, 1]] = 100  # two faces of identity 0 in one photo
    groups[[6, 13]] = 101
    labels = cluster_embeddings(X, replace(ALL, threshold=1.0), groups=groups)
    assert labels[0] != labels[1] and labels[6] != labels[13]
    ref = brute_force(X, 1.0, conflicts=[(0, 1), (6, 13)])
    assert partition(labels) == ref


def test_cannot_link_pairs_keep_a_rejected_face_out() -> None:
    X, _ = planted(2, 6, dim=8, noise=0.2, seed=6)
    free = cluster_embeddings(X, replace(ALL, threshold=1.0))
    assert free[0] == free[3]
    labels = cluster_embeddings(X, replace(ALL, threshold=1.0), cannot_link_pairs=np.array([[0, 3]]))
    assert labels[0] != labels[3]
    assert partition(labels) == brute_force(X, 1.0, conflicts=[(0, 3)])


def test_must_link_pre_merges_and_different_people_never_merge() -> None:
    X, _ = planted(4, 5, dim=8, noise=0.3, seed=7)
    must = np.full(len(X), -1)
    must[[0, 15]] = 1  # the user put a face of identity 3 with identity 0
    must[[5]] = 2
    must[[6]] = 3  # two different people inside identity 1: they must stay apart
    labels = cluster_embeddings(X, replace(ALL, threshold=1.0), must_link=must)
    assert labels[0] == labels[15]
    assert labels[5] != labels[6]
    assert partition(labels) == brute_force(X, 1.0, must_link=must)


def test_must_link_cluster_kept_below_min_size() -> None:
    X = unit(np.random.default_rng(1).normal(size=(4, 16)))
    must = np.array([-1, 5, -1, -1])
    labels = cluster_embeddings(X, ClusterConfig(threshold=0.5, min_cluster_size=2), must_link=must)
    assert labels[1] >= 0 and (labels[[0, 2, 3]] == -1).all()


def test_must_link_beats_same_photo_conflict() -> None:
    X, _ = planted(1, 4, dim=8, seed=8)
    labels = cluster_embeddings(X, replace(ALL, threshold=1.0), groups=np.array([1, 1, 2, 3]),
                                must_link=np.array([0, 0, -1, -1]))
    assert labels[0] == labels[1]


def test_knn_graph_path_recovers_planted_identities() -> None:
    # Above exact_max_n the graph is the kNN graph; with well-separated identities it finds them all.
    X, truth = planted(40, 12, dim=32, noise=0.08, seed=10)
    labels = cluster_embeddings(X, ClusterConfig(threshold=1.0, exact_max_n=10, k=10))
    assert partition(labels) == partition(truth)
    approx = cluster_embeddings(X, ClusterConfig(threshold=1.0, exact_max_n=10, ann_min_n=10, k=10))
    assert partition(approx) == partition(truth)


def test_knn_graph_path_keeps_constraints() -> None:
    X, truth = planted(10, 8, dim=16, noise=0.1, seed=11)
    groups = np.arange(len(X))
    groups[[0, 1, 2]] = 500
    labels = cluster_embeddings(X, ClusterConfig(threshold=1.0, exact_max_n=10, k=6, min_cluster_size=1),
                                groups=groups)
    assert len({labels[0], labels[1], labels[2]}) == 3


def test_hdbscan_finds_planted_identities_and_keeps_constraints() -> None:
    X, truth = planted(15, 10, dim=16, noise=0.1, seed=12)
    cfg = ClusterConfig(method="hdbscan", k=8, hdbscan_min_samples=3, min_cluster_size=3)
    labels = cluster_embeddings(X, cfg)
    assert partition(labels) == partition(truth)
    groups = np.arange(len(X))
    groups[[0, 1]] = 999
    labels = cluster_embeddings(X, cfg, groups=groups)
    assert labels[0] != labels[1] or labels[0] == -1


def constraint_violations(
    labels: np.ndarray, must_link: np.ndarray, conflicts: list[tuple[int, int]]
) -> list[str]:
    """Every broken rule, by brute force over all face pairs: a named person's faces share one kept
    cluster, two named people never share one, a conflicting pair never shares one (unless one person)."""
    broken = [f"named face {i} unclustered" for i in range(len(labels)) if must_link[i] >= 0 and labels[i] < 0]
    for i in range(len(labels)):
        for j in range(i + 1, len(labels)):
            pi, pj = int(must_link[i]), int(must_link[j])
            if pi >= 0 and pi == pj and labels[i] != labels[j]:
                broken.append(f"person {pi} split: faces {i}, {j}")
            if pi >= 0 and pj >= 0 and pi != pj and labels[i] == labels[j] >= 0:
                broken.append(f"people {pi}, {pj} share cluster {labels[i]}")
    for i, j in conflicts:
        same_person = must_link[i] >= 0 and must_link[i] == must_link[j]
        if labels[i] == labels[j] >= 0 and not same_person:
            broken.append(f"conflicting faces {i}, {j} share cluster {labels[i]}")
    return broken


def close_pairs_of_people(per_id: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Four people in two pairs of look-alikes (a density method sees two clusters): (X, truth)."""
    rng = np.random.default_rng(seed)
    a, b = unit(rng.normal(size=(2, 16)))
    centres = unit(np.array([a, a + 0.25 * unit(rng.normal(size=(1, 16)))[0],
                             b, b + 0.25 * unit(rng.normal(size=(1, 16)))[0]]))
    truth = np.repeat(np.arange(4), per_id)
    return unit(centres[truth] + 0.06 * rng.normal(size=(len(truth), 16))), truth


@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_named_people_whole_and_apart_when_they_look_alike(method: str) -> None:
    # The review's case: every face named, two pairs of look-alike people.
    X, truth = close_pairs_of_people()
    cfg = ClusterConfig(method=method, threshold=1.0)
    labels = cluster_embeddings(X, cfg, must_link=truth)
    assert constraint_violations(labels, truth, []) == []
    assert partition(labels) == partition(truth)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("method", METHODS)
def test_every_method_keeps_must_link_and_cannot_link(method: str, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Some faces named (a few with another identity's name), shared photos, rejections: brute-force check.
    import facecluster.cluster as cluster

    if seed % 3 == 2:
        monkeypatch.setattr(cluster, "EXACT_MAX_PAIRS", 0)  # the kNN-graph paths
    rng = np.random.default_rng(100 + seed)
    X, truth = close_pairs_of_people(per_id=int(rng.integers(3, 9)), seed=seed)
    n = len(X)
    must = np.where(rng.random(n) < 0.5, truth, -1)
    moved = rng.random(n) < 0.1
    must[moved] = rng.integers(0, 4, size=int(moved.sum()))
    groups = np.arange(n)
    for _ in range(3):
        i, j = rng.choice(n, size=2, replace=False)
        groups[j] = groups[i]
    rejected = rng.choice(n, size=(3, 2))
    rejected = rejected[rejected[:, 0] != rejected[:, 1]]
    conflicts = [(int(i), int(j)) for i in range(n) for j in range(i + 1, n) if groups[i] == groups[j]]
    conflicts += [(int(i), int(j)) for i, j in rejected]
    cfg = ClusterConfig(method=method, threshold=1.0, hdbscan_min_samples=int(rng.integers(1, 6)))
    labels = cluster_embeddings(X, cfg, groups=groups, must_link=must, cannot_link_pairs=rejected)
    assert constraint_violations(labels, must, conflicts) == []


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7])
def test_hdbscan_takes_libraries_smaller_than_its_neighbourhood(n: int) -> None:
    # Fewer faces than min_samples + 1 (default 5 + 1): scikit-learn refused them (a 4-photo library,
    # an incremental run with 4 new faces). Faces of two well-apart people, alternating.
    X, truth = planted(2, 4, dim=16, noise=0.05, seed=30)
    order = np.array([0, 4, 1, 5, 2, 6, 3, 7])[:n]
    X, truth = X[order], truth[order]
    labels = cluster_embeddings(X, ClusterConfig(method="hdbscan"))
    assert labels.dtype == np.int64 and labels.shape == (n,)
    assert all(len(set(truth[labels == c].tolist())) == 1 for c in set(labels.tolist()) - {-1})
    # Named, every face is clustered with its person; with min_cluster_size 1 no face is left out.
    named = cluster_embeddings(X, ClusterConfig(method="hdbscan"), must_link=truth)
    assert partition(named) == partition(truth)
    assert (cluster_embeddings(X, ClusterConfig(method="hdbscan", min_cluster_size=1)) >= 0).all()


def test_average_linkage_graph_merges_only_along_edges_with_exact_means() -> None:
    # 0-1 and 1-2 close, 0-2 not an edge: the chain merges, with the true mean over all pairs.
    X = unit(np.array([[1.0, 0.0], [0.9, 0.45], [0.6, 0.8]]))
    roots = average_linkage_graph(X, np.array([0, 1]), np.array([1, 2]), 0.55)
    assert roots.tolist() == [0, 0, 0]
    # The last merge costs the mean over both pairs, 0-2 (0.8) included though it is no edge:
    # (0.8 + 0.211) / 2 = 0.506 > 0.5, so at 0.5 one face stays out.
    assert len(set(average_linkage_graph(X, np.array([0, 1]), np.array([1, 2]), 0.5).tolist())) == 2
    # No edge, no merge, however close.
    assert average_linkage_graph(X, np.array([0]), np.array([1]), 2.0).tolist() == [0, 0, 2]


def test_group_pairs_enumerates_every_pair_of_a_photo() -> None:
    u, v = group_pairs(np.array([5, 5, 5, -1, -1, 2]))
    assert list(zip(u.tolist(), v.tolist())) == [(0, 1), (0, 2), (1, 2)]


def test_bad_inputs_raise_data_error() -> None:
    X = unit(np.ones((3, 4)))
    with pytest.raises(DataError):
        cluster_embeddings(X, ClusterConfig(method="kmeans"))
    with pytest.raises(DataError):
        cluster_embeddings(X, ClusterConfig(), groups=np.array([1, 2]))
    with pytest.raises(DataError, match=r"^some face embeddings are NaN or infinite .*embed --force"):
        cluster_embeddings(np.full((2, 4), np.nan, dtype=np.float32), ClusterConfig())
    with pytest.raises(DataError):
        cluster_embeddings(X, ClusterConfig(), cannot_link_pairs=np.array([[0, 7]]))
    assert cluster_embeddings(np.empty((0, 4), dtype=np.float32), ClusterConfig()).shape == (0,)


def test_progress_is_reported() -> None:
    X, _ = planted(3, 4, seed=13)
    calls = []
    cluster_embeddings(X, ClusterConfig(), progress=lambda s, d, t: calls.append((s, d, t)))
    assert calls and calls[-1][0] == "cluster"


# --- incremental assignment -------------------------------------------------------------------


def test_assign_to_known_assigns_new_faces_of_known_people() -> None:
    X, truth = planted(6, 12, dim=16, noise=0.15, seed=20)
    known = np.arange(len(X)) % 4 != 0  # a quarter of the faces arrive later
    labels = np.where(truth < 5, truth + 10, -1)  # identity 5 was never clustered: -1
    got = assign_to_known(X[~known], X[known], labels[known], threshold=1.0, k=5)
    want = np.where(truth[~known] < 5, truth[~known] + 10, -1)
    assert got.tolist() == want.tolist()


def test_assign_to_known_leaves_far_faces_unassigned() -> None:
    X, truth = planted(2, 6, dim=16, noise=0.1, seed=21)
    stranger = unit(np.random.default_rng(3).normal(size=(1, 16)))
    got = assign_to_known(stranger, X, truth, threshold=1.0)
    assert got.tolist() == [-1]


def test_assign_to_known_needs_a_majority_between_two_close_people() -> None:
    # A face exactly between two people with three close faces each: no strict majority -> -1.
    a, b = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    known = unit(np.array([a, a, a, b, b, b]) + 0.01 * np.arange(18).reshape(6, 3))
    mid = unit(np.array([[1.0, 1.0, 0.0]]))
    got = assign_to_known(mid, known, np.array([0, 0, 0, 1, 1, 1]), threshold=1.5, k=6)
    assert got.tolist() == [-1]


def test_assign_to_known_respects_photo_and_rejections() -> None:
    X, truth = planted(2, 8, dim=16, noise=0.1, seed=22)
    new, old = X[:2], X[2:]
    old_labels = truth[2:]
    # Both new faces belong to identity 0 but come from one photo: only the closer one joins.
    got = assign_to_known(new, old, old_labels, threshold=1.0, groups_new=np.array([7, 7]))
    assert sorted(got.tolist()) == [-1, 0]
    # A photo that already has a face in cluster 0 cannot add another one to it.
    got = assign_to_known(new, old, old_labels, threshold=1.0, groups_new=np.array([7, 8]),
                          groups_known=np.where(np.arange(len(old)) == 0, 7, 100 + np.arange(len(old))))
    assert got.tolist() == [-1, 0]
    # "Not this person": face 1 was rejected from label 0.
    got = assign_to_known(new, old, old_labels, threshold=1.0, rejected=np.array([[1, 0]]))
    assert got.tolist() == [0, -1]


def test_assign_to_known_without_known_labels() -> None:
    X, _ = planted(1, 3, seed=23)
    assert assign_to_known(X, X, np.full(3, -1), threshold=1.0).tolist() == [-1, -1, -1]


def test_assign_to_known_approximate_path_agrees() -> None:
    X, truth = planted(40, 12, dim=16, noise=0.1, seed=24)
    known = np.arange(len(X)) % 5 != 0
    exact = assign_to_known(X[~known], X[known], truth[known], threshold=1.0)
    approx = assign_to_known(X[~known], X[known], truth[known], threshold=1.0, ann_min_n=10)
    assert exact.tolist() == truth[~known].tolist()
    assert approx.tolist() == exact.tolist()


def test_huge_component_falls_back_to_the_knn_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    import facecluster.cluster as cluster

    X, truth = planted(5, 10, dim=16, noise=0.08, seed=25)
    monkeypatch.setattr(cluster, "EXACT_MAX_PAIRS", 10)  # every identity alone has 45 pairs
    labels = cluster_embeddings(X, ClusterConfig(min_cluster_size=1, k=9))
    assert partition(labels) == partition(truth)

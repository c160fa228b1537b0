"""Clustering metrics against values computed by hand (and scikit-learn for NMI/ARI)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from facecluster.cluster_metrics import cluster_metrics
from facecluster.errors import DataError


def test_hand_computed_example() -> None:
    # truth: A A A B B ; pred: 1 1 2 2 2
    # pairs in pred: {01} + {23,24,34} = 4; true pairs among them: 01, 34 -> precision 2/4
    # true pairs: {01,02,12} + {34} = 4; found 2 -> recall 2/4
    # BCubed precision per face: 2/2, 2/2, 1/3, 2/3, 2/3 -> 11/3 / 5 = 11/15
    # BCubed recall per face:    2/3, 2/3, 1/3, 2/2, 2/2 -> 11/3 / 5 = 11/15
    m = cluster_metrics(np.array(["A", "A", "A", "B", "B"]), np.array([1, 1, 2, 2, 2]))
    assert m.pairwise_precision == pytest.approx(0.5)
    assert m.pairwise_recall == pytest.approx(0.5)
    assert m.pairwise_f == pytest.approx(0.5)
    assert m.bcubed_precision == pytest.approx(11 / 15)
    assert m.bcubed_recall == pytest.approx(11 / 15)
    assert m.bcubed_f == pytest.approx(11 / 15)
    assert (m.n_faces, m.n_identities, m.n_clusters, m.n_unclustered) == (5, 2, 2, 0)


def test_noise_counts_as_singletons() -> None:
    # truth: 0 0 0 ; pred: 7 7 -1 -> one pair found of three; precision 1; BCubed recall (2/3+2/3+1/3)/3
    m = cluster_metrics(np.array([0, 0, 0]), np.array([7, 7, -1]))
    assert m.pairwise_precision == 1.0
    assert m.pairwise_recall == pytest.approx(1 / 3)
    assert m.pairwise_f == pytest.approx(0.5)
    assert m.bcubed_precision == 1.0
    assert m.bcubed_recall == pytest.approx(5 / 9)
    assert (m.n_clusters, m.n_unclustered) == (1, 1)
    # Two -1 faces are not "together": all -1 never scores as one big cluster.
    m = cluster_metrics(np.array([0, 1]), np.array([-1, -1]))
    assert m.pairwise_precision == 1.0 and m.bcubed_precision == 1.0 and m.bcubed_recall == 1.0


def test_perfect_and_all_merged() -> None:
    truth = np.array([0, 0, 1, 1, 2])
    perfect = cluster_metrics(truth, np.array([3, 3, 9, 9, 4]))
    assert perfect.pairwise_f == 1.0 and perfect.bcubed_f == 1.0 and perfect.ari == 1.0
    assert perfect.nmi == pytest.approx(1.0)
    merged = cluster_metrics(truth, np.zeros(5, dtype=int))
    # 10 pairs predicted, 2 true -> precision 0.2, recall 1
    assert merged.pairwise_precision == pytest.approx(0.2)
    assert merged.pairwise_recall == 1.0
    assert merged.bcubed_recall == 1.0
    assert merged.bcubed_precision == pytest.approx((2 / 5 * 4 + 1 / 5) / 5)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nmi_and_ari_match_scikit_learn(seed: int) -> None:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 8, size=200)
    pred = np.where(rng.random(200) < 0.7, truth, rng.integers(0, 12, size=200))
    m = cluster_metrics(truth, pred)
    assert m.nmi == pytest.approx(normalized_mutual_info_score(truth, pred))
    assert m.ari == pytest.approx(adjusted_rand_score(truth, pred))


def test_bad_shapes() -> None:
    with pytest.raises(DataError):
        cluster_metrics(np.array([0, 1]), np.array([0]))
    with pytest.raises(DataError, match="no faces to score"):  # not a perfect score of nothing
        cluster_metrics(np.array([], dtype=int), np.array([], dtype=int))

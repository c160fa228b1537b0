"""Miners and distances against brute-force enumeration of all triplets, and pytorch-metric-learning."""

from __future__ import annotations

import itertools

import pytest
import torch

from facecluster.training.distances import pairwise_squared_l2
from facecluster.training.miners import BatchAllMiner, BatchHardMiner, SemiHardMiner, make_miner

MARGIN = 0.2


def _points(seed: int = 0, n_ids: int = 4, per_id: int = 3, dim: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    # Unit vectors, clustered loosely by identity, so easy, semi-hard and hard negatives all occur.
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_ids, dim, generator=g)
    labels = torch.arange(n_ids).repeat_interleave(per_id)
    x = centres[labels] + 0.9 * torch.randn(n_ids * per_id, dim, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def _d(x: torch.Tensor, i: int, j: int) -> float:
    return float(((x[i] - x[j]) ** 2).sum())


def _all_triplets(labels: torch.Tensor) -> set[tuple[int, int, int]]:
    n = len(labels)
    return {
        (a, p, q)
        for a, p, q in itertools.product(range(n), repeat=3)
        if a != p and labels[a] == labels[p] and labels[a] != labels[q]
    }


def test_pairwise_squared_l2_known_distances_and_safe_gradient() -> None:
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 4.0]], requires_grad=True)
    d = pairwise_squared_l2(x)
    assert torch.allclose(d, torch.tensor([[0.0, 25.0, 25.0], [25.0, 0.0, 0.0], [25.0, 0.0, 0.0]]))
    assert torch.all(torch.diagonal(d) == 0)
    d.sum().backward()  # identical points: no sqrt, so no NaN
    assert torch.isfinite(x.grad).all()
    y = torch.randn(5, 2)
    assert torch.allclose(pairwise_squared_l2(x.detach(), y), torch.cdist(x.detach(), y) ** 2, atol=1e-4)


def test_batch_all_is_every_valid_triplet() -> None:
    x, labels = _points()
    assert BatchAllMiner()(x, labels).as_set() == _all_triplets(labels)


def test_batch_hard_picks_farthest_positive_and_closest_negative() -> None:
    x, labels = _points(seed=1)
    got = BatchHardMiner()(x, labels)
    n = len(labels)
    expected = set()
    for a in range(n):
        pos = [p for p in range(n) if p != a and labels[p] == labels[a]]
        neg = [q for q in range(n) if labels[q] != labels[a]]
        expected.add((a, max(pos, key=lambda p: _d(x, a, p)), min(neg, key=lambda q: _d(x, a, q))))
    assert got.as_set() == expected


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_semi_hard_matches_brute_force(seed: int) -> None:
    x, labels = _points(seed=seed)
    got = SemiHardMiner(MARGIN, generator=torch.Generator().manual_seed(seed))(x, labels)
    n = len(labels)
    pairs = [(a, p) for a in range(n) for p in range(n) if a != p and labels[a] == labels[p]]
    # Exactly one triplet per valid anchor-positive pair.
    assert sorted(zip(got.anchors.tolist(), got.positives.tolist())) == sorted(pairs)
    n_semi = n_fallback = 0
    for a, p, q in got.as_set():
        d_ap, negatives = _d(x, a, p), [j for j in range(n) if labels[j] != labels[a]]
        semi = [j for j in negatives if d_ap < _d(x, a, j) < d_ap + MARGIN]
        if semi:
            n_semi += 1
            assert q in semi
        else:
            n_fallback += 1
            assert _d(x, a, q) == pytest.approx(min(_d(x, a, j) for j in negatives), abs=1e-6)
    assert n_semi > 0 and n_fallback > 0  # the point set exercises both branches


def test_semi_hard_draws_at_random_among_semi_hard_negatives() -> None:
    # Anchor 0 at the origin, positive at distance² 1, four negatives all in the semi-hard band.
    x = torch.tensor([[0.0], [1.0], [1.02], [1.04], [1.06], [1.08]]).sqrt()
    labels = torch.tensor([0, 0, 1, 2, 3, 4])
    seen = set()
    for seed in range(40):
        t = SemiHardMiner(MARGIN, generator=torch.Generator().manual_seed(seed))(x, labels)
        seen.add(int(t.negatives[(t.anchors == 0)].item()))
    assert seen == {2, 3, 4, 5}
    a = SemiHardMiner(MARGIN, generator=torch.Generator().manual_seed(7))(x, labels)
    b = SemiHardMiner(MARGIN, generator=torch.Generator().manual_seed(7))(x, labels)
    assert a.as_set() == b.as_set()


def test_miners_handle_batches_without_valid_triplets() -> None:
    x = torch.randn(3, 4)
    for name in ("semi-hard", "batch-hard", "batch-all"):
        assert len(make_miner(name)(x, torch.tensor([0, 1, 2]))) == 0  # no positives
        assert len(make_miner(name)(x, torch.tensor([5, 5, 5]))) == 0  # no negatives
    with pytest.raises(ValueError, match="unknown miner"):
        make_miner("hardest")


def test_against_pytorch_metric_learning() -> None:
    pml_miners = pytest.importorskip("pytorch_metric_learning.miners")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.utils import loss_and_miner_utils as lmu

    x, labels = _points(seed=5, n_ids=5, per_id=4)
    sq = LpDistance(power=2, normalize_embeddings=False)
    # batch-all: the same set as PML's enumeration of all triplets.
    a, p, q = lmu.get_all_triplets_indices(labels)
    assert BatchAllMiner()(x, labels).as_set() == set(zip(a.tolist(), p.tolist(), q.tolist()))
    # batch-hard: PML's BatchHardMiner with squared L2 (same argmax/argmin per anchor).
    a, p, q = pml_miners.BatchHardMiner(distance=sq)(x, labels)
    assert BatchHardMiner()(x, labels).as_set() == set(zip(a.tolist(), p.tolist(), q.tolist()))
    # semi-hard: PML returns ALL band triplets; ours picks one of them per pair that has any.
    a, p, q = pml_miners.TripletMarginMiner(margin=MARGIN, type_of_triplets="semihard", distance=sq)(x, labels)
    band = set(zip(a.tolist(), p.tolist(), q.tolist()))
    ours = SemiHardMiner(MARGIN, generator=torch.Generator().manual_seed(0))(x, labels).as_set()
    pairs_with_band = {(a_, p_) for a_, p_, _ in band}
    assert {(a_, p_) for a_, p_, q_ in ours if (a_, p_, q_) in band} == pairs_with_band

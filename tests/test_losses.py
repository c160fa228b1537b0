"""The triplet loss against brute force and pytorch-metric-learning's TripletMarginLoss."""

from __future__ import annotations

import pytest
import torch

from facecluster.training.losses import TripletLoss
from facecluster.training.miners import BatchAllMiner, BatchHardMiner, SemiHardMiner, Triplets


def _embeddings(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(4).repeat_interleave(3)
    x = torch.randn(4, 6, generator=g)[labels] + torch.randn(12, 6, generator=g)
    return torch.nn.functional.normalize(x, dim=1), labels


def test_known_distances() -> None:
    # Points on a line: d(a,p) = 1, d(a,n1) = 1.1 (active: 1 - 1.1 + 0.2 = 0.1), d(a,n2) = 4 (inactive).
    x = torch.tensor([[0.0], [1.0], [1.1**0.5], [2.0]])
    t = Triplets(torch.tensor([0, 0]), torch.tensor([1, 1]), torch.tensor([2, 3]))
    r = TripletLoss(0.2)(x, t)
    assert r.loss.item() == pytest.approx(0.05, abs=1e-6)  # (0.1 + 0) / 2
    assert (r.active_fraction, r.n_triplets, r.n_active) == (0.5, 2, 1)
    assert TripletLoss(0.2, "nonzero")(x, t).loss.item() == pytest.approx(0.1, abs=1e-6)
    assert TripletLoss(0.2, "sum")(x, t).loss.item() == pytest.approx(0.1, abs=1e-6)


def test_matches_brute_force_sum_over_triplets() -> None:
    x, labels = _embeddings()
    t = BatchAllMiner()(x, labels)
    brute = sum(
        max(0.0, float(((x[a] - x[p]) ** 2).sum() - ((x[a] - x[n]) ** 2).sum()) + 0.2)
        for a, p, n in t.as_set()
    )
    assert TripletLoss(0.2, "sum")(x, t).loss.item() == pytest.approx(brute, rel=1e-5)


def test_no_triplets_gives_zero_loss_that_backpropagates() -> None:
    x = torch.randn(3, 4, requires_grad=True)
    r = TripletLoss()(x, Triplets.empty())
    r.loss.backward()
    assert r.loss.item() == 0.0 and r.active_fraction == 0.0 and x.grad is not None


def test_gradient_pulls_positive_closer() -> None:
    x = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.8, 0.6]], requires_grad=True)
    t = Triplets(torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))
    TripletLoss(0.2)(x, t).loss.backward()
    step = x.detach() - 0.1 * x.grad
    assert ((step[0] - step[1]) ** 2).sum() < ((x[0] - x[1]) ** 2).sum()


@pytest.mark.parametrize("miner", [BatchAllMiner(), BatchHardMiner(), SemiHardMiner(0.2, torch.Generator().manual_seed(0))])
def test_against_pytorch_metric_learning(miner: object) -> None:
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.reducers import AvgNonZeroReducer, MeanReducer

    x, labels = _embeddings(seed=3)
    t = miner(x, labels)  # type: ignore[operator]
    indices = (t.anchors, t.positives, t.negatives)
    sq = LpDistance(power=2, normalize_embeddings=False)
    for ours, reducer in (("mean", MeanReducer()), ("nonzero", AvgNonZeroReducer())):
        ref = pml_losses.TripletMarginLoss(margin=0.2, distance=sq, reducer=reducer)(x, labels, indices)
        assert TripletLoss(0.2, ours)(x, t).loss.item() == pytest.approx(ref.item(), abs=1e-5)

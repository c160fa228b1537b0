"""Online triplet miners: pick (anchor, positive, negative) index triplets inside one batch.

Each miner is a small class whose ``mine(dist, labels)`` sees the batch's squared L2 distance
matrix; the base class computes the distances and packs the result. All return :class:`Triplets`
of LongTensors, so they compose with any loss::

    miner = SemiHardMiner(margin=0.2, generator=torch.Generator().manual_seed(0))
    triplets = miner(embeddings, labels)
    loss = TripletLoss(margin=0.2)(embeddings, triplets)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facecluster.training.distances import pairwise_squared_l2, same_label_masks

#: Rows of the (pairs x batch) candidate matrix handled at once: bounds memory for batches of ~1800.
_CHUNK = 4096


@dataclass(frozen=True)
class Triplets:
    """Index triplets into a batch: ``anchors[i], positives[i], negatives[i]`` (LongTensors)."""

    anchors: torch.Tensor
    positives: torch.Tensor
    negatives: torch.Tensor

    def __len__(self) -> int:
        return int(self.anchors.numel())

    def as_set(self) -> set[tuple[int, int, int]]:
        """The triplets as a set of Python int tuples (handy in tests and debugging)."""
        return set(zip(self.anchors.tolist(), self.positives.tolist(), self.negatives.tolist()))

    @classmethod
    def empty(cls, device: torch.device | str = "cpu") -> "Triplets":
        """No triplets (a batch without any valid anchor)."""
        none = torch.empty(0, dtype=torch.long, device=device)
        return cls(none, none.clone(), none.clone())


class Miner:
    """Base class: ``miner(embeddings, labels)`` -> :class:`Triplets`; subclasses write ``mine``."""

    def __call__(self, embeddings: torch.Tensor, labels: torch.Tensor) -> Triplets:
        # Mining decides indices only: no gradient flows through the choice.
        with torch.no_grad():
            dist = pairwise_squared_l2(embeddings.detach())
            return self.mine(dist, labels.to(dist.device))

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
        """Choose triplets from the (n, n) squared distance matrix and the (n,) labels."""
        raise NotImplementedError


class SemiHardMiner(Miner):
    """FaceNet's selection: every valid anchor–positive pair, with one semi-hard negative each.

    A negative is semi-hard when ``d(a,p) < d(a,n) < d(a,p) + margin``; one is drawn at random
    among them. When a pair has none, the hardest negative (smallest ``d(a,n)``) is used: it lies
    below the margin whenever any negative does, and otherwise the triplet is kept as an inactive
    (zero-loss) one so that the logged active fraction counts every anchor–positive pair.

    Example: ``SemiHardMiner(0.2)(emb, labels)`` -> one triplet per ordered same-label pair.
    """

    def __init__(self, margin: float = 0.2, generator: torch.Generator | None = None) -> None:
        self.margin = margin
        self.generator = generator

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
        pos, neg = same_label_masks(labels)
        anchors, positives = torch.nonzero(pos, as_tuple=True)
        has_negative = neg[anchors].any(dim=1)
        anchors, positives = anchors[has_negative], positives[has_negative]
        if anchors.numel() == 0:
            return Triplets.empty(dist.device)
        negatives = torch.empty_like(anchors)
        for start in range(0, anchors.numel(), _CHUNK):
            a = anchors[start : start + _CHUNK]
            d_ap = dist[a, positives[start : start + _CHUNK]].unsqueeze(1)
            d_an = dist[a]
            is_neg = neg[a]
            semi = is_neg & (d_an > d_ap) & (d_an < d_ap + self.margin)
            # A uniform random score per candidate; argmax over the semi-hard ones draws one uniformly.
            scores = torch.rand(d_an.shape, generator=self.generator, device="cpu").to(d_an.device)
            random_semi = torch.where(semi, scores, torch.full_like(scores, -1.0)).argmax(dim=1)
            hardest = torch.where(is_neg, d_an, torch.full_like(d_an, float("inf"))).argmin(dim=1)
            negatives[start : start + _CHUNK] = torch.where(semi.any(dim=1), random_semi, hardest)
        return Triplets(anchors, positives, negatives)


class BatchHardMiner(Miner):
    """Batch-hard (Hermans et al. 2017): per anchor, its farthest positive and its closest negative.

    Anchors without a positive or without a negative in the batch are skipped.

    Example: ``BatchHardMiner()(emb, labels)`` -> at most one triplet per face of the batch.
    """

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
        pos, neg = same_label_masks(labels)
        valid = pos.any(dim=1) & neg.any(dim=1)
        anchors = torch.nonzero(valid, as_tuple=True)[0]
        if anchors.numel() == 0:
            return Triplets.empty(dist.device)
        d = dist[anchors]
        positives = torch.where(pos[anchors], d, torch.full_like(d, -1.0)).argmax(dim=1)
        negatives = torch.where(neg[anchors], d, torch.full_like(d, float("inf"))).argmin(dim=1)
        return Triplets(anchors, positives, negatives)


class BatchAllMiner(Miner):
    """Batch-all: every valid triplet of the batch (pair it with a loss averaged over active ones).

    Example: for labels ``[0, 0, 1]``: triplets (0, 1, 2) and (1, 0, 2).
    """

    def mine(self, dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
        pos, neg = same_label_masks(labels)
        parts: list[torch.Tensor] = []
        step = max(1, _CHUNK * 64 // max(1, labels.numel() ** 2))  # anchors per chunk: bounded n^3 mask
        for start in range(0, labels.numel(), step):
            block = pos[start : start + step].unsqueeze(2) & neg[start : start + step].unsqueeze(1)
            a, p, n = torch.nonzero(block, as_tuple=True)
            parts.append(torch.stack([a + start, p, n]))
        if not parts:
            return Triplets.empty(dist.device)
        a, p, n = torch.cat(parts, dim=1)
        return Triplets(a, p, n)


MINERS: dict[str, type[Miner]] = {
    "semi-hard": SemiHardMiner,
    "batch-hard": BatchHardMiner,
    "batch-all": BatchAllMiner,
}


def make_miner(name: str, margin: float = 0.2, generator: torch.Generator | None = None) -> Miner:
    """Build a miner by its CLI name (``semi-hard``, ``batch-hard``, ``batch-all``).

    Example: ``make_miner("batch-hard")``.
    """
    if name == "semi-hard":
        return SemiHardMiner(margin=margin, generator=generator)
    if name in MINERS:
        return MINERS[name]()
    raise ValueError(f"unknown miner {name!r}; choose one of {', '.join(MINERS)}")

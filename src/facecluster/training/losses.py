"""The triplet loss on squared L2 distances (FaceNet eq. 2), reporting the fraction of active triplets.

    L = Σ max(0, ‖a − p‖² − ‖a − n‖² + α),   α = 0.2, on L2-normalised embeddings

    result = TripletLoss(margin=0.2)(embeddings, triplets)
    result.loss.backward(); print(result.active_fraction)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from facecluster.training.miners import Triplets


@dataclass(frozen=True)
class LossResult:
    """The loss to back-propagate and what to log about it."""

    loss: torch.Tensor
    active_fraction: float  # triplets with a positive loss / triplets mined (0.0 when none)
    n_triplets: int
    n_active: int


class TripletLoss:
    """Hinge on ``d(a,p) − d(a,n) + margin`` with squared L2 distances.

    ``reduction``: ``"mean"`` averages over every mined triplet (the paper's sum, normalised by the
    batch); ``"nonzero"`` averages over the active ones only (usual with batch-all, where most
    triplets are easy); ``"sum"`` is the plain sum. No triplets gives a zero loss that still
    back-propagates (so a step never crashes).

    Example: ``TripletLoss(0.2)(emb, BatchHardMiner()(emb, labels)).loss``.
    """

    def __init__(self, margin: float = 0.2, reduction: str = "mean") -> None:
        if reduction not in ("mean", "nonzero", "sum"):
            raise ValueError(f"unknown reduction {reduction!r}; choose mean, nonzero or sum")
        self.margin = margin
        self.reduction = reduction

    def __call__(self, embeddings: torch.Tensor, triplets: Triplets) -> LossResult:
        n = len(triplets)
        if n == 0:
            return LossResult(embeddings.sum() * 0.0, 0.0, 0, 0)
        emb = embeddings.float()
        a, p, neg = emb[triplets.anchors], emb[triplets.positives], emb[triplets.negatives]
        # Direct differences (not the |x|²+|y|²−2xy expansion): exact for the few rows used here.
        d_ap = (a - p).pow(2).sum(dim=1)
        d_an = (a - neg).pow(2).sum(dim=1)
        losses = torch.relu(d_ap - d_an + self.margin)
        n_active = int((losses > 0).sum())
        if self.reduction == "sum":
            loss = losses.sum()
        elif self.reduction == "nonzero":
            loss = losses.sum() / max(n_active, 1)
        else:
            loss = losses.mean()
        return LossResult(loss, n_active / n, n, n_active)

"""Pairwise squared L2 distances, safe for back-propagation.

FaceNet measures identity by the squared Euclidean distance between unit vectors (0 = same point,
4 = opposite points), so the miners and the loss work on squared distances directly::

    >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    >>> pairwise_squared_l2(x)
    tensor([[0., 2.],
            [2., 0.]])
"""

from __future__ import annotations

import torch


def pairwise_squared_l2(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
    """Squared L2 distances between the rows of ``x`` and of ``y`` (default ``x``), shape (n, m).

    Uses ``|x|² + |y|² − 2 x·y`` (one matrix product), clamped at 0 because rounding can make it
    slightly negative; with ``y`` omitted the diagonal is exactly 0. No square root is taken, so the
    gradient stays finite even for identical points.

    Example: ``pairwise_squared_l2(torch.randn(4, 128))`` -> a symmetric (4, 4) tensor.
    """
    same = y is None
    if y is None:
        y = x
    # Compute in at least float32: bf16 autocast would lose most digits of the difference.
    x32 = x.float()
    y32 = x32 if same else y.float()
    sq_x = (x32 * x32).sum(dim=1, keepdim=True)
    sq_y = sq_x.T if same else (y32 * y32).sum(dim=1, keepdim=True).T
    dist = (sq_x + sq_y - 2.0 * (x32 @ y32.T)).clamp_min(0.0)
    if same:
        # Exact zeros on the diagonal, without an in-place write that would break autograd.
        dist = dist * (1.0 - torch.eye(dist.shape[0], device=dist.device, dtype=dist.dtype))
    return dist


def same_label_masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (n, n) masks: ``positive[i, j]`` same label and i != j; ``negative[i, j]`` different labels.

    Example: ``pos, neg = same_label_masks(torch.tensor([0, 0, 1]))`` -> ``pos[0, 1]`` and ``neg[0, 2]``.
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(labels.shape[0], dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same

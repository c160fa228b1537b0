"""Import facenet-pytorch 2.6.0 (test-only reference) without torchvision.

facenet-pytorch imports two torchvision names at load time; no CPU torchvision exists here, so a
small stand-in provides them before the import. Tests call ``load_reference()`` and skip without it.
"""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch


def _batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    # Greedy NMS per category, plain and slow: it only has to be right.
    keep: list[int] = []
    for category in torch.unique(idxs):
        members = torch.nonzero(idxs == category).flatten()
        order = members[torch.argsort(scores[members], descending=True)]
        while order.numel() > 0:
            i = int(order[0])
            keep.append(i)
            if order.numel() == 1:
                break
            rest = order[1:]
            x1 = torch.maximum(boxes[i, 0], boxes[rest, 0])
            y1 = torch.maximum(boxes[i, 1], boxes[rest, 1])
            x2 = torch.minimum(boxes[i, 2], boxes[rest, 2])
            y2 = torch.minimum(boxes[i, 3], boxes[rest, 3])
            inter = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
            area_i = (boxes[i, 2] - boxes[i, 0]) * (boxes[i, 3] - boxes[i, 1])
            area_r = (boxes[rest, 2] - boxes[rest, 0]) * (boxes[rest, 3] - boxes[rest, 1])
            iou = inter / (area_i + area_r - inter)
            order = rest[iou <= iou_threshold]
    keep_t = torch.tensor(keep, dtype=torch.long)
    return keep_t[torch.argsort(scores[keep_t], descending=True)]


def _to_tensor(pic: object) -> torch.Tensor:
    arr = np.asarray(pic, dtype=np.float32) / 255.0
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.transpose(2, 0, 1).copy())


def _install_torchvision_stub() -> None:
    if "torchvision" in sys.modules:
        return
    tv = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    boxes = types.ModuleType("torchvision.ops.boxes")
    transforms = types.ModuleType("torchvision.transforms")
    functional = types.ModuleType("torchvision.transforms.functional")
    boxes.batched_nms = _batched_nms  # type: ignore[attr-defined]
    functional.to_tensor = _to_tensor  # type: ignore[attr-defined]
    tv.ops, ops.boxes, tv.transforms, transforms.functional = ops, boxes, transforms, functional  # type: ignore[attr-defined]
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.ops": ops,
            "torchvision.ops.boxes": boxes,
            "torchvision.transforms": transforms,
            "torchvision.transforms.functional": functional,
        }
    )


def load_reference() -> types.ModuleType:
    """Return the ``facenet_pytorch`` module, or skip the test when it is not installed."""
    _install_torchvision_stub()
    return pytest.importorskip("facenet_pytorch")

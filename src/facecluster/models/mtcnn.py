"""MTCNN (Zhang et al., 2016): PNet, RNet, ONet and the detection cascade, batched across photos.

The three networks load facenet-pytorch's ``pnet.pt``/``rnet.pt``/``onet.pt`` with ``strict=True``, and the
cascade reproduces facenet-pytorch's numbers (area resampling, the same box arithmetic, the same NMS
thresholds), but it is written for throughput: resampling reads one integer integral image per photo, PNet
runs once per pyramid level on all photos of equal size, RNet and ONet run on the candidates of all photos
together, and NMS is a vectorised torch routine (no torchvision)::

    pnet, rnet, onet = PNet(), RNet(), ONet()   # load the weights: detect.MTCNNDetector.from_weights
    [(boxes, probs, points)] = detect_faces([rgb_uint8_array], pnet, rnet, onet)   # (N, 4), (N,), (N, 5, 2)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from facecluster.batching import batch_pieces

NmsMode = Literal["union", "min"]

_MEAN = 127.5
_SCALE = 0.0078125  # 1 / 128: MTCNN's input normalisation
_CHUNK_PIXELS = 128 * 48 * 48  # crop pixels per RNet/ONet forward: bounds memory, keeps the work in cache
_PNET_BATCH = 16  # photos per PNet forward (a power of two, see ``facecluster.batching``)


class PNet(nn.Module):
    """Proposal network: a 12×12 sliding window (stride 2) giving face probability and box offsets.

    ``forward(x)`` takes normalised images ``(B, 3, H, W)`` and returns ``(offsets (B, 4, h, w),
    probabilities (B, 2, h, w))`` with ``h = ceil((H - 2) / 2) - 4``. Example::

        reg, prob = PNet()(torch.zeros(1, 3, 12, 12))   # (1, 4, 1, 1), (1, 2, 1, 1)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        self.eval()
        # Channels-last lets oneDNN run these small-channel convolutions about twice as fast on CPU.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement network on 24×24 crops: ``forward(x (K, 3, 24, 24)) -> (offsets (K, 4), probs (K, 2))``.

    Example::

        reg, prob = RNet()(torch.zeros(5, 3, 24, 24))   # (5, 4), (5, 2)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)
        self.eval()
        # Channels-last lets oneDNN run these small-channel convolutions about twice as fast on CPU.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        # The weights were converted from Caffe, whose flatten order is (W, H, C): keep it.
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)
        x = self.prelu4(self.dense4(x))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output network on 48×48 crops: ``forward(x) -> (offsets (K, 4), landmarks (K, 10), probs (K, 2))``.

    Landmarks are 5 x-coordinates then 5 y-coordinates, as fractions of the crop. Example::

        reg, points, prob = ONet()(torch.zeros(5, 3, 48, 48))   # (5, 4), (5, 10), (5, 2)
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self.eval()
        # Channels-last lets oneDNN run these small-channel convolutions about twice as fast on CPU.
        self.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)  # Caffe flatten order, as in RNet
        x = self.prelu5(self.dense5(x))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))


# --------------------------------------------------------------------------------------------------
# Non-maximum suppression


def box_overlap(a: torch.Tensor, b: torch.Tensor, mode: NmsMode = "union", plus_one: bool = False) -> torch.Tensor:
    """Pairwise overlap of boxes ``a (..., N, 4)`` and ``b (..., M, 4)`` (x1, y1, x2, y2): ``(..., N, M)``.

    ``mode="union"`` is IoU, ``"min"`` divides the intersection by the smaller area. ``plus_one`` counts
    pixels inclusively (width = x2 - x1 + 1), as MTCNN's original final NMS does. Leading dimensions are
    batch dimensions (NMS compares a padded stack of groups with itself). Example::

        box_overlap(torch.tensor([[0., 0, 2, 2]]), torch.tensor([[1., 0, 3, 2]]))   # [[1/3]]
    """
    one = 1.0 if plus_one else 0.0
    area_a = (a[..., 2] - a[..., 0] + one) * (a[..., 3] - a[..., 1] + one)
    area_b = (b[..., 2] - b[..., 0] + one) * (b[..., 3] - b[..., 1] + one)
    iw = torch.minimum(a[..., :, None, 2], b[..., None, :, 2]) - torch.maximum(a[..., :, None, 0], b[..., None, :, 0])
    ih = torch.minimum(a[..., :, None, 3], b[..., None, :, 3]) - torch.maximum(a[..., :, None, 1], b[..., None, :, 1])
    inter = (iw + one).clamp_(min=0) * (ih + one).clamp_(min=0)
    if mode == "min":
        return inter / torch.minimum(area_a[..., :, None], area_b[..., None, :])
    return inter / (area_a[..., :, None] + area_b[..., None, :] - inter)


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    threshold: float,
    groups: torch.Tensor | None = None,
    mode: NmsMode = "union",
    plus_one: bool = False,
) -> torch.Tensor:
    """Greedy non-maximum suppression; returns the kept indices, highest score first.

    A box is dropped when its overlap with a kept, higher-scoring box of the same group exceeds
    ``threshold``; boxes of different ``groups`` (e.g. photos) never suppress each other. No Python loop
    over boxes: the greedy result is the fixed point of "keep j unless a kept i before j overlaps it",
    reached by iterating that rule on the overlap matrix (Cluster-NMS, Zheng et al. 2021), for all groups
    at once on a padded ``(groups, n, n)`` stack::

        nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([0.9, 0.8]), 0.5)   # tensor([0])
    """
    n = boxes.shape[0]
    device = boxes.device
    if n <= 1:
        return torch.zeros(n, dtype=torch.long, device=device)
    if groups is None or bool((groups == groups[0]).all()):
        if n * n <= 2**22:  # one group (one photo): no padding needed
            order = torch.argsort(scores, descending=True, stable=True)
            ordered = boxes[order]
            suppress = box_overlap(ordered, ordered, mode, plus_one) > threshold
            return order[_greedy_fixed_point(suppress.triu_(diagonal=1), torch.ones(n, dtype=torch.bool, device=device))]
        groups = torch.zeros(n, dtype=torch.long, device=device)
    # Order by group, then by descending score; ``slot`` is each box's rank inside its group.
    order = torch.argsort(scores, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    _, counts = torch.unique_consecutive(groups[order], return_counts=True)
    width = int(counts.max())
    if counts.numel() * width * width > 2**22:
        # One huge group (a large photo's first pyramid level): fall back to the sequential greedy loop,
        # whose memory is linear, rather than a matrix of billions of overlaps.
        return _nms_sequential(boxes, scores, threshold, groups, mode, plus_one)
    starts = torch.cumsum(counts, 0) - counts
    group_of = torch.repeat_interleave(torch.arange(counts.numel(), device=device), counts)
    slot = torch.arange(n, device=device) - starts[group_of]
    padded = torch.zeros(counts.numel(), width, 4, dtype=boxes.dtype, device=device)
    padded[group_of, slot] = boxes[order]
    valid = torch.zeros(counts.numel(), width, dtype=torch.bool, device=device)
    valid[group_of, slot] = True
    suppress = box_overlap(padded, padded, mode, plus_one) > threshold
    suppress &= valid[:, :, None] & valid[:, None, :]
    suppress.triu_(diagonal=1)  # only a higher-scoring box (earlier slot) may suppress
    keep = _greedy_fixed_point(suppress, valid)
    kept = order[keep[group_of, slot]]
    return kept[torch.argsort(scores[kept], descending=True, stable=True)]


def _greedy_fixed_point(suppress: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Iterate "keep j unless a kept i < j suppresses it" from "keep all" until nothing changes.

    ``suppress`` is ``(..., n, n)`` (i suppresses j, upper triangular), ``valid`` ``(..., n)``. Each pass fixes at
    least the next box of every chain, so it ends after at most n passes; in practice a handful.
    """
    keep = valid.clone()
    for _ in range(valid.shape[-1]):
        new_keep = valid & ~(suppress & keep[..., :, None]).any(dim=-2)
        if torch.equal(new_keep, keep):
            break
        keep = new_keep
    return keep


def _nms_sequential(
    boxes: torch.Tensor, scores: torch.Tensor, threshold: float, groups: torch.Tensor, mode: NmsMode, plus_one: bool
) -> torch.Tensor:
    # The textbook loop: take the best remaining box, drop what it overlaps. O(n) memory.
    order = torch.argsort(scores, descending=True, stable=True)
    kept = []
    while order.numel():
        best = order[0]
        kept.append(best)
        rest = order[1:]
        overlap = box_overlap(boxes[best][None], boxes[rest], mode, plus_one)[0]
        order = rest[(overlap <= threshold) | (groups[rest] != groups[best])]
    return torch.stack(kept)


# --------------------------------------------------------------------------------------------------
# Resampling. facenet-pytorch resizes with ``interpolate(mode="area")`` (adaptive average pooling): every
# output pixel is the mean of a rectangle of input pixels. The pyramid levels use that very function on the
# stacked photos; the RNet/ONet crops (hundreds per call, all of different sizes) come from one integer
# integral image per photo instead, by four lookups per output pixel, exactly and without a loop.


def integral_image(image: np.ndarray) -> np.ndarray:
    """Summed-area table ``(H + 1, W + 1, 4)`` of an ``(H, W, 3)`` uint8 image, zero first row and column.

    Channels last and padded to four, so the three sums of one pixel are one 16-byte item: a crop's
    corner lookups then fetch one item each instead of three scattered values.
    The fourth channel stays zero. int32 while the total fits (photos up to ~8 Mpx), else int64. Example::

        integral_image(np.ones((2, 2, 3), np.uint8))[2, 2]   # array([4, 4, 4, 0], dtype=int32)
    """
    h, w, c = image.shape
    dtype = np.int32 if 255 * h * w < 2**31 else np.int64
    table = np.zeros((h + 1, w + 1, 4), dtype=dtype)
    inner = table[1:, 1:, :c]
    np.cumsum(image, axis=0, dtype=dtype, out=inner)  # numpy's cumsum is far faster than torch's
    np.cumsum(inner, axis=1, out=inner)
    return table


def _bins(start: torch.Tensor, length: torch.Tensor, out: int) -> tuple[torch.Tensor, torch.Tensor]:
    # Adaptive average pooling bins of ``length`` inputs into ``out`` outputs: [floor(i*n/out), ceil((i+1)*n/out)).
    i = torch.arange(out, device=length.device)
    lo = torch.div(i * length[..., None], out, rounding_mode="floor")
    hi = torch.div((i + 1) * length[..., None] + out - 1, out, rounding_mode="floor")
    return start[..., None] + lo, start[..., None] + hi


def _numpy_ok(device: torch.device) -> bool:
    # Gathers go through numpy on the CPU (several times faster there); torch on other devices.
    return device.type == "cpu"


def _take(table: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    # ``index_select``, through numpy on the CPU, where its take is several times faster.
    if _numpy_ok(table.device):
        return torch.from_numpy(table.numpy().take(index.numpy(), axis=dim))
    return table.index_select(dim, index)


def _pixel_items(flat: np.ndarray) -> np.ndarray:
    """The ``(N, 4)`` table as N single items (complex128 for int32: a reinterpretation, no copy).

    numpy's take copies a 16-byte item with one move; a ``(N, 4)`` take along axis 0 goes through its
    generic chunk loop, and an int64 table (32-byte rows) stays on that path.
    """
    return flat.view(np.complex128).reshape(-1) if flat.dtype == np.int32 else flat


def _gather(items: np.ndarray, index: np.ndarray, dtype: np.dtype) -> np.ndarray:
    # Rows ``index`` (any shape) of the pixel table as an ``(*index.shape, 4)`` integer array.
    if items.dtype == np.complex128:
        return items.take(index).view(dtype).reshape(*index.shape, 4)
    return items.take(index, axis=0)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return (x - _MEAN) * _SCALE


# --------------------------------------------------------------------------------------------------
# The cascade


@dataclass(frozen=True)
class CascadeSettings:
    """The numbers of the cascade (defaults are MTCNN's and facenet-pytorch's)."""

    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)  # per scale, PNet, RNet, ONet


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float) -> list[float]:
    """Scales at which PNet's 12-px window sees faces from ``min_face_size`` up to the whole photo.

    Example::

        pyramid_scales(250, 250, 20, 0.709)[:2]   # [0.6, 0.4254]
    """
    m = 12.0 / min_face_size
    smallest = min(height, width) * m
    scales = []
    scale = m
    while smallest >= 12:
        scales.append(scale)
        scale *= factor
        smallest *= factor
    return scales


def _rerec(boxes: torch.Tensor) -> torch.Tensor:
    # Square each box around its centre (side = the longer side).
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    # Apply regression offsets, relative to inclusive widths (RNet/ONet convention).
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    return boxes[:, :4] + reg * torch.stack([w, h, w, h], dim=1)


class _Photos:
    """The photos of one call: their integral images stacked in one ``(N, 4)`` table (one row per pixel
    corner), photos of equal size adjacent, so that a pyramid level of a size group is one view and the
    crops of all photos are one gather."""

    def __init__(self, images: Sequence[np.ndarray], device: torch.device) -> None:
        self.device = device
        self.groups: dict[tuple[int, int], list[int]] = defaultdict(list)
        for i, img in enumerate(images):
            self.groups[(img.shape[0], img.shape[1])].append(i)
        order = [i for index in self.groups.values() for i in index]
        tables = {i: integral_image(images[i]) for i in order}
        flat = np.concatenate([tables[i].reshape(-1, 4) for i in order])  # int64 if any table needs it
        rows = np.array([tables[i].shape[0] * tables[i].shape[1] for i in order])
        bases = np.empty(len(images), dtype=np.int64)
        bases[order] = np.cumsum(rows) - rows
        self.bases = torch.from_numpy(bases).to(device)
        self.heights = torch.tensor([img.shape[0] for img in images], device=device)
        self.widths = torch.tensor([img.shape[1] for img in images], device=device)
        self.flat = torch.from_numpy(flat).to(device)
        self._items = _pixel_items(flat) if _numpy_ok(device) else None

    def tables(self, index: list[int]) -> torch.Tensor:
        """The integral images of one size group, as a ``(B, H + 1, W + 1, 4)`` view."""
        h, w = int(self.heights[index[0]]), int(self.widths[index[0]])
        start = int(self.bases[index[0]])
        return self.flat[start : start + len(index) * (h + 1) * (w + 1)].view(len(index), h + 1, w + 1, 4)

    def level(self, index: list[int], out_h: int, out_w: int) -> torch.Tensor:
        """Area-resample a size group to ``(B, 3, out_h, out_w)``: ``interpolate(mode="area")``, exactly.

        The result is laid out channels-last, as PNet wants it.
        """
        table = self.tables(index)
        h, w = table.shape[1] - 1, table.shape[2] - 1
        zero = torch.zeros(1, dtype=torch.long, device=self.device)
        r0, r1 = (edge[0] for edge in _bins(zero, torch.full_like(zero, h), out_h))
        c0, c1 = (edge[0] for edge in _bins(zero, torch.full_like(zero, w), out_w))
        # Sums over row bins of each column prefix, then over column bins: two gathers of table entries.
        sums = _take(table, r1, 1) - _take(table, r0, 1)
        sums = _take(sums, c1, 2) - _take(sums, c0, 2)
        count = ((r1 - r0)[:, None] * (c1 - c0)[None, :]).to(torch.float32)[..., None]
        return (sums.to(torch.float32) / count)[..., :3].permute(0, 3, 1, 2)

    def crops(self, photo: torch.Tensor, boxes: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop ``boxes`` of photos ``photo``, clipped as facenet-pytorch does, area-resampled to ``size``².

        Returns normalised crops ``(K', 3, size, size)`` (channels-last) and the mask of boxes kept (those
        with at least one pixel inside their photo).
        """
        h, w = self.heights[photo], self.widths[photo]
        b = boxes.trunc().to(torch.long)
        # facenet-pytorch's ``pad``: a 1-based start clipped to 1, an end clipped to the photo.
        x0 = b[:, 0].clamp(min=1) - 1
        y0 = b[:, 1].clamp(min=1) - 1
        x1 = torch.minimum(b[:, 2], w)
        y1 = torch.minimum(b[:, 3], h)
        ok = (x1 > x0) & (y1 > y0)
        photo, x0, y0, x1, y1 = photo[ok], x0[ok], y0[ok], x1[ok], y1[ok]
        r0, r1 = _bins(y0, y1 - y0, size)
        c0, c1 = _bins(x0, x1 - x0, size)
        # Table rows of the four corners of every output pixel: (K, size, size) each; a bin's sum is
        # T[r1, c1] - T[r0, c1] - T[r1, c0] + T[r0, c0].
        stride = (self.widths[photo] + 1)[:, None, None]
        base = self.bases[photo][:, None, None]
        top, bottom = base + r0[:, :, None] * stride, base + r1[:, :, None] * stride
        left, right = c0[:, None, :], c1[:, None, :]
        count = ((r1 - r0)[:, :, None] * (c1 - c0)[:, None, :])[..., None]
        if self._items is not None:
            # numpy here: its take is about twice as fast as torch's indexing and its small ops cost less
            # (the crops are the largest cost after the networks). int32 indices halve the index traffic;
            # four contiguous corner gathers keep the sums' arithmetic on contiguous arrays.
            index_type: type[np.signedinteger[Any]] = np.int32 if self.flat.shape[0] < 2**31 else np.int64
            top_i, bottom_i = top.numpy().astype(index_type), bottom.numpy().astype(index_type)
            left_i, right_i = left.numpy().astype(index_type), right.numpy().astype(index_type)
            items, dtype = self._items, self.flat.numpy().dtype
            sums = _gather(items, bottom_i + right_i, dtype)
            sums -= _gather(items, top_i + right_i, dtype)
            sums -= _gather(items, bottom_i + left_i, dtype)
            sums += _gather(items, top_i + left_i, dtype)
            means = sums.astype(np.float32)
            means /= count.numpy().astype(np.float32)
            crops = torch.from_numpy(means)
        else:
            flat = self.flat
            total = flat[bottom + right] - flat[top + right] - flat[bottom + left] + flat[top + left]
            crops = total.to(torch.float32) / count.to(torch.float32)
        return _normalise(crops[..., :3].permute(0, 3, 1, 2)), ok


def _classify(
    photos: _Photos, net: nn.Module, photo: torch.Tensor, boxes: torch.Tensor, size: int
) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Crop ``boxes`` and run ``net`` on them in chunks (a chunk's crops stay in cache while the net runs).

    Returns the mask of boxes that had pixels in their photo and the net's outputs for those boxes.
    """
    crops, ok = photos.crops(photo, boxes, size)
    n = crops.shape[0]
    if n == 0:
        return ok, ()
    # Pad to a multiple of 8 (at most 7 wasted crops) so that the chunks come from few batch shapes.
    padded = -(-n // 8) * 8
    if padded > n:
        crops = torch.cat([crops, crops.new_zeros((padded - n, *crops.shape[1:]))]).contiguous(
            memory_format=torch.channels_last
        )
    outs, start = [], 0
    for piece in batch_pieces(padded, _CHUNK_PIXELS // (size * size)):
        outs.append(net(crops[start : start + piece]))
        start += piece
    return ok, tuple(torch.cat(parts)[:n] for parts in zip(*outs, strict=True))


def _pnet_level(
    photos: _Photos, pnet: PNet, index: list[int], height: int, width: int, scale: float, settings: CascadeSettings
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """PNet on one pyramid level of photos ``index``: boxes, scores, offsets, photo indices after NMS."""
    level = _normalise(photos.level(index, int(height * scale + 1), int(width * scale + 1)))
    reg, prob = pnet(level.contiguous(memory_format=torch.channels_last))
    mask = prob[:, 1] >= settings.thresholds[0]
    where = mask.nonzero()
    scores = prob[:, 1][mask]
    offsets = reg.permute(0, 2, 3, 1)[mask]
    xy = where[:, [2, 1]].to(reg.dtype)  # (column, row) of the 12-px window, stride 2
    boxes = torch.cat([torch.floor((2 * xy + 1) / scale), torch.floor((2 * xy + 12) / scale)], dim=1)
    photo = torch.tensor(index, device=photos.device)[where[:, 0]]
    keep = nms(boxes, scores, settings.nms_thresholds[0], photo)
    return boxes[keep], scores[keep], offsets[keep], photo[keep]


def _proposals(
    photos: _Photos, pnet: PNet, settings: CascadeSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stage 1: PNet over the pyramid; photos of equal size share each forward pass.

    Returns candidate boxes (N, 4) and photo indices (N,), after per-scale and per-photo NMS and box
    regression (RNet scores the candidates again, so PNet's scores are not returned).
    """
    device = photos.device
    all_boxes: list[torch.Tensor] = []
    all_scores: list[torch.Tensor] = []
    all_reg: list[torch.Tensor] = []
    all_photo: list[torch.Tensor] = []
    for (height, width), index in photos.groups.items():
        scales = pyramid_scales(height, width, settings.min_face_size, settings.factor)
        start = 0
        for piece in batch_pieces(len(index), _PNET_BATCH):
            part, start = index[start : start + piece], start + piece
            for scale in scales:
                found = _pnet_level(photos, pnet, part, height, width, scale, settings)
                for store, value in zip((all_boxes, all_scores, all_reg, all_photo), found, strict=True):
                    store.append(value)
    if not all_boxes:
        return torch.empty(0, 4, device=device), torch.empty(0, dtype=torch.long, device=device)
    boxes, scores = torch.cat(all_boxes), torch.cat(all_scores)
    reg, photo = torch.cat(all_reg), torch.cat(all_photo)
    keep = nms(boxes, scores, settings.nms_thresholds[1], photo)
    boxes, reg, photo = boxes[keep], reg[keep], photo[keep]
    # PNet's regression is relative to exclusive widths (unlike RNet/ONet's): keep facenet-pytorch's arithmetic.
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    boxes = boxes + reg * torch.stack([w, h, w, h], dim=1)
    return _rerec(boxes), photo


@torch.inference_mode()
def detect_faces(
    images: Sequence[np.ndarray],
    pnet: PNet,
    rnet: RNet,
    onet: ONet,
    settings: CascadeSettings = CascadeSettings(),
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Run the MTCNN cascade on ``(H, W, 3)`` uint8 RGB arrays of any sizes, on the networks' device.

    Returns, per image, ``(boxes (N, 4), probabilities (N,), landmarks (N, 5, 2))`` float32 CPU tensors,
    highest probability first; boxes are x1, y1, x2, y2 in pixels. Example::

        [(boxes, probs, points)] = detect_faces([np.zeros((64, 64, 3), np.uint8)], pnet, rnet, onet)
    """
    results: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    if len(images) == 0:
        return results
    photos = _Photos(images, next(pnet.parameters()).device)
    boxes, photo = _proposals(photos, pnet, settings)

    # Stage 2: RNet on all candidates of all photos at once.
    if boxes.shape[0]:
        ok, outs = _classify(photos, rnet, photo, boxes, 24)
        boxes, photo = boxes[ok], photo[ok]
    if boxes.shape[0]:
        reg, prob = outs
        passed = prob[:, 1] > settings.thresholds[1]
        boxes, scores, reg, photo = boxes[passed], prob[passed, 1], reg[passed], photo[passed]
        keep = nms(boxes, scores, settings.nms_thresholds[2], photo)
        boxes = _rerec(_bbreg(boxes[keep], reg[keep]))
        photo = photo[keep]

    # Stage 3: ONet gives the final boxes, probabilities and the five landmarks.
    scores = torch.empty(0, device=boxes.device)
    points = torch.empty(0, 5, 2, device=boxes.device)
    if boxes.shape[0]:
        ok, outs = _classify(photos, onet, photo, boxes, 48)
        boxes, photo = boxes[ok], photo[ok]
    if boxes.shape[0]:
        reg, marks, prob = outs
        passed = prob[:, 1] > settings.thresholds[2]
        boxes, scores, reg, marks, photo = boxes[passed], prob[passed, 1], reg[passed], marks[passed], photo[passed]
        w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
        h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
        xs = w * marks[:, :5] + boxes[:, 0:1] - 1
        ys = h * marks[:, 5:] + boxes[:, 1:2] - 1
        points = torch.stack([xs, ys], dim=2)
        boxes = _bbreg(boxes, reg)
        keep = nms(boxes, scores, settings.nms_thresholds[3], photo, mode="min", plus_one=True)
        boxes, scores, points, photo = boxes[keep], scores[keep], points[keep], photo[keep]

    boxes, scores, points, photo = boxes.cpu(), scores.cpu(), points.cpu(), photo.cpu()
    for i in range(len(images)):
        mine = photo == i  # ``keep`` is sorted by score, so each photo's faces come best first
        results.append((boxes[mine], scores[mine], points[mine]))
    return results


__all__ = [
    "PNet",
    "RNet",
    "ONet",
    "CascadeSettings",
    "box_overlap",
    "nms",
    "integral_image",
    "pyramid_scales",
    "detect_faces",
]

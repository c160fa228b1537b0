"""InceptionResnetV1, the FaceNet embedding network (Szegedy et al. 2016; Schroff et al. 2015).

Parameter names and shapes match facenet-pytorch's ``InceptionResnetV1``, so its published state dicts
(``vggface2``, ``casia-webface``) load with ``strict=True``. ``forward`` maps standardised 160×160 RGB
crops to L2-normalised embeddings::

    model = InceptionResnetV1.from_state_dict(load_state_dict(path), device="cpu")
    vectors = model(crops)  # (N, 3, 160, 160) float -> (N, 512), unit rows

Building the network never touches the disk or the network: weights are loaded separately.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from facecluster.errors import ModelError

# (out_channels, kernel, stride, padding) for one conv + batch-norm + ReLU unit.
_Spec = tuple[int, int | tuple[int, int], int, int | tuple[int, int]]


class ConvUnit(nn.Module):
    """Conv (no bias) → BatchNorm (TensorFlow's eps 1e-3) → ReLU; attributes ``conv`` and ``bn``."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int | tuple[int, int], stride: int = 1,
                 padding: int | tuple[int, int] = 0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=padding, bias=False)
        # An Identity once fuse_for_inference has folded it into the conv.
        self.bn: nn.BatchNorm2d | nn.Identity = nn.BatchNorm2d(out_channels, eps=0.001, momentum=0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _chain(in_channels: int, specs: Sequence[_Spec]) -> nn.Module:
    """One branch: a single ConvUnit, or an ``nn.Sequential`` of them (keys ``branchK.0.conv...``)."""
    units: list[nn.Module] = []
    for out_channels, kernel, stride, padding in specs:
        units.append(ConvUnit(in_channels, out_channels, kernel, stride, padding))
        in_channels = out_channels
    return units[0] if len(units) == 1 else nn.Sequential(*units)


class ResidualBlock(nn.Module):
    """Inception-ResNet block: parallel branches, concatenated, projected by a 1×1 conv, scaled, added."""

    def __init__(self, channels: int, branches: Sequence[Sequence[_Spec]], scale: float, relu: bool = True) -> None:
        super().__init__()
        self.scale = scale
        self.relu = relu
        self.branch_names = [f"branch{i}" for i in range(len(branches))]
        for name, specs in zip(self.branch_names, branches):
            self.add_module(name, _chain(channels, specs))
        joined = sum(specs[-1][0] for specs in branches)
        self.conv2d = nn.Conv2d(joined, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mixed = torch.cat([self.get_submodule(name)(x) for name in self.branch_names], 1)
        out = x + self.scale * self.conv2d(mixed)
        return F.relu(out) if self.relu else out


class ReductionBlock(nn.Module):
    """Grid reduction: conv branches plus a stride-2 max-pool branch (no parameters), concatenated."""

    def __init__(self, channels: int, branches: Sequence[Sequence[_Spec]]) -> None:
        super().__init__()
        self.branch_names = [f"branch{i}" for i in range(len(branches) + 1)]
        for name, specs in zip(self.branch_names, branches):
            self.add_module(name, _chain(channels, specs))
        self.add_module(self.branch_names[-1], nn.MaxPool2d(3, stride=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.get_submodule(name)(x) for name in self.branch_names], 1)


def _block35() -> ResidualBlock:
    return ResidualBlock(
        256,
        [[(32, 1, 1, 0)], [(32, 1, 1, 0), (32, 3, 1, 1)], [(32, 1, 1, 0), (32, 3, 1, 1), (32, 3, 1, 1)]],
        scale=0.17,
    )


def _block17() -> ResidualBlock:
    return ResidualBlock(896, [[(128, 1, 1, 0)], [(128, 1, 1, 0), (128, (1, 7), 1, (0, 3)), (128, (7, 1), 1, (3, 0))]],
                         scale=0.10)


def _block8(scale: float = 0.20, relu: bool = True) -> ResidualBlock:
    return ResidualBlock(1792, [[(192, 1, 1, 0)], [(192, 1, 1, 0), (192, (1, 3), 1, (0, 1)), (192, (3, 1), 1, (1, 0))]],
                         scale=scale, relu=relu)


class InceptionResnetV1(nn.Module):
    """The FaceNet embedding network: (N, 3, 160, 160) standardised RGB → (N, embedding_dim) unit rows.

    Keyword arguments (defaults in brackets):
        embedding_dim: size of ``last_linear`` (1792→dim, no bias) and ``last_bn`` [512]
        num_classes: add a ``logits`` layer (dim→classes) for classification training or to load a
            state dict that carries one [None: no classifier]
        dropout: dropout before ``last_linear``, active only in training mode [0.6]
        device: where the parameters live ["cpu"]

    Example::

        model = InceptionResnetV1(embedding_dim=128).eval()
        model(torch.zeros(2, 3, 160, 160)).shape  # torch.Size([2, 128])
    """

    def __init__(self, embedding_dim: int = 512, num_classes: int | None = None, dropout: float = 0.6,
                 device: str | torch.device = "cpu") -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        self.conv2d_1a = ConvUnit(3, 32, 3, stride=2)
        self.conv2d_2a = ConvUnit(32, 32, 3)
        self.conv2d_2b = ConvUnit(32, 64, 3, padding=1)
        self.maxpool_3a = nn.MaxPool2d(3, stride=2)
        self.conv2d_3b = ConvUnit(64, 80, 1)
        self.conv2d_4a = ConvUnit(80, 192, 3)
        self.conv2d_4b = ConvUnit(192, 256, 3, stride=2)
        self.repeat_1 = nn.Sequential(*[_block35() for _ in range(5)])
        self.mixed_6a = ReductionBlock(256, [[(384, 3, 2, 0)], [(192, 1, 1, 0), (192, 3, 1, 1), (256, 3, 2, 0)]])
        self.repeat_2 = nn.Sequential(*[_block17() for _ in range(10)])
        self.mixed_7a = ReductionBlock(
            896,
            [[(256, 1, 1, 0), (384, 3, 2, 0)], [(256, 1, 1, 0), (256, 3, 2, 0)],
             [(256, 1, 1, 0), (256, 3, 1, 1), (256, 3, 2, 0)]],
        )
        self.repeat_3 = nn.Sequential(*[_block8() for _ in range(5)])
        self.block8 = _block8(scale=1.0, relu=False)
        self.dropout = nn.Dropout(dropout)
        self.last_linear = nn.Linear(1792, embedding_dim, bias=False)
        self.last_bn = nn.BatchNorm1d(embedding_dim, eps=0.001, momentum=0.1)
        self.logits = nn.Linear(embedding_dim, num_classes) if num_classes else None
        self.to(device)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding before L2 normalisation (``last_bn`` output), e.g. for a classification loss."""
        for stage in (self.conv2d_1a, self.conv2d_2a, self.conv2d_2b, self.maxpool_3a, self.conv2d_3b,
                      self.conv2d_4a, self.conv2d_4b, self.repeat_1, self.mixed_6a, self.repeat_2,
                      self.mixed_7a, self.repeat_3, self.block8):
            x = stage(x)
        x = self.dropout(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))
        return self.last_bn(self.last_linear(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings, one unit row per input crop."""
        return F.normalize(self.features(x), p=2, dim=1)

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor], device: str | torch.device = "cpu",
                        ) -> InceptionResnetV1:
        """Build a network shaped like ``state_dict`` (embedding size, optional classifier), load it
        strictly and switch to eval mode; a state dict of another network raises a one-line ``ModelError``.

        Example::

            model = InceptionResnetV1.from_state_dict(torch.load(path, weights_only=True))
        """
        linear = state_dict.get("last_linear.weight")
        if linear is None or linear.ndim != 2 or linear.shape[1] != 1792:
            raise ModelError("not an InceptionResnetV1 state dict: 'last_linear.weight' (dim × 1792) is missing")
        logits = state_dict.get("logits.weight")
        model = cls(embedding_dim=int(linear.shape[0]), num_classes=int(logits.shape[0]) if logits is not None else None)
        try:
            model.load_state_dict(state_dict, strict=True)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()
            detail = " ".join(line.strip() for line in first[1:3]) if len(first) > 1 else first[0]
            raise ModelError(f"state dict does not fit InceptionResnetV1: {detail[:300]}") from exc
        return model.to(device).eval()


def fuse_for_inference(model: InceptionResnetV1) -> InceptionResnetV1:
    """A copy of ``model`` with every conv + BatchNorm pair folded into one biased conv, for inference.

    Folding is exact up to float rounding (the eval-mode BatchNorm is an affine map per channel) and
    saves one pass over every feature map. The copy is no longer state-dict compatible: keep the
    original for saving or training. Example::

        fast = fuse_for_inference(model).to(memory_format=torch.channels_last)
    """
    import copy

    fused = copy.deepcopy(model).eval()
    for unit in fused.modules():
        if not isinstance(unit, ConvUnit) or not isinstance(unit.bn, nn.BatchNorm2d):
            continue
        conv, bn = unit.conv, unit.bn
        assert bn.running_mean is not None and bn.running_var is not None
        scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        with torch.no_grad():
            conv.weight.mul_(scale[:, None, None, None])  # ``fused`` is a copy: its conv is changed in place
            conv.bias = nn.Parameter(bn.bias.detach() - bn.running_mean * scale)
        unit.bn = nn.Identity()
    return fused


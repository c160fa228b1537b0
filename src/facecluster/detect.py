"""Face detection: the ``Detector`` interface the rest of facecluster codes against, and its MTCNN implementation.

A detector takes decoded photos (HxWx3 uint8 RGB arrays of any sizes) and returns, per photo, the faces it
found, best first::

    detector = MTCNNDetector.pretrained(device="cpu")
    faces = detector.detect([load_image(path).pixels])[0]
    faces[0].box, faces[0].landmarks, faces[0].probability
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from facecluster.config import DetectConfig
from facecluster.errors import ModelError, WeightsError
from facecluster.models.mtcnn import CascadeSettings, ONet, PNet, RNet, detect_faces
from facecluster.reporting import ProgressFn, null_progress
from facecluster.weights import load_state_dict


@dataclass(frozen=True)
class DetectedFace:
    """One face: its box, five landmarks and MTCNN's face probability, in pixels of the image given.

    ``box`` is (x1, y1, x2, y2); ``landmarks`` are (x, y) of the left eye, right eye, nose, left and right
    mouth corners (left/right as seen in the photo). Example::

        DetectedFace(box=(10.0, 12.0, 60.0, 70.0), landmarks=((25.0, 35.0),) * 5, probability=0.999)
    """

    box: tuple[float, float, float, float]
    landmarks: tuple[tuple[float, float], ...]
    probability: float

    def scaled(self, factor: float) -> DetectedFace:
        """The same face with every coordinate divided by ``factor`` (``LoadedImage.scale`` → full size).

        Example: ``face.scaled(loaded.scale)`` for coordinates in the full-size photo.
        """
        x1, y1, x2, y2 = self.box
        marks = tuple((x / factor, y / factor) for x, y in self.landmarks)
        return DetectedFace(box=(x1 / factor, y1 / factor, x2 / factor, y2 / factor), landmarks=marks,
                            probability=self.probability)


class Detector(Protocol):
    """Anything that finds faces: one list per image (possibly empty), best first, always this type."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]: ...


class MTCNNDetector:
    """MTCNN face detection (Zhang et al. 2016), numerically matching facenet-pytorch's ``MTCNN``.

    All photos of one ``detect`` call are processed together: PNet batched per photo size and pyramid
    scale, RNet and ONet batched across all photos. Settings come from ``DetectConfig`` (min face size,
    stage thresholds, pyramid factor). Build it with ``pretrained()`` (weights resolved and cached) or
    ``from_weights(pnet, rnet, onet)``; the constructor itself never loads or downloads anything::

        detector = MTCNNDetector.from_weights(Path("pnet.pt"), Path("rnet.pt"), Path("onet.pt"))
        [[face, *_]] = detector.detect([pixels])
    """

    def __init__(
        self,
        pnet: PNet,
        rnet: RNet,
        onet: ONet,
        config: DetectConfig = DetectConfig(),
        device: str | torch.device = "cpu",
    ) -> None:
        try:
            self.device = torch.device(device)
            self.pnet = pnet.to(self.device).eval()
            self.rnet = rnet.to(self.device).eval()
            self.onet = onet.to(self.device).eval()
        except (RuntimeError, AssertionError) as exc:  # e.g. "cuda" on a machine without CUDA
            raise ModelError(f"cannot use device {device!r}: {str(exc).splitlines()[0]}") from exc
        self.config = config
        # tuple() keeps a list given in a DetectConfig from reaching the frozen settings; mypy types the
        # result as tuple[float, ...], hence the ignores.
        self.settings = CascadeSettings(
            min_face_size=config.min_face_size,
            thresholds=tuple(config.thresholds),  # type: ignore[arg-type]
            factor=config.factor,
            nms_thresholds=tuple(config.nms_thresholds),  # type: ignore[arg-type]
        )

    @classmethod
    def from_weights(
        cls,
        pnet: Path,
        rnet: Path,
        onet: Path,
        config: DetectConfig = DetectConfig(),
        device: str | torch.device = "cpu",
    ) -> MTCNNDetector:
        """Load facenet-pytorch's ``pnet.pt``/``rnet.pt``/``onet.pt`` state dicts (``strict=True``).

        Example: ``MTCNNDetector.from_weights(d / "pnet.pt", d / "rnet.pt", d / "onet.pt", device="cuda")``.
        """
        nets = (PNet(), RNet(), ONet())
        for net, path in zip(nets, (pnet, rnet, onet), strict=True):
            net.load_state_dict(_checked_state(net, Path(path)), strict=True)
        return cls(*nets, config=config, device=device)

    @classmethod
    def pretrained(
        cls,
        config: DetectConfig = DetectConfig(),
        device: str | torch.device = "cpu",
        progress: ProgressFn = null_progress,
    ) -> MTCNNDetector:
        """The published MTCNN weights, found through ``facecluster.weights.resolve_weights``.

        Example: ``MTCNNDetector.pretrained(device="cpu")`` (downloads once into the cache when online).
        """
        from facecluster.weights import resolve_weights

        pnet, rnet, onet = (resolve_weights(name, progress=progress) for name in ("pnet", "rnet", "onet"))
        return cls.from_weights(pnet, rnet, onet, config=config, device=device)

    def detect(self, images: Sequence[np.ndarray]) -> list[list[DetectedFace]]:
        """Faces in each of ``images`` (HxWx3 uint8 RGB, any sizes), best (most probable) first.

        Example: ``detector.detect([a, b])`` → ``[[DetectedFace, ...], []]``.
        """
        arrays = [_as_rgb(img, i) for i, img in enumerate(images)]
        results = detect_faces(arrays, self.pnet, self.rnet, self.onet, self.settings)
        return [_faces(boxes, probs, points) for boxes, probs, points in results]


def _as_rgb(image: np.ndarray, index: int) -> np.ndarray:
    # The cascade needs contiguous HxWx3 uint8; anything else is a caller's bug, said in one line.
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected an HxWx3 uint8 RGB array, got {image.dtype} {image.shape}")
    return np.ascontiguousarray(image)


def _faces(boxes: torch.Tensor, probs: torch.Tensor, points: torch.Tensor) -> list[DetectedFace]:
    faces = []
    for box, prob, marks in zip(boxes.tolist(), probs.tolist(), points.tolist(), strict=True):
        faces.append(
            DetectedFace(
                box=(box[0], box[1], box[2], box[3]),
                landmarks=tuple((x, y) for x, y in marks),
                probability=prob,
            )
        )
    return faces


def _checked_state(net: torch.nn.Module, path: Path) -> dict[str, torch.Tensor]:
    # Check keys and shapes first so a wrong file gives one readable line, not a page of missing keys.
    state = load_state_dict(path)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    if expected != found:
        raise WeightsError(
            f"{path} is not a facenet-pytorch {type(net).__name__} state dict "
            f"({len(found)} tensors, expected {len(expected)}): use pnet.pt, rnet.pt, onet.pt in that order"
        )
    return state

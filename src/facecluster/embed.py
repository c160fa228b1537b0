"""The embedder interface the catalog codes against, and its FaceNet implementation.

An embedder turns (N, H, W, 3) uint8 RGB face crops into (N, dim) float32 unit rows. ``model_id`` names
the weights and the preprocessing: vectors of different ids are never compared or mixed::

    embedder = load_embedder(weights=Path("casia.pt"))      # or model_path= a `facecluster train` file
    vectors = embedder.embed(crops)                          # (N, 512) float32, unit rows
    embedder.model_id                                        # "casia-webface:415ef259+flip"
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from facecluster.batching import batch_pieces
from facecluster.config import EmbedConfig
from facecluster.errors import ImageError, ModelError
from facecluster.reporting import ProgressFn, null_progress

if TYPE_CHECKING:
    import torch

    from facecluster.models.inception_resnet_v1 import InceptionResnetV1


class Embedder(Protocol):
    """Anything that embeds face crops; the catalog stores ``model_id`` with every vector."""

    model_id: str  # identifies weights + preprocessing: vectors of different ids are never mixed

    @property
    def dim(self) -> int:
        """Length of each vector."""
        ...

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> (N, dim) float32, unit rows; N may be 0."""
        ...


def standardise(crops: np.ndarray) -> np.ndarray:
    """FaceNet's fixed standardisation, ``(x - 127.5) / 128``, as float32 NCHW.

    Example: ``standardise(np.full((1, 2, 2, 3), 255, np.uint8))[0, 0, 0, 0]`` -> 0.99609375
    """
    return ((crops.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2)


@dataclass
class FaceNetEmbedder:
    """InceptionResnetV1 behind the ``Embedder`` interface: checks, resizing, batching, flip averaging.

    Keyword arguments: ``model`` the network (eval mode, on ``device``); ``model_id`` its name (the
    ``+flip`` suffix is added here); ``config`` batch size, flip, crop size [EmbedConfig()].

    Example::

        embedder = FaceNetEmbedder(InceptionResnetV1().eval(), "random:0", EmbedConfig(flip=False))
        embedder.embed(np.zeros((0, 160, 160, 3), np.uint8)).shape  # (0, 512)
    """

    model: InceptionResnetV1
    base_id: str
    config: EmbedConfig = field(default_factory=EmbedConfig)
    device: str = "cpu"

    @property
    def dim(self) -> int:
        return int(self.model.embedding_dim)

    @property
    def model_id(self) -> str:
        return model_id_for(self.base_id, self.config)

    def __post_init__(self) -> None:
        self._fast: InceptionResnetV1 | None = None
        self._building = threading.Lock()  # pipeline workers embed side by side: build the fast copy once
        # Resolved once: a bad setting fails here, and the hardware probe stays off the per-batch path.
        self._dtype = resolve_precision(self.config.precision, self.device)

    @property
    def dtype(self) -> str:
        """The compute precision in use: "float32" or "bfloat16" (``EmbedConfig.precision``)."""
        return self._dtype

    def _runtime(self) -> InceptionResnetV1:
        # Built on first use: BatchNorm folded into the convs and channels-last layout, which oneDNN runs
        # faster; the stored ``model`` stays state-dict compatible. A model in train mode is used as is.
        if not self.model.training and self._fast is None:
            import torch

            from facecluster.models.inception_resnet_v1 import fuse_for_inference

            with self._building:
                if self._fast is None:
                    self._fast = fuse_for_inference(self.model).to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
        return self._fast if self._fast is not None else self.model

    def _features(self, batch: np.ndarray, mirror: bool) -> torch.Tensor:
        # Un-normalised float32 features of ``batch`` and then, with ``mirror``, of its mirrored crops: one
        # forward over both halves (a batch twice as large keeps the cores busier).
        import torch

        model = self._runtime()
        x = torch.from_numpy(np.ascontiguousarray(standardise(batch))).to(self.device)
        if mirror:
            x = torch.cat([x, torch.flip(x, dims=[3])])
        x = x.contiguous(memory_format=torch.channels_last)
        device_type = torch.device(self.device).type
        with torch.inference_mode(), torch.autocast(device_type, dtype=torch.bfloat16,
                                                    enabled=self.dtype == "bfloat16"):
            return model.features(x).float()

    def raw_features(self, crops: np.ndarray, mirror: bool = False) -> np.ndarray:
        """Un-normalised (N, dim) features of 160 px crops, then (with ``mirror``) N rows for their mirrors.

        For evaluations that combine crops themselves (``benchmarks/lfw_variants.py``); ``embed`` is the
        interface. Example: ``embedder.raw_features(crops, mirror=True).shape`` -> (2 * len(crops), 512)
        """
        return self._features(np.asarray(crops), mirror).cpu().numpy()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        import torch

        features = self._features(batch, self.config.flip)
        if self.config.flip:
            # Average the un-normalised embeddings of the crop and its mirror, then normalise:
            # a mirrored face is the same person, and the average is steadier than either.
            features = features[: len(batch)] + features[len(batch) :]
        return torch.nn.functional.normalize(features, p=2, dim=1).cpu().numpy()

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> (N, dim) float32 unit rows; other sizes are resized first.

        A model whose output is NaN or infinite for any crop is a ``ModelError``, never returned.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[3] != 3 or crops.dtype != np.uint8:
            raise ImageError(f"embed needs (N, H, W, 3) uint8 RGB crops, got {crops.dtype} {crops.shape}")
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        size = self.config.crop_size
        if crops.shape[1:3] != (size, size):
            from PIL import Image

            crops = np.stack([np.asarray(Image.fromarray(c).resize((size, size), Image.Resampling.BILINEAR))
                              for c in crops])
        # Full batches, then power-of-two pieces: a run meets a handful of batch shapes, so oneDNN builds
        # its kernels a few times instead of once for every face count (``facecluster.batching``).
        out, start = [], 0
        for piece in batch_pieces(len(crops), max(1, self.config.batch_size)):
            out.append(self._forward(crops[start:start + piece]))
            start += piece
        vectors = np.concatenate(out)
        if not np.isfinite(vectors).all():
            # NaN rows would be stored, then break clustering and search much later: refuse here.
            raise ModelError(f"model {self.model_id} gives NaN or infinite embeddings, so none were stored: "
                             "use another model (a trained one may have diverged; train it again with a lower --lr)")
        return vectors


def model_id_for(base_id: str, config: EmbedConfig) -> str:
    """``base_id`` plus the preprocessing that changes vectors: ``+flip``, ``+align``, a non-default margin.

    Example: ``model_id_for("casia-webface:415ef259", EmbedConfig(flip=True))`` -> "casia-webface:415ef259+flip"
    """
    default = EmbedConfig()
    parts = [base_id]
    if config.crop_size != default.crop_size or config.margin != default.margin:
        parts.append(f"crop{config.crop_size}m{config.margin}")
    if config.align:
        parts.append("align")
    if config.flip:
        parts.append("flip")
    return "+".join(parts)


def resolve_precision(precision: str, device: str) -> str:
    """``"auto"`` → "bfloat16" where ``device`` computes it natively, else "float32"; others pass through.

    Example: ``resolve_precision("float32", "cpu")`` -> "float32"
    """
    import torch

    if precision in ("float32", "bfloat16"):
        return precision
    if precision != "auto":
        raise ModelError(f"unknown precision {precision!r}: use auto, float32 or bfloat16")
    if torch.device(device).type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    native = torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return "bfloat16" if native else "float32"


def check_device(device: str) -> str:
    """Validate a torch device string; ``ModelError`` when CUDA is asked for but absent.

    Example: ``check_device("cpu")`` -> "cpu"
    """
    if device == "cpu":  # the common case needs no torch import (a finished re-run never loads it)
        return device
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ModelError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if parsed.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(f"--device {device} asked for, but no CUDA GPU is available: use --device cpu")
        if parsed.index is not None and parsed.index >= torch.cuda.device_count():
            raise ModelError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif parsed.type != "cpu":
        raise ModelError(f"device {device!r} is not supported: use cpu, cuda or cuda:N")
    return device


def _weights_name(path: Path, digest: str) -> str:
    from facecluster.weights import EMBEDDING_NAMES, KNOWN_SHA256

    if digest in KNOWN_SHA256:
        return KNOWN_SHA256[digest]
    return next((name for name in EMBEDDING_NAMES if name in path.name), "weights")


@dataclass(frozen=True)
class EmbedderSource:
    """The network an embedder loads and the id of its vectors, found without loading it (a hash).

    Example: ``embedder_source(weights=Path("casia.pt")).base_id`` -> "casia-webface:415ef259"
    """

    path: Path
    trained: bool  # a ``facecluster train`` model file (else pretrained weights)
    base_id: str


def embedder_source(weights: Path | None = None, model_path: Path | None = None, config: EmbedConfig = EmbedConfig(),
                    progress: ProgressFn = null_progress) -> EmbedderSource:
    """Resolve ``--weights``/``--model`` to a file (downloading published weights if need be) and name it."""
    from facecluster.weights import EMBEDDING_NAMES, resolve_weights, weights_sha256

    if weights is not None and model_path is not None:
        raise ModelError("give either --weights (pretrained) or --model (trained), not both")
    if model_path is not None:
        # Imported here: model_file imports torch (~2 s), which a re-run with --weights over an unchanged
        # library must not pay (it only hashes the weights file to name the model).
        from facecluster.models.model_file import check_model_path

        path = Path(model_path)
        check_model_path(path)
        return EmbedderSource(path, True, f"trained:{weights_sha256(path)[:8]}")
    if weights is not None and str(weights) in EMBEDDING_NAMES and not Path(weights).exists():
        path = resolve_weights(str(weights), progress=progress)
    else:
        path = resolve_weights(config.weights, weights, progress=progress)
    digest = weights_sha256(path)
    return EmbedderSource(path, False, f"{_weights_name(path, digest)}:{digest[:8]}")


def build_embedder(source: EmbedderSource, device: str = "cpu", config: EmbedConfig = EmbedConfig()) -> FaceNetEmbedder:
    """Load the network of ``source`` on ``device``: ``FaceNetEmbedder``."""
    from facecluster.models.inception_resnet_v1 import InceptionResnetV1
    from facecluster.models.model_file import load_model_file
    from facecluster.weights import load_state_dict

    device = check_device(device)
    if source.trained:
        model, _ = load_model_file(source.path, device=device)
        return FaceNetEmbedder(model.eval(), source.base_id, config, device)
    state = load_state_dict(source.path)
    if state.get("format") == "facecluster-model":
        raise ModelError(f"{source.path} is a trained facecluster model: pass it with --model, not --weights")
    model = InceptionResnetV1.from_state_dict(state, device=device)
    return FaceNetEmbedder(model, source.base_id, config, device)


def load_embedder(weights: Path | None = None, model_path: Path | None = None, device: str = "cpu",
                  config: EmbedConfig = EmbedConfig(), progress: ProgressFn = null_progress) -> FaceNetEmbedder:
    """Build the embedder: a trained model file (``model_path``) or pretrained weights (``weights``;
    default: resolve ``config.weights``, i.e. vggface2, from env, cache or download).

    ``weights`` may also be a weight name ("vggface2", "casia-webface"). Example::

        load_embedder(weights=Path("/work/shared/weights/facenet-casia-webface.pt")).model_id
        # 'casia-webface:415ef259+flip'
    """
    return open_embedder(weights, model_path, device, config, progress).load()


class LazyEmbedder:
    """The ``Embedder`` interface, with the network loaded on first use (``embed`` or ``dim``).

    A re-run over a finished library needs only ``model_id`` (a file hash), so it never loads the
    network, nor imports torch. Thread-safe: pipeline workers may call ``embed`` side by side. Example::

        embedder = open_embedder(weights=Path("casia.pt"))
        embedder.model_id        # 'casia-webface:415ef259+flip' (hashed, not loaded)
        embedder.embed(crops)    # loads the network now
    """

    def __init__(self, source: EmbedderSource, device: str = "cpu", config: EmbedConfig = EmbedConfig()) -> None:
        self.source, self.device, self.config = source, device, config
        self.model_id = model_id_for(source.base_id, config)
        self.path = source.path
        self._loaded: FaceNetEmbedder | None = None
        self._loading = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._loaded is not None

    def load(self) -> FaceNetEmbedder:
        """The network, loaded once."""
        if self._loaded is None:
            with self._loading:
                if self._loaded is None:
                    self._loaded = build_embedder(self.source, self.device, self.config)
        return self._loaded

    @property
    def dim(self) -> int:
        return self.load().dim

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB crops -> (N, dim) float32 unit rows (``FaceNetEmbedder.embed``)."""
        return self.load().embed(crops)


def open_embedder(weights: Path | None = None, model_path: Path | None = None, device: str = "cpu",
                  config: EmbedConfig = EmbedConfig(), progress: ProgressFn = null_progress) -> LazyEmbedder:
    """``load_embedder``'s checks and naming now, the network on first use (``LazyEmbedder``)."""
    device = check_device(device)
    return LazyEmbedder(embedder_source(weights, model_path, config, progress), device, config)

"""Every default of facecluster, in frozen dataclasses: flag > environment variable > these values.

Each area owns one dataclass; commands build it from their options with ``dataclasses.replace``::

    cfg = replace(DetectConfig(), min_face_size=40)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DetectConfig:
    """Face detection (MTCNN) and alignment defaults (MTCNN's and facenet-pytorch's; docs/detection.md)."""

    min_face_size: int = 20  # pixels: the smallest face the image pyramid looks for
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # face probability to pass PNet, RNet, ONet
    factor: float = 0.709  # scale step between pyramid levels (area halves every two levels)
    nms_thresholds: tuple[float, float, float, float] = (0.5, 0.7, 0.7, 0.7)  # per scale, PNet, RNet, ONet (min)
    max_side: int = 1600  # photos are decoded/downscaled so their longer side is at most this
    max_pixels: int = 178_956_970  # decompression-bomb guard: larger images are refused (Pillow's own limit × 2)


@dataclass(frozen=True)
class EmbedConfig:
    """Embedding defaults: crops and test-time augmentation chosen on LFW-dev (docs/evaluate.md)."""

    batch_size: int = 32
    flip: bool = True  # test-time augmentation: average the embeddings of the crop and its mirror
    crop_size: int = 160  # the square crop the network sees
    margin: int = 32  # pixels of the crop around the MTCNN box (facenet-pytorch's convention)
    align: bool = False  # rotate/scale by the 5 landmarks instead of cropping the box
    weights: str = "vggface2"  # pretrained weights used when neither --weights nor --model is given
    # auto: bfloat16 where the processor computes it natively (AVX512-BF16/AMX CPUs, CUDA), else float32.
    # On LFW-dev bf16 moves squared distances by at most ~1e-4 (docs/evaluate.md): far below any threshold.
    precision: str = "auto"  # auto | float32 | bfloat16


@dataclass(frozen=True)
class ClusterConfig:
    """Clustering defaults (tuned and documented in docs/)."""

    method: str = "agglomerative"  # agglomerative (average linkage on a graph) | hdbscan
    threshold: float = 1.1  # squared L2: merge while the mean between clusters <= this (docs/clustering.md)
    min_cluster_size: int = 2
    min_probability: float = 0.9
    min_face_px: int = 20
    k: int = 15  # neighbours per face in the kNN graph (large libraries)
    exact_max_n: int = 5000  # up to this many faces: exact average linkage (all pairs within reach)
    ann_min_n: int = 20000  # from this many faces on, the kNN graph is approximate (faiss IVF)
    hdbscan_min_samples: int = 5  # HDBSCAN density (neighbours, excluding the point itself)
    assign_k: int = 5  # incremental: known neighbours that vote for a new face (docs/scaling.md)
    assign_threshold: float = 1.0  # incremental: squared L2 a new face's votes must fall within


@dataclass(frozen=True)
class PipelineConfig:
    """How `detect`/`embed`/`cluster` walk a library: batching, prefetch, stored crops (engineer C)."""

    batch_size: int = 16  # photos per detection batch and per catalog transaction
    embed_batch_size: int = 64  # stored crops per `embed` batch and per catalog transaction
    batch_pixels: int = 4_000_000  # or fewer photos, once a batch holds this many pixels (large photos
    # then spread over the workers instead of queueing in one batch)
    workers: int = 0  # batches computed side by side; 0: one per CPU thread (each single-threaded), 1 on GPU
    prefetch_workers: int = 2  # threads hashing and decoding the next photos while the models run
    # A file with the path, size and mtime the catalog recorded is taken as unchanged without being read
    # (`--checksum` reads it all the same), but where its recorded mtime is not this much older than when
    # it was read (git's "racy clean" entries): written again in the same tick, its mtime would not change.
    # 3 s covers FAT's 2 s timestamps, the kernel's coarse clock and a little skew on a network share.
    racy_window_s: float = 3.0
    crop_format: str = "jpeg"  # stored aligned crops: "jpeg" or "png" (docs/clustering.md: effect measured)
    jpeg_quality: int = 95
    # A photo whose file changed (tags or rating written into it, re-saved) keeps a face's id, name and
    # corrections where the new face has the same box and its crop differs by at most this mean absolute
    # pixel difference (0-255): re-encoding moves a few levels, another face at the same place tens.
    same_face_max_diff: float = 12.0
    # A cropped photo (or one given a border) shows its faces at other coordinates: an old face is looked
    # for where a new face of about its size is, shifted by whole pixels up to this far from where the boxes
    # say, then downhill in pixel difference for up to a tenth of the face's size (the detector's jitter);
    # the crops are then compared as above. (A rotated or resized photo is turned back and cut at the
    # scaled old box: ``pipeline._frames``; no setting.)
    same_face_shift_px: int = 2


@dataclass(frozen=True)
class SiteConfig:
    """`facecluster show` review site and `facecluster export` defaults."""

    faces_per_page: int = 500  # contact-sheet pagination: keeps each page light on 100k-face libraries
    groups_per_page: int = 500  # index pagination (people and clusters)
    thumb_size: int = 112  # pixels, square; thumbnails are made once and reused by later runs
    thumb_quality: int = 85  # JPEG quality of thumbnails and previews
    preview_max_side: int = 1600  # previews are made only for photos a browser cannot show (HEIC, TIFF)


@dataclass(frozen=True)
class TrainConfig:
    """Triplet training defaults (FaceNet: margin 0.2, AdaGrad lr 0.05, 128-d)."""

    dim: int = 128
    margin: float = 0.2
    epochs: int = 1
    identities_per_batch: int = 8  # P
    faces_per_identity: int = 4  # K
    optimizer: str = "adagrad"  # adagrad | adam | adamw
    lr: float | None = None  # None: paper_lr, or fine_tune_lr when a pretrained backbone trains too (resolved_lr)
    paper_lr: float = 0.05  # FaceNet's AdaGrad step: the new layer alone, or a network trained from scratch
    # AdaGrad's first step moves every weight by about lr whatever its gradient; pretrained conv weights are
    # ~0.04 in size, so 0.05 wrecks them at once (NaN after one step). Measured in docs/training.md.
    fine_tune_lr: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 0
    miner: str = "semi-hard"  # semi-hard | batch-hard | batch-all
    freeze_backbone: bool = False  # only the new embedding layer trains (features cached per crop)
    head_init: str = "pca"  # pca: start as the projection of the pretrained 512-d embedding | random
    dropout: float = 0.2  # before the embedding layer (facenet trained with keep_probability 0.8)
    augment_shift: int = 8  # random crops: shift by up to this many pixels (full fine-tuning only)
    flip: bool = True  # flip augmentation, and flip-averaged validation embeddings (as `embed` does)
    amp: bool = False  # bf16 autocast (CUDA only)
    compile: bool = False  # torch.compile the network (CUDA only)

    def resolved_lr(self, pretrained_backbone_trains: bool) -> float:
        """``lr`` if given, else the default for the mode (see ``fine_tune_lr``).

        Example: ``TrainConfig().resolved_lr(True)`` -> 0.0001; ``TrainConfig(lr=0.01).resolved_lr(True)`` -> 0.01.
        """
        if self.lr is not None:
            return self.lr
        return self.fine_tune_lr if pretrained_backbone_trains else self.paper_lr

"""Training data: aligned face crops with identity labels, from a folder per person or from the catalog.

Faces are found and cut with the project's own pipeline (MTCNN + ``align.crop_face``, the settings
``embed`` uses) and CACHED: one PNG per photo under ``cache_dir()/train-crops``, keyed by the photo's
sha256 and the detection + crop settings, so a second run on the same folder does not detect again::

    data = load_folder_dataset(Path("vggface2/train"), detector_factory, read_image)
    data.crops.shape   # (N, 160, 160, 3) uint8
    data.report        # identities used, left out (< 2 faces), unreadable images, photos without a face
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image

from facecluster.config import DetectConfig, EmbedConfig
from facecluster.errors import DataError, FaceclusterError, ImageError
from facecluster.images import SUPPORTED_SUFFIXES, file_hash
from facecluster.paths import cache_dir
from facecluster.reporting import ProgressFn, null_progress

if TYPE_CHECKING:
    from facecluster.catalog import Catalog

#: Reads one photo as an (H, W, 3) uint8 RGB array; raises a FaceclusterError (ImageError) when it cannot.
ImageReader = Callable[[Path], np.ndarray]
#: Builds the detector only when some photo is not cached yet (loading MTCNN costs time).
DetectorFactory = Callable[[], Any]
#: ``features(crops (N,H,W,3) uint8 tensor, flip) -> (N, 1792)``: the backbone, for the feature cache.
FeatureFn = Callable[[torch.Tensor, bool], torch.Tensor]


@dataclass
class DataReport:
    """What went into the training set and what was left out (reported, never silent)."""

    identities: int = 0
    faces: int = 0
    left_out_identities: list[str] = field(default_factory=list)  # fewer than 2 faces
    unreadable: list[str] = field(default_factory=list)  # images that could not be decoded
    no_face: int = 0  # photos where the detector found no face (left out of training)
    cached: int = 0  # photos whose crop came from the cache
    excluded_identities: int = 0  # left out because they appear in the validation pairs

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the long lists shortened to counts and a few examples."""
        d = asdict(self)
        d["left_out_identities"] = len(self.left_out_identities)
        d["unreadable"] = len(self.unreadable)
        d["unreadable_examples"] = self.unreadable[:5]
        return d


def crop_settings() -> tuple[int, int, bool]:
    """(size, margin, align) of the crops: the ones ``embed`` uses, so a trained model sees the same faces."""
    cfg = EmbedConfig()
    return cfg.crop_size, cfg.margin, cfg.align


def crop_key(detect: DetectConfig | None = None) -> str:
    """Identifies detection + crop settings, e.g. ``mtcnn:3f2a9c1b-160-32-box``: the crop cache key part."""
    from facecluster.pipeline import detector_key

    size, margin, align = crop_settings()
    return f"{detector_key(detect or DetectConfig())}-{size}-{margin}-{'aligned' if align else 'box'}"


def _encode_png(crop: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(crop).save(buf, format="PNG")
    return buf.getvalue()


def _decode(blob: bytes, size: int) -> np.ndarray:
    with Image.open(io.BytesIO(blob)) as opened:
        img = opened.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


@dataclass
class _Crop:
    crop: np.ndarray | None  # None: no face found
    digest: str  # sha256 of the crop's PNG: the key of the feature cache


class CropCache:
    """Cut one face per photo (the largest, most central), caching the result by photo content.

    Example::

        cache = CropCache(detector_factory, read_image)
        crops = cache.crops([Path("a.jpg")], report, fallback_centre=False)
    """

    def __init__(self, detector_factory: DetectorFactory, read_image: ImageReader, root: Path | None = None,
                 detect: DetectConfig | None = None, batch: int = 16) -> None:
        self.detector_factory = detector_factory
        self.read_image = read_image
        self.key = crop_key(detect)
        self.root = (root or cache_dir() / "train-crops") / self.key.replace(":", "-")
        self.batch = batch
        self._detector: Any = None

    def _detector_once(self) -> Any:
        if self._detector is None:
            self._detector = self.detector_factory()
        return self._detector

    def crops(self, paths: Sequence[Path], report: DataReport, fallback_centre: bool,
              progress: ProgressFn = null_progress, stage: str = "faces") -> list[_Crop | None]:
        """One entry per path: the crop, ``_Crop(None)`` when no face was found (and no fallback), or
        ``None`` when the image is unreadable (listed in ``report.unreadable``)."""
        from facecluster.align import centre_face, crop_face
        from facecluster.evaluate import choose_face

        size, margin, align = crop_settings()
        out: list[_Crop | None] = [None] * len(paths)
        todo: list[tuple[int, str, Path]] = []
        for i, path in enumerate(paths):
            try:
                digest = file_hash(path)  # the photo hash of the catalog: refuses a FIFO instead of blocking
            except ImageError as exc:
                report.unreadable.append(f"{path}: {exc.reason}")
                continue
            png, none = self.root / digest[:2] / f"{digest}.png", self.root / digest[:2] / f"{digest}.none"
            if png.exists():
                blob = png.read_bytes()
                out[i] = _Crop(_decode(blob, size), hashlib.sha256(blob).hexdigest())
                report.cached += 1
            elif none.exists() and not fallback_centre:
                out[i] = _Crop(None, "")
                report.cached += 1
            else:
                todo.append((i, digest, path))
        for start in range(0, len(todo), self.batch):
            chunk = todo[start : start + self.batch]
            images, kept = [], []
            for i, digest, path in chunk:
                try:
                    images.append(self.read_image(path))
                    kept.append((i, digest))
                except (FaceclusterError, OSError) as exc:
                    # ImageError's reason leaves out the file name, which the entry already starts with.
                    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
                    report.unreadable.append(f"{path}: {reason.splitlines()[0]}")
            found = self._detector_once().detect(images) if images else []
            for (i, digest), image, faces in zip(kept, images, found):
                folder = self.root / digest[:2]
                folder.mkdir(parents=True, exist_ok=True)
                if len(faces):
                    face = faces[choose_face(np.array([f.box for f in faces]), image.shape[:2])]
                else:
                    (folder / f"{digest}.none").touch()
                    if not fallback_centre:
                        out[i] = _Crop(None, "")
                        continue
                    report.no_face += 1  # evaluated on a centre crop, as `evaluate lfw` does
                    face = centre_face(image.shape[:2])
                crop = crop_face(image, face, size=size, margin=margin, align=align)
                blob = _encode_png(crop)
                if len(faces):  # centre-crop fallbacks are not cached as detections
                    tmp = folder / f".{digest}.tmp"
                    tmp.write_bytes(blob)
                    tmp.replace(folder / f"{digest}.png")
                out[i] = _Crop(crop, hashlib.sha256(blob).hexdigest())  # PNG is lossless: no decode needed
            progress(stage, min(start + self.batch, len(todo)), len(todo))
        return out


class _FeatureStore:
    """Backbone features keyed by crop digest, kept in ``cache_dir()/train-features/<model>-<crops>/``.

    Each chunk of new features goes to a file of its own (written whole, then renamed), so a run writes
    every feature once however large the data set, and an interrupted run keeps every finished chunk.
    :meth:`compact` then folds the chunk files into one, which later runs read in one go. A file that
    cannot be read is a cache miss: deleted, and its features computed again. Example::

        store = _FeatureStore.open("casia-webface:415ef259", "mtcnn-160-m32")
        store.add(["ab12..."], torch.zeros(1, 1792)); store.compact()
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows: dict[str, torch.Tensor] = {}
        self.files: list[Path] = []
        for path in sorted(folder.glob("*.pt")) if folder.is_dir() else []:
            try:
                payload = torch.load(path, map_location="cpu", weights_only=True)
                keys, features = payload["keys"], payload["features"]
                if len(keys) != len(features):
                    raise ValueError("keys and features differ in length")
            except Exception:  # noqa: BLE001 - a damaged cache file is rebuilt, never fatal
                path.unlink(missing_ok=True)
                continue
            self.rows.update(zip(keys, features))
            self.files.append(path)

    @classmethod
    def open(cls, model_name: str, crop_key_: str) -> _FeatureStore:
        safe = "".join(c if c.isalnum() or c in "-_." else "-" for c in f"{model_name}-{crop_key_}")
        return cls(cache_dir() / "train-features" / safe)

    def _write(self, keys: list[str], features: torch.Tensor) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        # Named by the keys it holds: a new chunk never replaces an older file with other features.
        name = hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]
        path = self.folder / f"{name}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save({"keys": keys, "features": features.contiguous()}, tmp)
        tmp.replace(path)
        return path

    def add(self, keys: list[str], features: torch.Tensor) -> None:
        """Remember ``features[i]`` under ``keys[i]`` and save them as one new chunk file."""
        features = features.detach().to("cpu", torch.float32).clone()
        self.rows.update(zip(keys, features))
        self.files.append(self._write(keys, features))

    def compact(self) -> None:
        """Fold the chunk files into one (one write of the whole cache, only when there are several)."""
        if len(self.files) < 2:
            return
        keys = list(self.rows)
        merged = self._write(keys, torch.stack([self.rows[k] for k in keys]))
        for path in self.files:
            if path != merged:
                path.unlink(missing_ok=True)
        self.files = [merged]


def _feature_cache(digests: Sequence[str], crops: np.ndarray, fn: FeatureFn, model_name: str, crop_key_: str,
                   flips: bool, stage: str, progress: ProgressFn = null_progress, chunk: int = 128) -> torch.Tensor:
    """(N, 1 or 2, 1792) features, reusing cached ones (:class:`_FeatureStore`) keyed by crop digest.

    The original and the mirrored crop are cached separately (``digest`` and ``digest:flip``), and every
    ``chunk`` crops are saved as they are computed, so an interrupted run keeps what it computed.
    """
    store = _FeatureStore.open(model_name, crop_key_)
    variants = [(False, "", stage)] + ([(True, ":flip", f"{stage}+flip")] if flips else [])
    for flip, suffix, name in variants:
        missing = [i for i, d in enumerate(digests) if d + suffix not in store.rows]
        for start in range(0, len(missing), chunk):
            part = missing[start : start + chunk]
            store.add([digests[i] + suffix for i in part], fn(torch.as_tensor(crops[part]), flip))
            progress(name, start + len(part), len(missing))
    store.compact()
    if not digests:
        return torch.empty(0, len(variants), 1792)
    return torch.stack([torch.stack([store.rows[d + suffix] for _, suffix, _ in variants]) for d in digests])


@dataclass
class FaceSet:
    """Training crops and labels: ``crops[i]`` shows identity ``names[labels[i]]``."""

    crops: np.ndarray  # (N, size, size, 3) uint8
    labels: np.ndarray  # (N,) int64
    names: list[str]
    digests: list[str]  # sha256 of each crop (feature cache key)
    crop_key: str
    report: DataReport

    def cached_features(self, fn: FeatureFn, model_name: str, flips: bool,
                        progress: ProgressFn = null_progress) -> torch.Tensor:
        """Backbone features of every crop (and of its mirror with ``flips``): (N, 1|2, 1792), cached."""
        return _feature_cache(self.digests, self.crops, fn, model_name, self.crop_key, flips, "features", progress)


@dataclass
class ValidationSet:
    """Verification pairs over a set of unique crops: pair ``k`` compares ``first[k]`` and ``second[k]``."""

    crops: np.ndarray
    digests: list[str]
    first: np.ndarray
    second: np.ndarray
    same: np.ndarray
    folds: np.ndarray
    names: set[str]  # identities appearing in the pairs (kept out of training)
    crop_key: str
    skipped_pairs: int = 0
    no_face: int = 0

    def cached_features(self, fn: FeatureFn, model_name: str, flips: bool,
                        progress: ProgressFn = null_progress) -> torch.Tensor:
        """Backbone features of the validation crops, as :meth:`FaceSet.cached_features`."""
        return _feature_cache(self.digests, self.crops, fn, model_name, self.crop_key, flips, "val features",
                              progress)


def _finish(crops: list[np.ndarray], names_of: list[str], digests: list[str], key: str, report: DataReport,
            size: int) -> FaceSet:
    counts: dict[str, int] = {}
    for name in names_of:
        counts[name] = counts.get(name, 0) + 1
    report.left_out_identities = sorted(n for n, c in counts.items() if c < 2)
    keep = [i for i, n in enumerate(names_of) if counts[n] >= 2]
    names = sorted({names_of[i] for i in keep})
    if len(names) < 2:
        # Say what was left out: "found 0" alone hides that the --val-pairs took the other identities.
        parts = [f"{len(report.left_out_identities)} with fewer than 2 faces"] if report.left_out_identities else []
        parts += [f"{report.excluded_identities} in the validation pairs"] if report.excluded_identities else []
        why = f" (left out: {', '.join(parts)})" if parts else ""
        hint = ", or validate on pairs over other people" if report.excluded_identities else ""
        raise DataError(f"need at least 2 identities with 2 or more faces each, found {len(names)}{why}: "
                        f"add more people or photos{hint}")
    index = {n: k for k, n in enumerate(names)}
    report.identities, report.faces = len(names), len(keep)
    return FaceSet(
        crops=np.stack([crops[i] for i in keep]) if keep else np.zeros((0, size, size, 3), np.uint8),
        labels=np.array([index[names_of[i]] for i in keep], dtype=np.int64),
        names=names, digests=[digests[i] for i in keep], crop_key=key, report=report,
    )


def identity_key(name: str) -> str:
    """How an identity name is compared with the validation pairs' names: case, underscores and runs of
    spaces do not matter, so a catalog person "john howard" is LFW's ``John_Howard``.

        identity_key("John_Howard") == identity_key(" john  howard")   # True
    """
    return " ".join(name.replace("_", " ").split()).casefold()


def _held_out_error(n: int, where: str) -> DataError:
    who, verb = ("the only identity", "appears in the validation pairs and is") if n == 1 else (
        f"all {n} identities", "appear in the validation pairs and are")
    return DataError(f"{who} {where} {verb} held out for validation: nothing is left to train on; "
                     "validate on pairs over other people (or train without --val-pairs)")


def load_folder_dataset(root: Path, detector_factory: DetectorFactory, read_image: ImageReader, *,
                        exclude: AbstractSet[str] = frozenset(), cache_root: Path | None = None,
                        progress: ProgressFn = null_progress) -> FaceSet:
    """A folder per identity (``root/Name/*.jpg``: VGGFace2, CASIA-WebFace, LFW) -> a :class:`FaceSet`.

    Identities named in ``exclude`` (e.g. those of the validation pairs; compared by :func:`identity_key`)
    are left out and counted.
    Example: ``load_folder_dataset(Path("lfw"), lambda: load_detector(DetectConfig()), read_rgb)``.
    """
    if not root.is_dir():
        raise DataError(f"training folder {root} does not exist or is not a folder")
    report = DataReport()
    paths: list[Path] = []
    owners: list[str] = []
    held_out = {identity_key(n) for n in exclude}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for person in folders:
        if identity_key(person.name) in held_out:
            report.excluded_identities += 1
            continue
        for path in sorted(person.iterdir()):
            if path.is_file() and path.suffix.lower() in SUPPORTED_SUFFIXES and not path.name.startswith("."):
                paths.append(path)
                owners.append(person.name)
    if not paths and folders and report.excluded_identities == len(folders):
        raise _held_out_error(len(folders), f"of {root}")
    if not paths:
        raise DataError(f"no images found in {root}: expected one sub-folder of photos per person (root/Name/*.jpg)")
    cache = CropCache(detector_factory, read_image, root=cache_root)
    results = cache.crops(paths, report, fallback_centre=False, progress=progress, stage="faces")
    crops, names_of, digests = [], [], []
    for owner, item in zip(owners, results):
        if item is None:
            continue  # unreadable: already in the report
        if item.crop is None:
            report.no_face += 1
            continue
        crops.append(item.crop)
        names_of.append(owner)
        digests.append(item.digest)
    return _finish(crops, names_of, digests, cache.key, report, crop_settings()[0])


def load_catalog_dataset(catalog: Catalog, *, exclude: AbstractSet[str] = frozenset()) -> FaceSet:
    """The named people of a catalog: every non-ignored face with a person and a stored crop.

    People whose name is in ``exclude`` (the validation pairs' identities, compared by :func:`identity_key`:
    "John Howard" is ``John_Howard``) are left out and counted.
    Example: ``with Catalog.open(db) as c: data = load_catalog_dataset(c, exclude={"John_Howard"})``.
    """
    size = crop_settings()[0]
    rows = catalog.db.execute(
        "SELECT f.id, f.crop, p.name FROM faces f JOIN people p ON p.id = f.person_id "
        "WHERE f.crop IS NOT NULL AND f.ignored = 0 ORDER BY p.name, f.id"
    ).fetchall()
    report = DataReport()
    if not rows:
        raise DataError("the catalog has no faces of named people: name some with `facecluster label` first")
    held_out = {identity_key(n) for n in exclude}
    people = {name for _, _, name in rows}
    excluded = {name for name in people if identity_key(name) in held_out}
    report.excluded_identities = len(excluded)
    if excluded == people:
        raise _held_out_error(len(people), "named in the catalog")
    crops, names_of, digests = [], [], []
    for face_id, blob, name in rows:
        if name in excluded:
            continue
        try:
            crops.append(_decode(blob, size))
        except (OSError, ValueError):
            report.unreadable.append(f"face {face_id}: stored crop cannot be decoded")
            continue
        names_of.append(name)
        digests.append(hashlib.sha256(blob).hexdigest())
    return _finish(crops, names_of, digests, f"catalog-{size}", report, size)


def load_validation_pairs(images: Path, pairs_path: Path, detector_factory: DetectorFactory, read_image: ImageReader,
                          *, cache_root: Path | None = None, progress: ProgressFn = null_progress) -> ValidationSet:
    """LFW-format pairs over ``images`` -> crops of the unique images (centre crop when no face, counted).

    Pairs with a missing or unreadable image are skipped and counted. Example::

        val = load_validation_pairs(Path("lfw"), Path("pairs.txt"), detector_factory, read_rgb)
    """
    from facecluster.evaluate import parse_pairs

    pairs = parse_pairs(pairs_path)
    wanted = sorted({p for pair in pairs for p in pair.paths(images) if p.is_file()})
    report = DataReport()
    cache = CropCache(detector_factory, read_image, root=cache_root)
    results = cache.crops(wanted, report, fallback_centre=True, progress=progress, stage="val faces")
    index: dict[Path, int] = {}
    crops: list[np.ndarray] = []
    digests: list[str] = []
    for path, item in zip(wanted, results):
        if item is not None and item.crop is not None:
            index[path] = len(crops)
            crops.append(item.crop)
            digests.append(item.digest)
    kept = [pair for pair in pairs if all(p in index for p in pair.paths(images))]
    if not kept:
        raise DataError(f"none of the {len(pairs)} validation pairs has both images under {images}")
    names = {n for pair in pairs for n in (pair.name1, pair.name2)}
    return ValidationSet(
        crops=np.stack(crops), digests=digests,
        first=np.array([index[pair.paths(images)[0]] for pair in kept]),
        second=np.array([index[pair.paths(images)[1]] for pair in kept]),
        same=np.array([pair.same for pair in kept]), folds=np.array([pair.fold for pair in kept]),
        names=names, crop_key=cache.key, skipped_pairs=len(pairs) - len(kept), no_face=report.no_face,
    )


def summary(data: FaceSet, val: ValidationSet | None) -> str:
    """One line for stderr: what the run trains and validates on."""
    from facecluster.output import counted

    r = data.report
    line = (f"{counted(r.identities, 'identity', 'identities')}, {counted(r.faces, 'face')} "
            f"({counted(len(r.left_out_identities), 'identity', 'identities')} with < 2 faces left out, "
            f"{counted(len(r.unreadable), 'unreadable image')} skipped, {counted(r.no_face, 'photo')} without a face)")
    if r.excluded_identities:
        kept_out = counted(r.excluded_identities, "identity", "identities")
        line += f"; {kept_out} of the validation pairs kept out of training"
    if val is not None:
        line += f"; validating on {counted(len(val.same), 'pair')}"
    return line

"""Face verification on LFW View 2: pairs parsing, 10-fold accuracy, VAL at a FAR, ROC, the whole run.

The protocol follows FaceNet (Schroff et al. 2015) and David Sandberg's ``facenet`` evaluation: squared
L2 distances between unit embeddings; for each fold the threshold is chosen on the other nine folds
(best accuracy there) and applied to the held-out fold; VAL at FAR = 1e-3 uses a threshold interpolated on
the training folds' false-accept curve::

    pairs = parse_pairs(Path("pairs.txt"))
    result = verification_metrics(distances, np.array([p.same for p in pairs]), np.array([p.fold for p in pairs]))
    result.accuracy, result.accuracy_std
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facecluster.errors import DataError, ImageError
from facecluster.reporting import ProgressFn, null_progress

if TYPE_CHECKING:
    from facecluster.embed import FaceNetEmbedder

#: thresholds scanned for the FAR curve (squared L2 between unit vectors lies in [0, 4]).
FAR_THRESHOLDS = np.arange(0.0, 4.0, 0.001)
#: The largest pairs file read; LFW's own pairs.txt is about 100 kB.
MAX_PAIRS_BYTES = 64 << 20


@dataclass(frozen=True)
class Pair:
    """One line of an LFW pairs file: two images and whether they show the same person."""

    name1: str
    index1: int
    name2: str
    index2: int
    same: bool
    fold: int

    def paths(self, images: Path) -> tuple[Path, Path]:
        """The two image files under an LFW folder (``Name/Name_0001.jpg``)."""
        return _image_path(images, self.name1, self.index1), _image_path(images, self.name2, self.index2)


def _image_path(images: Path, name: str, index: int) -> Path:
    return images / name / f"{name}_{index:04d}.jpg"


def parse_pairs(path: Path) -> list[Pair]:
    """Read an LFW View-2 pairs file: header ``folds<TAB>n``, then per fold n matched and n mismatched lines.

    Example::

        pairs = parse_pairs(Path("lfw-dev-pairs.txt"))  # 3000 pairs, folds 0..9
    """
    try:
        with open(path, "rb") as handle:  # a pipe works (`--pairs <(zcat pairs.txt.gz)`)
            data = handle.read(MAX_PAIRS_BYTES + 1)  # bounded: `--pairs /dev/zero` must not eat the memory
    except OSError as exc:
        raise DataError(f"cannot read pairs file {path}: {exc.strerror or exc}") from exc
    if len(data) > MAX_PAIRS_BYTES:
        raise DataError(f"pairs file {path} is larger than {MAX_PAIRS_BYTES >> 20} MiB: not an LFW pairs file")
    try:
        lines = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError as exc:
        raise DataError(f"pairs file {path} is not text: expected LFW's pairs.txt format") from exc
    if not lines:
        raise DataError(f"pairs file {path} is empty: expected a header line 'folds<TAB>pairs_per_class'")
    try:
        folds, per_class = (int(x) for x in lines[0].split())
    except ValueError as exc:
        raise DataError(f"pairs file {path}: bad header {lines[0]!r}, expected e.g. '10<TAB>300'") from exc
    if folds < 2 or per_class < 1:
        raise DataError(f"pairs file {path}: header {lines[0]!r} needs at least 2 folds and 1 pair per class")
    expected = folds * 2 * per_class
    if len(lines) - 1 != expected:
        raise DataError(f"pairs file {path}: header promises {expected} pairs but {len(lines) - 1} lines follow")
    pairs = []
    for number, line in enumerate(lines[1:]):
        fold, within = divmod(number, 2 * per_class)
        fields = line.split()
        try:
            if within < per_class:
                if len(fields) != 3:
                    raise ValueError
                pairs.append(Pair(fields[0], int(fields[1]), fields[0], int(fields[2]), True, fold))
            else:
                if len(fields) != 4:
                    raise ValueError
                pairs.append(Pair(fields[0], int(fields[1]), fields[2], int(fields[3]), False, fold))
        except ValueError as exc:
            kind = "matched 'name i j'" if within < per_class else "mismatched 'name1 i name2 j'"
            raise DataError(f"pairs file {path} line {number + 2}: expected a {kind} line, got {line!r}") from exc
    return pairs


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise squared L2 distance: ``squared_distances(x, y)[i] == ((x[i] - y[i]) ** 2).sum()``."""
    return np.sum((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2, axis=1)


def best_threshold(distances: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """The threshold on ``distance < t ⇒ same`` with the best accuracy, and that accuracy.

    Every distinct cut between sorted distances is tried (exact, no grid); among equally good cuts the
    middle one is taken so the threshold does not hug one sample. Example::

        best_threshold(np.array([0.5, 1.5]), np.array([True, False]))  # (1.0, 1.0)
    """
    order = np.argsort(distances, kind="stable")
    d, s = distances[order], same[order].astype(bool)
    n = len(d)
    # Cut k puts the k smallest distances on the "same" side: correct = same among them + different after.
    same_before = np.concatenate([[0], np.cumsum(s)])
    diff_after = np.concatenate([[(~s).sum()], (~s).sum() - np.cumsum(~s)])
    correct = same_before + diff_after
    valid = np.ones(n + 1, bool)
    valid[1:n] = d[1:] > d[:-1]  # a cut between equal distances is not a threshold
    correct = np.where(valid, correct, -1)
    best = np.flatnonzero(correct == correct.max())
    k = int(best[len(best) // 2])
    lo = d[k - 1] if k > 0 else d[0] - 1.0
    hi = d[k] if k < n else d[-1] + 1.0
    return float((lo + hi) / 2), float(correct[k] / n)


def _far_threshold(distances: np.ndarray, same: np.ndarray, far_target: float) -> float:
    """Threshold where the false-accept rate on these pairs reaches ``far_target`` (linear interpolation).

    As in facenet's ``calculate_val``: FAR is scanned over ``FAR_THRESHOLDS``; when it never reaches the
    target the threshold is 0 (nothing is accepted).
    """
    different = distances[~same]
    if different.size == 0:
        return 0.0
    far = np.searchsorted(np.sort(different), FAR_THRESHOLDS, side="left") / different.size
    if far.max() < far_target:
        return 0.0
    # FAR is a non-decreasing step function: keep the first threshold of each step so xp is increasing.
    far_values, first = np.unique(far, return_index=True)
    if len(far_values) == 1:
        return float(FAR_THRESHOLDS[first[0]])
    return float(np.interp(far_target, far_values, FAR_THRESHOLDS[first]))


@dataclass(frozen=True)
class VerificationResult:
    """k-fold verification figures (accuracy and VAL as fractions, thresholds as squared L2)."""

    accuracy: float
    accuracy_std: float
    threshold: float  # mean of the per-fold thresholds chosen on the training folds
    threshold_std: float
    val: float  # VAL at FAR = far_target, mean over folds
    val_std: float
    far: float  # the FAR actually reached on the test folds, mean
    far_target: float
    fold_accuracies: list[float] = field(default_factory=list)

    @property
    def accuracy_sem(self) -> float:
        """Standard error of the mean accuracy, as LFW's protocol asks results to be reported.

        ``sqrt(sum((p_i - mean)^2) / (k - 1)) / sqrt(k)`` over the k fold accuracies p_i (Huang et al. 2007,
        View 2). ``accuracy_std`` is the population std (facenet's convention); this is the spread of the
        mean itself, e.g. 98.90 % ± 0.25 % means 99.0 % is 0.4 standard errors away.
        """
        k = len(self.fold_accuracies)
        return float(np.std(self.fold_accuracies, ddof=1) / np.sqrt(k)) if k > 1 else float("nan")


def verification_metrics(distances: np.ndarray, same: np.ndarray, folds: np.ndarray,
                         far_target: float = 1e-3) -> VerificationResult:
    """k-fold accuracy (threshold from the other folds) and VAL at ``far_target``.

    ``distances`` is one value per pair, or one row per fold (row k holds the distances used when fold k
    is held out, e.g. after subtracting the training folds' mean: ``centred_distances``). Example::

        r = verification_metrics(d, same, fold_ids)
        print(f"{100 * r.accuracy:.2f}% ± {100 * r.accuracy_std:.2f}%")
    """
    distances = np.asarray(distances, np.float64)
    same = np.asarray(same, bool)
    folds = np.asarray(folds)
    fold_ids = np.unique(folds)
    if len(fold_ids) < 2:
        raise DataError("verification needs at least two folds of pairs")
    accuracies, thresholds, vals, fars = [], [], [], []
    for k, fold in enumerate(fold_ids):
        d = distances[k] if distances.ndim == 2 else distances
        test, train = folds == fold, folds != fold
        threshold, _ = best_threshold(d[train], same[train])
        accuracies.append(float(np.mean((d[test] < threshold) == same[test])))
        thresholds.append(threshold)
        val_threshold = _far_threshold(d[train], same[train], far_target)
        accepted = d[test] < val_threshold
        n_same, n_diff = same[test].sum(), (~same[test]).sum()
        vals.append(float((accepted & same[test]).sum() / n_same) if n_same else 0.0)
        fars.append(float((accepted & ~same[test]).sum() / n_diff) if n_diff else 0.0)
    return VerificationResult(
        accuracy=float(np.mean(accuracies)), accuracy_std=float(np.std(accuracies)),
        threshold=float(np.mean(thresholds)), threshold_std=float(np.std(thresholds)),
        val=float(np.mean(vals)), val_std=float(np.std(vals)), far=float(np.mean(fars)),
        far_target=far_target, fold_accuracies=accuracies,
    )


def centred_distances(first: np.ndarray, second: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Per held-out fold k: subtract the mean embedding of the other folds' pairs, re-normalise, squared L2.

    facenet's ``validate_on_lfw --subtract_mean`` (part of the protocol behind its reported LFW figures):
    the mean comes from the training folds only, so the held-out fold stays unseen. Returns (folds, pairs).
    Example: ``verification_metrics(centred_distances(a, b, folds), same, folds)``.
    """
    first, second = np.asarray(first, np.float64), np.asarray(second, np.float64)
    rows = []
    for fold in np.unique(folds):
        train = folds != fold
        mean = np.concatenate([first[train], second[train]]).mean(axis=0)
        a, b = first - mean, second - mean
        a /= np.linalg.norm(a, axis=1, keepdims=True)
        b /= np.linalg.norm(b, axis=1, keepdims=True)
        rows.append(squared_distances(a, b))
    return np.stack(rows)


def out_of_fold(distances: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """One distance per pair from per-fold rows: each pair's value when its own fold was held out."""
    distances = np.asarray(distances)
    if distances.ndim == 1:
        return distances
    rows = np.searchsorted(np.unique(folds), folds)
    return distances[rows, np.arange(distances.shape[1])]


def roc_curve(distances: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FAR, TPR) for every threshold between sorted distances, from (0, 0) to (1, 1)."""
    order = np.argsort(distances, kind="stable")
    s = np.asarray(same, bool)[order]
    tpr = np.concatenate([[0.0], np.cumsum(s) / max(s.sum(), 1)])
    far = np.concatenate([[0.0], np.cumsum(~s) / max((~s).sum(), 1)])
    return far, tpr


def write_roc_png(path: Path, far: np.ndarray, tpr: np.ndarray, title: str = "ROC", size: int = 640) -> None:
    """Draw a ROC curve (FAR on a log axis from 1e-4 to 1, TPR linear) as a PNG with Pillow.

    Example::

        write_roc_png(Path("roc.png"), *roc_curve(distances, same), title="LFW 99.1%")
    """
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = 70, 40, size - 20, size - 60
    lo_exp = -4

    def to_xy(x: float, y: float) -> tuple[float, float]:
        fx = (np.log10(max(x, 10.0**lo_exp)) - lo_exp) / -lo_exp
        return left + fx * (right - left), bottom - y * (bottom - top)

    for exp in range(lo_exp, 1):
        x, _ = to_xy(10.0**exp, 0)
        draw.line([(x, top), (x, bottom)], fill=(225, 225, 225))
        draw.text((x - 12, bottom + 8), f"1e{exp}" if exp else "1", fill="black")
    for tick in np.linspace(0, 1, 6):
        _, y = to_xy(1, float(tick))
        draw.line([(left, y), (right, y)], fill=(225, 225, 225))
        draw.text((left - 34, y - 6), f"{tick:.1f}", fill="black")
    draw.rectangle([left, top, right, bottom], outline="black")
    points = [to_xy(float(x), float(y)) for x, y in zip(far, tpr) if x > 0]
    if len(points) > 1:
        draw.line(points, fill=(31, 119, 180), width=2)
    draw.text((left, 6), title, fill="black")
    draw.text(((left + right) // 2 - 60, size - 30), "false accept rate (log)", fill="black")
    draw.text((8, top - 16), "true accept rate", fill="black")
    try:
        image.save(path, format="PNG")
    except OSError as exc:
        raise DataError(f"cannot write ROC image {path}: {exc.strerror or exc}") from exc


# --- the whole LFW run: detect once per image, crop, embed, measure --------------------------------------


@dataclass(frozen=True)
class LfwReport:
    """What ``facecluster evaluate lfw`` prints: figures, counts, the model id and timing."""

    result: VerificationResult
    pairs: int  # pairs evaluated
    skipped: int  # pairs left out because an image file is missing or unreadable
    no_face: int  # images where no face was found and a centre crop was used instead
    images: int  # distinct images embedded
    model_id: str
    seconds: dict[str, float]
    missing: list[str]  # the unreadable/missing image paths (first few, for the message)
    subtract_mean: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON object of ``--json``."""
        r = self.result
        return {
            "accuracy": r.accuracy, "accuracy_std": r.accuracy_std, "accuracy_sem": r.accuracy_sem,
            "val_at_far_1e-3": r.val, "val_std": r.val_std, "far": r.far,
            "threshold": r.threshold, "threshold_std": r.threshold_std,
            "fold_accuracies": r.fold_accuracies,
            "pairs": self.pairs, "skipped": self.skipped, "no_face": self.no_face, "images": self.images,
            "model_id": self.model_id, "subtract_mean": self.subtract_mean, "seconds": self.seconds,
            "missing": self.missing[:10],
        }


#: Reads one image into an (H, W, 3) uint8 RGB array; raises ImageError when it cannot.
ImageReader = Callable[[Path], np.ndarray]


def choose_face(boxes: np.ndarray, shape: tuple[int, int]) -> int:
    """Index of the face to keep in a one-person photo: large and central (facenet's align rule:
    box area minus twice the squared offset of its centre from the image centre)."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    height, width = shape
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    dx = (boxes[:, 0] + boxes[:, 2]) / 2 - width / 2
    dy = (boxes[:, 1] + boxes[:, 3]) / 2 - height / 2
    return int(np.argmax(area - 2.0 * (dx**2 + dy**2)))


def _check_measurable(kept: Sequence[Pair], pairs: Sequence[Pair]) -> None:
    """Refuse (one-line ``DataError``) what the pairs left after missing photos cannot measure: a single fold
    (nothing to hold out), or only matched or only mismatched pairs (any threshold scores 100%)."""
    skipped = f"{len(pairs) - len(kept)} of {len(pairs)} pairs skipped: photos missing or unreadable"
    folds = {p.fold for p in pairs}
    if len({p.fold for p in kept}) < 2 <= len(folds):
        raise DataError(f"only 1 fold of {len(folds)} has pairs that could be evaluated ({skipped})")
    for same, kind in ((False, "mismatched"), (True, "matched")):
        if not any(p.same == same for p in kept):
            raise DataError(f"no {kind} pair could be evaluated ({skipped}): accuracy needs both kinds")


def evaluate_lfw(images: Path, pairs: Sequence[Pair], detector: Any, embedder: FaceNetEmbedder,
                 read_image: ImageReader, batch_size: int = 16, subtract_mean: bool = True,
                 progress: ProgressFn = null_progress) -> tuple[LfwReport, np.ndarray, np.ndarray]:
    """Detect each pair image once, crop the chosen face (centre crop when none), embed, measure.

    ``detector.detect(list_of_arrays)`` returns, per image, a list of faces with ``box`` and ``landmarks``
    (facecluster.detect.MTCNNDetector). With ``subtract_mean`` the training folds' mean embedding is
    subtracted before the distances (``centred_distances``). Returns the report plus the (out-of-fold)
    distances and labels of the evaluated pairs, for a ROC. Example::

        report, d, same = evaluate_lfw(Path("lfw"), parse_pairs(p), MTCNNDetector(...), embedder, load_rgb)
    """
    from facecluster.align import centre_face, crop_face

    clock = {"detect": 0.0, "embed": 0.0}
    wanted = sorted({path for pair in pairs for path in pair.paths(images)})
    missing: list[str] = []
    vectors: dict[Path, np.ndarray] = {}
    no_face = 0
    for start in range(0, len(wanted), batch_size):
        chunk, pixels = [], []
        for path in wanted[start:start + batch_size]:
            try:
                pixels.append(read_image(path))
                chunk.append(path)
            except (ImageError, OSError):
                missing.append(str(path))
        tick = time.perf_counter()
        found = detector.detect(pixels) if pixels else []
        clock["detect"] += time.perf_counter() - tick
        crops = []
        for image, faces in zip(pixels, found):
            if len(faces):
                face = faces[choose_face(np.array([f.box for f in faces]), image.shape[:2])]
            else:
                no_face += 1
                face = centre_face(image.shape[:2])
            crops.append(crop_face(image, face, size=embedder.config.crop_size, margin=embedder.config.margin,
                                   align=embedder.config.align))
        tick = time.perf_counter()
        if crops:
            for path, vector in zip(chunk, embedder.embed(np.stack(crops))):
                vectors[path] = vector
        clock["embed"] += time.perf_counter() - tick
        progress("lfw", min(start + batch_size, len(wanted)), len(wanted))
    kept = [p for p in pairs if all(path in vectors for path in p.paths(images))]
    if not kept:
        raise DataError(f"no pair of {len(pairs)} could be evaluated: are the images under {images}?")
    _check_measurable(kept, pairs)
    first = np.stack([vectors[p.paths(images)[0]] for p in kept])
    second = np.stack([vectors[p.paths(images)[1]] for p in kept])
    same = np.array([p.same for p in kept])
    folds = np.array([p.fold for p in kept])
    distances = centred_distances(first, second, folds) if subtract_mean else squared_distances(first, second)
    result = verification_metrics(distances, same, folds)
    report = LfwReport(
        result=result, pairs=len(kept), skipped=len(pairs) - len(kept), no_face=no_face, images=len(vectors),
        model_id=embedder.model_id, seconds={k: round(v, 2) for k, v in clock.items()}, missing=missing,
        subtract_mean=subtract_mean,
    )
    return report, out_of_fold(distances, folds), same

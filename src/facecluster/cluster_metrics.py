"""How well clusters match known identities: pairwise and BCubed precision/recall/F, NMI, ARI.

Every face labelled -1 (noise, or a cluster below the minimum size) counts as a cluster of its own,
in the prediction and in the truth alike: leaving a face out costs recall, never precision::

    m = cluster_metrics(truth=np.array([0, 0, 1]), pred=np.array([5, 5, -1]))
    m.pairwise_f, m.bcubed_f     # 1.0, 1.0
"""

from __future__ import annotations

import csv
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from sqlite_utils import Database

from facecluster.errors import DataError


@dataclass(frozen=True)
class ClusterMetrics:
    """Scores of one clustering against the truth (see the module docstring for -1)."""

    n_faces: int
    n_identities: int  # distinct true identities (each -1 alone)
    n_clusters: int  # predicted clusters with a label >= 0
    n_unclustered: int  # faces predicted -1
    pairwise_precision: float
    pairwise_recall: float
    pairwise_f: float
    bcubed_precision: float
    bcubed_recall: float
    bcubed_f: float
    nmi: float
    ari: float

    def to_dict(self) -> dict[str, float | int]:
        """Plain dict for JSON output."""
        return asdict(self)


def _dense(labels: np.ndarray) -> np.ndarray:
    """Labels -> 0..m-1, each negative label a new singleton."""
    labels = np.asarray(labels).copy()
    if labels.dtype.kind in "iu":
        labels = labels.astype(np.int64)
        neg = labels < 0
        labels[neg] = labels.max(initial=0) + 1 + np.arange(int(neg.sum()))
    return np.unique(labels, return_inverse=True)[1].astype(np.int64).ravel()


def _f(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _pairs(counts: np.ndarray) -> float:
    counts = counts.astype(np.float64)
    return float((counts * (counts - 1) / 2).sum())


def cluster_metrics(truth: np.ndarray, pred: np.ndarray) -> ClusterMetrics:
    """Compare predicted labels with true identities (any hashable labels for truth; ints for pred).

    Pairwise: precision = same-cluster pairs that share an identity / same-cluster pairs; recall =
    same-identity pairs put in one cluster / same-identity pairs (1.0 when there are no such pairs).
    Empty labels are a :class:`DataError` (nothing was measured). BCubed: per face, the share of its cluster with its identity (precision) and of its identity in its
    cluster (recall), averaged over faces. NMI uses the arithmetic mean of the entropies.

    >>> m = cluster_metrics(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 1]))
    >>> round(m.pairwise_precision, 3), round(m.pairwise_recall, 3), round(m.bcubed_precision, 3)
    (0.5, 0.333, 0.75)
    """
    truth = np.asarray(truth)
    pred = np.asarray(pred)
    if truth.shape != pred.shape or truth.ndim != 1:
        raise DataError(f"truth and prediction must be 1-d and of one length, got {truth.shape} and {pred.shape}")
    n = len(truth)
    if n == 0:
        # Every score would be 0/0: reporting 1.0 would pass off "nothing measured" as a perfect result.
        raise DataError("no faces to score: truth and prediction are empty")
    n_clusters = int(len(np.unique(pred[pred >= 0])))
    n_unclustered = int((pred < 0).sum())
    t, p = _dense(truth), _dense(pred)
    n_t, n_p = int(t.max()) + 1, int(p.max()) + 1
    key, nij = np.unique(t * n_p + p, return_counts=True)
    ti, pj = key // n_p, key % n_p
    a = np.bincount(t, minlength=n_t)  # identity sizes
    b = np.bincount(p, minlength=n_p)  # cluster sizes

    tp, pred_pairs, true_pairs = _pairs(nij), _pairs(b), _pairs(a)
    pw_p = tp / pred_pairs if pred_pairs else 1.0
    pw_r = tp / true_pairs if true_pairs else 1.0

    nij_f = nij.astype(np.float64)
    bc_p = float((nij_f**2 / b[pj]).sum() / n)
    bc_r = float((nij_f**2 / a[ti]).sum() / n)

    # NMI and ARI from the same contingency table (no n x n work).
    pij = nij_f / n
    pa, pb = a / n, b / n
    mi = float((pij * np.log(pij / (pa[ti] * pb[pj]))).sum())
    h_t = float(-(pa[pa > 0] * np.log(pa[pa > 0])).sum())
    h_p = float(-(pb[pb > 0] * np.log(pb[pb > 0])).sum())
    nmi = 1.0 if h_t + h_p == 0 else max(0.0, 2 * mi / (h_t + h_p))
    total = n * (n - 1) / 2
    expected = true_pairs * pred_pairs / total if total else 0.0
    max_index = (true_pairs + pred_pairs) / 2
    ari = 1.0 if max_index == expected else (tp - expected) / (max_index - expected)

    return ClusterMetrics(
        n_faces=n,
        n_identities=n_t,
        n_clusters=n_clusters,
        n_unclustered=n_unclustered,
        pairwise_precision=pw_p,
        pairwise_recall=pw_r,
        pairwise_f=_f(pw_p, pw_r),
        bcubed_precision=bc_p,
        bcubed_recall=bc_r,
        bcubed_f=_f(bc_p, bc_r),
        nmi=nmi,
        ari=float(ari),
    )


# --- clusters of a catalog against a truth file ------------------------------------------------


def read_truth(path: Path) -> dict[str, str]:
    """Read ``path,identity`` rows (CSV or TSV, optional header) into ``{resolved path: identity}``.

    Relative photo paths are taken relative to the truth file's folder (not the current directory).
    Raises :class:`DataError` for a missing or empty file or a malformed row.

    >>> import tempfile, os
    >>> f = Path(tempfile.mkdtemp()) / "t.tsv"; _ = f.write_text("path\\tidentity\\n/a/1.jpg\\tAda\\n")
    >>> read_truth(f)
    {'/a/1.jpg': 'Ada'}
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"cannot read truth file {path}: {exc.strerror or exc}") from exc
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not lines:
        raise DataError(f"truth file {path} is empty: expected rows 'path,identity'")
    delimiter = "\t" if "\t" in lines[0] else ","
    truth: dict[str, str] = {}
    for number, row in enumerate(csv.reader(lines, delimiter=delimiter), 1):
        if number == 1 and [c.strip().lower() for c in row[:2]] == ["path", "identity"]:
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path} row {number}: expected 'path{delimiter}identity', got {row!r}")
        photo = Path(row[0].strip()).expanduser()
        if not photo.is_absolute():
            photo = path.parent / photo
        truth[os.path.normpath(os.path.abspath(photo))] = row[1].strip()
    if not truth:
        raise DataError(f"truth file {path} has a header but no rows: expected rows 'path,identity'")
    return truth


@dataclass(frozen=True)
class CatalogEvaluation:
    """Metrics of the catalog's clusters, and how many photos could be scored."""

    metrics: ClusterMetrics
    photos_scored: int
    photos_without_faces: int  # photos with truth but no (non-ignored) face in the catalog
    truth_not_in_catalog: int  # truth rows whose photo the catalog does not hold

    def to_dict(self) -> dict[str, float | int]:
        """Flat dict for JSON output."""
        return {
            **self.metrics.to_dict(),
            "photos_scored": self.photos_scored,
            "photos_without_faces": self.photos_without_faces,
            "truth_not_in_catalog": self.truth_not_in_catalog,
        }


def _nothing_scored(truth: dict[str, str] | None, photos: int, matched: int) -> DataError:
    """Why no photo could be scored, in one line that says what to do."""
    if not photos:
        return DataError("the catalog holds no photos: run `facecluster cluster DIR` first")
    if truth is not None and not truth:
        return DataError("the truth has no rows: nothing to score")
    if truth is not None and not matched:
        first = next(iter(truth), "")
        which = "the only photo" if len(truth) == 1 else f"none of the {len(truth)} photos"
        return DataError(
            f"{which} of the truth file is {'not ' if len(truth) == 1 else ''}in the catalog (the first: {first}); "
            "relative paths in the truth file are read from the truth file's folder, not the current directory"
        )
    n = matched if truth is not None else photos
    which = f"none of the {n} photos" if n > 1 else "the only photo"
    where = " of the truth file in the catalog" if truth is not None else " in the catalog"
    return DataError(f"{which}{where} has {'no' if n == 1 else 'a'} detected, non-ignored face: nothing to score")


def evaluate_catalog(db: Database, truth: dict[str, str] | None = None) -> CatalogEvaluation:
    """Score the current clusters of a catalog; ``truth=None`` uses each photo's folder name.

    One face per photo counts: the (non-ignored) face whose box centre is nearest the image centre
    (LFW-style photos show their subject in the middle). Its predicted identity is its person when
    it has one (a person may span several clusters), else its cluster, else it stands alone.

    Raises :class:`DataError` when no photo can be scored (none of the truth's photos is in the catalog,
    or none of them has a face): metrics of nothing would read as a perfect score.

    >>> from facecluster.catalog import Catalog
    >>> evaluate_catalog(Catalog.open(None).db, {"/a/1.jpg": "Ada"})
    Traceback (most recent call last):
    facecluster.errors.DataError: the catalog holds no photos: run `facecluster cluster DIR` first
    """
    rows = db.execute(
        """
        SELECT p.id, p.path, p.width, p.height, f.x1, f.y1, f.x2, f.y2, f.cluster_id, f.person_id
        FROM photos p LEFT JOIN faces f ON f.photo_id = p.id AND f.ignored = 0
        ORDER BY p.id, f.id
        """
    ).fetchall()
    best: dict[int, tuple[float, str]] = {}  # photo id -> (distance to centre, predicted label)
    paths: dict[int, str] = {}
    for photo_id, photo_path, width, height, x1, y1, x2, y2, cluster_id, person_id in rows:
        paths[photo_id] = os.path.normpath(os.path.abspath(photo_path))
        if x1 is None:
            continue
        cx, cy = (width or 0) / 2, (height or 0) / 2
        dist = ((x1 + x2) / 2 - cx) ** 2 + ((y1 + y2) / 2 - cy) ** 2
        if person_id is not None:
            label = f"person:{person_id}"
        elif cluster_id is not None:
            label = f"cluster:{cluster_id}"
        else:
            label = ""  # unclustered: alone
        if photo_id not in best or dist < best[photo_id][0]:
            best[photo_id] = (dist, label)
    if truth is None:
        truth_of = {pid: os.path.basename(os.path.dirname(p)) for pid, p in paths.items()}
        missing = 0
    else:
        by_path = {p: pid for pid, p in paths.items()}
        truth_of = {by_path[p]: ident for p, ident in truth.items() if p in by_path}
        missing = len(truth) - len(truth_of)
    scored = [pid for pid in truth_of if pid in best]
    if not scored:
        raise _nothing_scored(truth, len(paths), len(truth_of))
    labels: dict[str, int] = {}
    pred = np.array(
        [labels.setdefault(best[pid][1], len(labels)) if best[pid][1] else -1 for pid in scored], dtype=np.int64
    )
    true = np.array([truth_of[pid] for pid in scored], dtype=object)
    true_ids = np.unique(true, return_inverse=True)[1].ravel() if len(true) else np.empty(0, dtype=np.int64)
    return CatalogEvaluation(
        metrics=cluster_metrics(true_ids, pred),
        photos_scored=len(scored),
        photos_without_faces=len(truth_of) - len(scored),
        truth_not_in_catalog=missing,
    )

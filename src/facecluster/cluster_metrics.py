"""How well clusters match known identities: pairwise and BCubed precision/recall/F, NMI, ARI.

Every face labelled -1 (noise, or a cluster below the minimum size) counts as a cluster of its own,
in the prediction and in the truth alike: leaving a face out costs recall, never precision::

    m = cluster_metrics(truth=np.array([0, 0, 1]), pred=np.array([5, 5, -1]))
    m.pairwise_f, m.bcubed_f     # 1.0, 1.0
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

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
    BCubed: per face, the share of its cluster with its identity (precision) and of its identity in its
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
    n_clusters = int(len(np.unique(pred[pred >= 0]))) if n else 0
    n_unclustered = int((pred < 0).sum())
    t, p = _dense(truth), _dense(pred)
    if n == 0:
        return ClusterMetrics(0, 0, 0, 0, *([1.0] * 8))
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

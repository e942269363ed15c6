"""Representational similarity: pure functions over numpy arrays (no I/O, no state).

RDMs (1 - Pearson, 1 - cosine, Euclidean), RDM comparison (Spearman, Pearson, Kendall
tau-b via scipy.stats), behavioural RSA as in the published study, bootstrap confidence
intervals over stimuli, linear CKA (biased and unbiased HSIC), NIGHTS-style 2AFC accuracy
and per-group averaging (THINGS-fMRI concepts).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import scipy.stats
from scipy.spatial.distance import pdist, squareform

from hba_sweep.foundation.choices import DISTANCE_METRICS, SIMILARITY_METRICS

__all__ = [
    "DISTANCE_METRICS",
    "SIMILARITY_METRICS",
    "compute_model_rdm",
    "upper_triangle",
    "compute_rdm_similarity",
    "behavioral_rsa",
    "bootstrap_rsa_ci",
    "compute_cka",
    "two_afc_accuracy",
    "average_by_group",
]

_PDIST_NAMES = {"pearson": "correlation", "cosine": "cosine", "euclidean": "euclidean"}
_SCIPY_TESTS: dict[str, Callable] = {
    "spearman": scipy.stats.spearmanr,
    "pearson": scipy.stats.pearsonr,
    "kendall": scipy.stats.kendalltau,  # tau-b
}


def _as_matrix(x: object, name: str, min_rows: int = 3) -> np.ndarray:
    """``x`` as a finite 2-D float64 array with at least ``min_rows`` rows."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ValueError(f"{name} must be 2-D (stimuli x features), got shape {arr.shape}")
    if arr.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} stimuli (rows), got {arr.shape[0]}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} has no feature columns")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _check_metric(value: str, allowed: Sequence[str], name: str) -> str:
    key = str(value).lower()
    if key not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return key


def compute_model_rdm(embeddings: np.ndarray, distance_metric: str = "pearson") -> np.ndarray:
    """(n, n) float64 RDM between the rows of ``embeddings``.

    pearson: 1 - Pearson r between rows; cosine: 1 - cosine similarity; euclidean:
    Euclidean distance. The diagonal is exactly 0. Pearson needs non-constant rows,
    cosine non-zero rows.
    """
    metric = _check_metric(distance_metric, DISTANCE_METRICS, "distance_metric")
    x = _as_matrix(embeddings, "embeddings")
    if metric == "pearson":
        bad = np.flatnonzero(np.ptp(x, axis=1) == 0)
        if bad.size:
            raise ValueError(f"pearson distance undefined: constant rows {bad[:10].tolist()}")
    elif metric == "cosine":
        bad = np.flatnonzero(~np.any(x != 0, axis=1))
        if bad.size:
            raise ValueError(f"cosine distance undefined: all-zero rows {bad[:10].tolist()}")
    return squareform(pdist(x, metric=_PDIST_NAMES[metric]), checks=False)


def upper_triangle(rdm: np.ndarray, k: int = 1) -> np.ndarray:
    """Entries of a square matrix above diagonal offset ``k``, row by row (np.triu_indices)."""
    arr = np.asarray(rdm, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"rdm must be a square 2-D matrix, got shape {arr.shape}")
    return arr[np.triu_indices(arr.shape[0], k=k)]


def _check_vectors(model_vector: object, reference_vector: object) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(model_vector, dtype=np.float64).ravel()
    b = np.asarray(reference_vector, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"RDM vectors differ in length: {a.size} vs {b.size}")
    if a.size < 3:
        raise ValueError(f"RDM vectors need at least 3 entries, got {a.size}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("RDM vectors contain NaN or infinite values")
    for name, v in (("model", a), ("reference", b)):
        if np.ptp(v) == 0:
            raise ValueError(f"{name} RDM vector is constant: its correlation is undefined")
    return a, b


def compute_rdm_similarity(
    model_vector: np.ndarray, reference_vector: np.ndarray, similarity_metric: str = "spearman"
) -> tuple[float, float]:
    """``(rho, p)`` between two RDM vectors: spearman | pearson | kendall (tau-b), scipy.stats."""
    metric = _check_metric(similarity_metric, SIMILARITY_METRICS, "similarity_metric")
    a, b = _check_vectors(model_vector, reference_vector)
    result = _SCIPY_TESTS[metric](a, b)
    return float(result[0]), float(result[1])


def _reference_square(reference_rdm: object, n: int) -> np.ndarray:
    ref = np.asarray(reference_rdm, dtype=np.float64)
    if ref.ndim == 1 and ref.size == n * (n - 1) // 2:
        square = np.zeros((n, n))
        square[np.triu_indices(n, 1)] = ref
        return square + square.T
    if ref.shape != (n, n):
        raise ValueError(
            f"reference RDM must be {n}x{n} (or its {n * (n - 1) // 2} upper-triangle values) "
            f"to match {n} stimuli, got shape {ref.shape}"
        )
    return ref


def behavioral_rsa(
    predictions: np.ndarray,
    reference_rdm: np.ndarray,
    distance_metric: str = "pearson",
    similarity_metric: str = "spearman",
) -> tuple[float, float]:
    """``(rho, p)``: model RDM of ``predictions`` vs ``reference_rdm``, upper triangles (k=1)."""
    model_rdm = compute_model_rdm(predictions, distance_metric)
    ref = _reference_square(reference_rdm, model_rdm.shape[0])
    return compute_rdm_similarity(upper_triangle(model_rdm), upper_triangle(ref), similarity_metric)


def _statistic_or_nan(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    if a.size < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(_SCIPY_TESTS[metric](a, b)[0])


def bootstrap_rsa_ci(
    embeddings: np.ndarray,
    reference_rdm: np.ndarray,
    distance_metric: str = "pearson",
    similarity_metric: str = "spearman",
    n_boot: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the RSA statistic, resampling stimuli.

    Each draw samples n stimuli with replacement (numpy ``default_rng(seed)``), takes the
    same rows/columns of the model and reference RDMs, and correlates the pairs above the
    diagonal, dropping pairs of a stimulus with itself (drawn twice). Draws whose vectors
    are constant are discarded.
    """
    metric = _check_metric(similarity_metric, SIMILARITY_METRICS, "similarity_metric")
    if not (0.0 < ci < 1.0):
        raise ValueError(f"ci must be in (0, 1), got {ci}")
    if int(n_boot) < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    model_rdm = compute_model_rdm(embeddings, distance_metric)
    n = model_rdm.shape[0]
    ref = _reference_square(reference_rdm, n)
    rng = np.random.default_rng(seed)
    iu, ju = np.triu_indices(n, k=1)
    stats = np.empty(int(n_boot))
    for b in range(int(n_boot)):
        idx = rng.integers(0, n, size=n)
        rows, cols = idx[iu], idx[ju]
        keep = rows != cols
        stats[b] = _statistic_or_nan(model_rdm[rows[keep], cols[keep]], ref[rows[keep], cols[keep]], metric)
    stats = stats[np.isfinite(stats)]
    if stats.size == 0:
        raise ValueError("bootstrap_rsa_ci: every resample gave an undefined statistic")
    alpha = (1.0 - ci) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _centered_gram(x: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=0, keepdims=True)
    return xc @ xc.T


def _hsic_biased(k: np.ndarray, lmat: np.ndarray) -> float:
    """tr(K H L H) / (n-1)^2 with K, L already double-centred (sum of elementwise product)."""
    n = k.shape[0]
    return float(np.sum(k * lmat)) / (n - 1) ** 2


def _hsic_unbiased(k: np.ndarray, lmat: np.ndarray) -> float:
    """Unbiased HSIC (Song et al. 2012, eq. 5; Nguyen et al. 2021): diagonals zeroed."""
    n = k.shape[0]
    k = k.copy()
    lmat = lmat.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(lmat, 0.0)
    term = np.sum(k * lmat)
    term += k.sum() * lmat.sum() / ((n - 1) * (n - 2))
    term -= 2.0 / (n - 2) * float(k.sum(axis=0) @ lmat.sum(axis=1))
    return float(term) / (n * (n - 3))


def compute_cka(X: np.ndarray, Y: np.ndarray, unbiased: bool = False) -> float:
    """Linear CKA between representations X (n, p) and Y (n, q) of the same n stimuli.

    ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` with K = X X^T, L = Y Y^T; biased HSIC
    (Kornblith et al. 2019) or the unbiased estimator (needs n >= 4).
    """
    x = _as_matrix(X, "X", min_rows=4 if unbiased else 3)
    y = _as_matrix(Y, "Y", min_rows=4 if unbiased else 3)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"X and Y must have the same number of rows, got {x.shape[0]} and {y.shape[0]}")
    if unbiased:
        k, lmat = x @ x.T, y @ y.T
        hsic = _hsic_unbiased
    else:
        k, lmat = _centered_gram(x), _centered_gram(y)
        hsic = _hsic_biased
    kk, ll = hsic(k, k), hsic(lmat, lmat)
    if kk <= 0 or ll <= 0:
        raise ValueError(
            f"CKA undefined: self-similarity HSIC(X,X)={kk:.3g}, HSIC(Y,Y)={ll:.3g} "
            "(constant representation, or too few stimuli for the unbiased estimator)"
        )
    return hsic(k, lmat) / np.sqrt(kk * ll)


def _cosine_distance_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    if np.any(na == 0) or np.any(nb == 0):
        raise ValueError("cosine distance undefined for an all-zero output vector")
    return 1.0 - np.einsum("ij,ij->i", a, b) / (na * nb)


def two_afc_accuracy(
    ref: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    left_vote: np.ndarray,
    right_vote: np.ndarray,
) -> float:
    """Share of triplets where the human-chosen image is the one closer to ``ref``.

    ``ref``, ``left``, ``right``: (T, d) model outputs; votes: (T,). Humans chose the image
    with more votes; triplets with tied votes are excluded. Closeness is cosine distance;
    the model is right only when the chosen image is strictly closer (a distance tie counts
    as wrong).
    """
    r, a, b = (np.asarray(v, dtype=np.float64) for v in (ref, left, right))
    if r.ndim == 1:
        r, a, b = r[:, None], a[:, None], b[:, None]
    if not (r.shape == a.shape == b.shape) or r.ndim != 2:
        raise ValueError(f"ref, left, right must share one (T, d) shape, got {r.shape}, {a.shape}, {b.shape}")
    lv = np.asarray(left_vote, dtype=np.float64).ravel()
    rv = np.asarray(right_vote, dtype=np.float64).ravel()
    if lv.size != r.shape[0] or rv.size != r.shape[0]:
        raise ValueError(f"votes must have one entry per triplet ({r.shape[0]}), got {lv.size} and {rv.size}")
    decided = lv != rv
    if not np.any(decided):
        raise ValueError("two_afc_accuracy: every triplet has tied votes; nothing to score")
    d_left = _cosine_distance_rows(r[decided], a[decided])
    d_right = _cosine_distance_rows(r[decided], b[decided])
    human_left = lv[decided] > rv[decided]
    model_right = d_right < d_left
    correct = model_right != human_left
    return float(np.mean(correct))


def average_by_group(embeddings: np.ndarray, groups: Sequence[object]) -> tuple[list, np.ndarray]:
    """Mean embedding per group: ``(group_names, means)``, groups in order of first appearance."""
    x = np.asarray(embeddings, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D (stimuli x features), got shape {x.shape}")
    labels = list(groups)
    if len(labels) != x.shape[0]:
        raise ValueError(f"groups has {len(labels)} entries for {x.shape[0]} embeddings")
    order: dict[object, int] = {}
    codes = np.array([order.setdefault(g, len(order)) for g in labels], dtype=np.intp)
    sums = np.zeros((len(order), x.shape[1]))
    np.add.at(sums, codes, x)
    counts = np.bincount(codes, minlength=len(order)).astype(np.float64)
    return list(order), sums / counts[:, None]

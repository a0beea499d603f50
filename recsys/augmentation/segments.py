"""User segments for the GAN's condition: spherical k-means of train rows, and the sparse users to expand."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def _row_normalised(x: sp.csr_matrix) -> sp.csr_matrix:
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    inverse = np.divide(1.0, norms, out=np.zeros_like(norms), where=norms > 0)
    return sp.csr_matrix(sp.diags(inverse) @ x)


def kmeans_segments(
    x: sp.csr_matrix, k: int, seed: int, iters: int = 30, restarts: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means of the rows of a sparse matrix (k-means++ starts, Lloyd steps).

    Rows are L2-normalised first, so segments follow taste rather than activity. Centroids stay
    dense (k x items); rows are never densified. The best of ``restarts`` runs (lowest inertia) is
    kept, since one k-means++ start can put two centroids in one cluster. Clusters left empty are
    dropped at the end.

    Args:
        x: users x items; rows without entries get segment -1.
        k: wanted number of segments (fewer when there are fewer non-empty rows).
        seed: seeds the k-means++ starts.
        iters: most Lloyd steps per run.
        restarts: independent runs.

    Returns:
        ``(labels, centroids)``: labels in 0..k'-1 (-1 for empty rows) and the k' x items centroids.
    """
    xn = _row_normalised(sp.csr_matrix(x, dtype=np.float64))
    active = np.flatnonzero(np.diff(xn.indptr) > 0)
    if len(active) == 0:
        raise ValueError("kmeans_segments: the matrix has no non-empty row")
    xa = xn[active]
    k = max(1, min(int(k), len(active)))
    rng = np.random.default_rng(seed)
    best = min((_lloyd(xa, k, rng, iters) for _ in range(restarts)), key=lambda run: run[0])
    _, labels, centroids = best
    used = np.unique(labels)
    relabel = np.full(k, -1)
    relabel[used] = np.arange(len(used))
    out = np.full(x.shape[0], -1)
    out[active] = relabel[labels]
    return out, centroids[used]


def _lloyd(xa: sp.csr_matrix, k: int, rng: np.random.Generator, iters: int) -> tuple[float, np.ndarray, np.ndarray]:
    """One k-means++ start and Lloyd steps; returns (inertia, labels, centroids)."""
    n = xa.shape[0]
    centroids = np.zeros((k, xa.shape[1]))
    centroids[0] = xa[rng.integers(n)].toarray().ravel()
    nearest = np.clip(_squared_distances(xa, centroids[:1]).ravel(), 0, None)
    for j in range(1, k):
        pick = rng.choice(n, p=nearest / nearest.sum()) if nearest.sum() > 0 else rng.integers(n)
        centroids[j] = xa[pick].toarray().ravel()
        nearest = np.minimum(nearest, np.clip(_squared_distances(xa, centroids[j:j + 1]).ravel(), 0, None))
    labels = np.full(n, -1)
    for _ in range(iters):
        distances = _squared_distances(xa, centroids)
        new = np.argmin(distances, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        onehot = sp.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
        counts = np.asarray(onehot.sum(axis=1)).ravel()
        sums = np.asarray((onehot @ xa).todense())
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
    inertia = float(np.sum(np.min(_squared_distances(xa, centroids), axis=1)))
    return inertia, labels, centroids


def _squared_distances(xn: sp.csr_matrix, centroids: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of unit rows to centroids, without densifying the rows."""
    row_sq = np.asarray(xn.multiply(xn).sum(axis=1)).ravel()[:, None]
    return row_sq - 2.0 * np.asarray(xn @ centroids.T) + np.sum(centroids**2, axis=1)[None, :]


def assign_segments(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of each dense row after L2 normalisation (as kmeans_segments measures)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors, dtype=np.float64), where=norms > 0)
    return np.argmin(np.sum(centroids**2, axis=1)[None, :] - 2.0 * unit @ centroids.T, axis=1)


def sparse_users(train: sp.csr_matrix, quantile: float) -> np.ndarray:
    """Users with at least one train item whose history length is at most the ``quantile`` of such users.

    Ties at the cut-off are all included, so the share can exceed ``quantile`` a little.
    """
    lengths = np.diff(sp.csr_matrix(train).indptr)
    active = np.flatnonzero(lengths > 0)
    if len(active) == 0:
        return active
    cut = np.quantile(lengths[active], quantile, method="lower")
    return active[lengths[active] <= cut]

"""Rebalancing knobs of sample expansion: a per-user positive cap, long-tail weights, a positive:negative weight ratio."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.sampling.seen import row_users


def cap_per_user(matrix: sp.csr_matrix, cap: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Keep at most ``cap`` entries of every row, a uniform random subset of the longer rows.

    Args:
        matrix: users x items CSR.
        cap: entries kept per row at most; 0 keeps everything.
        rng: random generator for the subsets.

    Returns:
        A CSR of the same shape holding the kept entries (rows within the cap are unchanged).
    """
    if cap <= 0 or matrix.nnz == 0 or np.diff(matrix.indptr).max() <= cap:
        return matrix
    rows = row_users(matrix)
    order = np.lexsort((rng.random(matrix.nnz), rows))  # each row's entries in random order
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    kept = sp.csr_matrix((matrix.data[rank < cap], (rows[rank < cap], matrix.indices[rank < cap])),
                         shape=matrix.shape, dtype=matrix.dtype)
    kept.sort_indices()
    return kept


def long_tail_multipliers(counts: np.ndarray, beta: float) -> np.ndarray:
    """Per-item weight multipliers ``count ** -beta`` (a zero count counts as 1), with mean 1 over interactions.

    The normaliser is the count-weighted mean, so the train positives' total weight is unchanged and
    only its split between popular and long-tail items moves; ``beta = 0`` gives all ones.
    """
    counts = np.asarray(counts, dtype=np.float64)
    raw = np.maximum(counts, 1.0) ** -float(beta)
    if counts.sum() <= 0:
        return raw
    return raw / (counts @ raw / counts.sum())


def balance_weights(labels: np.ndarray, weights: np.ndarray, ratio: float) -> np.ndarray:
    """Scale the negatives' weights by one factor so that positive weight / negative weight = ``ratio``.

    Returns the weights unchanged when there are no negatives or no positive weight.
    """
    negative = labels == 0
    pos_sum = float(weights[~negative].sum(dtype=np.float64))
    neg_sum = float(weights[negative].sum(dtype=np.float64))
    if neg_sum <= 0 or pos_sum <= 0:
        return weights
    out = weights.astype(np.float32, copy=True)
    out[negative] = (weights[negative] * (pos_sum / (ratio * neg_sum))).astype(np.float32)
    return out

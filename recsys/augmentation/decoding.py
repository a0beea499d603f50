"""Turning generator scores into item sets: the best unseen items, the best items, and draws without replacement."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.evaluation.metrics import top_k


def top_unobserved(
    scores: np.ndarray, seen: sp.csr_matrix, k: int, min_score: float = -np.inf
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The ``k`` best-scored unseen items of each row with a score of at least ``min_score``.

    Returns:
        ``(row, item, score)`` arrays, rows in order and best item first within a row.
    """
    masked = np.array(scores, dtype=np.float32, copy=True)
    coo = sp.coo_matrix(seen)
    masked[coo.row, coo.col] = -np.inf
    best = top_k(masked, k)
    values = np.take_along_axis(masked, best, axis=1)
    keep = np.isfinite(values) & (values >= min_score)
    rows = np.broadcast_to(np.arange(len(masked))[:, None], best.shape)
    return rows[keep], best[keep], values[keep]


def decode_top(scores: np.ndarray, lengths: np.ndarray) -> sp.csr_matrix:
    """A 0/1 CSR matrix holding, per row, the ``lengths[row]`` best-scored items."""
    lengths = np.minimum(lengths, scores.shape[1]).astype(np.int64)
    best = top_k(scores, int(lengths.max())) if len(lengths) else np.zeros((0, 0), dtype=np.int64)
    keep = np.arange(best.shape[1])[None, :] < lengths[:, None]
    rows = np.broadcast_to(np.arange(len(scores))[:, None], best.shape)[keep]
    return sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, best[keep])), shape=scores.shape)


def draw_items(scores: np.ndarray, lengths: np.ndarray, uniforms: np.ndarray) -> sp.csr_matrix:
    """Per row, ``lengths[row]`` items drawn without replacement with probability proportional to score.

    Gumbel top-k: the ``lengths[row]`` largest ``log(score) + Gumbel`` keys are a draw without
    replacement from the scores (Vieira 2014; Kool et al., 2019). The scores are the generator's item
    probabilities, so a synthetic user is a draw from them, as the discriminator judged in training,
    not the same few top-scored items for every user of a segment.

    Args:
        scores: rows x items, non-negative.
        lengths: items to draw per row.
        uniforms: rows x items uniform (0, 1) numbers, the draw's randomness (passed in, so two
            calls can share it).
    """
    tiny = np.finfo(np.float32).tiny  # a zero score is drawn only when a row has no other item left
    keys = np.log(np.maximum(scores, tiny)) - np.log(-np.log(np.clip(uniforms, tiny, 1.0 - 1e-7)))
    return decode_top(keys, lengths)

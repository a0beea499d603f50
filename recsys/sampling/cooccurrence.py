"""Co-occurrence positives: unseen items most similar, by item-item cosine, to a user's items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.core.matrices import binary
from recsys.models.item_item import unit_columns

# Cells of one dense block of scores (users x items): 32 MB of float64.
_BLOCK_CELLS = 1 << 22


class CooccurrenceSampler:
    """Scores unseen items by their mean cosine similarity to the user's train items; keeps the best.

    Item-item cosine is ``C_ij / sqrt(n_i n_j)`` with ``C = XᵀX`` the co-occurrence counts of the
    binarised train matrix X and ``n_i`` the item counts, i.e. ``x̂ᵀx̂`` with ``x̂`` from
    :func:`recsys.models.item_item.unit_columns`. A user's score for item j is the mean of
    ``cos(i, j)`` over their items i, so it lies in [0, 1] and serves directly as the confidence.
    """

    def __init__(self, train: sp.csr_matrix, per_user: int, min_score: float) -> None:
        """Build the sampler.

        Args:
            train: users x items CSR of train positives (values are ignored, stored non-zero entries count).
            per_user: at most this many positives per user.
            min_score: positives need a mean cosine of at least this (and above zero).
        """
        # float64 scores, so that ties and the min_score cut fall as they always have
        self._x = sp.csr_matrix(binary(train), dtype=np.float64)
        self._x_scaled = unit_columns(self._x).tocsc()  # sliced by columns
        self.per_user = per_user
        self.min_score = min_score

    def sample(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Co-occurrence positives of ``users`` (distinct user indexes).

        Returns:
            ``(users, items, confidence)``: int32, int32, float32 arrays in the order of ``users``,
            each user's items by descending confidence (ties: lower item index first).
        """
        users = np.asarray(users, dtype=np.int64)
        if users.size == 0 or self.per_user == 0:
            return np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.float32)
        rows = self._x[users]
        # cosine rows of only the items these users have (D^-1/2 XᵀX D^-1/2 restricted to them)
        own = np.unique(rows.indices)
        cosine = (self._x_scaled[:, own].T @ self._x_scaled).tocsr()
        rows_own = rows[:, own]
        n_own = np.maximum(np.diff(rows.indptr), 1)
        n_items = self._x.shape[1]
        k = min(self.per_user, n_items)
        block = max(1, _BLOCK_CELLS // n_items)
        picked = []
        for start in range(0, users.size, block):
            part = slice(start, start + block)
            # dense block of mean cosines; the users' own items can never qualify
            scores = (rows_own[part] @ cosine).toarray() / n_own[part, None]
            scores[rows[part].nonzero()] = 0.0
            top = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < n_items else np.indices(scores.shape)[1]
            top_scores = np.take_along_axis(scores, top, axis=1)
            order = np.lexsort((top, -top_scores), axis=1)
            top, top_scores = np.take_along_axis(top, order, axis=1), np.take_along_axis(top_scores, order, axis=1)
            keep = (top_scores > 0) & (top_scores >= self.min_score)
            picked.append((np.broadcast_to(users[part, None], top.shape)[keep], top[keep], top_scores[keep]))
        user, item, score = (np.concatenate(c) for c in zip(*picked, strict=True))
        return user.astype(np.int32), item.astype(np.int32), score.astype(np.float32)

"""Co-occurrence positives: unseen items most similar, by item-item cosine, to a user's items."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from jobs.sampling.seen import SeenItems


class CooccurrenceSampler:
    """Scores unseen items by their mean cosine similarity to the user's train items; keeps the best.

    Item-item cosine is ``C_ij / sqrt(n_i n_j)`` with ``C = XᵀX`` the co-occurrence counts of the
    binarised train matrix X and ``n_i`` the item counts. A user's score for item j is the mean of
    ``cos(i, j)`` over their items i, so it lies in [0, 1] and serves directly as the confidence.
    """

    def __init__(self, train: sp.csr_matrix, per_user: int, min_score: float) -> None:
        """Build the sampler.

        Args:
            train: users x items CSR of train positives (values are ignored, entries count).
            per_user: at most this many positives per user.
            min_score: positives need a mean cosine of at least this (and above zero).
        """
        x = sp.csr_matrix(train, dtype=np.float64, copy=True)
        x.data[:] = 1.0
        counts = np.asarray(x.sum(axis=0)).ravel()
        inv_sqrt = np.divide(1.0, np.sqrt(counts), out=np.zeros_like(counts), where=counts > 0)
        self._x = x
        self._x_scaled = (x @ sp.diags(inv_sqrt)).tocsr()
        self._seen = SeenItems(x)
        self.per_user = per_user
        self.min_score = min_score

    def sample(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Co-occurrence positives of ``users`` (distinct user indexes).

        Returns:
            ``(users, items, confidence)``: int32, int32, float32 arrays ordered by user, then by
            descending confidence.
        """
        users = np.asarray(users, dtype=np.int64)
        rows = self._x_scaled[users]
        # (Xs D^-1/2) Xᵀ X D^-1/2: similarity sums of every item to each user's items
        scores = ((rows @ self._x.T) @ self._x_scaled).tocoo()
        n_own = np.diff(self._x.indptr)[users]
        user = users[scores.row]
        score = scores.data / n_own[scores.row]
        keep = (score > 0) & (score >= self.min_score) & ~self._seen.contains(user, scores.col)
        user, item, score = user[keep], scores.col[keep], score[keep]
        order = np.lexsort((item, -score, user))
        user, item, score = user[order], item[order], score[order]
        rank = np.arange(user.size) - np.searchsorted(user, user, side="left")
        top = rank < self.per_user
        return user[top].astype(np.int32), item[top].astype(np.int32), score[top].astype(np.float32)

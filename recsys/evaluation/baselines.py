"""Baseline recommenders the model must beat: popularity and ItemKNN (cosine). EASE is a model: recsys.models.ease."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from recsys.core.matrices import check_items
from recsys.models.item_item import unit_columns


class Popularity:
    """Scores every item by the number of distinct users who interacted with it in training."""

    def __init__(self, train: sp.csr_matrix) -> None:
        self.counts = np.diff(sp.csc_matrix(train).indptr).astype(np.float32)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        check_items(histories, len(self.counts), "popularity")
        return np.broadcast_to(self.counts, histories.shape).copy()


def nearest(sim: sp.csr_matrix, first: int, neighbors: int) -> sp.csr_matrix:
    """Rows of item similarities (row r is item ``first + r``) cut to each row's ``neighbors`` largest entries.

    The item itself and zero similarities are dropped; ties keep the lower item index.
    """
    sim = sp.csr_matrix(sim, dtype=np.float32, copy=True)
    rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
    sim.data[sim.indices == rows + first] = 0.0
    sim.eliminate_zeros()
    sim.sort_indices()
    rows = np.repeat(np.arange(sim.shape[0]), np.diff(sim.indptr))
    # two stable sorts: the largest first (equals keep the stored order: by row, then the lower index), then by row
    order = np.argsort(-sim.data, kind="stable")
    order = order[np.argsort(rows[order], kind="stable")]
    rank = np.arange(len(order)) - sim.indptr[rows[order]]
    kept = order[rank < neighbors]
    return sp.csr_matrix((sim.data[kept], (rows[kept], sim.indices[kept])), shape=sim.shape)


class ItemKNN:
    """Item-based nearest neighbours with cosine similarity over the training matrix.

    Each item keeps its ``neighbors`` most similar items; a user's score for item j is the sum of
    j's similarities to the items in their (weighted) history.
    """

    def __init__(self, train: sp.csr_matrix, neighbors: int = 100, chunk: int = 1024) -> None:
        x = unit_columns(sp.csr_matrix(train, dtype=np.float32)).tocsc()
        n_items = x.shape[1]
        xt = sp.csr_matrix(x.T)
        parts = []
        # rows of similarities are built a chunk of items at a time and stay sparse: an item is only similar
        # to the items it shares a user with, so memory and time follow those pairs, not chunk x n_items
        for start in range(0, n_items, chunk):
            parts.append(nearest(sp.csr_matrix(xt[start:start + chunk] @ x), start, neighbors))
        # similarity[j, i]: how similar history item i is to candidate j (row j keeps j's neighbours)
        self.similarity = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, 0), dtype=np.float32)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        check_items(histories, self.similarity.shape[0], "itemknn")
        return np.asarray((sp.csr_matrix(histories, dtype=np.float32) @ self.similarity.T).todense())

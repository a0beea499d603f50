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


class ItemKNN:
    """Item-based nearest neighbours with cosine similarity over the training matrix.

    Each item keeps its ``neighbors`` most similar items; a user's score for item j is the sum of
    j's similarities to the items in their (weighted) history.
    """

    def __init__(self, train: sp.csr_matrix, neighbors: int = 100, chunk: int = 1024) -> None:
        x = unit_columns(sp.csr_matrix(train, dtype=np.float32)).tocsc()
        n_items = x.shape[1]
        xt = sp.csr_matrix(x.T)
        keep = min(neighbors, n_items - 1)
        parts = []
        # rows of similarities are built a chunk of items at a time so memory stays chunk x n_items
        for start in range(0, n_items, chunk):
            stop = min(start + chunk, n_items)
            sim = np.asarray((xt[start:stop] @ x).todense(), dtype=np.float32)
            sim[np.arange(stop - start), np.arange(start, stop)] = 0.0
            if keep < n_items - 1:
                cut = np.argpartition(-sim, keep, axis=1)[:, keep:]
                np.put_along_axis(sim, cut, 0.0, axis=1)
            parts.append(sp.csr_matrix(sim))
        # similarity[j, i]: how similar history item i is to candidate j (row j keeps j's neighbours)
        self.similarity = sp.vstack(parts).tocsr() if parts else sp.csr_matrix((0, 0), dtype=np.float32)

    def scores(self, histories: sp.csr_matrix) -> np.ndarray:
        check_items(histories, self.similarity.shape[0], "itemknn")
        return np.asarray((sp.csr_matrix(histories, dtype=np.float32) @ self.similarity.T).todense())

"""Ranking for serving: each user's top-K unseen items from a recommender, as the output contract's rows.

Rows with an empty history get the most popular items; nobody is recommended an item they interacted with
in the window, whatever the label. ``jobs.publish`` and the registered pyfunc
(:class:`recsys.serving.pyfunc.RecsysModel`) both rank through :func:`recommend` from the same history, so
the batch output and the pyfunc agree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, RANK, SCORE, USER_ID
from recsys.evaluation.metrics import top_k

log = logging.getLogger(__name__)

DEFAULT_K = 20
SCORE_BATCH = 2048  # users scored at once; bounds memory at SCORE_BATCH x items floats


def typed_ids(ids: np.ndarray, id_type: str) -> np.ndarray:
    """Original ids back in the type they had in the input (``int64`` or ``string``)."""
    return ids.astype(np.int64) if id_type == "int64" else ids.astype(object)


def recommend(model: Any, histories: sp.csr_matrix, seen: sp.csr_matrix, popularity: np.ndarray,
              k: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores for each history row, the ``seen`` items removed.

    Args:
        model: the recommender.
        histories: rows x items, what the model reads of each user.
        seen: rows x items, the same users' every interaction: never recommended (its values are ignored).
        popularity: interactions per item the model knew.
        k: recommendations per row.
        candidates: bool per item, the only items that may be recommended (``recs_new``: the new items);
            None: every item.

    Rows with an empty history get the most popular items (a cold user); item columns the model has
    not seen (newer than it) are never recommended. Only the histories' columns are candidates: a model
    that knows more items (a later date's champion judged on an earlier date in a backfill or rerun)
    never recommends items that did not exist yet. A slot with nothing left to recommend scores -inf.
    """
    return recommend_lists(model, histories, seen, popularity, k, [candidates])[0]


def recommend_lists(model: Any, histories: sp.csr_matrix, seen: sp.csr_matrix, popularity: np.ndarray, k: int,
                    candidate_sets: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
    """:func:`recommend` once per entry of ``candidate_sets``, from one scoring pass over the users.

    ``publish``'s two lists (every item, the new items) cost one forward pass of the model, not two.
    """
    from recsys.models.recommender import score_histories

    if seen.shape != histories.shape:
        raise ValueError(f"recommend: seen has shape {seen.shape}, histories {histories.shape}")
    n_items = histories.shape[1]
    pop = np.full(n_items, -np.inf, dtype=np.float32)
    known = min(n_items, len(popularity))
    pop[:known] = np.log1p(popularity[:known])
    excluded = []
    for candidates in candidate_sets:
        if candidates is not None and len(candidates) != n_items:
            raise ValueError(f"recommend: candidates cover {len(candidates)} items, histories {n_items}")
        excluded.append(None if candidates is None else ~np.asarray(candidates, bool))
    out: list[tuple[list[np.ndarray], list[np.ndarray]]] = [([], []) for _ in candidate_sets]
    started = time.perf_counter()
    for start in range(0, histories.shape[0], SCORE_BATCH):
        batch = histories[start : start + SCORE_BATCH]
        scores = score_histories(model, batch)[:, :n_items]
        scores[np.diff(batch.indptr) == 0] = pop  # cold rows
        seen_batch = seen[start : start + SCORE_BATCH]
        # the stored pattern, not nonzero(): a seen item is removed whatever its value
        rows = np.repeat(np.arange(seen_batch.shape[0]), np.diff(seen_batch.indptr))
        scores[rows, seen_batch.indices] = -np.inf
        for (idx_parts, score_parts), drop in zip(out, excluded, strict=True):
            ranked = scores if drop is None else np.where(drop, np.float32(-np.inf), scores)
            idx = top_k(ranked, k)
            idx_parts.append(idx)
            score_parts.append(np.take_along_axis(ranked, idx, axis=1))
        if histories.shape[0] > SCORE_BATCH:  # a batch job (publish), not a few users of the pyfunc
            log.info("ranked %d of %d users (%.0f users/s)", start + batch.shape[0], histories.shape[0],
                     (start + batch.shape[0]) / (time.perf_counter() - started))
    return [(np.vstack(idx_parts), np.vstack(score_parts)) for idx_parts, score_parts in out]


def recs_frame(user_ids: np.ndarray, idx: np.ndarray, scores: np.ndarray, profile_item_ids: np.ndarray,
               item_id_type: str) -> pd.DataFrame:
    """Long-format recommendations ``user_id, item_id, rank, score``; never-scored slots are dropped.

    ``user_ids`` are written as given (the caller types them); item ids are typed by ``item_id_type``.
    """
    n, k = idx.shape
    frame = pd.DataFrame({
        USER_ID: np.repeat(np.asarray(user_ids), k),
        ITEM_ID: typed_ids(profile_item_ids[idx.ravel()], item_id_type),
        RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), n),
        SCORE: scores.ravel().astype(np.float32),
    })
    return frame[np.isfinite(frame[SCORE])].reset_index(drop=True)

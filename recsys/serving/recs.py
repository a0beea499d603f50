"""The registered model: a recommender plus the id maps and histories it serves from (MLflow pyfunc).

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(pd.DataFrame({"user_id": [...]}))``
returns each user's top-K as rows ``user_id, rank, item_id, score`` (K from ``params={"k": K}``,
default 20). Known users are scored from their history; unknown users, and users whose history has
nothing the model reads, get the most popular items. Nobody is recommended an item they interacted
with in the window, whatever the label. ``jobs.publish`` ranks through the same :func:`recommend` from
the same history, so the batch output and the pyfunc agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import ITEM_ID, RANK, SCORE, USER_ID
from recsys.evaluation.metrics import top_k

DEFAULT_K = 20
SCORE_BATCH = 2048  # users scored at once; bounds memory at SCORE_BATCH x items floats


def typed_ids(ids: np.ndarray, id_type: str) -> np.ndarray:
    """Original ids back in the type they had in the input (``int64`` or ``string``)."""
    return ids.astype(np.int64) if id_type == "int64" else ids.astype(object)


@dataclass
class Profile:
    """What the model serves from: id maps, each user's history and item popularity."""

    user_ids: np.ndarray  # strings, by user index
    item_ids: np.ndarray  # strings, by item index
    histories: sp.csr_matrix  # users x items, the window's history as the model reads it (tables' ``history``)
    seen: sp.csr_matrix  # users x items, every pair of the window (tables' ``seen``): never recommended
    popularity: np.ndarray  # interactions per item
    user_id_type: str
    item_id_type: str

    def save(self, path: Path) -> None:
        h, seen = self.histories, self.seen
        np.savez(
            path, user_ids=self.user_ids.astype(str), item_ids=self.item_ids.astype(str),
            indptr=h.indptr, indices=h.indices, data=h.data, shape=np.asarray(h.shape),
            seen_indptr=seen.indptr, seen_indices=seen.indices,
            popularity=self.popularity, id_types=np.asarray([self.user_id_type, self.item_id_type]),
        )

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        with np.load(path) as z:
            shape = tuple(z["shape"])
            histories = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            seen = sp.csr_matrix((np.ones(len(z["seen_indices"]), np.float32), z["seen_indices"], z["seen_indptr"]),
                                 shape=shape)
            user_type, item_type = (str(t) for t in z["id_types"])
            return cls(z["user_ids"].astype(object), z["item_ids"].astype(object), histories, seen,
                       z["popularity"], user_type, item_type)


def recommend(model: Any, histories: sp.csr_matrix, seen: sp.csr_matrix, popularity: np.ndarray,
              k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` item indices and scores for each history row, the ``seen`` items removed.

    Args:
        model: the recommender.
        histories: rows x items, what the model reads of each user.
        seen: rows x items, the same users' every interaction: never recommended (its values are ignored).
        popularity: interactions per item the model knew.
        k: recommendations per row.

    Rows with an empty history get the most popular items (a cold user); item columns the model has
    not seen (newer than it) are never recommended. Only the histories' columns are candidates: a model
    that knows more items (a later date's champion judged on an earlier date in a backfill or rerun)
    never recommends items that did not exist yet. A slot with nothing left to recommend scores -inf.
    """
    from recsys.models.recommender import score_histories

    if seen.shape != histories.shape:
        raise ValueError(f"recommend: seen has shape {seen.shape}, histories {histories.shape}")
    n_items = histories.shape[1]
    pop = np.full(n_items, -np.inf, dtype=np.float32)
    known = min(n_items, len(popularity))
    pop[:known] = np.log1p(popularity[:known])
    out_idx, out_scores = [], []
    for start in range(0, histories.shape[0], SCORE_BATCH):
        batch = histories[start : start + SCORE_BATCH]
        scores = score_histories(model, batch)[:, :n_items]
        cold = np.diff(batch.indptr) == 0
        scores[cold] = pop
        seen_batch = seen[start : start + SCORE_BATCH]
        # the stored pattern, not nonzero(): a seen item is removed whatever its value
        rows = np.repeat(np.arange(seen_batch.shape[0]), np.diff(seen_batch.indptr))
        scores[rows, seen_batch.indices] = -np.inf
        idx = top_k(scores, k)
        out_idx.append(idx)
        out_scores.append(np.take_along_axis(scores, idx, axis=1))
    return np.vstack(out_idx), np.vstack(out_scores)


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


class RecsysModel(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc wrapper: artifacts ``model`` (a .keras recommender) and ``profile`` (a Profile .npz)."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.load_files(context.artifacts["model"], context.artifacts["profile"])

    def load_files(self, model_path: str | Path, profile_path: str | Path) -> None:
        """Load the recommender and its profile from local files."""
        from recsys.models.recommender import load_recommender

        self.model = load_recommender(model_path)
        self.profile = Profile.load(profile_path)
        self._user_index = {u: i for i, u in enumerate(self.profile.user_ids) if u}

    def predict(
        self, context: mlflow.pyfunc.PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Top-K per requested user; ``model_input`` needs a ``user_id`` column."""
        if USER_ID not in model_input.columns:
            raise ValueError(f"input needs a {USER_ID!r} column; got {', '.join(map(str, model_input.columns))}")
        k = int((params or {}).get("k", DEFAULT_K))
        p = self.profile
        wanted = model_input[USER_ID].to_numpy()
        # ids are looked up as they came (trimmed, as the clean job trims them); never case-folded
        rows = np.array([self._user_index.get(str(u).strip(), -1) for u in wanted])
        empty = sp.csr_matrix((1, p.histories.shape[1]), dtype=np.float32)
        # -1 picks the appended empty row: an unknown user
        histories = sp.vstack([p.histories, empty]).tocsr()[rows]
        seen = sp.vstack([p.seen, empty]).tocsr()[rows]
        idx, scores = recommend(self.model, histories, seen, p.popularity, k)
        frame = recs_frame(wanted, idx, scores, p.item_ids, p.item_id_type)
        return frame

    def recommend_histories(self, histories: sp.csr_matrix, seen: sp.csr_matrix,
                            k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-K for histories indexed like today's tables (stable indexes keep them aligned)."""
        return recommend(self.model, histories, seen, self.profile.popularity, k)

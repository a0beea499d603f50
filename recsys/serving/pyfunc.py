"""The registered model: a recommender plus the id maps and histories it serves from (MLflow pyfunc).

``mlflow.pyfunc.load_model("models:/<name>@champion").predict(pd.DataFrame({"user_id": [...]}))``
returns each user's top-K as rows ``user_id, rank, item_id, score`` (K from ``params={"k": K}``,
default 20; ``params={"new_only": True}`` ranks only the items that were new on the model's date, the
list ``recs_new/`` publishes, by the rule of :mod:`recsys.serving.new_items`). Known users are scored from their history; unknown users, and users whose history has
nothing the model reads, get the most popular items. Nobody is recommended an item they interacted
with in the window, whatever the label. The ranking is :func:`recsys.serving.recs.recommend`, the one
``jobs.publish`` uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import USER_ID
from recsys.data.ids import trim_id
from recsys.serving.recs import DEFAULT_K, recommend, recommend_lists, recs_frame


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
    new_items: np.ndarray  # bool per item: new on the model's date (recsys.serving.new_items)

    def save(self, path: Path) -> None:
        h, seen = self.histories, self.seen
        np.savez(
            path, user_ids=self.user_ids.astype(str), item_ids=self.item_ids.astype(str),
            indptr=h.indptr, indices=h.indices, data=h.data, shape=np.asarray(h.shape),
            seen_indptr=seen.indptr, seen_indices=seen.indices,
            popularity=self.popularity, id_types=np.asarray([self.user_id_type, self.item_id_type]),
            new_items=self.new_items,
        )

    @classmethod
    def load(cls, path: Path | str) -> Profile:
        with np.load(path) as z:
            shape = tuple(z["shape"])
            histories = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=shape)
            seen = sp.csr_matrix((np.ones(len(z["seen_indices"]), np.float32), z["seen_indices"], z["seen_indptr"]),
                                 shape=shape)
            user_type, item_type = (str(t) for t in z["id_types"])
            # a profile saved before recs_new existed knows no new items
            new_items = z["new_items"] if "new_items" in z.files else np.zeros(shape[1], bool)
            return cls(z["user_ids"].astype(object), z["item_ids"].astype(object), histories, seen,
                       z["popularity"], user_type, item_type, new_items)


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
        candidates = p.new_items if (params or {}).get("new_only", False) else None
        wanted = model_input[USER_ID].to_numpy()
        # ids are looked up as they came (trimmed, as the clean job trims them); never case-folded
        rows = np.array([self._user_index.get(trim_id(str(u)), -1) for u in wanted])
        empty = sp.csr_matrix((1, p.histories.shape[1]), dtype=np.float32)
        # -1 picks the appended empty row: an unknown user
        histories = sp.vstack([p.histories, empty]).tocsr()[rows]
        seen = sp.vstack([p.seen, empty]).tocsr()[rows]
        idx, scores = recommend(self.model, histories, seen, p.popularity, k, candidates)
        frame = recs_frame(wanted, idx, scores, p.item_ids, p.item_id_type)
        return frame

    def recommend_histories(self, histories: sp.csr_matrix, seen: sp.csr_matrix, k: int,
                            candidate_sets: Sequence[np.ndarray | None]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Top-K for histories indexed like today's tables (stable indexes keep them aligned), once per entry of
        ``candidate_sets`` (bool per item, or None for every item), from one scoring pass."""
        return recommend_lists(self.model, histories, seen, self.profile.popularity, k, candidate_sets)

"""The offline evaluation protocol: who is evaluated, what a model reads and may not rank, how it is scored.

Every model, tonight's, its ablation, the baselines and the current champion in the promotion gate, ranks
the whole catalogue for each test user from the same input, the user's window history without their test
pairs, with every item the user interacted with (any label) other than the test targets removed: the
ranking that ``publish`` would serve. :meth:`HeldOut.score` is the one place that ranking is scored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.core.matrices import Matrices
from recsys.evaluation.metrics import UserMetrics, scored_metrics, target_users

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)
Scorer = Callable[[sp.csr_matrix], np.ndarray]  # histories (rows x items) -> scores (rows x items)


def cutoffs(ks: Iterable[int], metric: str | None = None) -> list[int]:
    """The cut-offs ``ks``, ascending, plus the K of ``metric`` (``"ndcg@10"``) when given."""
    out = {int(k) for k in ks}
    if metric is not None and "@" in metric:
        out.add(int(metric.split("@")[1]))
    return sorted(out)


def recorded_cutoffs(metrics: Mapping[str, Any]) -> list[int]:
    """The cut-offs evaluate ranked at, read back from its ``metrics.json`` (the model's metric names)."""
    return cutoffs(int(name.split("@")[1]) for name in metrics["models"]["model"]["all"] if "@" in name)


@dataclass(frozen=True)
class HeldOut:
    """The test users of a date, and what each model reads of them, must not rank and should find."""

    users: np.ndarray  # user indices with at least one test item, ascending
    history: sp.csr_matrix  # users x items: the window's history without the test pairs (the model's input)
    exclude: sp.csr_matrix  # users x items: every other item of the window, never ranked
    test: sp.csr_matrix  # users x items: the held-out targets

    @classmethod
    def of(cls, m: Matrices, max_users: int = 0, seed: int = 0) -> HeldOut:
        """The held-out users of ``m``: everyone with a test item, or a seeded sample of at most ``max_users``
        of them (``evaluate.max_users``; 0 = all)."""
        users = target_users(m.test, max_users, seed)
        history, exclude = m.held_out(users)
        return cls(users, history, exclude, m.test[users])

    def score(self, scorer: Scorer, ks: Sequence[int]) -> UserMetrics:
        """Per-user metrics at ``ks`` of the model behind ``scorer``, ranked over the whole catalogue."""
        return scored_metrics(scorer, self.history, self.exclude, self.test, ks)


def recommender_scorer(model: keras.Model, n_items: int) -> Scorer:
    """Score histories of ``n_items`` columns with a recommender, whatever the items it was trained on.

    Items the model does not know (indexed after it was trained) score -inf and are never ranked; items it
    knows beyond ``n_items`` (a later date's model judged on an earlier date) are dropped.
    """
    from recsys.models.recommender import score_histories

    return lambda histories: score_histories(model, histories)[:, :n_items]


def sparse_segment(train: sp.csr_matrix, users: np.ndarray, share: float) -> np.ndarray:
    """The ``share`` of ``users`` with the shortest train history (at least one user; ties by index).

    Returns:
        Positions into ``users`` (not user indices), sorted.
    """
    if not 0 < share <= 1:
        raise ValueError(f"evaluate.sparse_share must lie in (0, 1], got {share}")
    if len(users) == 0:
        return np.array([], dtype=np.int64)
    lengths = np.diff(train.indptr)[users]
    size = max(1, int(round(share * len(users))))
    return np.sort(np.argsort(lengths, kind="stable")[:size])


def segment_metrics(per_user: UserMetrics, sparse: np.ndarray) -> dict[str, dict[str, float | int]]:
    """One model's ranking metrics for all its evaluated rows and for the sparse rows among them."""
    return {"all": per_user.summary(), "sparse": per_user.summary(sparse)}


def score_models(scorers: Mapping[str, Scorer], held: HeldOut, ks: Sequence[int],
                 sparse: np.ndarray) -> tuple[dict[str, dict[str, dict[str, float | int]]], dict[str, UserMetrics]]:
    """Score every model on the held-out users.

    Returns:
        ``(results, per_user)``: by model name, its :func:`segment_metrics` and its :class:`UserMetrics`.
    """
    primary = f"ndcg@{min(ks)}"
    results, per_user = {}, {}
    for name, scorer in scorers.items():
        per_user[name] = held.score(scorer, ks)
        results[name] = segment_metrics(per_user[name], sparse)
        log.info("%s: %s %.4f (all), %.4f (sparse)", name, primary, results[name]["all"][primary],
                 results[name]["sparse"][primary])
    return results, per_user

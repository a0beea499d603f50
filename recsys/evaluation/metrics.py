"""Full-ranking top-K metrics over the whole catalogue, seen items removed (no sampled metrics)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

METRICS = ("recall", "ndcg", "precision", "map", "hitrate")


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the ``k`` highest scores of each row, best first.

    Uses ``argpartition`` so a row costs O(n_items + k log k) instead of a full sort; ties are broken
    by the lower item index so the result does not depend on the partition's internal order.
    """
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part.sort(axis=1)  # lower index first among equals, then a stable sort by score keeps that order
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def target_users(target_csr: sp.csr_matrix, max_users: int = 0, seed: int = 0) -> np.ndarray:
    """The rows of ``target_csr`` with a target, ascending; with ``max_users`` (0 = all) a seeded sample of at
    most that many of them (a large night ranks a sample: every user's full ranking would dominate it)."""
    rows = np.flatnonzero(np.diff(sp.csr_matrix(target_csr).indptr) > 0)
    if max_users and len(rows) > max_users:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_users, replace=False))
    return rows


def only_rows(matrix: sp.csr_matrix, rows: np.ndarray) -> sp.csr_matrix:
    """``matrix`` with every row but ``rows`` emptied (same shape)."""
    keep = np.zeros(matrix.shape[0], dtype=bool)
    keep[rows] = True
    out = sp.csr_matrix(matrix, copy=True)
    out.data[~np.repeat(keep, np.diff(out.indptr))] = 0
    out.eliminate_zeros()
    return out


def _mask_seen(scores: np.ndarray, seen: sp.csr_matrix) -> np.ndarray:
    """A float copy of ``scores`` with the seen entries set to -inf."""
    masked = np.array(scores, dtype=np.float32, copy=True)
    coo = seen.tocoo()
    masked[coo.row, coo.col] = -np.inf
    return masked


@dataclass
class UserMetrics:
    """Per-user ranking metrics of one model, from which any subset of its users can be summarised."""

    rows: np.ndarray  # the evaluated rows (those with a target), ascending
    values: dict[str, np.ndarray]  # metric@K -> one value per row of ``rows``
    ranked: np.ndarray  # rows x max K: each row's top items, best first
    n_items: int

    def summary(self, subset: np.ndarray | None = None) -> dict[str, float | int]:
        """Means over the rows (or over those of ``subset`` that were evaluated), coverage and user count.

        Returns:
            ``{"recall@10": ..., "ndcg@10": ..., ..., "coverage": ..., "users": n}``; metrics are 0.0
            when no user has a target.
        """
        keep = np.ones(len(self.rows), dtype=bool) if subset is None else np.isin(self.rows, subset)
        n_users = int(keep.sum())
        out: dict[str, float | int] = {
            name: (float(values[keep].mean()) if n_users else 0.0) for name, values in self.values.items()
        }
        out["coverage"] = float(len(np.unique(self.ranked[keep])) / self.n_items) if n_users else 0.0
        out["users"] = n_users
        return out


def user_metrics(
    scores: np.ndarray,
    seen_csr: sp.csr_matrix,
    target_csr: sp.csr_matrix,
    ks: Sequence[int],
    users: np.ndarray | None = None,
    batch_size: int = 2048,
) -> UserMetrics:
    """Recall, NDCG, precision, MAP and hit rate at each K for every user with a target.

    Every unseen item of the catalogue is ranked (full ranking). Relevance is binary: an item is
    relevant when it has a stored entry in ``target_csr``. Definitions, with T a user's targets and
    hits@K the targets among the top K:

    * recall@K = hits@K / min(K, |T|) (the truncated recall of Liang et al. 2018, so 1.0 is reachable)
    * ndcg@K = DCG@K / ideal DCG@K, with gains 1 / log2(rank + 1)
    * precision@K = hits@K / K
    * map@K = sum_{i<=K} precision@i * rel_i / min(K, |T|)
    * hitrate@K = 1 when the user has at least one hit
    * coverage (of a summary) = share of the catalogue in at least one user's top max(ks)

    Args:
        scores: users x items scores; rows are the users of ``seen_csr``/``target_csr``.
        seen_csr: users x items; stored entries are excluded from the ranking (training history).
        target_csr: users x items; stored entries are the held-out relevant items.
        ks: cut-offs.
        users: row indices to evaluate (default all rows); rows without any target are skipped.
        batch_size: users ranked at once, to bound memory.

    Raises:
        ValueError: the three matrices disagree in shape or ``ks`` is empty.
    """
    if scores.shape != seen_csr.shape or scores.shape != target_csr.shape:
        raise ValueError(
            f"shapes differ: scores {scores.shape}, seen {seen_csr.shape}, targets {target_csr.shape}"
        )
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks must be positive cut-offs, got {ks}")
    seen_csr = sp.csr_matrix(seen_csr)
    target_csr = sp.csr_matrix(target_csr)
    n_items = scores.shape[1]
    rows = np.arange(scores.shape[0]) if users is None else np.unique(np.asarray(users, dtype=np.int64))
    rows = rows[np.diff(target_csr.indptr)[rows] > 0]
    k_max = min(ks[-1], n_items)
    parts: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for k in ks for m in METRICS}
    ranked_parts = []
    discounts = 1.0 / np.log2(np.arange(2, k_max + 2))
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        ranked = top_k(_mask_seen(scores[batch], seen_csr[batch]), k_max)
        ranked_parts.append(ranked)
        targets = target_csr[batch]
        n_targets = np.diff(targets.indptr)
        # membership of (row, item) pairs via flat keys: memory stays O(entries), never users x items
        target_keys = np.repeat(np.arange(len(batch), dtype=np.int64), n_targets) * n_items + targets.indices
        ranked_keys = np.arange(len(batch), dtype=np.int64)[:, None] * n_items + ranked
        hits = np.isin(ranked_keys, target_keys)
        cum_hits = np.cumsum(hits, axis=1)
        dcg = np.cumsum(hits * discounts, axis=1)
        ideal = np.cumsum(discounts)
        # precision at each rank where the item is relevant, summed up to K
        ap_terms = np.cumsum(hits * cum_hits / np.arange(1, k_max + 1), axis=1)
        for k in ks:
            kk = min(k, k_max)
            hits_k = cum_hits[:, kk - 1]
            denom = np.minimum(kk, n_targets)
            parts[f"recall@{k}"].append(hits_k / denom)
            parts[f"ndcg@{k}"].append(dcg[:, kk - 1] / ideal[denom - 1])
            parts[f"precision@{k}"].append(hits_k / k)
            parts[f"map@{k}"].append(ap_terms[:, kk - 1] / denom)
            parts[f"hitrate@{k}"].append((hits_k > 0).astype(np.float64))
    values = {name: np.concatenate(p) if p else np.zeros(0) for name, p in parts.items()}
    ranked_all = np.concatenate(ranked_parts) if ranked_parts else np.zeros((0, k_max), dtype=np.int64)
    return UserMetrics(rows=rows, values=values, ranked=ranked_all, n_items=n_items)


def scored_metrics(
    scorer: Callable[[sp.csr_matrix], np.ndarray],
    history_csr: sp.csr_matrix,
    seen_csr: sp.csr_matrix,
    target_csr: sp.csr_matrix,
    ks: Sequence[int],
    batch_size: int = 2048,
) -> UserMetrics:
    """:func:`user_metrics` of ``scorer``'s scores of ``history_csr``, scored ``batch_size`` users at a time.

    Only one batch's users x items scores exist at once, so memory stays bounded on a large catalogue
    (100,000 users x 200,000 items would be 80 GB of float32 scores in one piece). ``scorer`` may read
    other columns than it scores (a view of some items ranks them from the whole history), so only the
    rows of ``history_csr`` must match. Rows without a target are never scored. The result is the same as
    scoring every row at once.
    """
    seen_csr, target_csr = sp.csr_matrix(seen_csr), sp.csr_matrix(target_csr)
    history_csr = sp.csr_matrix(history_csr)
    if history_csr.shape[0] != seen_csr.shape[0] or seen_csr.shape != target_csr.shape:
        raise ValueError(f"shapes differ: history {history_csr.shape} (rows), seen {seen_csr.shape}, "
                         f"targets {target_csr.shape}")
    ks = sorted({int(k) for k in ks})
    rows = np.flatnonzero(np.diff(target_csr.indptr) > 0)
    parts = []
    for start in range(0, len(rows), batch_size):
        batch = rows[start:start + batch_size]
        part = user_metrics(scorer(history_csr[batch]), seen_csr[batch], target_csr[batch], ks)
        parts.append(UserMetrics(batch[part.rows], part.values, part.ranked, part.n_items))
    if not parts:
        return user_metrics(np.zeros((0, seen_csr.shape[1]), np.float32), seen_csr[:0], target_csr[:0], ks)
    return UserMetrics(
        rows=np.concatenate([p.rows for p in parts]),
        values={name: np.concatenate([p.values[name] for p in parts]) for name in parts[0].values},
        ranked=np.concatenate([p.ranked for p in parts]),
        n_items=parts[0].n_items,
    )

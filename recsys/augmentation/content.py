"""The content generator: which real users would interact with a cold item, learnt from warm items' text and users.

Two methods (``content.method``), both learnt on the warm items (train interactions, an embedding, not a target):

- ``ridge`` (default): a ridge regression from an item's text embedding to its column of the user-item matrix,
  ``W = (V'V + lambda I)^-1 V'X'`` over the warm items (``V`` their embeddings, ``X`` users x warm items, 0/1,
  ``lambda = content.ridge_lambda``); a cold item's confidence for user ``u`` is ``v_c W[:, u]`` clipped to 0..1,
  the predicted probability that ``u`` has it. ``W`` is dim x users: never an items x items matrix.
- ``neighbours``: a cold item ``c`` borrows the users of its ``content.neighbours`` nearest warm items in
  embedding space (cosine; the vectors are L2-normalised)::

      confidence(u, c) = sum_j w_cj X[u, j] / sum_j w_cj,    w_cj = max(sim(c, j), 0) ** content.sharpness

  over the neighbours ``j`` of ``c``: the similarity-weighted share of ``c``'s neighbours that ``u`` has.

Pairs below ``content.confidence_threshold`` are dropped, and each item keeps its ``content.per_item_cap`` most
confident users. Scores are computed one block of cold items at a time.

:func:`content_report` gives the quality figures, including the precision and recall of the pairs on warm
items held out for the purpose: their train interactions are hidden, they are synthesised like cold items and
the pairs are compared with their real train users. Why this method and its figures: docs/augmentation.md and
docs/decisions/0005-content-generator.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.core.columns import CONFIDENCE, ITEM_IDX, USER_IDX
from recsys.core.matrices import binary

log = logging.getLogger(__name__)

# similarities held at once: a block of cold items x the warm items (float32), about 128 MB
_BLOCK_CELLS = 1 << 25


def warm_items(train: sp.csr_matrix, has: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The items the generator learns from: at least one train interaction, an embedding, not a target."""
    counts = np.bincount(sp.csr_matrix(train).indices, minlength=train.shape[1])
    warm = (counts > 0) & np.asarray(has, bool)
    warm[np.asarray(targets, np.int64)] = False
    return np.flatnonzero(warm)


def neighbour_weights(
    vectors: np.ndarray, cold: np.ndarray, warm: np.ndarray, k: int, sharpness: float
) -> sp.csr_matrix:
    """Each cold item's ``k`` nearest warm items and their weights: warm x cold, columns summing to 1.

    A column whose neighbours are all at similarity <= 0 stays empty.
    """
    k = min(int(k), len(warm))
    rows, cols, vals = [], [], []
    warm_vectors = vectors[warm]
    block = max(1, _BLOCK_CELLS // max(len(warm), 1))
    for start in range(0, len(cold), block):
        sims = vectors[cold[start:start + block]] @ warm_vectors.T  # block x warm
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(warm) else np.tile(np.arange(k), (len(sims), 1))
        weights = np.maximum(np.take_along_axis(sims, top, axis=1), 0.0) ** float(sharpness)
        totals = weights.sum(axis=1, keepdims=True)
        weights = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
        rows.append(top.ravel())
        cols.append(np.repeat(np.arange(start, start + len(sims)), k))
        vals.append(weights.ravel())
    if not rows:
        return sp.csr_matrix((len(warm), len(cold)), dtype=np.float32)
    matrix = sp.csr_matrix((np.concatenate(vals).astype(np.float32), (np.concatenate(rows), np.concatenate(cols))),
                           shape=(len(warm), len(cold)))
    matrix.eliminate_zeros()
    return matrix


def ridge_map(x: sp.csr_matrix, vectors: np.ndarray, warm: np.ndarray, lam: float) -> np.ndarray:
    """The ridge regression from a warm item's embedding to its users: dim x users, ``(V'V + lam I)^-1 V'X'``."""
    v = vectors[warm].astype(np.float64)
    gram = v.T @ v + float(lam) * np.eye(v.shape[1])
    targets = np.asarray(x[:, warm] @ v).T  # dim x users, V'X' without densifying X
    return np.linalg.solve(gram, targets).astype(np.float32)


def ridge_scores(
    x: sp.csr_matrix, vectors: np.ndarray, cold: np.ndarray, warm: np.ndarray, lam: float, threshold: float, cap: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`ridge_map`'s scores of the cold items, clipped to 0..1, filtered as :func:`top_per_column`.

    Returns ``(users, cold positions, confidences)``.
    """
    weights = ridge_map(x, vectors, warm, lam)
    block = max(1, _BLOCK_CELLS // max(x.shape[0], 1))
    parts = []
    for start in range(0, len(cold), block):
        scores = np.clip(vectors[cold[start:start + block]] @ weights, 0.0, 1.0)  # block x users
        users, columns, values = top_per_column(sp.coo_matrix(scores.T), max(threshold, 1e-12), cap)
        parts.append((users, columns + start, values))
    return tuple(np.concatenate([p[i] for p in parts]) for i in range(3))  # type: ignore[return-value]


def top_per_column(scores: sp.coo_matrix, threshold: float, cap: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries of each column scored at least ``threshold``, at most ``cap`` per column, highest first.

    Ties are broken by the lower row. Returns ``(rows, cols, values)``.
    """
    keep = scores.data >= threshold
    rows, cols, values = scores.row[keep], scores.col[keep], scores.data[keep]
    order = np.lexsort((rows, -values, cols))
    rows, cols, values = rows[order], cols[order], values[order]
    starts = np.flatnonzero(np.r_[True, cols[1:] != cols[:-1]]) if len(cols) else np.zeros(0, np.int64)
    rank = np.arange(len(cols)) - np.repeat(starts, np.diff(np.r_[starts, len(cols)]))
    keep = rank < cap
    return rows[keep], cols[keep], values[keep]


def _no_rows() -> pd.DataFrame:
    return pd.DataFrame({USER_IDX: np.zeros(0, np.int32), ITEM_IDX: np.zeros(0, np.int32),
                         CONFIDENCE: np.zeros(0, np.float32)})


def content_positives(
    train: sp.csr_matrix, vectors: np.ndarray, has: np.ndarray, targets: np.ndarray, config: Mapping[str, Any]
) -> pd.DataFrame:
    """Synthesise interactions of real users with the ``targets`` (cold items) from their text embeddings.

    Args:
        train: users x items train interactions (any positive weight counts as an interaction).
        vectors: items x dim L2-normalised text embeddings (rows of items without one are ignored).
        has: bool per item, whether it has an embedding.
        targets: the item indexes to synthesise interactions for; targets without an embedding get none.
        config: the ``content`` config section (``method``, ``ridge_lambda``, ``neighbours``, ``sharpness``,
            ``per_item_cap``, ``confidence_threshold``).

    Returns:
        ``user_idx`` (int32), ``item_idx`` (int32), ``confidence`` (float32 in 0..1), sorted by user then
        item; never a pair that is in ``train``.

    Raises:
        ValueError: the shapes of ``train``, ``vectors`` and ``has`` disagree.
    """
    n_users, n_items = train.shape
    vectors, has = np.asarray(vectors, np.float32), np.asarray(has, bool)
    if len(vectors) != n_items or len(has) != n_items:
        raise ValueError(f"content: {len(vectors)} vectors and {len(has)} flags for {n_items} items")
    empty = _no_rows()
    targets = np.unique(np.asarray(targets, np.int64))
    cold = targets[has[targets]] if len(targets) else targets
    cap = int(config["per_item_cap"])
    x = binary(train)
    warm = warm_items(x, has, targets)
    if vectors.shape[1] == 0 or len(cold) == 0 or len(warm) == 0 or cap == 0:
        return empty
    threshold = float(config["confidence_threshold"])
    if config["method"] == "ridge":
        users, columns, values = ridge_scores(x, vectors, cold, warm, float(config["ridge_lambda"]), threshold, cap)
    else:
        weights = neighbour_weights(vectors, cold, warm, int(config["neighbours"]), float(config["sharpness"]))
        scores = (x[:, warm] @ weights).tocoo()  # users x cold
        users, columns, values = top_per_column(scores, threshold, cap)
    items = cold[columns]
    seen = np.asarray(x[users, items]).ravel() > 0 if len(users) else np.zeros(0, bool)
    users, items, values = users[~seen], items[~seen], values[~seen]
    order = np.lexsort((items, users))
    return pd.DataFrame({
        USER_IDX: users[order].astype(np.int32), ITEM_IDX: items[order].astype(np.int32),
        CONFIDENCE: np.clip(values[order], 0.0, 1.0).astype(np.float32),
    })


def held_out_items(train: sp.csr_matrix, has: np.ndarray, targets: np.ndarray, share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of the warm items (:func:`warm_items`), sorted: the validation's simulated cold items."""
    warm = warm_items(binary(train), has, targets)
    n = int(round(share * len(warm)))
    return np.sort(np.random.default_rng(seed).choice(warm, size=n, replace=False)) if n else warm[:0]


def pair_precision(train: sp.csr_matrix, positives: pd.DataFrame, items: np.ndarray) -> dict[str, float | int]:
    """Precision and recall of synthesised pairs of ``items`` against their real ``train`` users.

    Precision: the share of the pairs that are train interactions; recall: the share of the items' train
    interactions that are pairs. 0.0 when there is nothing to divide by.
    """
    x = binary(train)
    real = int(x[:, items].nnz)
    hits = int((np.asarray(x[positives[USER_IDX].to_numpy(), positives[ITEM_IDX].to_numpy()]).ravel() > 0).sum()) \
        if len(positives) else 0
    rows = len(positives)
    return {"pairs": rows, "hits": hits, "real_interactions": real,
            "precision": hits / rows if rows else 0.0, "recall": hits / real if real else 0.0}


def _hidden(train: sp.csr_matrix, items: np.ndarray) -> sp.csr_matrix:
    """``train`` with every interaction of ``items`` removed."""
    mask = np.ones(train.shape[1], np.float32)
    mask[items] = 0.0
    out = sp.csr_matrix(train @ sp.diags(mask), dtype=np.float32)
    out.eliminate_zeros()
    return out


def _distribution(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    quantiles = np.quantile(values, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"mean": float(values.mean()), **{name: float(q) for name, q in
                                             zip(("min", "p10", "p50", "p90", "max"), quantiles, strict=True)}}


def content_report(
    train: sp.csr_matrix, vectors: np.ndarray, has: np.ndarray, targets: np.ndarray, positives: pd.DataFrame,
    config: Mapping[str, Any], seed: int,
) -> dict[str, Any]:
    """The quality figures of one run of :func:`content_positives` (``quality.json["content"]``).

    Args:
        train, vectors, has, targets, config: as given to :func:`content_positives`.
        positives: what it returned.
        seed: the run's seed; draws the held-out warm items.

    Returns:
        ``targets``, ``targets_with_embedding``, ``items_with_rows``, ``users_with_rows``, ``rows``,
        ``confidence`` (mean and quantiles) and ``validation``: on a seeded ``content.validation_share`` of
        the warm items, hidden from train and synthesised as cold items, the precision and recall of the pairs
        against their real train users, beside a baseline that gives each held-out item the same number of
        pairs with the most active users (what an item learns when content carries no information).
    """
    has = np.asarray(has, bool)
    targets = np.unique(np.asarray(targets, np.int64))
    report: dict[str, Any] = {
        "method": str(config["method"]), "dim": int(np.asarray(vectors).shape[1]),
        "targets": len(targets), "targets_with_embedding": int(has[targets].sum()) if len(targets) else 0,
        "items_with_rows": int(positives[ITEM_IDX].nunique()), "users_with_rows": int(positives[USER_IDX].nunique()),
        "rows": len(positives), "confidence": _distribution(positives[CONFIDENCE].to_numpy(np.float64)),
    }
    held = held_out_items(train, has, targets, float(config["validation_share"]), seed)
    if len(held) == 0 or report["dim"] == 0:
        report["validation"] = {"held_out_items": len(held)}
        return report
    pairs = content_positives(_hidden(train, held), vectors, has, np.union1d(targets, held), config)
    pairs = pairs[np.isin(pairs[ITEM_IDX].to_numpy(), held)]
    figures = pair_precision(train, pairs, held)
    baseline = pair_precision(train, active_user_pairs(_hidden(train, held), pairs), held)
    report["validation"] = {
        "held_out_items": len(held), "items_with_rows": int(pairs[ITEM_IDX].nunique()), **figures,
        "baseline_active_users": {k: baseline[k] for k in ("precision", "recall")},
    }
    return report


def active_user_pairs(train: sp.csr_matrix, pairs: pd.DataFrame) -> pd.DataFrame:
    """As many pairs per item as ``pairs`` has, with the users of most train interactions (lower index first)."""
    activity = np.diff(sp.csr_matrix(train).indptr)
    ranked = np.lexsort((np.arange(len(activity)), -activity))
    items, counts = np.unique(pairs[ITEM_IDX].to_numpy(), return_counts=True)
    return pd.DataFrame({USER_IDX: np.concatenate([ranked[:c] for c in counts]) if len(counts) else np.zeros(0, int),
                         ITEM_IDX: np.repeat(items, counts)})


def cold_items(train: sp.csr_matrix, has: np.ndarray, max_interactions: int) -> np.ndarray:
    """The content generator's targets: items with fewer than ``max_interactions`` train interactions (none
    included) that have an embedding."""
    counts = np.bincount(binary(train).indices, minlength=train.shape[1])
    return np.flatnonzero((counts < int(max_interactions)) & np.asarray(has, bool))


def generate_content(
    train: sp.csr_matrix, vectors: np.ndarray, has: np.ndarray, config: Mapping[str, Any], seed: int
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The augment stage's content step: positives of the cold items (:func:`cold_items`) and their report.

    With ``content.enabled`` false, or without embeddings, no rows, and the report says why.
    """
    has = np.asarray(has, bool)
    empty = _no_rows()
    if not config["enabled"]:
        return empty, {"enabled": False}
    if np.asarray(vectors).shape[1] == 0 or not has.any():
        log.warning("content: no item embeddings (embed partition missing or empty): no content positives")
        return empty, {"enabled": True, "rows": 0, "reason": "no item embeddings"}
    targets = cold_items(train, has, int(config["max_interactions"]))
    positives = content_positives(train, vectors, has, targets, config)
    report = {"enabled": True, "items_with_embedding": int(has.sum()),
              **content_report(train, vectors, has, targets, positives, config, seed)}
    log.info("content: %d rows for %d of %d cold items; validation precision %s", len(positives),
             report["items_with_rows"], len(targets), report["validation"].get("precision"))
    return positives, report

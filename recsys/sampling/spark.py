"""Uniform and popularity negatives drawn in Spark, for interaction tables too large for one machine."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys.core.columns import ITEM_IDX, USER_IDX
from recsys.sampling.seen import row_users

log = logging.getLogger(__name__)

NEED = "need"  # negatives still wanted for the user
DRAW = "draw"  # a candidate's number among its user's draws of one round; earlier draws are kept first
_U, _BUCKET, _LO, _HI, _RANK = "u", "bucket", "lo", "hi", "rank"
# Guide-table buckets per item, as in the NumPy popularity sampler: most buckets lie inside one item.
_BUCKETS_PER_ITEM = 16
# Draw rounds before giving up; round r draws 2**r times the missing rows of the still-short users,
# so a user who has seen all but a sliver of the sampler's mass is still served.
MAX_ROUNDS = 16
# Extra draws per user and round on top of the oversampled need (cheap insurance for small needs).
_SLACK = 4


def bucket_table(weights: np.ndarray) -> tuple[pd.DataFrame, int]:
    """The inverse CDF of ``weights`` as an equi-join table ``(bucket, item_idx, lo, hi)``.

    The unit interval is cut into ``n_buckets`` (a power of two) equal buckets; every item with a
    positive weight is listed in each bucket its CDF step ``[lo, hi)`` overlaps. A draw ``u`` joins
    bucket ``floor(u * n_buckets)`` and keeps the one row with ``lo <= u < hi``: exactly the inverse
    CDF, through an equi-join Spark can broadcast instead of a range join.

    Returns:
        The table and ``n_buckets``.
    """
    weights = np.asarray(weights, dtype=np.float64)
    cdf = np.cumsum(weights)
    cdf = cdf / cdf[-1]
    lo = np.concatenate([[0.0], cdf[:-1]])
    n_buckets = 1 << int(np.ceil(np.log2(_BUCKETS_PER_ITEM * weights.size)))
    items = np.flatnonzero(weights > 0)
    first = np.floor(lo[items] * n_buckets).astype(np.int64)
    last = np.minimum(np.floor(cdf[items] * n_buckets).astype(np.int64), n_buckets - 1)
    spans = last - first + 1
    row = np.repeat(np.arange(items.size), spans)
    offset = np.arange(row.size) - np.repeat(np.cumsum(spans) - spans, spans)
    table = pd.DataFrame({
        _BUCKET: first[row] + offset,
        ITEM_IDX: items[row].astype(np.int32),
        _LO: lo[items][row],
        _HI: cdf[items][row],
    })
    return table, n_buckets


def draw_candidates(
    requests: DataFrame, factor: int, seed: int, n_items: int, buckets: DataFrame | None, n_buckets: int
) -> DataFrame:
    """``factor * need + slack`` candidate items per request row ``(user_idx, need)``.

    Args:
        requests: one row per user with the number of negatives still needed.
        factor: oversampling factor of this round.
        seed: seed of Spark's ``rand`` (deterministic for a given partitioning of ``requests``).
        n_items: catalogue size; without ``buckets`` items are uniform on ``[0, n_items)``.
        buckets: a :func:`bucket_table` (popularity); ``None`` for uniform draws.
        n_buckets: the bucket count of ``buckets``.

    Returns:
        ``(user_idx, need, draw, item_idx)``.
    """
    count = (F.col(NEED) * factor + _SLACK).cast("int")
    draws = requests.withColumn(DRAW, F.explode(F.sequence(F.lit(1), count))).withColumn(_U, F.rand(seed))
    if buckets is None:
        item = F.least(F.floor(F.col(_U) * n_items), F.lit(n_items - 1)).cast("int")
        return draws.withColumn(ITEM_IDX, item).select(USER_IDX, NEED, DRAW, ITEM_IDX)
    draws = draws.withColumn(_BUCKET, F.floor(F.col(_U) * n_buckets).cast("long"))
    joined = draws.join(F.broadcast(buckets), _BUCKET)
    hit = (F.col(_LO) <= F.col(_U)) & (F.col(_U) < F.col(_HI))
    return joined.where(hit).select(USER_IDX, NEED, DRAW, F.col(ITEM_IDX).cast("int").alias(ITEM_IDX))


def keep_unseen(candidates: DataFrame, seen: DataFrame) -> DataFrame:
    """Each user's first ``need`` candidates that are not in ``seen`` ``(user_idx, item_idx)``.

    Returns:
        ``(user_idx, draw, item_idx)``, at most ``need`` rows per user, none of them a seen pair.
    """
    fresh = candidates.join(seen, [USER_IDX, ITEM_IDX], "left_anti")
    rank = F.row_number().over(Window.partitionBy(USER_IDX).orderBy(DRAW))
    return fresh.withColumn(_RANK, rank).where(F.col(_RANK) <= F.col(NEED)).select(USER_IDX, DRAW, ITEM_IDX)


def seen_pairs(spark: SparkSession, users: np.ndarray, items: np.ndarray) -> DataFrame:
    """A ``(user_idx, item_idx)`` int DataFrame of the pairs a sampler must avoid."""
    frame = pd.DataFrame({USER_IDX: np.asarray(users, np.int32), ITEM_IDX: np.asarray(items, np.int32)})
    return spark.createDataFrame(frame)


class SparkNegativeSampler:
    """Draws unseen negatives in Spark: candidates in bulk, anti-joined with the seen pairs, topped up.

    Uniform over the catalogue when ``weights`` is ``None``, otherwise ``p ~ weights`` (items with a
    zero weight are never drawn), conditioned on being unseen: the same distribution as the NumPy
    samplers' rejection loop. No Python UDF runs; only the per-user request counts and the chosen
    negatives cross between the driver and Spark.
    """

    def __init__(self, spark: SparkSession, seen: DataFrame, n_items: int, weights: np.ndarray | None = None) -> None:
        """Build the sampler.

        Args:
            spark: the session.
            seen: ``(user_idx, item_idx)`` pairs never to return (e.g. :func:`seen_pairs`).
            n_items: catalogue size.
            weights: per item, the unnormalised draw weight (popularity); ``None`` for uniform.
        """
        self.spark = spark
        self.seen = seen.select(F.col(USER_IDX).cast("int"), F.col(ITEM_IDX).cast("int"))
        self.n_items = n_items
        self.buckets: DataFrame | None = None
        self.n_buckets = 0
        if weights is not None:
            table, self.n_buckets = bucket_table(weights)
            self.buckets = spark.createDataFrame(table)

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One unseen int32 item per entry of ``users`` (the common sampler signature).

        Raises:
            ValueError: a user still lacks negatives after ``MAX_ROUNDS`` rounds (they have seen
                every item the sampler can draw, or nearly).
        """
        users = np.asarray(users, dtype=np.int64)
        out = np.empty(users.size, dtype=np.int32)
        if users.size == 0:
            return out
        distinct, need = np.unique(users, return_counts=True)
        remaining = pd.DataFrame({USER_IDX: distinct.astype(np.int32), NEED: need.astype(np.int32)})
        seed = int(rng.integers(1 << 62))
        pieces = []
        for r in range(MAX_ROUNDS):
            if remaining.empty:
                break
            requests = self.spark.createDataFrame(remaining)
            candidates = draw_candidates(requests, 1 << r, seed + r, self.n_items, self.buckets, self.n_buckets)
            kept = keep_unseen(candidates, self.seen).toPandas()
            kept["round"] = r
            pieces.append(kept)
            got = kept.groupby(USER_IDX).size()
            remaining[NEED] -= remaining[USER_IDX].map(got).fillna(0).astype(np.int32)
            remaining = remaining[remaining[NEED] > 0].reset_index(drop=True)
            log.debug("round %d: %d rows kept, %d users still short", r, len(kept), len(remaining))
        if not remaining.empty:
            user = int(remaining[USER_IDX].iloc[0])
            raise ValueError(
                f"user {user}: no unseen item drawn in {MAX_ROUNDS} rounds; the user has seen (nearly) every "
                "item the sampler can draw"
            )
        chosen = pd.concat(pieces).sort_values([USER_IDX, "round", DRAW], kind="stable")
        # rows sorted stably by user line up with the chosen items sorted by user
        out[np.argsort(users, kind="stable")] = chosen[ITEM_IDX].to_numpy(np.int32)
        return out


@contextmanager
def spark_negative_samplers(
    spark: SparkSession, history: sp.csr_matrix, popularity: np.ndarray
) -> Iterator[tuple[SparkNegativeSampler, SparkNegativeSampler]]:
    """A uniform and a popularity sampler that avoid ``history``'s pairs, cached in Spark while in use.

    Args:
        spark: the session.
        history: users x items CSR of the pairs never to draw.
        popularity: per item, the popularity sampler's unnormalised weight.

    Yields:
        ``(uniform, popular)``; the cached pairs are released on leaving the block.
    """
    pairs = seen_pairs(spark, row_users(history), history.indices).cache()
    try:
        n_items = history.shape[1]
        yield SparkNegativeSampler(spark, pairs, n_items), SparkNegativeSampler(spark, pairs, n_items, popularity)
    finally:
        pairs.unpersist()

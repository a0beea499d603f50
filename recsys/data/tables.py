"""A date's sparse interaction tables: the window's pairs, k-core, stable indexes, per-user split, CSR, stats.

The tables of ``ds`` hold the positives (label 1) of the committed clean partitions of the window
``[ds - window_days + 1, ds]``, one row per (user, item) with the largest weight and the latest
timestamp, after a k-core filter (``tables.min_user_core`` / ``tables.min_item_core``, repeated until
nothing changes or ``tables.core_rounds``; 1 turns a side off). The k-core shapes the training data
only: every interaction of the window, of any label and of any user, is a user's history (the
``history`` and ``seen`` matrices), so every user with an interaction is served and never recommended
an item they already had. The rows quarantined as ``bot`` count as interactions without a positive
label there (valid events held out of training; see :func:`bot_rows`).

Spark reads the window and aggregates it to those pairs in one job; the pairs then come to the
driver as Arrow (the CSR export needs every interaction there anyway), where the k-core, the index
and the split run on integer arrays (numpy, pyarrow compute), far cheaper than a Spark job per
k-core round and per index or split step.

Stable indexes (``<lake>/index/users.parquet`` and ``items.parquet``, columns id and int64 idx) follow
one rule: **an id keeps the index it first got, forever; the index only grows.** A run gives the ids
of its tables that have no index yet the next free numbers, ``max + 1, max + 2, ...``, in the order of
(first timestamp of the id in the run's window, id). Every id with an interaction of any label in the
window gets an index, whether or not it passes the k-core. Then the items of the date's clean catalogue
(``catalogue/ds=<ds>/catalogue.parquet``, when there is one) that still have no index get the next
numbers, in id order (the ids' text, as the tie above): a catalogue item gets its index on the first
date it is in the catalogue, before its first interaction, and keeps it when the interactions come.
So a rerun of a date after nothing else ran gets the same numbers; a backfill of an earlier date
appends its unseen ids after everything already there and never renumbers. Index files are replaced
whole (temporary file, then ``os.replace``) under a lock file.

Written to ``tables/ds=<ds>/``:

* ``interactions/part-00000.parquet``: user_idx int32, item_idx int32, weight float32, ts timestamp,
  split string (train | valid | test), sorted by (user_idx, ts, item_idx).
* ``matrices.npz``: per-split CSR of weights, rows = every indexed user, columns = every indexed item
  (a catalogue item without interactions is an empty column),
  and the window's ``history`` (positives with their weight, k-core or not; interactions without a
  positive label with ``tables.nonpositive_weight``) and ``seen`` (every pair of the window, 1.0)
  (read it with ``recsys.core.matrices.load_matrices``).
* ``users.parquet`` / ``items.parquet``: the index as it was for this run (id, idx).
* ``_stats.json``: sizes, interactions per split, density, degree quantiles, item Gini, cold shares.

The split is per user and by time (``tables.split``): ``ratio`` puts the last
``max(1, round(n * test_ratio))`` interactions in test and the ``max(1, round(n * valid_ratio))``
before them in valid (a ratio of 0 gives none); ``leave_last_n`` puts the last ``leave_last_n`` in
test and as many before them in valid. Ties in time are ordered by item_idx. A user with fewer than
``tables.min_user_interactions`` positives, or who would be left with no train interaction, keeps all
in train. Without timestamps (``has_timestamp: false`` in ``raw/_source.json``) each user's order is a
seeded hash of (seed, user_idx, item_idx) instead of time.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from recsys.core.columns import (
    BOT,
    DS,
    ITEM_ID,
    ITEM_IDX,
    LABEL,
    RAW_TS_FORMAT,
    REASON,
    SPLIT,
    SPLITS,
    TS,
    USER_ID,
    USER_IDX,
    WEIGHT,
    require_columns,
)
from recsys.core.lake import CATALOGUE_FILE, ITEMS_FILE, USERS_FILE, Lake, window_start
from recsys.data.ids import trim_id_column

log = logging.getLogger(__name__)

SPLIT_METHODS = ("ratio", "leave_last_n")
QUANTILES = {"min": 0.0, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p90": 0.9, "p99": 0.99, "max": 1.0}
FIRST_TS = "first_ts"
SEEN_TS = "seen_ts"
POSITIVE = "positive"
INT32_MAX = np.iinfo(np.int32).max


def read_window(spark: SparkSession, lake: Lake, ds: str, window_days: int) -> tuple[DataFrame, list[str]]:
    """The interactions of the window ending on ``ds``, and its dates: the committed clean partitions, and
    the quarantined rows of users judged bots (:func:`bot_rows`).

    Raises:
        FileNotFoundError: the clean partition of ``ds`` itself is missing.
    """
    lake.require("clean", ds)
    first = window_start(ds, window_days)
    dates = [d for d in lake.dates("clean") if first <= d <= ds]
    frame = spark.read.parquet(*(str(lake.path("clean", d)) for d in dates))
    require_columns(frame.columns, (USER_ID, ITEM_ID, TS, LABEL, WEIGHT), f"clean partitions {dates[0]}..{ds}")
    quarantine = (spark.read.option("basePath", str(lake.path("quarantine")))
                  .parquet(*(str(lake.path("quarantine", d)) for d in dates)))
    quarantine = quarantine.withColumn(DS, F.col(DS).cast("string"))  # discovery reads ds=YYYY-MM-DD as a date
    return frame.select(USER_ID, ITEM_ID, TS, LABEL, WEIGHT).unionByName(bot_rows(quarantine)), dates


def bot_rows(quarantine: DataFrame) -> DataFrame:
    """The quarantined rows of users judged bots, as interactions without a positive label.

    A bot's rows are valid events held out of training, but they are still interactions of that user:
    a real user caught by the rule (a MovieLens user who rated 1,013 films in one day) must not be
    recommended those films back. Ids are trimmed as the clean job trims them; a row without a time
    (a source without timestamps) takes its date's midnight.
    """
    require_columns(quarantine.columns, (USER_ID, ITEM_ID, TS, REASON, DS), "bot_rows")
    ts = F.try_to_timestamp(F.trim(F.col(TS)), F.lit(RAW_TS_FORMAT))
    return quarantine.where(F.col(REASON) == BOT).select(
        trim_id_column(F.col(USER_ID)).alias(USER_ID),
        trim_id_column(F.col(ITEM_ID)).alias(ITEM_ID),
        F.coalesce(ts, F.to_timestamp(F.col(DS), "yyyy-MM-dd")).alias(TS),
        F.lit(0).cast("int").alias(LABEL),
        F.lit(0.0).alias(WEIGHT),
    )


def window_pairs(clean: DataFrame) -> DataFrame:
    """One row per (user_id, item_id) of the window, any label.

    Columns: ``positive`` (some row has label 1), ``weight`` (the largest weight of the label-1 rows), ``ts``
    and ``first_ts`` (the latest and first time of the label-1 rows; all three null without one) and
    ``seen_ts`` (the first time of any row: the order new ids are numbered in).
    """
    require_columns(clean.columns, (USER_ID, ITEM_ID, TS, LABEL, WEIGHT), "window_pairs")
    positive = F.col(LABEL) == 1
    return clean.groupBy(USER_ID, ITEM_ID).agg(
        F.max(positive).alias(POSITIVE),
        F.max(F.when(positive, F.col(WEIGHT))).alias(WEIGHT),
        F.max(F.when(positive, F.col(TS))).alias(TS),
        F.min(F.when(positive, F.col(TS))).alias(FIRST_TS),
        F.min(TS).alias(SEEN_TS),
    )


def k_core(users: np.ndarray, items: np.ndarray, min_user: int, min_item: int, rounds: int) -> np.ndarray:
    """Which pairs survive dropping users with fewer than ``min_user`` items and items with fewer than ``min_item`` users.

    Each round drops both at once, counting over the pairs the previous round kept; rounds repeat
    until none is dropped or ``rounds`` ran.

    Args:
        users, items: per pair, dense integer codes (0..n-1) of its user and item.
        min_user, min_item: the least items per user and users per item (1 turns a side off).
        rounds: the most rounds.

    Returns:
        A boolean mask over the pairs.
    """
    keep = np.ones(len(users), dtype=bool)
    if (min_user <= 1 and min_item <= 1) or not len(users):
        return keep
    size = len(users)
    for round_no in range(1, rounds + 1):
        user_degree = np.bincount(users[keep], minlength=int(users.max()) + 1)
        item_degree = np.bincount(items[keep], minlength=int(items.max()) + 1)
        keep &= (user_degree[users] >= min_user) & (item_degree[items] >= min_item)
        kept_size = int(keep.sum())
        log.info("k-core round %d: %d -> %d pairs", round_no, size, kept_size)
        done, size = kept_size == size, kept_size
        if done:
            break
    return keep


def first_seen(pairs: pa.Table, id_col: str) -> pa.Table:
    """Each id of ``id_col`` with its earliest ``seen_ts`` in ``pairs`` (as ``first_ts``)."""
    return pairs.group_by(id_col).aggregate([(SEEN_TS, "min")]).rename_columns([id_col, FIRST_TS])


def extend_index(index: pa.Table, unseen: pa.Table, id_col: str, idx_col: str) -> pa.Table:
    """Append ``unseen`` ids (id_col, first_ts) to ``index`` as max + 1, ... in (first_ts, id) order."""
    order = pc.sort_indices(unseen, sort_keys=[(FIRST_TS, "ascending"), (id_col, "ascending")])
    ids = unseen.column(id_col).take(order).cast(pa.string())
    start = len(index)  # indexes are 0..n-1 (checked by read_index), so max + 1 == n
    new = pa.table({id_col: ids, idx_col: pa.array(np.arange(start, start + len(ids), dtype=np.int64))})
    # one chunk: the file written from it must not depend on how the rows were put together
    return pa.concat_tables([index.select([id_col, idx_col]), new]).combine_chunks()


def index_path(lake: Lake, id_col: str) -> Path:
    """``<lake>/index/users.parquet`` or ``items.parquet``."""
    return lake.path("index") / (USERS_FILE if id_col == USER_ID else ITEMS_FILE)


def read_index(path: Path, id_col: str, idx_col: str) -> pa.Table:
    """A stable index file, or an empty one when it does not exist yet.

    Raises:
        ValueError: the file's ids repeat or its indexes are not exactly 0..n-1.
    """
    if not path.exists():
        return _index_table([], [], id_col, idx_col)
    table = pq.read_table(path, columns=[id_col, idx_col])
    table = _index_table(table.column(id_col), table.column(idx_col), id_col, idx_col)
    if pc.count_distinct(table.column(id_col)).as_py() != len(table):
        raise ValueError(f"index {path}: {id_col} repeats")
    if not np.array_equal(table.column(idx_col).to_numpy(), np.arange(len(table))):
        raise ValueError(f"index {path}: {idx_col} must be 0..{len(table) - 1} in order")
    return table


def _index_table(ids: Any, idxs: Any, id_col: str, idx_col: str) -> pa.Table:
    return pa.table({id_col: pa.array(ids, pa.string()), idx_col: pa.array(idxs, pa.int64())})


@contextlib.contextmanager
def index_lock(lake: Lake) -> Iterator[None]:
    """Hold the index lock, so two runs (say a backfill and tonight's) never number ids at once."""
    folder = lake.path("index")
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def spark_xxhash64(seed: int, *columns: np.ndarray) -> np.ndarray:
    """Spark's ``xxhash64(seed, *columns)`` of int32 values, vectorised: the same int64 Spark returns.

    Spark hashes each value as a 4-byte int (``XXH64.hashInt``), chaining from its default seed 42.
    """
    p1, p2, p3, p5 = (np.uint64(x) for x in (0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9,
                                             0x27D4EB2F165667C5))
    n = len(columns[0]) if columns else 1
    state = np.full(n, 42, dtype=np.uint64)
    for value in (np.full(n, seed, dtype=np.int64), *(np.asarray(c, dtype=np.int64) for c in columns)):
        h = state + p5 + np.uint64(4)
        h ^= (value.astype(np.uint64) & np.uint64(0xFFFFFFFF)) * p1
        h = ((h << np.uint64(23)) | (h >> np.uint64(41))) * p2 + p3
        h ^= h >> np.uint64(33)
        h *= p2
        h ^= h >> np.uint64(29)
        h *= p3
        h ^= h >> np.uint64(32)
        state = h
    return state.view(np.int64)


def _in_order(*keys: np.ndarray) -> bool:
    """Whether the rows are sorted by the keys, the first most significant (ties allowed)."""
    ascending = np.ones(max(len(keys[0]) - 1, 0), dtype=bool)
    for key in reversed(keys):  # from the least significant: a key decides unless it ties
        ascending = (key[:-1] < key[1:]) | ((key[:-1] == key[1:]) & ascending)
    return bool(ascending.all())


def split_interactions(users: np.ndarray, items: np.ndarray, ts_us: np.ndarray, cfg: Mapping[str, Any], *,
                       has_timestamp: bool, seed: int) -> np.ndarray:
    """The split (train | valid | test) of each interaction, each user's latest held out; see the module docstring.

    Args:
        users, items: per interaction, its user_idx and item_idx (int32 values).
        ts_us: per interaction, its timestamp in microseconds.
        cfg: the ``tables`` config section.
        has_timestamp: order each user's interactions by time; otherwise by a seeded hash, Spark's
            ``xxhash64(seed, user_idx, item_idx)`` (the rule the Spark version of this split had).
        seed: the seed of that hash.

    Returns:
        The split names, aligned with the input.

    Raises:
        ValueError: ``tables.split`` or its ratios are invalid.
    """
    method = cfg["split"]
    if method not in SPLIT_METHODS:
        raise ValueError(f"tables.split must be one of {', '.join(SPLIT_METHODS)}, got {method!r}")
    key = ts_us if has_timestamp else spark_xxhash64(seed, users, items)
    # by user, then key, ties by item_idx; the job hands them over in this order (a sort of millions
    # of rows costs seconds, the check a few milliseconds)
    order = np.arange(len(users)) if _in_order(users, key, items) else np.lexsort((items, key, users))
    ordered = users[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]) if len(users) else np.zeros(0, np.int64)
    sizes = np.diff(np.r_[starts, len(users)])
    n = np.repeat(sizes, sizes)
    position = np.arange(len(users)) - np.repeat(starts, sizes) + 1  # 1-based, as row_number
    if method == "ratio":
        ratios = float(cfg["valid_ratio"]), float(cfg["test_ratio"])
        if not all(0 <= r < 1 for r in ratios):
            raise ValueError(f"tables.valid_ratio and tables.test_ratio must be in [0, 1), got {ratios}")
        # n * r rounded half up, as Spark's round
        n_valid, n_test = (np.maximum(1, np.floor(n * r + 0.5).astype(np.int64)) if r > 0 else np.zeros_like(n)
                           for r in ratios)
    else:
        n_valid = n_test = np.full_like(n, int(cfg["leave_last_n"]))
    held_out = n_valid + n_test
    split = np.select([position > n - n_test, position > n - held_out], ["test", "valid"], "train")
    split[(n < int(cfg["min_user_interactions"])) | (held_out >= n)] = "train"
    out = np.empty_like(split)
    out[order] = split
    return out


def csr_splits(users: np.ndarray, items: np.ndarray, weights: np.ndarray, splits: np.ndarray,
               shape: tuple[int, int]) -> dict[str, sp.csr_matrix]:
    """One users x items CSR matrix of weights per split."""
    out = {}
    for name in SPLITS:
        mask = splits == name
        matrix = sp.csr_matrix((weights[mask], (users[mask], items[mask])), shape=shape)
        matrix.sort_indices()
        out[name] = matrix
    return out


def gini(counts: np.ndarray) -> float:
    """The Gini coefficient of non-negative counts: 0 when all equal, towards 1 when one takes all."""
    x = np.sort(np.asarray(counts, dtype=np.float64))
    n, total = len(x), x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float(((2 * ranks - n - 1) * x).sum() / (n * total))


def _quantiles(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {name: 0.0 for name in QUANTILES}
    return {name: round(float(np.quantile(values, q)), 4) for name, q in QUANTILES.items()}


def table_stats(users: np.ndarray, items: np.ndarray, splits: np.ndarray, first_us: np.ndarray,
                last_day_us: int) -> dict[str, Any]:
    """Sparsity and popularity statistics of one date's interactions.

    Args:
        users, items, splits: per interaction, the user and item index and the split name.
        first_us: per interaction, its first timestamp in microseconds since the epoch (UTC).
        last_day_us: the start of the window's last day; ids first seen at or after it count as cold.

    Returns:
        users and items with interactions, interactions per split and in all, density over those
        users x items, degree quantiles, the Gini coefficient of item popularity (over items with
        interactions) and the shares of cold users and items.
    """
    def first_times(ids: np.ndarray) -> np.ndarray:
        first = np.full(ids.max() + 1 if len(ids) else 0, np.iinfo(np.int64).max)
        np.minimum.at(first, ids, first_us)
        return first[np.unique(ids)]

    user_degree = np.unique(users, return_counts=True)[1]
    item_degree = np.unique(items, return_counts=True)[1]
    n_users, n_items, total = len(user_degree), len(item_degree), len(users)
    return {
        "users": n_users,
        "items": n_items,
        "interactions": {**{name: int((splits == name).sum()) for name in SPLITS}, "total": total},
        "density": round(total / (n_users * n_items), 8) if total else 0.0,
        "user_degree": _quantiles(user_degree),
        "item_degree": _quantiles(item_degree),
        "item_gini": round(gini(item_degree), 6),
        "cold_user_share": round(float((first_times(users) >= last_day_us).mean()), 6) if total else 0.0,
        "cold_item_share": round(float((first_times(items) >= last_day_us).mean()), 6) if total else 0.0,
    }


def _codes(column: pa.ChunkedArray) -> np.ndarray:
    """Dense integer codes 0..n-1 of a column's values (a hash, no sort)."""
    return column.combine_chunks().dictionary_encode().indices.to_numpy()


def index_pairs(pairs: pa.Table, indexes: Mapping[str, pa.Table]) -> pa.Table:
    """The pairs with their user_idx and item_idx (int32) instead of ids: the interactions before the split."""
    idx = {col: pc.index_in(pairs.column(col), value_set=indexes[col].column(col)) for col in (USER_ID, ITEM_ID)}
    # read_index and extend_index keep idx == position in the index, so the position is the idx
    return pa.table({
        USER_IDX: idx[USER_ID].cast(pa.int32()),
        ITEM_IDX: idx[ITEM_ID].cast(pa.int32()),
        WEIGHT: pairs.column(WEIGHT).cast(pa.float32()),
        TS: pairs.column(TS),
        FIRST_TS: pairs.column(FIRST_TS),
    })


def window_matrices(every: pa.Table, indexes: Mapping[str, pa.Table], shape: tuple[int, int],
                    nonpositive_weight: float) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The window's ``history`` and ``seen`` matrices (see the module docstring) from :func:`window_pairs`.

    Args:
        every: every pair of the window, with ``positive`` and ``weight``.
        indexes: the stable indexes, which hold every id of ``every``.
        shape: (indexed users, indexed items).
        nonpositive_weight: the history weight of a pair without a positive label (0 leaves it out).
    """
    if nonpositive_weight < 0:
        raise ValueError(f"tables.nonpositive_weight must be >= 0, got {nonpositive_weight}")
    users, items = (pc.index_in(every.column(col), value_set=indexes[col].column(col)).to_numpy(zero_copy_only=False)
                    for col in (USER_ID, ITEM_ID))
    positive = every.column(POSITIVE).to_numpy(zero_copy_only=False).astype(bool)
    weight = np.where(positive, pc.fill_null(every.column(WEIGHT), 0.0).to_numpy(zero_copy_only=False),
                      nonpositive_weight).astype(np.float32)
    history = sp.csr_matrix((weight, (users, items)), shape=shape)
    history.eliminate_zeros()
    history.sort_indices()
    seen = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=shape)
    seen.sort_indices()
    return history, seen


def grow_index(known: pa.Table, every: pa.Table, id_col: str, idx_col: str) -> pa.Table:
    """The stable index ``known`` with every id of the window's pairs ``every`` it lacks appended (see
    :func:`extend_index`): any label, k-core or not."""
    seen = first_seen(every, id_col)
    unseen = seen.filter(pc.invert(pc.is_in(seen.column(id_col), value_set=known.column(id_col))))
    return extend_index(known, unseen, id_col, idx_col)


def read_catalogue_ids(lake: Lake, ds: str) -> pa.Array | None:
    """The item ids of the clean catalogue of ``ds``; None when the date has no catalogue."""
    path = lake.path("catalogue", ds) / CATALOGUE_FILE
    if not path.is_file():
        return None
    return pq.read_table(path, columns=[ITEM_ID]).column(ITEM_ID).combine_chunks().cast(pa.string())


def grow_catalogue_index(known: pa.Table, catalogue_ids: pa.Array) -> pa.Table:
    """The item index ``known`` with the catalogue's ids it lacks appended in id order (see the module
    docstring): after the window's unseen ids, which :func:`grow_index` numbered first."""
    ids = pc.unique(catalogue_ids)
    unseen = ids.filter(pc.invert(pc.is_in(ids, value_set=known.column(ITEM_ID))))
    # one first time for all: extend_index then orders them by id alone
    first = pa.nulls(len(unseen), pa.timestamp("us", tz="UTC"))
    return extend_index(known, pa.table({ITEM_ID: unseen, FIRST_TS: first}), ITEM_ID, ITEM_IDX)


def catalogue_stats(catalogue_ids: pa.Array | None, every: pa.Table, from_catalogue: int) -> dict[str, int]:
    """``catalogue_items`` (of the date's catalogue), ``catalogue_items_unseen`` (those without an interaction
    of any label in the window: empty columns) and ``new_from_catalogue`` (indexed from the catalogue this run)."""
    if catalogue_ids is None:
        return {"catalogue_items": 0, "catalogue_items_unseen": 0, "new_from_catalogue": 0}
    seen = pc.is_in(catalogue_ids, value_set=pc.unique(every.column(ITEM_ID)))
    return {"catalogue_items": len(catalogue_ids), "catalogue_items_unseen": len(catalogue_ids) - seen.true_count,
            "new_from_catalogue": from_catalogue}


def split_table(pairs: pa.Table, indexes: Mapping[str, pa.Table], cfg: Mapping[str, Any], *, has_timestamp: bool,
                seed: int) -> tuple[pa.Table, np.ndarray]:
    """The interactions of the k-core pairs, indexed, sorted by (user_idx, ts, item_idx), with their split.

    Args:
        pairs: the positive pairs that passed the k-core (:func:`window_pairs` columns).
        indexes: the stable indexes by id column, which hold every id of ``pairs``.
        cfg: the ``tables`` config section.
        has_timestamp, seed: see :func:`split_interactions`.

    Returns:
        The table (:func:`index_pairs` columns plus ``split``) and its split names as an array.

    Raises:
        ValueError: an index outgrew int32.
    """
    if max(len(t) for t in indexes.values()) > INT32_MAX:
        raise ValueError("an index outgrew int32; the tables store user_idx and item_idx as int32")
    table = index_pairs(pairs, indexes)
    users, items = (table.column(c).to_numpy() for c in (USER_IDX, ITEM_IDX))
    ts_us = table.column(TS).cast(pa.int64()).to_numpy()
    # (user_idx, item_idx) is unique, so this order is total and a rerun writes the same bytes; with
    # timestamps it is also the split's order, which then needs no sort of its own
    order = np.lexsort((items, ts_us, users))
    table = table.take(order).combine_chunks()
    users, items, ts_us = users[order], items[order], ts_us[order]
    splits = split_interactions(users, items, ts_us, cfg, has_timestamp=has_timestamp, seed=seed)
    return table.append_column(pa.field(SPLIT, pa.string(), nullable=False), pa.array(splits, pa.string())), splits


def core_pairs(every: pa.Table, cfg: Mapping[str, Any]) -> pa.Table:
    """The positive pairs of the window (:func:`window_pairs`) that pass the k-core of the ``tables`` config."""
    pairs = every.filter(every.column(POSITIVE).combine_chunks())
    keep = k_core(_codes(pairs.column(USER_ID)), _codes(pairs.column(ITEM_ID)), int(cfg["min_user_core"]),
                  int(cfg["min_item_core"]), int(cfg["core_rounds"]))
    return pairs.filter(pa.array(keep))

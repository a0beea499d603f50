"""Sample expansion: weighted positives and negatives for the recommender, each tagged with its source.

Reads the train split of ``tables/ds=D`` (never valid or test) and ``augment/ds=D`` (GAN positives,
synthetic users, hard-negative candidates) and writes ``examples/ds=D/examples.parquet``:

=========  =======  =============================================================================
column     type     meaning
=========  =======  =============================================================================
user_idx   int32    a real user's index, or ``n_users + syn_user`` for a synthetic user
item_idx   int32    the item
label      int8     1 positive, 0 negative
weight     float32  1.0 for real examples; ``synthetic_weight x confidence`` for synthetic positives
                    and ``synthetic_weight`` for a synthetic user's negatives; positives times the
                    item's long-tail multiplier and negatives times the balance factor, when those
                    are on (see Rebalancing)
source     string   one of ``recsys.core.columns.SOURCES``
=========  =======  =============================================================================

``n_users`` is the number of rows of the date's train matrix, so every example's user has a
history: a real user's train row, or, for ``user_idx >= n_users``, the synthetic user's own
``syn_user`` positives. Rows are ordered by user; within a user, positives first.

Positives: ``real_pos`` every train entry; ``gan_pos`` the GAN's positives for sparse users (minus
any already in train); ``cooc_pos`` co-occurrence positives of users with fewer than
``expand.cooc_min_history`` train items; ``syn_user`` the synthetic users' items. Negatives:
``negatives_per_positive`` per train entry of a real user and per item of a synthetic user, allotted
to ``neg_uniform``/``neg_pop``/``neg_hard`` by ``expand.negative_mix`` (synthetic users have no
candidates, so their share of ``neg_hard`` is spread over the other two). No negative is ever an item
in the user's history, nor one of the user's GAN or co-occurrence positives (those are computed even
when switched off, so the negatives do not depend on the switches). Every switch in
``expand.sources`` removes exactly the rows of its source (``syn_user`` also removes the synthetic
users' negatives: without it those users do not exist); the other rows stay identical, so ablations
compare like with like. ``_summary.json`` holds the row count and weight sum of every source.

Rebalancing: ``expand.max_positives_per_user`` keeps a seeded random subset of that many train
positives of a heavy user (and items of a synthetic user); negatives are drawn per kept positive, so
every user's positive:negative count ratio is exactly ``1 : negatives_per_positive`` (hard-negative
rows of a user without candidates excepted). ``expand.long_tail_beta`` multiplies every positive's
weight by ``count_i ** -beta`` (train counts), normalised to mean 1 over the train interactions.
``expand.pos_neg_weight_ratio`` scales all negative weights by one factor so that the total positive
weight over the total negative weight is exactly that ratio (it depends on every row, so with it on
an ablation changes the negatives' weights too). All three are off by default.

Engine: NumPy on one machine; when the train split has more than ``expand.spark_threshold``
interactions, uniform and popularity negatives are drawn in Spark (candidates, anti-join with the
seen pairs, top-up rounds; :mod:`recsys.sampling.spark`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import (
    CONFIDENCE,
    ITEM_IDX,
    LABEL,
    SCORE,
    SOURCE,
    SOURCES,
    SYN_USER,
    USER_IDX,
    WEIGHT,
    require_columns,
)
from recsys.core.lake import (
    CANDIDATES_FILE,
    EXAMPLES_FILE,
    EXAMPLES_SUMMARY_FILE,
    GAN_POS_FILE,
    SYN_USERS_FILE,
    Lake,
    write_json,
)
from recsys.core.matrices import load_matrices
from recsys.sampling import (
    NEGATIVE_SOURCES,
    CooccurrenceSampler,
    HardNegativeSampler,
    NegativeMixer,
    PopularitySampler,
    SeenItems,
    UniformSampler,
    popularity_weights,
)

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

EXAMPLES_SCHEMA = pa.schema([
    (USER_IDX, pa.int32()), (ITEM_IDX, pa.int32()), (LABEL, pa.int8()), (WEIGHT, pa.float32()),
    (SOURCE, pa.string()),
])
SYNTHETIC_SOURCES = ("gan_pos", "cooc_pos", "syn_user")


@dataclass
class Triples:
    """Three aligned columns of an augment output: (user or syn_user, item, confidence or score)."""

    users: np.ndarray
    items: np.ndarray
    values: np.ndarray

    @classmethod
    def empty(cls) -> Triples:
        return cls(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32))


@dataclass
class Examples:
    """Expanded examples as aligned arrays; ``codes`` index ``recsys.core.columns.SOURCES``."""

    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    codes: np.ndarray

    def table(self) -> pa.Table:
        """The examples as an Arrow table of ``EXAMPLES_SCHEMA``."""
        source = pa.DictionaryArray.from_arrays(pa.array(self.codes, pa.int8()), pa.array(SOURCES))
        return pa.Table.from_arrays(
            [pa.array(self.users, pa.int32()), pa.array(self.items, pa.int32()), pa.array(self.labels, pa.int8()),
             pa.array(self.weights, pa.float32()), source.cast(pa.string())],
            schema=EXAMPLES_SCHEMA,
        )


def check_config(config: dict[str, Any]) -> None:
    """Validate the ``expand`` section.

    Raises:
        ValueError: naming the first key with a bad value.
    """
    unknown = sorted(set(config["sources"]) - set(SOURCES))
    if unknown:
        raise ValueError(f"expand.sources: unknown source(s) {unknown}; known: {list(SOURCES)}")
    mix = config["negative_mix"]
    unknown = sorted(set(mix) - set(NEGATIVE_SOURCES))
    if unknown:
        raise ValueError(f"expand.negative_mix: unknown kind(s) {unknown}; known: {list(NEGATIVE_SOURCES)}")
    shares = [float(mix.get(k, 0.0)) for k in NEGATIVE_SOURCES]
    if min(shares) < 0 or not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
        raise ValueError(f"expand.negative_mix: shares must be >= 0 and sum to 1, got {dict(mix)}")
    for key in ("negatives_per_positive", "cooc_min_history", "cooc_per_user", "max_positives_per_user",
                "spark_threshold"):
        if not isinstance(config[key], int) or config[key] < 0:
            raise ValueError(f"expand.{key}: expected an int >= 0, got {config[key]!r}")
    for key in ("popularity_alpha", "synthetic_weight", "cooc_min_score", "long_tail_beta"):
        if not (isinstance(config[key], int | float) and config[key] >= 0):
            raise ValueError(f"expand.{key}: expected a number >= 0, got {config[key]!r}")
    ratio = config["pos_neg_weight_ratio"]
    if ratio is not None and not (isinstance(ratio, int | float) and ratio > 0):
        raise ValueError(f"expand.pos_neg_weight_ratio: expected null or a number > 0, got {ratio!r}")


def read_triples(path: Path, columns: tuple[str, str, str], n_users: int | None, n_items: int) -> Triples:
    """Read and check one augment output.

    Args:
        path: the Parquet file.
        columns: names of the user, item and value columns.
        n_users: users must lie in [0, n_users); ``None``: only >= 0 (synthetic user ids).
        n_items: items must lie in [0, n_items).

    Raises:
        ValueError: a column is missing, or a row has an index out of range or a non-finite value
            (the message names the file, the column and the first bad row).
    """
    frame = pd.read_parquet(path)
    user_col, item_col, value_col = columns
    require_columns(list(frame.columns), columns, str(path))
    users = frame[user_col].to_numpy(np.int64)
    items = frame[item_col].to_numpy(np.int64)
    values = frame[value_col].to_numpy(np.float32)
    user_limit = n_users if n_users is not None else np.iinfo(np.int32).max
    checks = (
        (user_col, (users < 0) | (users >= user_limit), f"outside [0, {user_limit})"),
        (item_col, (items < 0) | (items >= n_items), f"outside [0, {n_items})"),
        (value_col, ~np.isfinite(values), "not finite"),
    )
    for column, bad, why in checks:
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{path}: row {row}: column {column} = {frame[column].iloc[row]} is {why}")
    return Triples(users, items.astype(np.int32), values)


def train_positives(train: sp.csr_matrix) -> sp.csr_matrix:
    """The train entries with a positive weight (a stored zero or negative is not a positive)."""
    positives = sp.csr_matrix(train, dtype=np.float32, copy=True)
    positives.data[positives.data <= 0] = 0.0
    positives.eliminate_zeros()
    positives.sort_indices()
    return positives


def _row_users(matrix: sp.csr_matrix, offset: int = 0) -> np.ndarray:
    return offset + np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))


def cap_per_user(matrix: sp.csr_matrix, cap: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Keep at most ``cap`` entries of every row, a uniform random subset of the longer rows.

    Args:
        matrix: users x items CSR.
        cap: entries kept per row at most; 0 keeps everything.
        rng: random generator for the subsets.

    Returns:
        A CSR of the same shape holding the kept entries (rows within the cap are unchanged).
    """
    if cap <= 0 or matrix.nnz == 0 or np.diff(matrix.indptr).max() <= cap:
        return matrix
    rows = _row_users(matrix)
    order = np.lexsort((rng.random(matrix.nnz), rows))  # each row's entries in random order
    rank = np.empty(matrix.nnz, dtype=np.int64)
    rank[order] = np.arange(matrix.nnz) - matrix.indptr[rows[order]]
    kept = sp.csr_matrix((matrix.data[rank < cap], (rows[rank < cap], matrix.indices[rank < cap])),
                         shape=matrix.shape, dtype=matrix.dtype)
    kept.sort_indices()
    return kept


def long_tail_multipliers(counts: np.ndarray, beta: float) -> np.ndarray:
    """Per-item weight multipliers ``count ** -beta`` (a zero count counts as 1), with mean 1 over interactions.

    The normaliser is the count-weighted mean, so the train positives' total weight is unchanged and
    only its split between popular and long-tail items moves; ``beta = 0`` gives all ones.
    """
    counts = np.asarray(counts, dtype=np.float64)
    raw = np.maximum(counts, 1.0) ** -float(beta)
    if counts.sum() <= 0:
        return raw
    return raw / (counts @ raw / counts.sum())


def expand(
    train: sp.csr_matrix,
    gan_pos: Triples,
    syn_users: Triples,
    candidates: Triples,
    config: dict[str, Any],
    max_candidate_score: float,
    rng: np.random.Generator,
    spark: SparkSession | None = None,
) -> Examples:
    """Build the examples of one date (pure: arrays in, arrays out).

    Args:
        train: users x items CSR of train positives (see :func:`train_positives`).
        gan_pos: GAN positives of real users (user_idx, item_idx, confidence).
        syn_users: synthetic users' items (syn_user, item_idx, confidence).
        candidates: hard-negative candidates of real users (user_idx, item_idx, score).
        config: the ``expand`` config section.
        max_candidate_score: hard negatives skip candidates scored above this (false-negative guard).
        rng: random generator; the same state gives the same examples.
        spark: when given, uniform and popularity negatives are drawn in Spark
            (:class:`recsys.sampling.spark.SparkNegativeSampler`) instead of NumPy.

    Returns:
        The examples, ordered by user; within a user by source, positives first.
    """
    n_users, n_items = train.shape
    on = config["sources"]
    synthetic_weight = float(config["synthetic_weight"])
    per_positive = int(config["negatives_per_positive"])
    cap = int(config["max_positives_per_user"])
    # every random step draws from its own child, so switching one source off leaves the others' rows
    real_rng, syn_rng, cap_rng = rng.spawn(3)
    counts = np.bincount(train.indices, minlength=n_items)
    boost = long_tail_multipliers(counts, float(config["long_tail_beta"]))
    parts: list[tuple[np.ndarray, ...]] = []

    def add(source: str, users: np.ndarray, items: np.ndarray, label: int, weights: np.ndarray | float) -> None:
        if on.get(source, False) and len(users):
            n = len(users)
            weights = np.broadcast_to(np.float32(weights), (n,)) * (boost[items] if label else 1.0)
            parts.append((users, items, np.full(n, label, np.int8), weights.astype(np.float32),
                          np.full(n, SOURCES.index(source), np.int8)))

    real_cap_rng, syn_cap_rng = cap_rng.spawn(2)
    kept_train = cap_per_user(train, cap, real_cap_rng)
    real_users = _row_users(kept_train)
    add("real_pos", real_users, kept_train.indices, 1, 1.0)

    in_train = SeenItems(train).contains(gan_pos.users, gan_pos.items)
    if in_train.any():
        log.warning("%s: %d rows are already train positives; dropped", GAN_POS_FILE, int(in_train.sum()))
    add("gan_pos", gan_pos.users[~in_train], gan_pos.items[~in_train], 1,
        synthetic_weight * gan_pos.values[~in_train])

    # computed even when switched off: negatives avoid these items either way, so an ablation removes
    # exactly the source's rows and no negative ever contradicts a positive of the full table
    sparse = np.flatnonzero(np.diff(train.indptr) < int(config["cooc_min_history"]))
    cooc = CooccurrenceSampler(train, int(config["cooc_per_user"]), float(config["cooc_min_score"]))
    cooc_users, cooc_items, cooc_confidence = cooc.sample(sparse)
    add("cooc_pos", cooc_users, cooc_items, 1, synthetic_weight * cooc_confidence)

    n_syn = int(syn_users.users.max()) + 1 if len(syn_users.users) else 0
    syn_matrix = sp.csr_matrix(
        (np.ones(len(syn_users.users), np.float32), (syn_users.users, syn_users.items)), shape=(n_syn, n_items)
    )
    syn_matrix.sum_duplicates()
    kept_syn = cap_per_user(syn_matrix, cap, syn_cap_rng)
    syn_kept = SeenItems(kept_syn).contains(syn_users.users, syn_users.items) if n_syn else np.zeros(0, bool)
    add("syn_user", n_users + syn_users.users[syn_kept], syn_users.items[syn_kept], 1,
        synthetic_weight * syn_users.values[syn_kept])

    # negatives: never an item of the user's history (train row, or the synthetic user's items), nor
    # one of their GAN or co-occurrence positives
    expanded = sp.csr_matrix(
        (np.ones(len(gan_pos.users) + len(cooc_users), np.float32),
         (np.concatenate([gan_pos.users, cooc_users]), np.concatenate([gan_pos.items, cooc_items]))),
        shape=train.shape,
    )
    history = sp.vstack([train + expanded, syn_matrix]).tocsr()
    seen = SeenItems(history)
    pairs = None
    if spark is not None:
        from recsys.sampling.spark import SparkNegativeSampler, seen_pairs

        pairs = seen_pairs(spark, _row_users(history), history.indices).cache()
        uniform: Any = SparkNegativeSampler(spark, pairs, n_items)
        popular: Any = SparkNegativeSampler(
            spark, pairs, n_items, popularity_weights(counts, float(config["popularity_alpha"])))
    else:
        uniform = UniformSampler(seen)
        popular = PopularitySampler(seen, counts, float(config["popularity_alpha"]))
    samplers = {
        "neg_uniform": uniform if on.get("neg_uniform") else None,
        "neg_pop": popular if on.get("neg_pop") else None,
        "neg_hard": HardNegativeSampler(candidates.users, candidates.items, candidates.values, seen,
                                        max_candidate_score) if on.get("neg_hard") else None,
    }
    shares = {k: float(config["negative_mix"].get(k, 0.0)) for k in NEGATIVE_SOURCES}
    users, items, codes = NegativeMixer(samplers, shares).sample(np.repeat(real_users, per_positive), real_rng)
    parts.append((users, items, np.zeros(len(users), np.int8), np.ones(len(users), np.float32), codes))

    # synthetic users have no candidates: neg_hard's share goes to the others, in their proportion
    syn_shares = {k: v for k, v in shares.items() if k != "neg_hard"}
    total = sum(syn_shares.values())
    if on.get("syn_user", False) and n_syn and total > 0:
        mixer = NegativeMixer({k: samplers[k] for k in syn_shares}, {k: v / total for k, v in syn_shares.items()})
        syn_rows = _row_users(kept_syn, offset=n_users)
        users, items, codes = mixer.sample(np.repeat(syn_rows, per_positive), syn_rng)
        parts.append((users, items, np.zeros(len(users), np.int8),
                      np.full(len(users), synthetic_weight, np.float32), codes))
    elif on.get("syn_user", False) and n_syn:
        log.warning("expand.negative_mix gives synthetic users no negative kind (all share on neg_hard)")
    if pairs is not None:
        pairs.unpersist()

    columns = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(5)]
    order = np.argsort(columns[0], kind="stable")
    dtypes = (np.int32, np.int32, np.int8, np.float32, np.int8)
    examples = Examples(*(c[order].astype(t) for c, t in zip(columns, dtypes, strict=True)))
    ratio = config["pos_neg_weight_ratio"]
    if ratio is not None:
        examples.weights = balance_weights(examples.labels, examples.weights, float(ratio))
    return examples


def balance_weights(labels: np.ndarray, weights: np.ndarray, ratio: float) -> np.ndarray:
    """Scale the negatives' weights by one factor so that positive weight / negative weight = ``ratio``.

    Returns the weights unchanged when there are no negatives or no positive weight.
    """
    negative = labels == 0
    pos_sum = float(weights[~negative].sum(dtype=np.float64))
    neg_sum = float(weights[negative].sum(dtype=np.float64))
    if neg_sum <= 0 or pos_sum <= 0:
        return weights
    out = weights.astype(np.float32, copy=True)
    out[negative] = (weights[negative] * (pos_sum / (ratio * neg_sum))).astype(np.float32)
    return out


def summarise(examples: Examples) -> dict[str, Any]:
    """Row count and weight sum of every source, and the totals."""
    rows = np.bincount(examples.codes, minlength=len(SOURCES))
    weights = np.bincount(examples.codes, weights=examples.weights.astype(np.float64), minlength=len(SOURCES))
    return {
        "rows": int(examples.codes.size),
        "positives": int((examples.labels == 1).sum()),
        "negatives": int((examples.labels == 0).sum()),
        "sources": {s: {"rows": int(rows[i]), "weight_sum": round(float(weights[i]), 6)}
                    for i, s in enumerate(SOURCES)},
    }


def _read_augment(lake: Lake, ds: str, n_users: int, n_items: int) -> tuple[Triples, Triples, Triples]:
    base = lake.require("augment", ds)
    return (
        read_triples(base / GAN_POS_FILE, (USER_IDX, ITEM_IDX, CONFIDENCE), n_users, n_items),
        read_triples(base / SYN_USERS_FILE, (SYN_USER, ITEM_IDX, CONFIDENCE), None, n_items),
        read_triples(base / CANDIDATES_FILE, (USER_IDX, ITEM_IDX, SCORE), n_users, n_items),
    )


def body(ctx: JobContext) -> dict[str, Any]:
    """Extract the train split and augment outputs, expand, load examples and their summary."""
    config = ctx.config["expand"]
    check_config(config)
    matrices = load_matrices(ctx.lake, ctx.ds)
    train = train_positives(matrices.train)
    if train.nnz == 0:
        raise ValueError(f"tables/ds={ctx.ds}: the train split has no positive entries; nothing to expand")
    gan_pos, syn_users, candidates = _read_augment(ctx.lake, ctx.ds, matrices.n_users, matrices.n_items)
    seed = [int(ctx.config["seed"]), int(dt.date.fromisoformat(ctx.ds).strftime("%Y%m%d"))]
    spark = None
    if train.nnz > int(config["spark_threshold"]):
        from recsys.core.spark import spark_session

        log.info("%d train interactions > expand.spark_threshold: uniform and popularity negatives in Spark",
                 train.nnz)
        spark = spark_session("recsys-expand")
    examples = expand(train, gan_pos, syn_users, candidates, config,
                      float(ctx.config["augment"]["confidence_threshold"]), np.random.default_rng(seed), spark)
    summary = summarise(examples)
    summary.update(ds=ctx.ds, n_users=matrices.n_users, n_items=matrices.n_items, seed=seed, config=config,
                   engine="spark" if spark is not None else "numpy")
    log.info("%d examples: %s", summary["rows"], {s: v["rows"] for s, v in summary["sources"].items()})
    with ctx.lake.writing("examples", ctx.ds) as out:
        pq.write_table(examples.table(), out / EXAMPLES_FILE)
        write_json(out / EXAMPLES_SUMMARY_FILE, summary)
    return {
        "ds": ctx.ds,
        "path": str(ctx.lake.path("examples", ctx.ds) / EXAMPLES_FILE),
        "rows": summary["rows"],
        "sources": {s: v["rows"] for s, v in summary["sources"].items()},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the expansion for ``--ds`` from the command line."""
    parser = job_parser("Expand the training samples: positives, negatives and weights, tagged by source.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

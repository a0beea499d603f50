"""Sample expansion: weighted positives and negatives for the recommender, each tagged with its source.

Built from the train split of ``tables/ds=D`` (never valid or test) and ``augment/ds=D`` (GAN
positives, synthetic users, hard-negative candidates, content positives); written by ``jobs.expand`` as
``examples/ds=D/examples.parquet``:

=========  =======  =============================================================================
column     type     meaning
=========  =======  =============================================================================
user_idx   int32    a real user's index, ``n_users + syn_user`` for a synthetic user, or
                    ``n_users + n_syn + copy`` for a transform_pos pseudo-user
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
``syn_user`` positives (a pseudo-user's: its own ``transform_pos`` rows). Rows are ordered by user; within a
user, positives first.

Positives: ``real_pos`` every train entry; ``gan_pos`` the GAN's positives for sparse users (minus
any already in train); ``cooc_pos`` co-occurrence positives of users with fewer than
``expand.cooc_min_history`` train items; ``syn_user`` the synthetic users' items; ``content_pos`` the
content generator's positives of cold items (``synthetic_weight x confidence``, minus any already in train);
``transform_pos`` pseudo-users, perturbed copies of real histories (:mod:`recsys.sampling.transform`), after
every synthetic user whether ``syn_user`` is on or not, with no negatives. Negatives:
``negatives_per_positive`` per train entry of a real user and per item of a synthetic user, allotted
to ``neg_uniform``/``neg_pop``/``neg_hard`` by ``expand.negative_mix`` (synthetic users have no
candidates, so their share of ``neg_hard`` is spread over the other two). No negative is ever an item
in the user's history, nor one of the user's GAN, co-occurrence or content positives (those are computed even
when switched off, so the negatives do not depend on the switches). Every switch in
``expand.sources`` removes exactly the rows of its source (``syn_user`` also removes the synthetic
users' negatives: without it those users do not exist); the other rows stay identical, so ablations
compare like with like. ``_summary.json`` holds the row count and weight sum of every source.

Rebalancing (:mod:`recsys.sampling.rebalance`): ``expand.max_positives_per_user`` keeps a seeded
random subset of that many train positives of a heavy user (and items of a synthetic user); negatives
are drawn per kept positive, so every user's positive:negative count ratio is exactly
``1 : negatives_per_positive`` (hard-negative rows of a user without candidates excepted).
``expand.long_tail_beta`` multiplies every positive's weight by ``count_i ** -beta`` (train counts),
normalised to mean 1 over the train interactions. ``expand.pos_neg_weight_ratio`` scales all negative
weights by one factor so that the total positive weight over the total negative weight is exactly
that ratio (it depends on every row, so with it on an ablation changes the negatives' weights too).
All three are off by default.

Engine: NumPy on one machine; when a Spark session is given (``jobs.expand`` starts one when the
train split has more than ``expand.spark_threshold`` interactions), uniform and popularity negatives
are drawn in Spark (candidates, anti-join with the seen pairs, top-up rounds; :mod:`recsys.sampling.spark`).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.core.columns import SOURCES
from recsys.core.lake import CONTENT_POS_FILE, GAN_POS_FILE
from recsys.sampling.augment_outputs import AugmentOutputs, Triples
from recsys.sampling.cooccurrence import CooccurrenceSampler
from recsys.sampling.examples import Examples
from recsys.sampling.hard import HardNegativeSampler
from recsys.sampling.mixer import NEGATIVE_SOURCES, NegativeMixer
from recsys.sampling.popularity import PopularitySampler, popularity_weights
from recsys.sampling.rebalance import balance_weights, cap_per_user, long_tail_multipliers
from recsys.sampling.seen import SeenItems, row_users
from recsys.sampling.transform import transformed_histories
from recsys.sampling.uniform import UniformSampler

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

_EXAMPLE_DTYPES = (np.int32, np.int32, np.int8, np.float32, np.int8)  # users, items, labels, weights, codes


def expansion_seed(seed: int, ds: str) -> list[int]:
    """The random state of one date's expansion: the config's seed and the date as YYYYMMDD."""
    return [int(seed), int(dt.date.fromisoformat(ds).strftime("%Y%m%d"))]


def train_positives(train: sp.csr_matrix) -> sp.csr_matrix:
    """The train entries with a positive weight (a stored zero or negative is not a positive)."""
    positives = sp.csr_matrix(train, dtype=np.float32, copy=True)
    positives.data[positives.data <= 0] = 0.0
    positives.eliminate_zeros()
    positives.sort_indices()
    return positives


class _Rows:
    """The examples as they are drawn: one part per step, in order, the source's switch applied to positives."""

    def __init__(self, switches: Mapping[str, bool], boost: np.ndarray) -> None:
        self.on, self.boost = switches, boost
        self.parts: list[tuple[np.ndarray, ...]] = []

    def positives(self, source: str, users: np.ndarray, items: np.ndarray, weights: np.ndarray | float) -> None:
        """Add the positives of ``source`` (when it is on), each weight times its item's long-tail multiplier."""
        if self.on.get(source, False) and len(users):
            n = len(users)
            weights = np.broadcast_to(np.float32(weights), (n,)) * self.boost[items]
            self.parts.append((users, items, np.full(n, 1, np.int8), weights.astype(np.float32),
                               np.full(n, SOURCES.index(source), np.int8)))

    def negatives(self, users: np.ndarray, items: np.ndarray, codes: np.ndarray, weight: float) -> None:
        """Add negatives, each of the source ``codes`` names, all of weight ``weight``."""
        self.parts.append((users, items, np.zeros(len(users), np.int8), np.full(len(users), weight, np.float32),
                           codes))

    def examples(self) -> Examples:
        """All parts, ordered by user (stable: within a user, in the order the parts were added)."""
        parts = self.parts
        columns = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(5)]
        order = np.argsort(columns[0], kind="stable")
        return Examples(*(c[order].astype(t) for c, t in zip(columns, _EXAMPLE_DTYPES, strict=True)))


@dataclass
class _Positives:
    """What the negatives of a date depend on, once the positives are drawn."""

    kept_train: sp.csr_matrix  # train after the per-user cap: one block of negatives per entry
    cooc: Triples  # every co-occurrence positive, switched on or not
    syn_histories: sp.csr_matrix  # synthetic users x items, every item of theirs
    kept_syn: sp.csr_matrix  # the synthetic users' items after the per-user cap


@dataclass
class Transform:
    """What the ``transform_pos`` copies need: their config section (``None``: none), content-nearest items, rng."""

    config: Mapping[str, Any] | None
    nearest: tuple[np.ndarray, np.ndarray]
    rng: np.random.Generator


def new_gan_positives(train: sp.csr_matrix, gan_pos: Triples, file: str = GAN_POS_FILE) -> Triples:
    """The GAN's (or the content generator's, ``file``) positives that are not train positives already (a
    warning counts the others)."""
    in_train = SeenItems(train).contains(gan_pos.users, gan_pos.items)
    if in_train.any():
        log.warning("%s: %d rows are already train positives; dropped", file, int(in_train.sum()))
    return Triples(gan_pos.users[~in_train], gan_pos.items[~in_train], gan_pos.values[~in_train])


def cooccurrence_positives(train: sp.csr_matrix, config: Mapping[str, Any]) -> Triples:
    """Co-occurrence positives of the users with fewer than ``expand.cooc_min_history`` train items."""
    sparse = np.flatnonzero(np.diff(train.indptr) < int(config["cooc_min_history"]))
    cooc = CooccurrenceSampler(train, int(config["cooc_per_user"]), float(config["cooc_min_score"]))
    return Triples(*cooc.sample(sparse))


def synthetic_histories(syn_users: Triples, n_items: int) -> sp.csr_matrix:
    """The synthetic users' items as a CSR of syn_users x items (a repeated pair stored once)."""
    n_syn = int(syn_users.users.max()) + 1 if len(syn_users.users) else 0
    matrix = sp.csr_matrix(
        (np.ones(len(syn_users.users), np.float32), (syn_users.users, syn_users.items)), shape=(n_syn, n_items)
    )
    matrix.sum_duplicates()
    return matrix


def _add_positives(
    rows: _Rows,
    train: sp.csr_matrix,
    augment: AugmentOutputs,
    config: Mapping[str, Any],
    real_cap_rng: np.random.Generator,
    syn_cap_rng: np.random.Generator,
    transform: Transform,
) -> _Positives:
    """Add the six kinds of positives to ``rows``, in source order; return what the negatives need."""
    synthetic_weight = float(config["synthetic_weight"])
    cap = int(config["max_positives_per_user"])
    kept_train = cap_per_user(train, cap, real_cap_rng)
    rows.positives("real_pos", row_users(kept_train), kept_train.indices, 1.0)
    gan = new_gan_positives(train, augment.gan_pos)
    rows.positives("gan_pos", gan.users, gan.items, synthetic_weight * gan.values)
    # computed even when switched off: negatives avoid these items either way, so an ablation removes
    # exactly the source's rows and no negative ever contradicts a positive of the full table
    cooc = cooccurrence_positives(train, config)
    rows.positives("cooc_pos", cooc.users, cooc.items, synthetic_weight * cooc.values)
    syn = augment.syn_users
    syn_histories = synthetic_histories(syn, train.shape[1])
    kept_syn = cap_per_user(syn_histories, cap, syn_cap_rng)
    kept = SeenItems(kept_syn).contains(syn.users, syn.items) if kept_syn.shape[0] else np.zeros(0, bool)
    rows.positives("syn_user", train.shape[0] + syn.users[kept], syn.items[kept], synthetic_weight * syn.values[kept])
    content = new_gan_positives(train, augment.content_pos, CONTENT_POS_FILE)
    rows.positives("content_pos", content.users, content.items, synthetic_weight * content.values)
    if rows.on.get("transform_pos", False) and transform.config is not None:
        # pseudo-users after every synthetic user, whether syn_user is on or not, so neither switch moves the other
        copies, _ = transformed_histories(train, *transform.nearest, transform.config, transform.rng)
        rows.positives("transform_pos", train.shape[0] + syn_histories.shape[0] + copies.users, copies.items,
                       synthetic_weight * copies.values)
    return _Positives(kept_train, cooc, syn_histories, kept_syn)


def negative_history(train: sp.csr_matrix, gan_pos: Triples, cooc: Triples,
                     syn_histories: sp.csr_matrix, content_pos: Triples | None = None) -> sp.csr_matrix:
    """What no negative may be: a real user's train items, GAN, co-occurrence and content positives; a synthetic
    user's items.

    Rows: the real users, then the synthetic ones (``n_users + syn_user``).
    """
    expanded_pairs = [gan_pos, cooc] + ([content_pos] if content_pos is not None else [])
    expanded = sp.csr_matrix(
        (np.ones(sum(len(p.users) for p in expanded_pairs), np.float32),
         (np.concatenate([p.users for p in expanded_pairs]), np.concatenate([p.items for p in expanded_pairs]))),
        shape=train.shape,
    )
    return sp.vstack([train + expanded, syn_histories]).tocsr()


@contextmanager
def negative_samplers(
    history: sp.csr_matrix,
    counts: np.ndarray,
    candidates: Triples,
    config: Mapping[str, Any],
    max_candidate_score: float,
    spark: SparkSession | None = None,
) -> Iterator[dict[str, Any]]:
    """The switched-on negative samplers by source (``None`` when off), none drawing an item of ``history``.

    Uniform and popularity negatives come from Spark when ``spark`` is given (its cached pairs are
    released on leaving the block), from NumPy otherwise; hard negatives always from NumPy.
    """
    on = config["sources"]
    alpha = float(config["popularity_alpha"])
    seen = SeenItems(history)
    if spark is not None:
        from recsys.sampling.spark import spark_negative_samplers

        engine: Any = spark_negative_samplers(spark, history, popularity_weights(counts, alpha))
    else:
        engine = nullcontext((UniformSampler(seen), PopularitySampler(seen, counts, alpha)))
    with engine as (uniform, popular):
        yield {
            "neg_uniform": uniform if on.get("neg_uniform") else None,
            "neg_pop": popular if on.get("neg_pop") else None,
            "neg_hard": HardNegativeSampler(candidates.users, candidates.items, candidates.values, seen,
                                            max_candidate_score) if on.get("neg_hard") else None,
        }


def synthetic_shares(shares: Mapping[str, float]) -> dict[str, float]:
    """The negative mix of synthetic users: no candidates, so ``neg_hard``'s share goes to the others, in proportion.

    Returns an empty dict when the others have no share.
    """
    others = {k: v for k, v in shares.items() if k != "neg_hard"}
    total = sum(others.values())
    return {k: v / total for k, v in others.items()} if total > 0 else {}


def _add_negatives(
    rows: _Rows,
    samplers: Mapping[str, Any],
    positives: _Positives,
    config: Mapping[str, Any],
    real_rng: np.random.Generator,
    syn_rng: np.random.Generator,
) -> None:
    """Add ``negatives_per_positive`` negatives per kept positive of every real user, then of every synthetic one."""
    per_positive = int(config["negatives_per_positive"])
    shares = {k: float(config["negative_mix"].get(k, 0.0)) for k in NEGATIVE_SOURCES}
    real_users = row_users(positives.kept_train)
    rows.negatives(*NegativeMixer(samplers, shares).sample(np.repeat(real_users, per_positive), real_rng), 1.0)
    if not (config["sources"].get("syn_user", False) and positives.kept_syn.shape[0]):
        return
    syn_mix = synthetic_shares(shares)
    if not syn_mix:
        log.warning("expand.negative_mix gives synthetic users no negative kind (all share on neg_hard)")
        return
    syn_rows = row_users(positives.kept_syn, offset=positives.kept_train.shape[0])
    mixer = NegativeMixer({k: samplers[k] for k in syn_mix}, syn_mix)
    rows.negatives(*mixer.sample(np.repeat(syn_rows, per_positive), syn_rng), float(config["synthetic_weight"]))


def expand(
    train: sp.csr_matrix,
    gan_pos: Triples,
    syn_users: Triples,
    candidates: Triples,
    config: dict[str, Any],
    max_candidate_score: float,
    rng: np.random.Generator,
    spark: SparkSession | None = None,
    *,
    content_pos: Triples | None = None,
    transform: Mapping[str, Any] | None = None,
    nearest: tuple[np.ndarray, np.ndarray] | None = None,
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
        content_pos: the content generator's positives of cold items (user_idx, item_idx, confidence).
        transform: the ``transform`` config section; ``None``: no ``transform_pos`` rows.
        nearest: per item its content-nearest item and their similarity
            (:func:`recsys.sampling.transform.content_nearest`); ``None``: no substitution.

    Returns:
        The examples, ordered by user; within a user by source, positives first.
    """
    # every random step draws from its own child, so switching one source off leaves the others' rows
    real_rng, syn_rng, cap_rng, transform_rng = rng.spawn(4)
    real_cap_rng, syn_cap_rng = cap_rng.spawn(2)
    counts = np.bincount(train.indices, minlength=train.shape[1])
    rows = _Rows(config["sources"], long_tail_multipliers(counts, float(config["long_tail_beta"])))
    content_pos = content_pos if content_pos is not None else Triples.empty()
    augment = AugmentOutputs(gan_pos, syn_users, candidates, content_pos=content_pos)
    no_nearest = (np.full(train.shape[1], -1, np.int64), np.zeros(train.shape[1], np.float32))
    plan = Transform(transform, nearest if nearest is not None else no_nearest, transform_rng)
    positives = _add_positives(rows, train, augment, config, real_cap_rng, syn_cap_rng, plan)
    history = negative_history(train, gan_pos, positives.cooc, positives.syn_histories, content_pos)
    with negative_samplers(history, counts, candidates, config, max_candidate_score, spark) as samplers:
        _add_negatives(rows, samplers, positives, config, real_rng, syn_rng)
    examples = rows.examples()
    ratio = config["pos_neg_weight_ratio"]
    if ratio is not None:
        examples.weights = balance_weights(examples.labels, examples.weights, float(ratio))
    return examples

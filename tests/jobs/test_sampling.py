"""Tests of the samplers: no accidental hits, exact shares, distributions, hand-computed candidates."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import chisquare

from recsys.core.columns import SOURCES
from recsys.sampling import (
    CooccurrenceSampler,
    HardNegativeSampler,
    NegativeMixer,
    PopularitySampler,
    SeenItems,
    UniformSampler,
    allot,
)
from recsys.sampling.hard import MISSING


def random_history(n_users: int, n_items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < density
    return sp.csr_matrix(dense.astype(np.float32))


def heavy_history() -> sp.csr_matrix:
    """40 users x 60 items; user 0 has seen all items but 58 and 59, user 1 all popular items."""
    x = random_history(40, 60, 0.2, seed=3).tolil()
    x[0, :58] = 1.0
    x[0, 58:] = 0.0
    x[1, :] = 0.0
    x[1, :30] = 1.0
    return x.tocsr()


def test_seen_items_matches_a_set() -> None:
    x = random_history(30, 50, 0.15, seed=1)
    seen = SeenItems(x)
    truth = set(zip(*x.nonzero(), strict=True))
    users, items = np.divmod(np.arange(30 * 50), 50)
    expected = np.array([(u, i) in truth for u, i in zip(users, items, strict=True)])
    np.testing.assert_array_equal(seen.contains(users, items), expected)


@pytest.mark.parametrize("make", ["uniform", "popularity"])
def test_no_accidental_hits_over_many_draws(make: str) -> None:
    x = heavy_history()
    seen = SeenItems(x)
    counts = np.bincount(x.indices, minlength=60)
    counts[59] = 0  # never drawn by popularity, so user 0 can only get item 58 from it
    sampler = UniformSampler(seen) if make == "uniform" else PopularitySampler(seen, counts, 0.75)
    users = np.repeat(np.arange(40), 5_000)
    items = sampler.sample(users, np.random.default_rng(7))
    assert items.dtype == np.int32 and items.shape == users.shape
    assert not x.toarray()[users, items].any()
    mine = set(items[users == 0].tolist())
    assert mine == ({58, 59} if make == "uniform" else {58})


def test_sampler_refuses_a_user_who_has_seen_everything() -> None:
    x = sp.csr_matrix(np.array([[1, 1, 1], [0, 1, 0]], dtype=np.float32))
    with pytest.raises(ValueError, match="user 0 has seen every item"):
        UniformSampler(SeenItems(x)).sample(np.array([1, 0]), np.random.default_rng(0))


def test_samplers_are_reproducible_for_a_seed() -> None:
    seen = SeenItems(heavy_history())
    users = np.repeat(np.arange(40), 50)
    a = UniformSampler(seen).sample(users, np.random.default_rng(11))
    b = UniformSampler(seen).sample(users, np.random.default_rng(11))
    c = UniformSampler(seen).sample(users, np.random.default_rng(12))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_popularity_follows_count_power_alpha() -> None:
    n_items, alpha = 40, 0.75
    counts = np.arange(n_items) % 9  # zeros at 0, 9, 18, ...: never drawn
    # user 0 has no history; user 1 has seen items 1..5, so its draws follow the rest renormalised
    x = sp.csr_matrix((np.ones(5), (np.ones(5, dtype=int), np.arange(1, 6))), shape=(2, n_items))
    sampler = PopularitySampler(SeenItems(x), counts, alpha)
    rng = np.random.default_rng(2024)
    n = 200_000
    for user, excluded in ((0, []), (1, [1, 2, 3, 4, 5])):
        items = sampler.sample(np.full(n, user), rng)
        observed = np.bincount(items, minlength=n_items)
        p = counts.astype(float) ** alpha
        p[counts == 0] = 0.0
        p[excluded] = 0.0
        support = p > 0
        assert observed[~support].sum() == 0
        expected = n * p[support] / p[support].sum()
        assert chisquare(observed[support], expected).pvalue > 0.001


def test_allot_gives_exact_counts_spread_evenly() -> None:
    assert np.bincount(allot(8, np.array([0.5, 0.5])), minlength=2).tolist() == [4, 4]
    assert np.bincount(allot(10, np.array([0.3, 0.7, 0.0])), minlength=3).tolist() == [3, 7, 0]
    assert np.bincount(allot(7, np.array([1, 1, 1]) / 3), minlength=3).tolist() == [3, 2, 2]
    assert allot(0, np.array([0.5, 0.5])).size == 0
    kinds = allot(400, np.array([0.5, 0.5])).reshape(-1, 4)
    # every block of 4 rows (one positive's negatives) gets both kinds
    assert ((kinds == 0).any(axis=1) & (kinds == 1).any(axis=1)).all()


def make_mixer(seen: SeenItems, counts: np.ndarray, off: str | None = None) -> NegativeMixer:
    samplers = {"neg_uniform": UniformSampler(seen), "neg_pop": PopularitySampler(seen, counts, 1.0)}
    if off:
        samplers[off] = None
    return NegativeMixer(samplers, {"neg_uniform": 0.25, "neg_pop": 0.75})


def test_mixer_honours_ratio_and_shares_exactly() -> None:
    x = heavy_history()
    seen = SeenItems(x)
    counts = np.bincount(x.indices, minlength=60)
    positives = np.repeat(np.arange(40), np.diff(x.indptr))
    users = np.repeat(positives, 4)  # 4 negatives per positive
    out_users, items, codes = make_mixer(seen, counts).sample(users, np.random.default_rng(5))
    n = 4 * x.nnz
    assert out_users.size == n
    np.testing.assert_array_equal(out_users, users)
    got = {SOURCES[c]: int(k) for c, k in zip(*np.unique(codes, return_counts=True), strict=True)}
    assert got == {"neg_uniform": n // 4, "neg_pop": n - n // 4}  # 4 * nnz divides exactly
    assert not x.toarray()[out_users, items].any()


@pytest.mark.parametrize("off", ["neg_uniform", "neg_pop"])
def test_switching_a_kind_off_removes_exactly_its_rows(off: str) -> None:
    x = heavy_history()
    seen = SeenItems(x)
    counts = np.bincount(x.indices, minlength=60)
    users = np.repeat(np.arange(40), 12)
    full = make_mixer(seen, counts).sample(users, np.random.default_rng(9))
    part = make_mixer(seen, counts, off=off).sample(users, np.random.default_rng(9))
    keep = full[2] != SOURCES.index(off)
    for a, b in zip(full, part, strict=True):
        np.testing.assert_array_equal(a[keep], b)


def test_mixer_rejects_shares_not_summing_to_one() -> None:
    seen = SeenItems(heavy_history())
    with pytest.raises(ValueError, match="sum to 1"):
        NegativeMixer({"neg_uniform": UniformSampler(seen)}, {"neg_uniform": 0.5})
    with pytest.raises(ValueError, match="unknown kind"):
        NegativeMixer({"neg_other": None}, {"neg_other": 1.0})


def test_hard_negatives_best_first_with_false_negative_guard() -> None:
    x = sp.csr_matrix((np.ones(2), ([0, 2], [3, 0])), shape=(3, 10))
    cand_users = np.array([0, 0, 0, 0, 0, 1])
    cand_items = np.array([5, 6, 7, 3, 8, 9])
    scores = np.array([0.9, 0.4, 0.3, 0.45, 0.5, 0.95])
    # user 0: item 5 scores above the guard, item 3 is seen; items 8 (0.5, at the guard), 6, 7 remain
    # user 1: its only candidate is above the guard; user 2 has none
    sampler = HardNegativeSampler(cand_users, cand_items, scores, SeenItems(x), max_score=0.5)
    users = np.array([0, 1, 0, 2, 0, 0, 0])
    expected = [8, MISSING, 6, MISSING, 7, 8, 6]
    assert sampler.sample(users).tolist() == expected


def test_cooccurrence_positives_match_hand_computed_cosines() -> None:
    # items: 0 and 1 always together, 2 with 1 once, 3 alone
    x = sp.csr_matrix(np.array([
        [1, 1, 0, 0],
        [1, 1, 1, 0],
        [0, 0, 0, 1],
        [1, 0, 0, 0],  # the sparse user: only item 0
        [0, 1, 0, 0],  # the sparse user: only item 1
    ], dtype=np.float32))
    users, items, conf = CooccurrenceSampler(x, per_user=2, min_score=0.0).sample(np.array([3, 4]))
    # item counts n = [3, 3, 1, 1]; C01 = 2, C02 = 1, C12 = 1, C13 = C03 = C23 = 0
    # user 3 (item 0): cos(0,1) = 2/3, cos(0,2) = 1/sqrt(3)
    # user 4 (item 1): cos(1,0) = 2/3, cos(1,2) = 1/sqrt(3)
    assert users.tolist() == [3, 3, 4, 4]
    assert items.tolist() == [1, 2, 0, 2]
    np.testing.assert_allclose(conf, [2 / 3, 1 / np.sqrt(3), 2 / 3, 1 / np.sqrt(3)], rtol=1e-6)
    _, items, _ = CooccurrenceSampler(x, per_user=5, min_score=0.6).sample(np.array([3]))
    assert items.tolist() == [1]


def test_bucket_table_is_the_exact_inverse_cdf() -> None:
    pytest.importorskip("pyspark")
    from recsys.sampling.spark import bucket_table

    weights = np.array([0.0, 3.0, 1e-9, 0.5, 0.0, 7.0, 2.0, 0.0])
    table, n_buckets = bucket_table(weights)
    assert n_buckets == 128  # 16 x 8 items, a power of two
    cdf = np.cumsum(weights) / weights.sum()
    u = np.concatenate([np.random.default_rng(0).random(5000), cdf[:-1][weights[:-1] > 0], [0.0]])
    u = u[u < 1.0]
    # the equi-join on the bucket, then the one row whose [lo, hi) holds u (as Spark does it)
    joined = table.merge(pd.DataFrame({"u": u, "bucket": np.floor(u * n_buckets).astype(np.int64)}), on="bucket")
    hit = joined[(joined["lo"] <= joined["u"]) & (joined["u"] < joined["hi"])]
    assert len(hit) == len(u)  # exactly one item per draw
    expected = np.searchsorted(cdf, hit["u"].to_numpy(), side="right")
    np.testing.assert_array_equal(hit["item_idx"].to_numpy(), expected)
    assert set(table["item_idx"]) == {1, 2, 3, 5, 6}  # zero-weight items are never drawn

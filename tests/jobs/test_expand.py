"""Sample expansion (recsys.sampling.expansion) and the expand job: weights and sources on a hand-made fixture,
ablations, ratios, end to end."""

from __future__ import annotations

import copy
import json
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp

from jobs import expand as job
from recsys.core.columns import (
    CONFIDENCE,
    ITEM_IDX,
    SCORE,
    SOURCES,
    SYN_USER,
    USER_IDX,
)
from recsys.core.config import ConfigError, load_config
from recsys.core.lake import (
    CANDIDATES_FILE,
    EXAMPLES_FILE,
    EXAMPLES_SUMMARY_FILE,
    GAN_POS_FILE,
    QUALITY_FILE,
    SYN_USERS_FILE,
    Lake,
    write_json,
)
from recsys.sampling import allot
from recsys.sampling.augment_outputs import Triples
from recsys.sampling.examples import EXAMPLES_SCHEMA, Examples
from recsys.sampling.expansion import expand, train_positives
from recsys.sampling.transform import content_nearest, transformed_histories
from tests.support import write_tables

DS = "2026-01-31"
N_USERS, N_ITEMS = 4, 8
THRESHOLD = 0.5

# user 0: items 0 1 2; user 1: 1 3; user 2: 0 (sparse); user 3: 2 4 5 6. Weights differ on purpose.
TRAIN = {(0, 0): 5.0, (0, 1): 1.0, (0, 2): 1.5, (1, 1): 1.0, (1, 3): 3.0, (2, 0): 1.0,
         (3, 2): 1.0, (3, 4): 1.0, (3, 5): 2.0, (3, 6): 1.0}
GAN_POS = [(2, 3, 0.8), (2, 0, 0.9), (1, 6, 0.6)]  # (2, 0) is a train positive already
SYN_USERS = [(0, 1, 0.7), (0, 5, 0.5), (1, 7, 1.0)]
CANDIDATES = [(0, 5, 0.4), (0, 6, 0.9), (0, 7, 0.3), (1, 0, 0.2), (2, 5, 0.45), (3, 7, 0.1), (3, 1, 0.2)]


def csr(entries: dict[tuple[int, int], float]) -> sp.csr_matrix:
    rows, cols = zip(*entries, strict=True)
    return sp.csr_matrix((list(entries.values()), (rows, cols)), shape=(N_USERS, N_ITEMS), dtype=np.float32)


def triples(rows: list[tuple[int, int, float]]) -> Triples:
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    return Triples(a[:, 0].astype(np.int64), a[:, 1].astype(np.int32), a[:, 2].astype(np.float32))


def expand_config(**changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(load_config()["expand"])
    config.update(negatives_per_positive=2, synthetic_weight=0.5, cooc_min_history=2, cooc_per_user=5,
                  cooc_min_score=0.05, negative_mix={"neg_uniform": 0.5, "neg_pop": 0.5, "neg_hard": 0.0})
    config["sources"] = dict.fromkeys(SOURCES, True) | changes.pop("sources", {})
    config.update(changes)
    return config


def run(config: dict[str, Any], seed: int = 1) -> Examples:
    return expand(train_positives(csr(TRAIN)), triples(GAN_POS), triples(SYN_USERS), triples(CANDIDATES),
                  config, THRESHOLD, np.random.default_rng(seed))


CONTENT_POS = [(3, 7, 0.5), (1, 7, 0.8), (0, 0, 0.9)]  # (0, 0) is a train positive already
TRANSFORM = {"copies_per_user": 2, "min_history": 2, "mask_share": 0.3, "crop_share": 0.8, "substitute_share": 0.5}
# every item's content-nearest item: its pair (0-1, 2-3, ...), at similarity 0.9
NEAREST = (np.arange(N_ITEMS) ^ 1, np.full(N_ITEMS, 0.9, np.float32))


def run_every_source(config: dict[str, Any], seed: int = 1) -> Examples:
    """As :func:`run`, with content positives and transformed histories too."""
    return expand(train_positives(csr(TRAIN)), triples(GAN_POS), triples(SYN_USERS), triples(CANDIDATES),
                  config, THRESHOLD, np.random.default_rng(seed), content_pos=triples(CONTENT_POS),
                  transform=TRANSFORM, nearest=NEAREST)


def frame(examples: Examples) -> pd.DataFrame:
    return examples.table().to_pandas()


def rows_of(df: pd.DataFrame, source: str) -> set[tuple[int, int, int, float]]:
    part = df[df["source"] == source]
    return {(int(u), int(i), int(lab), round(float(w), 6))
            for u, i, lab, w in part[["user_idx", "item_idx", "label", "weight"]].itertuples(index=False)}


def history_of(user: int) -> set[int]:
    if user < N_USERS:
        return {i for (u, i) in TRAIN if u == user}
    return {i for (s, i, _) in SYN_USERS if s == user - N_USERS}


def test_weights_and_sources_on_a_hand_made_fixture() -> None:
    df = frame(run(expand_config(sources={"neg_hard": False})))
    assert rows_of(df, "real_pos") == {(u, i, 1, 1.0) for (u, i) in TRAIN}
    assert rows_of(df, "gan_pos") == {(2, 3, 1, 0.4), (1, 6, 1, 0.3)}  # 0.5 x confidence; (2, 0) dropped
    assert rows_of(df, "syn_user") == {(4, 1, 1, 0.35), (4, 5, 1, 0.25), (5, 7, 1, 0.5)}
    # user 2 (one item, 0) co-occurs via user 0 with items 1 and 2: cos = 1 / sqrt(2 * 2) = 0.5 each
    assert rows_of(df, "cooc_pos") == {(2, 1, 1, 0.25), (2, 2, 1, 0.25)}
    negatives = df[df["label"] == 0]
    real = negatives[negatives["user_idx"] < N_USERS]
    syn = negatives[negatives["user_idx"] >= N_USERS]
    # 2 per train positive (10) and per synthetic item (3), half uniform, half popularity
    assert real["source"].value_counts().to_dict() == {"neg_uniform": 10, "neg_pop": 10}
    assert syn["source"].value_counts().to_dict() == {"neg_uniform": 3, "neg_pop": 3}
    assert (real["weight"] == 1.0).all() and np.allclose(syn["weight"], 0.5)
    per_user = negatives.groupby("user_idx").size().to_dict()
    assert per_user == {0: 6, 1: 4, 2: 2, 3: 8, 4: 4, 5: 2}
    for user, item in negatives[["user_idx", "item_idx"]].itertuples(index=False):
        assert item not in history_of(user)
    assert df["user_idx"].is_monotonic_increasing
    assert run(expand_config()).table().schema.equals(EXAMPLES_SCHEMA)


def test_hard_negatives_take_best_candidates_below_the_guard() -> None:
    config = expand_config(sources={"neg_uniform": False, "neg_pop": False},
                           negative_mix={"neg_uniform": 0.0, "neg_pop": 0.0, "neg_hard": 1.0})
    df = frame(run(config))
    hard = df[df["source"] == "neg_hard"]
    got = {u: hard.loc[hard["user_idx"] == u, "item_idx"].tolist() for u in range(N_USERS)}
    # user 0: item 6 scores 0.9 > 0.5, skipped; 5 (0.4) then 7 (0.3), cycling over 3 positives x 2
    assert got == {0: [5, 7, 5, 7, 5, 7], 1: [0, 0, 0, 0], 2: [5, 5], 3: [1, 7, 1, 7, 1, 7, 1, 7]}
    assert (df[df["user_idx"] >= N_USERS]["label"] == 1).all()  # synthetic users: no hard candidates


@pytest.mark.parametrize("source", SOURCES)
def test_switching_a_source_off_removes_exactly_its_rows(source: str) -> None:
    mix = {"neg_uniform": 0.25, "neg_pop": 0.25, "neg_hard": 0.5}
    full = frame(run_every_source(expand_config(negative_mix=mix), seed=3))
    part = frame(run_every_source(expand_config(negative_mix=mix, sources={source: False}), seed=3))
    removed = full["source"] == source
    if source == "syn_user":  # without synthetic users their negatives go too
        removed |= (full["user_idx"] >= N_USERS) & (full["source"] != "transform_pos")
    assert removed.any()
    pd.testing.assert_frame_equal(full[~removed].reset_index(drop=True), part)


def test_ratio_and_shares_exact_and_no_accidental_hits_on_random_data() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 60, 25
    dense = (rng.random((n_users, n_items)) < 0.35).astype(np.float32)
    dense[5] = 1.0
    dense[5, 3] = 0.0  # user 5 has seen every item but 3: all its negatives must be item 3
    train = train_positives(sp.csr_matrix(dense))
    syn = Triples(np.repeat(np.arange(10), 6), rng.integers(0, n_items, 60).astype(np.int32),
                  rng.random(60).astype(np.float32))
    config = expand_config(negatives_per_positive=3, negative_mix={"neg_uniform": 0.3, "neg_pop": 0.7,
                                                                   "neg_hard": 0.0},
                           sources={"neg_hard": False, "cooc_pos": False, "gan_pos": False})
    ex = expand(train, Triples.empty(), syn, Triples.empty(), config, THRESHOLD, np.random.default_rng(8))
    neg = ex.labels == 0
    real = neg & (ex.users < n_users)
    n_real = 3 * train.nnz
    assert real.sum() == n_real
    assert (np.bincount(ex.users[real], minlength=n_users) == 3 * np.diff(train.indptr)).all()
    n_uniform = int((ex.codes[real] == SOURCES.index("neg_uniform")).sum())
    assert n_uniform in (int(np.floor(0.3 * n_real)), int(np.ceil(0.3 * n_real)))
    assert dense[ex.users[real], ex.items[real]].sum() == 0  # no negative is a train positive
    assert (ex.items[real & (ex.users == 5)] == 3).all()
    syn_history = sp.csr_matrix((np.ones(60), (syn.users, syn.items)), shape=(10, n_items)).toarray() > 0
    syn_neg = neg & (ex.users >= n_users)
    assert syn_neg.sum() == 3 * syn_history.sum()  # per distinct item of a synthetic user
    assert not syn_history[ex.users[syn_neg] - n_users, ex.items[syn_neg]].any()


def test_same_seed_same_examples_other_seed_other_negatives() -> None:
    a, b, c = (frame(run(expand_config(), seed=s)) for s in (4, 4, 5))
    pd.testing.assert_frame_equal(a, b)
    assert not a["item_idx"].equals(c["item_idx"])


def test_config_with_shares_not_summing_to_one_is_refused() -> None:
    with pytest.raises(ConfigError, match="expand.negative_mix"):
        load_config(["expand.negative_mix={neg_uniform: 0.5, neg_pop: 0.2, neg_hard: 0.0}"], environ={})


# --- end to end on a tiny lake ---------------------------------------------------------------------

def write_parquet(rows: list[tuple[int, int, float]], names: tuple[str, str, str], path: Any) -> None:
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    pq.write_table(pa.table({names[0]: a[:, 0].astype(np.int32), names[1]: a[:, 1].astype(np.int32),
                             names[2]: a[:, 2].astype(np.float32)}), path)


def make_lake(lake: Lake, gan_pos: list[tuple[int, int, float]] = GAN_POS) -> None:
    valid = csr({(2, 7): 1.0, (0, 3): 1.0})  # never used by expand
    write_tables(lake, DS, csr(TRAIN), valid, csr({(1, 5): 1.0}))
    augment = lake.path("augment", DS)
    augment.mkdir(parents=True)
    write_parquet(gan_pos, (USER_IDX, ITEM_IDX, CONFIDENCE), augment / GAN_POS_FILE)
    write_parquet(SYN_USERS, (SYN_USER, ITEM_IDX, CONFIDENCE), augment / SYN_USERS_FILE)
    write_parquet(CANDIDATES, (USER_IDX, ITEM_IDX, SCORE), augment / CANDIDATES_FILE)
    write_json(augment / QUALITY_FILE, {"enabled": True, "confidence_threshold": THRESHOLD})  # as augment records it


def cooc_by_hand(min_history: int, per_user: int, min_score: float) -> set[tuple[int, int, float]]:
    """Co-occurrence positives of the fixture from dense cosines (independent of the sampler)."""
    x = (csr(TRAIN).toarray() > 0).astype(float)
    co = x.T @ x
    n = np.diag(co)
    norm = np.sqrt(np.outer(n, n))
    cos = np.divide(co, norm, out=np.zeros_like(co), where=norm > 0)
    out = set()
    for u in range(N_USERS):
        own = np.flatnonzero(x[u])
        if len(own) >= min_history:
            continue
        score = cos[own].mean(axis=0)
        ranked = sorted((j for j in range(N_ITEMS) if j not in own and score[j] > 0 and score[j] >= min_score),
                        key=lambda j: (-score[j], j))
        out |= {(u, j, round(float(score[j]), 6)) for j in ranked[:per_user]}
    return out


def test_expand_job_end_to_end_every_source_weighted_and_no_accidental_hits(lake: Lake) -> None:
    make_lake(lake)
    # a tiny catalogue: fewer co-occurrence positives, so every user keeps some popular item unseen
    args = ["--ds", DS, "--set", "expand.negatives_per_positive=2", "--set", "expand.synthetic_weight=0.5",
            "--set", "expand.cooc_min_history=3", "--set", "expand.cooc_per_user=1"]
    result = job.main(args)
    out = lake.path("examples", DS)
    table = pq.read_table(out / EXAMPLES_FILE)
    assert table.schema.equals(EXAMPLES_SCHEMA)
    df = table.to_pandas()
    summary = json.loads((out / EXAMPLES_SUMMARY_FILE).read_text())
    # default config: every source on, negative mix 0.4 / 0.4 / 0.2; 2 negatives per train positive
    # (20: 8 / 8 / 4 hard) and per synthetic item (6: 3 / 3, synthetic users have no hard candidates)
    cooc = cooc_by_hand(3, 1, 0.05)
    assert len(cooc) == 2  # users 1 and 2
    # a hard row is kept when its user has a candidate below the guard that is no positive of theirs
    taken = set(TRAIN) | {(u, i) for u, i, _ in GAN_POS} | {(u, i) for u, i, _ in cooc}
    eligible = {u for u, i, score in CANDIDATES if score <= THRESHOLD and (u, i) not in taken}
    rows = np.repeat([u for u in range(N_USERS) for (v, _) in TRAIN if v == u], 2)
    hard_rows = rows[allot(rows.size, np.array([0.4, 0.4, 0.2])) == 2]
    assert hard_rows.size == 4
    n_hard = sum(u in eligible for u in hard_rows)
    assert 0 < n_hard < 4  # a candidate that became a co-occurrence positive is no hard negative
    expected_rows = {"real_pos": 10, "gan_pos": 2, "cooc_pos": len(cooc), "syn_user": 3, "content_pos": 0,
                     "transform_pos": 0, "neg_uniform": 11, "neg_pop": 11, "neg_hard": n_hard}
    assert result["rows"] == len(df) == summary["rows"] == sum(expected_rows.values())
    assert result["sources"] == expected_rows and summary["engine"] == "numpy"
    assert {s: v["rows"] for s, v in summary["sources"].items()} == expected_rows
    # weights per source, row by row
    assert rows_of(df, "real_pos") == {(u, i, 1, 1.0) for (u, i) in TRAIN}
    assert rows_of(df, "gan_pos") == {(2, 3, 1, 0.4), (1, 6, 1, 0.3)}
    assert rows_of(df, "syn_user") == {(4, 1, 1, 0.35), (4, 5, 1, 0.25), (5, 7, 1, 0.5)}
    assert rows_of(df, "cooc_pos") == {(u, i, 1, round(0.5 * c, 6)) for u, i, c in cooc}
    negatives = df[df["label"] == 0]
    assert set(negatives["source"]) == {"neg_uniform", "neg_pop", "neg_hard"}
    real = negatives["user_idx"] < N_USERS
    assert (negatives.loc[real, "weight"] == 1.0).all() and (negatives.loc[~real, "weight"] == 0.5).all()
    expected_per_user = {0: 6, 1: 4, 2: 2, 3: 8, 4: 4, 5: 2}
    for u in hard_rows[[u not in eligible for u in hard_rows]]:
        expected_per_user[int(u)] -= 1
    assert negatives.groupby("user_idx").size().to_dict() == expected_per_user
    hard = negatives[negatives["source"] == "neg_hard"]
    allowed = {(u, i) for u, i, score in CANDIDATES if score <= THRESHOLD}
    assert set(zip(hard["user_idx"], hard["item_idx"], strict=True)) <= allowed
    # no accidental hits: no negative is a train pair, nor any positive of the table, of its user
    positives = set(zip(df.loc[df["label"] == 1, "user_idx"], df.loc[df["label"] == 1, "item_idx"], strict=True))
    for user, item in negatives[["user_idx", "item_idx"]].itertuples(index=False):
        assert (user, item) not in positives and item not in history_of(user)
    assert summary["sources"]["gan_pos"]["weight_sum"] == pytest.approx(0.5 * (0.8 + 0.6))
    assert summary["sources"]["neg_pop"]["weight_sum"] == pytest.approx(8 * 1.0 + 3 * 0.5)
    assert not ((df["user_idx"] == 2) & (df["item_idx"] == 7) & (df["label"] == 1)).any()  # valid unused
    assert lake.dates("examples") == [DS] and not any((lake.root / "_staging").iterdir())
    job.main(args)  # a rerun replaces the date with identical rows
    assert pq.read_table(out / EXAMPLES_FILE).equals(table)


@pytest.mark.spark
def test_spark_engine_gives_exact_counts_and_no_accidental_hits(lake: Lake, spark: Any) -> None:
    make_lake(lake)
    args = ["--ds", DS, "--set", "expand.negatives_per_positive=3", "--set", "expand.spark_threshold=0",
            "--set", "expand.sources.neg_hard=false", "--set", "expand.sources.cooc_pos=false",
            "--set", "expand.cooc_min_history=0"]
    result = job.main(args)
    summary = json.loads((lake.path("examples", DS) / EXAMPLES_SUMMARY_FILE).read_text())
    df = pd.read_parquet(lake.path("examples", DS) / EXAMPLES_FILE)
    assert summary["engine"] == "spark"
    # 30 real negatives allotted 12 / 12 / 6 (hard, switched off: dropped); 9 synthetic ones 5 / 4
    assert result["sources"]["neg_uniform"] == 12 + 5 and result["sources"]["neg_pop"] == 12 + 4
    negatives = df[df["label"] == 0]
    per_user = negatives.groupby("user_idx").size().to_dict()
    rows = np.repeat([u for u in range(N_USERS) for (v, _) in TRAIN if v == u], 3)
    kept = rows[allot(rows.size, np.array([0.4, 0.4, 0.2])) != 2]  # the hard share is switched off
    assert per_user == {**{u: int((kept == u).sum()) for u in range(N_USERS)}, 4: 6, 5: 3}
    positives = set(zip(df.loc[df["label"] == 1, "user_idx"], df.loc[df["label"] == 1, "item_idx"], strict=True))
    for user, item in negatives[["user_idx", "item_idx"]].itertuples(index=False):
        assert (user, item) not in positives and item not in history_of(user)
    counts = np.bincount([i for (_, i) in TRAIN], minlength=N_ITEMS)
    popular = negatives.loc[negatives["source"] == "neg_pop", "item_idx"]
    assert (counts[popular.to_numpy()] > 0).all()  # popularity never draws an item with no train count


def test_expand_job_names_the_file_and_row_of_bad_input(lake: Lake) -> None:
    make_lake(lake, gan_pos=[(2, 3, 0.8), (1, 99, 0.6)])
    with pytest.raises(ValueError, match=r"gan_pos\.parquet: row 1: column item_idx = 99"):
        job.main(["--ds", DS])
    assert lake.dates("examples") == []


# --- rebalancing -----------------------------------------------------------------------------------

def test_per_user_cap_keeps_exactly_cap_positives_and_their_negatives() -> None:
    rng = np.random.default_rng(2)
    dense = (rng.random((30, 40)) < 0.3).astype(np.float32)
    dense[0] = 0.0
    dense[0, :25] = 1.0  # a heavy user
    train = train_positives(sp.csr_matrix(dense))
    syn = Triples(np.repeat(np.arange(3), 8), np.tile(np.arange(8, dtype=np.int32), 3) + 30,
                  np.full(24, 0.5, np.float32))
    config = expand_config(negatives_per_positive=3, max_positives_per_user=6,
                           sources={"neg_hard": False, "cooc_pos": False, "gan_pos": False})
    ex = expand(train, Triples.empty(), syn, Triples.empty(), config, THRESHOLD, np.random.default_rng(5))
    n_users = train.shape[0]
    length = np.concatenate([np.diff(train.indptr), np.full(3, 8)])  # real users, then synthetic ones
    pos = np.bincount(ex.users[ex.labels == 1], minlength=n_users + 3)
    neg = np.bincount(ex.users[ex.labels == 0], minlength=n_users + 3)
    np.testing.assert_array_equal(pos, np.minimum(length, 6))
    np.testing.assert_array_equal(neg, 3 * np.minimum(length, 6))
    kept = ex.items[(ex.users == 0) & (ex.labels == 1)]
    assert set(kept.tolist()) <= set(range(25)) and len(set(kept.tolist())) == 6
    real_neg = (ex.labels == 0) & (ex.users < n_users)
    assert not dense[ex.users[real_neg], ex.items[real_neg]].any()  # capped-away positives stay unseen
    other = expand(train, Triples.empty(), syn, Triples.empty(), config, THRESHOLD, np.random.default_rng(6))
    assert set(other.items[(other.users == 0) & (other.labels == 1)].tolist()) != set(kept.tolist())


def test_long_tail_boost_weights_positives_by_inverse_popularity() -> None:
    beta = 0.5
    df = frame(run(expand_config(long_tail_beta=beta)))
    counts = {i: sum(1 for (_, j) in TRAIN if j == i) for i in range(N_ITEMS)}
    raw = {i: max(c, 1) ** -beta for i, c in counts.items()}
    mean = sum(counts[i] * raw[i] for i in raw) / len(TRAIN)  # over the train interactions
    real = df[df["source"] == "real_pos"]
    expected = [raw[i] / mean for i in real["item_idx"]]
    np.testing.assert_allclose(real["weight"], expected, rtol=1e-6)
    assert real["weight"].sum() == pytest.approx(len(TRAIN))  # total real weight unchanged
    gan = df[df["source"] == "gan_pos"].set_index("item_idx")["weight"]
    assert gan[3] == pytest.approx(0.5 * 0.8 * raw[3] / mean) and gan[6] == pytest.approx(0.5 * 0.6 * raw[6] / mean)
    negatives = df[df["label"] == 0]
    assert set(negatives["weight"].round(6)) == {1.0, 0.5}  # negatives are not boosted
    plain = frame(run(expand_config(long_tail_beta=0.0)))
    pd.testing.assert_frame_equal(plain.drop(columns="weight"), df.drop(columns="weight"))


@pytest.mark.parametrize("ratio", [0.25, 1.0, 3.0])
def test_positive_negative_weight_ratio_is_met_exactly(ratio: float) -> None:
    plain = frame(run(expand_config()))
    df = frame(run(expand_config(pos_neg_weight_ratio=ratio)))
    pos, neg = df["label"] == 1, df["label"] == 0
    assert df.loc[pos, "weight"].sum() / df.loc[neg, "weight"].sum() == pytest.approx(ratio, rel=1e-6)
    np.testing.assert_array_equal(df.loc[pos, "weight"], plain.loc[pos, "weight"])
    factor = plain.loc[pos, "weight"].sum() / (ratio * plain.loc[neg, "weight"].sum())
    np.testing.assert_allclose(df.loc[neg, "weight"], plain.loc[neg, "weight"] * factor, rtol=1e-6)


@pytest.mark.parametrize(("key", "value"), [("max_positives_per_user", -1), ("long_tail_beta", -0.5),
                                            ("pos_neg_weight_ratio", 0), ("spark_threshold", 1.5)])
def test_bad_rebalancing_knobs_are_refused(key: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=f"expand.{key}"):
        load_config([f"expand.{key}={value}"], environ={})


@pytest.mark.spark
def test_spark_expand_matches_numpy_counts_on_random_data(spark: Any) -> None:
    rng = np.random.default_rng(3)
    dense = (rng.random((25, 30)) < 0.3).astype(np.float32)
    dense[4] = 1.0
    dense[4, 7] = 0.0  # user 4 has seen every item but 7: its uniform negatives must be item 7
    train = train_positives(sp.csr_matrix(dense))
    config = expand_config(negatives_per_positive=2, sources={"neg_hard": False, "cooc_pos": False},
                           negative_mix={"neg_uniform": 0.5, "neg_pop": 0.5, "neg_hard": 0.0})
    args = (train, Triples.empty(), Triples.empty(), Triples.empty(), config, THRESHOLD)
    numpy_ex = expand(*args, np.random.default_rng(1))
    spark_ex = expand(*args, np.random.default_rng(1), spark)
    for ex in (numpy_ex, spark_ex):
        neg = ex.labels == 0
        assert not dense[ex.users[neg], ex.items[neg]].any()
    np.testing.assert_array_equal(numpy_ex.users, spark_ex.users)
    np.testing.assert_array_equal(numpy_ex.codes, spark_ex.codes)
    uniform = (spark_ex.users == 4) & (spark_ex.codes == SOURCES.index("neg_uniform"))
    assert uniform.any() and (spark_ex.items[uniform] == 7).all()


def test_content_positives_weighted_by_confidence_and_never_negatives() -> None:
    df = frame(run_every_source(expand_config(sources={"transform_pos": False})))
    assert rows_of(df, "content_pos") == {(3, 7, 1, 0.25), (1, 7, 1, 0.4)}  # 0.5 x confidence; (0, 0) dropped
    negatives = df[df["label"] == 0]
    assert not ({(3, 7), (1, 7)} & set(zip(negatives["user_idx"], negatives["item_idx"], strict=True)))


def test_transform_rows_are_pseudo_users_copying_real_histories() -> None:
    df = frame(run_every_source(expand_config()))
    rows = df[df["source"] == "transform_pos"]
    n_syn = 2  # pseudo-users come after the synthetic users
    assert len(rows) and (rows["user_idx"] >= N_USERS + n_syn).all() and (rows["label"] == 1).all()
    assert {round(float(w), 6) for w in rows["weight"]} <= {0.5, 0.45}  # 0.5 x 1.0 kept, 0.5 x 0.9 substituted
    assert not (df[df["label"] == 0]["user_idx"] >= N_USERS + n_syn).any()  # copies get no negatives


def test_transformed_histories_perturb_real_histories_only() -> None:
    rng = np.random.default_rng(0)
    n_users, n_items = 40, 30
    train = train_positives(sp.csr_matrix((rng.random((n_users, n_items)) < 0.3).astype(np.float32)))
    nearest = np.roll(np.arange(n_items), 1)  # item i's content-nearest is i - 1, at similarity 0.8
    similarity = np.full(n_items, 0.8, np.float32)
    config = {"copies_per_user": 3, "min_history": 4, "mask_share": 0.2, "crop_share": 0.7, "substitute_share": 0.3}
    copies, origin = transformed_histories(train, nearest, similarity, config, np.random.default_rng(1))
    assert len(origin) == copies.users.max() + 1 and set(np.unique(copies.users)) == set(range(len(origin)))
    eligible = np.flatnonzero(np.diff(train.indptr) >= 4)
    assert set(origin) <= set(eligible) and np.all(np.diff(origin) >= 0)
    substituted = 0
    for p, user in enumerate(origin):
        history = set(train.indices[train.indptr[user]:train.indptr[user + 1]].tolist())
        mine = copies.users == p
        items, confidence = copies.items[mine], copies.values[mine]
        assert len(set(items.tolist())) == len(items)  # each item once
        for item, c in zip(items.tolist(), confidence.tolist(), strict=True):
            if item in history and c == 1.0:
                continue
            # anything else is a substitute: the content-nearest item of one of the user's items
            assert c == pytest.approx(0.8) and nearest[(item + 1) % n_items] == item and (item + 1) % n_items in history
            substituted += 1
        # cropping: no copy keeps more than ceil(0.7 n) of the user's items
        assert len(items) <= np.ceil(0.7 * len(history))
    assert substituted > 0
    again = transformed_histories(train, nearest, similarity, config, np.random.default_rng(1))
    assert np.array_equal(again[0].items, copies.items) and np.array_equal(again[1], origin)
    # without substitution every row is an item of the copied user
    plain, origin = transformed_histories(train, nearest, similarity, {**config, "substitute_share": 0.0},
                                          np.random.default_rng(1))
    assert (plain.values == 1.0).all()
    assert all(train[origin[p], i] > 0 for p, i in zip(plain.users, plain.items, strict=True))


def test_content_nearest_by_hand() -> None:
    vectors = np.array([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]], np.float32)
    nearest, similarity = content_nearest(vectors, np.array([0, 1, 2]))
    assert nearest.tolist() == [1, 0, 1, -1]  # item 3 is not a candidate
    np.testing.assert_allclose(similarity, [0.8, 0.8, 0.6, 0.0], rtol=1e-6)

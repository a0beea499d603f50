"""Tests of the expand job: weights and sources on a hand-made fixture, ablations, ratios, end to end."""

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
from jobs.common.columns import (
    CONFIDENCE,
    ITEM_ID,
    ITEM_IDX,
    SCORE,
    SOURCES,
    SYN_USER,
    USER_ID,
    USER_IDX,
)
from jobs.common.config import load_config
from jobs.common.lake import Lake
from jobs.common.matrices import MATRICES_FILE, save_matrices
from jobs.expand import Examples, Triples, expand, train_positives

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
    assert run(expand_config()).table().schema.equals(job.EXAMPLES_SCHEMA)


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
    full = frame(run(expand_config(negative_mix=mix), seed=3))
    part = frame(run(expand_config(negative_mix=mix, sources={source: False}), seed=3))
    removed = full["source"] == source
    if source == "syn_user":  # without synthetic users their negatives go too
        removed |= full["user_idx"] >= N_USERS
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
    with pytest.raises(ValueError, match="expand.negative_mix"):
        job.check_config(expand_config(negative_mix={"neg_uniform": 0.5, "neg_pop": 0.2}))


# --- end to end on a tiny lake ---------------------------------------------------------------------

def write_parquet(rows: list[tuple[int, int, float]], names: tuple[str, str, str], path: Any) -> None:
    a = np.array(rows, dtype=np.float64).reshape(-1, 3)
    pq.write_table(pa.table({names[0]: a[:, 0].astype(np.int32), names[1]: a[:, 1].astype(np.int32),
                             names[2]: a[:, 2].astype(np.float32)}), path)


def make_lake(lake: Lake, gan_pos: list[tuple[int, int, float]] = GAN_POS) -> None:
    tables = lake.path("tables", DS)
    tables.mkdir(parents=True)
    valid = csr({(2, 7): 1.0, (0, 3): 1.0})  # never used by expand
    test = csr({(1, 5): 1.0})
    save_matrices(tables / MATRICES_FILE, {"train": csr(TRAIN), "valid": valid, "test": test})
    pd.DataFrame({USER_ID: [f"u{i}" for i in range(N_USERS)], USER_IDX: np.arange(N_USERS)}).to_parquet(
        tables / "users.parquet")
    pd.DataFrame({ITEM_ID: [f"i{i}" for i in range(N_ITEMS)], ITEM_IDX: np.arange(N_ITEMS)}).to_parquet(
        tables / "items.parquet")
    augment = lake.path("augment", DS)
    augment.mkdir(parents=True)
    write_parquet(gan_pos, (USER_IDX, ITEM_IDX, CONFIDENCE), augment / job.GAN_POS_FILE)
    write_parquet(SYN_USERS, (SYN_USER, ITEM_IDX, CONFIDENCE), augment / job.SYN_USERS_FILE)
    write_parquet(CANDIDATES, (USER_IDX, ITEM_IDX, SCORE), augment / job.CANDIDATES_FILE)


def test_expand_job_end_to_end(lake: Lake) -> None:
    make_lake(lake)
    args = ["--ds", DS, "--set", "expand.negatives_per_positive=2", "--set", "expand.synthetic_weight=0.5"]
    result = job.main(args)
    out = lake.path("examples", DS)
    table = pq.read_table(out / job.EXAMPLES_FILE)
    assert table.schema.equals(job.EXAMPLES_SCHEMA)
    df = table.to_pandas()
    summary = json.loads((out / job.SUMMARY_FILE).read_text())
    # default sources: cooc_pos and neg_hard off
    expected_rows = {"real_pos": 10, "gan_pos": 2, "cooc_pos": 0, "syn_user": 3,
                     "neg_uniform": 13, "neg_pop": 13, "neg_hard": 0}
    assert result["rows"] == len(df) == summary["rows"] == sum(expected_rows.values())
    assert result["sources"] == expected_rows
    assert {s: v["rows"] for s, v in summary["sources"].items()} == expected_rows
    assert summary["sources"]["gan_pos"]["weight_sum"] == pytest.approx(0.5 * (0.8 + 0.6))
    assert summary["sources"]["syn_user"]["weight_sum"] == pytest.approx(0.5 * (0.7 + 0.5 + 1.0))
    assert summary["sources"]["neg_pop"]["weight_sum"] == pytest.approx(10 * 1.0 + 3 * 0.5)
    assert not ((df["user_idx"] == 2) & (df["item_idx"] == 7) & (df["label"] == 1)).any()  # valid unused
    assert lake.dates("examples") == [DS] and not any((lake.root / "_staging").iterdir())
    job.main(args)  # a rerun replaces the date with identical rows
    assert pq.read_table(out / job.EXAMPLES_FILE).equals(table)


def test_expand_job_names_the_file_and_row_of_bad_input(lake: Lake) -> None:
    make_lake(lake, gan_pos=[(2, 3, 0.8), (1, 99, 0.6)])
    with pytest.raises(ValueError, match=r"gan_pos\.parquet: row 1: column item_idx = 99"):
        job.main(["--ds", DS])
    assert lake.dates("examples") == []

"""Tests of jobs.tables: pairs and k-core, the split, stable indexes, stats and the CSR round trip."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import tables
from recsys.core.columns import INTERACTION_COLUMNS
from recsys.core.config import load_config
from recsys.core.lake import CATALOGUE_FILE, Lake, read_json
from recsys.core.matrices import MATRICES_FILE, load_matrices
from recsys.data.clean import CLEAN_ARROW_SCHEMA, QUARANTINE_ARROW_SCHEMA
from recsys.data.tables import (
    extend_index,
    gini,
    k_core,
    read_index,
    spark_xxhash64,
    split_interactions,
    table_stats,
    window_pairs,
)

UTC = dt.UTC


def at(day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 1, day, hour, minute, tzinfo=UTC)


def tables_cfg(**changes: Any) -> dict:
    cfg = copy.deepcopy(load_config()["tables"])
    cfg.update(changes)
    return cfg


@pytest.mark.spark
def test_window_pairs_keep_every_pair_with_the_positives_max_weight_and_times(spark) -> None:
    from pyspark.sql import functions as F

    rows = [
        ("u1", "i1", at(1, 9), 1, 1.0),
        ("u1", "i1", at(1, 8), 1, 5.0),
        ("u1", "i1", at(1, 6), 0, 0.0),  # a low rating before the positives: the pair's first sight
        ("u1", "i2", at(1, 9), 0, 0.0),  # a failed rating only: seen, not a positive
        ("u2", "i1", at(1, 7), 1, 1.5),
    ]
    clean = spark.createDataFrame(rows, "user_id string, item_id string, ts timestamp, label int, weight double")
    pairs = window_pairs(clean).select("user_id", "item_id", "positive", "weight", F.hour("ts"),
                                              F.hour("first_ts"), F.hour("seen_ts"))
    got = sorted(tuple(r) for r in pairs.collect())
    assert got == [("u1", "i1", True, 5.0, 9, 8, 6), ("u1", "i2", False, None, None, None, 9),
                   ("u2", "i1", True, 1.5, 7, 7, 7)]


def test_k_core_repeats_until_a_fixed_point_or_the_round_limit() -> None:
    edges = [("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u2", "i1"), ("u2", "i2"), ("u3", "i3"), ("u4", "i1"),
             ("u4", "i4")]
    users = np.array([int(u[1:]) - 1 for u, _ in edges])
    items = np.array([int(i[1:]) - 1 for _, i in edges])

    def run(rounds: int, min_user: int = 2, min_item: int = 2) -> list[tuple[str, str]]:
        keep = k_core(users, items, min_user, min_item, rounds)
        return [edge for edge, kept in zip(edges, keep, strict=True) if kept]

    # round 1 drops u3 (one item) and i4 (one user); then i3 and u4 fall below 2; round 3 changes nothing
    assert run(1) == [("u1", "i1"), ("u1", "i2"), ("u1", "i3"), ("u2", "i1"), ("u2", "i2"), ("u4", "i1")]
    assert run(10) == [("u1", "i1"), ("u1", "i2"), ("u2", "i1"), ("u2", "i2")]
    assert run(10, 1, 1) == edges
    assert run(10, 2, 1) == [e for e in edges if e[0] != "u3"]  # users only: u3 has one item
    assert k_core(np.zeros(0, int), np.zeros(0, int), 2, 2, 10).tolist() == []


def split_of(rows: list[tuple], *, has_timestamp: bool = True, seed: int = 42, **changes: Any) -> dict:
    users, items = (np.array([r[k] for r in rows], np.int32) for k in (0, 1))
    ts_us = np.array([int(r[2].timestamp() * 1_000_000) for r in rows], np.int64)
    got = split_interactions(users, items, ts_us, tables_cfg(**changes), has_timestamp=has_timestamp, seed=seed)
    return {(int(u), int(i)): str(s) for u, i, s in zip(users, items, got, strict=True)}


def test_ratio_split_holds_out_each_users_latest() -> None:
    rows = [(0, i, at(1, i)) for i in range(10)]  # 10 interactions: 8 / 1 / 1
    rows += [(1, 0, at(1)), (1, 1, at(2))]  # under min_user_interactions: all train
    rows += [(2, 5, at(3)), (2, 3, at(3)), (2, 9, at(2))]  # 3 interactions, a tie in time ordered by item_idx
    rows += [(3, i, at(1, i)) for i in range(20)]  # 20 at 0.25 / 0.25: 10 / 5 / 5
    got = split_of(rows, split="ratio", valid_ratio=0.1, test_ratio=0.1, min_user_interactions=3)
    assert {i: got[(0, i)] for i in range(10)} == {**{i: "train" for i in range(8)}, 8: "valid", 9: "test"}
    assert got[(1, 0)] == got[(1, 1)] == "train"
    assert (got[(2, 9)], got[(2, 3)], got[(2, 5)]) == ("train", "valid", "test")
    assert [sum(got[(3, i)] == s for i in range(20)) for s in ("train", "valid", "test")] == [16, 2, 2]

    quarter = split_of(rows[-20:], split="ratio", valid_ratio=0.25, test_ratio=0.25)
    assert [quarter[(3, i)] for i in range(20)] == ["train"] * 10 + ["valid"] * 5 + ["test"] * 5
    # 15 at 0.1: round(1.5) is 2 (half up, as Spark rounds), so 11 / 2 / 2; a ratio of 0 holds none out
    fifteen = split_of([(4, i, at(1, i)) for i in range(15)], split="ratio", valid_ratio=0.1, test_ratio=0.1)
    assert [fifteen[(4, i)] for i in range(15)] == ["train"] * 11 + ["valid"] * 2 + ["test"] * 2
    no_valid = split_of(rows[:10], split="ratio", valid_ratio=0.0, test_ratio=0.1)
    assert [no_valid[(0, i)] for i in range(10)] == ["train"] * 9 + ["test"]


def test_leave_last_n_and_the_seeded_split_without_timestamps() -> None:
    rows = [(0, i, at(1, i)) for i in range(5)] + [(1, i, at(1, i)) for i in range(4)]
    got = split_of(rows, split="leave_last_n", leave_last_n=2, min_user_interactions=3)
    assert [got[(0, i)] for i in range(5)] == ["train", "valid", "valid", "test", "test"]
    assert [got[(1, i)] for i in range(4)] == ["train"] * 4  # 2 + 2 held out would leave no train

    many = [(0, i, at(1)) for i in range(40)]
    first = split_of(many, has_timestamp=False, seed=1, split="ratio", valid_ratio=0.1, test_ratio=0.1)
    assert sorted(first.values()).count("test") == 4 and sorted(first.values()).count("valid") == 4
    assert split_of(many, has_timestamp=False, seed=1, split="ratio", valid_ratio=0.1, test_ratio=0.1) == first
    other = split_of(many, has_timestamp=False, seed=2, split="ratio", valid_ratio=0.1, test_ratio=0.1)
    assert other != first
    held = [i for i in range(40) if first[(0, i)] != "train"]
    assert held != list(range(32, 40))  # not the time (here: item) order


@pytest.mark.spark
def test_the_seeded_order_is_sparks_xxhash64(spark) -> None:
    from pyspark.sql import functions as F

    rng = np.random.default_rng(7)
    users = rng.integers(0, 2**31 - 1, 200, dtype=np.int32)
    items = np.r_[rng.integers(0, 5000, 199, dtype=np.int32), np.int32(-5)]
    frame = spark.createDataFrame([(int(u), int(i)) for u, i in zip(users, items, strict=True)], "u int, i int")
    expected = [r[0] for r in frame.select(F.xxhash64(F.lit(3), "u", "i")).collect()]
    assert spark_xxhash64(3, users, items).tolist() == expected


def test_split_rejects_an_unknown_method() -> None:
    with pytest.raises(ValueError, match="tables.split"):
        split_of([(0, 0, at(1))], split="random")


def test_extend_index_appends_in_first_seen_then_id_order(tmp_path) -> None:
    known = pa.table({"user_id": ["a", "b"], "user_idx": pa.array([0, 1], pa.int64())})
    unseen = pa.table({"user_id": ["c", "e", "d"], "first_ts": pa.array([at(3), at(2), at(2)], pa.timestamp("us", "UTC"))})
    got = extend_index(known, unseen, "user_id", "user_idx")
    assert got.to_pylist() == [
        {"user_id": "a", "user_idx": 0}, {"user_id": "b", "user_idx": 1}, {"user_id": "d", "user_idx": 2},
        {"user_id": "e", "user_idx": 3}, {"user_id": "c", "user_idx": 4},
    ]
    broken = tmp_path / "users.parquet"
    pq.write_table(pa.table({"user_id": ["a", "b"], "user_idx": pa.array([0, 2], pa.int64())}), broken)
    with pytest.raises(ValueError, match="0..1"):
        read_index(broken, "user_id", "user_idx")
    assert read_index(tmp_path / "missing.parquet", "user_id", "user_idx").num_rows == 0


def test_gini_and_stats_against_hand_computed_values() -> None:
    assert gini(np.array([2, 2, 2])) == 0.0
    assert gini(np.array([1, 3])) == pytest.approx(0.25)  # mean |xi - xj| / (2 mean) = 1 / 4
    users = np.array([0, 0, 0, 1, 2])
    items = np.array([0, 1, 2, 0, 0])
    splits = np.array(["train", "valid", "test", "train", "train"])
    day = 86_400_000_000
    ts = np.array([0, 0, 0, 5 * day, 4 * day])  # user 1 and only user 1 first seen on the last day (day 5)
    stats = table_stats(users, items, splits, ts, 5 * day)
    assert stats["interactions"] == {"train": 3, "valid": 1, "test": 1, "total": 5}
    assert (stats["users"], stats["items"], stats["density"]) == (3, 3, round(5 / 9, 8))
    assert stats["user_degree"] == {"min": 1.0, "p25": 1.0, "p50": 1.0, "p75": 2.0, "p90": 2.6, "p99": 2.96, "max": 3.0}
    assert stats["item_gini"] == round(gini(np.array([3, 1, 1])), 6) == round(4 / 15, 6)
    assert stats["cold_user_share"] == round(1 / 3, 6) and stats["cold_item_share"] == 0.0


def write_clean(lake: Lake, ds: str, rows: list[tuple], quarantined: list[tuple] = ()) -> None:
    """Committed clean and quarantine partitions: clean (user, item, ts, weight[, label]) rows, label 1
    unless given, and quarantined raw (user, item, ts text, reason) rows."""
    names = CLEAN_ARROW_SCHEMA.names
    full = [(r[0], r[1], "view", None, r[2], r[4] if len(r) > 4 else 1, r[3]) for r in rows]
    table = pa.Table.from_pylist([dict(zip(names, r, strict=True)) for r in full], schema=CLEAN_ARROW_SCHEMA)
    path = lake.path("clean", ds)
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-00000.parquet")
    raw = [{"user_id": u, "item_id": i, "event": "view", "value": None, "ts": ts, "reason": reason}
           for u, i, ts, reason in quarantined]
    path = lake.path("quarantine", ds)
    path.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(raw, schema=QUARANTINE_ARROW_SCHEMA), path / "part-00000.parquet")


def run_tables(ds: str, *flags: str) -> dict:
    return tables.main(["--ds", ds, "--set", "window_days=2", "--set", "tables.min_user_core=1", *flags])


@pytest.mark.spark
def test_job_keeps_indexes_stable_across_dates_reruns_and_backfills(lake: Lake) -> None:
    write_clean(lake, "2026-01-01", [("ub", "ix", at(1, 10), 1.0), ("ua", "ix", at(1, 9), 2.0),
                                      ("ua", "iy", at(1, 9, 30), 1.0)])
    write_clean(lake, "2026-01-02", [("uc", "iz", at(2, 8), 5.0), ("ub", "iz", at(2, 9), 1.0),
                                      ("ua", "ix", at(2, 7), 1.0)])
    first = run_tables("2026-01-01")
    assert (first["new_users"], first["new_items"]) == (2, 2)
    index = lake.path("index")
    users = lambda: pq.read_table(index / "users.parquet").to_pylist()  # noqa: E731
    items = lambda: pq.read_table(index / "items.parquet").to_pylist()  # noqa: E731
    assert users() == [{"user_id": "ua", "user_idx": 0}, {"user_id": "ub", "user_idx": 1}]

    second = run_tables("2026-01-02")
    assert (second["new_users"], second["new_items"]) == (1, 1)
    assert users()[2] == {"user_id": "uc", "user_idx": 2} and items()[2] == {"item_id": "iz", "item_idx": 2}
    out = lake.path("tables", "2026-01-02")
    files = ("interactions/part-00000.parquet", MATRICES_FILE, "users.parquet", "items.parquet", "_stats.json")
    before = {name: (out / name).read_bytes() for name in files}

    interactions = pq.read_table(out / "interactions")
    assert interactions.schema.types == [pa.int32(), pa.int32(), pa.float32(), pa.timestamp("us", tz="UTC"), pa.string()]
    assert tuple(interactions.column_names) == INTERACTION_COLUMNS  # the lake's contract (recsys.core.lake.CONTRACT)
    # (ua, ix) was seen on both days: the largest weight and the latest ts
    assert interactions.select(["user_idx", "item_idx", "weight"]).to_pylist() == [
        {"user_idx": 0, "item_idx": 1, "weight": 1.0}, {"user_idx": 0, "item_idx": 0, "weight": 2.0},
        {"user_idx": 1, "item_idx": 0, "weight": 1.0}, {"user_idx": 1, "item_idx": 2, "weight": 1.0},
        {"user_idx": 2, "item_idx": 2, "weight": 5.0},
    ]
    stats = read_json(out / "_stats.json")
    assert (stats["users"], stats["items"], stats["indexed_users"], stats["interactions"]["total"]) == (3, 3, 3, 5)
    assert stats["cold_user_share"] == round(1 / 3, 6) and stats["cold_item_share"] == round(1 / 3, 6)

    m = load_matrices(lake, "2026-01-02")
    assert (m.n_users, m.n_items) == (3, 3) and list(m.user_ids) == ["ua", "ub", "uc"]
    everything = (m.train + m.valid + m.test).toarray()
    assert everything.tolist() == [[2.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 0.0, 5.0]]
    assert m.train.nnz == 5  # nobody reaches min_user_interactions=3

    assert run_tables("2026-01-02")["new_users"] == 0
    assert {name: (out / name).read_bytes() for name in files} == before

    # a backfill of an earlier date appends its unseen user after everyone, even though it came first
    write_clean(lake, "2025-12-31", [("u0", "ix", at(1) - dt.timedelta(hours=1), 1.0)])
    backfill = run_tables("2025-12-31")
    assert (backfill["new_users"], backfill["new_items"], backfill["indexed_users"]) == (1, 0, 4)
    assert [u["user_id"] for u in users()] == ["ua", "ub", "uc", "u0"]
    assert load_matrices(lake, "2025-12-31").train.toarray().tolist() == [[0.0] * 3] * 3 + [[1.0, 0.0, 0.0]]


@pytest.mark.spark
def test_every_user_and_interaction_of_the_window_is_history_whatever_the_label_or_the_k_core(lake: Lake) -> None:
    # ua: two positives; ub: one positive (below the k-core of 2) and a low rating; uc: only a low rating
    write_clean(lake, "2026-01-01", [("ua", "ix", at(1, 9), 2.0), ("ua", "iy", at(1, 10), 1.0),
                                      ("ub", "ix", at(1, 11), 1.0), ("ub", "iz", at(1, 8), 0.0, 0),
                                      ("uc", "iy", at(1, 12), 0.0, 0)])
    result = run_tables("2026-01-01", "--set", "tables.min_user_core=2", "--set", "tables.nonpositive_weight=0.25")
    assert (result["users"], result["window_users"], result["indexed_users"], result["indexed_items"]) == (1, 3, 3, 3)
    index = lake.path("index")
    # numbered by first sight, any label: iz (08:00) before ix (09:00) before iy
    assert pq.read_table(index / "users.parquet").column("user_id").to_pylist() == ["ub", "ua", "uc"]
    assert pq.read_table(index / "items.parquet").column("item_id").to_pylist() == ["iz", "ix", "iy"]
    m = load_matrices(lake, "2026-01-01")
    # the k-core keeps only ua's positives for training
    assert (m.train + m.valid + m.test).toarray().tolist() == [[0, 0, 0], [0, 2, 1], [0, 0, 0]]
    assert m.history.toarray().tolist() == [[0.25, 1, 0], [0, 2, 1], [0, 0, 0.25]]
    assert m.seen.toarray().tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m.served_users().tolist() == [0, 1, 2]
    # weight 0 (the default): low ratings stay seen but leave the model's input
    run_tables("2026-01-01", "--set", "tables.min_user_core=2")
    m = load_matrices(lake, "2026-01-01")
    assert m.history.toarray().tolist() == [[0, 1, 0], [0, 2, 1], [0, 0, 0]]
    assert m.seen.toarray().tolist() == [[1, 1, 0], [0, 1, 1], [0, 0, 1]]


@pytest.mark.spark
def test_a_bots_quarantined_rows_are_seen_but_never_trained_on(lake: Lake) -> None:
    # ub sent too many events on 01-01 (quarantined as bot) and one clean event on 01-02; bad rows are not seen
    write_clean(lake, "2026-01-01", [("ua", "ix", at(1, 9), 1.0), ("ua", "iy", at(1, 10), 1.0)],
                quarantined=[(" ub ", "iy", "2026-01-01T08:00:00Z", "bot"), ("ub", "iz", None, "bot"),
                             ("ua", "iq", "2026-01-01T07:00:00Z", "out_of_range")])
    write_clean(lake, "2026-01-02", [("ub", "ix", at(2, 9), 1.0)])
    run_tables("2026-01-02")
    m = load_matrices(lake, "2026-01-02")
    assert list(m.user_ids) == ["ub", "ua"] and list(m.item_ids) == ["iz", "iy", "ix"]  # iz at 01-01 midnight
    assert (m.train + m.valid + m.test).toarray().tolist() == [[0, 0, 1], [0, 1, 1]]
    assert m.seen.toarray().tolist() == [[1, 1, 1], [0, 1, 1]]
    assert m.history.toarray().tolist() == [[0, 0, 1], [0, 1, 1]]


def write_catalogue(lake: Lake, ds: str, item_ids: list[str]) -> None:
    """A committed catalogue partition holding ``item_ids`` (texts and hashes do not matter to the tables)."""
    path = lake.path("catalogue", ds)
    path.mkdir(parents=True)
    pq.write_table(pa.table({"item_id": item_ids, "title": item_ids, "text": item_ids, "content_hash": item_ids}),
                   path / CATALOGUE_FILE)


@pytest.mark.spark
def test_catalogue_items_get_indexes_before_their_first_interaction_and_keep_them(lake: Lake) -> None:
    write_clean(lake, "2026-01-01", [("ua", "iy", at(1, 10), 1.0), ("ub", "ix", at(1, 9), 1.0)])
    # ix has interactions already; i2, i10 and iz have none yet
    write_catalogue(lake, "2026-01-01", ["iz", "ix", "i2", "i10"])
    first = run_tables("2026-01-01")
    items = lambda: pq.read_table(lake.path("index") / "items.parquet").column("item_id").to_pylist()  # noqa: E731
    # the window's ids by first sight, then the catalogue's new ones in id order (as text: i10 before i2)
    assert items() == ["ix", "iy", "i10", "i2", "iz"]
    assert (first["new_items"], first["catalogue_items"], first["new_from_catalogue"]) == (5, 4, 3)
    stats = read_json(lake.path("tables", "2026-01-01") / "_stats.json")
    assert (stats["catalogue_items"], stats["catalogue_items_unseen"], stats["new_from_catalogue"]) == (4, 3, 3)
    assert (stats["items"], stats["indexed_items"]) == (2, 5)
    m = load_matrices(lake, "2026-01-01")
    assert m.n_items == 5 and list(m.item_ids) == ["ix", "iy", "i10", "i2", "iz"]
    assert m.seen.toarray().tolist() == [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0]]  # ub, ua; empty columns for the catalogue's

    # iz's first interactions come a day later: it keeps its index; the window's new iw comes before the
    # catalogue's new ia
    write_clean(lake, "2026-01-02", [("uc", "iz", at(2, 8), 2.0), ("ua", "iw", at(2, 9), 1.0)])
    write_catalogue(lake, "2026-01-02", ["iz", "ix", "i2", "i10", "ia"])
    second = run_tables("2026-01-02")
    assert items() == ["ix", "iy", "i10", "i2", "iz", "iw", "ia"]
    assert (second["new_items"], second["new_from_catalogue"]) == (2, 1)
    m = load_matrices(lake, "2026-01-02")
    assert m.seen.toarray()[:, 4].tolist() == [0, 0, 1]  # uc's interaction lands in iz's column
    assert run_tables("2026-01-02")["new_items"] == 0  # a rerun numbers nothing

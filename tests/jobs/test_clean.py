"""Tests of jobs.clean: each rule on a few inline rows, reconciliation, and the job over a tiny lake."""

from __future__ import annotations

import copy
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import clean
from recsys.core.columns import RAW_COLUMNS
from recsys.core.config import load_config
from recsys.core.lake import RECONCILIATION_FILE, Lake, read_json, write_json
from recsys.data.clean import REASONS, clean_events, dates_to_clean, reconcile

DAY = "2026-01-10"
T = "2026-01-10T08:00:00Z"
RAW_SCHEMA = "user_id string, item_id string, event string, value string, ts string, ds string"


def clean_cfg(**changes: Any) -> dict:
    cfg = copy.deepcopy(load_config()["clean"])
    cfg.update(changes)
    return cfg


def run_clean(spark, rows: list[tuple], *, has_timestamp: bool = True, **changes: Any):
    """Clean inline raw rows (ds defaults to DAY); return (clean rows, quarantine rows, outcomes)."""
    from pyspark.sql import functions as F

    rows = [r if len(r) == 6 else (*r, DAY) for r in rows]
    result = clean_events(spark.createDataFrame(rows, RAW_SCHEMA), clean_cfg(**changes), has_timestamp=has_timestamp)
    cleaned = result.clean.withColumn("ts", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"))
    return (
        sorted((tuple(r) for r in cleaned.collect()), key=repr),
        sorted((tuple(r) for r in result.quarantine.collect()), key=repr),
        {(r["ds"], r["outcome"]): r["n"] for r in result.outcomes.collect()},
    )


@pytest.mark.spark
def test_row_rules_quarantine_with_the_first_reason_and_map_feedback(spark) -> None:
    valid = [
        ("  U1 ", "I1", " View ", None, T),
        ("u2", "i2", "view", None, "2026-01-10T23:59:59Z"),
        ("u3", "i5", "rating", "4.0", T),
        ("u3", "i6", "rating", "3.5", T),
        ("u4", "i1", "rating", " 0.5 ", T),
        ("u3", "i7", "cart", "2", T),
        ("u3", "i8", "purchase", None, T),
        ("u:3", "tt-0.1_x", "click", "0", T),
        ("u 2", "i#1", "view", None, T),  # spaces inside and any printable character are fine in an id
        ("用户", "B00ABCDxyz", "view", None, T),  # ids keep their case and script
        ("u2", "i" * 256, "view", None, T),  # at the maximum length
    ]
    bad = [
        (None, "i1", "view", None, T, "null_id"),
        ("u2", "  ", "view", None, T, "null_id"),
        (None, "i\x00", "junk", None, "bad", "null_id"),  # every rule fails: the first reason wins
        ("u\x002", "i1", "view", None, T, "bad_id"),
        ("u2", "i\t1", "view", None, T, "bad_id"),
        ("u2\n", "i1", "view", None, T, "bad_id"),  # the trim takes spaces only
        ("u2", "i" * 257, "view", None, T, "bad_id"),
        ("u2", "i1", "like", None, T, "unknown_event"),
        ("u2", "i1", None, None, T, "unknown_event"),
        ("u2", "i1", "view", None, "yesterday", "bad_timestamp"),
        ("u2", "i1", "view", None, "2026-01-10 08:00:00", "bad_timestamp"),
        ("u2", "i1", "view", None, None, "bad_timestamp"),
        ("u2", "i1", "view", None, "2026-01-11T00:00:00Z", "future_timestamp"),
        ("u3", "i1", "rating", "5.5", T, "out_of_range"),
        ("u3", "i2", "rating", None, T, "out_of_range"),
        ("u3", "i3", "purchase", "-1", T, "out_of_range"),
        ("u3", "i4", "click", "abc", T, "out_of_range"),
        ("u3", "i4", "click", "NaN", T, "out_of_range"),
    ]
    got_clean, got_quarantine, outcomes = run_clean(spark, valid + [r[:5] for r in bad])

    at = "2026-01-10 08:00:00"
    assert got_clean == sorted([
        ("U1", "I1", "view", None, at, 1, 1.0, DAY),
        ("u2", "i2", "view", None, "2026-01-10 23:59:59", 1, 1.0, DAY),
        ("u3", "i5", "rating", 4.0, at, 1, 1.0, DAY),
        ("u3", "i6", "rating", 3.5, at, 0, 0.0, DAY),
        ("u4", "i1", "rating", 0.5, at, 0, 0.0, DAY),
        ("u3", "i7", "cart", 2.0, at, 1, 3.0, DAY),
        ("u3", "i8", "purchase", None, at, 1, 5.0, DAY),
        ("u:3", "tt-0.1_x", "click", 0.0, at, 1, 1.5, DAY),
        ("u 2", "i#1", "view", None, at, 1, 1.0, DAY),
        ("用户", "B00ABCDxyz", "view", None, at, 1, 1.0, DAY),
        ("u2", "i" * 256, "view", None, at, 1, 1.0, DAY),
    ], key=repr)
    # quarantine keeps the raw strings untouched
    assert got_quarantine == sorted(((*r, DAY) for r in bad), key=repr)
    assert outcomes == {
        (DAY, "clean"): 11, (DAY, "duplicates"): 0, (DAY, "null_id"): 3, (DAY, "bad_id"): 4,
        (DAY, "unknown_event"): 2, (DAY, "bad_timestamp"): 3, (DAY, "future_timestamp"): 1, (DAY, "out_of_range"): 5,
    }


@pytest.mark.spark
def test_future_timestamp_allows_the_configured_slack(spark) -> None:
    rows = [("u1", "i1", "view", None, "2026-01-11T00:00:59Z"), ("u1", "i2", "view", None, "2026-01-11T00:01:00Z")]
    got_clean, got_quarantine, _ = run_clean(spark, rows, max_future_seconds=60)
    assert [r[1] for r in got_clean] == ["i1"]
    assert got_quarantine == [("u1", "i2", "view", None, "2026-01-11T00:01:00Z", "future_timestamp", DAY)]


@pytest.mark.spark
def test_dedupe_keeps_the_first_and_measures_from_the_previous_kept_one(spark) -> None:
    rows = [
        ("u1", "i1", "view", None, "2026-01-10T00:00:00Z"),
        (" u1 ", "i1", "VIEW", None, "2026-01-10T00:00:06Z"),  # same after normalising: within 10 s of 00:00
        ("U1", "i1", "view", None, "2026-01-10T00:00:07Z"),  # another user: ids keep their case
        ("u1", "i1", "view", None, "2026-01-10T00:00:10Z"),  # 10 s after the kept one: inclusive, a duplicate
        ("u1", "i1", "view", None, "2026-01-10T00:00:12Z"),  # 6 s after 00:06 but 12 s after the kept 00:00
        ("u1", "i1", "view", None, "2026-01-10T00:00:20Z"),  # 8 s after the kept 00:12
        ("u1", "i1", "click", None, "2026-01-10T00:00:05Z"),  # another event kind is not a repeat
        ("u1", "i2", "view", None, "2026-01-10T01:00:00Z"),
        ("u1", "i2", "view", None, "2026-01-10T01:00:00Z"),  # byte-identical copy
        ("u1", "i2", "view", None, "2026-01-10T01:00:00Z"),  # byte-identical copy
        ("u\x079", "i1", "view", None, T),  # an identical bad row is quarantined once, its copy is a duplicate
        ("u\x079", "i1", "view", None, T),
        ("u1", "i1", "view", None, "2026-01-11T00:00:02Z", "2026-01-11"),  # dates dedupe on their own
    ]
    got_clean, got_quarantine, outcomes = run_clean(spark, rows, dedupe_seconds=10)
    assert sorted((r[1], r[2], r[4], r[7]) for r in got_clean) == sorted([
        ("i1", "view", "2026-01-10 00:00:00", DAY),
        ("i1", "view", "2026-01-10 00:00:12", DAY),
        ("i1", "click", "2026-01-10 00:00:05", DAY),
        ("i1", "view", "2026-01-10 00:00:07", DAY),
        ("i2", "view", "2026-01-10 01:00:00", DAY),
        ("i1", "view", "2026-01-11 00:00:02", "2026-01-11"),
    ])
    assert got_quarantine == [("u\x079", "i1", "view", None, T, "bad_id", DAY)]
    assert outcomes == {
        (DAY, "clean"): 5, (DAY, "duplicates"): 6, (DAY, "bad_id"): 1,
        ("2026-01-11", "clean"): 1, ("2026-01-11", "duplicates"): 0,
    }


@pytest.mark.spark
def test_bots_are_users_above_the_daily_limit_of_distinct_valid_events(spark) -> None:
    later = "2026-01-10T08:00:05Z"  # 5 s after T: a repeat within clean.dedupe_seconds
    bot = [("bot", f"i{k}", "view", None, T) for k in range(5)] + [
        ("bot", "i0", "view", None, T),  # identical copy: not counted, a duplicate
        ("bot", "i1", "view", None, later),  # a repeat: not counted, but quarantined with the bot's rows
        ("bot", "i4", "poke", None, T),  # invalid rows do not count and keep their own reason
    ]
    # delivered twice, plus a repeat: 9 valid rows, but 4 distinct events, at the limit
    at_limit = [("u1", f"i{k}", "view", None, T) for k in range(4)] * 2 + [("u1", "i0", "view", None, later)]
    next_day = [("bot", "i1", "view", None, "2026-01-11T08:00:00Z", "2026-01-11")]
    got_clean, got_quarantine, outcomes = run_clean(spark, bot + at_limit + next_day, bot_events_per_day=4)
    assert sorted((r[0], r[1], r[7]) for r in got_clean) == sorted(
        [("u1", f"i{k}", DAY) for k in range(4)] + [("bot", "i1", "2026-01-11")]
    )
    assert got_quarantine == sorted(
        [("bot", f"i{k}", "view", None, T, "bot", DAY) for k in range(5)]
        + [("bot", "i1", "view", None, later, "bot", DAY), ("bot", "i4", "poke", None, T, "unknown_event", DAY)],
        key=repr,
    )
    assert outcomes == {
        (DAY, "clean"): 4, (DAY, "duplicates"): 1 + 5, (DAY, "bot"): 6, (DAY, "unknown_event"): 1,
        ("2026-01-11", "clean"): 1, ("2026-01-11", "duplicates"): 0,
    }


@pytest.mark.spark
def test_events_delivered_twice_do_not_make_a_bot(spark) -> None:
    stamp = [f"2026-01-10T{k // 3600:02d}:{k // 60 % 60:02d}:{k % 60:02d}Z" for k in range(0, 3000, 2)]
    twice = [("u1", f"i{k}", "view", None, stamp[k]) for k in range(600)] * 2
    distinct = [("u2", f"i{k}", "click", None, stamp[k]) for k in range(1500)]
    got_clean, got_quarantine, outcomes = run_clean(spark, twice + distinct, bot_events_per_day=1000)
    assert sorted({r[0] for r in got_clean}) == ["u1"] and len(got_clean) == 600
    assert {(r[0], r[5]) for r in got_quarantine} == {("u2", "bot")} and len(got_quarantine) == 1500
    assert outcomes == {(DAY, "clean"): 600, (DAY, "duplicates"): 600, (DAY, "bot"): 1500}


@pytest.mark.spark
def test_without_timestamps_a_missing_ts_is_the_dates_midnight(spark) -> None:
    rows = [
        ("u1", "i1", "view", None, None),
        ("u1", "i1", "view", None, "  "),  # blank is missing too, and a repeat of the row above
        ("u1", "i2", "view", None, "2026-01-10T05:00:00Z"),
        ("u1", "i3", "view", None, "soon"),
    ]
    got_clean, got_quarantine, outcomes = run_clean(spark, rows, has_timestamp=False)
    assert [(r[1], r[4]) for r in got_clean] == [("i1", "2026-01-10 00:00:00"), ("i2", "2026-01-10 05:00:00")]
    assert got_quarantine == [("u1", "i3", "view", None, "soon", "bad_timestamp", DAY)]
    assert outcomes[(DAY, "duplicates")] == 1


def test_reconcile_adds_up_and_refuses_a_leak() -> None:
    outcomes = [("d1", "clean", 5), ("d1", "duplicates", 2), ("d1", "bot", 3), ("d1", "bad_id", 1)]
    report = reconcile({"d1": 11, "d2": 0}, outcomes, ["d1", "d2"])
    assert report["d1"] == {
        "input": 11, "clean": 5, "duplicates": 2, "quarantined": 4,
        "by_reason": {"null_id": 0, "bad_id": 1, "unknown_event": 0, "bad_timestamp": 0,
                      "future_timestamp": 0, "out_of_range": 0, "bot": 3},
    }
    assert report["d2"]["input"] == 0 and report["d2"]["quarantined"] == 0
    with pytest.raises(ValueError, match="d1.*does not add up"):
        reconcile({"d1": 12}, outcomes, ["d1"])


def test_dates_to_clean_takes_the_run_date_and_the_windows_uncleaned_dates() -> None:
    raw = ["2025-12-01", "2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    assert dates_to_clean("2026-01-03", raw, [], 3) == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert dates_to_clean("2026-01-03", raw, raw[:4], 3) == ["2026-01-03"]
    assert dates_to_clean("2026-01-04", raw, raw[:3], 3) == ["2026-01-03", "2026-01-04"]
    with pytest.raises(FileNotFoundError, match="2026-01-05"):
        dates_to_clean("2026-01-05", raw, [], 3)


def write_raw(lake: Lake, ds: str, rows: list[tuple]) -> None:
    table = pa.table({c: pa.array([r[k] for r in rows], pa.string()) for k, c in enumerate(RAW_COLUMNS)})
    path = lake.path("raw", ds)
    path.mkdir(parents=True)
    pq.write_table(table, path / "part-0.parquet")


@pytest.mark.spark
def test_job_cleans_the_window_once_and_commits_each_date(lake: Lake) -> None:
    write_raw(lake, "2025-12-01", [("u1", "i1", "view", None, "2025-12-01T00:00:00Z")])
    write_raw(lake, "2026-01-01", [("u1", "i1", "view", None, "2026-01-01T10:00:00Z")] * 2)
    write_raw(lake, "2026-01-02", [("u1", "i1", "view", None, "2026-01-02T10:00:00Z"), ("u2", None, "view", None, None)])
    write_raw(lake, "2026-01-03", [("u1", "i1", "rating", "5", "2026-01-03T10:00:00Z")])
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True, "name": "test"})

    facts = clean.main(["--ds", "2026-01-03", "--set", "window_days=3"])
    assert (facts["dates_cleaned"], facts["first_date"], facts["last_date"]) == (3, "2026-01-01", "2026-01-03")
    assert (facts["input"], facts["clean"], facts["duplicates"], facts["quarantined"]) == (5, 3, 1, 1)
    assert lake.dates("clean") == lake.dates("quarantine") == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert read_json(lake.path("clean", "2026-01-02") / RECONCILIATION_FILE) == {
        "input": 2, "clean": 1, "duplicates": 0, "quarantined": 1,
        "by_reason": {"null_id": 1, "bad_id": 0, "unknown_event": 0, "bad_timestamp": 0,
                      "future_timestamp": 0, "out_of_range": 0, "bot": 0},
    }
    table = pq.read_table(lake.path("clean", "2026-01-03"))
    assert table.schema.field("ts").type == pa.timestamp("us", tz="UTC")
    assert table.select(["user_id", "item_id", "event", "value", "label", "weight"]).to_pylist() == [
        {"user_id": "u1", "item_id": "i1", "event": "rating", "value": 5.0, "label": 1, "weight": 1.0}
    ]
    # a date with nothing quarantined still has a readable, empty partition with the schema
    empty = pq.read_table(lake.path("quarantine", "2026-01-01"))
    assert empty.num_rows == 0 and empty.column_names == [*RAW_COLUMNS, "reason"]
    assert not any((lake.root / "_staging").iterdir())

    again = clean.main(["--ds", "2026-01-03", "--set", "window_days=3"])
    assert again["dates_cleaned"] == 1 and again["ds_counts"] == facts["ds_counts"]
    assert pq.read_table(lake.path("clean", "2026-01-03")).equals(table)


def dirty_rows(seed: int, n: int) -> list[tuple]:
    """``n`` random raw rows over two dates, drawn from pools of good, variant and broken values."""
    import random

    rng = random.Random(seed)
    users = ["u1", " u1 ", "U1", "u2", "u3", "bot", "bot", "bot", None, "", "u\x004", "u" * 300]
    items = ["i1", "I1", "i2", "i3", None, " ", "i\t9"]
    events = ["view", " View", "CLICK", "cart", "purchase", "rating", "rating", "poke", None]
    values = [None, None, "4", "4.5", "2", "0.1", "9", "-1", "abc", "NaN", " "]
    rows = []
    for _ in range(n):
        ds = rng.choice([DAY, "2026-01-11"])
        second = rng.randrange(0, 120)  # two minutes: plenty of repeats within dedupe_seconds
        ts = rng.choice([f"{ds}T08:{second // 60:02d}:{second % 60:02d}Z"] * 6 + [None, "junk", "2026-01-12T00:00:00Z"])
        row = (rng.choice(users), rng.choice(items), rng.choice(events), rng.choice(values), ts, ds)
        rows.append(row)
        if rng.random() < 0.1:
            rows.append(row)  # an exact copy
    return rows


@pytest.mark.spark
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reconciliation_adds_up_on_random_dirty_input(spark, seed: int) -> None:
    from collections import Counter

    rows = dirty_rows(seed, 300)
    frame = spark.createDataFrame(rows, RAW_SCHEMA)
    result = clean_events(frame, clean_cfg(bot_events_per_day=3), has_timestamp=True)
    outcomes = [(r["ds"], r["outcome"], r["n"]) for r in result.outcomes.collect()]
    inputs = Counter(r[5] for r in rows)
    report = reconcile(inputs, outcomes, [DAY, "2026-01-11"])  # raises when a date does not add up

    clean_rows = Counter(r["ds"] for r in result.clean.collect())
    quarantined = [tuple(r) for r in result.quarantine.collect()]
    for ds, entry in report.items():
        assert entry["clean"] == clean_rows[ds]
        assert entry["quarantined"] == sum(1 for r in quarantined if r[6] == ds)
        assert entry["clean"] + entry["duplicates"] + entry["quarantined"] == inputs[ds]
    # quarantined rows are input rows, raw strings untouched, each at most as often as it came in
    assert not Counter((*r[:5], r[6]) for r in quarantined) - Counter(rows)
    assert sum(r["by_reason"]["bot"] for r in report.values()) > 0  # the pools do exercise the bot rule


BAD_ROWS_CSV = f"""user,item,event,value,ts
u1,i1,view,,2026-01-10T08:00:00Z
u1,i1,view,,2026-01-10T08:00:00Z
u1,i1,view,,2026-01-10T08:00:05Z
u2,i2,rating,4.5,2026-01-10T09:00:00Z
,i1,view,,2026-01-10T08:00:00Z
u3,,view,,2026-01-10T08:00:00Z
u4\x01,i1,view,,2026-01-10T08:00:00Z
u4,{"i" * 300},click,,2026-01-10T08:00:00Z
u4,i1,like,,2026-01-10T08:00:00Z
u4,i1,,,2026-01-10T08:00:00Z
u4,i1,view,,yesterday
u4,i2,view,,2026-01-10T23:30:00Z
u4,i3,rating,7,2026-01-10T08:00:00Z
u4,i4,purchase,-2,2026-01-10T08:00:00Z
bot,i1,view,,2026-01-10T10:00:00Z
bot,i2,view,,2026-01-10T10:00:00Z
bot,i3,view,,2026-01-10T10:00:00Z
bot,i4,view,,2026-01-10T10:00:00Z
"""


@pytest.mark.spark
def test_a_file_of_bad_rows_landed_by_ingest_is_accounted_for_by_reason(lake: Lake, spark, tmp_path) -> None:
    from jobs import ingest

    src = tmp_path / "bad.csv"
    src.write_text(BAD_ROWS_CSV)
    ingest.main(["--format", "csv", "--src", str(src), "--mapping", "user=user,item=item,event=event,value=value,ts=ts"])
    assert lake.dates("raw") == [DAY]  # the unparseable "yesterday" lands on the log's last day
    # a cut-off an hour before midnight makes the 23:30 event a future one (ingest lands rows by their
    # own day, so a later timestamp can only reach the run's partition through such a cut-off)
    # a file of mostly bad rows: the quarantine-share gate is off here (tests/jobs/test_quality_gate.py has it)
    facts = clean.main(["--ds", DAY, "--set", "clean.max_future_seconds=-3600", "--set", "clean.bot_events_per_day=3",
                        "--set", "quality.max_quarantine_share=1"])
    expected = {
        "input": 18, "clean": 2, "duplicates": 2, "quarantined": 14,
        "by_reason": {"null_id": 2, "bad_id": 2, "unknown_event": 2, "bad_timestamp": 1,
                      "future_timestamp": 1, "out_of_range": 2, "bot": 4},
    }
    assert read_json(lake.path("clean", DAY) / RECONCILIATION_FILE) == expected == facts["ds_counts"]
    reasons = pq.read_table(lake.path("quarantine", DAY)).column("reason").to_pylist()
    assert sorted(set(reasons)) == sorted(REASONS)
    assert pq.read_table(lake.path("clean", DAY)).num_rows == 2

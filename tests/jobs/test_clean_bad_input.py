"""The bad-input matrix of jobs.clean (issue 16): hand-made raw rows, the reason each lands in, and a
reconciliation that adds up."""

from __future__ import annotations

import copy
import math
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import clean
from recsys.core.config import load_config
from recsys.core.lake import Lake, write_json
from recsys.data.clean import REASONS, clean_events, reconcile, to_feedback
from recsys.data.ids import bad_id_column, bad_ids, trim_id, trim_id_column, trim_ids
from recsys.data.rawzone import RAW_SCHEMA as RAW_ARROW_SCHEMA

DAY = "2026-01-10"
T = "2026-01-10T08:00:00Z"
RAW_SCHEMA = "user_id string, item_id string, event string, value string, ts string, ds string"
NO_REASONS = dict.fromkeys(REASONS, 0)


def clean_cfg(**changes: Any) -> dict:
    cfg = copy.deepcopy(load_config()["clean"])
    cfg.update(changes)
    return cfg


def outcome(clean_rows: int, duplicates: int = 0, **by_reason: int) -> dict:
    """The reconciliation entry expected for a date: input is what the other counts add up to."""
    quarantined = sum(by_reason.values())
    return {"input": clean_rows + duplicates + quarantined, "clean": clean_rows, "duplicates": duplicates,
            "quarantined": quarantined, "by_reason": {**NO_REASONS, **by_reason}}


def run(spark, rows: Any, *, value_kind: str = "rating", **changes: Any) -> tuple[list, list, dict]:
    """Clean raw rows of DAY (tuples, or a frame with ds); reconcile against the rows that went in.

    Returns:
        Clean rows as (user, item, event, value, ts text, label, weight), quarantined rows as
        (user, item, value, reason), both sorted, and DAY's reconciliation entry.
    """
    from pyspark.sql import functions as F

    frame = rows if not isinstance(rows, list) else spark.createDataFrame([(*r, DAY) for r in rows], RAW_SCHEMA)
    result = clean_events(frame, clean_cfg(**changes), has_timestamp=True, value_kind=value_kind)
    outcomes = [(r["ds"], r["outcome"], r["n"]) for r in result.outcomes.collect()]
    report = reconcile({DAY: frame.count()}, outcomes, [DAY])  # raises when it does not add up
    cleaned = result.clean.select(
        "user_id", "item_id", "event", "value", F.date_format("ts", "yyyy-MM-dd HH:mm:ss"), "label", "weight"
    )
    quarantined = result.quarantine.select("user_id", "item_id", "value", "reason")
    return (
        sorted((tuple(r) for r in cleaned.collect()), key=repr),
        sorted((tuple(r) for r in quarantined.collect()), key=repr),
        report[DAY],
    )


AT = "2026-01-10 08:00:00"


@pytest.mark.spark
def test_negative_nan_and_infinite_ratings_are_out_of_range(spark) -> None:
    rows = [("u1", f"i{k}", "rating", value, T) for k, value in enumerate(["-1", "NaN", "-0.5", "Infinity", "4.5"])]
    rows.append(("u1", "i9", "view", "-3", T))  # another event's value may be anything but negative
    got_clean, got_quarantine, report = run(spark, rows)
    assert got_clean == [("u1", "i4", "rating", 4.5, AT, 1, 1.0)]
    assert got_quarantine == sorted([
        ("u1", "i0", "-1", "out_of_range"), ("u1", "i1", "NaN", "out_of_range"), ("u1", "i2", "-0.5", "out_of_range"),
        ("u1", "i3", "Infinity", "out_of_range"), ("u1", "i9", "-3", "out_of_range"),
    ])
    assert report == outcome(1, out_of_range=5)


@pytest.mark.spark
def test_twenty_digit_ids_stay_strings_and_clean(spark) -> None:
    rows = [
        ("12345678901234567890", "98765432109876543210", "view", None, T),
        ("99999999999999999999", "00000000000000000001", "view", None, T),  # beyond int64, and leading zeros
    ]
    got_clean, got_quarantine, report = run(spark, rows)
    assert [(r[0], r[1]) for r in got_clean] == [
        ("12345678901234567890", "98765432109876543210"), ("99999999999999999999", "00000000000000000001"),
    ]
    assert got_quarantine == [] and report == outcome(2)


@pytest.mark.spark
def test_empty_and_blank_ids_are_null_id(spark) -> None:
    rows = [("", "i1", "view", None, T), ("   ", "i1", "view", None, T), (None, "i1", "view", None, T),
            ("u1", "", "view", None, T), ("u1", "  ", "view", None, T), ("u1", None, "view", None, T)]
    got_clean, got_quarantine, report = run(spark, rows)
    assert got_clean == [] and {r[3] for r in got_quarantine} == {"null_id"}
    assert report == outcome(0, null_id=6)


@pytest.mark.spark
def test_ids_differing_only_in_case_are_two_ids(spark) -> None:
    # the same event on the same item at the same second: merged by a lowercasing clean, one was a duplicate
    rows = [("B00ABCDxyz", "i1", "view", None, T), ("b00abcdxyz", "i1", "view", None, T),
            ("u1", "B00ABCDxyz", "view", None, T), ("u1", "b00abcdxyz", "view", None, T)]
    got_clean, got_quarantine, report = run(spark, rows)
    assert [(r[0], r[1]) for r in got_clean] == sorted(
        [("B00ABCDxyz", "i1"), ("b00abcdxyz", "i1"), ("u1", "B00ABCDxyz"), ("u1", "b00abcdxyz")], key=repr
    )
    assert got_quarantine == [] and report == outcome(4)


@pytest.mark.spark
def test_leading_zeros_make_another_id(spark) -> None:
    rows = [("007", "042", "view", None, T), ("7", "42", "view", None, T), (" 007 ", "042", "view", None, T)]
    got_clean, got_quarantine, report = run(spark, rows)
    # " 007 " trims to 007: the same event as the first row, a repeat
    assert [(r[0], r[1]) for r in got_clean] == [("007", "042"), ("7", "42")]
    assert got_quarantine == [] and report == outcome(2, duplicates=1)


@pytest.mark.spark
def test_timestamps_before_1970_are_valid_and_future_ones_are_not(spark) -> None:
    rows = [
        ("u1", "i1", "view", None, "1969-07-20T20:17:40Z"),
        ("u1", "i2", "view", None, "1900-01-01T00:00:00Z"),
        ("u1", "i3", "view", None, "2026-01-10T23:59:59Z"),  # the last second of the date
        ("u1", "i4", "view", None, "2026-01-11T00:00:00Z"),
        ("u1", "i5", "view", None, "2099-01-01T00:00:00Z"),
    ]
    got_clean, got_quarantine, report = run(spark, rows)
    assert [(r[1], r[4]) for r in got_clean] == [
        ("i1", "1969-07-20 20:17:40"), ("i2", "1900-01-01 00:00:00"), ("i3", "2026-01-10 23:59:59"),
    ]
    assert got_quarantine == [("u1", "i4", None, "future_timestamp"), ("u1", "i5", None, "future_timestamp")]
    assert report == outcome(3, future_timestamp=2)


@pytest.mark.spark
def test_duplicate_rows_are_duplicates(spark) -> None:
    row = ("u1", "i1", "click", None, T)
    rows = [row, row, row, ("u1", "i1", "click", None, "2026-01-10T08:00:09Z"), ("u1", "i1", "view", None, T)]
    got_clean, got_quarantine, report = run(spark, rows)
    assert [(r[2], r[4]) for r in got_clean] == [("click", AT), ("view", AT)]
    assert got_quarantine == [] and report == outcome(2, duplicates=3)


@pytest.mark.spark
def test_one_user_with_100000_events_a_day_is_a_bot_above_the_limit(spark) -> None:
    from pyspark.sql import functions as F

    heavy = spark.range(100_000).select(
        F.lit("heavy").alias("user_id"),
        F.concat(F.lit("i"), F.col("id").cast("string")).alias("item_id"),  # distinct events: none a repeat
        F.lit("view").alias("event"),
        F.lit(None).cast("string").alias("value"),
        F.lit(T).alias("ts"),
        F.lit(DAY).alias("ds"),
    )
    rows = heavy.unionByName(spark.createDataFrame([("u1", "i1", "view", None, T, DAY)], RAW_SCHEMA)).cache()
    for limit, expected in ((1000, outcome(1, bot=100_000)), (100_000, outcome(100_001))):  # at the limit: no bot
        result = clean_events(rows, clean_cfg(bot_events_per_day=limit), has_timestamp=True)
        result.flagged.persist()  # as the job does: the three counts below read it once
        outcomes = [(r["ds"], r["outcome"], r["n"]) for r in result.outcomes.collect()]
        assert reconcile({DAY: 100_001}, outcomes, [DAY])[DAY] == expected
        # counted in Spark: collecting 100,000 rows to the driver would take most of the test's time
        reasons = result.quarantine.groupBy("user_id", "reason").count().collect()
        by_user = {(r["user_id"], r["reason"]): r["count"] for r in reasons}
        assert by_user == ({("heavy", "bot"): 100_000} if limit == 1000 else {})
        assert result.clean.where("user_id = 'u1'").count() == 1
        result.flagged.unpersist()
    rows.unpersist()


@pytest.mark.spark
def test_a_count_source_keeps_zero_plays_and_weighs_counts_by_log1p(spark) -> None:
    plays = ["0", "3", "-1", "NaN", "Infinity", None, "abc", "250", " 3 "]
    rows = [(f"u{k}", "i1", "view", count, T) for k, count in enumerate(plays)]
    rows.append(("u9", "i1", "click", "3", T))  # the event's weight scales the count's
    got_clean, got_quarantine, report = run(spark, rows, value_kind="count")
    assert got_clean == sorted([
        ("u0", "i1", "view", 0.0, AT, 0, 0.0),
        ("u1", "i1", "view", 3.0, AT, 1, math.log(4.0)),
        ("u7", "i1", "view", 250.0, AT, 1, math.log(251.0)),  # no rating_range for counts
        ("u8", "i1", "view", 3.0, AT, 1, math.log(4.0)),
        ("u9", "i1", "click", 3.0, AT, 1, 1.5 * math.log(4.0)),
    ], key=repr)
    assert got_quarantine == sorted([
        ("u2", "i1", "-1", "out_of_range"), ("u3", "i1", "NaN", "out_of_range"),
        ("u4", "i1", "Infinity", "out_of_range"), ("u5", "i1", None, "out_of_range"),
        ("u6", "i1", "abc", "out_of_range"),
    ], key=repr)
    assert report == outcome(5, out_of_range=5)


@pytest.mark.spark
def test_a_source_without_values_never_checks_them(spark) -> None:
    rows = [("u1", "i1", "view", "-1", T), ("u2", "i1", "rating", "9", T), ("u3", "i1", "rating", None, T)]
    got_clean, got_quarantine, report = run(spark, rows, value_kind="none")
    assert [(r[0], r[5], r[6]) for r in got_clean] == [("u1", 1, 1.0), ("u2", 1, 1.0), ("u3", 1, 1.0)]
    assert got_quarantine == [] and report == outcome(3)


def test_an_unknown_value_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="value_kind must be one of rating, count, none, got 'plays'"):
        to_feedback(None, clean_cfg(), value_kind="plays")  # refused before the frame is touched


@pytest.mark.spark
def test_the_job_reads_value_kind_from_the_source_file(lake: Lake) -> None:
    import pyarrow as pa

    rows = [("u1", "i1", "view", "0", T), ("u2", "i1", "view", "12", T), ("u3", "i1", "view", "-4", T)]
    path = lake.path("raw", DAY)
    path.mkdir(parents=True)
    columns = zip(*rows, strict=True)
    pq.write_table(pa.table(dict(zip(RAW_ARROW_SCHEMA.names, columns, strict=True)), RAW_ARROW_SCHEMA),
                   path / "part-0.parquet")
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True, "value_kind": "count"})
    facts = clean.main(["--ds", DAY, "--set", "window_days=1"])
    assert facts["value_kind"] == "count" and facts["ds_counts"] == outcome(2, out_of_range=1)
    table = pq.read_table(lake.path("clean", DAY)).select(["user_id", "value", "label", "weight"]).to_pylist()
    assert table == [{"user_id": "u1", "value": 0.0, "label": 0, "weight": 0.0},
                     {"user_id": "u2", "value": 12.0, "label": 1, "weight": math.log(13.0)}]

    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True, "value_kind": "plays"})
    with pytest.raises(ValueError, match=r"value_kind in .*_source.json must be one of rating, count, none"):
        clean.main(["--ds", DAY, "--set", "window_days=1"])


# the id rule's edge cases: spaces trimmed, any other blank kept, a control character or 257 characters bad
TRICKY_IDS = ["  u1 ", "\tu1", "u1\u00a0", "u\x001", "x" * 257, " " + "x" * 256 + " ", "", "   ", "007"]


@pytest.mark.spark
def test_the_id_rule_is_the_same_in_python_arrow_and_spark(spark) -> None:
    from pyspark.sql import functions as F

    trimmed = ["u1", "\tu1", "u1\u00a0", "u\x001", "x" * 257, "x" * 256, "", "", "007"]
    bad = [False, True, False, True, True, False, False, False, False]
    frame = spark.createDataFrame([(s,) for s in TRICKY_IDS], "id string")
    rows = frame.select(trim_id_column(F.col("id")).alias("t")).select("t", bad_id_column(F.col("t")).alias("bad"))
    rows = rows.collect()
    arrow = trim_ids(pa.array(TRICKY_IDS, pa.string()))
    assert [r["t"] for r in rows] == arrow.to_pylist() == [trim_id(s) for s in TRICKY_IDS] == trimmed
    assert [r["bad"] for r in rows] == bad_ids(arrow).to_pylist() == bad

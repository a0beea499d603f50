"""Tests of the data quality gate of jobs.clean: schema drift, empty partitions and a drop in volume."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import clean
from jobs.common.cli import DATA_QUALITY_EXIT
from jobs.common.columns import RAW_COLUMNS
from jobs.common.lake import Lake, write_json

QUALITY = {"trailing_dates": 3, "min_history": 2, "max_drop_share": 0.5, "min_mean_rows": 10}


def write_raw(lake: Lake, ds: str, columns: dict[str, pa.Array], name: str = "part-0.parquet") -> None:
    path = lake.path("raw", ds)
    path.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path / name)


def raw_rows(rows: list[tuple]) -> dict[str, pa.Array]:
    return {c: pa.array([r[k] for r in rows], pa.string()) for k, c in enumerate(RAW_COLUMNS)}


def views(ds: str, n: int) -> list[tuple]:
    """``n`` valid, distinct view events of ``ds``, one user each (no bots, no repeats)."""
    return [(f"u{k}", "i1", "view", None, f"{ds}T10:00:00Z") for k in range(n)]


def test_volume_passes_within_the_allowed_drop_and_without_enough_history() -> None:
    history = {"2026-01-01": 100, "2026-01-02": 80, "2026-01-03": 120}
    assert clean.volume_findings("2026-01-04", 50, history, QUALITY) == []  # mean 100, floor 50: not below
    assert clean.volume_findings("2026-01-04", 10, {"2026-01-03": 120}, QUALITY) == []  # one earlier date < 2
    assert clean.volume_findings("2026-01-02", 10, history, QUALITY) == []  # only 01-01 is earlier


def test_volume_fails_below_the_trailing_mean_of_the_last_dates_only() -> None:
    # the mean is over the last 3 earlier dates (200, 100, 0 -> 100); 01-01 and the later 01-09 are ignored
    history = {"2026-01-01": 10_000, "2026-01-02": 200, "2026-01-03": 100, "2026-01-04": 0, "2026-01-09": 5}
    findings = clean.volume_findings("2026-01-05", 49, history, QUALITY)
    assert len(findings) == 1
    assert "49 rows, 51% below the mean 100 of the 3 previous dates 2026-01-02..2026-01-04" in findings[0]
    assert clean.volume_findings("2026-01-05", 50, history, QUALITY) == []
    assert clean.volume_findings("2026-01-05", 0, {}, QUALITY) == [
        "clean 2026-01-05 has no rows: every raw row was quarantined or a duplicate"
    ]
    assert clean.volume_findings("2026-01-05", 1, history, {**QUALITY, "max_drop_share": 1.0}) == []
    assert clean.volume_findings("2026-01-05", 1, history, {**QUALITY, "min_mean_rows": 101}) == []


def test_raw_findings_name_drifted_files_and_an_empty_partition(lake: Lake) -> None:
    write_raw(lake, "2026-01-01", raw_rows(views("2026-01-01", 2)))
    drifted = {**raw_rows(views("2026-01-02", 2)), "value": pa.array([1.0, 2.0]), "device": pa.array(["a", "b"])}
    del drifted["ts"]
    write_raw(lake, "2026-01-02", raw_rows(views("2026-01-02", 1)))
    write_raw(lake, "2026-01-02", drifted, name="part-1.parquet")
    write_raw(lake, "2026-01-03", raw_rows([]))

    assert clean.raw_findings(lake, ["2026-01-01"], "2026-01-01") == []
    assert clean.raw_findings(lake, ["2026-01-01", "2026-01-02", "2026-01-03"], "2026-01-03") == [
        "schema drift in raw 2026-01-02 (part-1.parquet): missing ts, extra device, value is double; "
        "expected string columns user_id, item_id, event, value, ts",
        f"raw partition 2026-01-03 is empty (no rows in {lake.path('raw', '2026-01-03')})",
    ]
    # an empty partition of an earlier date is no finding: only the run's date must have rows
    assert clean.raw_findings(lake, ["2026-01-03"], "2026-01-04") == []


def run_clean(ds: str) -> dict:
    sets = [f"quality.{k}={v}" for k, v in QUALITY.items()] + ["tables.window_days=1"]
    return clean.main(["--ds", ds, *(x for s in sets for x in ("--set", s))])


@pytest.mark.spark
def test_the_job_stops_with_exit_65_and_commits_nothing(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True})
    for day, n in (("2026-01-01", 10), ("2026-01-02", 12), ("2026-01-03", 4)):
        write_raw(lake, day, raw_rows(views(day, n)))
    run_clean("2026-01-01")
    run_clean("2026-01-02")
    before = sorted(p.relative_to(lake.root) for p in lake.root.rglob("*") if "_staging" not in p.parts)

    with pytest.raises(SystemExit) as stopped:
        run_clean("2026-01-03")  # 4 clean rows against a mean of 11: a 64% drop
    assert stopped.value.code == DATA_QUALITY_EXIT
    assert "clean 2026-01-03 has 4 rows, 64% below the mean 11" in caplog.text
    after = sorted(p.relative_to(lake.root) for p in lake.root.rglob("*") if "_staging" not in p.parts)
    assert after == before and lake.dates("clean") == ["2026-01-01", "2026-01-02"]

    # a drifted raw partition stops the job before Spark reads it
    write_raw(lake, "2026-01-04", {**raw_rows(views("2026-01-04", 10)), "value": pa.array([1] * 10)})
    with pytest.raises(SystemExit) as stopped:
        run_clean("2026-01-04")
    assert stopped.value.code == DATA_QUALITY_EXIT
    assert "schema drift in raw 2026-01-04 (part-0.parquet): value is int64" in caplog.text
    assert lake.dates("clean") == ["2026-01-01", "2026-01-02"]

"""Tests of the data quality gate of jobs.clean: schema drift, empty partitions, the quarantine share and a drop in
volume, and the stopped run's reconciliation."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs import clean
from recsys.core.cli import DATA_QUALITY_EXIT
from recsys.core.columns import RAW_COLUMNS
from recsys.core.lake import Lake, read_json, write_json
from recsys.data.clean import REASONS
from recsys.data.quality import outcome_findings, raw_findings, rejected_path, volume_findings

QUALITY = {"trailing_dates": 3, "min_history": 2, "max_drop_share": 0.5, "min_mean_rows": 10,
           "max_quarantine_share": 0.5, "min_share_rows": 100,
           "share_reasons": ["null_id", "bad_id", "unknown_event", "bad_timestamp", "future_timestamp", "out_of_range"]}


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
    assert volume_findings("2026-01-04", 50, history, QUALITY) == []  # mean 100, floor 50: not below
    assert volume_findings("2026-01-04", 10, {"2026-01-03": 120}, QUALITY) == []  # one earlier date < 2
    assert volume_findings("2026-01-02", 10, history, QUALITY) == []  # only 01-01 is earlier


def test_volume_fails_below_the_trailing_mean_of_the_last_dates_only() -> None:
    # the mean is over the last 3 earlier dates (200, 100, 0 -> 100); 01-01 and the later 01-09 are ignored
    history = {"2026-01-01": 10_000, "2026-01-02": 200, "2026-01-03": 100, "2026-01-04": 0, "2026-01-09": 5}
    findings = volume_findings("2026-01-05", 49, history, QUALITY)
    assert len(findings) == 1
    assert "49 rows, 51% below the mean 100 of the 3 previous dates 2026-01-02..2026-01-04" in findings[0]
    assert volume_findings("2026-01-05", 50, history, QUALITY) == []
    assert volume_findings("2026-01-05", 0, {}, QUALITY) == []  # no history: outcome_findings names it
    assert volume_findings("2026-01-05", 1, history, {**QUALITY, "max_drop_share": 1.0}) == []
    assert volume_findings("2026-01-05", 1, history, {**QUALITY, "min_mean_rows": 101}) == []


def entry(clean_rows: int, duplicates: int, **by_reason: int) -> dict:
    """A reconciliation entry that adds up, as recsys.data.clean.reconcile returns it."""
    reasons = {reason: by_reason.get(reason, 0) for reason in REASONS}
    quarantined = sum(reasons.values())
    return {"input": clean_rows + duplicates + quarantined, "clean": clean_rows, "duplicates": duplicates,
            "quarantined": quarantined, "by_reason": reasons}


def test_quarantine_share_above_the_limit_fails_with_counts_by_reason() -> None:
    report = {
        "2026-01-30": entry(5_000, 0, bad_id=2_000, bot=3_000),  # 20% invalid: bots are filtered, not invalid
        "2026-01-31": entry(150, 50, out_of_range=9_700, null_id=40, bot=60),  # 97.4% invalid
    }
    assert outcome_findings("2026-01-31", report, QUALITY) == [
        "clean 2026-01-30..2026-01-31 (2 dates together): 11,740 of 20,000 rows (58.7%) quarantined as invalid "
        "(quality.share_reasons), above quality.max_quarantine_share 0.5: out_of_range 9,700, bot 3,060, "
        "bad_id 2,000, null_id 40",
        "clean 2026-01-31: 9,740 of 10,000 rows (97.4%) quarantined as invalid (quality.share_reasons), above "
        "quality.max_quarantine_share 0.5: out_of_range 9,700, bot 60, null_id 40",
    ]
    # every date the run cleans is checked, not only the run's date
    findings = outcome_findings("2026-01-31", report, {**QUALITY, "max_quarantine_share": 0.15})
    assert findings[1] == ("clean 2026-01-30: 2,000 of 10,000 rows (20.0%) quarantined as invalid "
                           "(quality.share_reasons), above quality.max_quarantine_share 0.15: bot 3,000, bad_id 2,000")
    assert len(findings) == 3
    # counting bots too is a setting
    with_bots = outcome_findings("2026-01-30", {"2026-01-30": report["2026-01-30"]},
                                       {**QUALITY, "share_reasons": list(REASONS), "max_quarantine_share": 0.4})
    assert with_bots == ["clean 2026-01-30: 5,000 of 10,000 rows (50.0%) quarantined as invalid "
                         "(quality.share_reasons), above quality.max_quarantine_share 0.4: bot 3,000, bad_id 2,000"]
    assert outcome_findings("2026-01-31", report, {**QUALITY, "max_quarantine_share": 1}) == []
    with pytest.raises(ValueError, match="max_quarantine_share"):
        outcome_findings("2026-01-31", report, {**QUALITY, "max_quarantine_share": 50})
    with pytest.raises(ValueError, match="unknown reason"):
        outcome_findings("2026-01-31", report, {**QUALITY, "share_reasons": ["typo"]})


def test_a_heavy_users_day_and_a_tiny_dirty_date_do_not_stop_the_run() -> None:
    # ml-latest-small's 2017-06-26: one user rated 1,013 films (bot), one other row clean
    heavy = {"2017-06-26": entry(1, 0, bot=1_013), "2018-09-24": entry(200, 0)}
    assert outcome_findings("2018-09-24", heavy, QUALITY) == []
    # a 3-row date with 2 bad rows is judged only within the run's dates together (2 of 203: 1%)
    tiny = {"2026-01-30": entry(1, 0, out_of_range=2), "2026-01-31": entry(200, 0)}
    assert outcome_findings("2026-01-31", tiny, QUALITY) == []
    # a run of one date is judged whatever its size
    assert len(outcome_findings("2026-01-30", {"2026-01-30": tiny["2026-01-30"]}, QUALITY)) == 1


def test_a_run_date_without_clean_rows_fails_with_its_counts() -> None:
    report = {"2026-01-31": entry(0, 4, bad_id=1, unknown_event=2), "2026-01-30": entry(0, 0)}
    assert outcome_findings("2026-01-31", report, {**QUALITY, "max_quarantine_share": 1}) == [
        "clean 2026-01-31 has no clean rows: of 7 rows, 4 duplicates and 3 quarantined (unknown_event 2, bad_id 1)"
    ]
    assert outcome_findings("2026-01-30", report, {**QUALITY, "max_quarantine_share": 1}) == [
        "clean 2026-01-30 has no clean rows: of 0 rows, 0 duplicates and 0 quarantined"
    ]


def test_raw_findings_name_drifted_files_and_an_empty_partition(lake: Lake) -> None:
    write_raw(lake, "2026-01-01", raw_rows(views("2026-01-01", 2)))
    drifted = {**raw_rows(views("2026-01-02", 2)), "value": pa.array([1.0, 2.0]), "device": pa.array(["a", "b"])}
    del drifted["ts"]
    write_raw(lake, "2026-01-02", raw_rows(views("2026-01-02", 1)))
    write_raw(lake, "2026-01-02", drifted, name="part-1.parquet")
    write_raw(lake, "2026-01-03", raw_rows([]))

    assert raw_findings(lake, ["2026-01-01"], "2026-01-01") == []
    assert raw_findings(lake, ["2026-01-01", "2026-01-02", "2026-01-03"], "2026-01-03") == [
        "schema drift in raw 2026-01-02 (part-1.parquet): missing ts, extra device, value is double; "
        "expected string columns user_id, item_id, event, value, ts",
        f"raw partition 2026-01-03 is empty (no rows in {lake.path('raw', '2026-01-03')})",
    ]
    # an empty partition of an earlier date is no finding: only the run's date must have rows
    assert raw_findings(lake, ["2026-01-03"], "2026-01-04") == []


def run_clean(ds: str) -> dict:
    sets = [f"quality.{k}={v}" for k, v in QUALITY.items()] + ["window_days=1"]
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
    rejected = rejected_path(lake, "2026-01-03")
    assert f"(reconciliation of the stopped run: {rejected})" in caplog.text
    after = sorted(p.relative_to(lake.root) for p in lake.root.rglob("*") if "_staging" not in p.parts)
    # nothing committed: the only new files are the stopped run's reconciliation and its folders
    assert [p for p in after if p not in before] == [
        rejected.parent.parent.relative_to(lake.root), rejected.parent.relative_to(lake.root),
        rejected.relative_to(lake.root),
    ]
    assert lake.dates("clean") == ["2026-01-01", "2026-01-02"]
    assert read_json(rejected) == {
        "ds": "2026-01-03",
        "findings": ["clean 2026-01-03 has 4 rows, 64% below the mean 11 of the 2 previous dates "
                     "2026-01-01..2026-01-02 (quality.max_drop_share 0.5)"],
        "dates": {"2026-01-03": {"input": 4, "clean": 4, "duplicates": 0, "quarantined": 0,
                                 "by_reason": dict.fromkeys(REASONS, 0)}},
    }

    # a drifted raw partition stops the job before Spark reads it
    write_raw(lake, "2026-01-04", {**raw_rows(views("2026-01-04", 10)), "value": pa.array([1] * 10)})
    with pytest.raises(SystemExit) as stopped:
        run_clean("2026-01-04")
    assert stopped.value.code == DATA_QUALITY_EXIT
    assert "schema drift in raw 2026-01-04 (part-0.parquet): value is int64" in caplog.text
    assert lake.dates("clean") == ["2026-01-01", "2026-01-02"]
    stopped_early = read_json(rejected_path(lake, "2026-01-04"))
    assert stopped_early["dates"] == {"2026-01-04": {"input": 10}}  # stopped before Spark counted outcomes
    assert stopped_early["findings"][0].startswith("schema drift in raw 2026-01-04")


def plays(ds: str, counts: list[str], event: str) -> list[tuple]:
    """Play counts of distinct (user, item) pairs of ``ds``, landed with ``event`` and the count as value."""
    return [(f"u{k}", f"i{k}", event, count, f"{ds}T10:00:00Z") for k, count in enumerate(counts)]


@pytest.mark.spark
def test_play_counts_mapped_as_ratings_stop_the_run_and_say_why(lake: Lake, caplog: pytest.LogCaptureFixture) -> None:
    # the public play-count dataset of issue 16: mapped as ratings, most counts fall outside rating_range
    ds = "2026-01-31"
    counts = [str(n) for n in range(6, 55)] + ["3"]  # 49 of 50 above rating_range's 5.0
    write_raw(lake, ds, raw_rows(plays(ds, counts, "rating")))  # ingest's event for a value mapped as a rating
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True, "value_kind": "rating"})
    with pytest.raises(SystemExit) as stopped:
        run_clean(ds)
    assert stopped.value.code == DATA_QUALITY_EXIT
    rejected = rejected_path(lake, ds)
    assert (f"clean {ds}: 49 of 50 rows (98.0%) quarantined as invalid (quality.share_reasons), above "
            "quality.max_quarantine_share 0.5: "
            f"out_of_range 49 (reconciliation of the stopped run: {rejected})") in caplog.text
    assert lake.dates("clean") == lake.dates("quarantine") == []
    report = read_json(rejected)
    assert report["dates"][ds]["by_reason"]["out_of_range"] == 49 and report["dates"][ds]["clean"] == 1

    # landed again as counts (ingest's event view), the same plays clean; the stopped run's reconciliation
    # goes with the failure
    write_raw(lake, ds, raw_rows(plays(ds, counts, "view")))
    write_json(lake.path("raw") / "_source.json", {"has_timestamp": True, "value_kind": "count"})
    facts = run_clean(ds)
    assert (facts["clean"], facts["quarantined"], facts["value_kind"]) == (50, 0, "count")
    assert not rejected.parent.exists() and lake.dates("clean") == [ds]

"""Clean raw interaction logs with Spark: validate, quarantine with a reason, dedupe, map to implicit feedback.

One run cleans the raw partition of its date and every raw partition of the training window that has
no committed clean partition yet, all in one Spark job partitioned by ``ds``; each date's clean and
quarantine partition is then committed on its own (write aside, then rename). The rules are
:mod:`recsys.data.clean`; the quality gate, which stops the run before any commit, is
:mod:`recsys.data.quality`.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import DataFrame

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import DS, EVENT, ITEM_ID, RAW_COLUMNS, REASON, TS, USER_ID, VALUE
from recsys.core.lake import PART_FILE, RECONCILIATION_FILE, SOURCE_FILE, write_json
from recsys.core.spark import spark_session
from recsys.data.clean import (
    CLEAN,
    CLEAN_ARROW_SCHEMA,
    DUPLICATES,
    QUARANTINE_ARROW_SCHEMA,
    RATINGS,
    REASONS,
    check_value_kind,
    clean_events,
    dates_to_clean,
    read_raw,
    reconcile,
)
from recsys.data.quality import (
    clean_history,
    gate,
    outcome_findings,
    raw_findings,
    raw_rows,
    rejected_path,
    volume_findings,
)

log = logging.getLogger(__name__)


def _write_partitioned(frame: DataFrame, path: Path, order: Sequence[str]) -> None:
    # the frames of clean_events hold each date in one partition (flag_rows shuffles by ds), so one
    # task writes each date's one file with no further shuffle; sorting makes a rerun's bytes identical
    frame.sortWithinPartitions(DS, *order).write.partitionBy(DS).parquet(str(path))


def _ensure_parquet(path: Path, schema: pa.Schema) -> None:
    """Give a date without rows an empty Parquet file, so readers still find its schema."""
    if not any(path.glob("*.parquet")):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), path / PART_FILE)


def body(ctx: JobContext) -> dict[str, Any]:
    """Clean the run's date and the window's uncleaned dates, commit each date, return the totals."""
    cfg, lake, ds = ctx.config["clean"], ctx.lake, ctx.ds
    dates = dates_to_clean(ds, lake.dates("raw"), lake.dates("clean"), int(ctx.config["window_days"]))
    source = lake.source()
    has_timestamp = bool(source.get("has_timestamp", True))
    value_kind = source.get("value_kind", RATINGS)
    check_value_kind(value_kind, f"value_kind in {lake.path('raw') / SOURCE_FILE}")
    log.info("cleaning %d date(s) %s..%s (has_timestamp=%s, value_kind=%s)",
             len(dates), dates[0], dates[-1], has_timestamp, value_kind)
    # the cheap checks first, before Spark starts; the input counts come from the raw footers, independently
    # of what Spark counts
    inputs = raw_rows(lake, dates)
    gate(lake, ds, {d: {"input": n} for d, n in inputs.items()}, raw_findings(lake, dates, ds))

    spark = spark_session("recsys-clean")
    raw = read_raw(spark, lake, dates)
    result = clean_events(raw, cfg, has_timestamp=has_timestamp, value_kind=value_kind)
    # one pass over the raw rows: both writes and the count read the cached frame
    result.flagged.persist()
    staging = lake.staging_dir(f"clean-{ds}")
    try:
        _write_partitioned(result.clean, staging / CLEAN, (USER_ID, TS, ITEM_ID, EVENT, VALUE))
        _write_partitioned(result.quarantine, staging / "quarantine", (REASON, *RAW_COLUMNS))
        # the outcomes in one aggregation of the cached frame
        outcomes = [(r[DS], r["outcome"], r["n"]) for r in result.outcomes.collect()]
        report = reconcile(inputs, outcomes, dates)
        # before any commit: a failed gate leaves every partition as it was
        quality = ctx.config["quality"]
        history = clean_history(lake, ds, report)
        findings = outcome_findings(ds, report, quality) + volume_findings(ds, report[ds][CLEAN], history, quality)
        gate(lake, ds, report, findings)
        for d in dates:
            # quarantine first: a committed clean partition implies its quarantine is there too
            staged = staging / "quarantine" / f"ds={d}"
            _ensure_parquet(staged, QUARANTINE_ARROW_SCHEMA)
            lake.commit(staged, lake.path("quarantine", d))
            staged = staging / CLEAN / f"ds={d}"
            _ensure_parquet(staged, CLEAN_ARROW_SCHEMA)
            write_json(staged / RECONCILIATION_FILE, report[d])
            lake.commit(staged, lake.path("clean", d))
        # the date passed now: an earlier stopped run's reconciliation no longer says why it has no data
        shutil.rmtree(rejected_path(lake, ds).parent, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        result.flagged.unpersist()

    totals = {key: sum(r[key] for r in report.values()) for key in ("input", CLEAN, DUPLICATES, "quarantined")}
    by_reason = {reason: sum(r["by_reason"][reason] for r in report.values()) for reason in REASONS}
    log.info("cleaned %s; by reason %s", totals, by_reason)
    return {
        "ds": ds,
        "dates_cleaned": len(dates),
        "first_date": dates[0],
        "last_date": dates[-1],
        "has_timestamp": has_timestamp,
        "value_kind": value_kind,
        "clean_path": str(lake.path("clean", ds)),
        **totals,
        "by_reason": by_reason,
        "ds_counts": report[ds],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.clean --ds YYYY-MM-DD [--lake PATH] [--set clean.KEY=VALUE]``."""
    return run_job(job_parser(__doc__.splitlines()[0]), body, argv)


if __name__ == "__main__":
    main()

"""Clean raw interaction logs with Spark: validate, quarantine with a reason, dedupe, map to implicit feedback.

One run cleans the raw partition of its date and every raw partition of the training window that has
no committed clean partition yet, all in one Spark job partitioned by ``ds``; each date's clean and
quarantine partition is then committed on its own (write aside, then rename).

Every raw row ends in exactly one of three places, in this order of decision:

1. **duplicates**: a row byte-identical to an earlier raw row of the same date (all five columns,
   nulls equal). Only one of the identical rows goes on to the checks below.
2. **quarantine** with the first reason that applies, in the order of ``REASONS``: ``null_id``
   (user or item missing or blank), ``bad_id`` (not ``^[a-z0-9_.:-]+$`` after trim + lowercase),
   ``unknown_event`` (event kind missing or not in ``clean.events``), ``bad_timestamp`` (not
   ``YYYY-MM-DDTHH:MM:SSZ``; a missing ts is valid only when ``raw/_source.json`` says
   ``has_timestamp: false``, and then means the date's midnight UTC), ``future_timestamp`` (at or
   after the end of the row's date plus ``clean.max_future_seconds``), ``out_of_range`` (a rating
   missing or outside ``clean.rating_range``; a value that is given but not a finite number; a
   negative value of another event), and last ``bot``: every remaining row of a user who sent more
   than ``clean.bot_events_per_day`` such valid events (identical repeats included) that date.
3. **duplicates** again: a repeat of the same (user, item, event) of the same date within
   ``clean.dedupe_seconds`` (inclusive) of the previous *kept* one; the first is kept. Otherwise
   the row is **clean**.

Clean rows carry implicit feedback from ``clean.events``: label and weight of their event kind; a
rating is a positive (label and weight of the ``rating`` entry) when ``value >= positive_rating``,
else label 0 and weight 0 (kept for analysis, never trained on).

**Quality gate** (config ``quality``): the job raises :class:`jobs.common.cli.DataQualityError` (exit
code 65, no retries) and commits nothing when a raw partition it cleans has drifted from the raw
schema (a raw column missing, an extra column, a column that is not a string), when the raw
partition of the run's date has no rows or yields no clean row, or when the run's clean-row count
falls more than ``quality.max_drop_share`` below the mean of the ``quality.trailing_dates`` previous
cleaned dates (checked once ``quality.min_history`` of them exist and their mean reaches
``quality.min_mean_rows``). The pipeline then stops before
training and the ``champion`` alias stays where it was.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from jobs.common.cli import DataQualityError, JobContext, job_parser, run_job
from jobs.common.columns import (
    DS,
    EVENT,
    ITEM_ID,
    LABEL,
    RAW_COLUMNS,
    REASON,
    TS,
    USER_ID,
    VALUE,
    WEIGHT,
    require_columns,
)
from jobs.common.lake import Lake, read_json, window_start, write_json
from jobs.common.spark import spark_session

log = logging.getLogger(__name__)

RATING_EVENT = "rating"
ID_PATTERN = r"^[a-z0-9_.:-]+$"
TS_FORMAT = "yyyy-MM-dd'T'HH:mm:ss'Z'"
REASONS = ("null_id", "bad_id", "unknown_event", "bad_timestamp", "future_timestamp", "out_of_range", "bot")
DUPLICATES = "duplicates"
CLEAN = "clean"
RECONCILIATION_FILE = "_reconciliation.json"
CLEAN_COLUMNS = (USER_ID, ITEM_ID, EVENT, VALUE, TS, LABEL, WEIGHT)
QUARANTINE_COLUMNS = (*RAW_COLUMNS, REASON)

# Arrow schemas of what Spark writes, for the empty Parquet file of a date with no rows
CLEAN_ARROW_SCHEMA = pa.schema([
    (USER_ID, pa.string()), (ITEM_ID, pa.string()), (EVENT, pa.string()), (VALUE, pa.float64()),
    (TS, pa.timestamp("us", tz="UTC")), (LABEL, pa.int32()), (WEIGHT, pa.float64()),
])
QUARANTINE_ARROW_SCHEMA = pa.schema([(c, pa.string()) for c in QUARANTINE_COLUMNS])

# working columns: the normalised values, next to the raw ones that quarantine keeps untouched
_N, _USER, _ITEM, _EVENT, _VALUE, _TS = "_n", "_user", "_item", "_event", "_value", "_ts"
_KEPT = "_kept"
SECONDS_PER_DAY = 86_400


@dataclass
class CleanResult:
    """The lazy outputs of :func:`clean_events`, all derived from ``flagged`` (worth caching)."""

    clean: DataFrame  # CLEAN_COLUMNS + ds
    quarantine: DataFrame  # raw columns + reason + ds
    outcomes: DataFrame  # ds, outcome (clean | duplicates | a reason), n
    flagged: DataFrame  # distinct raw rows with normalised columns, reason and _kept


def dates_to_clean(ds: str, raw_dates: Sequence[str], clean_dates: Sequence[str], window_days: int) -> list[str]:
    """The dates one run cleans: ``ds`` itself and every raw date of the window not cleaned yet.

    Args:
        ds: the run's date; it is always cleaned again, so a rerun replaces it.
        raw_dates: the committed raw partitions.
        clean_dates: the committed clean partitions.
        window_days: length of the training window ending on ``ds``.

    Raises:
        FileNotFoundError: ``ds`` has no raw partition.
    """
    if ds not in raw_dates:
        raise FileNotFoundError(f"raw partition for {ds} is missing; run the ingest or generate stage for {ds} first")
    first = window_start(ds, window_days)
    done = set(clean_dates)
    return sorted(d for d in raw_dates if d == ds or (first <= d <= ds and d not in done))


def read_raw(spark: SparkSession, lake: Lake, dates: Sequence[str]) -> DataFrame:
    """The raw partitions of ``dates`` as one frame of string columns plus ``ds``.

    Raises:
        ValueError: a raw column is missing or not a string.
    """
    base = lake.path("raw")
    frame = spark.read.option("basePath", str(base)).parquet(*(str(lake.path("raw", d)) for d in dates))
    require_columns(frame.columns, RAW_COLUMNS, f"raw partitions under {base}")
    types = dict(frame.dtypes)
    for column in RAW_COLUMNS:
        if types[column] != "string":
            raise ValueError(f"raw partitions under {base}: column {column} is {types[column]}, expected string")
    # partition discovery reads ds=YYYY-MM-DD as a date; the lake's partition key is the string
    return frame.select(*RAW_COLUMNS, F.col(DS).cast("string").alias(DS))


def _blank_to_null(column: Column) -> Column:
    trimmed = F.trim(column)
    return F.when(trimmed != "", trimmed)


def _check_config(cfg: Mapping[str, Any]) -> None:
    for kind, spec in cfg["events"].items():
        if not isinstance(spec, Mapping) or {LABEL, WEIGHT} - set(spec):
            raise ValueError(f"clean.events.{kind} needs label and weight, got {spec!r}")
    low, high = cfg["rating_range"]
    if low > high:
        raise ValueError(f"clean.rating_range must be [low, high], got {cfg['rating_range']!r}")


def _kept_positions(times: Column, dedupe_seconds: int) -> Column:
    """The 1-based positions of the kept ones among sorted timestamps: the first, then each one more than
    ``dedupe_seconds`` after the previous *kept* one (a fold: each decision depends on the last)."""
    def keep_or_skip(acc: Column, event: Column) -> Column:
        keep = acc["last"].isNull() | (F.unix_seconds(event["ts"]) - F.unix_seconds(acc["last"]) > dedupe_seconds)
        kept = F.struct(event["ts"].alias("last"), F.concat(acc["kept"], F.array(event["i"])).alias("kept"))
        return F.when(keep, kept).otherwise(acc)

    indexed = F.transform(times, lambda ts, i: F.struct(ts.alias("ts"), (i + 1).alias("i")))
    start = F.struct(F.lit(None).cast("timestamp").alias("last"), F.array().cast("array<int>").alias("kept"))
    return F.aggregate(indexed, start, keep_or_skip, lambda acc: acc["kept"])


def flag_rows(raw: DataFrame, cfg: Mapping[str, Any], *, has_timestamp: bool) -> DataFrame:
    """Collapse identical raw rows and give each distinct row its normalised values, reason and repeat flag.

    Args:
        raw: raw columns and ``ds``.
        cfg: the ``clean`` config section.
        has_timestamp: whether the source has timestamps (a missing ts is valid only when it has none).

    Returns:
        One row per distinct raw row of a date: the raw columns, ``ds``, ``_n`` (how many raw rows it
        stands for), the normalised ``_user, _item, _event, _value, _ts``, ``reason`` (null = valid) and
        ``_kept`` (for a valid row: false when it repeats a kept one within ``clean.dedupe_seconds``).
    """
    require_columns(raw.columns, (*RAW_COLUMNS, DS), "flag_rows")
    _check_config(cfg)
    low, high = (float(x) for x in cfg["rating_range"])
    # the job's one shuffle, by ds: the identical-row count and both windows below group by keys that
    # include ds, so Spark plans no further exchange for them, and each date's rows end in one task,
    # which writes that date's single clean and quarantine file without another shuffle
    rows = (
        raw.withColumn(_USER, F.lower(_blank_to_null(F.col(USER_ID))))
        .repartition(DS)
        .groupBy(DS, _USER, *RAW_COLUMNS)
        .agg(F.count(F.lit(1)).alias(_N))
    )

    day_start = F.to_timestamp(F.col(DS), "yyyy-MM-dd")
    raw_ts = _blank_to_null(F.col(TS))
    parsed_ts = F.try_to_timestamp(raw_ts, F.lit(TS_FORMAT))
    raw_value = _blank_to_null(F.col(VALUE))
    rows = rows.select(
        "*",
        F.lower(_blank_to_null(F.col(ITEM_ID))).alias(_ITEM),
        F.lower(_blank_to_null(F.col(EVENT))).alias(_EVENT),
        raw_value.try_cast("double").alias(_VALUE),
        (parsed_ts if has_timestamp else F.when(raw_ts.isNull(), day_start).otherwise(parsed_ts)).alias(_TS),
    )
    user, item, event, value, ts = (F.col(c) for c in (_USER, _ITEM, _EVENT, _VALUE, _TS))
    is_rating = event == RATING_EVENT
    not_finite = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
    future_from = F.unix_seconds(day_start) + SECONDS_PER_DAY + int(cfg["max_future_seconds"])
    reason = (
        F.when(user.isNull() | item.isNull(), "null_id")
        .when(~user.rlike(ID_PATTERN) | ~item.rlike(ID_PATTERN), "bad_id")
        .when(event.isNull() | ~event.isin(list(cfg["events"])), "unknown_event")
        .when(ts.isNull(), "bad_timestamp")
        .when(F.unix_seconds(ts) >= future_from, "future_timestamp")
        .when(raw_value.isNotNull() & not_finite, "out_of_range")
        .when(is_rating & (value.isNull() | ~value.between(low, high)), "out_of_range")
        .when(~is_rating & (value < 0), "out_of_range")
    )
    rows = rows.withColumn(REASON, reason)
    # repeats of (user, item, event) among the valid rows, in order of time, then value. Decided before
    # the bot window so that both windows share one sort (a user's window is a prefix of this one);
    # a bot's rows are quarantined whatever this says, and for everyone else "valid" is final here.
    # The user leads the sort keys: a partition holds few dates, so a leading ds would make the sort's
    # key prefix useless
    valid = F.col(REASON).isNull()
    group = Window.partitionBy(_USER, DS, _ITEM, _EVENT, valid).orderBy(_TS, _VALUE)
    times = F.collect_list(_TS).over(group.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
    position = F.row_number().over(group)
    # the first is always kept; the fold runs only for the later ones of a group
    kept = (position == 1) | F.array_contains(_kept_positions(times, int(cfg["dedupe_seconds"])), position)
    rows = rows.withColumn(_KEPT, valid & kept)
    # bots: count the user's valid raw events of the day, identical repeats included
    valid_events = F.sum(F.when(valid, F.col(_N))).over(Window.partitionBy(_USER, DS))
    is_bot = valid & (valid_events > int(cfg["bot_events_per_day"]))
    return rows.withColumn(REASON, F.when(is_bot, F.lit("bot")).otherwise(F.col(REASON)))


def to_feedback(flagged: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """The kept valid rows as clean rows with label and weight (columns ``CLEAN_COLUMNS`` + ds)."""
    spec = cfg["events"]
    labels = F.create_map(*(F.lit(x) for kind in spec for x in (kind, int(spec[kind][LABEL]))))
    weights = F.create_map(*(F.lit(x) for kind in spec for x in (kind, float(spec[kind][WEIGHT]))))
    event, value = F.col(_EVENT), F.col(_VALUE)
    failed_rating = (event == RATING_EVENT) & ~(value >= float(cfg["positive_rating"]))
    return flagged.where(F.col(REASON).isNull() & F.col(_KEPT)).select(
        F.col(_USER).alias(USER_ID),
        F.col(_ITEM).alias(ITEM_ID),
        event.alias(EVENT),
        value.alias(VALUE),
        F.col(_TS).alias(TS),
        F.when(failed_rating, 0).otherwise(F.try_element_at(labels, event)).cast("int").alias(LABEL),
        F.when(failed_rating, 0.0).otherwise(F.try_element_at(weights, event)).cast("double").alias(WEIGHT),
        DS,
    )


def count_outcomes(flagged: DataFrame) -> DataFrame:
    """Raw rows per (ds, outcome): ``clean``, ``duplicates`` and each quarantine reason, in one pass."""
    # a distinct row stands for _n raw rows: _n - 1 identical copies, then itself: quarantined with its
    # reason, or valid and either kept (clean) or a repeat (duplicates)
    itself = F.coalesce(F.col(REASON), F.when(F.col(_KEPT), F.lit(CLEAN)).otherwise(F.lit(DUPLICATES)))
    both = F.array(
        F.struct(F.lit(DUPLICATES).alias("outcome"), (F.col(_N) - 1).alias("n")),
        F.struct(itself.alias("outcome"), F.lit(1).cast("long").alias("n")),
    )
    return (
        flagged.select(DS, F.inline(both))
        .groupBy(DS, "outcome")
        .agg(F.sum("n").cast("long").alias("n"))
    )


def clean_events(raw: DataFrame, cfg: Mapping[str, Any], *, has_timestamp: bool) -> CleanResult:
    """The whole cleaning of raw rows (raw columns + ds) as lazy frames; see the module docstring."""
    flagged = flag_rows(raw, cfg, has_timestamp=has_timestamp)
    quarantine = flagged.where(F.col(REASON).isNotNull()).select(*QUARANTINE_COLUMNS, DS)
    return CleanResult(
        clean=to_feedback(flagged, cfg),
        quarantine=quarantine,
        outcomes=count_outcomes(flagged),
        flagged=flagged,
    )


def reconcile(inputs: Mapping[str, int], outcomes: Sequence[tuple[str, str, int]], dates: Sequence[str]) -> dict:
    """Per date: input, clean, duplicates, quarantined and by_reason, checked to add up.

    Args:
        inputs: raw rows per date.
        outcomes: (ds, outcome, n) as counted by :func:`count_outcomes`.
        dates: every date cleaned (dates without any row count as zeros).

    Raises:
        ValueError: a date's clean + duplicates + quarantined differs from its input.
    """
    by_date: dict[str, dict[str, int]] = {d: {} for d in dates}
    for ds, outcome, n in outcomes:
        by_date[ds][outcome] = by_date[ds].get(outcome, 0) + int(n)
    report = {}
    for ds, counts in by_date.items():
        by_reason = {reason: counts.get(reason, 0) for reason in REASONS}
        entry = {
            "input": int(inputs.get(ds, 0)),
            CLEAN: counts.get(CLEAN, 0),
            DUPLICATES: counts.get(DUPLICATES, 0),
            "quarantined": sum(by_reason.values()),
            "by_reason": by_reason,
        }
        if entry[CLEAN] + entry[DUPLICATES] + entry["quarantined"] != entry["input"]:
            raise ValueError(f"clean {ds}: clean + duplicates + quarantined does not add up to input: {entry}")
        report[ds] = entry
    return report


def _data_files(path: Path) -> list[Path]:
    # what Spark reads of a partition: every file not hidden by a leading "_" or "."
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def _raw_footers(lake: Lake, ds: str) -> list[tuple[Path, pq.FileMetaData]]:
    return [(part, pq.read_metadata(part)) for part in _data_files(lake.path("raw", ds))]


def raw_rows(lake: Lake, dates: Sequence[str]) -> dict[str, int]:
    """Rows of each raw partition, from the Parquet footers: the input the reconciliation must add up to."""
    return {d: sum(meta.num_rows for _, meta in _raw_footers(lake, d)) for d in dates}


def raw_findings(lake: Lake, dates: Sequence[str], ds: str) -> list[str]:
    """Quality findings of the raw partitions about to be cleaned, from the Parquet footers alone.

    Returns:
        One sentence per problem: a file whose columns or types drifted from the raw schema (every
        column a string, exactly ``RAW_COLUMNS``), and a raw partition of ``ds`` without rows.
    """
    findings = []
    for d in dates:
        rows = 0
        for part, meta in _raw_footers(lake, d):
            rows += meta.num_rows
            types = {field.name: field.type for field in meta.schema.to_arrow_schema()}
            drift = [f"missing {c}" for c in RAW_COLUMNS if c not in types]
            drift += [f"extra {c}" for c in types if c not in RAW_COLUMNS]
            drift += [f"{c} is {types[c]}" for c in RAW_COLUMNS if c in types and types[c] != pa.string()]
            if drift:
                findings.append(f"schema drift in raw {d} ({part.name}): {', '.join(drift)}; "
                                f"expected string columns {', '.join(RAW_COLUMNS)}")
        if d == ds and rows == 0:
            findings.append(f"raw partition {ds} is empty (no rows in {lake.path('raw', ds)})")
    return findings


def clean_history(lake: Lake, ds: str, report: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Clean rows of every cleaned date before ``ds``: this run's report first, then committed partitions."""
    history = {}
    for d in lake.dates("clean"):
        path = lake.path("clean", d) / RECONCILIATION_FILE
        if d < ds and path.is_file():
            history[d] = int(read_json(path)[CLEAN])
    history.update({d: int(entry[CLEAN]) for d, entry in report.items() if d < ds})
    return history


def volume_findings(ds: str, clean_rows: int, history: Mapping[str, int], cfg: Mapping[str, Any]) -> list[str]:
    """Quality findings of the run's clean-row count against the trailing mean of earlier dates.

    Args:
        ds: the run's date.
        clean_rows: clean rows of ``ds``.
        history: clean rows of earlier dates (later dates are ignored).
        cfg: the ``quality`` config section.
    """
    if clean_rows == 0:
        return [f"clean {ds} has no rows: every raw row was quarantined or a duplicate"]
    previous = sorted(d for d in history if d < ds)[-int(cfg["trailing_dates"]):]
    if len(previous) < int(cfg["min_history"]):
        return []
    mean = sum(history[d] for d in previous) / len(previous)
    if mean < float(cfg["min_mean_rows"]):
        return []  # on small dates (MovieLens by calendar day) a swing of half the rows is ordinary
    floor = mean * (1.0 - float(cfg["max_drop_share"]))
    if clean_rows < floor:
        drop = 1.0 - clean_rows / mean
        return [f"clean {ds} has {clean_rows} rows, {drop:.0%} below the mean {mean:.0f} of the {len(previous)} "
                f"previous dates {previous[0]}..{previous[-1]} (quality.max_drop_share {cfg['max_drop_share']})"]
    return []


def _gate(findings: list[str]) -> None:
    if findings:
        raise DataQualityError("; ".join(findings))


def _write_partitioned(frame: DataFrame, path: Path, order: Sequence[str]) -> None:
    # the frames of clean_events hold each date in one partition (flag_rows shuffles by ds), so one
    # task writes each date's one file with no further shuffle; sorting makes a rerun's bytes identical
    frame.sortWithinPartitions(DS, *order).write.partitionBy(DS).parquet(str(path))


def _ensure_parquet(path: Path, schema: pa.Schema) -> None:
    """Give a date without rows an empty Parquet file, so readers still find its schema."""
    if not any(path.glob("*.parquet")):
        path.mkdir(parents=True, exist_ok=True)
        pq.write_table(schema.empty_table(), path / "part-00000.parquet")


def body(ctx: JobContext) -> dict[str, Any]:
    """Clean the run's date and the window's uncleaned dates, commit each date, return the totals."""
    cfg, lake, ds = ctx.config["clean"], ctx.lake, ctx.ds
    dates = dates_to_clean(ds, lake.dates("raw"), lake.dates("clean"), int(ctx.config["tables"]["window_days"]))
    has_timestamp = bool(lake.source().get("has_timestamp", True))
    log.info("cleaning %d date(s) %s..%s (has_timestamp=%s)", len(dates), dates[0], dates[-1], has_timestamp)
    # the cheap checks first, before Spark starts
    _gate(raw_findings(lake, dates, ds))

    spark = spark_session("recsys-clean")
    raw = read_raw(spark, lake, dates)
    result = clean_events(raw, cfg, has_timestamp=has_timestamp)
    # one pass over the raw rows: both writes and the count read the cached frame
    result.flagged.persist()
    staging = lake.staging_dir(f"clean-{ds}")
    try:
        _write_partitioned(result.clean, staging / CLEAN, (USER_ID, TS, ITEM_ID, EVENT, VALUE))
        _write_partitioned(result.quarantine, staging / "quarantine", (REASON, *RAW_COLUMNS))
        # the outcomes in one aggregation of the cached frame; the input independently, from the raw footers
        outcomes = [(r[DS], r["outcome"], r["n"]) for r in result.outcomes.collect()]
        report = reconcile(raw_rows(lake, dates), outcomes, dates)
        # before any commit: a failed gate leaves every partition as it was
        _gate(volume_findings(ds, report[ds][CLEAN], clean_history(lake, ds, report), ctx.config["quality"]))
        for d in dates:
            # quarantine first: a committed clean partition implies its quarantine is there too
            staged = staging / "quarantine" / f"ds={d}"
            _ensure_parquet(staged, QUARANTINE_ARROW_SCHEMA)
            lake.commit(staged, lake.path("quarantine", d))
            staged = staging / CLEAN / f"ds={d}"
            _ensure_parquet(staged, CLEAN_ARROW_SCHEMA)
            write_json(staged / RECONCILIATION_FILE, report[d])
            lake.commit(staged, lake.path("clean", d))
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

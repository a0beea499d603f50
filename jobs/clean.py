"""Clean raw interaction logs with Spark: validate, quarantine with a reason, dedupe, map to implicit feedback.

One run cleans the raw partition of its date and every raw partition of the training window that has
no committed clean partition yet, all in one Spark job partitioned by ``ds``; each date's clean and
quarantine partition is then committed on its own (write aside, then rename).

Ids are taken exactly as they came, only trimmed of leading and trailing spaces: never case-folded or
otherwise rewritten, so ``B00ABCDxyz`` and ``b00abcdxyz`` are two ids, and so are ``007`` and ``7``.
Event kinds are not ids: they are trimmed and lowercased. What the ``value`` column means comes from
``value_kind`` in ``raw/_source.json`` (``rating`` when absent): ``rating``, ``count`` (plays, clicks:
how often the event happened) or ``none`` (the value carries nothing and is never checked).

Every raw row ends in exactly one of three places, in this order of decision:

1. **duplicates**: a row byte-identical to an earlier raw row of the same date (all five columns,
   nulls equal). Only one of the identical rows goes on to the checks below.
2. **quarantine** with the first reason that applies, in the order of ``REASONS``: ``null_id``
   (user or item missing or blank), ``bad_id`` (an id holding a control character, or longer than
   ``MAX_ID_LENGTH`` = 256 characters after the trim), ``unknown_event`` (event kind missing or not in
   ``clean.events``), ``bad_timestamp`` (not ``YYYY-MM-DDTHH:MM:SSZ``; a missing ts is valid only when
   ``raw/_source.json`` says ``has_timestamp: false``, and then means the date's midnight UTC; any time
   before the date, 1970 and earlier included, is valid), ``future_timestamp`` (at or after the end of
   the row's date plus ``clean.max_future_seconds``), ``out_of_range`` (ratings: a rating missing or
   outside ``clean.rating_range``, a value that is given but not a finite number, a negative value of
   another event; counts: a count missing, not a finite number, or negative, never checked against
   ``clean.rating_range``).
3. **duplicates** again: a repeat of the same (user, item, event) of the same date within
   ``clean.dedupe_seconds`` (inclusive) of the previous *kept* one; the first is kept.
4. **quarantine** as ``bot``: every row left after step 2 (its repeats of step 3 included) of a user
   with more than ``clean.bot_events_per_day`` rows left after step 3 that date, that is distinct,
   valid events: a real user whose events were delivered twice is not a bot.

Otherwise the row is **clean**. Clean rows carry implicit feedback from ``clean.events``: label and
weight of their event kind, except for

- ``value_kind: rating``: a rating is a positive (label and weight of the ``rating`` entry) when
  ``value >= positive_rating``, else label 0 and weight 0 (kept for analysis, never trained on);
- ``value_kind: count``: weight = the event's weight x ``log1p(count)`` (diminishing returns: 1 play
  0.69, 3 plays 1.39, 100 plays 4.6), and a count of 0 has label 0 and weight 0.

**Quality gate** (config ``quality``): the job raises :class:`recsys.core.cli.DataQualityError` (exit
code 65, no retries) and commits nothing when a raw partition it cleans has drifted from the raw
schema (a raw column missing, an extra column, a column that is not a string), when the raw
partition of the run's date has no rows or yields no clean row, when any date it cleans has more than
``quality.max_quarantine_share`` of its input rows quarantined for a reason of ``quality.share_reasons``
(all dates together, and each date of at least ``quality.min_share_rows`` rows), or when the run's clean-row count
falls more than ``quality.max_drop_share`` below the mean of the ``quality.trailing_dates`` previous
cleaned dates (checked once ``quality.min_history`` of them exist and their mean reaches
``quality.min_mean_rows``). The pipeline then stops before training and the ``champion`` alias stays
where it was. The error names every finding with its counts by reason, and the path of the rejected
run's reconciliation, ``<lake>/quarantine/_rejected/ds=<run date>/_reconciliation.json``: the
findings and, per date cleaned, ``input`` and (once the rows were cleaned) ``clean``, ``duplicates``,
``quarantined`` and ``by_reason``. It is not a partition (readers skip names starting with ``_``), and
a later run of the date that passes removes it.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from recsys.core.cli import DataQualityError, JobContext, job_parser, run_job
from recsys.core.columns import (
    BOT,
    DS,
    EVENT,
    ITEM_ID,
    LABEL,
    QUARANTINE_COLUMNS,
    RAW_COLUMNS,
    RAW_TS_FORMAT,
    REASON,
    TS,
    USER_ID,
    VALUE,
    WEIGHT,
    require_columns,
)
from recsys.core.lake import RECONCILIATION_FILE, REJECTED_DIR, SOURCE_FILE, Lake, read_json, window_start, write_json
from recsys.core.spark import spark_session

log = logging.getLogger(__name__)

RATING_EVENT = "rating"
# what the value column means, from raw/_source.json value_kind
VALUE_KINDS = ("rating", "count", "none")
RATINGS, COUNTS, NO_VALUES = VALUE_KINDS
# an id is taken as it came; only what no id system produces is bad: control characters (a NUL, a line
# break or a tab from a broken log line) and lengths beyond any real id (a serialised blob in the field)
MAX_ID_LENGTH = 256
ID_CONTROL = r"\p{Cc}"
REASONS = ("null_id", "bad_id", "unknown_event", "bad_timestamp", "future_timestamp", "out_of_range", BOT)
DUPLICATES = "duplicates"
CLEAN = "clean"

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


def _check_value_kind(value_kind: str, where: str = "value_kind") -> None:
    if value_kind not in VALUE_KINDS:
        raise ValueError(f"{where} must be one of {', '.join(VALUE_KINDS)}, got {value_kind!r}")


def _bad_id(column: Column) -> Column:
    return column.rlike(ID_CONTROL) | (F.length(column) > MAX_ID_LENGTH)


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


def flag_rows(raw: DataFrame, cfg: Mapping[str, Any], *, has_timestamp: bool, value_kind: str = RATINGS) -> DataFrame:
    """Collapse identical raw rows and give each distinct row its normalised values, reason and repeat flag.

    Args:
        raw: raw columns and ``ds``.
        cfg: the ``clean`` config section.
        has_timestamp: whether the source has timestamps (a missing ts is valid only when it has none).
        value_kind: what the value column holds: ``rating``, ``count`` or ``none`` (see the module docstring).

    Returns:
        One row per distinct raw row of a date: the raw columns, ``ds``, ``_n`` (how many raw rows it
        stands for), the normalised ``_user, _item, _event, _value, _ts``, ``reason`` (null = valid) and
        ``_kept`` (for a valid row: false when it repeats a kept one within ``clean.dedupe_seconds``).
    """
    require_columns(raw.columns, (*RAW_COLUMNS, DS), "flag_rows")
    _check_config(cfg)
    _check_value_kind(value_kind)
    low, high = (float(x) for x in cfg["rating_range"])
    # the job's one shuffle, by ds: the identical-row count and both windows below group by keys that
    # include ds, so Spark plans no further exchange for them, and each date's rows end in one task,
    # which writes that date's single clean and quarantine file without another shuffle
    rows = (
        raw.withColumn(_USER, _blank_to_null(F.col(USER_ID)))
        .repartition(DS)
        .groupBy(DS, _USER, *RAW_COLUMNS)
        .agg(F.count(F.lit(1)).alias(_N))
    )

    day_start = F.to_timestamp(F.col(DS), "yyyy-MM-dd")
    raw_ts = _blank_to_null(F.col(TS))
    parsed_ts = F.try_to_timestamp(raw_ts, F.lit(RAW_TS_FORMAT))
    raw_value = _blank_to_null(F.col(VALUE))
    rows = rows.select(
        "*",
        _blank_to_null(F.col(ITEM_ID)).alias(_ITEM),
        F.lower(_blank_to_null(F.col(EVENT))).alias(_EVENT),
        raw_value.try_cast("double").alias(_VALUE),
        (parsed_ts if has_timestamp else F.when(raw_ts.isNull(), day_start).otherwise(parsed_ts)).alias(_TS),
    )
    user, item, event, value, ts = (F.col(c) for c in (_USER, _ITEM, _EVENT, _VALUE, _TS))
    is_rating = event == RATING_EVENT
    not_finite = value.isNull() | F.isnan(value) | (F.abs(value) == float("inf"))
    if value_kind == RATINGS:
        bad_value = (
            (raw_value.isNotNull() & not_finite)
            | (is_rating & (value.isNull() | ~value.between(low, high)))
            | (~is_rating & (value < 0))
        )
    elif value_kind == COUNTS:
        bad_value = not_finite | (value < 0)  # a play count of 10,000 is no out-of-range rating
    else:
        bad_value = F.lit(False)
    future_from = F.unix_seconds(day_start) + SECONDS_PER_DAY + int(cfg["max_future_seconds"])
    reason = (
        F.when(user.isNull() | item.isNull(), "null_id")
        .when(_bad_id(user) | _bad_id(item), "bad_id")
        .when(event.isNull() | ~event.isin(list(cfg["events"])), "unknown_event")
        .when(ts.isNull(), "bad_timestamp")
        .when(F.unix_seconds(ts) >= future_from, "future_timestamp")
        .when(bad_value, "out_of_range")
    )
    rows = rows.withColumn(REASON, reason)
    # repeats of (user, item, event) among the valid rows, in order of time, then value. Decided before
    # the bot window, which counts only the kept rows; both windows share one sort (a user's window is a
    # prefix of this one). A bot's rows are quarantined whatever this says, and for everyone else
    # "valid" is final here.
    # The user leads the sort keys: a partition holds few dates, so a leading ds would make the sort's
    # key prefix useless
    valid = F.col(REASON).isNull()
    group = Window.partitionBy(_USER, DS, _ITEM, _EVENT, valid).orderBy(_TS, _VALUE)
    times = F.collect_list(_TS).over(group.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing))
    position = F.row_number().over(group)
    # the first is always kept; the fold runs only for the later ones of a group
    kept = (position == 1) | F.array_contains(_kept_positions(times, int(cfg["dedupe_seconds"])), position)
    rows = rows.withColumn(_KEPT, valid & kept)
    # bots: count the user's kept events of the day, neither identical copies nor repeats: a real user
    # whose events were delivered twice sent no more events than before
    kept_events = F.count(F.when(F.col(_KEPT), 1)).over(Window.partitionBy(_USER, DS))
    is_bot = valid & (kept_events > int(cfg["bot_events_per_day"]))
    return rows.withColumn(REASON, F.when(is_bot, F.lit("bot")).otherwise(F.col(REASON)))


def to_feedback(flagged: DataFrame, cfg: Mapping[str, Any], *, value_kind: str = RATINGS) -> DataFrame:
    """The kept valid rows as clean rows with label and weight (columns ``CLEAN_COLUMNS`` + ds).

    Args:
        flagged: the output of :func:`flag_rows`.
        cfg: the ``clean`` config section.
        value_kind: what the value column holds; ``rating``: a rating below ``positive_rating`` gets label
            and weight 0; ``count``: weight x ``log1p(count)``, a count of 0 gets label and weight 0;
            ``none``: label and weight of the event kind.
    """
    _check_value_kind(value_kind)
    spec = cfg["events"]
    labels = F.create_map(*(F.lit(x) for kind in spec for x in (kind, int(spec[kind][LABEL]))))
    weights = F.create_map(*(F.lit(x) for kind in spec for x in (kind, float(spec[kind][WEIGHT]))))
    event, value = F.col(_EVENT), F.col(_VALUE)
    label, weight = F.try_element_at(labels, event), F.try_element_at(weights, event)
    if value_kind == RATINGS:
        zero = (event == RATING_EVENT) & ~(value >= float(cfg["positive_rating"]))
    elif value_kind == COUNTS:
        zero = value == 0
        weight = weight * F.log1p(value)
    else:
        zero = F.lit(False)
    return flagged.where(F.col(REASON).isNull() & F.col(_KEPT)).select(
        F.col(_USER).alias(USER_ID),
        F.col(_ITEM).alias(ITEM_ID),
        event.alias(EVENT),
        value.alias(VALUE),
        F.col(_TS).alias(TS),
        F.when(zero, 0).otherwise(label).cast("int").alias(LABEL),
        F.when(zero, 0.0).otherwise(weight).cast("double").alias(WEIGHT),
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


def clean_events(
    raw: DataFrame, cfg: Mapping[str, Any], *, has_timestamp: bool, value_kind: str = RATINGS
) -> CleanResult:
    """The whole cleaning of raw rows (raw columns + ds) as lazy frames; see the module docstring."""
    flagged = flag_rows(raw, cfg, has_timestamp=has_timestamp, value_kind=value_kind)
    quarantine = flagged.where(F.col(REASON).isNotNull()).select(*QUARANTINE_COLUMNS, DS)
    return CleanResult(
        clean=to_feedback(flagged, cfg, value_kind=value_kind),
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


def _by_reason(entry: Mapping[str, Any]) -> str:
    """The reasons of a reconciliation entry that quarantined rows, most rows first: ``out_of_range 9,800, bot 12``."""
    counts = [(reason, n) for reason, n in entry["by_reason"].items() if n]
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts, key=lambda rn: -rn[1]))


def _invalid(entry: Mapping[str, Any], reasons: Sequence[str]) -> int:
    return sum(int(entry["by_reason"].get(reason, 0)) for reason in reasons)


def outcome_findings(ds: str, report: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[str]:
    """Quality findings of the outcome counts, each with its counts by reason.

    The quarantine share counts the rows quarantined for one of ``quality.share_reasons`` (by default
    every reason but ``bot``: a day dominated by one heavy user, such as a MovieLens user who rates a
    thousand films in a day, is filtered as designed, not a broken import). It is checked over all the
    dates the run cleans together, and on each date with at least ``quality.min_share_rows`` input rows
    (a date of three rows with two bad ones says little).

    Args:
        ds: the run's date.
        report: the reconciliation of every date cleaned, as :func:`reconcile` returns it.
        cfg: the ``quality`` config section.

    Returns:
        One sentence when the run's dates together, and one per date large enough, quarantined more than
        ``quality.max_quarantine_share`` of their input rows, and one when ``ds`` has no clean row.

    Raises:
        ValueError: ``quality.max_quarantine_share`` is not a share, or a reason is unknown.
    """
    limit = float(cfg["max_quarantine_share"])
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"quality.max_quarantine_share must be in [0, 1], got {cfg['max_quarantine_share']!r}")
    reasons = list(cfg["share_reasons"])
    unknown = sorted(set(reasons) - set(REASONS))
    if unknown:
        raise ValueError(f"quality.share_reasons: unknown reason(s) {', '.join(unknown)}; known: {', '.join(REASONS)}")

    def finding(label: str, entry: Mapping[str, Any]) -> str | None:
        share = _invalid(entry, reasons) / entry["input"] if entry["input"] else 0.0
        if share <= limit:
            return None
        return (f"{label}: {_invalid(entry, reasons):,} of {entry['input']:,} rows ({share:.1%}) quarantined as "
                f"invalid (quality.share_reasons), above quality.max_quarantine_share {cfg['max_quarantine_share']}: "
                f"{_by_reason(entry)}")

    total = {"input": sum(e["input"] for e in report.values()),
             "by_reason": {r: sum(int(e["by_reason"].get(r, 0)) for e in report.values()) for r in REASONS}}
    dates = sorted(report)
    found = [finding(f"clean {dates[0]}..{dates[-1]} ({len(dates)} dates together)", total)] if len(dates) > 1 else []
    found += [finding(f"clean {d}", report[d]) for d in dates
              if report[d]["input"] >= int(cfg["min_share_rows"]) or len(dates) == 1]
    findings = [f for f in found if f]
    entry = report[ds]
    if entry[CLEAN] == 0:
        reasons_text = f" ({_by_reason(entry)})" if entry["quarantined"] else ""
        findings.append(f"clean {ds} has no clean rows: of {entry['input']:,} rows, {entry[DUPLICATES]:,} "
                        f"duplicates and {entry['quarantined']:,} quarantined{reasons_text}")
    return findings


def rejected_path(lake: Lake, ds: str) -> Path:
    """Where the reconciliation of a run of ``ds`` stopped by the quality gate goes (not a partition)."""
    return lake.path("quarantine") / REJECTED_DIR / f"ds={ds}" / RECONCILIATION_FILE


def _gate(lake: Lake, ds: str, report: Mapping[str, Mapping[str, Any]], findings: Sequence[str]) -> None:
    """Stop the run when there are findings, leaving its reconciliation at :func:`rejected_path`."""
    if not findings:
        return
    path = rejected_path(lake, ds)
    # written aside and renamed, so a reader sees the previous stopped run's file or this one, whole
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    write_json(partial, {"ds": ds, "findings": list(findings), "dates": report})
    partial.replace(path)
    raise DataQualityError(f"{'; '.join(findings)} (reconciliation of the stopped run: {path})")


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
    source = lake.source()
    has_timestamp = bool(source.get("has_timestamp", True))
    value_kind = source.get("value_kind", RATINGS)
    _check_value_kind(value_kind, f"value_kind in {lake.path('raw') / SOURCE_FILE}")
    log.info("cleaning %d date(s) %s..%s (has_timestamp=%s, value_kind=%s)",
             len(dates), dates[0], dates[-1], has_timestamp, value_kind)
    # the cheap checks first, before Spark starts; the input counts come from the raw footers, independently
    # of what Spark counts
    inputs = raw_rows(lake, dates)
    _gate(lake, ds, {d: {"input": n} for d, n in inputs.items()}, raw_findings(lake, dates, ds))

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
        _gate(lake, ds, report, findings)
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

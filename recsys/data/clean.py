"""The cleaning rules as Spark transformations: validate, quarantine with a reason, dedupe, map to implicit feedback.

Ids are taken exactly as they came, only trimmed of leading and trailing spaces: never case-folded or
otherwise rewritten, so ``B00ABCDxyz`` and ``b00abcdxyz`` are two ids, and so are ``007`` and ``7``
(the rule, with its Python and Arrow forms, is :mod:`recsys.data.ids`). Event kinds are not ids: they
are trimmed and lowercased. What the ``value`` column means comes from ``value_kind`` in
``raw/_source.json`` (``rating`` when absent): ``rating``, ``count`` (plays, clicks: how often the event
happened) or ``none`` (the value carries nothing and is never checked).

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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F

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
from recsys.core.lake import Lake, window_start
from recsys.data.ids import bad_id_column, trim_id_column
from recsys.data.rawzone import SECONDS_PER_DAY

RATING_EVENT = "rating"
# what the value column means, from raw/_source.json value_kind
VALUE_KINDS = ("rating", "count", "none")
RATINGS, COUNTS, NO_VALUES = VALUE_KINDS
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


def _nonblank(trimmed: Column) -> Column:
    return F.when(trimmed != "", trimmed)


def check_value_kind(value_kind: str, where: str = "value_kind") -> None:
    """Raise ValueError unless ``value_kind`` is one of ``VALUE_KINDS``; ``where`` names its origin."""
    if value_kind not in VALUE_KINDS:
        raise ValueError(f"{where} must be one of {', '.join(VALUE_KINDS)}, got {value_kind!r}")


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
    check_value_kind(value_kind)
    low, high = (float(x) for x in cfg["rating_range"])
    # the job's one shuffle, by ds: the identical-row count and both windows below group by keys that
    # include ds, so Spark plans no further exchange for them, and each date's rows end in one task,
    # which writes that date's single clean and quarantine file without another shuffle
    rows = (
        raw.withColumn(_USER, _nonblank(trim_id_column(F.col(USER_ID))))
        .repartition(DS)
        .groupBy(DS, _USER, *RAW_COLUMNS)
        .agg(F.count(F.lit(1)).alias(_N))
    )

    day_start = F.to_timestamp(F.col(DS), "yyyy-MM-dd")
    raw_ts = _nonblank(F.trim(F.col(TS)))
    parsed_ts = F.try_to_timestamp(raw_ts, F.lit(RAW_TS_FORMAT))
    raw_value = _nonblank(F.trim(F.col(VALUE)))
    rows = rows.select(
        "*",
        _nonblank(trim_id_column(F.col(ITEM_ID))).alias(_ITEM),
        F.lower(_nonblank(F.trim(F.col(EVENT)))).alias(_EVENT),
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
        .when(bad_id_column(user) | bad_id_column(item), "bad_id")
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
    check_value_kind(value_kind)
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

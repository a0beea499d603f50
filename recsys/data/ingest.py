"""Mapping a log's columns to raw rows: roles, value kinds, event times and the day each row lands in.

Ids and values land as the text they were, never trimmed, case-folded or rewritten (jobs.clean trims,
validates and quarantines). ``value`` means what the mapping says: ``value=<col>`` or
``value=<col>:rating`` is a rating, ``value=<col>:count`` a count or amount (plays, quantity, seconds
watched); ``raw/_source.json`` records it as ``value_kind`` (``rating``, ``count`` or ``none``).
Without an event column every row is a ``rating`` for a rating source and a ``view`` otherwise.

Timestamps are detected per file, see :func:`parse_timestamps`; the unit is recorded as ``ts_unit``.
Rows later than the import time never create a partition or move ``last_date``: like rows without a
parseable time, they land in the last day that has timely rows (their time kept, so jobs.clean
quarantines them as ``future_timestamp``).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys.core.columns import EVENT, ITEM_ID, RAW_COLUMNS, TS, USER_ID, VALUE
from recsys.data.formats import FORMATS
from recsys.data.rawzone import SECONDS_PER_DAY, day_number, iso_utc

log = logging.getLogger(__name__)

ROLES = ("user", "item", "value", "ts", "event")  # --mapping keys, the source column of each raw column
REQUIRED_ROLES = ("user", "item")
ROLE_COLUMNS = {"user": USER_ID, "item": ITEM_ID, "event": EVENT, "value": VALUE, "ts": TS}
VALUE_KINDS = ("rating", "count")  # value=<col>:<kind>; rating when no kind is given
# epoch seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the times ISO text can express
EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)
# 1e11 seconds is the year 5138 and 1e11 milliseconds 1973-03-03: real times in seconds stay below it,
# real times in milliseconds since 1973 are above it
MILLISECONDS_FROM = 1e11
_NUMBER = r"^[+-]?[0-9]+(\.[0-9]*)?$"


@dataclasses.dataclass(frozen=True)
class RawRows:
    """Raw rows ready to land, the day each lands in, and what was learned about their times."""

    table: pa.Table  # the string columns of RAW_COLUMNS
    day: np.ndarray  # day number of each row's partition
    ts_unit: str  # seconds, milliseconds, iso8601, typed or none
    future_rows: int  # rows later than the import time, landed on the last timely day


def parse_mapping(text: str) -> tuple[dict[str, str], str]:
    """Parse ``user=<col>,item=<col>[,value=<col>[:rating|:count]][,ts=<col>][,event=<col>]``.

    Returns:
        ``(columns, value_kind)``: role -> column, and what the value is: ``rating`` (also when no kind
        is given), ``count``, or ``none`` when no value is mapped.

    Raises:
        ValueError: a malformed pair, an unknown or repeated role, or ``user``/``item`` missing.
    """
    mapping = parse_pairs(text, ROLES, REQUIRED_ROLES, "--mapping")
    value_kind = "none"
    if "value" in mapping:
        value_kind = "rating"
        name, colon, kind = mapping["value"].rpartition(":")
        if colon and name and kind in VALUE_KINDS:  # a colon followed by anything else is part of the name
            mapping["value"], value_kind = name, kind
    return mapping, value_kind


def parse_pairs(text: str, roles: Sequence[str], required: Sequence[str], option: str) -> dict[str, str]:
    """Parse ``role=column,role=column,...``: the pairs of a mapping option, each role once.

    Args:
        text: the option's value.
        roles: the roles it may name.
        required: the roles it must name.
        option: the option, for the messages (``--mapping``).

    Raises:
        ValueError: a malformed pair, an unknown or repeated role, or a required role missing.
    """
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        role, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not role or not column:
            raise ValueError(f"{option}: expected role=column, got {pair!r} in {text!r}")
        if role not in roles:
            raise ValueError(f"{option}: unknown role {role!r}; roles are {', '.join(roles)}")
        if role in mapping:
            raise ValueError(f"{option}: role {role!r} given twice in {text!r}")
        mapping[role] = column
    missing = [role for role in required if role not in mapping]
    if missing:
        raise ValueError(f"{option}: {', '.join(missing)} missing in {text!r}; {' and '.join(required)} "
                         f"{'is' if len(required) == 1 else 'are'} required")
    return mapping


def source_mapping(fmt: str, text: str | None) -> tuple[dict[str, str], str]:
    """The role -> column mapping of a format and its value kind: the layout's own, or ``text`` parsed.

    Raises:
        ValueError: ``--format csv`` without a mapping, or a mapping for a format with a fixed layout.
    """
    layout = FORMATS[fmt]
    if layout.mapping is None:
        if not text:
            raise ValueError(f"--format {fmt} needs --mapping user=<col>,item=<col>[,value=..][,ts=..][,event=..]")
        return parse_mapping(text)
    if text:
        raise ValueError(f"--mapping is for --format csv; {fmt} has a fixed layout")
    return dict(layout.mapping), "rating"  # MovieLens values are ratings


def parse_timestamps(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, str]:
    """Event times as epoch seconds (UTC), which rows had a parseable time, and the file's unit.

    Accepted: timestamp and date columns (unit ``typed``); numbers, typed or as text, as epoch seconds
    or milliseconds; ISO-8601 text (``2018-09-24T12:00:00Z``, ``2018-09-24 12:00:00``, an offset such
    as ``+02:00``, fractions, a bare date; no zone means UTC). Anything else, and nulls, is unparseable.

    The unit of numbers is decided once for the whole column: ``milliseconds`` when more than half of
    its numbers have an absolute value of at least 1e11 (1e11 ms is 1973-03-03, 1e11 s the year 5138),
    else ``seconds``. The unit reported is that of the numbers, or ``iso8601`` when more rows parsed as
    ISO text than as numbers, or ``none`` when no row parsed. Negative numbers are times before 1970
    and are valid.

    Returns:
        ``(seconds, ok, unit)``: int64 seconds (0 where not ok), the boolean mask of parsed rows, and
        ``seconds``, ``milliseconds``, ``iso8601``, ``typed`` or ``none``.
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        seconds, ok = _epoch(_floats(column.cast(pa.int64())) / per_second)
        return seconds, ok, "typed" if ok.any() else "none"
    if pa.types.is_date(kind):
        seconds, ok = _epoch(_floats(column.cast(pa.date32()).cast(pa.int32())) * SECONDS_PER_DAY)
        return seconds, ok, "typed" if ok.any() else "none"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        seconds, ok, unit = _numbers(_floats(column))
        return seconds, ok, unit if ok.any() else "none"
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    numeric = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
    seconds, ok = np.zeros(len(text), np.int64), np.zeros(len(text), bool)
    unit = "none"
    if numeric.any():
        seconds[numeric], ok[numeric], unit = _numbers(_floats(text.filter(pa.array(numeric)).cast(pa.float64())))
    other = ~numeric & text.is_valid().to_numpy(zero_copy_only=False)
    if other.any():
        # pandas' ISO-8601 parser is strict (2026-02-30 fails) where Arrow's strptime rolls over
        parsed = pd.to_datetime(text.filter(pa.array(other)).to_pandas(), format="ISO8601", errors="coerce", utc=True)
        stamps = parsed.to_numpy(dtype="datetime64[s]")
        seconds[other] = np.where(np.isnat(stamps), 0, stamps.astype(np.int64))
        ok[other] = ~np.isnat(stamps)
    if (ok & other).sum() > (ok & numeric).sum():
        unit = "iso8601"
    return seconds, ok, unit if ok.any() else "none"


def _numbers(numbers: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """Epoch numbers -> (int64 seconds, ok, unit): milliseconds when most of them are at least 1e11."""
    finite = np.abs(numbers[np.isfinite(numbers)])
    millis = 2 * int((finite >= MILLISECONDS_FROM).sum()) > len(finite)
    seconds, ok = _epoch(numbers / 1000 if millis else numbers)
    return seconds, ok, "milliseconds" if millis else "seconds"


def _floats(numbers: pa.Array) -> np.ndarray:
    """Numbers as float64 with NaN for nulls."""
    return numbers.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _epoch(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floating epoch seconds -> (int64 seconds, ok), refusing NaN and times ISO text cannot write."""
    finite = np.nan_to_num(seconds)
    ok = np.isfinite(seconds) & (finite >= EPOCH_RANGE[0]) & (finite <= EPOCH_RANGE[1])
    return np.floor(np.where(ok, seconds, 0)).astype(np.int64), ok


def to_raw(
    fields: Mapping[str, pa.ChunkedArray | pa.Array],
    *,
    default_ds: str,
    value_kind: str = "rating",
    now: float | None = None,
) -> RawRows:
    """Map source columns (keyed by role) to raw rows and the day each row lands in.

    Rows with a parseable time not later than ``now`` land in its UTC day with ISO text. Rows later than
    ``now`` land in the last day of those timely rows, with their own time in ISO text, so the clean
    job quarantines them as future; rows without a parseable time keep their original text and land
    there too. With no timely row, both land on ``default_ds``. Without an event column every row is a
    ``rating`` when the value is a rating, else a ``view``.

    Args:
        fields: source columns by role (``user`` and ``item`` required).
        default_ds: the day of rows when no row has a timely time.
        value_kind: ``rating``, ``count`` or ``none``.
        now: the import time in epoch seconds; None: the current time.

    Returns:
        The raw rows, their days, the timestamp unit and the count of future rows.
    """
    missing = [role for role in REQUIRED_ROLES if role not in fields]
    if missing:
        raise ValueError(f"to_raw: role(s) {', '.join(missing)} missing")
    n = len(fields["user"])
    out = {ROLE_COLUMNS[role]: fields[role].cast(pa.string()) for role in ("user", "item", "event", "value")
           if role in fields}
    rated = "value" in fields and value_kind == "rating"
    out.setdefault(EVENT, pa.nulls(n, pa.string()).fill_null("rating" if rated else "view"))
    out.setdefault(VALUE, pa.nulls(n, pa.string()))
    day = np.full(n, day_number(default_ds), np.int64)
    unit, future = "none", np.zeros(n, bool)
    if "ts" in fields:
        seconds, ok, unit = parse_timestamps(fields["ts"])
        future = ok & (seconds > (time.time() if now is None else now))
        timely = ok & ~future
        if timely.any():
            day = np.where(timely, seconds // SECONDS_PER_DAY, (seconds[timely] // SECONDS_PER_DAY).max())
        out[TS] = pc.if_else(pa.array(ok), iso_utc(seconds), fields["ts"].cast(pa.string()))
        if not ok.all():
            log.warning("%d of %d rows have no parseable timestamp; they keep their text and land on the last day",
                        int((~ok).sum()), n)
        if future.any():
            log.warning("%d of %d rows are later than the import time; they land on the last day, for clean to "
                        "quarantine", int(future.sum()), n)
    else:
        out[TS] = pa.nulls(n, pa.string())
    return RawRows(pa.table({name: out[name] for name in RAW_COLUMNS}), day, unit, int(future.sum()))

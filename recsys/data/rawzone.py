"""Landing rows in the raw zone: the string schema, ISO timestamps, day partitions and _source.json."""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.columns import ITEM_ID, RAW_COLUMNS, USER_ID, require_columns
from recsys.core.lake import DIGEST_FILE, PART_FILE, SOURCE_FILE, ZONES, Lake, read_json, write_json
from recsys.data.ids import bad_ids, trim_ids

log = logging.getLogger(__name__)

RAW_SCHEMA = pa.schema([(name, pa.string()) for name in RAW_COLUMNS])
SECONDS_PER_DAY = 86_400
_EPOCH = dt.date(1970, 1, 1)
# a canonical integer: what int64 -> text gives back (no "+", no leading zeros but "0", no "-0"); 18 digits
# always fit int64, so no overflow check is needed
_CANONICAL_INTEGER = r"^(0|-?[1-9][0-9]{0,17})$"
# raw/_digests.json: the sha256 of every raw partition, recorded once its reused derived partitions agree with it
# derived partitions a later run reuses instead of rebuilding from raw: jobs.clean cleans a date of the window
# only when it has no committed clean partition (quarantine is written with it)
REUSED_ZONES = ("clean", "quarantine")
# everything built from the raw zone, the stable id -> index tables included
DERIVED_ZONES = (*(zone for zone in ZONES if zone != "raw"), "index")


def day_number(ds: str) -> int:
    """Days since 1970-01-01 of a YYYY-MM-DD date."""
    return (dt.date.fromisoformat(ds) - _EPOCH).days


def day_text(day: int) -> str:
    """The YYYY-MM-DD date of a day number (inverse of :func:`day_number`)."""
    return (_EPOCH + dt.timedelta(days=int(day))).isoformat()


def iso_utc(seconds: np.ndarray) -> pa.Array:
    """Format epoch seconds as ISO-8601 UTC text ``YYYY-MM-DDTHH:MM:SSZ``.

    Casting a naive timestamp to text and fixing two characters is several times faster than
    ``strftime`` (about 3 s instead of 10 s for 10M values).
    """
    text = pc.cast(pa.array(np.asarray(seconds, dtype=np.int64), pa.timestamp("s")), pa.string())
    return pc.binary_join_element_wise(pc.utf8_replace_slice(text, 10, 11, "T"), "Z", "")


def id_type(ids: pa.Array | pa.ChunkedArray) -> str:
    """``"int64"`` when every id is a canonical integer that round-trips through int64, else ``"string"``.

    Ids are trimmed first, as jobs.clean trims them (:mod:`recsys.data.ids`); null, blank and bad ids are
    left out (clean quarantines them). ``007`` and ``+7`` are strings, not 7: publishing them as int64
    would rewrite them, and ``007`` and ``7`` would become the same id. So are ids of more than 18
    digits, and ids padded with other blanks than spaces (clean keeps a tab or a no-break space, so
    ``"\u00a07"`` is not 7). No ids at all: string.
    """
    text = trim_ids(ids)
    text = text.filter(pc.and_(pc.not_equal(text, ""), pc.invert(bad_ids(text))))  # the filter drops nulls too
    if len(text) == 0:
        return "string"
    return "int64" if pc.all(pc.match_substring_regex(text, _CANONICAL_INTEGER)).as_py() else "string"


def _partition_rows(path: Path) -> int:
    """Rows of a committed partition, from the Parquet footers alone."""
    return sum(pq.read_metadata(part).num_rows for part in path.glob("*.parquet"))


def replaces_zone(src: str | None, replace: bool) -> bool:
    """Whether a landing replaces the whole raw zone, rather than adding or rewriting some dates of it.

    A file's import (``src`` set) is the file's current content, every date of it; synthetic rows
    (``src`` None) add dates beside those already there unless ``replace`` is on.
    """
    return replace or src is not None


def _remove(path: Path) -> None:
    """Remove a folder, renamed aside first so that a reader sees it whole or not at all."""
    if path.is_dir():
        gone = path.with_name(f".{path.name}.gone-{uuid.uuid4().hex[:8]}")
        os.rename(path, gone)
        shutil.rmtree(gone)


def holds_other_source(lake: Lake, source: str, src: str | None) -> bool:
    """Whether the lake holds rows of another source than ``source``/``src``, or of an unrecorded one.

    Landing there is refused, or with ``replace`` empties the lake first (:func:`claim_raw_zone`).
    """
    previous = lake.source()
    same = bool(previous) and (previous.get("source"), previous.get("src")) == (source, src)
    return not same and bool(previous or lake.dates("raw"))


def claim_raw_zone(lake: Lake, source: str, src: str | None, *, replace: bool = False) -> dict:
    """Make sure the lake may take rows from ``source``/``src`` and record the claim.

    A lake holds one source: its indexes, clean partitions and models describe that source's ids, and
    rows of another source beside them would mix unrelated ids. The same source (same format, same
    resolved file) may land again: a file's re-import replaces the raw zone with the file's current
    content, synthetic rows add or rewrite dates; :func:`reconcile_raw` then removes what was derived
    from every date that changed or went. ``replace`` takes over a lake holding another (or an
    unrecorded) source: everything in it, the raw zone and every derived zone with the indexes, is
    removed first, so nothing of the old source is reused.

    Returns:
        The previous ``_source.json`` to merge into: ``{}`` for a fresh zone, a taken-over one, or when
        this landing replaces the whole zone (:func:`replaces_zone`).

    Raises:
        ValueError: the lake holds data from another (or an unrecorded) source and ``replace`` is off.
    """
    raw = lake.path("raw")
    previous = lake.source()
    if holds_other_source(lake, source, src):
        if not replace and previous:
            raise ValueError(
                f"the raw zone at {raw} holds data from source {previous.get('source')!r} "
                f"(src {previous.get('src')!r}); refusing to add {source!r} (src {src!r}) beside it. "
                "Pass --replace (make run-on: REPLACE=1) to remove the old source and all that was derived from it."
            )
        if not replace:
            raise ValueError(
                f"the raw zone at {raw} holds partitions but no {SOURCE_FILE}, so its source is unknown; "
                "refusing to add to it. Pass --replace (make run-on: REPLACE=1) to remove it first."
            )
        log.info("--replace: removing the raw zone and every zone derived from it under %s", lake.root)
        for zone in DERIVED_ZONES:  # derived first: a crash half way leaves the old raw zone, still refused
            _remove(lake.path(zone))
        _remove(raw)
        previous = {}
    # claim before writing partitions, so a retry after a crash is recognised as the same source
    write_json(raw / SOURCE_FILE, {**previous, "source": source, "src": src})
    return {} if replaces_zone(src, replace) else previous


def invalidate(lake: Lake, dates: Iterable[str], *, zones: Sequence[str] = REUSED_ZONES) -> list[str]:
    """Remove the derived partitions of raw dates that were rewritten or removed.

    jobs.clean cleans a date of the training window only when it has no committed clean partition, so a
    clean (and quarantine) partition made from older raw rows would be reused by every later run. Once
    removed, the next run whose window covers the date cleans it again from the raw zone as it is now.
    Outputs of runs already made (tables, models, recs, ... of a date) stay as they were made until that
    date runs again.

    Args:
        lake: the lake.
        dates: the raw dates (YYYY-MM-DD) that changed or went.
        zones: the zones to remove the dates' partitions from.

    Returns:
        The partitions removed, as ``zone/ds=YYYY-MM-DD``.
    """
    removed = []
    for ds in sorted(set(dates)):
        for zone in zones:
            path = lake.path(zone, ds)
            if path.is_dir():
                _remove(path)
                removed.append(f"{zone}/{path.name}")
    if removed:
        log.info("removed %d derived partitions of changed raw dates: %s", len(removed), ", ".join(removed))
    return removed


def _digest(path: Path) -> str:
    """sha256 over a partition's file names and bytes (the same rows written by the same pyarrow: the same bytes)."""
    total = hashlib.sha256()
    for part in sorted(p for p in path.iterdir() if p.is_file()):
        with part.open("rb") as f:
            total.update(part.name.encode() + b"\0" + hashlib.file_digest(f, "sha256").digest())
    return total.hexdigest()


def reconcile_raw(lake: Lake, landed: Iterable[str], *, whole: bool) -> list[str]:
    """After a landing: drop the raw dates the source no longer has and invalidate every date that changed.

    ``raw/_digests.json`` records the digest of each raw partition. A landed date whose partition differs
    from its record (or has none: a lake older than the record), a raw date the landing lacks when it
    replaces the whole zone (``whole``; the partition is removed), and a recorded date no longer in the
    raw zone lose their reused derived partitions (:func:`invalidate`). The record is written last, so a
    landing that dies half way leaves records that still differ, and the next landing invalidates again.

    Args:
        lake: the lake just landed in.
        landed: the dates whose raw partitions the landing wrote.
        whole: the landing is the source's whole content (:func:`replaces_zone`).

    Returns:
        The raw dates whose derived partitions were invalidated (whether or not there were any).
    """
    record_path = lake.path("raw") / DIGEST_FILE
    recorded = read_json(record_path) if record_path.is_file() else {}
    landed = set(landed)
    digests = {ds: _digest(lake.path("raw", ds)) for ds in sorted(landed)}
    present = set(lake.dates("raw"))
    dropped = sorted(present - landed) if whole else []
    stale = {ds for ds, digest in digests.items() if recorded.get(ds) != digest} | set(dropped) | (set(recorded) - present)
    invalidate(lake, stale)  # derived first: a crash in between never leaves derived data without its raw
    for ds in dropped:
        _remove(lake.path("raw", ds))
    if dropped:
        log.info("removed %d raw dates the source no longer has: %s..%s", len(dropped), dropped[0], dropped[-1])
    write_json(record_path, {
        ds: digests.get(ds) or recorded.get(ds) or _digest(lake.path("raw", ds)) for ds in lake.dates("raw")
    })
    return sorted(stale)


def write_raw(
    lake: Lake,
    table: pa.Table,
    day: np.ndarray,
    *,
    source: str,
    src: str | None,
    has_timestamp: bool,
    replace: bool = False,
    ts_unit: str | None = None,
    value_kind: str | None = None,
) -> dict:
    """Land raw rows, one atomic partition per day, and describe the zone in ``raw/_source.json``.

    Every partition the rows touch is replaced completely; other dates already there stay, unless the
    landing replaces the whole zone (a file's import, or ``replace``: see :func:`claim_raw_zone`).

    Args:
        lake: the lake to write to.
        table: rows with the raw string columns (extra columns are refused).
        day: for every row, the day number (:func:`day_number`) of the partition it lands in.
        source: the format (``movielens-1m``, ``csv``, ...) or ``synthetic``.
        src: the file the rows came from, or None.
        has_timestamp: whether the source has event times.
        replace: remove a raw zone of another source first instead of refusing.
        ts_unit: how the source wrote its times (``seconds``, ``milliseconds``, ``iso8601``, ``typed``,
            ``none``), recorded as ``ts_unit`` when given.
        value_kind: what ``value`` means (``rating``, ``count``, ``none``), recorded as ``value_kind``
            when given; jobs.clean reads it.

    Returns:
        Facts of this write: first_date, last_date, days (partitions written), rows, window_days.
    """
    require_columns(table.column_names, RAW_COLUMNS, "raw rows")
    if table.column_names != list(RAW_COLUMNS):
        raise ValueError(f"raw rows: expected exactly the columns {', '.join(RAW_COLUMNS)}; has {table.column_names}")
    day = np.asarray(day, dtype=np.int64)
    if len(day) != table.num_rows:
        raise ValueError(f"raw rows: {table.num_rows} rows but {len(day)} partition days")
    if table.num_rows == 0:
        raise ValueError(f"no rows to land from {src or source}")
    table = table.cast(RAW_SCHEMA)
    previous = claim_raw_zone(lake, source, src, replace=replace)

    if np.any(day[1:] < day[:-1]):
        order = np.argsort(day, kind="stable")  # stable: rows keep their source order inside a day
        table, day = table.take(pa.array(order)), day[order]
    starts = np.concatenate([[0], np.flatnonzero(np.diff(day)) + 1, [len(day)]])
    for lo, hi in zip(starts[:-1], starts[1:], strict=False):
        ds = day_text(day[lo])
        with lake.writing("raw", ds) as staged:
            pq.write_table(table.slice(lo, hi - lo), staged / PART_FILE)
    first, last = day_text(day[0]), day_text(day[-1])
    log.info("landed %d rows from %s in %d raw partitions %s..%s", len(day), src or source, len(starts) - 1,
             first, last)
    reconcile_raw(lake, [day_text(d) for d in day[starts[:-1]]], whole=replaces_zone(src, replace))

    dates = lake.dates("raw")
    # ids stay int64 only while every landing of this source had integer ids
    types = {
        key: "int64" if id_type(table.column(col)) == previous.get(key, "int64") == "int64" else "string"
        for key, col in (("user_id_type", USER_ID), ("item_id_type", ITEM_ID))
    }
    write_json(lake.path("raw") / SOURCE_FILE, {
        "source": source,
        "src": src,
        **types,
        "has_timestamp": bool(has_timestamp and previous.get("has_timestamp", True)),
        **({"ts_unit": ts_unit} if ts_unit is not None else {}),
        **({"value_kind": value_kind} if value_kind is not None else {}),
        "first_date": dates[0],
        "last_date": dates[-1],
        "dates": len(dates),
        "rows": sum(_partition_rows(lake.path("raw", ds)) for ds in dates),
    })
    return {
        "first_date": first,
        "last_date": last,
        "days": len(starts) - 1,
        "rows": int(table.num_rows),
        "window_days": int(day[-1] - day[0]) + 1,
    }

"""Land an interaction log (MovieLens, CSV/TSV, JSON lines or Parquet) in the raw zone, one partition per day.

Files are taken as they come (``--format csv``; the MovieLens formats have fixed layouts):

- delimited text with a header, or without one when every ``--mapping`` column is a 0-based position
  (``user=1,item=0,value=2,ts=3``); CRLF line ends, a UTF-8 byte-order mark, quoted fields holding
  separators and line breaks, and a trailing empty column (lines ending in the separator) are all read.
  Without ``--sep`` the separator is sniffed from the first lines (comma, tab, semicolon or pipe: the
  one that splits every sampled record into the same number of fields, the most fields winning), else
  tab for ``.tsv``/``.tab`` files and comma for the rest. ``--sep tab`` and ``--sep '\\t'`` both mean tab.
- JSON lines (``.jsonl``, ``.json``, ``.ndjson``, or a file whose first non-blank character is ``{``),
  one object per line, the mapping naming keys: e.g. Amazon reviews,
  ``user=reviewerID,item=asin,value=overall,ts=unixReviewTime`` (classic) or
  ``user=user_id,item=parent_asin,value=rating,ts=timestamp`` (2023 release, milliseconds).
- Parquet (detected by its magic bytes).
- Any text kind compressed with gzip, bz2, zstd or lz4 (detected by magic bytes, whatever the name).
- Text in another encoding with ``--encoding`` (default utf-8; e.g. ``--encoding latin-1``).

Ids and values land as the text they were, never trimmed, case-folded or rewritten (jobs.clean trims,
validates and quarantines). ``value`` means what the mapping says: ``value=<col>`` or
``value=<col>:rating`` is a rating, ``value=<col>:count`` a count or amount (plays, quantity, seconds
watched); ``raw/_source.json`` records it as ``value_kind`` (``rating``, ``count`` or ``none``).
Without an event column every row is a ``rating`` for a rating source and a ``view`` otherwise.

Timestamps are detected per file, see :func:`parse_timestamps`; the unit is logged and recorded as
``ts_unit``. Rows later than the import time never create a partition or move ``last_date``: like rows
without a parseable time, they land in the last day that has timely rows (their time kept, so
jobs.clean quarantines them as ``future_timestamp``).

Exit codes: 0 the rows landed (the last stdout line is ``RECSYS_RESULT {json}`` with first_date,
last_date, days, rows, window_days, source, ts_unit, value_kind and future_rows); 1 the input cannot be
landed: the message names the file and, where it applies, the line, column or mapped column; 2 a bad
command line (argparse). The data-quality exit code 65 of :mod:`recsys.core.cli` is not used here:
doubtful rows land and jobs.clean judges them.
"""

from __future__ import annotations

import argparse
import codecs
import csv
import dataclasses
import datetime as dt
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recsys.core.cli import JobContext, iso_date, job_parser, run_job
from recsys.core.columns import EVENT, ITEM_ID, RAW_COLUMNS, TS, USER_ID, VALUE
from recsys.data.rawzone import SECONDS_PER_DAY, day_number, iso_utc, write_raw

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
_POSITION = re.compile(r"[0-9]+")
_COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bz2", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4"}
_JSON_SUFFIXES = {".jsonl", ".json", ".ndjson"}
_SEP_NAMES = {"tab": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
_SNIFF_SEPS = (",", "\t", ";", "|")
_SNIFF_BYTES = 64 * 1024
_SNIFF_RECORDS = 20
_JSON_SAMPLE = 1000  # JSON records read first to learn the keys and their types
_CHUNK = 1 << 20
_BLANK = b" \t\r\n\xef\xbb\xbf"  # whitespace and the UTF-8 byte-order mark
_ONE_CHAR_SEP = "\x1f"  # ASCII unit separator: stands in for a multi-character separator such as "::"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a format's files look: separator, column names of a headerless file, fixed column mapping."""

    sep: str | None  # None: sniffed from the file
    names: tuple[str, ...] | None  # None: the first line is a header
    mapping: Mapping[str, str] | None  # role -> column; None: --mapping is required


_ML_NAMES = ("userId", "movieId", "rating", "timestamp")
_ML_MAPPING = {"user": "userId", "item": "movieId", "value": "rating", "ts": "timestamp"}
FORMATS = {
    "movielens-100k": Layout("\t", _ML_NAMES, _ML_MAPPING),  # ml-100k u.data
    "movielens-1m": Layout("::", _ML_NAMES, _ML_MAPPING),  # ml-1m ratings.dat (also ml-10m)
    "movielens-latest": Layout(",", None, _ML_MAPPING),  # ml-latest(-small) ratings.csv, with header
    "csv": Layout(None, None, None),  # delimited text, JSON lines or Parquet (detected)
}


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
    mapping: dict[str, str] = {}
    value_kind = "none"
    for pair in text.split(","):
        role, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not role or not column:
            raise ValueError(f"--mapping: expected role=column, got {pair!r} in {text!r}")
        if role not in ROLES:
            raise ValueError(f"--mapping: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if role in mapping:
            raise ValueError(f"--mapping: role {role!r} given twice in {text!r}")
        if role == "value":
            name, colon, kind = column.rpartition(":")
            # a colon followed by anything but a kind is part of the column's name
            column, value_kind = (name, kind) if colon and name and kind in VALUE_KINDS else (column, "rating")
        mapping[role] = column
    missing = [role for role in REQUIRED_ROLES if role not in mapping]
    if missing:
        raise ValueError(f"--mapping: {', '.join(missing)} missing in {text!r}; user and item are required")
    return mapping, value_kind


def parse_sep(text: str) -> str:
    """The separator meant by ``--sep``: a name (tab, comma, semicolon, pipe), an escape (``\\t``) or itself."""
    sep = _SEP_NAMES.get(text.lower()) or codecs.decode(text, "unicode_escape")
    if not sep:
        raise ValueError("--sep: the separator is empty")
    return sep


def default_sep(path: Path) -> str:
    """Tab for ``.tsv``/``.tab`` files (compressed or not), else comma."""
    suffixes = [s for s in path.suffixes if s not in _COMPRESSED]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab") else ","


def sniff_sep(sample: str, fallback: str) -> str:
    """The separator of delimited text, from its first records.

    A candidate (comma, tab, semicolon, pipe) qualifies when it splits every sampled record (quotes
    respected) into the same number of fields, more than one; the one giving the most fields wins, on a
    tie ``fallback`` if it is among them, else the first in the order above. None qualifies: ``fallback``.
    """
    lines = sample.splitlines(keepends=True)
    if len(lines) > 1 and not sample.endswith(("\n", "\r")):
        lines = lines[:-1]  # the sample cut its last line short
    best: tuple[int, bool] = (1, False)
    chosen = fallback
    for sep in _SNIFF_SEPS:
        try:
            records = [r for r in csv.reader(lines, delimiter=sep) if r][:_SNIFF_RECORDS + 1]
        except csv.Error:
            continue
        if len(records) > 2:
            records = records[:-1]  # may be a quoted record the sample cut short
        widths = {len(r) for r in records}
        if len(widths) != 1:
            continue
        score = (widths.pop(), sep == fallback)
        if score > best:
            best, chosen = score, sep
    return chosen


def _compression(path: Path) -> str | None:
    """The codec of a compressed file, from its magic bytes; None for a plain file."""
    with path.open("rb") as handle:
        head = handle.read(4)
    return next((codec for magic, codec in _MAGIC.items() if head.startswith(magic)), None)


def _opener(path: Path) -> Callable[[], pa.NativeFile]:
    """Something that opens the file's (decompressed) bytes, again and again."""
    codec = _compression(path)
    return lambda: pa.input_stream(str(path), compression=codec)


def _head(source: Callable[[], pa.NativeFile], size: int = _SNIFF_BYTES) -> bytes:
    with source() as stream:
        return stream.read(size)


def _file_kind(path: Path, source: Callable[[], pa.NativeFile]) -> str:
    """``parquet``, ``jsonl`` or ``text``, from the magic bytes, the extension, then the first character."""
    with path.open("rb") as handle:
        if handle.read(4) == b"PAR1":
            return "parquet"
    suffixes = [s.lower() for s in path.suffixes if s.lower() not in _COMPRESSED]
    if suffixes and suffixes[-1] in _JSON_SUFFIXES:
        return "jsonl"
    return "jsonl" if _head(source, 4096).lstrip(_BLANK)[:1] == b"{" else "text"


def _raw_lines(source: Callable[[], pa.NativeFile]) -> Iterator[bytes]:
    """The lines of a file as bytes, line ends kept."""
    rest = b""
    with source() as stream:
        while chunk := stream.read(_CHUNK):
            # a newline byte never occurs inside a character of UTF-8 or of a single-byte encoding
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            yield from (part + b"\n" for part in parts)
    if rest:
        yield rest


def _lines(source: Callable[[], pa.NativeFile], path: Path, encoding: str) -> Iterator[str]:
    """The decoded lines of a file, line ends kept.

    Raises:
        ValueError: a line is not valid ``encoding``; names the line, the column and the byte.
    """
    for number, line in enumerate(_raw_lines(source), start=1):
        try:
            yield line.decode(encoding)
        except UnicodeDecodeError as err:
            column = len(line[:err.start].decode(encoding, errors="replace")) + 1
            raise ValueError(
                f"{path}: line {number}, column {column}: byte 0x{line[err.start]:02x} is not valid {encoding} "
                "text; if the file is in another encoding, pass it, e.g. --encoding latin-1"
            ) from None


def _require(path: Path, wanted: Sequence[str], have: Sequence[str], where: str) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ValueError(f"{path}: mapped column(s) {', '.join(map(repr, missing))} not found in {where}; "
                         f"the file has {', '.join(map(repr, have))}")


def read_log(
    path: Path,
    columns: Sequence[str],
    *,
    sep: str | None = None,
    names: Sequence[str] | None = None,
    headerless: bool = False,
    encoding: str = "utf-8",
) -> pa.Table:
    """Read ``columns`` of a delimited text, JSON-lines or Parquet file (see the module docstring).

    Text is read as strings, so ids like ``007`` keep their spelling; an empty field is null. JSON
    strings are read as they are, other values as text (``true``, ``[1]``; a number as Arrow or JSON
    writes it, so ``5.0`` may land as ``5``). The mapped keys must occur in the first 1000 records.

    Args:
        path: the file.
        columns: the columns (JSON keys; 0-based positions as text when ``headerless``) to read.
        sep: the separator of delimited text; None sniffs it.
        names: the column names of a headerless text file with a fixed layout.
        headerless: the text has no header; ``columns`` are positions.
        encoding: the text encoding.

    Returns:
        A table of ``columns``, named as given.

    Raises:
        ValueError: the file is missing, a directory, empty, without data rows or unreadable, or lacks
            a column; the message names the file, the line and the reason where they are known.
    """
    if path.is_dir():
        raise ValueError(f"{path}: is a directory; --src takes one file")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    columns = list(dict.fromkeys(columns))
    source = _opener(path)
    try:
        kind = _file_kind(path, source)
        head = _head(source)
    except OSError as err:  # unreadable, or a broken compressed stream
        raise ValueError(f"{path}: cannot read it: {err}") from err
    if kind == "parquet":
        try:
            have = pq.read_schema(path).names
            _require(path, columns, have, "the Parquet schema")
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path}: cannot read it as Parquet: {err}") from err
    if not head.strip(_BLANK):
        raise ValueError(f"{path}: the file is empty")
    if kind == "jsonl":
        try:
            return _read_jsonl(path, source, columns, encoding)
        except OSError as err:
            raise ValueError(f"{path}: cannot read it: {err}") from err
    if sep is None:
        sep = sniff_sep(head.decode(encoding, errors="replace").lstrip("\ufeff"), default_sep(path))
        log.info("%s: separator %r", path, sep)
    return _read_text(path, source, columns, sep=sep, names=names, headerless=headerless, encoding=encoding)


def _read_text(
    path: Path,
    source: Callable[[], pa.NativeFile],
    columns: list[str],
    *,
    sep: str,
    names: Sequence[str] | None,
    headerless: bool,
    encoding: str,
) -> pa.Table:
    """Read delimited text with pyarrow; on failure find the line and reason with Python's csv module."""
    shown_sep = sep
    if len(sep) > 1:
        # pyarrow takes one-character separators only: swap a longer one ("::") for an unused character
        with source() as stream:
            data = stream.read().replace(sep.encode(encoding), _ONE_CHAR_SEP.encode(encoding))
        source, sep = (lambda: pa.BufferReader(data)), _ONE_CHAR_SEP
    parse = pacsv.ParseOptions(delimiter=sep, newlines_in_values=True)
    skip, have = 0, list(names or ())
    try:
        if not names:
            probe = pacsv.ReadOptions(encoding=encoding, autogenerate_column_names=headerless)
            # only the header (or width) is wanted here: rows of another width are the real read's business
            skipping = pacsv.ParseOptions(delimiter=sep, newlines_in_values=True, invalid_row_handler=lambda _: "skip")
            with pacsv.open_csv(source(), read_options=probe, parse_options=skipping) as reader:
                have = [str(k) for k in range(len(reader.schema))] if headerless else reader.schema.names
            if headerless:
                where = f"the {len(have)} columns of line 1 (no header: the mapping gives positions)"
            else:
                skip, where = 1, f"the header (line 1, separator {shown_sep!r})"
                have = [*have, *_trailing_column(source, encoding, sep, have)]
            _require(path, columns, have, where)
        read = pacsv.ReadOptions(column_names=have, skip_rows=skip, encoding=encoding)
        convert = pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            strings_can_be_null=True, null_values=[""],
        )
        table = pacsv.read_csv(source(), read_options=read, parse_options=parse, convert_options=convert)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        try:
            reason = _first_bad_line(path, source, encoding, sep, len(have), skip, shown_sep)
        except OSError:
            reason = None
        raise ValueError(f"{path}: {reason or f'cannot read it as delimited text (separator {shown_sep!r}): {err}'}"
                         ) from err
    if table.num_rows == 0:
        raise ValueError(f"{path}: no data rows; the file holds its header (line 1) only")
    return table


def _trailing_column(source: Callable[[], pa.NativeFile], encoding: str, sep: str, header: list[str]) -> list[str]:
    """A name for the empty last field of data lines that end in the separator when the header does not."""
    text = _head(source).decode(encoding, errors="replace").lstrip("\ufeff")
    lines = text.splitlines(keepends=True)[:-1] or text.splitlines(keepends=True)
    try:
        records = [r for r in csv.reader(lines, delimiter=sep) if r][:2]
    except csv.Error:
        return []
    if len(records) == 2 and len(records[1]) == len(header) + 1 and records[1][-1] == "":
        return ["" if "" not in header else f"_{len(header)}"]
    return []


def _first_bad_line(
    path: Path, source: Callable[[], pa.NativeFile], encoding: str, sep: str, width: int, skip: int, shown_sep: str
) -> str | None:
    """``line N: reason`` of the first record pyarrow cannot take; None when Python finds none.

    Raises:
        ValueError: a line is not valid text in ``encoding`` (see :func:`_lines`).
    """
    reader = csv.reader(_lines(source, path, encoding), delimiter=sep)
    start = 1
    try:
        for index, record in enumerate(reader):
            if record and index >= skip and width and len(record) != width:
                return (f"line {start}: {len(record)} fields where {width} are expected "
                        f"(separator {shown_sep!r}; a stray quote or separator?)")
            start = reader.line_num + 1
    except csv.Error as err:
        return f"line {start}: {err}"
    return None


def _json_text(value: object) -> str | None:
    """A JSON value as raw text: strings as they are, anything else as its JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def _json_records(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """The objects of JSON lines with their line numbers, blank lines skipped."""
    for number, line in enumerate(lines, start=1):
        text = line.lstrip("\ufeff").strip() if number == 1 else line.strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: line {number}, column {err.colno}: not JSON: {err.msg}") from None
        if not isinstance(record, dict):
            raise ValueError(f"{path}: line {number}: expected one JSON object per line, got {type(record).__name__}")
        yield number, record


def _json_type(values: list[object]) -> pa.DataType | None:
    """The Arrow type pyarrow may read sampled JSON values as; None when they mix kinds."""
    kinds = {type(v) for v in values if v is not None}
    if kinds <= {str}:
        return pa.string()
    if kinds == {int}:
        return pa.int64()
    return pa.float64() if kinds <= {int, float} else None


def _read_jsonl(path: Path, source: Callable[[], pa.NativeFile], columns: list[str], encoding: str) -> pa.Table:
    """Read keys of JSON lines: pyarrow when the first records' types allow it, else line by line."""
    sample: dict[str, list[object]] = {}
    seen: dict[str, None] = {}
    records = 0
    for _, record in _json_records(path, _lines(source, path, encoding)):
        seen.update(dict.fromkeys(record))
        for column in columns:
            sample.setdefault(column, []).append(record.get(column))
        records += 1
        if records == _JSON_SAMPLE:
            break
    _require(path, columns, list(seen), f"the keys of its first {records} JSON records")
    types = {column: _json_type(sample[column]) for column in columns}
    if all(types.values()) and codecs.lookup(encoding).name == "utf-8":
        try:
            table = pajson.read_json(
                source(), read_options=pajson.ReadOptions(block_size=16 << 20),
                parse_options=pajson.ParseOptions(explicit_schema=pa.schema(list(types.items())),
                                                  unexpected_field_behavior="ignore"),
            )
            return pa.table({c: table.column(c).cast(pa.string()) for c in columns})
        except (pa.ArrowInvalid, OSError):
            log.info("%s: the JSON values change type; reading it line by line", path)
    values: dict[str, list[str | None]] = {column: [] for column in columns}
    for _, record in _json_records(path, _lines(source, path, encoding)):
        for column in columns:
            values[column].append(_json_text(record.get(column)))
    return pa.table({c: pa.array(values[c], pa.string()) for c in columns})


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


def build_parser() -> argparse.ArgumentParser:
    """The command line of the ingest job."""
    parser = job_parser("Land MovieLens ratings or an interaction log in the raw zone.", needs_ds=False)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="layout of --src")
    parser.add_argument("--src", required=True, type=Path, help="the file to land")
    parser.add_argument("--mapping", default=None,
                        help="--format csv: user=<col>,item=<col>[,value=<col>[:rating|:count]][,ts=<col>]"
                             "[,event=<col>]; all columns 0-based positions: the file has no header")
    parser.add_argument("--sep", default=None,
                        help="field separator of a text log: a character, tab, \\t, comma, semicolon or pipe "
                             "(default by format; --format csv sniffs it)")
    parser.add_argument("--encoding", default="utf-8", help="text encoding of --src, e.g. latin-1 (default utf-8)")
    parser.add_argument("--ds", type=iso_date, default=None,
                        help="partition of a log without timestamps (default: today, UTC)")
    parser.add_argument("--replace", action="store_true", help="land a source other than the one the lake holds: empties the lake first (raw zone, every derived zone, the index)")
    return parser


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the source file, map it to raw rows and land them, one partition per day."""
    args = ctx.args
    layout = FORMATS[args.format]
    if layout.mapping is None:
        if not args.mapping:
            raise ValueError(f"--format {args.format} needs --mapping user=<col>,item=<col>[,value=..][,ts=..][,event=..]")
        mapping, value_kind = parse_mapping(args.mapping)
    elif args.mapping:
        raise ValueError(f"--mapping is for --format csv; {args.format} has a fixed layout")
    else:
        mapping, value_kind = dict(layout.mapping), "rating"  # MovieLens values are ratings
    try:
        encoding = codecs.lookup(args.encoding).name
    except LookupError:
        raise ValueError(f"--encoding: unknown encoding {args.encoding!r}") from None
    src = args.src.resolve()
    headerless = layout.names is None and all(_POSITION.fullmatch(c) for c in mapping.values())
    table = read_log(src, list(mapping.values()), sep=parse_sep(args.sep) if args.sep else layout.sep,
                     names=layout.names, headerless=headerless, encoding=encoding)
    log.info("read %d rows of %s from %s", table.num_rows, args.format, src)
    now = time.time()
    rows = to_raw({role: table.column(column) for role, column in mapping.items()}, value_kind=value_kind,
                  default_ds=args.ds or dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat(), now=now)
    log.info("timestamps: %s; values: %s", rows.ts_unit, value_kind)
    facts = write_raw(ctx.lake, rows.table, rows.day, source=args.format, src=str(src), has_timestamp="ts" in mapping,
                      replace=args.replace, ts_unit=rows.ts_unit, value_kind=value_kind)
    return {**facts, "source": args.format, "ts_unit": rows.ts_unit, "value_kind": value_kind,
            "future_rows": rows.future_rows}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the ingest job from the command line."""
    return run_job(build_parser(), body, argv)


if __name__ == "__main__":
    try:
        main()
    except ValueError as err:
        # bad input: the message says what to fix, a traceback would bury it (exit code 1)
        log.error("%s", err)
        sys.exit(1)

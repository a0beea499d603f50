"""Land MovieLens ratings or any CSV/TSV/Parquet interaction log in the raw zone, one partition per day."""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from jobs.common.cli import JobContext, iso_date, job_parser, run_job
from jobs.common.columns import EVENT, ITEM_ID, RAW_COLUMNS, TS, USER_ID, VALUE
from jobs.common.rawzone import SECONDS_PER_DAY, day_number, iso_utc, write_raw

log = logging.getLogger(__name__)

ROLES = ("user", "item", "value", "ts", "event")  # --mapping keys, the source column of each raw column
REQUIRED_ROLES = ("user", "item")
ROLE_COLUMNS = {"user": USER_ID, "item": ITEM_ID, "event": EVENT, "value": VALUE, "ts": TS}
# epoch seconds of 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the times ISO text can express
EPOCH_RANGE = (-62_135_596_800, 253_402_300_799)
_NUMBER = r"^[+-]?[0-9]+(\.[0-9]*)?$"
_COMPRESSED = {".gz", ".bz2", ".zst", ".lz4"}
_ONE_CHAR_SEP = "\x1f"  # ASCII unit separator: stands in for a multi-character separator such as "::"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a format's files look: separator, column names of a headerless file, fixed column mapping."""

    sep: str | None  # None: "," or, for .tsv/.tab files, tab
    names: tuple[str, ...] | None  # None: the first line is a header
    mapping: Mapping[str, str] | None  # role -> column; None: --mapping is required


_ML_NAMES = ("userId", "movieId", "rating", "timestamp")
_ML_MAPPING = {"user": "userId", "item": "movieId", "value": "rating", "ts": "timestamp"}
FORMATS = {
    "movielens-100k": Layout("\t", _ML_NAMES, _ML_MAPPING),  # ml-100k u.data
    "movielens-1m": Layout("::", _ML_NAMES, _ML_MAPPING),  # ml-1m ratings.dat (also ml-10m)
    "movielens-latest": Layout(",", None, _ML_MAPPING),  # ml-latest(-small) ratings.csv, with header
    "csv": Layout(None, None, None),  # any delimited text with a header, or Parquet (detected)
}


def parse_mapping(text: str) -> dict[str, str]:
    """Parse ``user=<col>,item=<col>[,value=<col>][,ts=<col>][,event=<col>]`` into role -> column.

    Raises:
        ValueError: a malformed pair, an unknown or repeated role, or ``user``/``item`` missing.
    """
    mapping: dict[str, str] = {}
    for pair in text.split(","):
        role, sep, column = (part.strip() for part in pair.partition("="))
        if not sep or not role or not column:
            raise ValueError(f"--mapping: expected role=column, got {pair!r} in {text!r}")
        if role not in ROLES:
            raise ValueError(f"--mapping: unknown role {role!r}; roles are {', '.join(ROLES)}")
        if role in mapping:
            raise ValueError(f"--mapping: role {role!r} given twice in {text!r}")
        mapping[role] = column
    missing = [role for role in REQUIRED_ROLES if role not in mapping]
    if missing:
        raise ValueError(f"--mapping: {', '.join(missing)} missing in {text!r}; user and item are required")
    return mapping


def default_sep(path: Path) -> str:
    """Tab for ``.tsv``/``.tab`` files (compressed or not), else comma."""
    suffixes = [s for s in path.suffixes if s not in _COMPRESSED]
    return "\t" if suffixes and suffixes[-1] in (".tsv", ".tab") else ","


def _is_parquet(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == b"PAR1"


def _require(path: Path, wanted: Sequence[str], have: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in have]
    if missing:
        raise ValueError(f"{path}: mapped column(s) {', '.join(map(repr, missing))} not found; "
                         f"the file has {', '.join(map(repr, have))}")


def read_log(path: Path, columns: Sequence[str], *, sep: str, names: Sequence[str] | None = None) -> pa.Table:
    """Read ``columns`` of a delimited text file (header or ``names``) or a Parquet file.

    Text is read as strings, so ids like ``007`` keep their spelling; an empty field is null.
    Compressed text (.gz, .bz2, ...) is read transparently.

    Raises:
        ValueError: the file is missing or unreadable, or lacks a column; the message names both.
    """
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    columns = list(dict.fromkeys(columns))
    if _is_parquet(path):
        try:
            have = pq.read_schema(path).names
            _require(path, columns, have)
            return pq.read_table(path, columns=columns)
        except (pa.ArrowInvalid, OSError) as err:
            raise ValueError(f"{path}: cannot read it as Parquet: {err}") from err
    try:
        source, sep = _text_source(path, sep)
        read_options = pacsv.ReadOptions(column_names=list(names) if names else None)
        parse_options = pacsv.ParseOptions(delimiter=sep)
        if names:
            have = list(names)
        else:
            with pacsv.open_csv(source(), read_options=read_options, parse_options=parse_options) as reader:
                have = reader.schema.names
        _require(path, columns, have)
        convert = pacsv.ConvertOptions(
            include_columns=columns, column_types={c: pa.string() for c in columns},
            strings_can_be_null=True, null_values=[""],
        )
        return pacsv.read_csv(source(), read_options=read_options, parse_options=parse_options,
                              convert_options=convert)
    except (pa.ArrowInvalid, OSError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: cannot read it as a delimited log with columns "
                         f"{', '.join(map(repr, columns))} (separator {sep!r}): {err}") from err


def _text_source(path: Path, sep: str) -> tuple[Callable[[], Any], str]:
    """Something pyarrow's CSV reader can open (again and again), and the one-character separator to use."""
    if len(sep) == 1:
        # a path: pyarrow reads it in parallel and decompresses by extension
        return (lambda: str(path)), sep
    # pyarrow takes one-character separators only: swap a longer one ("::") for an unused character
    data = pa.input_stream(str(path), compression="detect").read().replace(sep.encode(), _ONE_CHAR_SEP.encode())
    return (lambda: pa.BufferReader(data)), _ONE_CHAR_SEP


def parse_timestamps(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Event times as epoch seconds (UTC), and which rows had a parseable time.

    Accepted: timestamp, date and numeric columns (numbers are epoch seconds), and text holding epoch
    seconds or ISO-8601 (``2018-09-24T12:00:00Z``, ``2018-09-24 12:00:00``, an offset such as ``+02:00``,
    fractions, a bare date; no zone means UTC). Anything else, and nulls, is unparseable.

    Returns:
        ``(seconds, ok)``: int64 seconds (0 where not ok) and the boolean mask of parsed rows.
    """
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    kind = column.type
    if pa.types.is_timestamp(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        return _epoch(_floats(column.cast(pa.int64())) / per_second)
    if pa.types.is_date(kind):
        return _epoch(_floats(column.cast(pa.date32()).cast(pa.int32())) * SECONDS_PER_DAY)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return _epoch(_floats(column))
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    numeric = pc.fill_null(pc.match_substring_regex(text, _NUMBER), False).to_numpy(zero_copy_only=False)
    seconds, ok = np.zeros(len(text), np.int64), np.zeros(len(text), bool)
    if numeric.any():
        seconds[numeric], ok[numeric] = _epoch(_floats(text.filter(pa.array(numeric)).cast(pa.float64())))
    other = ~numeric & text.is_valid().to_numpy(zero_copy_only=False)
    if other.any():
        # pandas' ISO-8601 parser is strict (2026-02-30 fails) where Arrow's strptime rolls over
        parsed = pd.to_datetime(text.filter(pa.array(other)).to_pandas(), format="ISO8601", errors="coerce", utc=True)
        stamps = parsed.to_numpy(dtype="datetime64[s]")
        seconds[other] = np.where(np.isnat(stamps), 0, stamps.astype(np.int64))
        ok[other] = ~np.isnat(stamps)
    return seconds, ok


def _floats(numbers: pa.Array) -> np.ndarray:
    """Numbers as float64 with NaN for nulls."""
    return numbers.cast(pa.float64()).to_numpy(zero_copy_only=False)


def _epoch(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Floating epoch seconds -> (int64 seconds, ok), refusing NaN and times ISO text cannot write."""
    finite = np.nan_to_num(seconds)
    ok = np.isfinite(seconds) & (finite >= EPOCH_RANGE[0]) & (finite <= EPOCH_RANGE[1])
    return np.floor(np.where(ok, seconds, 0)).astype(np.int64), ok


def to_raw(fields: Mapping[str, pa.ChunkedArray | pa.Array], *, default_ds: str) -> tuple[pa.Table, np.ndarray]:
    """Map source columns (keyed by role) to raw rows and the day each row lands in.

    Rows with a parseable time land in its UTC day with ISO text; the others keep their original text
    and land in the last day of the log (or ``default_ds`` when no row has a time), so the clean job
    can quarantine them. Without an event column every row is a ``rating`` when a value is mapped,
    else a ``view``.

    Returns:
        The raw table (string columns of ``RAW_COLUMNS``) and the day number of each row.
    """
    missing = [role for role in REQUIRED_ROLES if role not in fields]
    if missing:
        raise ValueError(f"to_raw: role(s) {', '.join(missing)} missing")
    n = len(fields["user"])
    out = {ROLE_COLUMNS[role]: fields[role].cast(pa.string()) for role in ("user", "item", "event", "value")
           if role in fields}
    out.setdefault(EVENT, pa.nulls(n, pa.string()).fill_null("rating" if "value" in fields else "view"))
    out.setdefault(VALUE, pa.nulls(n, pa.string()))
    day = np.full(n, day_number(default_ds), np.int64)
    if "ts" in fields:
        seconds, ok = parse_timestamps(fields["ts"])
        if ok.any():
            day = np.where(ok, seconds // SECONDS_PER_DAY, (seconds[ok] // SECONDS_PER_DAY).max())
        original = fields["ts"].cast(pa.string())
        out[TS] = pc.if_else(pa.array(ok), iso_utc(seconds), original)
        if not ok.all():
            log.warning("%d of %d rows have no parseable timestamp; they keep their text and land on the last day",
                        int((~ok).sum()), n)
    else:
        out[TS] = pa.nulls(n, pa.string())
    return pa.table({name: out[name] for name in RAW_COLUMNS}), day


def build_parser() -> argparse.ArgumentParser:
    """The command line of the ingest job."""
    parser = job_parser("Land MovieLens ratings or an interaction log in the raw zone.", needs_ds=False)
    parser.add_argument("--format", required=True, choices=sorted(FORMATS), help="layout of --src")
    parser.add_argument("--src", required=True, type=Path, help="the file to land")
    parser.add_argument("--mapping", default=None,
                        help="--format csv: user=<col>,item=<col>[,value=<col>][,ts=<col>][,event=<col>]")
    parser.add_argument("--sep", default=None, help="field separator of a text log (\\t for tab; default by format)")
    parser.add_argument("--ds", type=iso_date, default=None,
                        help="partition of a log without timestamps (default: today, UTC)")
    parser.add_argument("--replace", action="store_true", help="remove a raw zone holding another source first")
    return parser


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the source file, map it to raw rows and land them, one partition per day."""
    args = ctx.args
    layout = FORMATS[args.format]
    if layout.mapping is None:
        if not args.mapping:
            raise ValueError(f"--format {args.format} needs --mapping user=<col>,item=<col>[,value=..][,ts=..][,event=..]")
        mapping = parse_mapping(args.mapping)
    elif args.mapping:
        raise ValueError(f"--mapping is for --format csv; {args.format} has a fixed layout")
    else:
        mapping = dict(layout.mapping)
    src = args.src.resolve()
    sep = codecs.decode(args.sep, "unicode_escape") if args.sep else layout.sep or default_sep(src)
    table = read_log(src, list(mapping.values()), sep=sep, names=layout.names)
    log.info("read %d rows of %s from %s", table.num_rows, args.format, src)
    raw, day = to_raw({role: table.column(column) for role, column in mapping.items()},
                      default_ds=args.ds or dt.datetime.now(dt.UTC).date().isoformat())
    facts = write_raw(ctx.lake, raw, day, source=args.format, src=str(src), has_timestamp="ts" in mapping,
                      replace=args.replace)
    return {**facts, "source": args.format}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the ingest job from the command line."""
    return run_job(build_parser(), body, argv)


if __name__ == "__main__":
    main()

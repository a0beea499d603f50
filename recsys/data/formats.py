"""Reading an interaction log as it comes: MovieLens layouts, delimited text, JSON lines or Parquet.

Files are taken as they come (``--format csv``; the MovieLens formats have fixed layouts):

- delimited text with a header, or without one when every mapped column is a 0-based position
  (``user=1,item=0,value=2,ts=3``); CRLF line ends, a UTF-8 byte-order mark, quoted fields holding
  separators and line breaks, and a trailing empty column (lines ending in the separator) are all read.
  Without a separator the separator is sniffed from the first lines (comma, tab, semicolon or pipe: the
  one that splits every sampled record into the same number of fields, the most fields winning), else
  tab for ``.tsv``/``.tab`` files and comma for the rest. ``tab`` and ``\\t`` both mean tab.
- JSON lines (``.jsonl``, ``.json``, ``.ndjson``, or a file whose first non-blank character is ``{``),
  one object per line, the mapping naming keys: e.g. Amazon reviews,
  ``user=reviewerID,item=asin,value=overall,ts=unixReviewTime`` (classic) or
  ``user=user_id,item=parent_asin,value=rating,ts=timestamp`` (2023 release, milliseconds).
- Parquet (detected by its magic bytes).
- Any text kind compressed with gzip, bz2, zstd or lz4 (detected by magic bytes, whatever the name).
- Text in another encoding (default utf-8; e.g. latin-1).
- Text without quoting (``quote=False``): a ``"`` is a character like any other, as in MovieLens'
  ``::`` and ``|`` files, whose titles may start with one.

Every value is read as the text it was: never trimmed, case-folded or rewritten.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

log = logging.getLogger(__name__)

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


class TextEncodingError(ValueError):
    """A line of a text file is not valid text in the encoding it is read with.

    ``where`` names the file, the line, the column and the byte, so a caller can give its own advice.
    """

    def __init__(self, where: str, encoding: str) -> None:
        super().__init__(f"{where} is not valid {encoding} text; if the file is in another encoding, pass it, "
                         "e.g. --encoding latin-1")
        self.where = where
        self.encoding = encoding


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


def is_headerless(layout: Layout, columns: Iterable[str]) -> bool:
    """Whether a file of ``layout`` read for ``columns`` has no header: no fixed names, and every column a position."""
    return layout.names is None and all(_POSITION.fullmatch(c) for c in columns)


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
        TextEncodingError: a line is not valid ``encoding``; names the line, the column and the byte.
    """
    for number, line in enumerate(_raw_lines(source), start=1):
        try:
            yield line.decode(encoding)
        except UnicodeDecodeError as err:
            column = len(line[:err.start].decode(encoding, errors="replace")) + 1
            raise TextEncodingError(f"{path}: line {number}, column {column}: byte 0x{line[err.start]:02x}",
                                    encoding) from None


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
    quote: bool = True,
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
        quote: delimited text may quote fields with ``"``; False reads every ``"`` as itself.

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
    return _read_text(path, source, columns, sep=sep, names=names, headerless=headerless, encoding=encoding,
                      quote=quote)


def _read_text(
    path: Path,
    source: Callable[[], pa.NativeFile],
    columns: list[str],
    *,
    sep: str,
    names: Sequence[str] | None,
    headerless: bool,
    encoding: str,
    quote: bool = True,
) -> pa.Table:
    """Read delimited text with pyarrow; on failure find the line and reason with Python's csv module."""
    shown_sep = sep
    if len(sep) > 1:
        # pyarrow takes one-character separators only: swap a longer one ("::") for an unused character
        with source() as stream:
            data = stream.read().replace(sep.encode(encoding), _ONE_CHAR_SEP.encode(encoding))
        source, sep = (lambda: pa.BufferReader(data)), _ONE_CHAR_SEP
    quote_char = '"' if quote else False
    parse = pacsv.ParseOptions(delimiter=sep, quote_char=quote_char, newlines_in_values=quote)
    skip, have = 0, list(names or ())
    try:
        if not names:
            probe = pacsv.ReadOptions(encoding=encoding, autogenerate_column_names=headerless)
            # only the header (or width) is wanted here: rows of another width are the real read's business
            skipping = pacsv.ParseOptions(delimiter=sep, quote_char=quote_char, newlines_in_values=quote,
                                          invalid_row_handler=lambda _: "skip")
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
            reason = _first_bad_line(path, source, encoding, sep, len(have), skip, shown_sep, quote)
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
    path: Path, source: Callable[[], pa.NativeFile], encoding: str, sep: str, width: int, skip: int, shown_sep: str,
    quote: bool = True,
) -> str | None:
    """``line N: reason`` of the first record pyarrow cannot take; None when Python finds none.

    Raises:
        TextEncodingError: a line is not valid text in ``encoding`` (see :func:`_lines`).
    """
    reader = csv.reader(_lines(source, path, encoding), delimiter=sep,
                        quoting=csv.QUOTE_MINIMAL if quote else csv.QUOTE_NONE)
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

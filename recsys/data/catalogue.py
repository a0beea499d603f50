"""The item catalogue: reading it beside the events, landing it in ``raw_catalogue/``, cleaning it with Spark.

**Reading** (``jobs.ingest``). Each MovieLens format ships its catalogue, read from the folder of the
ratings file (or from ``--items``):

- ``movielens-latest``: ``movies.csv`` (``movieId,title,genres``, quoted CSV, UTF-8) and, when it is
  there, ``tags.csv`` beside it (``userId,movieId,tag,timestamp``): each movie's distinct tags (trimmed,
  compared case-insensitively, the spelling that sorts first), most used first, then alphabetically;
- ``movielens-1m``: ``movies.dat`` (``movieId::title::genres``, latin-1);
- ``movielens-100k``: ``u.item`` (``|``-separated, latin-1: id, title, release date, video release
  date, IMDb URL, then one 0/1 flag per genre), the genre names from ``u.genre`` beside it, else the
  fixed MovieLens list (``ML100K_GENRES``).

The ``::`` and ``|`` files are read without quoting: a title may start with a ``"``. The genres
``(no genres listed)`` and ``unknown`` are no genres. An item's text is its title, its genres and its
tags joined as sentences: ``Toy Story (1995). Adventure, Animation, Children. Tags: pixar, fun``.

Any other catalogue is a CSV, TSV, Parquet or JSON-lines file (read as :mod:`recsys.data.formats` reads
logs; UTF-8) with ``--item-mapping item=<col>,text=<col>[+<col>...][,title=<col>]``: the text is the
mapped columns joined the same way (empty ones skipped), the title the ``title`` column (none when not
mapped). Every value lands as the text it was, in ``raw_catalogue/ds=D/part-00000.parquet``
(``RAW_CATALOGUE_COLUMNS``, all strings), where ``D`` is the import's last event date: one snapshot
per import, written atomically. ``jobs.catalogue`` of a date reads the latest snapshot on or before it.

**Cleaning** (``jobs.catalogue``, Spark). Item ids follow the events' id rule (:mod:`recsys.data.ids`:
trimmed of spaces, never case-folded); titles and texts are trimmed of whitespace. Every raw row ends in
exactly one place: the catalogue (``clean``), ``duplicates``, or the quarantine with the first reason
that applies, in the order of ``REASONS``:

- ``null_id``: the item id is missing or blank;
- ``bad_id``: the id holds a control character or is longer than 256 characters;
- ``empty_text``: the text is missing or blank;
- ``text_too_long``: the text is longer than ``catalogue.max_text_chars`` characters;
- ``conflicting_text``: another valid row of the same id was kept and this one's text differs.

Of the valid rows of one id, one is kept: the longest text, then the text, then the title in Unicode
order (a missing title last), so the choice depends on no file order. The other rows with the kept text
(whatever their title) are ``duplicates``: nothing is lost. Those with another text are quarantined as
``conflicting_text``, so what the catalogue dropped can be seen. ``content_hash`` is the sha256 hex of
the kept text (Spark's ``sha2(text, 256)``), the key of the embedding cache.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys.core.columns import (
    CATALOGUE_COLUMNS,
    CATALOGUE_QUARANTINE_COLUMNS,
    CONTENT_HASH,
    ITEM_ID,
    RAW_CATALOGUE_COLUMNS,
    REASON,
    TEXT,
    TITLE,
    require_columns,
)
from recsys.core.lake import PART_FILE, Lake
from recsys.data.formats import FORMATS, TextEncodingError, is_headerless, read_log
from recsys.data.ids import bad_id_column, trim_id_column, trim_ids
from recsys.data.ingest import parse_pairs
from recsys.data.rawzone import invalidate

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

log = logging.getLogger(__name__)

# the catalogue file each MovieLens format ships, beside its ratings
MOVIELENS_CATALOGUES = {"movielens-latest": "movies.csv", "movielens-1m": "movies.dat", "movielens-100k": "u.item"}
TAGS_FILE = "tags.csv"  # movielens-latest: users' free-text tags, beside movies.csv
GENRE_FILE = "u.genre"  # movielens-100k: the genre of each flag column of u.item, beside it
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
NO_GENRES = ("(no genres listed)", "unknown")  # genre values that say the item has none
ML100K_FIELDS = ("movieId", "title", "release_date", "video_release_date", "url")  # before the genre flags
ITEM_ROLES = ("item", "text", "title")  # --item-mapping keys
REQUIRED_ITEM_ROLES = ("item", "text")
_SENTENCE_END = (".", "!", "?", "…", "。", "！", "？")
_FULL_WIDTH_END = ("。", "！", "？")  # Chinese and Japanese text needs no space after these

REASONS = ("null_id", "bad_id", "empty_text", "text_too_long", "conflicting_text")
CLEAN = "clean"
DUPLICATES = "duplicates"
OUTCOME = "outcome"  # clean | duplicates | a reason
RAW_CATALOGUE_SCHEMA = pa.schema([(c, pa.string()) for c in RAW_CATALOGUE_COLUMNS])
CATALOGUE_SCHEMA = pa.schema([(c, pa.string()) for c in CATALOGUE_COLUMNS])
CATALOGUE_QUARANTINE_SCHEMA = pa.schema([(c, pa.string()) for c in CATALOGUE_QUARANTINE_COLUMNS])
_WHITESPACE = r"(?U)^\s+|\s+$"  # Java regex: leading or trailing Unicode whitespace


@dataclasses.dataclass(frozen=True)
class ItemMapping:
    """Which columns of a catalogue file hold the item id, the text parts and the title."""

    item: str
    text: tuple[str, ...]
    title: str | None = None

    @property
    def columns(self) -> list[str]:
        """Every mapped column, each once."""
        return list(dict.fromkeys([self.item, *self.text, *([self.title] if self.title else [])]))


def parse_item_mapping(text: str) -> ItemMapping:
    """Parse ``item=<col>,text=<col>[+<col>...][,title=<col>]``.

    Raises:
        ValueError: a malformed pair, an unknown or repeated role, ``item`` or ``text`` missing, or an
            empty column name in ``text``.
    """
    pairs = parse_pairs(text, ITEM_ROLES, REQUIRED_ITEM_ROLES, "--item-mapping")
    parts = tuple(part.strip() for part in pairs["text"].split("+"))
    if not all(parts):
        raise ValueError(f"--item-mapping: text={pairs['text']!r} names an empty column; expected text=<col>+<col>")
    return ItemMapping(pairs["item"], parts, pairs.get("title"))


def join_text(parts: Iterable[str | None]) -> str | None:
    """The non-empty parts, trimmed, joined as sentences: ``". "`` between them unless one already ends a
    sentence (then a space, or nothing after a full-width stop); None when every part is empty."""
    text = ""
    for part in parts:
        part = (part or "").strip()
        if not part:
            continue
        if text:
            text += "" if text.endswith(_FULL_WIDTH_END) else " " if text.endswith(_SENTENCE_END) else ". "
        text += part
    return text or None


def _strings(column: pa.ChunkedArray | pa.Array, path: Path, name: str) -> pa.ChunkedArray | pa.Array:
    """A column as text (a typed Parquet or JSON column too), or an error naming the file and the column."""
    try:
        return column.cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ValueError(f"{path}: column {name!r} of type {column.type} cannot be read as text: {err}") from None


def catalogue_table(item: Any, title: Any, text: Any) -> pa.Table:
    """A raw catalogue table (``RAW_CATALOGUE_COLUMNS``, all strings) from three columns or lists."""
    return pa.table({ITEM_ID: item, TITLE: title, TEXT: text}).cast(RAW_CATALOGUE_SCHEMA)


def _read(path: Path, columns: Sequence[str], **options: Any) -> pa.Table:
    """:func:`read_log` of a catalogue file, whose text must be UTF-8 unless its layout says otherwise."""
    try:
        return read_log(path, columns, **options)
    except TextEncodingError as err:
        advice = "an item catalogue (--items) must be UTF-8" if err.encoding == "utf-8" else "the file is damaged"
        raise ValueError(f"{err.where} is not valid {err.encoding} text; {advice}") from None


def read_items(path: Path, mapping: ItemMapping) -> pa.Table:
    """Read a CSV, TSV, Parquet or JSON-lines catalogue with its mapping (see the module docstring).

    Raises:
        ValueError: the file is missing or unreadable, not UTF-8, or lacks a mapped column; the message
            names the file and the line or column.
    """
    columns = mapping.columns
    table = _read(path, columns, headerless=is_headerless(FORMATS["csv"], columns))
    text = {c: _strings(table.column(c), path, c).to_pylist() for c in columns}
    texts = [join_text(parts) for parts in zip(*(text[c] for c in mapping.text), strict=True)]
    title = text[mapping.title] if mapping.title else pa.nulls(table.num_rows, pa.string())
    log.info("read %d catalogue rows from %s (text: %s)", table.num_rows, path, " + ".join(mapping.text))
    return catalogue_table(text[mapping.item], title, texts)


def _genres(values: Iterable[str | None]) -> str | None:
    return ", ".join(g for g in values if g and g not in NO_GENRES) or None


def read_tags(path: Path) -> dict[str, str]:
    """``movielens-latest`` tags: trimmed movie id -> ``Tags: a, b, ...`` (see the module docstring)."""
    table = _read(path, ["movieId", "tag"], sep=",")
    tags = pc.utf8_trim_whitespace(table.column("tag"))
    table = pa.table({"id": trim_ids(table.column("movieId")), "tag": tags, "key": pc.utf8_lower(tags)})
    table = table.filter(pc.fill_null(pc.not_equal(table.column("tag"), ""), False))
    counted = table.group_by(["id", "key"], use_threads=False).aggregate([("tag", "min"), ("tag", "count")])
    counted = counted.sort_by([("id", "ascending"), ("tag_count", "descending"), ("key", "ascending")])
    by_movie: dict[str, list[str]] = {}
    for movie, tag in zip(counted.column("id").to_pylist(), counted.column("tag_min").to_pylist(), strict=True):
        by_movie.setdefault(movie, []).append(tag)
    log.info("read %d tags of %d movies from %s", table.num_rows, len(by_movie), path)
    return {movie: "Tags: " + ", ".join(tags) for movie, tags in by_movie.items()}


def genre_names(path: Path) -> tuple[str, ...]:
    """The genre of each flag column of ``u.item``: ``u.genre`` (``name|position`` lines) when it exists."""
    if not path.is_file():
        log.info("no %s beside u.item: the fixed MovieLens genre list", path.name)
        return ML100K_GENRES
    table = _read(path, ["0", "1"], sep="|", headerless=True, encoding="latin-1", quote=False)
    names, positions = table.column("0").to_pylist(), table.column("1").to_pylist()
    if positions != [str(k) for k in range(len(names))]:
        raise ValueError(f"{path}: expected lines name|0, name|1, ... in order; got positions {positions}")
    return tuple(names)


def read_movielens(fmt: str, path: Path) -> pa.Table:
    """Read the catalogue of a MovieLens format (see the module docstring).

    Raises:
        ValueError: the file is missing, unreadable or not of the format's layout.
    """
    if fmt == "movielens-latest":
        table = _read(path, ["movieId", "title", "genres"], sep=",")
        genres = [_genres((g or "").split("|")) for g in table.column("genres").to_pylist()]
        tags_path = path.parent / TAGS_FILE
        tags = read_tags(tags_path) if tags_path.is_file() else {}
        if not tags:
            log.info("no tags at %s: the texts hold titles and genres", tags_path)
        extra = [tags.get(movie) for movie in trim_ids(table.column("movieId")).to_pylist()]
    elif fmt == "movielens-1m":
        table = _read(path, ["movieId", "title", "genres"], sep="::", names=("movieId", "title", "genres"),
                      encoding="latin-1", quote=False)
        genres = [_genres((g or "").split("|")) for g in table.column("genres").to_pylist()]
        extra = [None] * table.num_rows
    elif fmt == "movielens-100k":
        names = genre_names(path.parent / GENRE_FILE)
        flags = [f"genre_{k}" for k in range(len(names))]
        table = _read(path, ["movieId", "title", *flags], sep="|", names=(*ML100K_FIELDS, *flags),
                      encoding="latin-1", quote=False)
        rows = zip(*(table.column(f).to_pylist() for f in flags), strict=True)
        genres = [_genres(name for name, flag in zip(names, row, strict=True) if (flag or "").strip() == "1")
                  for row in rows]
        extra = [None] * table.num_rows
    else:
        raise ValueError(f"{fmt} ships no item catalogue; pass --items with --item-mapping")
    titles = table.column("title").to_pylist()
    texts = [join_text(parts) for parts in zip(titles, genres, extra, strict=True)]
    log.info("read %d movies from %s", table.num_rows, path)
    return catalogue_table(table.column("movieId"), titles, texts)


def catalogue_source(fmt: str, src: Path, items: Path | None, item_mapping: str | None
                     ) -> tuple[Path, ItemMapping | None] | None:
    """The catalogue file an import lands and its mapping (None: a MovieLens layout); None when there is none.

    ``--items`` names the file (with ``--item-mapping``, or a MovieLens format's own catalogue file);
    without it a MovieLens format takes its catalogue file from the folder of ``src`` when it is there.

    Raises:
        ValueError: ``--item-mapping`` without ``--items``, or ``--items`` of ``--format csv`` without a mapping.
    """
    if item_mapping and not items:
        raise ValueError("--item-mapping needs --items <file>")
    if items:
        if item_mapping:
            return items, parse_item_mapping(item_mapping)
        if fmt not in MOVIELENS_CATALOGUES:
            raise ValueError(f"--items of --format {fmt} needs --item-mapping item=<col>,text=<col>[+<col>...]"
                             "[,title=<col>]")
        return items, None
    if fmt in MOVIELENS_CATALOGUES:
        beside = src.parent / MOVIELENS_CATALOGUES[fmt]
        if beside.is_file():
            return beside, None
        log.warning("no %s beside %s: no item catalogue is imported (pass --items to name one)",
                    MOVIELENS_CATALOGUES[fmt], src)
    else:
        log.info("no --items: no item catalogue is imported")
    return None


def read_catalogue(fmt: str, path: Path, mapping: ItemMapping | None) -> pa.Table:
    """The raw catalogue rows of ``path``: by its mapping, or by the layout of MovieLens format ``fmt``."""
    return read_items(path, mapping) if mapping else read_movielens(fmt, path)


def write_raw_catalogue(lake: Lake, table: pa.Table | None, ds: str) -> int:
    """Land an import's catalogue as ``raw_catalogue/ds=<ds>`` (atomically) and remove every other date.

    A file's import is the source's whole content, its catalogue included (as for the raw zone): a
    catalogue of an earlier import, or one the source no longer ships (``table`` None), must not stay
    behind for ``jobs.catalogue`` to find.

    Returns:
        The rows landed (0 without a catalogue).
    """
    rows = 0
    if table is not None:
        require_columns(table.column_names, RAW_CATALOGUE_COLUMNS, "raw catalogue rows")
        with lake.writing("raw_catalogue", ds) as staged:
            pq.write_table(table.select(list(RAW_CATALOGUE_COLUMNS)).cast(RAW_CATALOGUE_SCHEMA), staged / PART_FILE)
        rows = table.num_rows
        log.info("landed %d catalogue rows in raw_catalogue/ds=%s", rows, ds)
    invalidate(lake, [d for d in lake.dates("raw_catalogue") if d != ds or table is None], zones=("raw_catalogue",))
    return rows


def latest_raw_date(lake: Lake, ds: str) -> str | None:
    """The latest committed ``raw_catalogue`` date on or before ``ds``; None when there is none."""
    return max((d for d in lake.dates("raw_catalogue") if d <= ds), default=None)


def raw_catalogue_rows(lake: Lake, source_ds: str) -> int:
    """Rows of a raw catalogue partition, from its Parquet footers (independently of what Spark counts)."""
    return sum(pq.read_metadata(part).num_rows for part in lake.path("raw_catalogue", source_ds).glob("*.parquet"))


def read_raw_catalogue(spark: SparkSession, lake: Lake, source_ds: str) -> DataFrame:
    """The raw catalogue partition of ``source_ds``.

    Raises:
        ValueError: a column is missing or not a string.
    """
    path = lake.path("raw_catalogue", source_ds)
    frame = spark.read.parquet(str(path))
    require_columns(frame.columns, RAW_CATALOGUE_COLUMNS, str(path))
    types = dict(frame.dtypes)
    wrong = [f"{c} is {types[c]}" for c in RAW_CATALOGUE_COLUMNS if types[c] != "string"]
    if wrong:
        raise ValueError(f"{path}: expected string columns; {', '.join(wrong)}")
    return frame.select(*RAW_CATALOGUE_COLUMNS)


def _trimmed(column: Column) -> Column:
    """Spark: text trimmed of Unicode whitespace, null when nothing is left."""
    from pyspark.sql import functions as F

    text = F.regexp_replace(column, _WHITESPACE, "")
    return F.when(text != "", text)


def flag_catalogue(raw: DataFrame, cfg: Mapping[str, Any]) -> DataFrame:
    """Each raw catalogue row with its outcome and clean values (see the module docstring).

    Args:
        raw: ``RAW_CATALOGUE_COLUMNS``.
        cfg: the ``catalogue`` config section.

    Returns:
        The raw columns, ``outcome`` (``clean``, ``duplicates`` or a reason of ``REASONS``) and the clean
        ``_item``, ``_title``, ``_text`` and ``content_hash`` (null for a quarantined row).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    require_columns(raw.columns, RAW_CATALOGUE_COLUMNS, "flag_catalogue")
    item, title, text = (F.col(c) for c in ("_item", "_title", "_text"))
    rows = raw.select(
        *RAW_CATALOGUE_COLUMNS,
        F.when(trim_id_column(F.col(ITEM_ID)) != "", trim_id_column(F.col(ITEM_ID))).alias("_item"),
        _trimmed(F.col(TITLE)).alias("_title"),
        _trimmed(F.col(TEXT)).alias("_text"),
    )
    reason = (
        F.when(item.isNull(), "null_id")
        .when(bad_id_column(item), "bad_id")
        .when(text.isNull(), "empty_text")
        .when(F.length(text) > int(cfg["max_text_chars"]), "text_too_long")
    )
    rows = rows.withColumn(REASON, reason)
    valid = F.col(REASON).isNull()
    same_id = Window.partitionBy("_item", valid).orderBy(F.length(text).desc(), text, title.asc_nulls_last())
    kept_text = F.first(text).over(same_id)
    outcome = F.coalesce(
        F.col(REASON),
        F.when(F.row_number().over(same_id) == 1, F.lit(CLEAN))
        .when(text == kept_text, F.lit(DUPLICATES))
        .otherwise(F.lit("conflicting_text")),
    )
    return rows.select(
        *RAW_CATALOGUE_COLUMNS, outcome.alias(OUTCOME), "_item", "_title", "_text",
        F.when(valid, F.sha2(text, 256)).alias(CONTENT_HASH),
    )


def split_outcomes(flagged: pa.Table) -> tuple[pa.Table, pa.Table, dict[str, int]]:
    """The catalogue, the quarantine and the rows per outcome of :func:`flag_catalogue`'s rows (as Arrow).

    The catalogue is sorted by item id, the quarantine by (reason, item_id, title, text), so a rerun
    writes the same bytes.
    """
    outcome = flagged.column(OUTCOME)
    clean = flagged.filter(pc.equal(outcome, CLEAN))
    catalogue = pa.table({
        ITEM_ID: clean.column("_item"), TITLE: clean.column("_title"), TEXT: clean.column("_text"),
        CONTENT_HASH: clean.column(CONTENT_HASH),
    }).cast(CATALOGUE_SCHEMA).sort_by(ITEM_ID)
    quarantined = flagged.filter(pc.is_in(outcome, value_set=pa.array(REASONS)))
    quarantine = (pa.table({**{c: quarantined.column(c) for c in RAW_CATALOGUE_COLUMNS},
                            REASON: quarantined.column(OUTCOME)})
                  .cast(CATALOGUE_QUARANTINE_SCHEMA)
                  .sort_by([(c, "ascending") for c in (REASON, *RAW_CATALOGUE_COLUMNS)]))
    counted = flagged.group_by(OUTCOME).aggregate([(OUTCOME, "count")])
    counts = dict(zip(counted.column(OUTCOME).to_pylist(), counted.column(f"{OUTCOME}_count").to_pylist(),
                      strict=True))
    return catalogue, quarantine, counts


def reconcile_catalogue(input_rows: int, counts: Mapping[str, int]) -> dict[str, Any]:
    """input, clean, duplicates, quarantined and by_reason, checked to add up.

    Raises:
        ValueError: clean + duplicates + quarantined differs from input, or an outcome is unknown.
    """
    unknown = sorted(set(counts) - {CLEAN, DUPLICATES, *REASONS})
    if unknown:
        raise ValueError(f"catalogue: unknown outcome(s) {unknown}")
    by_reason = {reason: int(counts.get(reason, 0)) for reason in REASONS}
    report = {
        "input": int(input_rows),
        CLEAN: int(counts.get(CLEAN, 0)),
        DUPLICATES: int(counts.get(DUPLICATES, 0)),
        "quarantined": sum(by_reason.values()),
        "by_reason": by_reason,
    }
    if report[CLEAN] + report[DUPLICATES] + report["quarantined"] != report["input"]:
        raise ValueError(f"catalogue: clean + duplicates + quarantined does not add up to input: {report}")
    return report

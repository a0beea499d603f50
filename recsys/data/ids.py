"""The id rule, defined once: ids are taken as they came, only trimmed of spaces, and a few are bad.

An id is never case-folded or otherwise rewritten, so ``B00ABCDxyz`` and ``b00abcdxyz`` are two ids, and
so are ``007`` and ``7``. Only the space character (``ID_PAD``) is trimmed from both ends: a tab, a
line break or a no-break space stays part of the id. What no id system produces is bad: a control
character (a NUL, a line break or a tab from a broken log line) and a length beyond any real id (a
serialised blob in the field), counted after the trim.

The same rule in three forms, side by side, which must agree: Python (one id, e.g. a lookup when
serving), Arrow (a column, e.g. the id types of a landing) and Spark (jobs.clean and jobs.tables).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from pyspark.sql import Column

ID_PAD = " "  # the one character trimmed from both ends of an id (Spark's trim strips exactly this one)
MAX_ID_LENGTH = 256  # characters after the trim; longer is a bad id
ID_CONTROL = r"\p{Cc}"  # a control character anywhere makes a bad id (Java, RE2 and Rust regex syntax)


def trim_id(text: str) -> str:
    """One id as the lake holds it: ``text`` trimmed of spaces."""
    return text.strip(ID_PAD)


def trim_ids(ids: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """A column of ids (as text) trimmed of spaces; nulls stay null."""
    return pc.utf8_trim(ids.cast(pa.string()), ID_PAD)


def bad_ids(ids: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Per trimmed id, whether it is bad (a control character, or longer than ``MAX_ID_LENGTH``); null stays null."""
    return pc.or_(pc.match_substring_regex(ids, ID_CONTROL), pc.greater(pc.utf8_length(ids), MAX_ID_LENGTH))


def trim_id_column(column: Column) -> Column:
    """Spark: a column of ids trimmed of spaces."""
    from pyspark.sql import functions as F

    return F.trim(column, F.lit(ID_PAD))


def bad_id_column(column: Column) -> Column:
    """Spark: whether a trimmed id is bad (a control character, or longer than ``MAX_ID_LENGTH``)."""
    from pyspark.sql import functions as F

    return column.rlike(ID_CONTROL) | (F.length(column) > MAX_ID_LENGTH)

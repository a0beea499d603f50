"""Land an interaction log (MovieLens, CSV/TSV, JSON lines or Parquet) in the raw zone, one partition per day.

How files are read is :mod:`recsys.data.formats` (``--format csv`` detects the kind, ``--sep`` and
``--encoding`` override what is sniffed); how the mapped columns become raw rows, their value kind and
the day each lands in is :mod:`recsys.data.ingest`; landing is :func:`recsys.data.rawzone.write_raw`.
The item catalogue lands with the events, in ``raw_catalogue/ds=<last date>`` (:mod:`recsys.data.catalogue`):
a MovieLens format's own (``movies.csv`` and ``tags.csv``, ``movies.dat``, ``u.item``) when it is in the
folder of ``--src``, or ``--items`` (with ``--item-mapping`` for any other file). Both files are read
before anything lands, so a bad catalogue fails the import with nothing written.

Exit codes: 0 the rows landed (the last stdout line is ``RECSYS_RESULT {json}`` with first_date,
last_date, days, rows, window_days, source, ts_unit, value_kind, future_rows, catalogue_rows and
catalogue_src); 1 the input cannot be
landed: the message names the file and, where it applies, the line, column or mapped column; 2 a bad
command line (argparse). The data-quality exit code 65 of :mod:`recsys.core.cli` is not used here:
doubtful rows land and jobs.clean judges them.
"""

from __future__ import annotations

import argparse
import codecs
import datetime as dt
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.core.cli import JobContext, iso_date, job_parser, run_job
from recsys.data.catalogue import catalogue_source, read_catalogue, write_raw_catalogue
from recsys.data.formats import FORMATS, is_headerless, parse_sep, read_log
from recsys.data.ingest import source_mapping, to_raw
from recsys.data.rawzone import write_raw

log = logging.getLogger(__name__)


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
    parser.add_argument("--items", type=Path, default=None,
                        help="the item catalogue to land with the events (default: a MovieLens format's own file "
                             "in the folder of --src: movies.csv with tags.csv, movies.dat, u.item)")
    parser.add_argument("--item-mapping", default=None,
                        help="--items other than a MovieLens catalogue (CSV, TSV, Parquet, JSON lines; UTF-8): "
                             "item=<col>,text=<col>[+<col>...][,title=<col>]")
    parser.add_argument("--replace", action="store_true", help="land a source other than the one the lake holds: empties the lake first (raw zone, every derived zone, the index)")
    return parser


def body(ctx: JobContext) -> dict[str, Any]:
    """Read the source file, map it to raw rows and land them, one partition per day."""
    args = ctx.args
    mapping, value_kind = source_mapping(args.format, args.mapping)
    try:
        encoding = codecs.lookup(args.encoding).name
    except LookupError:
        raise ValueError(f"--encoding: unknown encoding {args.encoding!r}") from None
    src = args.src.resolve()
    found = catalogue_source(args.format, src, args.items and args.items.resolve(), args.item_mapping)
    layout = FORMATS[args.format]
    table = read_log(src, list(mapping.values()), sep=parse_sep(args.sep) if args.sep else layout.sep,
                     names=layout.names, headerless=is_headerless(layout, mapping.values()), encoding=encoding)
    log.info("read %d rows of %s from %s", table.num_rows, args.format, src)
    items = read_catalogue(args.format, *found) if found else None
    now = time.time()
    rows = to_raw({role: table.column(column) for role, column in mapping.items()}, value_kind=value_kind,
                  default_ds=args.ds or dt.datetime.fromtimestamp(now, dt.UTC).date().isoformat(), now=now)
    log.info("timestamps: %s; values: %s", rows.ts_unit, value_kind)
    facts = write_raw(ctx.lake, rows.table, rows.day, source=args.format, src=str(src), has_timestamp="ts" in mapping,
                      replace=args.replace, ts_unit=rows.ts_unit, value_kind=value_kind)
    catalogue_rows = write_raw_catalogue(ctx.lake, items, facts["last_date"])
    return {**facts, "source": args.format, "ts_unit": rows.ts_unit, "value_kind": value_kind,
            "future_rows": rows.future_rows, "catalogue_rows": catalogue_rows,
            "catalogue_src": str(found[0]) if found else None}


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

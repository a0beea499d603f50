"""Clean the item catalogue of the run's date with Spark: trim ids, quarantine with a reason, hash the texts.

Reads the latest ``raw_catalogue`` partition on or before ``--ds`` and commits ``catalogue/ds=<ds>/``
(``catalogue.parquet``, ``quarantine.parquet``, ``_reconciliation.json``) as one atomic partition. The
rules are :mod:`recsys.data.catalogue`. Spark flags the rows in one pass; the outcome comes to the
driver as Arrow (a catalogue is far smaller than the events), which writes the two files. Without a
raw catalogue (a source that ships none) the partition is an empty catalogue, written without Spark.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pyarrow.parquet as pq

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import CATALOGUE_FILE, CATALOGUE_QUARANTINE_FILE, RECONCILIATION_FILE, write_json
from recsys.data.catalogue import (
    CATALOGUE_QUARANTINE_SCHEMA,
    CATALOGUE_SCHEMA,
    flag_catalogue,
    latest_raw_date,
    raw_catalogue_rows,
    read_raw_catalogue,
    reconcile_catalogue,
    split_outcomes,
)

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Clean the latest raw catalogue on or before the run's date and commit the date's catalogue partition."""
    lake, ds = ctx.lake, ctx.ds
    source_ds = latest_raw_date(lake, ds)
    if source_ds is None:
        log.info("no raw_catalogue partition on or before %s (the source ships no item catalogue): "
                 "committing an empty catalogue", ds)
        catalogue, quarantine, counts = CATALOGUE_SCHEMA.empty_table(), CATALOGUE_QUARANTINE_SCHEMA.empty_table(), {}
        input_rows = 0
    else:
        from recsys.core.spark import spark_session

        input_rows = raw_catalogue_rows(lake, source_ds)
        log.info("cleaning %d catalogue rows of raw_catalogue/ds=%s", input_rows, source_ds)
        spark = spark_session("recsys-catalogue")
        flagged = flag_catalogue(read_raw_catalogue(spark, lake, source_ds), ctx.config["catalogue"]).toArrow()
        catalogue, quarantine, counts = split_outcomes(flagged)
    report = {**reconcile_catalogue(input_rows, counts), "source_ds": source_ds}
    with lake.writing("catalogue", ds) as out:
        pq.write_table(catalogue, out / CATALOGUE_FILE)
        pq.write_table(quarantine, out / CATALOGUE_QUARANTINE_FILE)
        write_json(out / RECONCILIATION_FILE, report)
    log.info("catalogue %s: %d items; %s", ds, catalogue.num_rows, report)
    return {"ds": ds, "catalogue_path": str(lake.path("catalogue", ds)), **report}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.catalogue --ds YYYY-MM-DD [--lake PATH] [--set catalogue.KEY=VALUE]``."""
    return run_job(job_parser(__doc__.splitlines()[0]), body, argv)


if __name__ == "__main__":
    main()

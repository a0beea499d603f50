"""Build a date's sparse interaction tables with Spark: stable indexes, per-user split, CSR export, stats.

What the tables hold, the stable-index rule and the split are :mod:`recsys.data.tables`. Spark reads
the window and aggregates it to one row per (user, item) pair; the driver receives those pairs as
Arrow (it needs every interaction for the CSR export anyway) and runs the k-core, the index and the
split on integer arrays there: each k-core round as Spark joins was a job with a shuffle.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.columns import ITEM_ID, ITEM_IDX, USER_ID, USER_IDX, WEIGHT
from recsys.core.lake import (
    INTERACTIONS_DIR,
    ITEMS_FILE,
    MATRICES_FILE,
    PART_FILE,
    STATS_FILE,
    USERS_FILE,
    write_json,
    write_parquet,
)
from recsys.core.matrices import save_matrices
from recsys.core.spark import spark_session
from recsys.data.tables import (
    FIRST_TS,
    POSITIVE,
    catalogue_stats,
    core_pairs,
    csr_splits,
    grow_catalogue_index,
    grow_index,
    index_lock,
    index_path,
    read_catalogue_ids,
    read_index,
    read_window,
    split_table,
    table_stats,
    window_matrices,
    window_pairs,
)

log = logging.getLogger(__name__)


def body(ctx: JobContext) -> dict[str, Any]:
    """Build and commit the tables of the run's date, growing the stable indexes; return the sizes."""
    cfg, lake, ds = ctx.config["tables"], ctx.lake, ctx.ds
    has_timestamp = bool(lake.source().get("has_timestamp", True))
    spark = spark_session("recsys-tables")
    clean, dates = read_window(spark, lake, ds, int(ctx.config["window_days"]))
    log.info("tables for %s over %d clean date(s) %s..%s", ds, len(dates), dates[0], ds)
    every = window_pairs(clean).toArrow()
    pairs = core_pairs(every, cfg)
    if pairs.num_rows == 0:
        raise ValueError(f"tables {ds}: no positive interactions left in clean {dates[0]}..{ds}")
    catalogue_ids = read_catalogue_ids(lake, ds)
    with index_lock(lake):
        indexes, new = {}, {}
        for id_col, idx_col in ((USER_ID, USER_IDX), (ITEM_ID, ITEM_IDX)):
            known = read_index(index_path(lake, id_col), id_col, idx_col)
            indexes[id_col] = grow_index(known, every, id_col, idx_col)
            new[id_col] = len(indexes[id_col]) - len(known)
        # catalogue items get theirs after the window's ids, before their first interaction
        from_catalogue = 0
        if catalogue_ids is not None:
            grown = grow_catalogue_index(indexes[ITEM_ID], catalogue_ids)
            from_catalogue = len(grown) - len(indexes[ITEM_ID])
            indexes[ITEM_ID], new[ITEM_ID] = grown, new[ITEM_ID] + from_catalogue
        table, splits = split_table(pairs, indexes, cfg, has_timestamp=has_timestamp, seed=int(ctx.config["seed"]))
        # the index grows only once this date's tables are computed; an id numbered here but not
        # committed below stays numbered, which the append-only rule allows
        for id_col, index in indexes.items():
            if new[id_col] or not index_path(lake, id_col).exists():
                write_parquet(index, index_path(lake, id_col))

    columns = {name: table.column(name).to_numpy() for name in (USER_IDX, ITEM_IDX, WEIGHT)}
    first_us = table.column(FIRST_TS).cast(pa.int64()).to_numpy()
    table = table.drop_columns([FIRST_TS])
    shape = (len(indexes[USER_ID]), len(indexes[ITEM_ID]))
    last_day_us = int(dt.datetime.fromisoformat(f"{ds}T00:00:00+00:00").timestamp() * 1_000_000)
    stats = table_stats(columns[USER_IDX], columns[ITEM_IDX], splits, first_us, last_day_us)
    stats.update(ds=ds, window_start=dates[0], clean_dates=len(dates), has_timestamp=has_timestamp,
                 indexed_users=shape[0], indexed_items=shape[1], **catalogue_stats(catalogue_ids, every, from_catalogue))

    history, seen = window_matrices(every, indexes, shape, float(cfg["nonpositive_weight"]))
    stats.update(window_users=int((np.diff(seen.indptr) > 0).sum()), window_interactions=int(seen.nnz),
                 window_positives=int(every.column(POSITIVE).combine_chunks().true_count))

    with lake.writing("tables", ds) as out:
        (out / INTERACTIONS_DIR).mkdir()
        pq.write_table(table, out / INTERACTIONS_DIR / PART_FILE)
        save_matrices(out / MATRICES_FILE, csr_splits(columns[USER_IDX], columns[ITEM_IDX], columns[WEIGHT], splits, shape),
                      history=history, seen=seen)
        pq.write_table(indexes[USER_ID], out / USERS_FILE)
        pq.write_table(indexes[ITEM_ID], out / ITEMS_FILE)
        write_json(out / STATS_FILE, stats)
    log.info("tables %s: %s", ds, stats["interactions"])
    return {
        "ds": ds,
        "tables_path": str(lake.path("tables", ds)),
        "users": stats["users"],
        "items": stats["items"],
        "indexed_users": shape[0],
        "indexed_items": shape[1],
        "new_users": new[USER_ID],
        "new_items": new[ITEM_ID],
        "catalogue_items": stats["catalogue_items"],
        "new_from_catalogue": from_catalogue,
        "window_users": stats["window_users"],
        "interactions": stats["interactions"],
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line: ``python -m jobs.tables --ds YYYY-MM-DD [--lake PATH] [--set tables.KEY=VALUE]``."""
    return run_job(job_parser(__doc__.splitlines()[0]), body, argv)


if __name__ == "__main__":
    main()

"""Benchmark: the Spark clean + tables jobs against the same transformation in polars, on N synthetic events.

Generates N events with ``jobs.generate`` into a cached lake under ``.recsys/bench/events-N`` (reused
when present), then runs, each in a fresh process so time and memory are its own:

* **spark**: ``jobs.clean`` and ``jobs.tables`` for the last date (the window covers every day), as
  the pipeline runs them, Spark session start included;
* **polars**: a single-node reference of the same rules, written to ``.recsys/bench/events-N/polars``:
  ids trimmed only, never case-folded; the reasons in the same order (``bad_id``: a control character
  or more than ``recsys.data.ids.MAX_ID_LENGTH`` characters); exact and near-duplicate dedupe; bots counted
  on their kept events; the implicit mapping of ratings; every (user, item) pair of the window, any
  label; the k-core of the positive pairs; an index of every id of the window in (first time seen, id)
  order; the split; Parquet, the CSR splits with ``history`` and ``seen``, stats. It covers what
  ``jobs.generate`` writes, a rating source (``value_kind: rating``) with timestamps, and refuses others.

Then, outside both timings, it compares what the two wrote: every date's clean and quarantine rows,
the reconciliation counts, the interactions, the users and items index and the five matrices of
``matrices.npz``, and exits non-zero naming what differs.

Prints one JSON line last: events, raw rows, spark_s, polars_s, ratio (spark_s / polars_s), peak RSS
of each process tree (MiB), the clean rows and interactions both produced, and ``same``: per output,
whether both sides wrote the same.

With ``--workers N`` the Spark side runs on a loopback standalone cluster started for the run
(``tests/cluster/services.py``: a master and N workers of one core each on 127.0.0.1, stopped at the end);
its peak RSS then counts the driver only (the executors are the workers' children).
Run: ``python -m bench.data_layer --events N [--workers N]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from recsys.core.columns import (
    BOT,
    DS,
    EVENT,
    ITEM_ID,
    ITEM_IDX,
    LABEL,
    RAW_COLUMNS,
    REASON,
    SPLIT,
    SPLITS,
    TS,
    USER_ID,
    USER_IDX,
    VALUE,
    WEIGHT,
)
from recsys.core.config import REPO_ROOT, load_config
from recsys.core.lake import Lake, read_json, recsys_home, window_start, write_json

log = logging.getLogger("bench.data_layer")
TARGET_RATIO = 1.5
RESULT = "BENCH_PHASE "
RECONCILIATION = "reconciliation.json"  # the polars side's counts per date, as the clean job's reports


class PeakRss:
    """Samples the resident memory of this process and all its children (the Spark JVM) in a thread."""

    def __init__(self, every_s: float = 0.1) -> None:
        self.peak = 0
        self._every = every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a child that just ended
                    continue
            self.peak = max(self.peak, total)
            self._stop.wait(self._every)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_lake(events: int, days: int, name: str | None = None, users: int | None = None,
               items: int | None = None) -> Lake:
    """The cached lake ``.recsys/bench/<name>`` of ``events`` synthetic events, generated on first use.

    By default the catalogue grows with N, as in production: about 50 events per user, 200 per item.
    """
    lake = Lake(recsys_home() / "bench" / (name or f"events-{events}-days-{days}") / "lake")
    if lake.source().get("rows"):
        log.info("reusing the synthetic raw zone at %s (%d rows)", lake.root, lake.source()["rows"])
        return lake
    from jobs import generate

    generate.main(["--lake", str(lake.root), "--events", str(events), "--days", str(days), "--replace",
                   "--users", str(users or max(2000, events // 50)), "--items", str(items or max(1000, events // 200))])
    return lake


# --- polars reference --------------------------------------------------------------------------


def _keep_first_within(group: np.ndarray, seconds: np.ndarray, window: int) -> np.ndarray:
    """Rows (sorted by group, then time) kept by the rule "more than ``window`` s after the previous kept one".

    Each row's successor is the first later row of its group more than ``window`` s after it (one
    binary search); following successors from each group's first row visits exactly the kept rows.
    """
    n = len(group)
    kept = np.zeros(n, bool)
    if n == 0:
        return kept
    key = group.astype(np.int64) * (1 << 33) + (seconds - seconds.min())
    successor = np.searchsorted(key, key + window, side="right")
    frontier = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
    while frontier.size:
        kept[frontier] = True
        nxt = successor[frontier]
        inside = nxt < n
        nxt, here = nxt[inside], frontier[inside]
        frontier = nxt[group[nxt] == group[here]]
    return kept


def polars_clean(raw: Any, cfg: Mapping[str, Any]) -> tuple[Any, Any, dict[str, dict[str, Any]]]:
    """The clean job's rules in polars, for a rating source with timestamps (what ``jobs.generate`` writes).

    Returns:
        The clean rows, the quarantine rows and, per date, the counts of the clean job's
        reconciliation (``input``, ``clean``, ``duplicates``, ``quarantined``, ``by_reason``).
    """
    import polars as pl

    from recsys.data.clean import CLEAN, DUPLICATES, RATING_EVENT, REASONS
    from recsys.data.ids import ID_CONTROL, ID_PAD, MAX_ID_LENGTH
    from recsys.data.rawzone import SECONDS_PER_DAY

    low, high = (float(x) for x in cfg["rating_range"])
    kinds = list(cfg["events"])

    def trimmed(column: str, pad: str = " ") -> pl.Expr:
        # Spark's trim strips spaces only: a tab or a NUL at the end stays (and makes a bad_id)
        stripped = pl.col(column).str.strip_chars(pad)
        return pl.when(stripped != "").then(stripped)

    def bad_id(column: pl.Expr) -> pl.Expr:
        return column.str.contains(ID_CONTROL) | (column.str.len_chars() > MAX_ID_LENGTH)

    # ids as they came (trimmed only); event kinds trimmed and lowercased
    rows = raw.group_by([DS, *RAW_COLUMNS]).len(name="_n").with_columns(
        trimmed(USER_ID, ID_PAD).alias("_user"),
        trimmed(ITEM_ID, ID_PAD).alias("_item"),
        trimmed(EVENT).str.to_lowercase().alias("_event"),
        trimmed(VALUE).alias("_raw_value"),
        trimmed(TS).str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%SZ", strict=False).alias("_ts"),
        pl.col(DS).str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%d").alias("_day"),
    ).with_columns(pl.col("_raw_value").cast(pl.Float64, strict=False).alias("_value"))
    user, item, event, value, ts = (pl.col(c) for c in ("_user", "_item", "_event", "_value", "_ts"))
    is_rating = event == RATING_EVENT
    not_finite = value.is_null() | value.is_nan() | value.is_infinite()
    future_from = pl.col("_day") + pl.duration(seconds=SECONDS_PER_DAY + int(cfg["max_future_seconds"]))
    reason = (
        pl.when(user.is_null() | item.is_null()).then(pl.lit("null_id"))
        .when(bad_id(user) | bad_id(item)).then(pl.lit("bad_id"))
        .when(event.is_null() | ~event.is_in(kinds)).then(pl.lit("unknown_event"))
        .when(ts.is_null()).then(pl.lit("bad_timestamp"))
        .when(ts >= future_from).then(pl.lit("future_timestamp"))
        .when(pl.col("_raw_value").is_not_null() & not_finite).then(pl.lit("out_of_range"))
        .when(is_rating & (value.is_null() | ~value.is_between(low, high))).then(pl.lit("out_of_range"))
        .when(~is_rating & (value < 0)).then(pl.lit("out_of_range"))
    )
    # repeats among the valid rows first: the bot rule counts only the kept ones. Sorted so that the
    # valid rows come first, grouped by (ds, user, item, event), in order of time, then value
    rows = rows.with_columns(reason.alias(REASON)).sort(
        pl.col(REASON).is_not_null(), DS, "_user", "_item", "_event", "_ts", "_value"
    )
    n_valid = rows[REASON].null_count()
    valid = rows.head(n_valid)
    group = valid.select(pl.struct(DS, "_user", "_item", "_event").rle_id())
    kept = np.zeros(rows.height, bool)
    kept[:n_valid] = _keep_first_within(group.to_series().to_numpy(), valid["_ts"].dt.epoch("s").to_numpy(),
                                        int(cfg["dedupe_seconds"]))
    rows = rows.with_columns(pl.Series("_kept", kept))
    is_bot = pl.col(REASON).is_null() & (pl.col("_kept").sum().over(DS, "_user") > int(cfg["bot_events_per_day"]))
    rows = rows.with_columns(pl.when(is_bot).then(pl.lit("bot")).otherwise(pl.col(REASON)).alias(REASON))

    spec = cfg["events"]
    failed_rating = is_rating & ~(value >= float(cfg["positive_rating"]))
    clean = rows.filter(pl.col(REASON).is_null() & pl.col("_kept")).select(
        pl.col("_user").alias(USER_ID), pl.col("_item").alias(ITEM_ID), pl.col("_event").alias(EVENT),
        pl.col("_value").alias(VALUE), pl.col("_ts").alias(TS),
        pl.when(failed_rating).then(0).otherwise(event.replace_strict({k: int(v[LABEL]) for k, v in spec.items()}))
        .cast(pl.Int32).alias(LABEL),
        pl.when(failed_rating).then(0.0).otherwise(event.replace_strict({k: float(v[WEIGHT]) for k, v in spec.items()}))
        .cast(pl.Float64).alias(WEIGHT),
        DS,
    )
    quarantine = rows.filter(pl.col(REASON).is_not_null()).select(*RAW_COLUMNS, REASON, DS)

    # a distinct row stands for _n raw rows: _n - 1 identical copies, then itself (its reason, clean or a repeat)
    counts: dict[str, dict[str, Any]] = {}
    for d, n, copies in rows.group_by(DS).agg(pl.col("_n").sum(), (pl.col("_n") - 1).sum().alias("_copies")).iter_rows():
        counts[d] = {"input": n, CLEAN: 0, DUPLICATES: copies, "quarantined": 0, "by_reason": dict.fromkeys(REASONS, 0)}
    outcome = pl.coalesce(REASON, pl.when(pl.col("_kept")).then(pl.lit(CLEAN)).otherwise(pl.lit(DUPLICATES)))
    for d, name, n in rows.group_by(DS, outcome.alias("_outcome")).len().iter_rows():
        if name in (CLEAN, DUPLICATES):
            counts[d][name] += n
        else:
            counts[d]["by_reason"][name] += n
            counts[d]["quarantined"] += n
    for d, c in counts.items():
        if c[CLEAN] + c[DUPLICATES] + c["quarantined"] != c["input"]:
            raise ValueError(f"polars reference {d}: outcomes do not add up: {c}")
    return clean, quarantine, counts


def polars_tables(clean: Any, quarantine: Any, cfg: Mapping[str, Any], ds: str, out: Path) -> dict[str, Any]:
    """The tables job's rules in polars (timestamps present, index from scratch), written under ``out``.

    A bot's quarantined rows join the clean rows as interactions without a positive label (seen, never
    trained on), as ``recsys.data.tables.bot_rows`` does."""
    import polars as pl

    from recsys.core.lake import INTERACTIONS_DIR, ITEMS_FILE, MATRICES_FILE, USERS_FILE
    from recsys.core.matrices import save_matrices
    from recsys.data.ids import ID_PAD
    from recsys.data.tables import FIRST_TS, POSITIVE, SEEN_TS, csr_splits, table_stats, window_matrices

    # every (user, item) pair of the window, any label: the index and the history/seen matrices use them all
    positive = pl.col(LABEL) == 1
    bots = quarantine.filter(pl.col(REASON) == BOT).select(
        pl.col(USER_ID).str.strip_chars(ID_PAD), pl.col(ITEM_ID).str.strip_chars(ID_PAD),
        pl.col(TS).str.strip_chars(" ").str.strptime(pl.Datetime("us", "UTC"), "%Y-%m-%dT%H:%M:%SZ", strict=False),
        pl.lit(0, pl.Int32).alias(LABEL), pl.lit(0.0).alias(WEIGHT), DS,
    )
    interactions = pl.concat([clean.select(USER_ID, ITEM_ID, TS, LABEL, WEIGHT, DS), bots])
    every = (
        interactions.filter(pl.col(DS) >= window_start(ds, int(cfg["window_days"])))
        .group_by(USER_ID, ITEM_ID)
        .agg(positive.any().alias(POSITIVE), pl.col(WEIGHT).filter(positive).max(),
             pl.col(TS).filter(positive).max(), pl.col(TS).filter(positive).min().alias(FIRST_TS),
             pl.col(TS).min().alias(SEEN_TS))
    )
    # the k-core shapes the training pairs only
    pairs = every.filter(POSITIVE).select(USER_ID, ITEM_ID, WEIGHT, TS, FIRST_TS)
    min_user, min_item = int(cfg["min_user_core"]), int(cfg["min_item_core"])
    for _ in range(int(cfg["core_rounds"])):
        kept = pairs.filter((pl.len().over(USER_ID) >= min_user) & (pl.len().over(ITEM_ID) >= min_item))
        done = kept.height == pairs.height
        pairs = kept
        if done:
            break

    def index(id_col: str, idx_col: str) -> Any:
        # every id of the window, numbered by (first time of any of its rows, id)
        first = every.group_by(id_col).agg(pl.col(SEEN_TS).min()).sort(SEEN_TS, id_col)
        return first.select(id_col, pl.int_range(pl.len(), dtype=pl.Int64).alias(idx_col))

    users, items = index(USER_ID, USER_IDX), index(ITEM_ID, ITEM_IDX)
    n = pl.len().over(USER_IDX)
    n_valid, n_test = (pl.max_horizontal(pl.lit(1), (n * float(cfg[r]) + 0.5).floor().cast(pl.Int64))
                       for r in ("valid_ratio", "test_ratio"))
    position = pl.int_range(1, pl.len() + 1).over(USER_IDX)
    split = (
        pl.when((n < int(cfg["min_user_interactions"])) | (n_valid + n_test >= n)).then(pl.lit("train"))
        .when(position > n - n_test).then(pl.lit("test"))
        .when(position > n - n_valid - n_test).then(pl.lit("valid"))
        .otherwise(pl.lit("train"))
    )
    table = (
        pairs.join(users, on=USER_ID).join(items, on=ITEM_ID)
        .select(pl.col(USER_IDX).cast(pl.Int32), pl.col(ITEM_IDX).cast(pl.Int32), pl.col(WEIGHT).cast(pl.Float32),
                TS, FIRST_TS)
        .sort(USER_IDX, TS, ITEM_IDX)
        .with_columns(split.alias(SPLIT))
    )
    columns = {c: table[c].to_numpy() for c in (USER_IDX, ITEM_IDX, WEIGHT)}
    splits = table[SPLIT].to_numpy()
    shape = (users.height, items.height)
    history, seen = window_matrices(every.to_arrow(), {USER_ID: users.to_arrow(), ITEM_ID: items.to_arrow()}, shape,
                                    float(cfg["nonpositive_weight"]))
    (out / INTERACTIONS_DIR).mkdir(parents=True, exist_ok=True)
    table.drop(FIRST_TS).write_parquet(out / INTERACTIONS_DIR / "part-00000.parquet")
    save_matrices(out / MATRICES_FILE, csr_splits(columns[USER_IDX], columns[ITEM_IDX], columns[WEIGHT], splits, shape),
                  history=history, seen=seen)
    users.write_parquet(out / USERS_FILE)
    items.write_parquet(out / ITEMS_FILE)
    last_day_us = int(np.datetime64(f"{ds}T00:00:00", "us").astype(np.int64))
    first_us = table[FIRST_TS].dt.epoch("us").to_numpy()
    return table_stats(columns[USER_IDX], columns[ITEM_IDX], splits, first_us, last_day_us)


def polars_dir(lake: Lake) -> Path:
    """Where the polars reference writes: ``clean/``, ``quarantine/``, ``tables/`` and the counts per date."""
    return lake.root.parent / "polars"


def run_polars(lake: Lake, ds: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Read the raw window, clean and build tables with polars; return counts.

    Raises:
        ValueError: the raw zone has no timestamps or its values are not ratings, which the reference
            does not implement.
    """
    import polars as pl

    source = lake.source()
    if not source.get("has_timestamp", True) or source.get("value_kind", "rating") != "rating":
        raise ValueError(f"the polars reference covers rating sources with timestamps; {lake.path('raw')} says {source}")
    out = polars_dir(lake)
    shutil.rmtree(out, ignore_errors=True)
    first = window_start(ds, int(config["window_days"]))
    dates = [d for d in lake.dates("raw") if first <= d <= ds]
    raw = pl.concat([
        pl.read_parquet(lake.path("raw", d), columns=list(RAW_COLUMNS)).with_columns(pl.lit(d).alias(DS))
        for d in dates
    ])
    clean, quarantine, counts = polars_clean(raw, config["clean"])
    out.mkdir(parents=True)
    clean.sort(DS, USER_ID, TS, ITEM_ID, EVENT, VALUE).write_parquet(out / "clean", partition_by=DS)
    quarantine.sort(DS, REASON, *RAW_COLUMNS).write_parquet(out / "quarantine", partition_by=DS)
    write_json(out / RECONCILIATION, counts)
    stats = polars_tables(clean, quarantine, {**config["tables"], "window_days": config["window_days"]}, ds, out / "tables")
    return {"clean_rows": sum(c["clean"] for c in counts.values()), "interactions": stats["interactions"]["total"]}


# --- both sides' outputs, compared -----------------------------------------------------------------


def _same_frames(spark: Any, polars: Any, schema: Mapping[str, Any], *, ordered: bool) -> bool:
    """Whether two frames hold the same rows once cast to ``schema`` (in file order when ``ordered``)."""
    import polars as pl

    frames = [f.select(pl.col(c).cast(t) for c, t in schema.items()) for f in (spark, polars)]
    if not ordered:
        frames = [f.sort(list(schema), nulls_last=True) for f in frames]
    return frames[0].equals(frames[1])


def _read_parquet_dir(path: Path, schema: Mapping[str, Any]) -> Any:
    """The ``schema`` columns of every Parquet file in ``path``; no rows when there is none (polars writes
    no folder for a date without rows, Spark an empty file)."""
    import polars as pl

    files = sorted(path.glob("*.parquet")) if path.is_dir() else []
    if not files:
        return pl.DataFrame(schema=dict(schema))
    return pl.concat([pl.read_parquet(f, columns=list(schema), hive_partitioning=False) for f in files])


def compare_outputs(lake: Lake, ds: str) -> dict[str, list[str]]:
    """What differs between the Spark jobs' outputs in ``lake`` and the polars reference's, per kind of output.

    Compares every date's clean rows and quarantine rows (as sets of rows), the reconciliation counts,
    the interactions file (row for row, in its order), the users and items index (the stable index and
    the snapshot in the tables) and the five matrices of ``matrices.npz`` (indptr, indices and data).

    Returns:
        For each of ``clean``, ``quarantine``, ``reconciliation``, ``interactions``, ``index`` and
        ``matrices``, the names of what differs (empty when both sides agree).
    """
    import polars as pl

    from recsys.core.columns import QUARANTINE_COLUMNS
    from recsys.core.lake import INTERACTIONS_DIR, MATRICES_FILE, RECONCILIATION_FILE
    from recsys.core.matrices import WINDOW_MATRICES
    from recsys.data.tables import index_path

    reference = polars_dir(lake)
    counts = read_json(reference / RECONCILIATION)
    schemas = {
        "clean": {USER_ID: pl.String, ITEM_ID: pl.String, EVENT: pl.String, VALUE: pl.Float64,
                  TS: pl.Datetime("us", "UTC"), LABEL: pl.Int32, WEIGHT: pl.Float64},
        "quarantine": {c: pl.String for c in QUARANTINE_COLUMNS},
    }
    diff: dict[str, list[str]] = {k: [] for k in (*schemas, "reconciliation", "interactions", "index", "matrices")}
    dates = lake.dates("clean")
    if dates != sorted(counts):
        diff["reconciliation"].append(f"dates: spark {dates}, polars {sorted(counts)}")
    for d in dates:
        for zone, schema in schemas.items():
            if not _same_frames(_read_parquet_dir(lake.path(zone, d), schema),
                                _read_parquet_dir(reference / zone / f"ds={d}", schema), schema, ordered=False):
                diff[zone].append(d)
        if read_json(lake.path("clean", d) / RECONCILIATION_FILE) != counts.get(d):
            diff["reconciliation"].append(d)

    tables = lake.path("tables", ds)
    interactions = f"{INTERACTIONS_DIR}/part-00000.parquet"
    schema = {USER_IDX: pl.Int32, ITEM_IDX: pl.Int32, WEIGHT: pl.Float32, TS: pl.Datetime("us", "UTC"),
              SPLIT: pl.String}
    if not _same_frames(pl.read_parquet(tables / interactions), pl.read_parquet(reference / "tables" / interactions),
                        schema, ordered=True):
        diff["interactions"].append(interactions)
    for id_col, idx_col in ((USER_ID, USER_IDX), (ITEM_ID, ITEM_IDX)):
        name = index_path(lake, id_col).name
        expected = pl.read_parquet(reference / "tables" / name)
        for spark_file in (index_path(lake, id_col), tables / name):
            if not _same_frames(pl.read_parquet(spark_file), expected, {id_col: pl.String, idx_col: pl.Int64},
                                ordered=True):
                diff["index"].append(str(spark_file.relative_to(lake.root)))
    with np.load(tables / MATRICES_FILE) as spark_npz, np.load(reference / "tables" / MATRICES_FILE) as polars_npz:
        if not np.array_equal(spark_npz["shape"], polars_npz["shape"]):
            diff["matrices"].append(f"shape {spark_npz['shape'].tolist()} vs {polars_npz['shape'].tolist()}")
        for matrix in (*SPLITS, *WINDOW_MATRICES):
            if not all(np.array_equal(spark_npz[f"{matrix}_{part}"], polars_npz[f"{matrix}_{part}"])
                       for part in ("indptr", "indices", "data")):
                diff["matrices"].append(matrix)
    return diff


# --- Spark, as the pipeline runs it --------------------------------------------------------------


def run_spark(lake: Lake, ds: str, config: Mapping[str, Any]) -> dict[str, Any]:
    """Run the clean and tables jobs on a lake without derived zones; return counts and the session start time."""
    from jobs import clean, tables
    from recsys.core.spark import spark_session

    for zone in ("clean", "quarantine", "tables", "index", "_staging"):
        shutil.rmtree(lake.root / zone, ignore_errors=True)
    start = time.perf_counter()
    spark_session("recsys-bench")
    startup = time.perf_counter() - start
    cleaned = clean.main(["--ds", ds, "--lake", str(lake.root)])
    built = tables.main(["--ds", ds, "--lake", str(lake.root)])
    return {"clean_rows": cleaned["clean"], "interactions": built["interactions"]["total"],
            "spark_startup_s": round(startup, 2)}


PHASES: dict[str, Callable[[Lake, str, Mapping[str, Any]], dict[str, Any]]] = {"spark": run_spark, "polars": run_polars}


def phase(name: str, events: int, days: int) -> None:
    """Run one phase in this process and print its seconds, peak RSS and counts."""
    lake = bench_lake(events, days)
    ds = lake.source()["last_date"]
    with PeakRss() as rss:
        start = time.perf_counter()
        facts = PHASES[name](lake, ds, load_config())
        seconds = time.perf_counter() - start
    print(RESULT + json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(rss.peak / 2**20), **facts}),
          flush=True)


def run_phase(name: str, events: int, days: int, spark_master: str | None = None) -> dict[str, Any]:
    """Run a phase in a fresh Python process (its Spark jobs on ``spark_master`` if given); return what it printed."""
    command = [sys.executable, "-m", "bench.data_layer", "--events", str(events), "--days", str(days), "--phase", name]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    if spark_master:
        env["SPARK_MASTER"] = spark_master
    done = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=True, env=env)
    line = next(x for x in reversed(done.stdout.splitlines()) if x.startswith(RESULT))
    return json.loads(line[len(RESULT):])


def standalone_master(stack: ExitStack, workers: int, worker_memory: str) -> str:
    """A Spark standalone master and ``workers`` workers on 127.0.0.1 (stopped with ``stack``); its URL."""
    from tests.cluster.services import Cluster, start_spark

    root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-spark-")))
    return start_spark(stack, Cluster(root), workers=workers, worker_memory=worker_memory)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="synthetic events (default 1,000,000)")
    parser.add_argument("--days", type=int, default=14, help="daily partitions (default 14)")
    parser.add_argument("--workers", type=int, default=0,
                        help="run the Spark side on a loopback standalone cluster of this many 1-core workers "
                             "(default 0: SPARK_MASTER or local[*])")
    parser.add_argument("--worker-memory", default="2g", help="memory of each standalone worker (default 2g)")
    parser.add_argument("--phase", choices=sorted(PHASES), default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.phase:
        phase(args.phase, args.events, args.days)
        return
    lake = bench_lake(args.events, args.days)  # generate once, outside both timings
    with ExitStack() as stack:
        master = standalone_master(stack, args.workers, args.worker_memory) if args.workers else None
        spark = run_phase("spark", args.events, args.days, master)
    polars = run_phase("polars", args.events, args.days)
    result = {
        "events": args.events,
        "spark_master": f"standalone, {args.workers} worker(s) of 1 core, {args.worker_memory}" if master
        else os.environ.get("SPARK_MASTER", "local[*]"),
        "raw_rows": lake.source()["rows"],
        "spark_s": spark["seconds"],
        "spark_startup_s": spark["spark_startup_s"],
        "polars_s": polars["seconds"],
        "ratio": round(spark["seconds"] / polars["seconds"], 2),
        "target_ratio": TARGET_RATIO,
        "spark_peak_rss_mib": spark["peak_rss_mib"],
        "polars_peak_rss_mib": polars["peak_rss_mib"],
        "peak_rss_mib": max(spark["peak_rss_mib"], polars["peak_rss_mib"]),
        "clean_rows": {"spark": spark["clean_rows"], "polars": polars["clean_rows"]},
        "interactions": {"spark": spark["interactions"], "polars": polars["interactions"]},
        "cpus": os.cpu_count(),
    }
    # outside both timings: the two sides must have written the same rows, index and matrices
    differences = compare_outputs(lake, lake.source()["last_date"])
    result["same"] = {kind: not found for kind, found in differences.items()}
    print(json.dumps(result), flush=True)
    found = {kind: names for kind, names in differences.items() if names}
    if found:
        raise SystemExit(f"the Spark jobs and the polars reference differ: {found}")


if __name__ == "__main__":
    main()

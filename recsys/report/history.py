"""What the run report reads from the lake beyond tonight's summaries: earlier nights, data quality, quarantine rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow.parquet as pq

from recsys.core.columns import REASON
from recsys.core.lake import (
    METRICS_FILE,
    RECONCILIATION_FILE,
    REGISTRATION_FILE,
    STATS_FILE,
    Lake,
    read_json,
)

TREND_NIGHTS = 14  # nights the report's trend shows, tonight included (jobs.report --nights)
QUARANTINE_EXAMPLES = 2  # quarantined rows shown per reason
QUARANTINE_SCAN_ROWS = 100_000  # rows read at most to find them: a huge quarantine is sampled from its start


def _read(lake: Lake, zone: str, ds: str, name: str) -> dict[str, Any] | None:
    path = lake.path(zone, ds) / name
    return read_json(path) if path.is_file() else None


def quarantine_share(reconciliation: Mapping[str, Any] | None) -> float | None:
    """Quarantined rows over input rows of one date's reconciliation; ``None`` without input."""
    if not reconciliation or not reconciliation.get("input"):
        return None
    return int(reconciliation.get("quarantined", 0)) / int(reconciliation["input"])


def night(lake: Lake, ds: str) -> dict[str, Any]:
    """The trend's figures of one night, ``None`` where that night's file is missing.

    Returns:
        ``ds``, ``ndcg@10`` (the model on all users), ``lift_all``, ``lift_sparse`` with their ``_low`` and
        ``_high``, ``clean_rows``, ``quarantine_share``, ``interactions`` (the window's, from the tables'
        stats), ``champion`` (the version champion after the night's gate) and ``promoted``.
    """
    metrics = _read(lake, "eval", ds, METRICS_FILE) or {}
    registration = _read(lake, "registry", ds, REGISTRATION_FILE) or {}
    reconciliation = _read(lake, "clean", ds, RECONCILIATION_FILE)
    stats = _read(lake, "tables", ds, STATS_FILE) or {}
    aug = metrics.get("augmentation", {})
    facts: dict[str, Any] = {
        "ds": ds,
        "ndcg@10": metrics.get("models", {}).get("model", {}).get("all", {}).get("ndcg@10"),
        **{f"lift_{seg}{end}": aug.get(f"lift_{seg}{end}") for seg in ("all", "sparse") for end in ("", "_low", "_high")},
        "clean_rows": reconciliation.get("clean") if reconciliation else None,
        "quarantine_share": quarantine_share(reconciliation),
        "interactions": stats.get("interactions", {}).get("total"),
        "champion": registration.get("champion"),
        "promoted": registration.get("gate", {}).get("promoted"),
    }
    return facts


def trend(lake: Lake, ds: str, nights: int = TREND_NIGHTS) -> list[dict[str, Any]]:
    """The last ``nights`` nights up to ``ds`` (included), oldest first, each as :func:`night` gives it.

    A night is a date the pipeline evaluated or registered (``eval/`` or ``registry/`` has its partition);
    dates without either (a day the DAG did not run, a date only cleaned as part of a window) are skipped,
    and so are dates after ``ds`` (a backfill's report shows the nights before it).
    """
    if nights < 1:
        raise ValueError(f"the trend needs at least one night, got {nights}")
    dates = sorted({d for zone in ("eval", "registry") for d in lake.dates(zone) if d <= ds})
    return [night(lake, d) for d in dates[-nights:]]


def previous_stats(lake: Lake, ds: str) -> tuple[str | None, dict[str, Any]]:
    """The tables' ``_stats.json`` of the latest date before ``ds`` that has one: ``(date, stats)``."""
    for d in reversed([d for d in lake.dates("tables") if d < ds]):
        stats = _read(lake, "tables", d, STATS_FILE)
        if stats is not None:
            return d, stats
    return None, {}


def reconciliation(lake: Lake, ds: str) -> dict[str, Any]:
    """The clean stage's reconciliation of ``ds`` (input, clean, duplicates, quarantined, by_reason), or ``{}``."""
    return _read(lake, "clean", ds, RECONCILIATION_FILE) or {}


def quarantine_examples(lake: Lake, ds: str, per_reason: int = QUARANTINE_EXAMPLES) -> list[dict[str, Any]]:
    """A few quarantined rows of ``ds``, at most ``per_reason`` per reason, in file order.

    Reads at most :data:`QUARANTINE_SCAN_ROWS` rows; ``[]`` when the date has no quarantine partition.
    """
    base = lake.path("quarantine", ds)
    files = sorted(base.glob("*.parquet")) if base.is_dir() else []
    examples: list[dict[str, Any]] = []
    taken: dict[str, int] = {}
    scanned = 0
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=10_000):
            for row in batch.to_pylist():
                reason = str(row.get(REASON))
                if taken.get(reason, 0) < per_reason:
                    taken[reason] = taken.get(reason, 0) + 1
                    examples.append(row)
            scanned += batch.num_rows
            if scanned >= QUARANTINE_SCAN_ROWS:
                return examples
    return examples

"""The data quality gate of the clean job: findings from the raw footers, the outcome counts and the volume.

**Quality gate** (config ``quality``): the job raises :class:`recsys.core.cli.DataQualityError` (exit
code 65, no retries) and commits nothing when a raw partition it cleans has drifted from the raw
schema (a raw column missing, an extra column, a column that is not a string), when the raw
partition of the run's date has no rows or yields no clean row, when any date it cleans has more than
``quality.max_quarantine_share`` of its input rows quarantined for a reason of ``quality.share_reasons``
(all dates together, and each date of at least ``quality.min_share_rows`` rows), or when the run's clean-row count
falls more than ``quality.max_drop_share`` below the mean of the ``quality.trailing_dates`` previous
cleaned dates (checked once ``quality.min_history`` of them exist and their mean reaches
``quality.min_mean_rows``). The pipeline then stops before training and the ``champion`` alias stays
where it was. The error names every finding with its counts by reason, and the path of the rejected
run's reconciliation, ``<lake>/quarantine/_rejected/ds=<run date>/_reconciliation.json``: the
findings and, per date cleaned, ``input`` and (once the rows were cleaned) ``clean``, ``duplicates``,
``quarantined`` and ``by_reason``. It is not a partition (readers skip names starting with ``_``), and
a later run of the date that passes removes it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from recsys.core.cli import DataQualityError
from recsys.core.columns import RAW_COLUMNS
from recsys.core.lake import RECONCILIATION_FILE, REJECTED_DIR, Lake, read_json, write_json
from recsys.data.clean import CLEAN, DUPLICATES, REASONS


def _data_files(path: Path) -> list[Path]:
    # what Spark reads of a partition: every file not hidden by a leading "_" or "."
    return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(("_", ".")))


def _raw_footers(lake: Lake, ds: str) -> list[tuple[Path, pq.FileMetaData]]:
    return [(part, pq.read_metadata(part)) for part in _data_files(lake.path("raw", ds))]


def raw_rows(lake: Lake, dates: Sequence[str]) -> dict[str, int]:
    """Rows of each raw partition, from the Parquet footers: the input the reconciliation must add up to."""
    return {d: sum(meta.num_rows for _, meta in _raw_footers(lake, d)) for d in dates}


def raw_findings(lake: Lake, dates: Sequence[str], ds: str) -> list[str]:
    """Quality findings of the raw partitions about to be cleaned, from the Parquet footers alone.

    Returns:
        One sentence per problem: a file whose columns or types drifted from the raw schema (every
        column a string, exactly ``RAW_COLUMNS``), and a raw partition of ``ds`` without rows.
    """
    findings = []
    for d in dates:
        rows = 0
        for part, meta in _raw_footers(lake, d):
            rows += meta.num_rows
            types = {field.name: field.type for field in meta.schema.to_arrow_schema()}
            drift = [f"missing {c}" for c in RAW_COLUMNS if c not in types]
            drift += [f"extra {c}" for c in types if c not in RAW_COLUMNS]
            drift += [f"{c} is {types[c]}" for c in RAW_COLUMNS if c in types and types[c] != pa.string()]
            if drift:
                findings.append(f"schema drift in raw {d} ({part.name}): {', '.join(drift)}; "
                                f"expected string columns {', '.join(RAW_COLUMNS)}")
        if d == ds and rows == 0:
            findings.append(f"raw partition {ds} is empty (no rows in {lake.path('raw', ds)})")
    return findings


def clean_history(lake: Lake, ds: str, report: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """Clean rows of every cleaned date before ``ds``: this run's report first, then committed partitions."""
    history = {}
    for d in lake.dates("clean"):
        path = lake.path("clean", d) / RECONCILIATION_FILE
        if d < ds and path.is_file():
            history[d] = int(read_json(path)[CLEAN])
    history.update({d: int(entry[CLEAN]) for d, entry in report.items() if d < ds})
    return history


def volume_findings(ds: str, clean_rows: int, history: Mapping[str, int], cfg: Mapping[str, Any]) -> list[str]:
    """Quality findings of the run's clean-row count against the trailing mean of earlier dates.

    Args:
        ds: the run's date.
        clean_rows: clean rows of ``ds``.
        history: clean rows of earlier dates (later dates are ignored).
        cfg: the ``quality`` config section.
    """
    previous = sorted(d for d in history if d < ds)[-int(cfg["trailing_dates"]):]
    if len(previous) < int(cfg["min_history"]):
        return []
    mean = sum(history[d] for d in previous) / len(previous)
    if mean < float(cfg["min_mean_rows"]):
        return []  # on small dates (MovieLens by calendar day) a swing of half the rows is ordinary
    floor = mean * (1.0 - float(cfg["max_drop_share"]))
    if clean_rows < floor:
        drop = 1.0 - clean_rows / mean
        return [f"clean {ds} has {clean_rows} rows, {drop:.0%} below the mean {mean:.0f} of the {len(previous)} "
                f"previous dates {previous[0]}..{previous[-1]} (quality.max_drop_share {cfg['max_drop_share']})"]
    return []


def _by_reason(entry: Mapping[str, Any]) -> str:
    """The reasons of a reconciliation entry that quarantined rows, most rows first: ``out_of_range 9,800, bot 12``."""
    counts = [(reason, n) for reason, n in entry["by_reason"].items() if n]
    return ", ".join(f"{reason} {n:,}" for reason, n in sorted(counts, key=lambda rn: -rn[1]))


def _invalid(entry: Mapping[str, Any], reasons: Sequence[str]) -> int:
    return sum(int(entry["by_reason"].get(reason, 0)) for reason in reasons)


def outcome_findings(ds: str, report: Mapping[str, Mapping[str, Any]], cfg: Mapping[str, Any]) -> list[str]:
    """Quality findings of the outcome counts, each with its counts by reason.

    The quarantine share counts the rows quarantined for one of ``quality.share_reasons`` (by default
    every reason but ``bot``: a day dominated by one heavy user, such as a MovieLens user who rates a
    thousand films in a day, is filtered as designed, not a broken import). It is checked over all the
    dates the run cleans together, and on each date with at least ``quality.min_share_rows`` input rows
    (a date of three rows with two bad ones says little).

    Args:
        ds: the run's date.
        report: the reconciliation of every date cleaned, as :func:`reconcile` returns it.
        cfg: the ``quality`` config section.

    Returns:
        One sentence when the run's dates together, and one per date large enough, quarantined more than
        ``quality.max_quarantine_share`` of their input rows, and one when ``ds`` has no clean row.

    Raises:
        ValueError: ``quality.max_quarantine_share`` is not a share, or a reason is unknown.
    """
    limit = float(cfg["max_quarantine_share"])
    if not 0.0 <= limit <= 1.0:
        raise ValueError(f"quality.max_quarantine_share must be in [0, 1], got {cfg['max_quarantine_share']!r}")
    reasons = list(cfg["share_reasons"])
    unknown = sorted(set(reasons) - set(REASONS))
    if unknown:
        raise ValueError(f"quality.share_reasons: unknown reason(s) {', '.join(unknown)}; known: {', '.join(REASONS)}")

    def finding(label: str, entry: Mapping[str, Any]) -> str | None:
        share = _invalid(entry, reasons) / entry["input"] if entry["input"] else 0.0
        if share <= limit:
            return None
        return (f"{label}: {_invalid(entry, reasons):,} of {entry['input']:,} rows ({share:.1%}) quarantined as "
                f"invalid (quality.share_reasons), above quality.max_quarantine_share {cfg['max_quarantine_share']}: "
                f"{_by_reason(entry)}")

    total = {"input": sum(e["input"] for e in report.values()),
             "by_reason": {r: sum(int(e["by_reason"].get(r, 0)) for e in report.values()) for r in REASONS}}
    dates = sorted(report)
    found = [finding(f"clean {dates[0]}..{dates[-1]} ({len(dates)} dates together)", total)] if len(dates) > 1 else []
    found += [finding(f"clean {d}", report[d]) for d in dates
              if report[d]["input"] >= int(cfg["min_share_rows"]) or len(dates) == 1]
    findings = [f for f in found if f]
    entry = report[ds]
    if entry[CLEAN] == 0:
        reasons_text = f" ({_by_reason(entry)})" if entry["quarantined"] else ""
        findings.append(f"clean {ds} has no clean rows: of {entry['input']:,} rows, {entry[DUPLICATES]:,} "
                        f"duplicates and {entry['quarantined']:,} quarantined{reasons_text}")
    return findings


def rejected_path(lake: Lake, ds: str) -> Path:
    """Where the reconciliation of a run of ``ds`` stopped by the quality gate goes (not a partition)."""
    return lake.path("quarantine") / REJECTED_DIR / f"ds={ds}" / RECONCILIATION_FILE


def gate(lake: Lake, ds: str, report: Mapping[str, Mapping[str, Any]], findings: Sequence[str]) -> None:
    """Stop the run when there are findings, leaving its reconciliation at :func:`rejected_path`."""
    if not findings:
        return
    path = rejected_path(lake, ds)
    # written aside and renamed, so a reader sees the previous stopped run's file or this one, whole
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    write_json(partial, {"ds": ds, "findings": list(findings), "dates": report})
    partial.replace(path)
    raise DataQualityError(f"{'; '.join(findings)} (reconciliation of the stopped run: {path})")


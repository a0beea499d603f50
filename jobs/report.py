"""Render a date's run report to ``reports/ds=<ds>/report.html`` and log it to the date's MLflow run.

Reads what the night wrote: ``eval/metrics.json``, ``registry/registration.json`` (the gate decision and
the run), ``recs/_summary.json``, ``models/train.json``, ``examples/_summary.json``, ``augment/quality.json``
with its plots and ``tables/_stats.json``; for the trend and the data-quality section also the earlier
nights' partitions, the date's ``clean/_reconciliation.json`` and quarantined rows
(:mod:`recsys.report.history`). The page itself is :func:`recsys.report.html.render_report`.
Inputs of optional stages (augmentation, recommendations) may be missing: the page says so.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.gauges import send_night_gauges
from recsys.core.lake import (
    EXAMPLES_SUMMARY_FILE,
    METRICS_FILE,
    QUALITY_FILE,
    RECS_SUMMARY_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    STATS_FILE,
    TRAIN_FACTS_FILE,
    read_json,
)
from recsys.core.tracking import tracking_uri
from recsys.report import history
from recsys.report.html import render_report

log = logging.getLogger(__name__)


def _optional(path: Path) -> dict[str, Any]:
    return read_json(path) if path.is_file() else {}


def body(ctx: JobContext) -> dict[str, Any]:
    from mlflow import MlflowClient

    ds, lake = ctx.ds, ctx.lake
    assert ds is not None
    registration = read_json(lake.require("registry", ds) / REGISTRATION_FILE)
    augment_dir = lake.path("augment", ds)
    before_ds, before = history.previous_stats(lake, ds)
    page = render_report(
        ds, read_json(lake.require("eval", ds) / METRICS_FILE), registration["gate"],
        _optional(augment_dir / QUALITY_FILE), _optional(lake.path("tables", ds) / STATS_FILE),
        training=_optional(lake.path("models", ds) / TRAIN_FACTS_FILE),
        examples=_optional(lake.path("examples", ds) / EXAMPLES_SUMMARY_FILE),
        plots={path.name: path.read_bytes() for path in sorted(augment_dir.glob("*.png"))},
        recs=_optional(lake.path("recs", ds) / RECS_SUMMARY_FILE) or None,
        nights=history.trend(lake, ds, getattr(ctx.args, "nights", history.TREND_NIGHTS)),
        reconciliation=history.reconciliation(lake, ds),
        quarantine=history.quarantine_examples(lake, ds),
        stats_before=before, stats_before_ds=before_ds,
    )
    with lake.writing("reports", ds) as out:
        (out / REPORT_FILE).write_text(page)
    path = lake.path("reports", ds) / REPORT_FILE
    MlflowClient(tracking_uri=tracking_uri()).log_text(registration["run_id"], page, f"reports/{REPORT_FILE}")
    log.info("report of %s at %s, logged to MLflow run %s", ds, path, registration["run_id"])
    gauges = send_night_gauges(lake, ds)  # the night's figures for dashboards; off unless RECSYS_STATSD_HOST
    return {"path": str(path), "run_id": registration["run_id"], "gauges": gauges}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Render the date's run report (HTML) and log it to the date's MLflow run.")
    parser.add_argument("--nights", type=int, default=history.TREND_NIGHTS,
                        help=f"nights the trend shows, tonight included (default {history.TREND_NIGHTS})")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

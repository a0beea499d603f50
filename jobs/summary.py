"""Tell where a date's outputs are and how the model did: the closing screen of `make demo` and `make run-on`."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from recsys.core.cli import JobContext, job_parser, run_job
from recsys.core.lake import METRICS_FILE, RECS_SUMMARY_FILE, REGISTRATION_FILE, REPORT_FILE, read_json
from recsys.report.html import HEADLINE, served_text

SHOWN = HEADLINE[:4]  # the report's headline metrics that fit on a terminal line


def render_summary(ds: str, lake_root: str, registration: dict[str, Any], metrics: dict[str, Any],
                   paths: dict[str, str], recs: dict[str, Any] | None = None,
                   recs_new: dict[str, Any] | None = None) -> str:
    """The summary text of one date (pure, for tests); ``recs`` and ``recs_new`` are publish's
    ``_summary.json`` files, if any."""
    lines = [f"recsys-augment: run of {ds}", "", f"lake: {lake_root}"]
    lines += [f"  {zone:<11} {path}" for zone, path in paths.items()]
    gate = registration.get("gate", {})
    lines += [
        "", f"MLflow tracking URI: {registration.get('tracking_uri')}",
        f"  run id:           {registration.get('run_id')}",
        f"  registered model: {registration.get('model_name')} version {registration.get('version')}"
        f" (alias challenger{', champion' if gate.get('promoted') else ''})",
        f"  champion:         version {registration.get('champion')}",
        f"  gate:             {gate.get('reason')}", "", "held-out test metrics (all users | sparse segment):",
    ]
    for name, result in metrics.get("models", {}).items():
        cells = "  ".join(
            f"{m} {result.get('all', {}).get(m, float('nan')):.4f}|{result.get('sparse', {}).get(m, float('nan')):.4f}"
            for m in SHOWN
        )
        lines.append(f"  {name:<12} {cells}")
    verdict = metrics.get("augmentation", {}).get("verdict")
    if verdict:
        lines += ["", f"augmentation: {verdict}"]
    cold = metrics.get("cold_start") or {}
    if cold:
        lines += ["", f"cold start: {cold.get('verdict') or 'skipped: ' + str(cold.get('skipped'))}"]
    if recs:
        lines += ["", f"recommendations: {served_text(recs)}"]
    if recs_new:
        lines += [f"new items ({recs_new.get('items')} of them): {served_text(recs_new)}"]
    return "\n".join(lines) + "\n"


def body(ctx: JobContext) -> dict[str, Any]:
    ds, lake = ctx.ds, ctx.lake
    registration = read_json(lake.require("registry", ds) / REGISTRATION_FILE)
    metrics = read_json(lake.require("eval", ds) / METRICS_FILE)
    paths = {zone: str(lake.path(zone, ds)) for zone in ("raw", "clean", "quarantine", "catalogue", "tables", "embed", "augment",
                                                         "examples", "models", "eval", "recs", "recs_new")}
    paths["report"] = str(lake.path("reports", ds) / REPORT_FILE)
    recs, recs_new = (read_json(path) if path.is_file() else None
                      for path in (lake.path(zone, ds) / RECS_SUMMARY_FILE for zone in ("recs", "recs_new")))
    sys.stdout.write(render_summary(ds, str(lake.root), registration, metrics, paths, recs, recs_new))
    return {"recs": paths["recs"], "run_id": registration.get("run_id"), "version": registration.get("version")}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = job_parser("Print where a date's outputs are and the headline metrics.")
    return run_job(parser, body, argv)


if __name__ == "__main__":
    main()

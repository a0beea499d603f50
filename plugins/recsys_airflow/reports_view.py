"""The run reports inside Airflow's UI: a FastAPI app (an index of dates, a page per date) and its nav entry.

The plugin (plugins/recsys_plugin.py) mounts :func:`create_app` under :data:`URL_PREFIX` of the API server and
adds :data:`EXTERNAL_VIEW` to the UI's navigation ("Browse" -> "Run reports", the index framed in the UI). The
pages read ``<lake>/reports/ds=D/report.html`` (what ``jobs.report`` writes) and, for the index's headline
figures, ``eval/ds=D/metrics.json`` and ``registry/ds=D/registration.json``. The lake is ``$RECSYS_LAKE``, else
``$RECSYS_HOME/lake``, else ``<repo>/.recsys/lake`` (the jobs' rule, restated here: plugins never import recsys/).
Every page asks for the same right as the DAG's own pages: reading ``recsys_nightly``.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse

from recsys_airflow.launch import REPO_ROOT

URL_PREFIX = "/recsys"  # where the plugin mounts the app in the API server
REPORTS_PATH = "reports"  # the app's index; a date's page is reports/<YYYY-MM-DD>
DAG_ID = "recsys_nightly"  # reading a report needs read access to this DAG
# Copies of recsys.core.lake's names (the plugin may not import recsys/)
REPORT_FILE = "report.html"
METRICS_FILE = "metrics.json"
REGISTRATION_FILE = "registration.json"
HEADLINE_METRIC = "ndcg@10"
DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
PARTITION_RE = re.compile(r"ds=(\d{4}-\d{2}-\d{2})")
# The UI's navigation entry: the index, framed in the Airflow UI at /plugin/recsys-reports (href relative to
# the UI's base URL, so it works behind a path prefix)
EXTERNAL_VIEW = {
    "name": "Run reports",
    "href": f"{URL_PREFIX.lstrip('/')}/{REPORTS_PATH}",
    "url_route": "recsys-reports",
    "destination": "nav",
    "category": "browse",
}


def lake_root() -> Path:
    """The lake root: ``$RECSYS_LAKE``, else ``$RECSYS_HOME/lake``, else ``<repo>/.recsys/lake``."""
    home = os.environ.get("RECSYS_HOME") or REPO_ROOT / ".recsys"
    return Path(os.environ.get("RECSYS_LAKE") or Path(home) / "lake").resolve()


def valid_date(ds: str) -> str:
    """``ds`` when it is a real calendar date written YYYY-MM-DD; otherwise ``ValueError``.

    Only such a string reaches a file path, so a page cannot be asked for anything outside the lake's
    report partitions.
    """
    if not DATE_RE.fullmatch(ds):
        raise ValueError(f"not a YYYY-MM-DD date: {ds!r}")
    dt.date.fromisoformat(ds)  # 2026-02-30 is refused too
    return ds


def report_file(root: Path, ds: str) -> Path:
    """Where the report of ``ds`` is (whether or not it exists); ``ValueError`` for a bad date."""
    return root / "reports" / f"ds={valid_date(ds)}" / REPORT_FILE


def report_dates(root: Path) -> list[str]:
    """The dates that have a report, newest first."""
    found = []
    for partition in (root / "reports").glob("ds=*"):
        ds = partition.name.removeprefix("ds=")
        if DATE_RE.fullmatch(ds) and (partition / REPORT_FILE).is_file():
            found.append(ds)
    return sorted(found, reverse=True)


def date_of_report_path(path: str) -> str | None:
    """The date of a ``.../reports/ds=D/report.html`` path (the report task's XCom), or None."""
    match = PARTITION_RE.search(path)
    return match.group(1) if match else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # an older or half-written date shows no figures rather than an error
        return {}


def headline(root: Path, ds: str) -> dict[str, Any]:
    """The index's figures of a date: the model's and popularity's NDCG@10 and the gate's decision (None if absent)."""
    models = _read_json(root / "eval" / f"ds={ds}" / METRICS_FILE).get("models", {})
    gate = _read_json(root / "registry" / f"ds={ds}" / REGISTRATION_FILE).get("gate", {})

    def figure(model: str) -> float | None:
        value = models.get(model, {}).get("all", {}).get(HEADLINE_METRIC)
        return float(value) if isinstance(value, (int, float)) else None

    return {"model": figure("model"), "popularity": figure("popularity"), "promoted": gate.get("promoted")}


def _figure(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def index_page(root: Path) -> str:
    """The index: one row per date with a report, newest first, with its headline figures."""
    rows = []
    for ds in report_dates(root):
        facts = headline(root, ds)
        promoted = {True: "promoted", False: "not promoted"}.get(facts["promoted"], "–")
        rows.append(f'<tr><td><a href="{REPORTS_PATH}/{ds}">{ds}</a></td><td>{_figure(facts["model"])}</td>'
                    f'<td>{_figure(facts["popularity"])}</td><td>{promoted}</td></tr>')
    body = ("<table><tr><th>date</th><th>model NDCG@10</th><th>popularity NDCG@10</th><th>gate</th></tr>"
            f"{''.join(rows)}</table>") if rows else f"<p>No report yet under {html.escape(str(root))}.</p>"
    # links relative to this page (<base>/recsys/reports): the index works under any base URL and in the UI's frame
    return ("<!doctype html><html><head><meta charset='utf-8'><title>recsys run reports</title>"
            "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:.3em .8em;text-align:left}</style>"
            f"</head><body><h1>Run reports of {DAG_ID}</h1>{body}</body></html>")


async def can_read_dag(request: Request) -> None:
    """Refuse (401/403) a request whose user may not read the DAG: Airflow's own checks, session cookie or token.

    Airflow's security module is imported here, at the first request, not with the plugin: every task process
    loads plugins (for their macros) and would pay for it.
    """
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user, requires_access_dag

    user = await get_user(request, None, await bearer_scheme(request))
    await run_in_threadpool(requires_access_dag("GET", param_dag_id=DAG_ID), request, user)  # it queries the DB


def create_app(root: Callable[[], Path] = lake_root) -> FastAPI:
    """The reports app: ``GET /reports`` (the index) and ``GET /reports/{ds}`` (a date's report.html), both for
    users who may read the DAG.

    Args:
        root: gives the lake root at each request (the environment is read then, not at import).
    """
    app = FastAPI(title="recsys run reports", dependencies=[Depends(can_read_dag)], docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.get(f"/{REPORTS_PATH}", response_class=HTMLResponse)
    def index() -> str:
        return index_page(root())

    @app.get(f"/{REPORTS_PATH}/{{ds}}", response_class=FileResponse)
    def report(ds: str) -> FileResponse:
        try:
            path = report_file(root(), ds)
        except ValueError as err:
            raise HTTPException(status_code=422, detail=f"{err}; a report is asked for by its date, "
                                                        "e.g. /recsys/reports/2026-01-31") from None
        if not path.is_file():
            raise HTTPException(status_code=404, detail=f"no run report for {ds}: {path} does not exist "
                                                        "(the report task of that date has not run or failed)")
        return FileResponse(path, media_type="text/html")

    return app


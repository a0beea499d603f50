"""The extra links of recsys_nightly's tasks: "MLflow run" (train, register, report) and "Run report" (publish, report).

Airflow evaluates a plugin's global link in the API server when the task's page is shown, so a link can read
what another task of the same DAG run returned (its XCom, :func:`task_result`): "MLflow run" reads the
``run_id`` the register task returned, even on the train task, which ends before the MLflow run exists
(report logs report.html to that run); "Run report" reads the ``path`` the report task returned and opens
that date's page of the reports app (recsys_airflow.reports_view), also from publish. Other tasks, and runs
whose task has not succeeded yet, get no link. The MLflow UI is at ``$RECSYS_MLFLOW_UI`` (default
``http://127.0.0.1:5000``, what ``mlflow ui`` serves); the reports app under the API server's
``[api] base_url``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseOperatorLink

from recsys_airflow.reports_view import REPORTS_PATH, URL_PREFIX, date_of_report_path

LINKED_TASKS = frozenset({"train", "register", "report"})
REGISTER_TASK = "register"
REPORT_TASK = "report"
REPORT_LINKED_TASKS = frozenset({"publish", REPORT_TASK})
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def _mapping(result: Any) -> Mapping[str, Any]:
    """A task's XCom as a mapping (it may come as JSON text); {} for anything else."""
    if isinstance(result, str):
        result = json.loads(result)
    return result if isinstance(result, Mapping) else {}


def mlflow_run_url(register_result: Any, base: str) -> str:
    """The MLflow UI page of the run a register task returned, or "" when there is none.

    Args:
        register_result: the register task's XCom, a mapping with ``run_id`` (or its JSON text).
        base: the MLflow UI's root URL.
    """
    run_id = _mapping(register_result).get("run_id")
    return f"{base.rstrip('/')}/#/runs/{run_id}" if run_id else ""


def run_report_url(report_result: Any, base: str) -> str:
    """The reports app's page of the date a report task rendered, or "" when there is none.

    Args:
        report_result: the report task's XCom, a mapping with ``path`` (``.../reports/ds=D/report.html``)
            or its JSON text.
        base: the API server's base URL ("" gives a path from the server's root).
    """
    ds = date_of_report_path(str(_mapping(report_result).get("path") or ""))
    return f"{base.rstrip('/')}{URL_PREFIX}/{REPORTS_PATH}/{ds}" if ds else ""


def task_result(dag_id: str, run_id: str, task_id: str) -> Any:
    """A task's return value in a DAG run, read from the metadata DB (API-server side); None when absent."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=task_id)
            .with_only_columns(XComModel.value)
        ).first()
    return None if row is None else row.value


def _task_name(operator: Any) -> str:
    return operator.task_id.rsplit(".", 1)[-1]  # without its task group's prefix


class MlflowRunLink(BaseOperatorLink):
    """Opens the MLflow run that registered the night's model."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if _task_name(operator) not in LINKED_TASKS:
            return ""
        result = task_result(ti_key.dag_id, ti_key.run_id, REGISTER_TASK)
        return mlflow_run_url(result, os.environ.get("RECSYS_MLFLOW_UI", DEFAULT_MLFLOW_UI))


class RunReportLink(BaseOperatorLink):
    """Opens the run's report (report.html of its date) in the reports app of the API server."""

    name = "Run report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if _task_name(operator) not in REPORT_LINKED_TASKS:
            return ""
        from airflow.configuration import conf

        result = task_result(ti_key.dag_id, ti_key.run_id, REPORT_TASK)
        return run_report_url(result, conf.get("api", "base_url", fallback="") or "")  # unset: a path on this server

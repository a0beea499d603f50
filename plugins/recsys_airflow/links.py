"""The "MLflow run" extra link on the train, register and report tasks of recsys_nightly.

Airflow evaluates a plugin's global link in the API server when the task's page is shown, so the link
can read the ``run_id`` that the register task of the same DAG run returned (its XCom) even on the train
task, which ends before the MLflow run exists (report logs report.html to that run). Other tasks, and runs whose
register task has not succeeded yet, get no link. The MLflow UI is at ``$RECSYS_MLFLOW_UI`` (default
``http://127.0.0.1:5000``, what ``mlflow ui`` serves).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from airflow.sdk import BaseOperatorLink

LINKED_TASKS = frozenset({"train", "register", "report"})
REGISTER_TASK = "register"
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def mlflow_run_url(register_result: Any, base: str) -> str:
    """The MLflow UI page of the run a register task returned, or "" when there is none.

    Args:
        register_result: the register task's XCom, a mapping with ``run_id`` (or its JSON text).
        base: the MLflow UI's root URL.
    """
    if isinstance(register_result, str):
        register_result = json.loads(register_result)
    if not isinstance(register_result, Mapping) or not register_result.get("run_id"):
        return ""
    return f"{base.rstrip('/')}/#/runs/{register_result['run_id']}"


def _register_result(dag_id: str, run_id: str) -> Any:
    """The register task's return value in a DAG run, read from the metadata DB (API-server side)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(key="return_value", run_id=run_id, dag_ids=dag_id, task_ids=REGISTER_TASK)
            .with_only_columns(XComModel.value)
        ).first()
    return None if row is None else row.value


class MlflowRunLink(BaseOperatorLink):
    """Opens the MLflow run that registered the night's model."""

    name = "MLflow run"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        if operator.task_id.rsplit(".", 1)[-1] not in LINKED_TASKS:
            return ""
        result = _register_result(ti_key.dag_id, ti_key.run_id)
        return mlflow_run_url(result, os.environ.get("RECSYS_MLFLOW_UI", DEFAULT_MLFLOW_UI))

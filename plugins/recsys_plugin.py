"""The Airflow plugin of recsys-augment: the run reports in the UI and the tasks' extra links.

Registers the reports app (recsys_airflow.reports_view) under /recsys of the API server with its "Run reports"
entry in the UI's navigation, and the "MLflow run" and "Run report" extra links (recsys_airflow.links).
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from recsys_airflow.links import MlflowRunLink, RunReportLink
from recsys_airflow.reports_view import EXTERNAL_VIEW, URL_PREFIX, create_app


class RecsysPlugin(AirflowPlugin):
    """Run reports and extra links for recsys_nightly."""

    name = "recsys"
    global_operator_extra_links = [MlflowRunLink(), RunReportLink()]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "recsys run reports"}]
    external_views = [EXTERNAL_VIEW]

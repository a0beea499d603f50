"""The Airflow plugin of recsys-augment: registers the "MLflow run" extra link (see recsys_airflow.links)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from recsys_airflow.links import MlflowRunLink


class RecsysPlugin(AirflowPlugin):
    """Extra links for recsys_nightly's tasks."""

    name = "recsys"
    global_operator_extra_links = [MlflowRunLink()]

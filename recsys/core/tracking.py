"""MLflow endpoints from the environment, with embedded defaults under $RECSYS_HOME."""

from __future__ import annotations

import os
from pathlib import Path

from recsys.core.lake import recsys_home

EXPERIMENT = "recsys-augment"


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite file under ``$RECSYS_HOME/mlflow``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = recsys_home() / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def artifact_root() -> str:
    """Where new experiments keep artifacts: ``$RECSYS_MLFLOW_ARTIFACTS`` or ``$RECSYS_HOME/mlflow/artifacts``."""
    root = os.environ.get("RECSYS_MLFLOW_ARTIFACTS") or str(recsys_home() / "mlflow" / "artifacts")
    return root if "://" in root else Path(root).resolve().as_uri()


def setup_mlflow() -> str:
    """Point MLflow at the configured store and the pipeline's experiment (created on first use); return its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    mlflow.set_registry_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    experiment_id = (
        experiment.experiment_id if experiment is not None
        else mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_root())
    )
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id

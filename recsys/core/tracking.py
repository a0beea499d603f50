"""MLflow endpoints from the environment, with embedded defaults under $RECSYS_HOME, and lake partitions as
MLflow datasets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from recsys.core.lake import recsys_home

if TYPE_CHECKING:
    from mlflow.data.meta_dataset import MetaDataset

EXPERIMENT = "recsys-augment"
DIGEST_CHARS = 16  # MLflow keeps up to 36 characters of a dataset digest


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite file under ``$RECSYS_HOME/mlflow``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    path = recsys_home() / "mlflow" / "mlflow.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def artifact_root() -> str | None:
    """Where new experiments keep artifacts: ``$RECSYS_MLFLOW_ARTIFACTS`` (a URI such as ``mlflow-artifacts:/x``
    or ``s3://b/x`` kept as it is, a path made absolute); unset, ``$RECSYS_HOME/mlflow/artifacts`` with a local
    store and None with a tracking server (``http(s)://``), whose own default (its proxied artifact store) applies.
    """
    root = os.environ.get("RECSYS_MLFLOW_ARTIFACTS")
    if not root:
        if urlsplit(tracking_uri()).scheme in ("http", "https"):
            return None
        root = str(recsys_home() / "mlflow" / "artifacts")
    return root if len(urlsplit(root).scheme) > 1 else Path(root).resolve().as_uri()  # 1 letter: a Windows drive


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


def partition_files(path: Path) -> list[Path]:
    """Every file under a partition directory (or the file itself), in a stable order."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def partition_digest(path: Path) -> str:
    """A digest of a partition's content: each file's path within it, size and SHA-256 of its bytes.

    The bytes are streamed, never loaded as a table, so digesting a date's examples costs a read of the
    files; a partition rewritten with the same content keeps its digest, any changed byte changes it.
    """
    total = hashlib.sha256()
    for file in partition_files(path):
        with file.open("rb") as handle:
            content = hashlib.file_digest(handle, "sha256").hexdigest()
        relative = file.name if file == path else file.relative_to(path).as_posix()
        total.update(f"{relative}\0{file.stat().st_size}\0{content}\n".encode())
    return total.hexdigest()[:DIGEST_CHARS]


def partition_dataset(path: Path) -> MetaDataset:
    """A lake partition as an MLflow dataset: named ``<zone>/ds=<date>``, its folder as the source and
    :func:`partition_digest` as the digest (nothing of the data is loaded)."""
    from mlflow.data.meta_dataset import MetaDataset

    # defined when mlflow.data registers its sources; named directly, as resolving a file:// URI finds two
    # equal candidates (the "" and "file" schemes) and warns
    from mlflow.data.sources import LocalArtifactDatasetSource

    folder = path.resolve()
    return MetaDataset(LocalArtifactDatasetSource(folder.as_uri()), name=f"{folder.parent.name}/{folder.name}",
                       digest=partition_digest(folder))


def log_partitions(partitions: Mapping[str, Sequence[Path]], tags: Mapping[str, Mapping[str, str]] | None = None,
                   ) -> None:
    """Log lake partitions as inputs of the active run (``mlflow.log_input``), by context.

    Args:
        partitions: context (``"training"``, ``"evaluation"``) -> partition directories; missing ones are skipped.
        tags: extra input tags by partition name (``<zone>/ds=<date>``), beside their file count and bytes.
    """
    import mlflow

    for context, paths in partitions.items():
        for path in paths:
            if not path.exists():
                continue
            dataset = partition_dataset(path)
            files = partition_files(path)
            facts = {"files": str(len(files)), "bytes": str(sum(f.stat().st_size for f in files))}
            mlflow.log_input(dataset, context=context, tags={**facts, **(tags or {}).get(dataset.name, {})})

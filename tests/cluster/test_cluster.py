"""recsys_nightly on a loopback scale-out cluster: PostgreSQL, Redis, an MLflow server, Spark standalone, Celery.

One run for one date is triggered through Airflow's REST API and checked: the Spark jobs ran as applications
of the standalone master, the GAN ran on the Celery worker of the ``gpu`` queue, the model is registered in
the MLflow server with its artifacts in the proxied store, and ``recs/`` equals that of the same jobs run
one after another in-process (``python -m jobs.X``) on a copy of the same input.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pandas as pd
import pytest

from recsys.core.lake import Lake, read_json
from tests.cluster.services import (
    REPO,
    Cluster,
    airflow_env,
    http_json,
    listening_sockets,
    spark_status,
    start_airflow,
    start_mlflow,
    start_postgres,
    start_redis,
    start_spark,
    wait_for,
)

pytestmark = [pytest.mark.cluster, pytest.mark.e2e]
Phases = Callable[[str, float], float]  # the phases fixture of conftest.py: records a phase, returns the time now
DS = "2026-01-10"
MODEL = "recsys-augment-cluster"
TINY = {  # the backfill e2e test's small world and short training: the whole test runs the pipeline twice
    "RECSYS__GENERATE__USERS": "200", "RECSYS__GENERATE__ITEMS": "150", "RECSYS__GENERATE__EVENTS": "8000",
    "RECSYS__GENERATE__DAYS": "4", "RECSYS__GENERATE__BOT_EVENTS_PER_DAY": "600",
    "RECSYS__AUGMENT__EPOCHS": "2", "RECSYS__AUGMENT__MIN_STEPS": "0",
    "RECSYS__AUGMENT__SYNTHETIC_USERS": "20", "RECSYS__AUGMENT__HIDDEN": "32",
    "RECSYS__TRAIN__EPOCHS": "3", "RECSYS__TRAIN__HIDDEN": "32", "RECSYS__REGISTER__MODEL_NAME": MODEL,
    # the same threads in both runs, few on a shared 2-core machine
    "TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": "2", "SPARK_SHUFFLE_PARTITIONS": "2",
    "SPARK_DRIVER_MEMORY": "1g",
}
DAG_ID = "recsys_nightly"
RUN_TIMEOUT_SECONDS = 1200
SPARK_JOBS = ["clean", "catalogue", "tables"]
GPU_TASKS = ["embed", "augment"]
GPU_WORKER, DEFAULT_WORKER = "gpu@recsys-cluster", "default@recsys-cluster"
# the jobs of the DAG up to publish, in an order its dependencies allow (report only renders)
JOB_ORDER = ["clean", "catalogue", "tables", "embed", "augment", "expand", "train", "evaluate", "register", "publish"]


@pytest.fixture(scope="module")
def cluster(phases: Phases) -> Iterator[dict]:
    """Synthetic raw data (and an untouched copy for the embedded run), then every service of the cluster on
    127.0.0.1; all of it stopped and removed at the end, also when starting or the test fails."""
    with ExitStack() as stack:
        root = Path(tempfile.mkdtemp(prefix="recsys-cluster-"))
        if not os.environ.get("RECSYS_CLUSTER_KEEP"):  # set it to keep the logs and lakes for a post-mortem
            stack.callback(shutil.rmtree, root, True)
        c = Cluster(root)
        lake = root / "lake"
        base_env = {**os.environ, **TINY, "RECSYS_HOME": str(root), "RECSYS_LAKE": str(lake),
                    "PYTHONPATH": f"{REPO}:{REPO / 'plugins'}"}
        t = time.monotonic()
        done = subprocess.run([sys.executable, "-m", "jobs.generate", "--end-date", DS], cwd=REPO, env=base_env,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"jobs.generate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        shutil.copytree(lake, root / "embedded" / "lake")
        t = phases("generate", t)
        # the in-process run goes beside the cluster (both wait on much): the stack waits for it at the end
        embedded = stack.enter_context(ThreadPoolExecutor(1)).submit(_run_embedded, root / "embedded", base_env,
                                                                      phases)
        db = start_postgres(stack, c, ["airflow", "mlflow"])
        t = phases("postgres", t)
        broker = start_redis(stack, c)
        t = phases("redis", t)
        mlflow = start_mlflow(stack, c, f"{db}/mlflow")
        t = phases("mlflow server", t)
        master = start_spark(stack, c)
        t = phases("spark standalone", t)
        env = airflow_env(c, root / "airflow", f"{db}/airflow", broker, f"db+{db}/airflow",
                          master, mlflow, extra={**base_env, **TINY, "RECSYS_MLFLOW_ARTIFACTS":
                                                 "mlflow-artifacts:///recsys"})
        api = start_airflow(stack, c, env)
        phases("airflow", t)
        yield {"cluster": c, "env": env, "api": api, "lake": lake, "root": root,
               "embedded": embedded}


def _api(cluster: dict, method: str, path: str, body: object = None) -> dict:
    return http_json(f"{cluster['api']}/api/v2{path}", method, body)


@pytest.fixture(scope="module")
def nightly(cluster: dict, phases: Phases) -> dict:
    """One run of recsys_nightly for DS, triggered through the REST API, waited for to its end."""
    started = time.monotonic()
    c: Cluster = cluster["cluster"]
    wait_for(lambda: _dag_served(cluster), 300, "the DAG to be parsed", list(c.services.values()), every=3)
    _api(cluster, "PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    run = _api(cluster, "POST", f"/dags/{DAG_ID}/dagRuns",
               {"dag_run_id": f"cluster__{DS}", "logical_date": f"{DS}T00:00:00Z", "conf": {}})
    path = f"/dags/{DAG_ID}/dagRuns/{urllib.parse.quote(run['dag_run_id'])}"
    wait_for(lambda: _api(cluster, "GET", path)["state"] in ("success", "failed"), RUN_TIMEOUT_SECONDS,
             "the run to end", list(c.services.values()), every=5)
    tis = _api(cluster, "GET", f"{path}/taskInstances?limit=100")["task_instances"]
    phases("nightly run (cluster)", started)
    return {"run": _api(cluster, "GET", path), "tis": {ti["task_id"]: ti for ti in tis}}


def _dag_served(cluster: dict) -> bool:
    try:
        _api(cluster, "GET", f"/dags/{DAG_ID}")
        return True
    except (AssertionError, OSError):
        return False


def _run_embedded(root: Path, base_env: dict[str, str], phases: Phases) -> Path:
    """The same date's jobs one after another in-process on the untouched copy of the input under ``root``
    (local Spark, SQLite MLflow); the lake root."""
    started = time.monotonic()
    env = {**base_env, "RECSYS_HOME": str(root), "RECSYS_LAKE": str(root / "lake"),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "RECSYS_MLFLOW_ARTIFACTS": str(root / "mlartifacts"),
           "SPARK_MASTER": "local[1]"}
    for job in JOB_ORDER:
        done = subprocess.run([sys.executable, "-m", f"jobs.{job}", "--ds", DS], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"jobs.{job} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    phases("embedded run (beside)", started)
    return root / "lake"


@pytest.fixture(scope="module")
def embedded(cluster: dict) -> Path:
    """The lake of the in-process run, which ran beside the cluster's start and run."""
    return cluster["embedded"].result()


def _logs(cluster: dict) -> str:
    c: Cluster = cluster["cluster"]
    return "\n".join(f"--- {name}\n{path.read_text(errors='replace')[-2000:]}" for name, path in c.logs().items()
                     if name.startswith(("celery", "scheduler")))


def test_the_run_succeeds_with_every_task(cluster: dict, nightly: dict) -> None:
    states = {task: ti["state"] for task, ti in nightly["tis"].items()}
    assert nightly["run"]["state"] == "success" and set(states.values()) == {"success"}, \
        f"{nightly['run']['state']}: {states}\n{_logs(cluster)}"


def test_spark_jobs_ran_on_the_standalone_cluster(cluster: dict, nightly: dict) -> None:
    status = spark_status(cluster["cluster"])
    assert len(status["workers"]) == 2 and {w["state"] for w in status["workers"]} == {"ALIVE"}
    finished = [app["name"] for app in status["completedapps"] if app["state"] == "FINISHED"]
    assert sorted(f"recsys-{job}" for job in SPARK_JOBS) == sorted(finished), \
        f"completed applications of the master: {status['completedapps']}"


def test_gpu_tasks_ran_on_the_gpu_queue_worker(nightly: dict) -> None:
    where = {task: (ti["queue"], ti["hostname"]) for task, ti in nightly["tis"].items()}
    expected = {task: ("gpu", GPU_WORKER) if task in GPU_TASKS else ("default", DEFAULT_WORKER) for task in where}
    assert "augment" in where and where == expected


def test_the_model_is_registered_in_the_mlflow_server(cluster: dict, nightly: dict) -> None:
    c: Cluster = cluster["cluster"]
    mlflow = c.urls["mlflow"]
    versions = http_json(f"{mlflow}/api/2.0/mlflow/model-versions/search?filter="
                         + urllib.parse.quote(f"name='{MODEL}'"))["model_versions"]
    registration = read_json(Lake(cluster["lake"]).path("registry", DS) / "registration.json")
    assert [(v["version"], v["status"]) for v in versions] == [(str(registration["version"]), "READY")]
    tags = {t["key"]: t["value"] for t in versions[0].get("tags", [])}
    assert tags.get("ds") == DS
    # the artifacts went through the server's proxy into its destination folder
    run = http_json(f"{mlflow}/api/2.0/mlflow/runs/get?run_id={versions[0]['run_id']}")["run"]
    assert run["info"]["artifact_uri"].startswith("mlflow-artifacts:"), run["info"]["artifact_uri"]
    stored = {p.name for p in Path(c.urls["mlflow_artifacts"]).rglob("*") if p.is_file()}
    assert {"model.keras", "MLmodel"} <= stored, sorted(stored)


def test_recs_equal_the_embedded_run(cluster: dict, nightly: dict, embedded: Path) -> None:
    on_cluster = pd.read_parquet(Lake(cluster["lake"]).path("recs", DS))
    in_process = pd.read_parquet(Lake(embedded).path("recs", DS))
    assert len(on_cluster) > 0
    pd.testing.assert_frame_equal(on_cluster, in_process)


def test_nothing_listens_beyond_loopback(cluster: dict, nightly: dict) -> None:
    c: Cluster = cluster["cluster"]
    sockets = listening_sockets([s.proc.pid for s in c.services.values() if s.proc.poll() is None])
    ports = {port for *_, port in sockets}
    # the check can fail: it sees the API server's, the MLflow server's and the Spark master's ports
    assert {int(cluster["env"]["AIRFLOW__API__PORT"]), int(c.urls["mlflow"].rsplit(":", 1)[1]),
            int(c.urls["spark_master"].rsplit(":", 1)[1])} <= ports
    exposed = [s for s in sockets if s[2] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not exposed, f"listening beyond loopback (pid, name, address, port): {exposed}"

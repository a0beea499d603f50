"""A real Airflow (scheduler, DAG processor, API server, LocalExecutor) backfills three days, then reruns one task.

Everything goes through the public REST API (v2) as an operator would in the UI: a 3-day backfill, then
clearing `train` of one date with its downstream tasks. Checked: three successful runs, every output
partition of every date, a consistent registry (one version per date, `champion` where the gates put
it), and after the clear the same outputs and no new registry version.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from recsys.core.lake import Lake, read_json
from tests.support import airflow_cli, airflow_env, free_port, start_airflow, stop_processes, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[2]
DAG_ID = "recsys_nightly"
DATES = ["2026-01-08", "2026-01-09", "2026-01-10"]
RERUN_DATE = DATES[1]
MODEL = "recsys-augment-backfill"
ZONES = ["clean", "quarantine", "tables", "augment", "examples", "models", "eval", "registry", "reports", "recs"]
LOCKED_TRIES = 12  # tries of POST /backfills while SQLite is locked, 5 s apart
RERUN_TASKS = {"train", "evaluate", "register", "publish", "report"}  # `train` and everything downstream of it
TINY = {  # smaller and shorter than the nightly e2e test: this one runs the pipeline four times
    "RECSYS__GENERATE__USERS": "200", "RECSYS__GENERATE__ITEMS": "150", "RECSYS__GENERATE__EVENTS": "8000",
    "RECSYS__GENERATE__DAYS": "4", "RECSYS__GENERATE__BOT_EVENTS_PER_DAY": "600",
    "RECSYS__AUGMENT__EPOCHS": "2", "RECSYS__AUGMENT__MIN_STEPS": "0",
    "RECSYS__AUGMENT__SYNTHETIC_USERS": "20", "RECSYS__AUGMENT__HIDDEN": "32",
    "RECSYS__TRAIN__EPOCHS": "3", "RECSYS__TRAIN__HIDDEN": "32", "RECSYS__REGISTER__MODEL_NAME": MODEL,
}
RUN_TIMEOUT_SECONDS = 1800


class Api:
    """The bits of Airflow's public REST API v2 the test uses (SimpleAuthManager, all users admins)."""

    def __init__(self, base: str) -> None:
        self.base = base

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"{self.base}/api/v2{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as err:
            raise AssertionError(f"{method} {path}: HTTP {err.code} {err.read()[:2000]!r}") from None

    def runs(self) -> dict[str, dict]:
        """The DAG's runs by date processed (YYYY-MM-DD of the logical date)."""
        runs = self.call("GET", f"/dags/{DAG_ID}/dagRuns?limit=100")["dag_runs"]
        return {run["logical_date"][:10]: run for run in runs if run["logical_date"]}

    def tries(self, run_id: str) -> dict[str, int]:
        tis = self.call("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances?limit=100")["task_instances"]
        return {ti["task_id"]: ti["try_number"] for ti in tis if ti["state"] == "success"}


@pytest.fixture(scope="module")
def airflow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A running Airflow on its own home, metadata DB, lake and MLflow; every process stopped at the end."""
    home = tmp_path_factory.mktemp("recsys-backfill")
    port = free_port()
    env = airflow_env(
        home, port, **TINY,
        AIRFLOW__CORE__EXECUTOR="LocalExecutor", AIRFLOW__CORE__PARALLELISM="2",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True",
        # Only the backfill makes runs: no scheduled run of "yesterday" (2026-11-28 has no data here).
        AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE="False",
        AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5", AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
        MLFLOW_TRACKING_URI=f"sqlite:///{home}/mlflow.db", RECSYS_MLFLOW_ARTIFACTS=str(home / "mlartifacts"),
        SPARK_DRIVER_MEMORY="1g",
        # the Spark jobs are submitted to this connection's master
        AIRFLOW_CONN_SPARK_DEFAULT=json.dumps({"conn_type": "spark", "host": "local[2]"}),
        TF_NUM_INTEROP_THREADS="1", TF_NUM_INTRAOP_THREADS="2",
        # nothing listens beyond loopback: the API server binds 127.0.0.1, the scheduler serves no logs
        # (--skip-serve-logs: Airflow binds its log server to every interface; the logs are local files
        # here) and no health check; Spark drivers bind 127.0.0.1 (recsys.core.spark)
        AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK="False",
        AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST="127.0.0.1",
    )
    (home / "airflow").mkdir()
    done = subprocess.run([sys.executable, "-m", "jobs.generate", "--end-date", DATES[-1]], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"jobs.generate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    airflow_cli(env, "db", "migrate")
    procs, logs = start_airflow(env, {
        "api-server": ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        "scheduler": ["scheduler", "--skip-serve-logs"], "dag-processor": ["dag-processor"]}, home)
    try:
        api = Api(f"http://127.0.0.1:{port}")
        wait_for(lambda: _dag_ready(api), 300, "the DAG to be parsed and served", logs, every=5)
        for pool, slots in (("gpu", 1), ("spark", 2)):
            api.call("POST", "/pools", {"name": pool, "slots": slots})
        api.call("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
        yield {"home": home, "env": env, "api": api, "lake": Lake(home / "lake"), "logs": logs, "procs": procs}
    finally:
        stop_processes(procs)


def _dag_ready(api: Api) -> bool:
    try:
        api.call("GET", f"/dags/{DAG_ID}")
        return True
    except (AssertionError, OSError):
        return False


def _finished(api: Api, dates: list[str]) -> bool:
    runs = api.runs()
    states = [runs[ds]["state"] for ds in dates if ds in runs]
    return len(states) == len(dates) and all(state in ("success", "failed") for state in states)


def _registry(env: dict[str, str]) -> tuple[list[tuple[str, str]], str]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions(f"name='{MODEL}'")
    champion = client.get_model_version_by_alias(MODEL, "champion").version
    return sorted((str(v.version), v.tags["ds"]) for v in versions), str(champion)


def _outputs(lake: Lake, ds: str) -> tuple[pd.DataFrame, dict]:
    metrics = read_json(lake.path("eval", ds) / "metrics.json")
    return pd.read_parquet(lake.path("recs", ds)), metrics["models"]


def _create_backfill(api: Api, body: dict) -> Any:
    """POST /backfills, asked again while the scheduler or the DAG processor holds SQLite's write lock: Airflow
    then answers 503 "Database is locked" (SQLite takes one writer at a time), and a later try goes through."""
    for _ in range(LOCKED_TRIES - 1):
        try:
            return api.call("POST", "/backfills", body)
        except AssertionError as err:
            if "Database is locked" not in str(err):
                raise
            time.sleep(5)
    return api.call("POST", "/backfills", body)


@pytest.fixture(scope="module")
def backfilled(airflow: dict) -> dict:
    api: Api = airflow["api"]
    started = time.monotonic()
    backfill = _create_backfill(api, {
        "dag_id": DAG_ID, "from_date": f"{DATES[0]}T00:00:00Z", "to_date": f"{DATES[-1]}T12:00:00Z",
        "max_active_runs": 1, "reprocess_behavior": "none", "run_backwards": False,
    })
    wait_for(lambda: _finished(api, DATES), RUN_TIMEOUT_SECONDS, "the backfill", airflow["logs"], every=5)
    logging.getLogger(__name__).info("backfill of %d dates: %.0f s", len(DATES), time.monotonic() - started)
    return {**airflow, "backfill": backfill, "runs": api.runs()}


def test_backfill_runs_every_date_once_and_successfully(backfilled: dict) -> None:
    runs = backfilled["runs"]
    assert sorted(runs) == DATES, f"runs for {sorted(runs)}"
    assert {ds: (run["state"], run["run_type"]) for ds, run in runs.items()} == {
        ds: ("success", "backfill") for ds in DATES}


def test_every_output_has_a_partition_per_date(backfilled: dict) -> None:
    lake: Lake = backfilled["lake"]
    missing = [f"{zone}/ds={ds}" for zone in ZONES for ds in DATES if not lake.path(zone, ds).is_dir()]
    assert not missing, f"missing partitions: {missing}"
    assert (lake.root / "index" / "users.parquet").is_file()  # the stable indexes are one append-only table


def test_registry_has_one_version_per_date_and_the_gates_champion(backfilled: dict) -> None:
    versions, champion = _registry(backfilled["env"])
    assert [ds for _, ds in versions] == DATES and len({v for v, _ in versions}) == len(DATES)
    expected = None  # replay the gates in date order: champion moves to a version only when promoted
    for ds in DATES:
        registration = read_json(backfilled["lake"].path("registry", ds) / "registration.json")
        assert registration["reused"] is False
        if registration["gate"]["promoted"]:
            expected = registration["version"]
        assert registration["champion"] == expected, ds
    assert champion == expected


def test_nothing_listens_beyond_loopback(airflow: dict) -> None:
    import psutil

    procs = [psutil.Process(proc.pid) for proc in airflow["procs"].values()]
    sockets = []
    for proc in [p for top in procs for p in (top, *top.children(recursive=True))]:
        try:
            sockets += [(proc.pid, proc.name(), s.laddr.ip, s.laddr.port)
                        for s in proc.net_connections(kind="tcp") if s.status == psutil.CONN_LISTEN]
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    assert int(airflow["env"]["AIRFLOW__API__PORT"]) in {port for *_, port in sockets}  # the check can fail
    exposed = [s for s in sockets if s[2] not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
    assert not exposed, f"listening beyond loopback (pid, name, address, port): {exposed}"


def test_clearing_train_reruns_it_and_downstream_with_the_same_outputs(backfilled: dict) -> None:
    api: Api = backfilled["api"]
    lake: Lake = backfilled["lake"]
    run_id = backfilled["runs"][RERUN_DATE]["dag_run_id"]
    tries_before = api.tries(run_id)
    recs_before, metrics_before = _outputs(lake, RERUN_DATE)
    versions_before, champion_before = _registry(backfilled["env"])

    api.call("POST", f"/dags/{DAG_ID}/clearTaskInstances", {
        "dry_run": False, "dag_run_id": run_id, "task_ids": ["train"], "include_downstream": True,
        "include_upstream": False, "only_failed": False, "reset_dag_runs": True,
    })
    expected_tries = {t: n + 1 if t in RERUN_TASKS else n for t, n in tries_before.items()}
    wait_for(lambda: api.tries(run_id) == expected_tries, RUN_TIMEOUT_SECONDS, "the cleared tasks to rerun",
             backfilled["logs"], every=5)
    wait_for(lambda: api.runs()[RERUN_DATE]["state"] in ("success", "failed"), 120, "the rerun", backfilled["logs"],
             every=5)
    assert api.runs()[RERUN_DATE]["state"] == "success"

    recs_after, metrics_after = _outputs(lake, RERUN_DATE)
    pd.testing.assert_frame_equal(recs_after, recs_before)
    assert metrics_after == metrics_before
    assert _registry(backfilled["env"]) == (versions_before, champion_before)
    assert read_json(lake.path("registry", RERUN_DATE) / "registration.json")["reused"] is True
